"""LinearSVMHead (the svm head above SVM_RBF_MAX_CLASSES classes): what it minimises, its temperature
scaling, its seed, and its class weights. sklearn's own checks run in test_estimator_checks.py."""

from __future__ import annotations

import numpy as np
import pytest

from embedflow.errors import UsageError
from embedflow.heads import LinearSVMHead
from embedflow.heads.linear_svm import _fit_temperature


def blobs(n_classes=12, per_class=20, dim=16, noise=0.6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    y = np.repeat(np.arange(n_classes), per_class)
    X = centres[y] + rng.normal(0, noise, (len(y), dim))
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32), y


def objective(head, X, y, C):
    T = np.where(y[:, None] == head.classes_[None, :], 1.0, -1.0)
    margin = np.maximum(0, 1 - T * (X.astype(np.float64) @ head.coef_.T + head.intercept_))
    return 0.5 * (head.coef_ ** 2).sum() + C * (margin ** 2).sum()


def test_it_reaches_the_squared_hinge_minimum_of_liblinear():
    """LinearSVC solves the same one-vs-rest squared hinge (its intercept penalised, made negligible by a
    large intercept_scaling): our objective is no more than 1% above liblinear's at its solution."""
    from sklearn.svm import LinearSVC

    X, y = blobs()
    ours = LinearSVMHead(C=1.0, tol=1e-6).fit(X, y)
    ref = LinearSVC(C=1.0, intercept_scaling=100, tol=1e-8, max_iter=100_000).fit(X, y)
    assert objective(ours, X, y, 1.0) <= objective(ref, X, y, 1.0) * 1.01
    assert (ours.predict(X) == ref.predict(X)).mean() >= 0.97


def test_probabilities_are_a_softmax_of_the_decision_values_at_the_fitted_temperature():
    X, y = blobs()
    head = LinearSVMHead().fit(X, y)
    assert head.calibration_ == "temperature" and head.calibrated_on_ == "held-out 20%"
    d = head.decision_function(X)
    z = np.exp((d - d.max(axis=1, keepdims=True)) / head.temperature_)
    np.testing.assert_allclose(head.predict_proba(X), z / z.sum(axis=1, keepdims=True), rtol=1e-10)
    assert (head.predict(X) == head.classes_[d.argmax(axis=1)]).all()


def test_a_perfectly_separated_check_part_gives_a_finite_temperature():
    """Smoothed targets (as Platt's): with every held-out vector right, T does not run to its bound."""
    scores = np.array([[5.0, -5.0], [-5.0, 5.0]] * 20)
    y = np.array([0, 1] * 20)
    t = _fit_temperature(scores, y)
    assert np.exp(-6) * 1.5 < t < 10
    p = np.exp(scores[0] / t) / np.exp(scores[0] / t).sum()
    assert 0.9 < p[0] < 1.0


def test_binary_uses_one_machine_and_classes_with_one_vector_calibrate_on_training():
    X, y = blobs(n_classes=2)
    head = LinearSVMHead().fit(X, y)
    assert head.coef_.shape == (1, X.shape[1]) and head.decision_function(X).shape == (len(y),)
    assert (head.predict(X) == y).mean() > 0.95
    single = LinearSVMHead().fit(X[:21], y[:21])  # class 1 holds one vector: no 20% split can hold it
    assert single.calibrated_on_ == "training vectors"


def test_same_seed_same_model_and_the_seed_picks_the_calibration_split():
    X, y = blobs()
    a, b, c = (LinearSVMHead(random_state=s).fit(X, y) for s in (0, 0, 1))
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert a.temperature_ == b.temperature_ and a.temperature_ != c.temperature_


def test_class_weight_moves_the_boundary_toward_the_other_classes():
    X, y = blobs(n_classes=3, noise=1.5)
    plain = LinearSVMHead().fit(X, y)
    heavy = LinearSVMHead(class_weight={0: 20.0}).fit(X, y)
    assert (heavy.predict(X) == 0).sum() > (plain.predict(X) == 0).sum()
    balanced = LinearSVMHead(class_weight="balanced").fit(X[:-15], y[:-15])
    assert balanced.predict_proba(X).shape == (len(y), 3)


@pytest.mark.parametrize("C", [0, -1.0])
def test_a_non_positive_c_is_a_usage_error(C):
    X, y = blobs(n_classes=3)
    with pytest.raises(UsageError, match="--C must be positive"):
        LinearSVMHead(C=C).fit(X, y)
