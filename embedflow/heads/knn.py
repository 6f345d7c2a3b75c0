"""The kNN head: cosine nearest neighbours, optionally in a supervised (LDA) space."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from ..errors import UsageError

LDA_TOLERANCE = 0.05


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
        X, y = np.asarray(X, dtype=np.float32), np.asarray(y)
        self.space_ = self._choose_space(X, y) if self.space == "auto" else self.space
        self.projection_, self.knn_ = self._fit_space(X, y, self.space_)
        self.classes_ = self.knn_.classes_
        self.n_features_in_ = X.shape[1]
        return self

    def _fit_space(self, X, y, space):
        from sklearn.neighbors import KNeighborsClassifier

        projection = None
        if space == "lda" and 1 < len(np.unique(y)) < len(X):
            from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

            projection = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto").fit(X, y)
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
        check_is_fitted(self, "knn_")
        X = np.asarray(X, dtype=np.float32)
        return self.knn_.predict_proba(self._space(X)) if len(X) else np.zeros((0, len(self.classes_)))

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
