"""`embedflow audit` on synthetic vectors written into caches: planted label issues, outliers, cross-class
copies and train/test leaks rank first; --json, --out files and exit codes. No TensorFlow."""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from embedflow import api, cache
from embedflow.audit import AuditResult, source_image
from embedflow.cli import app

CLASSES = ["apples", "limes", "plums"]
FP = {"backbone": "synthetic", "id": "00000000000000aa", "image_size": 32, "weights_sha256": "0" * 64}
DIM = 32
PER_CLASS = 30


def clusters(seed=0):
    """Three classes of 30 vectors around orthonormal centres: within a class cosine ~0.6 (no two
    images near-duplicates at 0.92), across classes ~0."""
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.normal(size=(DIM, len(CLASSES))))[0].T
    y = np.repeat(np.arange(len(CLASSES)), PER_CLASS)
    X = centres[y] + rng.normal(0, 0.145, (len(y), DIM))
    return X.astype(np.float32), y, centres, rng


def write_cache(path, X, y, *, classes=CLASSES, fingerprint=FP, hashes=None, images=False):
    """A cache of the given vectors with keys <class>/k<row>.png under root path.parent/'images' (the PNG
    files exist when images=True)."""
    n, dim = X.shape
    hashes = hashes or [hashlib.sha256(f"{path.name}{i}".encode()).hexdigest() for i in range(n)]
    src = path.with_name(path.name + ".npz")
    np.savez(src, hashes=np.array(hashes, dtype="S64"), vectors=X.astype(np.float32))
    keys = [f"{classes[y[i]]}/k{i:03d}.png" for i in range(n)]
    root = path.parent / "images"
    if images:
        for i, key in enumerate(keys):
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (24, 16), (40 * (y[i] + 1), 90, 20)).save(root / key)
    rows = [cache.Row(keys[i], hashes[i], int(y[i]), src, i) for i in range(n)]
    cache.write(path, rows, list(classes), fingerprint, str(root), [], dim)
    return path, keys


def run(*args, expect=0):
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == expect, f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def test_a_planted_mislabelled_image_ranks_first(tmp_path):
    X, y, _, _ = clusters()
    y[7] = 1  # an apple filed under limes
    path, keys = write_cache(tmp_path / "c.h5", X, y)
    result = api.audit(path, reporter=None)
    first = result.label_issues[0]
    assert (first.key, first.label, first.suggested) == (keys[7], "limes", "apples")
    assert first.score > 0.9 and result.label_issues[1].score < first.score
    assert len(result.label_issues) == len(y) == result.n_images  # every image is ranked
    assert result.label_issues[-1].score < 0.2


def test_a_planted_far_image_ranks_first_among_outliers(tmp_path):
    X, y, centres, rng = clusters(1)
    X[65] = -centres[2] + rng.normal(0, 0.145, DIM)  # a plum pointing away from every plum
    path, keys = write_cache(tmp_path / "c.h5", X, y)
    result = api.audit(path, reporter=None)
    top, second = result.outliers[:2]
    assert (top.key, top.label) == (keys[65], "plums")
    assert top.score > 3 * max(second.score, 1.0)


def test_a_near_copy_under_another_class_is_a_cross_class_duplicate(tmp_path):
    X, y, _, rng = clusters(2)
    X = np.vstack([X, X[3] + rng.normal(0, 0.005, DIM)]).astype(np.float32)  # a copy of an apple ...
    y = np.append(y, 2)  # ... filed under plums
    path, keys = write_cache(tmp_path / "c.h5", X, y)
    out = json.loads(run("audit", "--cache", path, "--json").stdout)
    assert len(out["duplicates"]) == 1  # the clusters hold no other pair above 0.92
    group = out["duplicates"][0]
    assert group["cross_class"] and group["labels"] == ["apples", "plums"]
    assert sorted(m["key"] for m in group["members"]) == sorted([keys[3], keys[-1]])
    assert out["label_issues"][0]["key"] in (keys[3], keys[-1])


def test_against_finds_the_planted_leaks_and_refuses_another_backbone(tmp_path):
    X, y, _, rng = clusters(3)
    train, train_keys = write_cache(tmp_path / "train.h5", X, y)
    other = rng.normal(size=(12, DIM)).astype(np.float32)  # unrelated directions ...
    other[4] = X[5] + rng.normal(0, 0.01, DIM)  # ... a near-copy of train row 5
    other[9] = X[20]  # ... and the same file as train row 20 (same bytes: same sha256)
    hashes = [hashlib.sha256(f"test{i}".encode()).hexdigest() for i in range(12)]
    train_hashes = cache.load_columns(train).hashes
    hashes[9] = train_hashes[20]
    test, test_keys = write_cache(tmp_path / "test.h5", other, np.zeros(12, int), hashes=hashes)
    result = api.audit(train, against=test, reporter=None)
    assert [(leak.key, leak.other_key) for leak in result.leaks] == [(train_keys[20], test_keys[9]),
                                                                     (train_keys[5], test_keys[4])]
    assert result.leaks[0].score == 1.0 and 0.92 <= result.leaks[1].score < 1.0
    out = json.loads(run("audit", "--cache", train, "--against", test, "--json").stdout)
    assert out["leaks"][1] == {"key": train_keys[5], "label": "apples", "other_key": test_keys[4],
                               "other_label": "apples", "score": round(result.leaks[1].score, 6)}
    text = run("audit", "--cache", train, "--against", test, "--top", "3").stdout
    assert "leaks: 2 image(s)" in text and f"1.0000  {test_keys[9]} ~ {train_keys[20]}" in text

    alien, _ = write_cache(tmp_path / "alien.h5", other, np.zeros(12, int),
                           fingerprint={"backbone": "other", "id": "00000000000000bb"})
    r = run("audit", "--cache", train, "--against", alien, expect=3)
    assert r.stderr.count("\n") == 1 and "differs in: backbone" in r.stderr, r.stderr


def test_json_and_out_files_match_the_result(tmp_path):
    X, y, _, rng = clusters(4)
    y[2] = 2
    X = np.vstack([X, X[40] + rng.normal(0, 0.005, DIM)]).astype(np.float32)
    y = np.append(y, 1)  # a second, same-class copy of row 40: one duplicate group
    path, keys = write_cache(tmp_path / "c.h5", X, y, images=True)
    out_dir = tmp_path / "report"
    printed = json.loads(run("audit", "--cache", path, "--json", "--out", out_dir, "--top", "5").stdout)
    result = api.audit(path, out=tmp_path / "api-report", top=5, reporter=None)
    assert isinstance(result, AuditResult)
    written = json.loads((tmp_path / "api-report" / "audit.json").read_text())
    assert written == json.loads(json.dumps(result.to_dict()))
    assert json.loads((out_dir / "audit.json").read_text()) == printed
    assert printed["label_issues"] == written["label_issues"] and printed["outliers"] == written["outliers"]
    assert printed["label_issues"][0] == {"key": keys[2], "given": "plums", "suggested": "apples",
                                          "score": printed["label_issues"][0]["score"]}
    assert printed["files"] == [str(out_dir / n) for n in ("audit.json", "audit.csv", "label-issues.png")]

    with open(out_dir / "audit.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["key"] for r in rows] == cache.load_columns(path).keys == sorted(keys)  # one row per image, in cache order
    assert list(rows[0]) == ["key", "label", "label_issue_score", "suggested", "outlier_score", "duplicate_group"]
    issue = {i["key"]: i for i in printed["label_issues"]}
    for r in rows:
        assert float(r["label_issue_score"]) == pytest.approx(issue[r["key"]]["score"], abs=1e-6)
        assert r["suggested"] == issue[r["key"]]["suggested"] and r["label"] in CLASSES
        float(r["outlier_score"])
    assert [r["key"] for r in rows if r["duplicate_group"] == "0"] == [keys[40], keys[-1]]
    assert sum(r["duplicate_group"] != "" for r in rows) == 2

    sheet = out_dir / "label-issues.png"
    assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(sheet) as img:
        assert img.format == "PNG" and img.height > 5 * 160  # five rows of thumbnails
    assert not [p for p in out_dir.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_text_summary_lists_the_top_of_each(tmp_path):
    X, y, _, _ = clusters(5)
    y[11] = 2
    path, keys = write_cache(tmp_path / "c.h5", X, y)
    text = run("audit", "--cache", path, "--top", "2", "--quiet").stdout
    lines = text.splitlines()
    assert lines[0] == f"audit of {path}: {len(y)} images, 3 classes"
    assert lines[2].endswith(f"plums -> apples\t{keys[11]}")
    assert "outliers" in lines[4] and "near-duplicates (cosine >= 0.92): 0 group(s)" in lines[7]
    assert len(lines) == 8


def test_source_images_stay_under_the_cache_root(tmp_path):
    root = tmp_path / "images"
    from embedflow.errors import BadImage

    assert source_image(str(root), "a/x.png") == root / "a" / "x.png"
    for key in ("../secret.png", "a/../../secret.png", "/etc/passwd"):
        assert isinstance(source_image(str(root), key), BadImage), key  # the sheet shows why, reads nothing
    assert source_image("", "a/x.png") is None


def test_missing_and_single_class_caches_exit_with_one_line(tmp_path):
    r = run("audit", "--cache", tmp_path / "nope.h5", expect=4)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ")
    X, _, _, _ = clusters(6)
    path, _ = write_cache(tmp_path / "one.h5", X, np.zeros(len(X), int))
    r = run("audit", "--cache", path, expect=2)
    assert r.stderr.count("\n") == 1 and "at least two classes" in r.stderr and "1 (apples)" in r.stderr
    r = run("audit", "--cache", path, "--top", "-1", expect=2)
    assert "--top" in r.stderr


def test_embedded_folder_end_to_end_flags_a_photo_filed_under_two_classes(cli, tmp_path):
    """embed (tiny random-weight backbone) then audit: the byte-identical copy of an apple filed under
    limes is a cross-class group at 1.0 and a label issue (suggested: apples) above its correctly filed
    twin; the sheet shows the images from the cache's root."""
    import shutil

    from .conftest import make_dataset

    data = make_dataset(tmp_path / "data", per_class=6)
    shutil.copy(data / "apples" / "apples_001.png", data / "limes" / "copy.png")
    cli("embed", data, "--quiet")
    out = json.loads(cli("audit", "--json", "--out", "report").stdout)
    group = out["duplicates"][0]
    assert group["cross_class"] and group["min_score"] == 1.0
    assert {m["key"] for m in group["members"]} == {"apples/apples_001.png", "limes/copy.png"}
    ranked = [i["key"] for i in out["label_issues"]]  # random weights, 6 images a class: a noisy ranking
    copy = out["label_issues"][ranked.index("limes/copy.png")]
    assert copy["suggested"] == "apples" and copy["score"] > 0.5
    assert ranked.index("limes/copy.png") < ranked.index("apples/apples_001.png")  # the copy, not its twin
    with Image.open(tmp_path / "report" / "label-issues.png") as sheet:
        cell = np.asarray(sheet.convert("RGB"))[24 + 6 + 10:24 + 6 + 150, 6 + 10:6 + 150]
    assert (cell == 200).all(axis=-1).mean() < 0.5 and (cell != 255).any()  # a photo, not the grey "no image" square
