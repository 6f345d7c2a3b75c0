"""The train/validation split shared by fit and finetune."""

from __future__ import annotations

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
