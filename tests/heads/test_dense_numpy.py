"""The dense head is trained and applied in numpy (issue #20): the same recipe as the Keras head it
replaced, no Keras import when it fits, predicts, saves or loads, and model folders written by the Keras
head (head.keras) still load and predict the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedflow.heads import DenseHead

ROOT = Path(__file__).resolve().parents[2]


def _blobs(n=120, dim=16, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    X = (2 * np.eye(classes, dim)[y] + rng.normal(0, 1, (n, dim))).astype(np.float32)
    return X, y


NO_KERAS = r"""
import sys, tempfile
import numpy as np
from embedflow.heads import check_trainable, make_head
from embedflow.models import HeadClassifier, load_model
rng = np.random.default_rng(0)
y = np.arange(200) % 4
X = (np.eye(4, 32)[y] * 3 + rng.normal(0, 1, (200, 32))).astype(np.float32)
head = check_trainable("dense", make_head("dense", epochs=30, learning_rate=0.05), y, list("abcd"))
proba = head.fit(X, y).predict_proba(X)
assert (proba.argmax(1) == y).mean() > 0.9
with tempfile.TemporaryDirectory() as d:
    fp = {"id": "no-keras", "image_size": 96, "output_dim": 32}
    HeadClassifier(head, {"head": "dense", "classes": list("abcd"), "fingerprint": fp}).save(d + "/m")
    again = load_model(d + "/m").predict_proba_vectors(X)
assert np.allclose(again, proba, atol=1e-6)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("keras", "tensorflow", "tf_keras"))
print("IMPORTED", heavy[:5])
assert not heavy, heavy
"""


def test_dense_head_fits_predicts_saves_and_loads_without_importing_keras(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EMBEDFLOW_HOME": str(tmp_path / "home")}
    r = subprocess.run([sys.executable, "-c", NO_KERAS], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "IMPORTED []" in r.stdout


def test_learned_state_is_float32_coef_and_intercept():
    X, y = _blobs()
    head = DenseHead(epochs=3).fit(X, y)
    assert head.coef_.dtype == head.intercept_.dtype == np.float32
    assert head.coef_.shape == (3, 16) and head.intercept_.shape == (3,)
    assert head.n_epochs_ == 3 and head.batch_size_ == 32 and head.n_features_in_ == 16
    logits = X.astype(np.float64) @ head.coef_.T + head.intercept_
    want = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(head.predict_proba(X), want / want.sum(1, keepdims=True), atol=1e-5)
    init = DenseHead(epochs=0).fit(X, y).coef_  # Glorot uniform: U(-l, l), l = sqrt(6 / (16 + 3))
    limit = np.sqrt(6 / 19)
    assert np.abs(init).max() <= limit and np.abs(init).max() > 0.8 * limit
    np.testing.assert_array_equal(DenseHead(epochs=0).fit(X, y).intercept_, 0)
    np.testing.assert_array_equal(DenseHead(epochs=5).fit(X, y).coef_, head.__class__(epochs=5).fit(X, y).coef_)


def test_early_stopping_restores_the_best_epoch_and_counts_the_epochs_run():
    """Held-out loss that stops improving: training stops `patience` epochs after its best epoch, and the
    head is the one of that epoch (a run of exactly that many epochs ends on it)."""
    from sklearn.model_selection import train_test_split

    X, y = _blobs(n=300, dim=40, classes=3, seed=1)
    rng = np.random.default_rng(2)
    y_noisy = np.where(rng.random(len(y)) < 0.3, rng.integers(0, 3, len(y)), y)  # overfits quickly at lr 0.1
    head = DenseHead(learning_rate=0.1, epochs=200, patience=3).fit(X, y_noisy)
    assert 3 < head.n_epochs_ < 200
    best = head.n_epochs_ - 3
    at_best = DenseHead(learning_rate=0.1, epochs=best, patience=1000).fit(X, y_noisy)
    np.testing.assert_array_equal(at_best.coef_, head.coef_)
    _, X_es, _, y_es = train_test_split(X, y_noisy, test_size=0.1, stratify=y_noisy, random_state=0)

    def held_out_loss(h):
        return -np.log(h.predict_proba(X_es)[np.arange(len(y_es)), y_es]).mean()

    before = DenseHead(learning_rate=0.1, epochs=best - 1, patience=1000).fit(X, y_noisy)
    assert held_out_loss(head) < held_out_loss(before)  # the best epoch improved on the ones before it
    assert DenseHead(epochs=7, patience=1000).fit(X, y).n_epochs_ == 7


def test_one_full_batch_per_epoch_matches_keras_step_for_step():
    """The loss, class weights, gradient and Adam of Keras 3 (dropout 0, one batch holding every vector, so
    the shuffle order cannot matter): five epochs from the same initial weights give the same head."""
    from embedflow.backbones import quiet_tensorflow

    quiet_tensorflow()
    import keras

    X, y = _blobs(n=60, dim=12, classes=3)
    params = dict(dropout=0.0, learning_rate=0.01, batch_size=60, validation_fraction=0, random_state=3)
    init = DenseHead(epochs=0, **params).fit(X, y)
    ours = DenseHead(epochs=5, class_weight={0: 2.0, 2: 0.5}, **params).fit(X, y)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dropout(0.0),
                              keras.layers.Dense(3, activation="softmax")])
    model.set_weights([init.coef_.T, init.intercept_])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=10, restore_best_weights=True)
    history = model.fit(X, y, epochs=5, batch_size=60, class_weight={0: 2.0, 1: 1.0, 2: 0.5}, callbacks=[stop],
                        shuffle=False, verbose=0)
    np.testing.assert_allclose(ours.loss_curve_, history.history["loss"], rtol=1e-5)  # sum(w * loss) / batch length
    kernel, bias = model.layers[-1].get_weights()
    assert np.abs(kernel.T - init.coef_).max() > 0.01  # it trained
    np.testing.assert_allclose(ours.coef_, kernel.T, atol=2e-6)
    np.testing.assert_allclose(ours.intercept_, bias, atol=2e-6)


def _keras_head(X, y, n_classes: int):
    """A head as the Keras DenseHead built and trained it before issue #20 (Dropout + softmax Dense
    "probabilities", Adam, sparse categorical cross-entropy), trained a few epochs."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((X.shape[1],), name="embedding"), keras.layers.Dropout(0.2),
                              keras.layers.Dense(n_classes, activation="softmax", name="probabilities")])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(X, y, epochs=5, batch_size=32, verbose=0)
    return model


def test_a_model_folder_with_a_keras_dense_head_still_loads_and_predicts_the_same(tmp_path, monkeypatch):
    """A folder written by the Keras dense head (head.keras, saved by Keras itself as the old
    HeadClassifier._write_members did) loads through embedflow.load_model into the numpy head, whose
    probabilities are Keras' own."""
    from embedflow import load_model
    from embedflow.backbones import quiet_tensorflow
    from embedflow.models import HeadClassifier, head_model, sha256_file

    quiet_tensorflow()
    X, y = _blobs(n=90, dim=24, classes=3)
    keras_model = _keras_head(X, y, 3)
    hyper = {"dropout": 0.2, "learning_rate": 1e-3, "epochs": 5, "batch_size": None, "patience": 10,
             "validation_fraction": 0.1, "class_weight": None, "random_state": 0}

    def old_write_members(self, staged):  # the writer before issue #20
        keras_model.save(staged / "head.keras")
        self.manifest["head_file"] = "head.keras"
        return {"head.keras": sha256_file(staged / "head.keras")}

    monkeypatch.setattr(HeadClassifier, "_write_members", old_write_members)
    fp = {"id": "legacy-dense", "image_size": 96, "output_dim": 24}
    est = DenseHead(epochs=1).fit(X, y)  # only carries classes_ into the old writer
    HeadClassifier(est, {"head": "dense", "classes": ["a", "b", "c"], "fingerprint": fp,
                         "hyperparameters": hyper}).save(tmp_path / "old")
    monkeypatch.undo()
    manifest = json.loads((tmp_path / "old" / "manifest.json").read_text())
    assert manifest["head_file"] == "head.keras" and "head.joblib" not in os.listdir(tmp_path / "old")

    loaded = load_model(tmp_path / "old")
    head = loaded.estimator
    assert isinstance(head, DenseHead) and not hasattr(head, "model_") and head.get_params() == DenseHead(epochs=5).get_params()
    want = keras_model.predict_on_batch(X)
    got = loaded.predict_proba_vectors(X)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_array_equal(got.argmax(1), want.argmax(1))
    kernel, bias = keras_model.get_layer("probabilities").get_weights()
    np.testing.assert_array_equal(head.coef_, kernel.T)
    np.testing.assert_array_equal(head.intercept_, bias)
    assert head_model._n_features(head) == 24

    # In a new process (as `embedflow predict` runs) the old folder loads and predicts without Keras or TensorFlow.
    np.save(tmp_path / "X.npy", X)
    code = ("import sys, numpy as np; from embedflow import load_model; "
            f"m = load_model({str(tmp_path / 'old')!r}); p = m.predict_proba_vectors(np.load({str(tmp_path / 'X.npy')!r})); "
            f"np.save({str(tmp_path / 'p.npy')!r}, p); print(sorted(k for k in ('keras', 'tensorflow') if k in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), got)

    loaded.save(tmp_path / "new")  # saved again: the numpy head, as head.joblib
    again = json.loads((tmp_path / "new" / "manifest.json").read_text())
    assert again["head_file"] == "head.joblib" and again["head"] == "dense"
    np.testing.assert_allclose(load_model(tmp_path / "new").predict_proba_vectors(X), got, atol=1e-7)


def test_a_keras_head_file_for_another_head_kind_is_refused(tmp_path):
    """head.keras is only a dense head's (old) file: a manifest naming it for a logreg head is refused."""
    from embedflow.errors import ModelError
    from embedflow.models import manifest as manifest_mod

    m = {"kind": "cached-head", "head": "logreg", "head_file": "head.keras", "classes": ["a", "b"],
         "fingerprint": {"id": "x", "image_size": 96}, "files": {"head.keras": "0" * 64}}
    with pytest.raises(ModelError, match="head_file"):
        manifest_mod.validate_manifest(m, tmp_path)
    manifest_mod.validate_manifest({**m, "head": "dense"}, tmp_path)  # an old dense folder: valid


def test_a_keras_head_file_of_another_shape_is_left_to_keras(tmp_path):
    """keras_file_dense_weights reads only input -> [Dropout] -> one softmax Dense; any other .keras file
    (two Dense layers, no softmax, damaged bytes) gives None, so the loader falls back to Keras itself."""
    import keras

    from embedflow.heads.dense import keras_file_dense_weights

    def saved(model) -> bytes:
        model.save(tmp_path / "m.keras")
        return (tmp_path / "m.keras").read_bytes()

    inp = keras.Input((6,))
    plain = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(keras.layers.Dropout(0.2)(inp)))
    coef, intercept = keras_file_dense_weights(saved(plain))
    kernel, bias = plain.layers[-1].get_weights()
    np.testing.assert_array_equal(coef, kernel.T)
    np.testing.assert_array_equal(intercept, bias)
    two = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(4)(inp)))
    assert keras_file_dense_weights(saved(two)) is None
    linear = keras.Model(inp, keras.layers.Dense(3)(inp))
    assert keras_file_dense_weights(saved(linear)) is None
    assert keras_file_dense_weights(b"not a zip") is None
