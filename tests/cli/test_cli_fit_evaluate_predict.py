"""fit / evaluate / predict / info through the CLI, the manifest, and the errors users meet."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedflow import models

from ..conftest import make_dataset, make_image


@pytest.mark.parametrize("head", ["logreg", "svm", "dense"])
def test_fit_writes_a_complete_model_folder(cli, tmp_path, head):
    data = make_dataset(tmp_path / "data", per_class=10)
    cli("embed", data, "--quiet")
    r = cli("fit", "--head", head, "--json")
    out = json.loads(r.stdout)
    mdir = Path(out["model_dir"])
    assert mdir == Path("models") / head
    manifest = json.loads((mdir / "manifest.json").read_text())
    assert manifest["head"] == head and manifest["classes"] == ["apples", "limes", "plums"]
    assert manifest["fingerprint"]["backbone"] == "mobilenet_v2" and len(manifest["fingerprint"]["id"]) == 16
    assert manifest["split"]["n_val"] == out["n_val"] == 6 and manifest["split"]["n_train"] == 24
    head_file = manifest["head_file"]
    assert head_file == "head.joblib"  # every head, dense too since issue #20 (a numpy estimator)
    assert manifest["files"][head_file] == models.sha256_file(mdir / head_file)
    report = json.loads((mdir / "report.json").read_text())
    assert set(report) >= {"accuracy", "macro_precision", "macro_recall", "macro_f1", "per_class", "confusion_matrix"}
    assert np.array(report["confusion_matrix"]).sum() == 6
    assert json.loads((mdir / "confusion.json").read_text())["matrix"] == report["confusion_matrix"]
    assert (mdir / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    # the synthetic classes are colours: any working head separates them
    assert report["accuracy"] >= 0.8


def test_fit_errors_are_one_clear_line(cli, tmp_path):
    single = tmp_path / "single"
    for i in range(4):
        make_image(single / "only" / f"{i}.jpg", (1, 2, 3), i)
    cli("embed", single, "--cache", "one.h5", "--quiet")
    r = cli("fit", "--cache", "one.h5", expect=2)
    assert r.stderr.strip() == "error: need at least 2 classes to train a classifier, the cache holds one (only)"

    small = make_dataset(tmp_path / "small", per_class=5)
    make_image(small / "lemons" / "l.jpg", (230, 220, 50), 9)
    cli("embed", small, "--cache", "small.h5", "--quiet")
    r = cli("fit", "--cache", "small.h5", expect=2)
    assert "class 'lemons' has 1 distinct image(s)" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    cli("fit", "--cache", "small.h5", "--val-split", "0")  # no validation: allowed

    r = cli("fit", "--cache", "missing.h5", expect=4)
    assert "no cache at missing.h5" in r.stderr
    r = cli("fit", "--cache", "small.h5", "--head", "forest", expect=2)
    assert "unknown head 'forest'" in r.stderr


def test_evaluate_predict_info(cli, tmp_path, weights_file):
    train = make_dataset(tmp_path / "train", per_class=10, seed=1)
    test = make_dataset(tmp_path / "test", per_class=4, seed=2)
    cli("embed", train, "--quiet")
    cli("fit", "--head", "logreg", "--quiet")
    r = cli("evaluate", "models/logreg", test, "--json")
    report = json.loads(r.stdout)
    assert report["n"] == 12 and report["accuracy"] >= 0.8
    assert (Path("models/logreg") / "eval-report.json").exists() and (Path("models/logreg") / "eval-confusion.png").exists()
    assert list(Path("cache").glob("test-*.h5"))  # the folder went through a cache of its own
    r = cli("evaluate", "models/logreg", list(Path("cache").glob("test-*.h5"))[0])  # or a cache directly
    assert "accuracy" in r.stdout

    # predict: files and folders, top-k, JSON
    r = cli("predict", "models/logreg", test / "limes" / "limes_000.jpg", test / "plums", "--top-k", "2", "--json")
    out = json.loads(r.stdout)
    assert len(out["predictions"]) == 5 and all(len(p["top"]) == 2 for p in out["predictions"])
    first = out["predictions"][0]["top"]
    assert first[0]["label"] == "limes" and first[0]["probability"] >= first[1]["probability"]
    r = cli("predict", "models/logreg", test / "apples" / "apples_000.jpg")
    assert r.stdout.startswith(str(test / "apples" / "apples_000.jpg")) and "apples" in r.stdout.split("\t")[1]

    r = cli("info")
    assert "mobilenet_v2" in r.stdout and "apples (10)" in r.stdout
    info = json.loads(cli("info", "--json").stdout)
    assert info["count"] == 30 and info["per_class"] == {"apples": 10, "limes": 10, "plums": 10}

    # class names must match
    other = make_dataset(tmp_path / "other", per_class=3, classes=("apples", "lemons"))
    r = cli("evaluate", "models/logreg", other, expect=2)
    assert "classes not known to model models/logreg: lemons" in r.stderr


def test_predict_reuses_cached_vectors(cli, tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "data", per_class=6)
    cli("embed", data, "--quiet")
    cli("fit", "--quiet")
    from embedflow import backbones

    monkeypatch.setattr(backbones, "make_embedder", lambda *a, **k: pytest.fail("cached image was re-embedded"))
    copy = tmp_path / "elsewhere.jpg"
    shutil.copy(data / "limes" / "limes_001.png", copy)  # same content, another path
    r = cli("predict", "models/logreg", copy, "--json")
    assert json.loads(r.stdout)["predictions"][0]["top"][0]["label"] == "limes"


def test_model_refuses_other_fingerprint(cli, tmp_path, weights_file):
    data = make_dataset(tmp_path / "data", per_class=6)
    cli("embed", data, "--quiet")
    cli("fit", "--quiet")
    cli("embed", data, "--cache", "big.h5", "--weights", weights_file, "--image-size", "128", "--quiet", tiny=False)
    r = cli("evaluate", "models/logreg", "big.h5", expect=3)
    assert "was made with" in r.stderr and "image_size" in r.stderr and "Traceback" not in r.stderr


def test_tampered_head_is_refused(cli, tmp_path):
    data = make_dataset(tmp_path / "data", per_class=6)
    cli("embed", data, "--quiet")
    cli("fit", "--quiet")
    with open("models/logreg/head.joblib", "ab") as f:
        f.write(b"\x00")
    r = cli("predict", "models/logreg", data / "apples" / "apples_000.jpg", expect=5)
    assert "does not match the sha256 in its manifest" in r.stderr
    r = cli("predict", "nowhere", data, expect=5)
    assert "no model folder at nowhere" in r.stderr


def test_console_script_prints_no_traceback(tmp_path):
    exe = Path(sys.executable).with_name("embedflow")
    r = subprocess.run([str(exe), "fit", "--cache", str(tmp_path / "x.h5")], capture_output=True, text=True)
    assert r.returncode == 4 and r.stderr.startswith("error: no cache at") and "Traceback" not in r.stderr
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "embed" in r.stdout


def test_model_refuses_changed_backbone_weights(cli, tmp_path, weights_file):
    """A weights file replaced at the same path would embed new images differently: refused."""
    mine = tmp_path / "mine.weights.h5"
    shutil.copy(weights_file, mine)
    data = make_dataset(tmp_path / "data", per_class=6)
    cli("embed", data, "--weights", mine, "--image-size", "96", "--quiet", tiny=False)
    cli("fit", "--quiet")
    with open(mine, "ab") as f:
        f.write(b"different weights")
    copy = tmp_path / "new.jpg"
    make_image(copy, (200, 40, 40), 4321)
    r = cli("predict", "models/logreg", copy, expect=3)
    assert "have changed since this artifact was made" in r.stderr
