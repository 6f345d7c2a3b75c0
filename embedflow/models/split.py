"""The train/validation split shared by fit and finetune, its record in a model folder, and the check of
a recorded split against the data read when it is reused (export's parity check)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import DatasetError


def split_indices(labels: np.ndarray, hashes: list[str], classes: list[str], val_split: float, seed: int):
    """Deterministic stratified train/validation split that keeps identical files (same sha256) on the
    same side, so exact duplicates cannot leak from training into validation."""
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    n = len(labels)
    if not 0.0 <= val_split < 1.0:
        raise DatasetError(f"--val-split must be in [0, 1), got {val_split}")
    present = np.unique(labels)
    if len(present) < 2:
        only = classes[int(present[0])] if len(present) else "none"
        raise DatasetError(f"need at least 2 classes to train a classifier, the cache holds one ({only})")
    if val_split == 0:
        return np.arange(n), np.arange(0)
    group_of: dict[str, int] = {}
    group_ids = np.array([group_of.setdefault(h, len(group_of)) for h in hashes])
    first_row = np.zeros(len(group_of), dtype=int)
    first_row[group_ids[::-1]] = np.arange(n)[::-1]
    group_labels = labels[first_row]
    counts = np.bincount(group_labels, minlength=len(classes))
    for c in present:
        if counts[c] < 2:
            raise DatasetError(
                f"class '{classes[c]}' has {counts[c]} distinct image(s); a validation split needs at least 2 "
                "per class (add images, remove the class folder, or use --val-split 0)"
            )
    n_val = int(np.ceil(val_split * len(group_labels)))
    if n_val < len(present) or len(group_labels) - n_val < len(present):
        raise DatasetError(
            f"a {val_split:.0%} validation split of {len(group_labels)} distinct images cannot hold every one of "
            f"the {len(present)} classes on both sides; use a larger dataset or another --val-split"
        )
    g_train, g_val = train_test_split(np.arange(len(group_labels)), test_size=n_val, stratify=group_labels,
                                      random_state=seed)
    in_val = np.isin(group_ids, g_val)
    return np.flatnonzero(~in_val), np.flatnonzero(in_val)


GROUPED_BY = "sha256 (identical files share a side)"


def split_record(keys: list[str], hashes: list[str], train_rows, val_rows, *, val_split: float, seed: int,
                 refit_on_all: bool) -> dict:
    """What a model folder records about its split: the parameters, the counts, and the validation keys
    with their content hashes, so a later reuse can check that the data is still the same."""
    import hashlib

    val_keys = [keys[i] for i in val_rows]
    return {"val_split": val_split, "seed": seed, "n_train": int(len(train_rows)), "n_val": int(len(val_rows)),
            "refit_on_all": bool(refit_on_all), "grouped_by": GROUPED_BY,
            "val_keys": val_keys, "val_hashes": [hashes[i] for i in val_rows],
            "val_keys_sha256": hashlib.sha256("\n".join(val_keys).encode()).hexdigest()}


@dataclass
class SplitCheck:
    """A recorded validation split against the data read now: `rows` (int, in the data read now) of the
    recorded validation keys still there, the `missing` keys and the keys whose content `changed`."""

    rows: np.ndarray
    n_recorded: int
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def warning(self, what: str) -> str | None:
        """One line for the reporter when the data changed since the split was recorded, else None."""
        if not self.missing and not self.changed:
            return None
        example = (self.missing or self.changed)[0]
        return (f"{what} changed since the model was trained: of its {self.n_recorded} validation images, "
                f"{len(self.missing)} are missing and {len(self.changed)} changed content (e.g. {example}); "
                f"using the {len(self.rows)} still there")


def check_split(record: dict, keys: list[str], hashes: list[str] | None = None) -> SplitCheck | None:
    """Match a split record's validation keys (and hashes, when both sides have them) against data read
    now (its keys and hashes); None for a record without keys (older model folders)."""
    val_keys = record.get("val_keys")
    if not isinstance(val_keys, list):
        return None
    val_hashes = record.get("val_hashes") or [None] * len(val_keys)
    row_of = {k: i for i, k in enumerate(keys)}
    rows, missing, changed = [], [], []
    for key, digest in zip(val_keys, val_hashes):
        row = row_of.get(key)
        if row is None:
            missing.append(key)
            continue
        if digest and hashes is not None and hashes[row] != digest:
            changed.append(key)
        rows.append(row)
    return SplitCheck(np.array(rows, dtype=np.int64), len(val_keys), missing, changed)


def recorded_split_indices(splits: list[str], labels: np.ndarray, hashes: list[str], classes: list[str],
                           val_split: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(training rows, validation rows, test rows) of a cache whose images came from train/ val|validation/
    test/ folders (`splits`: each row's "train" | "val" | "test"). The folders are the split: training
    on train, validation on val; test rows are never used by fit (evaluate --split test scores them).
    Without a val folder the train rows are split with split_indices(val_split, seed).
    Raises DatasetError when a class has no training image (it would be a class the head never saw)."""
    splits = np.asarray(splits)
    labels = np.asarray(labels)
    train, val, test = (np.flatnonzero(splits == s) for s in ("train", "val", "test"))
    if not len(train):
        raise DatasetError("the train/ folder holds no image: fit trains on train/ (and reports on val/)")
    missing = sorted(set(range(len(classes))) - set(labels[train].tolist()))
    if missing:
        raise DatasetError(f"class '{classes[missing[0]]}' has no image in train/ (it is in "
                           f"{', '.join(sorted(set(splits[labels == missing[0]].tolist())))}/ only): fit trains on "
                           "train/; add images to train/ or remove the class")
    if not len(val) and val_split > 0:
        inner_train, inner_val = split_indices(labels[train], [hashes[i] for i in train], classes, val_split, seed)
        train, val = train[inner_train], train[inner_val]
    return train, val, test


NEAR_DUPLICATE_THRESHOLD = 0.92  # as `duplicates` and `audit`
GROUPED_BY_NEAR = "sha256 and near-duplicates (cosine >= {threshold}): each group of connected images shares a side"


def near_duplicate_groups(X: np.ndarray, hashes: list[str] | None = None,
                          threshold: float = NEAR_DUPLICATE_THRESHOLD, block_entries: int = 1 << 18) -> np.ndarray:
    """(N,) int64 group ids 0..G-1 (in order of first appearance): rows joined by a chain of pairs with
    cosine >= threshold, or with the same sha256 (`hashes`, optional), share an id (scipy connected
    components). X: (N, D) float vectors.

    Memory stays O(N + block_entries) whatever the number of pairs: the similarity is computed for row
    blocks of max(64, block_entries // N) rows against the rows after them (1 MB of float32 at most by
    default, up to 64 rows: a block's pairs cost ~80 bytes each while they are merged), and each
    block's pairs are merged at once into the groups found so far (every row linked to its group's first
    row, plus the block's pairs, through connected components), so pairs never accumulate. A folder of
    burst shots, where every image is a near-copy of every other, has N^2/2 pairs: holding them all took
    9.8 GB for 20,000 images (benchmarks/results/finetune_memory-quiet96.json)."""
    X = np.asarray(X, dtype=np.float32)
    n = len(X)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    U = unit_rows(X)
    root = np.arange(n)
    if hashes is not None:
        first_of: dict[str, int] = {}
        pairs = [(first_of.setdefault(h, r), r) for r, h in enumerate(hashes)]
        i, j = (np.array(side, dtype=np.int64) for side in zip(*pairs))
        root = _merged(root, i[i != j], j[i != j])
    block = max(min(64, n), block_entries // n) if block_entries > 1 else 1
    for i, j, _ in similar_pairs(U, threshold, block):
        if len(i):
            root = _merged(root, i, j)
    _, first, inverse = np.unique(root, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inverse.ravel()]


def unit_rows(X) -> np.ndarray:
    """(N, D) float32: the rows of X scaled to unit L2 norm (an all-zero row stays zero), for cosines as dot
    products (the split's grouping, insight, the report's group cosines)."""
    X = np.asarray(X, dtype=np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def similar_pairs(U: np.ndarray, threshold: float, block_rows: int):
    """Yield, per block of `block_rows` rows of U ((N, D) float32 unit vectors), the (i, j, cosine) arrays
    (int64, int64, float32) of its pairs i < j with cosine >= threshold: each pair once, and only one
    (block_rows, N) similarity block in memory at a time."""
    n = len(U)
    for start in range(0, n, max(1, block_rows)):
        S = U[start:start + block_rows] @ U[start:].T  # columns from `start` on: each pair once
        i, j = np.nonzero(S >= threshold)
        keep = j > i  # (the block's own diagonal and below are pairs seen already, or self-pairs)
        i, j = i[keep], j[keep]
        yield start + i.astype(np.int64), start + j.astype(np.int64), S[i, j].astype(np.float32)


def _merged(root: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """(N,) each row's group representative (the group's lowest row) after joining rows i[k] and j[k]."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(root)
    a, b = np.concatenate([np.arange(n), i]), np.concatenate([root, j])
    _, comp = connected_components(coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n)), directed=False)
    _, first = np.unique(comp, return_index=True)  # components are numbered in order of their lowest row
    return first[comp]


def split_indices_near_duplicates(X: np.ndarray, labels: np.ndarray, hashes: list[str], classes: list[str],
                                  val_split: float, seed: int, threshold: float = NEAR_DUPLICATE_THRESHOLD):
    """split_indices, but each group of near_duplicate_groups(X, hashes, threshold) keeps all its images on
    one side (a group goes where its first image's label stratifies it). Returns (train_rows, val_rows,
    info) with info = {"grouped_by", "threshold", "near_duplicate_groups": groups of more than one image
    kept together, "images_in_groups"}. Raises DatasetError as split_indices does."""
    labels = np.asarray(labels)
    groups = near_duplicate_groups(X, hashes, threshold)
    sizes = np.bincount(groups) if len(groups) else np.zeros(0, int)
    info = {"grouped_by": GROUPED_BY_NEAR.format(threshold=threshold), "threshold": threshold,
            "near_duplicate_groups": int((sizes > 1).sum()), "images_in_groups": int(sizes[sizes > 1].sum())}
    # one representative "hash" per group: split_indices keeps rows with equal hashes together
    train, val = split_indices(labels, [f"group{g}" for g in groups], classes, val_split, seed)
    return train, val, info


def leak_free_split(X: np.ndarray | None, labels: np.ndarray, hashes: list[str], classes: list[str],
                    val_split: float, seed: int, reporter=None) -> tuple[np.ndarray, np.ndarray, dict]:
    """The split fit and finetune use: (train rows, val rows, record extras). With vectors X (N, D) and a
    validation split, groups of near-duplicates are kept on one side (split_indices_near_duplicates) where
    the classes allow it; when they do not (a chain of near-duplicates holding most of a small class, as
    on tightly clustered vectors) the split keeps identical files together only, with a reporter warning,
    and the extras say why. Without X (or with val_split 0): identical files only, extras {}. Raises
    DatasetError when even the plain split is impossible (split_indices)."""
    if X is None or val_split <= 0:
        train, val = split_indices(labels, hashes, classes, val_split, seed)
        return train, val, {}
    try:
        train, val, grouping = split_indices_near_duplicates(X, labels, hashes, classes, val_split, seed)
    except DatasetError as grouped_error:
        train, val = split_indices(labels, hashes, classes, val_split, seed)
        if reporter is not None:
            reporter.warn(f"near-duplicate images could not all be kept on one side ({grouped_error}); "
                          "the split keeps identical files together only")
        return train, val, {"grouped_by": "sha256 (near-duplicate groups did not fit the split)",
                            "near_duplicate_groups": 0, "grouping_refused": str(grouped_error)}
    if grouping["near_duplicate_groups"] and reporter is not None:
        reporter.info(f"split: {grouping['near_duplicate_groups']} group(s) of near-duplicate images "
                      f"({grouping['images_in_groups']} images, cosine >= {grouping['threshold']}) kept on one side")
    return train, val, grouping


def without_test_rows(splits, labels: np.ndarray, hashes: list[str], classes: list[str], val_split: float,
                      seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """For data of train/ val/ test/ folders (`splits`: each row's folder): (rows kept = train + val,
    train and val positions within those kept rows, number of test rows left out). See
    recorded_split_indices, whose DatasetError it raises."""
    train, val, test = recorded_split_indices(splits, labels, hashes, classes, val_split, seed)
    keep = np.sort(np.concatenate([train, val]))
    position = np.full(len(splits), -1, dtype=np.int64)
    position[keep] = np.arange(len(keep))
    return keep, position[train], position[val], int(len(test))
