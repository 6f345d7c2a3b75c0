"""Each head's default hyper-parameters (no scikit-learn import: the CLI's help text is built from them)."""

from __future__ import annotations

# Defaults chosen on flowers-dev by 5-fold cross-validation (logreg: standardised, C in 0.01..1, best
# 0.01-0.03 at 89.1%; svm: L2-normalised RBF beat standardised, C in 1..30, best 10 at 89.8%).
# svm C None: SVM_DEFAULT_C of the kernel used; kernel "auto": RBF up to SVM_RBF_MAX_CLASSES classes, linear above.
DEFAULTS = {
    "logreg": {"C": 0.03},
    "svm": {"C": None, "kernel": "auto"},
    "dense": {"dropout": 0.2, "learning_rate": 1e-3, "epochs": 200, "batch_size": None, "patience": 10},
    # flowers-dev, cosine, distance-weighted, mean accuracy over 6 seeded 80/20 splits: raw vectors k=7
    # 85.4% (5-fold CV: k=3 85.6%, 5 85.9%, 7 86.9%, 9 87.0%, 15 86.3%); in the LDA space k=7 88.6%
    # (88.3% with LDAProjection, benchmarks/results/readme_numbers.json).
    "knn": {"k": 7, "space": "auto"},
}

# The RBF SVM is one-vs-one (classes^2 / 2 machines) and its Platt calibration refits it per fold: on 102
# classes x 8,189 vectors it took 225 s and scored 6 points below logreg. Above this many classes, the svm
# head is LinearSVMHead (one-vs-rest squared hinge, all classes in one L-BFGS problem, temperature-scaled
# probabilities: one fit on 80%, then one warm-started refit on all).
SVM_RBF_MAX_CLASSES = 10
SVM_DEFAULT_C = {"rbf": 10.0, "linear": 1.0}


def default_C_text() -> str:
    """--C's default per head, for help text: "logreg 0.03; svm 10 with the rbf kernel, 1 with the linear kernel"."""
    svm = ", ".join(f"{c:g} with the {kernel} kernel" for kernel, c in SVM_DEFAULT_C.items())
    return f"logreg {DEFAULTS['logreg']['C']:g}; svm {svm}"
