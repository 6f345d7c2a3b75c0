"""Issue #16 wiring, through the CLI as a new user types it: --strict on what discovery leaves out,
unlabelled collections (detected or --unlabelled), labels from a CSV, the train/val/test layout, and
class names compared in Unicode NFC."""

from __future__ import annotations

import json
import shutil
import unicodedata

import h5py
import pytest

from embedflow import cache

from ..conftest import CLASS_COLOURS, SIZE, make_dataset, make_image


def one_line(r, code: int) -> str:
    """The error line of a refused command (warnings and progress about the data may come before it)."""
    assert r.exit_code == code, f"exit {r.exit_code}\n{r.stdout}\n{r.stderr}"
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    return lines[-1]


def test_strict_exits_7_before_embedding_when_discovery_leaves_something_out(cli, tmp_path):
    data = make_dataset(tmp_path / "data", per_class=3)
    (data / "apples" / "scan.psd").write_bytes(b"8BPS" + b"\0" * 64)  # an image embedflow does not decode
    (data / "apples" / "notes.txt").write_text("x")
    (data / "limes" / "readme.txt").write_text("x")
    r = cli("embed", data, "--strict", expect=7)
    err = one_line(r, 7)
    assert "--strict" in err and "Photoshop PSD: not supported" in err
    assert not (tmp_path / "cache" / "embeddings.h5").exists()  # refused before any work
    # The per-extension warning is printed once, naming each extension, its count and why
    ignored = [line for line in r.stderr.splitlines() if "not embedded, by extension" in line]
    assert ignored == ["warning: 3 file(s) not embedded, by extension: .txt 2 (not an image), .psd 1 (Photoshop PSD: "
                       "not supported)"], r.stderr
    r = cli("embed", data)  # without --strict: embedded, warned once
    assert sum("not embedded, by extension" in line for line in r.stderr.splitlines()) == 1
    assert "9 images in 3 classes" in r.stdout


def test_an_extensionless_symlink_loop_is_skipped_as_unreadable(cli, tmp_path):
    """Skipped with the reason a named image gets (`cannot read: ...`), listed in --json and in the cache,
    never guessed to be "not an image"."""
    data = make_dataset(tmp_path / "data", per_class=2)
    (data / "limes" / "lz").symlink_to("lw")
    (data / "limes" / "lw").symlink_to("lz")
    r = cli("embed", data, "--json")
    for key in ("limes/lw", "limes/lz"):
        assert f"warning: skipped {key}: cannot read: Too many levels of symbolic links" in r.stderr, r.stderr
    assert "not an image" not in r.stderr and "not embedded, by extension" not in r.stderr
    assert sorted(key for key, _ in json.loads(r.stdout)["failed"]) == ["limes/lw", "limes/lz"]
    held = cache.load(tmp_path / "cache" / "embeddings.h5")
    assert sorted(key for key, _, _ in held.failed) == ["limes/lw", "limes/lz"] and len(held.keys) == 6


def test_strict_exits_7_when_a_class_disappears(cli, tmp_path):
    data = make_dataset(tmp_path / "data", per_class=3)
    (data / "scans").mkdir()
    (data / "scans" / "a.dng").write_bytes(b"II*\0" + b"\0" * 32)
    err = one_line(cli("embed", data, "--strict", expect=7), 7)
    assert "--strict" in err
    r = cli("embed", data)
    assert "class folder 'scans' holds no images: ignored" in r.stderr


def test_unlabelled_flat_folder_is_embedded_searched_and_refused_by_fit_and_evaluate(cli, tmp_path):
    photos = tmp_path / "photos"
    for i, colour in enumerate(list(CLASS_COLOURS.values()) * 2):
        make_image(photos / f"IMG_{i:04d}.jpg", colour, i)
    shutil.copy(photos / "IMG_0000.jpg", photos / "IMG_0000 copy.jpg")
    r = cli("embed", photos)
    assert "9 unlabelled images" in r.stdout and "taken as unlabelled" in r.stderr
    path = tmp_path / "cache" / "embeddings.h5"
    with h5py.File(path, "r") as f:
        assert f.attrs["schema_version"] == 3 and len(f["classes"]) == 0 and (f["labels"][()] == -1).all()
    info = json.loads(cli("info", "--json").stdout)
    assert info["count"] == 9 and info["unlabelled"] == 9 and info["classes"] == [] and info["per_class"] == {}
    got = json.loads(cli("neighbors", "--key", "IMG_0001.jpg", "--k", "3", "--json").stdout)
    assert [n["label"] for n in got["results"][0]["neighbors"]] == [None, None, None]
    r = cli("neighbors", "--key", "IMG_0001.jpg", "--k", "2")
    assert r.stdout.splitlines()[1].split()[1] == "-"
    dup = json.loads(cli("duplicates", "--json").stdout)
    assert any({m["key"] for m in g["members"]} >= {"IMG_0000.jpg", "IMG_0000 copy.jpg"} and g["labels"] == []
               for g in dup["groups"])
    err = one_line(cli("fit", expect=2), 2)
    assert "unlabelled" in err and len(err.splitlines()) == 1
    # a labelled model evaluates no unlabelled data, but predicts on it (reusing the cached vectors)
    make_dataset(tmp_path / "data", per_class=4)
    cli("embed", tmp_path / "data", "--cache", "cache/labelled.h5")
    cli("fit", "--cache", "cache/labelled.h5", "--val-split", "0")
    err = one_line(cli("evaluate", "models/logreg", photos, expect=2), 2)
    assert "no class folders" in err
    err = one_line(cli("evaluate", "models/logreg", path, expect=2), 2)
    assert "unlabelled" in err
    r = cli("predict", "models/logreg", photos, "--format", "jsonl")
    assert len(r.stdout.splitlines()) == 9


def test_unlabelled_flag_takes_every_image_below_the_folder(cli, tmp_path):
    data = make_dataset(tmp_path / "data", per_class=2)
    r = cli("embed", data, "--unlabelled")
    assert "6 unlabelled images" in r.stdout
    held = cache.load(tmp_path / "cache" / "embeddings.h5", vectors=False)
    assert held.keys[0] == "apples/apples_000.jpg" and not held.labelled and held.classes == []
    # the same folder embedded with its class folders afterwards: the labels come back, nothing re-embedded
    r = cli("embed", data)
    assert "6 images in 3 classes; embedded 0, kept 6" in r.stdout
    assert cache.load(tmp_path / "cache" / "embeddings.h5", vectors=False).labelled
    one_line(cli("embed", data, "--unlabelled", "--labels", "x.csv", expect=2), 2)


def test_labels_from_a_csv_report_unknown_and_missing_paths(cli, tmp_path):
    photos = tmp_path / "photos"
    colours = {"red": CLASS_COLOURS["apples"], "green": CLASS_COLOURS["limes"]}
    rows = ["path,label"]
    for i in range(8):
        label = "red" if i % 2 else "green"
        make_image(photos / "2024" / f"p{i}.jpg", colours[label], i)
        if i != 7:
            rows.append(f"2024/p{i}.jpg,{label}")
    rows.append("2023/gone.jpg,red")
    (photos / "labels.csv").write_text("\n".join(rows) + "\n")
    r = cli("embed", photos, "--labels", photos / "labels.csv")
    assert "7 images in 2 classes" in r.stdout
    assert "1 image(s) not in labels.csv, left out: 2024/p7.jpg" in r.stderr
    assert "1 path(s) in labels.csv not found in" in r.stderr and "2023/gone.jpg" in r.stderr
    assert "not embedded, by extension" not in r.stderr  # the labels file itself is no stray file
    held = cache.load(tmp_path / "cache" / "embeddings.h5", vectors=False)
    assert held.classes == ["green", "red"] and held.labelled
    assert dict(zip(held.keys, (held.classes[i] for i in held.labels)))["2024/p1.jpg"] == "red"
    r = cli("fit", "--val-split", "0", "--json")
    assert json.loads(r.stdout)["n_train"] == 7
    one_line(cli("embed", photos, "--labels", photos / "labels.csv", "--strict", expect=7), 7)  # p7 was left out
    # a label changed in the CSV (no file changed) reaches the cache
    (photos / "labels.csv").write_text("\n".join(rows).replace("2024/p0.jpg,green", "2024/p0.jpg,red") + "\n")
    cli("embed", photos, "--labels", photos / "labels.csv")
    held = cache.load(tmp_path / "cache" / "embeddings.h5", vectors=False)
    assert dict(zip(held.keys, (held.classes[i] for i in held.labels)))["2024/p0.jpg"] == "red"


def _splits_dataset(root):
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        make_dataset(root / split, per_class=n, seed={"train": 0, "val": 1, "test": 2}[split])
    return root


def test_train_val_test_folders_are_the_split(cli, tmp_path):
    data = _splits_dataset(tmp_path / "data")
    r = cli("embed", data)
    assert "33 images in 3 classes, 18 train, 6 val, 9 test" in r.stdout
    held = cache.load(tmp_path / "cache" / "embeddings.h5", vectors=False)
    assert held.classes == ["apples", "limes", "plums"]  # never train/val
    assert {k.split("/")[0]: s for k, s in zip(held.keys, held.splits)} == {"train": "train", "val": "val", "test": "test"}
    assert json.loads(cli("info", "--json").stdout)["split_counts"] == {"train": 18, "val": 6, "test": 9}
    out = json.loads(cli("fit", "--json").stdout)
    assert (out["n_train"], out["n_val"]) == (18, 6)
    manifest = json.loads((tmp_path / "models" / "logreg" / "manifest.json").read_text())
    assert manifest["split"]["from"] == "train/val/test folders" and manifest["split"]["n_test"] == 9
    assert all(k.startswith("val/") for k in manifest["split"]["val_keys"]) and len(manifest["split"]["val_keys"]) == 6
    report = json.loads(cli("evaluate", "models/logreg", "cache/embeddings.h5", "--json").stdout)
    assert report["n"] == 9  # default: the test split
    for split, n in (("val", 6), ("train", 18), ("all", 33)):
        assert json.loads(cli("evaluate", "models/logreg", "cache/embeddings.h5", "--split", split, "--json").stdout)["n"] == n
    report = json.loads(cli("evaluate", "models/logreg", data, "--split", "test", "--json").stdout)  # the folder itself
    assert report["n"] == 9
    flat = make_dataset(tmp_path / "flat", per_class=2)
    err = one_line(cli("evaluate", "models/logreg", flat, "--split", "test", expect=2), 2)
    assert "no train/ val/ test/ folders" in err


def test_identical_files_across_the_folder_splits_are_one_warning_and_recorded(cli, tmp_path):
    """Issue 16 (tester): the same file (same sha256) in train/ and val/ or test/ leaks silently, while the
    README says copies cannot leak. fit warns in one line with the counts and records them in the split."""
    data = _splits_dataset(tmp_path / "data")
    shutil.copy(data / "train" / "apples" / "apples_000.jpg", data / "val" / "apples" / "copy.jpg")
    shutil.copy(data / "train" / "limes" / "limes_001.png", data / "test" / "limes" / "copy.png")
    shutil.copy(data / "train" / "limes" / "limes_002.JPEG", data / "test" / "limes" / "copy2.jpg")
    cli("embed", data)
    r = cli("fit")
    lines = [line for line in r.stderr.splitlines() if "identical files" in line]
    assert len(lines) == 1 and "1 val/ image(s), 2 test/ image(s) are copies of training images" in lines[0], r.stderr
    manifest = json.loads((tmp_path / "models" / "logreg" / "manifest.json").read_text())
    assert manifest["split"]["copies_of_train"] == {"val": 1, "test": 2}
    clean = _splits_dataset(tmp_path / "clean")
    cli("embed", clean, "--cache", "cache/clean.h5")
    r = cli("fit", "--cache", "cache/clean.h5", "--out", "models/clean")
    assert "identical files" not in r.stderr
    assert json.loads((tmp_path / "models" / "clean" / "manifest.json").read_text())["split"]["copies_of_train"] == {}


def test_a_class_missing_from_train_is_one_line(cli, tmp_path):
    data = _splits_dataset(tmp_path / "data")
    make_dataset(data / "test", per_class=2, classes=("lemons",), seed=5)
    cli("embed", data)
    err = one_line(cli("fit", expect=2), 2)
    assert "class 'lemons' has no image in train/" in err


def test_nfd_class_folder_evaluates_against_an_nfc_model(cli, tmp_path):
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    assert nfc != nfd
    CLASS_COLOURS.setdefault(nfc, (120, 80, 40))
    try:
        make_dataset(tmp_path / "train", per_class=5, classes=("apples", nfc))
        cli("embed", tmp_path / "train")
        cli("fit", "--val-split", "0")
        test = tmp_path / "test"
        make_dataset(test, per_class=3, classes=("apples",), seed=3)
        for i in range(3):
            make_image(test / nfd / f"c{i}.jpg", CLASS_COLOURS[nfc], 300 + i)
        report = json.loads(cli("evaluate", "models/logreg", test, "--json").stdout)
        assert report["n"] == 6 and {c["class"]: c["support"] for c in report["per_class"]} == {"apples": 3, nfc: 3}
        r = cli("predict", "models/logreg", test / nfd / "c0.jpg", "--format", "jsonl")
        assert json.loads(r.stdout)["top"][0]["label"] in ("apples", nfc)
    finally:
        CLASS_COLOURS.pop(nfc, None)


def test_class_map_compares_names_in_nfc():
    from embedflow.evaluate import _class_map

    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    # a model whose manifest holds NFD names (an older version, trained on a macOS folder), data in NFC
    assert _class_map([nfc, "tea"], ["tea", nfd], "m").tolist() == [1, 0]
    assert _class_map([nfd], [nfc], "m").tolist() == [0]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_finetune_trains_on_train_validates_on_val_and_never_sees_test(cli, tmp_path, weights_file):
    """The folders are the split for finetune too: before, finetune decoded only test/ (evaluate's default)
    or mixed every folder into its own random split."""
    data = _splits_dataset(tmp_path / "data")
    r = cli("finetune", data, "--out", "models/ft", "--weights", weights_file, "--image-size", SIZE, "--epochs", "1",
            "--fine-tune-epochs", "1", "--no-refit", "--json")
    out = json.loads(r.stdout)
    assert (out["n_train"], out["n_val"]) == (18, 6)
    manifest = json.loads((tmp_path / "models" / "ft" / "manifest.json").read_text())
    assert manifest["split"]["from"] == "train/val/test folders" and manifest["split"]["n_test"] == 9
    assert sorted(k.split("/")[0] for k in manifest["split"]["val_keys"]) == ["val"] * 6
    assert manifest["data"]["count"] == 24  # train/ + val/: no test/ image was trained or validated on
    assert json.loads(cli("evaluate", "models/ft", data, "--json").stdout)["n"] == 9  # test/ is evaluate's
