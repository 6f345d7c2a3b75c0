"""embedflow.insight on small synthetic Gaussian clusters (fast, no TensorFlow)."""

import json

import numpy as np
import pytest

from embedflow import insight
from embedflow.errors import UsageError

D = 32


def clusters(n_per=60, n_classes=4, seed=0, spread=0.35):
    """Well separated Gaussian clusters around random directions (embeddings are non-negative-ish and
    compared by cosine, so the classes differ in direction)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, D)) * 3
    X = np.concatenate([c + spread * rng.normal(size=(n_per, D)) * 3 for c in centres]).astype(np.float32)
    y = np.repeat(np.arange(n_classes), n_per)
    return X, y, centres


def test_planted_mislabelled_point_ranks_first():
    X, y, _ = clusters()
    noisy = y.copy()
    noisy[7] = 2                                     # a class-0 point labelled 2
    scores, suggested = insight.label_issues(X, noisy, seed=0)
    assert scores.shape == suggested.shape == (len(y),)
    assert np.argmax(scores) == 7
    assert suggested[7] == 0
    assert np.all((scores >= 0) & (scores <= 1))
    clean = np.delete(np.arange(len(y)), 7)
    assert np.mean(suggested[clean] == y[clean]) > 0.98


def test_label_issues_deterministic_given_seed():
    X, y, _ = clusters(spread=0.6)
    a = insight.label_issues(X, y, seed=3)
    b = insight.label_issues(X, y, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_label_issues_refuses_what_it_cannot_do():
    X, y, _ = clusters()
    with pytest.raises(UsageError):
        insight.label_issues(X, np.zeros(len(y), int))
    with pytest.raises(UsageError):
        insight.label_issues(X[:10], y[:9])


def test_planted_far_point_ranks_first_in_outliers():
    X, y, centres = clusters()
    X = X.copy()
    X[70] = -centres[1] + 0.1                        # class 1, pointing away from everything
    scores = insight.outliers(X, y)
    assert scores.shape == (len(y),)
    assert np.argmax(scores) == 70


@pytest.mark.parametrize("method", ["knn_cosine", "mahalanobis"])
def test_rejector_rejects_far_point_at_target_rate(method):
    # relative_mahalanobis is left out on purpose: far from everything, both of its distances are large
    # and their difference need not be (it rejects 2 of these 5), which is why it is not the default
    X, y, _ = clusters(n_per=300, seed=1)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    train, val, held = order[:700], order[700:950], order[950:]
    rej = insight.fit_rejector(X[train], y[train], X[val], rate=0.05, method=method)
    assert np.mean(rej.score(X[val]) > rej.threshold_) == pytest.approx(0.05, abs=0.01)
    assert 0.0 <= np.mean(rej.reject(X[held])) <= 0.15      # held-out in-distribution: near the target
    far = rng.normal(size=(5, D)).astype(np.float32) * 10
    assert rej.reject(far).all()


def test_rejector_round_trips_through_json_and_arrays(tmp_path):
    X, y, _ = clusters(seed=2)
    for method in insight.REJECT_METHODS:
        rej = insight.fit_rejector(X[:200], y[:200], X[200:], rate=0.1, method=method, k=3)
        manifest = json.loads(json.dumps(rej.to_dict()))
        np.savez(tmp_path / "rejector.npz", **rej.arrays())
        with np.load(tmp_path / "rejector.npz") as arrays:
            back = insight.Rejector.from_dict(manifest, dict(arrays))
        np.testing.assert_allclose(back.score(X), rej.score(X), rtol=1e-6, atol=1e-6)
        assert back.threshold_ == rej.threshold_
    with pytest.raises(UsageError):
        insight.Rejector.from_dict({"method": "magic", "threshold": 0, "rate": 0.05}, {})
    with pytest.raises(UsageError):
        insight.Rejector.from_dict(manifest, {})


def test_planted_near_copy_lands_in_same_group():
    X, y, _ = clusters()
    X = X.copy()
    rng = np.random.default_rng(0)
    X[200] = X[5] + 0.01 * rng.normal(size=D)
    X[201] = X[5]                                    # an exact copy too
    groups = insight.near_duplicate_groups(X, threshold=0.99)
    assert groups.shape == (len(y),)
    assert groups[200] == groups[5] == groups[201]
    sizes = np.bincount(groups)
    assert sizes.max() == 3 and (sizes > 1).sum() == 1
    assert groups[0] == 0 and set(groups) == set(range(groups.max() + 1))


def test_near_duplicate_groups_chunked_equals_unchunked():
    X, _, _ = clusters(spread=0.2)
    full = insight.near_duplicate_pairs(X, 0.9)
    tiny = insight.near_duplicate_pairs(X, 0.9, max_block_bytes=4 * len(X) * 7)   # blocks of 7 rows
    fo, to = np.lexsort(full[:2]), np.lexsort(tiny[:2])
    np.testing.assert_array_equal(full[0][fo], tiny[0][to])
    np.testing.assert_array_equal(full[1][fo], tiny[1][to])
    np.testing.assert_allclose(full[2][fo], tiny[2][to], atol=1e-5)
    assert len(full[0]) > 0 and np.all(full[0] < full[1])


def test_copy_filed_under_two_classes_is_flagged_and_scores_are_the_mean_of_the_components():
    X, y, _ = clusters()
    X = np.concatenate([X, X[3:4]])                  # the same image once more, filed under class 1
    y = np.concatenate([y, [1]])
    scores, suggested = insight.label_issues(X, y, seed=1)
    assert np.argmax(scores) == len(y) - 1 and suggested[-1] == 0
    assert scores[3] > np.median(scores)             # the correctly filed copy sees the other one
    parts = insight.out_of_fold_components(X, y, seed=1)
    mean = (parts["logreg"] + parts["knn"]) / 2
    np.testing.assert_allclose(scores, 1 - mean[np.arange(len(y)), y])
    np.testing.assert_allclose(mean.sum(axis=1), 1.0)


def test_top_k_in_blocks_bounded_by_entries_equals_one_block(monkeypatch):
    """The k-NN search holds at most BLOCK_ENTRIES similarities at once (a block of 2,048 rows against
    20,000 vectors held 650 MB during a fine-tune's report); the neighbours do not depend on the blocks."""
    X, _, _ = clusters(spread=0.2)
    U = insight.unit_rows(X)
    whole = insight._top_k_cosine(U, U, 10, exclude_self=True, block=len(U))
    monkeypatch.setattr(insight, "BLOCK_ENTRIES", 7 * len(U))  # 7 rows a block
    tiny = insight._top_k_cosine(U, U, 10, exclude_self=True)
    np.testing.assert_array_equal(whole[0], tiny[0])
    np.testing.assert_allclose(whole[1], tiny[1], atol=1e-6)


def test_lowest_cosine_of_a_group_in_blocks_equals_all_pairs():
    from embedflow.reports.page import lowest_cosine

    X, _, _ = clusters(spread=0.2)
    V = X[:57]
    U = V / np.linalg.norm(V, axis=1, keepdims=True)
    want = float((U @ U.T)[np.triu_indices(len(U), 1)].min())
    for entries in (1, 5 * len(V), 1 << 21):
        assert lowest_cosine(V, block_entries=entries) == pytest.approx(want, abs=1e-6)
