"""The linear SVM of the svm head above SVM_RBF_MAX_CLASSES classes: one-vs-rest squared hinge, every
class optimised at once, probabilities by temperature scaling."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ..errors import UsageError

CALIBRATION = "temperature"  # the calibration method, as the manifest and model card name it
HOLD_OUT = 0.2
WINDOW = 10  # L-BFGS stops when the objective fell by less than tol (relative) over this many iterations


class LinearSVMHead(ClassifierMixin, BaseEstimator):
    """One-vs-rest linear SVM with the squared hinge loss (LinearSVC's loss), all classes solved together.

    For each class k, w_k and b_k minimise 0.5 |w_k|^2 + C * sum_i s_i max(0, 1 - t_ik (w_k . x_i + b_k))^2
    (t_ik = +1 for class k, -1 otherwise; s_i the class weight of sample i's label, 1 without one; b_k is
    not penalised). The stacked (features + 1, classes) weights are found by L-BFGS (`_lbfgs`) on centred
    vectors from a ridge start, with float32 products, so one iteration costs two (N, features) x
    (features, classes) matrix products, whatever the number of classes; it stops when the objective fell
    by less than `tol` (relative) over WINDOW iterations, or after `max_iter`. Two classes: one machine,
    decision values d and -d. Deterministic: the only randomness is the calibration split (random_state).

    Probabilities: softmax(decision / T) over the classes (binary: over (-d, d)). The temperature T
    minimises the cross-entropy (against Platt-style smoothed targets, see _fit_temperature) of a model
    fitted on 80% of the training vectors (stratified, random_state) on the other 20% (`calibrated_on_` =
    "held-out 20%"); the model is then refitted on all of them, warm-started from that fit. When a 20%
    split cannot hold every class (a class with one vector), T is fitted on the training vectors
    themselves (`calibrated_on_` = "training vectors"). `calibration_` = "temperature".

    X: (N, features) float, best L2-normalised (the svm head's Pipeline does it). Raises ValueError (from
    validation) on NaN, sparse or 1-d X, and for fewer than two classes; UsageError for C <= 0."""

    def __init__(self, C=1.0, class_weight=None, max_iter=500, tol=3e-3, random_state=0):
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float32, order="C")  # also n_features_in_
        check_classification_targets(y)
        if not float(self.C) > 0:
            raise UsageError(f"--C must be positive, got {self.C}")
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"the linear SVM needs at least 2 classes in y, got 1 class: {self.classes_[0]!r}")
        weights = self._sample_weights(y_idx)
        fit_part, check_part = self._calibration_split(y_idx)
        if check_part is not None:
            coef = self._solve(X[fit_part], y_idx[fit_part], weights[fit_part], None)
            self.temperature_ = _fit_temperature(self._scores(X[check_part], coef), y_idx[check_part])
            self.calibrated_on_ = f"held-out {HOLD_OUT:.0%}"
            coef = self._solve(X, y_idx, weights, coef)
        else:
            coef = self._solve(X, y_idx, weights, None)
            self.temperature_ = _fit_temperature(self._scores(X, coef), y_idx)
            self.calibrated_on_ = "training vectors"
        self.coef_, self.intercept_ = coef[:-1].T.copy(), coef[-1].copy()
        self.calibration_ = CALIBRATION
        return self

    def _sample_weights(self, y_idx):
        """(N,) float32 weights: the class weight of each vector's label (balanced: N / (classes * count))."""
        from sklearn.utils.class_weight import compute_class_weight

        if self.class_weight is None:
            return np.ones(len(y_idx), np.float32)
        if self.class_weight == "balanced":
            w = compute_class_weight("balanced", classes=np.arange(len(self.classes_)), y=y_idx)
        else:  # {label: weight}, 1 for the labels it does not name
            w = np.array([float(self.class_weight.get(c, 1.0)) for c in self.classes_.tolist()])
        return w[y_idx].astype(np.float32)

    def _calibration_split(self, y_idx):
        """(fit rows, held-out rows) of a stratified 20% split, or (None, None) when it cannot hold every class."""
        from sklearn.model_selection import train_test_split

        n, k = len(y_idx), len(self.classes_)
        n_check = max(int(np.ceil(HOLD_OUT * n)), k)
        if np.bincount(y_idx).min() < 2 or n - n_check < k:
            return None, None
        return train_test_split(np.arange(n), test_size=n_check, stratify=y_idx, random_state=self.random_state)

    def _solve(self, X, y_idx, weights, start):
        """(features + 1, machines) float64 weights (last row: intercepts) minimising the objective."""
        n_machines = 1 if len(self.classes_) == 2 else len(self.classes_)
        T = (-np.ones((len(y_idx), n_machines), np.float32))
        if n_machines == 1:
            T[y_idx == 1, 0] = 1.0
        else:
            T[np.arange(len(y_idx)), y_idx] = 1.0
        C = np.float32(self.C)
        shape = (X.shape[1] + 1, n_machines)
        # The intercept is not penalised, so centring X changes no solution (b' = b + w . mean) but makes
        # the problem far better conditioned: embeddings (non-negative, L2-normalised) share one direction.
        mean = X.mean(axis=0)
        X = X - mean

        def objective(flat):
            W = flat.reshape(shape).astype(np.float32)
            margin = 1.0 - T * (X @ W[:-1] + W[-1])
            np.maximum(margin, 0.0, out=margin)
            weighted = weights[:, None] * margin
            loss = 0.5 * float(np.dot(W[:-1].ravel(), W[:-1].ravel())) + float(C) * float(np.vdot(weighted, margin))
            G = weighted * T * (-2.0 * C)  # d loss / d score
            grad = np.empty(shape, np.float64)
            grad[:-1] = W[:-1] + X.T @ G
            grad[-1] = G.sum(axis=0)
            return loss, grad.ravel()

        if start is None:
            x0 = _least_squares_start(X, T, float(C))
        else:
            x0 = start.copy()
            x0[-1] += mean @ x0[:-1]  # the centred problem's intercepts
        coef, self.n_iter_ = _lbfgs(objective, x0.ravel(), max_iter=int(self.max_iter), tol=float(self.tol))
        coef = coef.reshape(shape)
        coef[-1] -= mean @ coef[:-1]
        return coef

    def _scores(self, X, coef):
        """(N, classes) float64 decision values (binary: (-d, d))."""
        d = np.asarray(X, np.float32) @ coef[:-1].astype(np.float32) + coef[-1].astype(np.float32)
        d = d.astype(np.float64)
        return np.hstack([-d, d]) if d.shape[1] == 1 else d

    def decision_function(self, X):
        """(N, classes) float64 decision values w_k . x + b_k; (N,) for two classes (positive: classes_[1])."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)  # float64: a row's value is the same in any batch
        d = X @ self.coef_.T + self.intercept_
        return d[:, 0] if d.shape[1] == 1 else d

    def predict_proba(self, X):
        """(N, classes) float64 probabilities softmax(decision / temperature_), columns in classes_ order."""
        check_is_fitted(self)
        if hasattr(X, "__len__") and len(X) == 0:
            return np.zeros((0, len(self.classes_)))
        d = self.decision_function(X)
        scores = np.column_stack([-d, d]) if d.ndim == 1 else d
        return _softmax(scores / self.temperature_)

    def predict(self, X):
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


def _least_squares_start(X, T, C: float):
    """(features + 1, machines) float64 ridge solution of X w + b = T (X centred): the squared hinge's
    minimiser when every margin is violated, a start that saves L-BFGS its first ~10 iterations. Costs one
    (features, features) Gram matrix and solve."""
    gram = X.T @ X
    gram *= 2.0 * C
    gram[np.diag_indices_from(gram)] += 1.0
    W = np.linalg.solve(gram, (2.0 * C) * (X.T @ T))
    return np.vstack([W, T.mean(axis=0)]).astype(np.float64)


def _lbfgs(objective, x, *, max_iter: int, tol: float, memory: int = 10):
    """Minimise a smooth convex objective(x) -> (value, gradient) by L-BFGS (two-loop recursion, Armijo
    backtracking from step 1). scipy's L-BFGS-B spent as long in its own bookkeeping as in the objective
    on 128,000 unknowns; this one costs a few vector operations per iteration. Stops when the last WINDOW
    iterations lowered the value by less than tol of it, when no step lowers it (float32 round-off), or
    after max_iter iterations. Returns (x, iterations)."""
    f, g = objective(x)
    values = [f]
    pairs = []  # (s, y, 1 / y.s), newest last
    it = 0
    while it < max_iter:
        it += 1
        d = -g
        alphas = []
        for s_, y_, r_ in reversed(pairs):
            a = r_ * float(s_ @ d)
            d = d - a * y_
            alphas.append(a)
        if pairs:
            s_, y_, r_ = pairs[-1]
            d = d * (1.0 / (r_ * float(y_ @ y_)))
        else:
            d = d / max(float(np.linalg.norm(d)), 1e-12)
        for (s_, y_, r_), a in zip(pairs, reversed(alphas)):
            d = d + (a - r_ * float(y_ @ d)) * s_
        slope = float(g @ d)
        if slope >= 0:  # not a descent direction (round-off): restart from the gradient
            pairs, d, slope = [], -g / max(float(np.linalg.norm(g)), 1e-12), -float(np.linalg.norm(g))
        step = 1.0
        for _ in range(30):
            f_new, g_new = objective(x + step * d)
            if f_new <= f + 1e-4 * step * slope:
                break
            step *= 0.5
        else:
            break  # no step lowers the value: as close as float32 products get
        s_, y_ = step * d, g_new - g
        sy = float(s_ @ y_)
        if sy > 1e-12:
            pairs = (pairs + [(s_, y_, 1.0 / sy)])[-memory:]
        x, g, f = x + s_, g_new, f_new
        values.append(f)
        if len(values) > WINDOW and values[-1 - WINDOW] - f <= tol * max(abs(f), 1.0):
            break
    return x, it


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _fit_temperature(scores, y_idx) -> float:
    """The temperature T > 0 minimising the mean cross-entropy of softmax(scores / T) against labels y_idx
    smoothed as Platt's targets are (the true class 1 - 1/(n + 2), the rest sharing 1/(n + 2)), so a
    held-out part that is all correct gives a finite T rather than T -> 0 (a bounded search on log T in
    [-6, 6])."""
    from scipy.optimize import minimize_scalar

    n, k = scores.shape
    eps = 1.0 / (n + 2)
    target = np.full(scores.shape, eps / (k - 1))
    target[np.arange(n), y_idx] = 1.0 - eps

    def cross_entropy(log_t):
        z = scores / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-(target * log_p).sum(axis=1).mean())

    return float(np.exp(minimize_scalar(cross_entropy, bounds=(-6.0, 6.0), method="bounded").x))
