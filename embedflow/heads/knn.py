"""The kNN head: cosine nearest neighbours, optionally in a supervised (LDA) space."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ..errors import UsageError

LDA_TOLERANCE = 0.05


class LDAProjection:
    """The (classes - 1) discriminant axes of a shrinkage LDA, found by whitening and one small SVD.

    Sw: the prior-weighted mean of the classes' covariances, each shrunk as scikit-learn's LDA shrinks it
    (_shrunk_covariance: Ledoit-Wolf on standardised features, toward its own diagonal; pooling first and
    shrinking once scored 86.9% instead of 88.3% on flowers-dev, though 96.4% instead of 94.2% on the
    synthetic 10k x 100); L its Cholesky factor. The axes are the left singular vectors of L^-1 (sqrt(prior_k) (mean_k -
    mean)), mapped back by L^-T, so that scalings_.T Sw scalings_ = I (what scikit-learn's eigen solver
    gives). transform centres first: (X - mean_) @ scalings_, (N, features) -> (N, axes) float64.

    It replaces scikit-learn's LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto"), which solved a
    full generalised (features x features) eigenproblem (8 s per LDA at 1280 features on 2 shared cores,
    two LDAs per fit with space="auto") and through which cosine kNN scored at chance on the synthetic sets
    of benchmarks/heads_scale.py (6.5% at 10,000 x 100 classes, here 94.2%; 5% at 2,000 x 20 classes of
    256-d, centred or not). Cost here: one (features x features) float32 Gram matrix per class (together
    one of all vectors), one Cholesky, one (features x classes) SVD."""

    def fit(self, X, y):
        from scipy.linalg import cholesky, solve_triangular

        X = np.asarray(X, np.float64)
        classes, y_idx, counts = np.unique(y, return_inverse=True, return_counts=True)
        means = np.zeros((len(classes), X.shape[1]))
        np.add.at(means, y_idx, X)
        means /= counts[:, None]
        within = (X - means[y_idx]).astype(np.float32)
        cov = np.zeros((X.shape[1], X.shape[1]))
        for k in range(len(classes)):
            cov += (counts[k] / len(X)) * _shrunk_covariance(within[y_idx == k])
        cov[np.diag_indices_from(cov)] += 1e-10 * max(float(np.trace(cov)) / X.shape[1], 1e-30)
        lower = cholesky(cov, lower=True)
        self.mean_ = X.mean(axis=0)
        between = (means - self.mean_) * np.sqrt(counts / len(X))[:, None]  # (classes, features)
        U, S, _ = np.linalg.svd(solve_triangular(lower, between.T, lower=True), full_matrices=False)
        rank = int(min(len(classes) - 1, np.sum(S > S[0] * 1e-8))) if S.size and S[0] > 0 else 0
        self.scalings_ = solve_triangular(lower.T, U[:, :max(rank, 1)], lower=False)
        return self

    def transform(self, X):
        return (np.asarray(X, np.float64) - self.mean_) @ self.scalings_


def _shrunk_covariance(X):
    """(features, features) float64 covariance of one class's centred rows X (n, features) float32, shrunk
    as scikit-learn's LDA(shrinkage="auto") shrinks it: Ledoit-Wolf on standardised features, so toward
    the covariance's own diagonal: (1 - a) cov + a diag(cov). float32 product: half the time of float64."""
    cov = (X.T @ X).astype(np.float64) / len(X)
    var = np.diag(cov).copy()
    scale = np.sqrt(np.where(var > 0, var, 1.0))
    shrink = _ledoit_wolf(cov / np.outer(scale, scale), X / scale.astype(np.float32), 1.0) if len(X) > 1 else 1.0
    cov *= 1.0 - shrink
    cov[np.diag_indices_from(cov)] += shrink * var
    return cov


def _ledoit_wolf(cov, X, mu) -> float:
    """The Ledoit-Wolf shrinkage of cov = X.T X / N (X: (N, features), centred) toward mu I, the formula of
    sklearn.covariance.ledoit_wolf_shrinkage, from cov itself: the sum of (X**2).T (X**2) is the sum of
    |x_i|^4, so no second (features x features) product is needed (scikit-learn makes two)."""
    n, p = X.shape
    fourth = float(np.sum(np.einsum("ij,ij->i", X, X, dtype=np.float64) ** 2))
    cov_sq = float(np.sum(cov ** 2))
    beta = (fourth / n - cov_sq) / (p * n)
    delta = (cov_sq - 2.0 * mu * np.trace(cov) + p * mu ** 2) / p
    beta = min(beta, delta)
    return 0.0 if beta <= 0 else float(beta / delta)


class KNNHead(ClassifierMixin, BaseEstimator):
    """k nearest training vectors by cosine similarity, votes weighted by 1 / cosine distance (an exact
    copy of a training vector decides alone); k is capped at the number of training vectors.

    space="raw" searches the embeddings as they are. space="lda" first projects them onto the
    (classes - 1) discriminant axes of a shrinkage LDA (Ledoit-Wolf) fitted on the training vectors: a
    supervised metric in which neighbours agree on the class more often (+3 points on flowers-dev), but
    which can overfit small training sets (training points collapse onto their class means). space="auto"
    (default) fits the LDA on 80% of the training vectors and keeps it unless kNN through it scores more
    than LDA_TOLERANCE below raw kNN on the other 20% (a 20% check is noisy: the LDA space is preferred,
    only a clear failure rejects it); the chosen space is then fitted on all of them (`space_`). A one-axis
    space (two classes) uses the distance along it, cosine being only a sign there."""

    def __init__(self, k=7, space="auto"):
        self.k = k
        self.space = space

    def fit(self, X, y):
        if int(self.k) < 1:
            raise UsageError(f"--k must be at least 1, got {self.k}")
        if self.space not in ("auto", "lda", "raw"):
            raise UsageError(f"knn space must be 'auto', 'lda' or 'raw', got '{self.space}'")
        X, y = validate_data(self, X, y, dtype=np.float32)  # also n_features_in_; sparse, NaN, 1-d X refused
        check_classification_targets(y)
        self.space_ = self._choose_space(X, y) if self.space == "auto" else self.space
        self.projection_, self.knn_ = self._fit_space(X, y, self.space_)
        self.classes_ = self.knn_.classes_
        return self

    def _fit_space(self, X, y, space):
        from sklearn.neighbors import KNeighborsClassifier

        projection = None
        if space == "lda" and 1 < len(np.unique(y)) < len(X):
            projection = LDAProjection().fit(X, y)
        Z = projection.transform(X) if projection is not None else X
        knn = KNeighborsClassifier(n_neighbors=min(int(self.k), len(X)), weights="distance",
                                   metric="cosine" if Z.shape[1] > 1 else "euclidean", algorithm="brute")
        return projection, knn.fit(Z, y)

    def _choose_space(self, X, y) -> str:
        from sklearn.model_selection import train_test_split

        counts = np.unique(y, return_counts=True)[1]
        if len(counts) < 2 or counts.min() < 5:
            return "raw"
        X_fit, X_check, y_fit, y_check = train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)
        scores = {}
        for space in ("raw", "lda"):
            projection, knn = self._fit_space(X_fit, y_fit, space)
            Z = projection.transform(X_check) if projection is not None else X_check
            scores[space] = (knn.predict(Z) == y_check).mean()
        return "lda" if scores["lda"] >= scores["raw"] - LDA_TOLERANCE else "raw"

    def _space(self, X):
        return self.projection_.transform(X) if self.projection_ is not None else X

    def predict_proba(self, X):
        """(N, classes) float64 probabilities (distance-weighted votes), columns in classes_ order."""
        check_is_fitted(self)
        if hasattr(X, "__len__") and len(X) == 0:
            return np.zeros((0, len(self.classes_)))
        X = validate_data(self, X, dtype=np.float32, reset=False)
        return self.knn_.predict_proba(self._space(X))

    def predict(self, X):
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]
