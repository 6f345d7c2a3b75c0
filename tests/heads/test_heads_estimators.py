"""The heads are scikit-learn estimators on vectors: logreg, svm, dense (numpy) and the cosine kNN."""

from __future__ import annotations

import joblib
import numpy as np
import pytest
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from embedflow.errors import UsageError
from embedflow.heads import DenseHead, KNNHead, make_head


def test_heads_are_sklearn_estimators():
    from sklearn.base import clone

    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(m, 1, (20, 8)) for m in (0, 4)]).astype(np.float32)
    y = np.repeat([0, 1], 20)
    for kind in ("logreg", "svm", "dense"):
        est = make_head(kind)
        pipe = Pipeline([("s", StandardScaler()), ("head", est)])
        assert pipe.fit(X, y) is pipe
        assert (pipe.predict(X) == y).mean() >= 0.9
        assert repr(clone(est).get_params()) == repr(est.get_params())
    d = DenseHead(epochs=5)
    assert not [k for k in vars(d) if k.endswith("_")]  # __init__ stores parameters only
    assert d.fit(X, y) is d and d.coef_.shape == (2, 8) and list(d.classes_) == [0, 1]
    again = joblib.load(_roundtrip(d))  # a plain numpy estimator: pickles as it is
    np.testing.assert_allclose(again.predict_proba(X), d.predict_proba(X), atol=1e-6)


def _roundtrip(obj):
    import io

    buf = io.BytesIO()
    joblib.dump(obj, buf)
    buf.seek(0)
    return buf


def test_knn_head_is_a_cosine_distance_weighted_estimator():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (20, 8)) + 4 * np.eye(8)[0], rng.normal(0, 1, (20, 8)) + 4 * np.eye(8)[1]])
    y = np.repeat([0, 1], 20)
    head = make_head("knn", k=5, space="raw").fit(X, y)
    assert isinstance(head, KNNHead) and head.get_params() == {"k": 5, "space": "raw"}
    assert (head.predict(X * 10) == y).mean() > 0.9  # cosine: scale does not matter
    lda = make_head("knn", k=5, space="lda").fit(X, y)
    assert lda.space_ == "lda" and lda.projection_ is not None and (lda.predict(X) == y).mean() > 0.9
    assert lda.knn_.effective_metric_ == "euclidean"  # two classes: one discriminant axis
    np.testing.assert_allclose(head.predict_proba(X[:3]).sum(axis=1), 1.0)
    assert KNNHead(k=100).fit(X[:4], y[:4]).knn_.n_neighbors == 4  # capped at the training set
    with pytest.raises(UsageError):
        make_head("knn", class_weight="balanced")


def test_knn_votes_are_weighted_by_inverse_cosine_distance():
    """One close neighbour of class 0 outvotes two farther ones of class 1 by exactly 1/d weights (a
    uniform vote would give 1/3 : 2/3), and an exact copy of a training vector decides alone."""
    angles = np.radians([10.0, 40.0, 45.0, 170.0])
    X = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    y = np.array([0, 1, 1, 0])
    head = make_head("knn", k=3, space="raw").fit(X, y)
    weights = 1 / (1 - np.cos(angles[:3]))  # the query [1, 0] is at angle 0: cosine distance 1 - cos
    expected = np.array([weights[0], weights[1] + weights[2]]) / weights.sum()
    np.testing.assert_allclose(head.predict_proba(np.array([[1.0, 0.0]])), [expected], rtol=1e-5)
    assert expected[0] > 0.85  # the checks mean something: far from the uniform 1/3
    np.testing.assert_allclose(head.predict_proba(X[1:2] * 3), [[0.0, 1.0]])  # a copy (any scale) decides alone


def test_a_head_fits_on_one_blas_thread_only_when_the_machine_is_busy(monkeypatch):
    """OpenBLAS threads spin on taken cores (svm at 8,000 x 100 classes, load 4.3 on 2 cores: 42.4 s with
    the default threads, 12.4 s with one): fit limits them to one then, and to nothing on an idle machine."""
    import os

    from embedflow.heads import busy_machine_threads

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (4.3, 3.9, 3.6))
    assert busy_machine_threads() == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.4, 0.3, 0.2))
    assert busy_machine_threads() is None

    def unavailable():
        raise OSError("no load average here")

    monkeypatch.setattr(os, "getloadavg", unavailable)
    assert busy_machine_threads() is None
