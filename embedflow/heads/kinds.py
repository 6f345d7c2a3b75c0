"""The head kinds by name, their defaults, and how a head is stored."""

from __future__ import annotations

import io

import numpy as np

from ..errors import DatasetError, UsageError
from .dense import DenseHead
from .knn import KNNHead


HEAD_KINDS = ("logreg", "svm", "dense", "knn")


# Defaults chosen on flowers-dev by 5-fold cross-validation (logreg: standardised, C in 0.01..1, best
# 0.01-0.03 at 89.1%; svm: L2-normalised RBF beat standardised, C in 1..30, best 10 at 89.8%).
DEFAULTS = {
    "logreg": {"C": 0.03},
    "svm": {"C": 10.0},
    "dense": {"dropout": 0.2, "learning_rate": 1e-3, "epochs": 200, "batch_size": 32, "patience": 10},
    # flowers-dev, cosine, distance-weighted, mean accuracy over 6 seeded 80/20 splits: raw vectors k=7
    # 85.4% (5-fold CV: k=3 85.6%, 5 85.9%, 7 86.9%, 9 87.0%, 15 86.3%); in the LDA space k=7 88.6%.
    "knn": {"k": 7, "space": "auto"},
}


# Training images each class needs for a head to train: the SVM's Platt calibration cross-validates
# (stratified folds, at most SVM_CALIBRATION_FOLDS, never more than the smallest class holds).
MIN_PER_CLASS = {"logreg": 1, "svm": 2, "dense": 1, "knn": 1}
SVM_CALIBRATION_FOLDS = 5


def check_trainable(kind: str, estimator, y, classes: list[str], *, held_out: bool = False):
    """Make `estimator` (a fresh head of `kind`) fit for training labels y (int class indices into classes):
    the SVM's calibration folds become min(5, smallest class count). Raises DatasetError, before any
    training, naming the smallest class when it has fewer training images than the head's minimum
    (MIN_PER_CLASS); its advice names --val-split only when held_out (a validation fraction was taken from
    the training images, so a smaller one leaves more). Returns the estimator."""
    y = np.asarray(y, dtype=np.int64)
    counts = np.bincount(y, minlength=len(classes)) if len(y) else np.zeros(len(classes), int)
    present = np.flatnonzero(counts)
    if not len(present):
        raise DatasetError("no training images")
    smallest = int(present[np.argmin(counts[present])])
    n = int(counts[smallest])
    need = MIN_PER_CLASS.get(kind, 1)
    if n < need:
        raise DatasetError(f"class '{classes[smallest]}' has {n} training image(s); the {kind} head needs at least "
                           f"{need} per class (its probability calibration cross-validates): add images, "
                           + ("use a smaller --val-split, " if held_out else "")
                           + "or use another --head (logreg, dense and knn need 1)")
    if kind == "svm":
        estimator.set_params(clf__cv=min(SVM_CALIBRATION_FOLDS, n))
    return estimator


def check_head_params(kind: str, params: dict) -> None:
    """Raise UsageError (one line) for an unknown head kind or a parameter the head does not take."""
    if kind not in HEAD_KINDS:
        raise UsageError(f"unknown head '{kind}': choose one of {', '.join(HEAD_KINDS)}")
    unknown = sorted(set(params) - set(DEFAULTS[kind]))
    if unknown:
        raise UsageError(f"the {kind} head takes no parameter {', '.join(repr(p) for p in unknown)} "
                         f"(its parameters: {', '.join(DEFAULTS[kind])})")


def make_head(kind: str, *, class_weight: str | None = None, seed: int = 0, **params):
    """A fresh, unfitted estimator for the head kind. Extra params override the defaults; a parameter
    the head does not take (see DEFAULTS) is a UsageError."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import Normalizer, StandardScaler
    from sklearn.svm import SVC

    check_head_params(kind, {k: v for k, v in params.items() if v is not None})
    if class_weight not in (None, "balanced"):
        raise UsageError(f"--class-weight must be 'balanced' or omitted, got '{class_weight}'")
    p = {**DEFAULTS[kind], **{k: v for k, v in params.items() if v is not None}}
    if kind == "logreg":
        clf = LogisticRegression(C=p["C"], max_iter=5000, class_weight=class_weight, random_state=seed)
        return Pipeline([("scale", StandardScaler()), ("clf", clf)])
    if kind == "svm":
        svc = SVC(C=p["C"], kernel="rbf", gamma="scale", class_weight=class_weight, random_state=seed)
        # Platt scaling on cross-validated decision values (what SVC(probability=True) did before 1.9).
        # cv: check_trainable lowers it to the smallest class's training count when that is below 5.
        clf = CalibratedClassifierCV(svc, method="sigmoid", cv=SVM_CALIBRATION_FOLDS, ensemble=False)
        return Pipeline([("l2", Normalizer()), ("clf", clf)])
    if kind == "knn":
        if class_weight is not None:
            raise UsageError("the knn head has no --class-weight (its votes come from the neighbours found)")
        return KNNHead(k=p["k"], space=p["space"])
    return DenseHead(class_weight=class_weight, random_state=seed, **p)


def head_params(estimator) -> dict:
    """JSON-friendly hyperparameters of a head (for the manifest)."""
    params = estimator.get_params(deep=True)
    return {k: v for k, v in params.items() if isinstance(v, (int, float, str, bool, type(None)))}


def dumps_sklearn(estimator) -> bytes:
    import joblib

    buf = io.BytesIO()
    joblib.dump(estimator, buf)
    return buf.getvalue()
