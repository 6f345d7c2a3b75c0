"""The one atomic writer of model folders: the target is always the complete old folder or the complete
new one, including after a crash between the two renames of the fallback path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedflow import models
from embedflow.errors import ModelError
from embedflow.models import manifest as writer


def _head(seed: int):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    X, y = rng.normal(size=(30, 4)).astype(np.float32), np.repeat([0, 1, 2], 10)
    X[np.arange(30), y] += 3
    est = LogisticRegression(max_iter=500).fit(X, y)
    return models.HeadClassifier(est, {"head": "logreg", "classes": ["a", "b", "c"],
                                       "fingerprint": {"id": "0123456789abcdef", "image_size": 96},
                                       "note": f"seed {seed}"}), X


def _folder_state(path):
    return sorted(p.name for p in path.iterdir()), json.loads((path / "manifest.json").read_text())["note"]


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "rename-aside"])
def test_save_replaces_a_folder_completely_and_leaves_nothing_beside_it(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(writer, "_exchange", lambda a, b: False)
    old, X = _head(0)
    new, _ = _head(1)
    target = tmp_path / "models" / "logreg"
    old.save(target)
    (target / "stale.txt").write_text("from the old folder")
    new.save(target)
    names, note = _folder_state(target)
    assert note == "seed 1" and names == ["head.joblib", "labels.txt", "manifest.json"]
    # no staged or aside folder left; the writer lock's file stays (removing it would race another writer)
    assert sorted(p.name for p in target.parent.iterdir()) == ["logreg"]  # the writer lock is removed on release
    np.testing.assert_allclose(models.load_model(target).predict_proba_vectors(X), new.predict_proba_vectors(X))


def test_renameat2_is_used_on_linux(tmp_path):
    import sys

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    if not sys.platform.startswith("linux"):
        pytest.skip("renameat2 is Linux-only")
    assert writer._exchange(a, b) is True
    assert (b / "x").read_text() == "a" and not (a / "x").exists()


def test_a_crash_between_the_two_renames_leaves_the_old_folder_loadable(tmp_path, monkeypatch):
    old, X = _head(0)
    target = tmp_path / "logreg"
    old.save(target)
    monkeypatch.setattr(writer, "_exchange", lambda a, b: False)
    real_rename, calls = writer._rename, []

    def crash_on_second(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the old folder is aside, the new one not yet in: the process dies here
            raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(writer, "_rename", crash_on_second)
    new, _ = _head(1)
    with pytest.raises(KeyboardInterrupt):
        new.save(target)
    monkeypatch.setattr(writer, "_rename", real_rename)
    assert not target.exists() and calls[0][1].name.startswith(".logreg.old-")
    loaded = models.load_model(target)  # the reader puts the folder left aside back in place
    assert target.is_dir() and _folder_state(target)[1] == "seed 0"
    np.testing.assert_allclose(loaded.predict_proba_vectors(X), old.predict_proba_vectors(X))


def test_an_error_while_writing_leaves_the_old_folder_untouched(tmp_path):
    old, _ = _head(0)
    target = tmp_path / "logreg"
    old.save(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    with pytest.raises(RuntimeError):
        with writer.staged_folder(target) as staged:
            (staged / "half-written").write_text("...")
            raise RuntimeError("disk full")
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logreg"]  # the writer lock is removed on release


def test_a_missing_folder_is_still_one_clear_error(tmp_path):
    with pytest.raises(ModelError, match="no model folder"):
        models.load_model(tmp_path / "nothing")
