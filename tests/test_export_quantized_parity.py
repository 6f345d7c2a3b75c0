"""Issue #16: quantized exports pass the same parity gate as float ones. The issue's case: a 14-image,
3-class logreg head whose int8 and dynamic exports predicted one class for every image (33% agreement)
with exit 0 and "ok": true."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

from .conftest import CLASS_COLOURS, SIZE, make_image, run_litert


def test_a_logreg_head_quantizes_faithfully_only_with_its_scaler_unfolded():
    """A near-constant feature (as a small training set gives) has a tiny StandardScaler scale; folded into
    the Dense kernel its 1/scale sets the int8 range of every weight, and the others round to zero."""
    import keras
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    export = importlib.import_module("embedflow.export")  # the module (embedflow.export is also the API function)

    rng = np.random.default_rng(0)
    dim, n = 512, 30
    y = np.arange(n) % 3
    X = (rng.normal(0, 1, (3, dim))[y] + rng.normal(0, 0.5, (n, dim))).astype(np.float32)
    X[:, 0] = 1.0 + rng.normal(0, 1e-4, n)  # a feature that barely varies over the training images
    head = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(C=0.03, max_iter=5000))]).fit(X, y)
    want = head.predict(X)

    def agreement(layers) -> float:
        inputs = keras.Input((dim,))
        x = inputs
        for layer in layers:
            x = layer(x)
        model = keras.Model(inputs, x)
        assert np.allclose(model.predict_on_batch(X), head.predict_proba(X), atol=1e-4)  # float: the same head
        return float(np.mean(run_litert(export.to_tflite(model, "dynamic"), X).argmax(1) == want))

    assert agreement(export.logreg_layers(head, 3, dim)) == 1.0
    assert agreement([export.logreg_dense_layer(head, 3, dim)]) < 0.9  # the folded form this export no longer quantizes


@pytest.fixture(scope="module")
def fourteen(tmp_path_factory, weights_file):
    """The issue's case: 14 images (5/5/4), 3 classes, a logreg head with the default 20% split."""
    from embedflow import api

    root = tmp_path_factory.mktemp("fourteen")
    for ci, (c, n) in enumerate((("apples", 5), ("limes", 5), ("plums", 4))):
        for i in range(n):
            make_image(root / "data" / c / f"{c}_{i}.jpg", CLASS_COLOURS[c], ci * 100 + i)
    api.embed_folder(root / "data", root / "cache" / "e.h5", image_size=SIZE, weights=str(weights_file), reporter=None)
    clf = api.fit_head(root / "cache" / "e.h5", "logreg", reporter=None)
    assert (clf.n_train, clf.n_val) == (11, 3)
    clf.save(root / "models" / "logreg")
    return root


def test_int8_with_too_few_calibration_images_falls_back_and_is_gated_under_strict(fourteen, cli, monkeypatch):
    export = importlib.import_module("embedflow.export")  # the module (embedflow.export is also the API function)

    monkeypatch.chdir(fourteen)
    # A threshold no export can reach stands for an export that disagrees with its source: the gate must
    # then warn, record "ok": false, and exit 7 under --strict, the file still written
    monkeypatch.setattr(export, "PARITY_THRESHOLD", 1.01)
    r = cli("export", "models/logreg", "--quantize", "int8", "--strict", expect=7)
    assert "int8 needs at least 50 calibration images, the training split has 11" in r.stderr
    assert "warning: parity below 101%: the dynamic export disagrees with its source" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: wrote models/logreg-tflite-int8, but its top-1 agreement")
    manifest = json.loads(Path("models/logreg-tflite-int8/manifest.json").read_text())
    parity = manifest["parity"]
    assert parity["ok"] is False and parity["threshold"] == 1.01 and parity["calibration_images"] == 11
    assert manifest["quantize"] == "dynamic" and manifest["quantize_requested"] == "int8"
    assert parity["tflite"]["n"] == 3
    monkeypatch.setattr(export, "PARITY_THRESHOLD", 0.99)
    r = cli("export", "models/logreg", "--quantize", "dynamic", "--strict", "--json")  # the real gate: it passes
    parity = json.loads(r.stdout)["parity"]
    assert parity["ok"] is True and parity["tflite"]["top1_agreement"] >= 0.99 and parity["threshold"] == 0.99


def test_a_head_fitted_without_a_validation_split_is_checked_on_training_images(fourteen, cli, monkeypatch):
    """A tester found: a head fitted with --val-split 0 (the remedy fit suggests for small classes) could
    never be exported ("nothing to check parity on"). Agreement with the source needs images, not held-out
    ones: the check uses the training images and says so."""
    from embedflow import api

    monkeypatch.chdir(fourteen)
    api.fit_head("cache/e.h5", "logreg", val_split=0, reporter=None).save("models/all")
    r = cli("export", "models/all", "--out", "exports/all", "--json")
    parity = json.loads(r.stdout)["parity"]
    assert parity["ok"] is True and parity["tflite"]["n"] == 14 and parity["tflite"]["top1_agreement"] >= 0.99
    manifest = json.loads(Path("exports/all/manifest.json").read_text())
    assert manifest["parity"]["ok"] is True
    assert "training images" in json.dumps(manifest)
