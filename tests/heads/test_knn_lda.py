"""The knn head's LDA space (LDAProjection): the Ledoit-Wolf amount of scikit-learn, axes that whiten the
within-class scatter, and neighbours that agree on clustered non-negative embeddings (issue #20: through
scikit-learn's eigen-solver LDA, kNN scored at chance on benchmarks/heads_scale.py's sets)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from embedflow.heads import KNNHead
from embedflow.heads.knn import LDAProjection, _ledoit_wolf

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from heads_scale import synthetic  # noqa: E402


def test_ledoit_wolf_amount_is_scikit_learns():
    from sklearn.covariance import ledoit_wolf_shrinkage

    rng = np.random.default_rng(0)
    for n, p in ((50, 20), (200, 300)):
        X = rng.normal(size=(n, p)) * rng.uniform(0.5, 2, p)
        X -= X.mean(axis=0)
        cov = X.T @ X / n
        assert np.isclose(_ledoit_wolf(cov, X, np.trace(cov) / p), ledoit_wolf_shrinkage(X, assume_centered=True))


def test_axes_separate_class_means_and_are_at_most_classes_minus_one():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(4), 30)
    X = np.eye(4, 10)[y] * 4 + rng.normal(0, 1, (len(y), 10))
    proj = LDAProjection().fit(X, y)
    Z = proj.transform(X)
    assert Z.shape == (len(y), 3) and Z.dtype == np.float64
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-5)  # centred
    centres = np.array([Z[y == k].mean(axis=0) for k in range(4)])
    spread = np.mean([Z[y == k].std(axis=0).mean() for k in range(4)])
    assert np.min([np.linalg.norm(a - b) for i, a in enumerate(centres) for b in centres[i + 1:]]) > 3 * spread


def test_knn_in_the_lda_space_beats_chance_on_clustered_non_negative_vectors():
    X, y = synthetic(2000, 20, dim=256)
    test = np.arange(len(y)) % 5 == 0
    head = KNNHead(space="lda").fit(X[~test], y[~test])
    assert (head.predict(X[test]) == y[test]).mean() > 0.4  # chance 0.05; scikit-learn's eigen LDA: 0.05
