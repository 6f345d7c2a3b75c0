"""Classifier heads trained on cached vectors. All are scikit-learn estimators: `__init__` only stores
parameters, learned state ends in `_`, `fit` returns self, and each works inside a sklearn Pipeline.

DEFAULTS (each head's default hyper-parameters) imports nothing heavy, so the CLI's help can show it; the
estimators (and scikit-learn) are imported on first use."""

from .defaults import DEFAULTS

_LAZY = {"DenseHead": "dense", "dense_head_from_keras": "dense", "keras_from_bytes": "dense", "keras_to_bytes": "dense",
         "HEAD_KINDS": "kinds", "busy_machine_threads": "kinds", "MIN_PER_CLASS": "kinds", "check_head_params": "kinds", "check_trainable": "kinds",
         "dumps_sklearn": "kinds", "head_params": "kinds", "make_head": "kinds",
         "LDA_TOLERANCE": "knn", "KNNHead": "knn", "LinearSVMHead": "linear_svm"}

__all__ = ["DEFAULTS", "busy_machine_threads", "DenseHead", "dense_head_from_keras", "HEAD_KINDS", "KNNHead", "LDA_TOLERANCE", "LinearSVMHead", "MIN_PER_CLASS", "check_head_params",
           "check_trainable", "dumps_sklearn", "head_params",
           "keras_from_bytes", "keras_to_bytes", "make_head"]


def __getattr__(name):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
