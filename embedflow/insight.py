"""What the vectors say about the data: label issues, outliers, unknown-input rejection, near-duplicate
groups (issue #17). Pure functions on arrays (numpy/scipy/scikit-learn), no I/O; measured on flowers-dev
by benchmarks/audit.py and benchmarks/unknown.py, results and method choices in docs/insight.md."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from embedflow.errors import UsageError
from embedflow.models.split import unit_rows

# label_issues: logreg C (as the logreg head) and the number of neighbours of the kNN vote; outliers: same-class
# neighbours; rejector: neighbours averaged by knn_cosine; near_duplicate_pairs: row block
LR_C = 0.03
ISSUE_K = 10
OUTLIER_K = 5
REJECT_K = 5
# fit_rejector: default share of validation vectors rejected (issue #17's 5%; docs/insight.md: at 5% the
# held-out flowers measure 4.8-5.5% rejected, under the 7% limit, and every non-flower input of the benchmark
# is rejected)
REJECT_RATE = 0.05
REJECTOR_FILE = "rejector.npz"
DUP_BLOCK = 2048
BLOCK_ENTRIES = 1 << 21  # similarities computed at once by the block-wise searches (8 MB of float32)


def _check_xy(X, y) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
        raise UsageError(f"expected X (N, D) and y (N,), got {X.shape} and {y.shape}")
    if not np.all(np.isfinite(X)):
        raise UsageError("X holds NaN or infinite values")
    return X, y


def _top_k_cosine(Q: np.ndarray, R: np.ndarray, k: int, *, exclude_self: bool = False,
                  block: int = DUP_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Indices and cosines of the k most similar rows of unit R for each unit row of Q, most similar first,
    in blocks of at most `block` rows of Q and BLOCK_ENTRIES similarities, so the memory held at once is
    about 16 bytes x BLOCK_ENTRIES whatever len(R) (a block of 2,048 rows against 20,000 took 650 MB).
    exclude_self: Q is R (row i never matches itself)."""
    k = min(k, len(R) - (1 if exclude_self else 0))
    idx = np.empty((len(Q), k), dtype=np.int64)
    sim = np.empty((len(Q), k), dtype=np.float32)
    block = max(1, min(block, BLOCK_ENTRIES // max(1, len(R))))
    for start in range(0, len(Q), block):
        S = Q[start:start + block] @ R.T
        if exclude_self:
            rows = np.arange(S.shape[0])
            S[rows, start + rows] = -np.inf
        part = np.argpartition(-S, k - 1, axis=1)[:, :k]
        ps = np.take_along_axis(S, part, 1)
        order = np.argsort(-ps, axis=1, kind="stable")
        idx[start:start + block] = np.take_along_axis(part, order, 1)
        sim[start:start + block] = np.take_along_axis(ps, order, 1)
    return idx, sim


# ---------------------------------------------------------------------------------------------- label issues

def out_of_fold_components(X, y, *, n_splits: int = 5, seed: int = 0, k: int = ISSUE_K) -> dict[str, np.ndarray]:
    """Class probabilities of every vector, (N, C) each, from evidence that excludes the vector itself:
    "logreg": out of fold, per fold of a stratified K-fold (shuffled with `seed`), a logistic regression
    (C=0.03, as the logreg head) on standardised vectors trained on the other folds; "knn": the share of
    each class among its k nearest other vectors (cosine; leave-one-out). Classes are 0..C-1 with
    C = y.max() + 1 (a class absent from the training folds gets 0)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    X, y = _check_xy(X, y)
    n_classes = int(y.max()) + 1
    counts = np.bincount(y, minlength=n_classes)
    present = counts[counts > 0]
    splits = min(n_splits, int(present.min()))
    if len(present) < 2 or splits < 2:
        raise UsageError("label issues need at least two classes with at least two vectors each")
    Xf = np.asarray(X, dtype=np.float32)  # float32: 1.5x faster lbfgs than float64, probabilities within 1e-6 (8,000 x 100 classes)
    logreg = np.zeros((len(y), n_classes))
    for train, test in StratifiedKFold(splits, shuffle=True, random_state=seed).split(Xf, y):
        X_train = Xf[train]  # one copy per fold, standardised in place (3 copies took 0.5 GB at 20,000 x 1280)
        scaler = StandardScaler(copy=False).fit(X_train)
        lr = LogisticRegression(C=LR_C, max_iter=1000).fit(scaler.transform(X_train), y[train])
        del X_train
        logreg[np.ix_(test, lr.classes_)] = lr.predict_proba(scaler.transform(Xf[test]))
    U = unit_rows(X)
    nn, _ = _top_k_cosine(U, U, k, exclude_self=True)
    votes = y[nn]
    knn = np.stack([(votes == c).mean(axis=1) for c in range(n_classes)], axis=1)
    return {"logreg": logreg, "knn": knn}


def out_of_fold_probabilities(X, y, *, n_splits: int = 5, seed: int = 0, k: int = ISSUE_K) -> np.ndarray:
    """(N, C): the mean of the out-of-fold logistic-regression probabilities and the leave-one-out kNN
    vote (out_of_fold_components)."""
    parts = out_of_fold_components(X, y, n_splits=n_splits, seed=seed, k=k)
    return (parts["logreg"] + parts["knn"]) / 2


def label_issues(X, y, *, n_splits: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images whose given label is unlikely. Returns (scores (N,), suggested (N,)): score = 1 - the
    probability of the given label from out_of_fold_probabilities (mean of out-of-fold logistic
    regression and the label share among the 10 nearest neighbours), in [0, 1], higher = more
    suspicious; suggested = the most probable class. Sort by -scores for a review list. Labels are
    integers 0..C-1."""
    X, y = _check_xy(X, y)
    P = out_of_fold_probabilities(X, y, n_splits=n_splits, seed=seed)
    scores = 1.0 - P[np.arange(len(y)), y]
    return scores, P.argmax(axis=1)


# ---------------------------------------------------------------------------------------------- outliers

def outliers(X, y, *, k: int = OUTLIER_K) -> np.ndarray:
    """(N,) how far each vector is from the rest of its class: d = 1 - mean cosine to its k nearest
    same-class neighbours, then robust-standardised per class ((d - median) / (1.4826 MAD)), so scores
    of different classes compare. Higher = more outlying; a class of one vector scores 0."""
    X, y = _check_xy(X, y)
    U = unit_rows(X)
    scores = np.zeros(len(y))
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        if len(rows) < 2:
            continue
        _, sim = _top_k_cosine(U[rows], U[rows], k, exclude_self=True)
        d = 1.0 - sim.mean(axis=1).astype(np.float64)
        med = np.median(d)
        mad = 1.4826 * np.median(np.abs(d - med))
        scale = mad if mad > 1e-12 else (d.std() if d.std() > 1e-12 else 1.0)
        scores[rows] = (d - med) / scale
    return scores


# ---------------------------------------------------------------------------------------------- unknown inputs

REJECT_METHODS = ("knn_cosine", "mahalanobis", "relative_mahalanobis")


@dataclass
class Rejector:
    """Says how unlike the training vectors an input is. score(X): (N,), higher = more unknown;
    reject(X): score > threshold_. The threshold rejects `rate` of the validation vectors it was
    calibrated on. to_dict() is JSON for a manifest; arrays() are saved beside it (e.g. an .npz) and
    handed back to from_dict(). For "knn_cosine" the array is the L2-normalised training vectors
    ("reference", float32 (M, D)); for the Mahalanobis methods "means" (C, D), "precision" (D, D) and,
    for the relative one, "background_mean" (D,) and "background_precision" (D, D)."""

    method: str
    threshold_: float
    rate: float
    k: int = REJECT_K
    params: dict = field(default_factory=dict, repr=False)

    def score(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2:
            raise UsageError(f"expected X (N, D), got {X.shape}")
        if self.method == "knn_cosine":
            ref = self.params["reference"]
            _, sim = _top_k_cosine(unit_rows(X), ref, self.k)
            return 1.0 - sim.mean(axis=1).astype(np.float64)
        d = _min_mahalanobis(X, self.params["means"], self.params["precision"])
        if self.method == "relative_mahalanobis":
            d = d - _min_mahalanobis(X, self.params["background_mean"][None], self.params["background_precision"])
        return d

    def reject(self, X) -> np.ndarray:
        return self.score(X) > self.threshold_

    def arrays(self) -> dict[str, np.ndarray]:
        return dict(self.params)

    def to_dict(self) -> dict:
        return {"method": self.method, "k": int(self.k), "threshold": float(self.threshold_),
                "rate": float(self.rate), "arrays": sorted(self.params)}

    @classmethod
    def from_dict(cls, d: dict, arrays: dict[str, np.ndarray]) -> "Rejector":
        if d.get("method") not in REJECT_METHODS:
            raise UsageError(f"unknown rejector method {d.get('method')!r}; known: {', '.join(REJECT_METHODS)}")
        from .models.manifest import REJECTOR_ARRAYS as needed
        missing = [name for name in needed[d["method"]] if name not in arrays]
        if missing:
            raise UsageError(f"rejector arrays missing: {', '.join(missing)}")
        params = {name: np.asarray(arrays[name]) for name in needed[d["method"]]}
        return cls(method=d["method"], threshold_=float(d["threshold"]), rate=float(d["rate"]),
                   k=int(d.get("k", REJECT_K)), params=params)


def save_rejector(rejector: Rejector, path) -> None:
    """The rejector's arrays as an uncompressed .npz at `path` (no pickles)."""
    with open(path, "wb") as f:
        np.savez(f, **{name: np.asarray(a) for name, a in rejector.arrays().items()})


def model_rejector(model) -> Rejector | None:
    """The unknown-input rule of a classifier: the in-memory one of fit_head (`rejector_`), else the one
    recorded in its model folder's manifest ("rejector", arrays in rejector.npz, its sha256 checked against
    the manifest before it is read: ModelError when it differs or is missing); None when the model has none
    (val_split=0, fitted with reject_rate=None, fine-tuned, fused and TFLite models)."""
    held = getattr(model, "rejector_", None)
    if held is not None:
        return held
    record = (getattr(model, "manifest", None) or {}).get("rejector")
    if not isinstance(record, dict) or getattr(model, "path", None) is None:
        return None
    import io
    from pathlib import Path

    from .errors import ModelError
    from .models import read_member

    name = record.get("file", REJECTOR_FILE)
    data = read_member(Path(model.path), model.manifest, name)  # sha256 checked on the bytes that are loaded
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        rejector = Rejector.from_dict(record, arrays)
    except (OSError, ValueError, KeyError, TypeError, UsageError) as e:
        raise ModelError(f"cannot read the unknown-input rule {Path(model.path) / name}: {e}") from None
    model.rejector_ = rejector
    return rejector


def _min_mahalanobis(X: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """min over rows of `means` of the squared Mahalanobis distance of each row of X (shared precision)."""
    X = X.astype(np.float64)
    XP = X @ precision
    xx = np.einsum("ij,ij->i", XP, X)
    MP = means @ precision
    mm = np.einsum("ij,ij->i", MP, means)
    d = xx[:, None] - 2.0 * XP @ means.T + mm[None, :]
    return d.min(axis=1)


def _shrunk_covariance(Z: np.ndarray) -> np.ndarray:
    """Ledoit-Wolf-shrunk covariance of rows already centred: (1 - a) S + a tr(S)/D I."""
    from sklearn.covariance import ledoit_wolf_shrinkage

    a = ledoit_wolf_shrinkage(Z, assume_centered=True)
    S = Z.T @ Z / len(Z)
    out = (1.0 - a) * S
    out[np.diag_indices_from(out)] += a * np.trace(S) / S.shape[0] + 1e-10
    return out


def _shrunk_precision(Z: np.ndarray) -> np.ndarray:
    from scipy.linalg import cho_factor, cho_solve

    cov = _shrunk_covariance(Z)
    return cho_solve(cho_factor(cov, lower=True), np.eye(len(cov)))


def fit_rejector(X_train, y_train, X_val, *, rate: float = REJECT_RATE, method: str = "knn_cosine",
                 k: int = REJECT_K) -> Rejector:
    """A Rejector fitted on the training vectors and calibrated so that `rate` of X_val (vectors of the
    known classes the fit never saw) score above the threshold. Methods: "knn_cosine" (1 - mean cosine
    to the k most similar training vectors; the default, with k=5 and rate=0.03: see docs/insight.md), "mahalanobis" (min over
    classes of the squared Mahalanobis distance to the class mean, one Ledoit-Wolf-shrunk covariance of
    the class-centred vectors), "relative_mahalanobis" (that minus the distance under one Gaussian of all
    training vectors)."""
    X_train, y_train = _check_xy(X_train, y_train)
    X_val = np.asarray(X_val)
    if X_val.ndim != 2 or X_val.shape[1] != X_train.shape[1] or len(X_val) == 0:
        raise UsageError(f"X_val must be (M, {X_train.shape[1]}) with M > 0, got {X_val.shape}")
    if not 0.0 <= rate < 1.0:
        raise UsageError(f"rate must be in [0, 1), got {rate}")
    if method not in REJECT_METHODS:
        raise UsageError(f"unknown rejector method {method!r}; known: {', '.join(REJECT_METHODS)}")
    if method == "knn_cosine":
        if k < 1:
            raise UsageError(f"k must be >= 1, got {k}")
        params = {"reference": unit_rows(X_train)}
    else:
        X = X_train.astype(np.float64)
        classes = np.unique(y_train)
        means = np.stack([X[y_train == c].mean(axis=0) for c in classes])
        centred = X - means[np.searchsorted(classes, y_train)]
        params = {"means": means, "precision": _shrunk_precision(centred)}
        if method == "relative_mahalanobis":
            mu = X.mean(axis=0)
            params["background_mean"] = mu
            params["background_precision"] = _shrunk_precision(X - mu)
    rejector = Rejector(method=method, threshold_=np.inf, rate=rate, k=k, params=params)
    val_scores = rejector.score(X_val)
    # the (1 - rate) quantile: `rate` of the validation vectors score strictly above it (up to ties)
    rejector.threshold_ = float(np.quantile(val_scores, 1.0 - rate, method="higher")) if rate > 0 else float(val_scores.max())
    return rejector


# ---------------------------------------------------------------------------------------------- near duplicates

def near_duplicate_pairs(X, threshold: float = 0.92, *, max_block_bytes: int = 32 << 20):
    """(i, j, cosine) arrays (int64, int64, float32) of all pairs i < j with cosine >= threshold, computed in
    row blocks so the similarity block held at once stays under max_block_bytes (float32)."""
    from .models.split import similar_pairs

    U = unit_rows(X)
    n = len(U)
    found = list(similar_pairs(U, threshold, max(1, min(n, max_block_bytes // max(1, 4 * n)))))
    cat = (lambda k, dt: np.concatenate([f[k] for f in found]).astype(dt) if found else np.zeros(0, dt))
    return cat(0, np.int64), cat(1, np.int64), cat(2, np.float32)


def near_duplicate_groups(X, threshold: float = 0.92) -> np.ndarray:
    """(N,) int group id: vectors joined by a chain of pairs with cosine >= threshold share an id
    (connected components); a vector with no such neighbour is a group of its own. Ids are 0..G-1 in
    order of first appearance. Use as `groups` of a GroupKFold / GroupShuffleSplit for leak-free splits.
    Memory O(N) whatever the number of pairs (models.split.near_duplicate_groups, the split's grouping)."""
    from .models.split import near_duplicate_groups as groups

    X = np.asarray(X)
    if X.ndim != 2:
        raise UsageError(f"expected X (N, D), got {X.shape}")
    return groups(X, None, threshold)
