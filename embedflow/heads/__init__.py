"""Classifier heads trained on cached vectors. All are scikit-learn estimators: `__init__` only stores
parameters, learned state ends in `_`, `fit` returns self, and each works inside a sklearn Pipeline."""

from .dense import DenseHead, dense_head_from_keras, keras_from_bytes, keras_to_bytes
from .kinds import DEFAULTS, HEAD_KINDS, MIN_PER_CLASS, check_head_params, check_trainable, dumps_sklearn, head_params, make_head
from .knn import LDA_TOLERANCE, KNNHead
from .linear_svm import LinearSVMHead

__all__ = ["DEFAULTS", "DenseHead", "dense_head_from_keras", "HEAD_KINDS", "KNNHead", "LDA_TOLERANCE", "LinearSVMHead", "MIN_PER_CLASS", "check_head_params",
           "check_trainable", "dumps_sklearn", "head_params",
           "keras_from_bytes", "keras_to_bytes", "make_head"]
