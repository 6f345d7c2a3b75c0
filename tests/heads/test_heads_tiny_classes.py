"""Issue #16: every head trains on every dataset that passes the split check, or stops BEFORE training with
one line (exit 2) naming the class and the head's minimum; never a scikit-learn traceback. A property-style
sweep over heads x tiny class sizes x --val-split, on small synthetic caches (no backbone)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from embedflow import api, cache
from embedflow.errors import DatasetError
from embedflow.heads import MIN_PER_CLASS

FP = {"backbone": "synthetic", "image_size": 32, "weights_sha256": "0" * 64, "id": "feedfacefeedface", "output_dim": 8}
SIZES = [(6, 6, 2), (2, 2, 2), (3, 5, 2), (2, 6), (5, 5, 5), (4, 2, 6, 3)]
VAL_SPLITS = [0.0, 0.2, 0.4]


def tiny_cache(path: Path, sizes, dim: int = 8, seed: int = 0) -> Path:
    """A real cache of clustered vectors, sizes[i] distinct images of class c{i}."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    centres = rng.normal(0, 2, (len(sizes), dim))
    vectors = (centres[labels] + rng.normal(0, 0.5, (len(labels), dim))).astype(np.float32)
    hashes = [hashlib.sha256(f"{seed}-{i}".encode()).hexdigest() for i in range(len(labels))]
    src = path.with_name(path.name + ".src.npz")
    np.savez(src, vectors=vectors)
    rows = [cache.Row(f"c{labels[i]}/k{i:03d}.png", hashes[i], int(labels[i]), src, i) for i in range(len(labels))]
    cache.write(path, rows, [f"c{i}" for i in range(len(sizes))], FP, "/data", [], dim)
    src.unlink()
    return path


@pytest.mark.parametrize("head", ["logreg", "svm", "dense", "knn"])
def test_every_head_trains_or_refuses_before_training(head, tmp_path):
    params = {"epochs": 5} if head == "dense" else {}
    outcomes = []
    for sizes in SIZES:
        path = tiny_cache(tmp_path / f"{'-'.join(map(str, sizes))}.h5", sizes)
        for val_split in VAL_SPLITS:
            try:
                clf = api.fit_head(path, head, val_split=val_split, reporter=None, **params)
            except DatasetError as e:  # the only way to stop: one line, a class named
                line = str(e)
                assert "\n" not in line and re.search(r"class '?c\d'?", line) or "validation split of" in line, line
                m = re.search(r"class '(c\d)' has (\d+) training image\(s\); the (\w+) head needs at least (\d+)", line)
                if m:  # refused for the head's own minimum: the class really is below it
                    assert m.group(3) == head and int(m.group(4)) == MIN_PER_CLASS[head] > int(m.group(2))
                outcomes.append((sizes, val_split, "below the head's minimum" if m else "split refused"))
                continue
            n_train = clf.n_train
            assert n_train + clf.n_val == sum(sizes)
            assert (clf.report_ is None) == (val_split == 0)
            proba = clf.predict_proba_vectors(np.zeros((2, 8), np.float32))
            assert proba.shape == (2, len(sizes)) and np.allclose(proba.sum(1), 1, atol=1e-5)
            if head == "svm":  # Platt folds adapt to the smallest class that was trained on
                folds = clf.manifest["hyperparameters"]["clf__cv"]
                assert 2 <= folds <= 5
            outcomes.append((sizes, val_split, "trained"))
    # With --val-split 0 (the remedy fit's split error suggests) every head trains on 2+ images per class
    assert all(o == "trained" for s, v, o in outcomes if v == 0.0), outcomes
    # The case (a scikit-learn traceback for the SVM): 6/6/2 with the default split leaves 1 training
    # image of the small class: logreg, dense and knn train; the SVM stops before training, naming its minimum
    want = "below the head's minimum" if head == "svm" else "trained"
    assert ((6, 6, 2), 0.2, want) in outcomes
    assert ((5, 5, 5), 0.2, "trained") in outcomes


def test_svm_calibration_folds_follow_the_smallest_class(tmp_path):
    path = tiny_cache(tmp_path / "c.h5", (6, 6, 2))
    clf = api.fit_head(path, "svm", val_split=0, reporter=None)  # scikit-learn raised with cv=5 here
    assert clf.manifest["hyperparameters"]["clf__cv"] == 2
    clf = api.fit_head(tiny_cache(tmp_path / "d.h5", (7, 6, 9)), "svm", val_split=0, reporter=None)
    assert clf.manifest["hyperparameters"]["clf__cv"] == 5


def test_svm_with_one_training_image_stops_before_training_naming_class_and_minimum(tmp_path):
    path = tiny_cache(tmp_path / "c.h5", (6, 6, 1))
    with pytest.raises(DatasetError, match=r"class 'c2' has 1 training image\(s\); the svm head needs at least 2"):
        api.fit_head(path, "svm", val_split=0, reporter=None)
    assert api.fit_head(path, "logreg", val_split=0, reporter=None).n_train == 13


def test_cli_svm_on_6_6_2_is_one_line_never_a_traceback(cli, tmp_path):
    tiny_cache(tmp_path / "c.h5", (6, 6, 2))
    r = cli("fit", "--cache", tmp_path / "c.h5", "--head", "svm", "--val-split", "0", expect=0)
    assert "wrote models/svm" in r.stdout
    tiny_cache(tmp_path / "one.h5", (6, 6, 1))
    r = cli("fit", "--cache", tmp_path / "one.h5", "--head", "svm", "--val-split", "0", expect=2)
    assert r.stderr.startswith("error: class 'c2' has 1 training image(s); the svm head needs at least 2")
    assert len(r.stderr.strip().splitlines()) == 1


def test_the_minimum_message_suggests_val_split_only_where_it_can_help(tmp_path):
    """Tester (#16): with --val-split 0 already, "use another --val-split" cannot help."""
    path = tiny_cache(tmp_path / "c.h5", (6, 6, 1))
    with pytest.raises(DatasetError) as e:
        api.fit_head(path, "svm", val_split=0, reporter=None)
    assert str(e.value).endswith("the svm head needs at least 2 per class (its probability calibration "
                                 "cross-validates): add images, or use another --head (logreg, dense and knn need 1)")
    path = tiny_cache(tmp_path / "d.h5", (6, 6, 2))
    with pytest.raises(DatasetError) as e:
        api.fit_head(path, "svm", val_split=0.5, reporter=None)
    assert "use a smaller --val-split" in str(e.value)
