"""The head kinds by name, their defaults, and how a head is stored."""

from __future__ import annotations

import io
import os

import numpy as np

from ..errors import DatasetError, UsageError
from .defaults import DEFAULTS, SVM_DEFAULT_C, SVM_RBF_MAX_CLASSES
from .dense import DenseHead
from .knn import KNNHead
from .linear_svm import CALIBRATION as LINEAR_CALIBRATION, HOLD_OUT, LinearSVMHead


HEAD_KINDS = ("logreg", "svm", "dense", "knn")


# Training images each class needs for a head to train: the RBF SVM's Platt calibration cross-validates
# (stratified folds, at most SVM_CALIBRATION_FOLDS, never more than the smallest class holds); the linear
# SVM's temperature is fitted on a held-out 20% that needs two per class too.
MIN_PER_CLASS = {"logreg": 1, "svm": 2, "dense": 1, "knn": 1}
SVM_CALIBRATION_FOLDS = 5
SVM_KERNELS = ("auto", "rbf", "linear")


def check_trainable(kind: str, estimator, y, classes: list[str], *, held_out: bool = False):
    """Make `estimator` (a fresh head of `kind`) fit for training labels y (int class indices into classes):
    the SVM's kernel is chosen (kernel "auto": RBF up to SVM_RBF_MAX_CLASSES classes, linear above) and
    the RBF SVM's calibration folds become min(5, smallest class count). Raises DatasetError, before any
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
        configure_svm(estimator, len(present), n)
    return estimator


def svm_kernel(kernel: str, n_classes: int) -> str:
    """The kernel an svm head of `kernel` ("auto", "rbf", "linear") uses for n_classes classes."""
    if kernel not in SVM_KERNELS:
        raise UsageError(f"svm kernel must be one of {', '.join(SVM_KERNELS)}, got '{kernel}'")
    if kernel != "auto":
        return kernel
    return "rbf" if n_classes <= SVM_RBF_MAX_CLASSES else "linear"


def configure_svm(pipeline, n_classes: int, smallest: int):
    """Set an svm head (make_head("svm")) for training data of n_classes classes whose smallest has
    `smallest` images: its kernel (`svm_kernel_` on the pipeline records the one used), C (the kernel's
    SVM_DEFAULT_C unless one was given) and its calibration (`svm_calibration_`): the RBF SVC's Platt
    folds, min(SVM_CALIBRATION_FOLDS, smallest); the linear kernel replaces the classifier step with
    LinearSVMHead (temperature scaling on a held-out 20%). Returns the pipeline."""
    requested = getattr(pipeline, "svm_request_", {"kernel": "auto", "C": None})
    kernel = svm_kernel(requested["kernel"], n_classes)
    C = requested["C"] if requested["C"] is not None else SVM_DEFAULT_C[kernel]
    clf = pipeline.named_steps["clf"]
    if kernel == "linear":
        svc = clf.estimator if hasattr(clf, "estimator") else clf
        pipeline.set_params(clf=LinearSVMHead(C=C, class_weight=getattr(svc, "class_weight", None),
                                              random_state=getattr(svc, "random_state", 0)))
        pipeline.svm_calibration_ = f"{LINEAR_CALIBRATION} ({HOLD_OUT:.0%} held out)"
    else:
        clf.estimator.set_params(C=C)
        pipeline.set_params(clf__cv=min(SVM_CALIBRATION_FOLDS, smallest))
        pipeline.svm_calibration_ = f"sigmoid (Platt, {pipeline.named_steps['clf'].cv}-fold)"
    pipeline.svm_kernel_ = kernel
    return pipeline


def check_head_params(kind: str, params: dict) -> None:
    """Raise UsageError (one line) for an unknown head kind or a parameter the head does not take."""
    if kind not in HEAD_KINDS:
        raise UsageError(f"unknown head '{kind}': choose one of {', '.join(HEAD_KINDS)}")
    unknown = sorted(set(params) - set(DEFAULTS[kind]))
    if unknown:
        raise UsageError(f"the {kind} head takes no parameter {', '.join(repr(p) for p in unknown)} "
                         f"(its parameters: {', '.join(DEFAULTS[kind])})")


def busy_machine_threads() -> int | None:
    """BLAS/OpenMP threads for a head's fit: 1 when the machine is busy (load average over the last minute
    >= cores - 0.5), else None (no limit: every core). OpenBLAS's threads spin when the cores are taken:
    on 2 cores at load 4.3 the svm head's fit at 8,000 x 100 classes took 42.4 s with the default threads
    and 12.4 s with one, logreg's 5.6 s and 2.9 s (one run, console)."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return None
    return 1 if load >= (os.cpu_count() or 1) - 0.5 else None


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
        svm_kernel(p["kernel"], 2)  # an unknown kernel is a UsageError now
        C = p["C"] if p["C"] is not None else SVM_DEFAULT_C["rbf"]
        svc = SVC(C=C, kernel="rbf", gamma="scale", class_weight=class_weight, random_state=seed)
        # Platt scaling on cross-validated decision values (what SVC(probability=True) did before 1.9).
        # check_trainable (configure_svm) picks the kernel for the classes trained on (a linear SVM above
        # SVM_RBF_MAX_CLASSES) and lowers cv to the smallest class's training count.
        clf = CalibratedClassifierCV(svc, method="sigmoid", cv=SVM_CALIBRATION_FOLDS, ensemble=False)
        pipeline = Pipeline([("l2", Normalizer()), ("clf", clf)])
        pipeline.svm_request_ = {"kernel": p["kernel"], "C": p["C"]}
        return pipeline
    if kind == "knn":
        if class_weight is not None:
            raise UsageError("the knn head has no --class-weight (its votes come from the neighbours found)")
        return KNNHead(k=p["k"], space=p["space"])
    return DenseHead(class_weight=class_weight, random_state=seed, **p)


def head_params(estimator) -> dict:
    """JSON-friendly hyperparameters of a head (for the manifest)."""
    params = estimator.get_params(deep=True)
    out = {k: v for k, v in params.items() if isinstance(v, (int, float, str, bool, type(None)))}
    if getattr(estimator, "svm_kernel_", None):  # the svm head's kernel and calibration, as chosen for its classes
        out["kernel"] = estimator.svm_kernel_
        out["calibration"] = estimator.svm_calibration_
    return out


def dumps_sklearn(estimator) -> bytes:
    import joblib

    buf = io.BytesIO()
    joblib.dump(estimator, buf)
    return buf.getvalue()
