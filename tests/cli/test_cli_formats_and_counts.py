"""Issue 16, through the CLI and the API as a user meets it: image formats found by content rather than by
extension (each kind's warning true), and the embed summary's "skipped" counting every file taken for a
picture that was not embedded (NFC/NFD name collisions included), with --strict exiting 7 on them."""

from __future__ import annotations

import json
import unicodedata

from PIL import Image

from embedflow import api, cache

from ..conftest import CLASS_COLOURS, SIZE, make_dataset, make_image
from .test_cli_layouts import one_line

# (name, first bytes, what the user must read): pictures embedflow does not decode, in a class folder
UNSUPPORTED = [
    ("layers.psd", b"8BPS\x00\x01" + bytes(40), "Photoshop PSD: not supported"),
    ("IMG_1.CR2", b"II*\x00\x10\x00\x00\x00CR\x02\x00" + bytes(40), "camera RAW (CR2): not supported"),
    ("IMG_2.dng", b"II*\x00\x08\x00\x00\x00" + bytes(40), "camera RAW (DNG): not supported"),
    ("photo.jxl", b"\xff\x0a" + bytes(40), "JPEG XL: not supported"),
    ("logo.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>', "SVG drawing: not supported"),
    ("scan.pdf", b"%PDF-1.7\n" + bytes(40), "PDF document: not supported"),
]


def _odd_formats(data):
    """Three decodable pictures without an image extension, the unsupported ones above, a Photoshop file named
    .jpg (found by the decoder) and a text file."""
    make_image(data / "apples" / "IMG_0100", CLASS_COLOURS["apples"], 100, fmt="JPEG")
    make_image(data / "limes" / "export.dat", CLASS_COLOURS["limes"], 101, fmt="PNG")
    make_image(data / "plums" / "scan", CLASS_COLOURS["plums"], 102, fmt="PNG")
    for name, head, _ in UNSUPPORTED:
        (data / "apples" / name).write_bytes(head)
    (data / "plums" / "cover.jpg").write_bytes(b"8BPS\x00\x01" + bytes(40))
    (data / "limes" / "notes.txt").write_text("picked in June")


def test_formats_by_content_through_the_cli(cli, tmp_path, weights_file):
    data = make_dataset(tmp_path / "data", per_class=3)
    _odd_formats(data)
    # --strict refuses before embedding anything, naming the first file left out and its format
    err = one_line(cli("embed", data, "--strict", expect=7), 7)
    assert "6 file(s), class(es) or folder(s) left out" in err and "apples/IMG_1.CR2: camera RAW (CR2): not supported" in err
    assert not (tmp_path / "cache" / "embeddings.h5").exists()
    r = cli("embed", data)
    # 9 + 3 decodable by content; 6 unsupported by discovery + 1 by the decoder are skipped
    assert "12 images in 3 classes; embedded 12, kept 0, reused 0, removed 0, skipped 7 in" in r.stdout, r.stdout
    warnings = r.stderr.splitlines()
    assert ("warning: 3 file(s) without an image extension embedded by their content: apples/IMG_0100 (JPEG), "
            "limes/export.dat (PNG), plums/scan (PNG)") in warnings, r.stderr
    assert ("warning: 7 file(s) not embedded, by extension: .cr2 1 (camera RAW (CR2): not supported), .dng 1 (camera "
            "RAW (DNG): not supported), .jxl 1 (JPEG XL: not supported), .pdf 1 (PDF document: not supported), .psd 1 "
            "(Photoshop PSD: not supported), .svg 1 (SVG drawing: not supported), .txt 1 (not an image)") in warnings
    assert "warning: skipped plums/cover.jpg: Photoshop PSD: not supported" in warnings
    assert ("warning: 7 file(s) skipped: 1 not decoded (`embedflow info --cache cache/embeddings.h5` lists them), 6 left "
            "out by discovery (the warnings above say why; `embed --json` lists them as skipped)") in warnings
    held = cache.load(tmp_path / "cache" / "embeddings.h5", vectors=False)
    assert {"apples/IMG_0100", "limes/export.dat", "plums/scan"} <= set(held.keys) and len(held) == 12
    out = json.loads(cli("embed", data, "--json").stdout)
    assert sorted(map(tuple, out["skipped"])) == sorted(
        [(f"apples/{name}", why) for name, _, why in UNSUPPORTED] + [("plums/cover.jpg", "Photoshop PSD: not supported")])
    assert (out["embedded"], out["kept"]) == (0, 12)
    # the API says the same
    s = api.embed_folder(data, tmp_path / "cache" / "embeddings.h5", image_size=SIZE, weights=str(weights_file))
    assert len(s.skipped) == 7 and ("apples/photo.jxl", "JPEG XL: not supported") in s.skipped


def test_skipped_counts_names_that_differ_only_by_unicode_normal_form(cli, tmp_path):
    """Two files whose names differ only by NFC/NFD in one folder: one is embedded, the other skipped; the
    summary's skipped count, its JSON and --strict (exit 7) all include it."""
    data = make_dataset(tmp_path / "data", per_class=3)
    nfc, nfd = unicodedata.normalize("NFC", "café.png"), unicodedata.normalize("NFD", "café.png")
    make_image(data / "apples" / nfc, CLASS_COLOURS["apples"], 200, fmt="PNG")
    make_image(data / "apples" / nfd, CLASS_COLOURS["apples"], 201, fmt="PNG")
    r = cli("embed", data)
    assert "10 images in 3 classes; embedded 10, kept 0, reused 0, removed 0, skipped 1 in" in r.stdout, r.stdout
    assert "only by Unicode normalisation" in r.stderr and "1 file(s) skipped: 1 left out by discovery" in r.stderr
    out = json.loads(cli("embed", data, "--json").stdout)
    assert len(out["skipped"]) == 1 and out["skipped"][0][0] == "apples/" + nfc
    assert "only by Unicode normalisation" in out["skipped"][0][1]
    err = one_line(cli("embed", data, "--strict", expect=7), 7)
    assert "--strict" in err and "Unicode normalisation" in err


def test_a_loose_image_and_an_image_missing_from_the_csv_are_counted_as_skipped(cli, tmp_path):
    data = make_dataset(tmp_path / "data", per_class=3)
    make_image(data / "stray.jpg", (1, 2, 3), 300)
    r = cli("embed", data)
    assert "9 images in 3 classes; embedded 9, kept 0, reused 0, removed 0, skipped 1 in" in r.stdout
    one_line(cli("embed", data, "--strict", expect=7), 7)


def test_an_unsupported_picture_named_jpg_is_named_by_the_decoder(tmp_path):
    from embedflow.data import BadImage, decode_bytes

    for head, why in [(b"8BPS\x00\x01" + bytes(40), "Photoshop PSD: not supported"),
                      (b"II*\x00\x10\x00\x00\x00CR\x02\x00" + bytes(40), "camera RAW (CR2): not supported")]:
        try:
            decode_bytes(head, SIZE)
        except BadImage as e:
            assert str(e) == why
        else:
            raise AssertionError("decoded")
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")  # a real picture still decodes
    assert decode_bytes((tmp_path / "x.png").read_bytes(), 8).shape == (8, 8, 3)


def _csv_photos(tmp_path):
    photos = tmp_path / "photos"
    colours = {"red": CLASS_COLOURS["apples"], "green": CLASS_COLOURS["limes"]}
    rows = ["label;path"]  # semicolons, the label first, a path with a comma
    for i in range(6):
        label = "red" if i % 2 else "green"
        name = f"p{i}, june.jpg" if i == 0 else f"p{i}.jpg"
        make_image(photos / name, colours[label], i)
        rows.append(f"{label};{name}")
    (tmp_path / "labels.csv").write_bytes(("\r\n".join(rows) + "\r\n").encode("utf-8-sig"))
    return photos


def test_a_semicolon_label_path_csv_with_bom_and_crlf_is_read_and_kept_on_a_rerun_without_labels(cli, tmp_path):
    photos = _csv_photos(tmp_path)
    r = cli("embed", photos, "--labels", tmp_path / "labels.csv")
    assert "6 images in 2 classes" in r.stdout and "skipped 0" in r.stdout, r.stdout + r.stderr
    held = cache.load(tmp_path / "cache" / "embeddings.h5", vectors=False)
    assert dict(zip(held.keys, (held.classes[i] for i in held.labels)))["p0, june.jpg"] == "green"
    recorded = cache.labels_csv(tmp_path / "cache" / "embeddings.h5")
    assert recorded["path"] == str(tmp_path / "labels.csv") and len(recorded["sha256"]) == 64
    # a rerun without --labels keeps the recorded labels file (never silently unlabelled), and says so
    make_image(photos / "p6.jpg", CLASS_COLOURS["apples"], 6)
    with open(tmp_path / "labels.csv", "ab") as f:
        f.write(b"red;p6.jpg\r\n")
    r = cli("embed", photos)
    assert "7 images in 2 classes; embedded 1, kept 6" in r.stdout, r.stdout + r.stderr
    assert f"labels from {tmp_path / 'labels.csv'}, as recorded in cache/embeddings.h5" in r.stderr
    assert cache.load(tmp_path / "cache" / "embeddings.h5", vectors=False).labelled
    # the recorded file gone: one line, exit 2
    (tmp_path / "labels.csv").rename(tmp_path / "moved.csv")
    err = one_line(cli("embed", photos, expect=2), 2)
    assert "which is gone" in err and "--labels" in err
    # --unlabelled is an explicit choice: taken
    assert "7 unlabelled images" in cli("embed", photos, "--unlabelled").stdout
    assert cache.labels_csv(tmp_path / "cache" / "embeddings.h5") is None


def test_a_csv_that_names_no_image_is_one_true_line(cli, tmp_path):
    photos = _csv_photos(tmp_path)
    (tmp_path / "other.csv").write_text("path,label\nelsewhere/a.jpg,red\nelsewhere/b.jpg,green\n")
    err = one_line(cli("embed", photos, "--labels", tmp_path / "other.csv", expect=2), 2)
    assert "none of its 2 path(s) names an image below the dataset folder (e.g. 'elsewhere/a.jpg')" in err
    assert "expected path,label rows" in err
    (tmp_path / "one.csv").write_text("p1.jpg red\n")
    err = one_line(cli("embed", photos, "--labels", tmp_path / "one.csv", expect=2), 2)
    assert "has one column" in err


def test_evaluate_says_how_many_scored_images_the_model_was_trained_on(cli, tmp_path):
    """Tester (#16): `evaluate m L` on L with train/ and val/ but no test/ scored every image, training ones
    included, and reported 100% without saying so."""
    for split, n in (("train", 6), ("val", 2)):
        make_dataset(tmp_path / "L" / split, per_class=n, seed={"train": 0, "val": 1}[split])
    cli("embed", tmp_path / "L")
    cli("fit")  # trains on train/, validates on val/, then refits on both
    r = cli("evaluate", "models/logreg", tmp_path / "L", "--json")
    report = json.loads(r.stdout)
    assert report["n"] == 24 and report["trained_on"] == 24
    assert ("24 of the 24 images scored were used to train models/logreg: the score is optimistic; --split val or "
            "test scores only the others") in r.stderr
    cli("fit", "--no-refit", "--out", "models/norefit")
    r = cli("evaluate", "models/norefit", tmp_path / "L", "--json")
    assert json.loads(r.stdout)["trained_on"] == 18
    r = cli("evaluate", "models/norefit", tmp_path / "L", "--split", "val", "--json")
    assert json.loads(r.stdout)["trained_on"] == 0 and "used to train" not in r.stderr
