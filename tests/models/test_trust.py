"""Trust: model folders are signed with a per-user key; a foreign one needs trust=True; the head is loaded
from the very bytes whose sha256 was checked."""

from __future__ import annotations

import io
import json
import os
import stat

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from embedflow import models
from embedflow.errors import ModelError, UntrustedModel
from embedflow.models import HeadClassifier, load_model, manifest as manifest_mod

FP = {"id": "test-fingerprint", "image_size": 96}


def _save_head(path, seed=0):
    rng = np.random.default_rng(seed)
    X, y = rng.normal(size=(30, 8)).astype(np.float32), np.arange(30) % 3
    est = LogisticRegression().fit(X, y)
    HeadClassifier(est, {"head": "logreg", "classes": ["a", "b", "c"], "fingerprint": FP}).save(path)
    return X


@pytest.fixture
def key(tmp_path, monkeypatch):
    path = tmp_path / "keys" / "signing.key"
    monkeypatch.setenv("EMBEDFLOW_SIGNING_KEY", str(path))
    return path


def test_first_save_creates_a_private_key_and_signs_the_manifest(tmp_path, key):
    assert not key.exists()
    X = _save_head(tmp_path / "m")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["signature"].startswith("hmac-sha256:") and key.read_text().strip() not in json.dumps(manifest)
    clf = load_model(tmp_path / "m")
    assert clf.trusted and clf.predict_proba_vectors(X).shape == (30, 3)


def test_a_folder_signed_with_another_key_needs_trust_and_can_be_adopted(tmp_path, key, monkeypatch):
    monkeypatch.setenv("EMBEDFLOW_SIGNING_KEY", str(tmp_path / "other.key"))
    X = _save_head(tmp_path / "foreign")
    monkeypatch.setenv("EMBEDFLOW_SIGNING_KEY", str(key))
    with pytest.raises(UntrustedModel, match="was not written by this installation; pass --trust") as e:
        load_model(tmp_path / "foreign")
    assert e.value.exit_code == 5
    clf = load_model(tmp_path / "foreign", trust=True)
    assert clf.trusted
    clf.save(tmp_path / "adopted")  # saving a trusted model signs it with this user's key
    np.testing.assert_allclose(load_model(tmp_path / "adopted").predict_proba_vectors(X), clf.predict_proba_vectors(X))


def test_without_a_key_every_folder_is_foreign_and_loading_creates_no_key(tmp_path, key, monkeypatch):
    _save_head(tmp_path / "m")
    key.unlink()
    with pytest.raises(UntrustedModel):
        load_model(tmp_path / "m")
    assert not key.exists()


def test_a_key_other_users_can_read_is_refused(tmp_path, key):
    _save_head(tmp_path / "m")
    os.chmod(key, 0o644)
    with pytest.raises(ModelError, match="can be read or written by other users.*chmod 600"):
        load_model(tmp_path / "m")
    with pytest.raises(ModelError, match="chmod 600"):
        _save_head(tmp_path / "m2")


def test_a_damaged_key_is_one_clear_error(tmp_path, key):
    _save_head(tmp_path / "m")
    key.write_text("not hex")
    with pytest.raises(ModelError, match="is damaged; delete it"):
        load_model(tmp_path / "m")


def test_head_is_loaded_from_the_bytes_that_were_hashed(tmp_path, key, monkeypatch):
    """A head file swapped right after its hash was checked is not what gets loaded."""
    X = _save_head(tmp_path / "m")
    expected = load_model(tmp_path / "m").predict_proba_vectors(X)
    evil = io.BytesIO()
    joblib.dump({"swapped": True}, evil)
    real = manifest_mod.read_regular

    def read_then_swap(path, what="file"):
        data = real(path, what)
        if path.name == "head.joblib":
            path.write_bytes(evil.getvalue())  # the attacker's swap, after the one read
        return data

    monkeypatch.setattr(manifest_mod, "read_regular", read_then_swap)
    clf = load_model(tmp_path / "m")
    np.testing.assert_allclose(clf.predict_proba_vectors(X), expected)


def test_manifest_fields_are_checked_on_load(tmp_path, key):
    _save_head(tmp_path / "m")
    manifest = models.read_manifest(tmp_path / "m")
    for field, value, named in (("classes", "abc", "'classes'"), ("fingerprint", {"id": ""}, "'fingerprint.id'"),
                                ("kind", None, "'kind'"), ("files", {"head.joblib": 5}, "'files.head.joblib'"),
                                ("data", [], "'data'"), ("split", {"val_split": 1.5}, "'split.val_split'")):
        with pytest.raises(ModelError, match=named):
            models.validate_manifest({**manifest, field: value}, tmp_path / "m")
    assert models.validate_manifest(manifest, tmp_path / "m") is manifest
