"""The train/validation split recorded in every model folder: deterministic, stratified, duplicates together."""

from __future__ import annotations

import numpy as np

from embedflow import models


def test_split_is_deterministic_stratified_and_keeps_duplicates_together():
    labels = np.repeat([0, 1, 2], 20)
    hashes = [f"h{i}" for i in range(60)]
    hashes[5] = hashes[6] = "dup"  # an exact duplicate pair
    a = models.split_indices(labels, hashes, ["a", "b", "c"], 0.25, seed=3)
    b = models.split_indices(labels, hashes, ["a", "b", "c"], 0.25, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    train, val = a
    assert set(train).isdisjoint(val) and len(train) + len(val) == 60
    assert sorted(np.bincount(labels[val])) in ([5, 5, 5], [4, 5, 5], [5, 5, 6])
    assert (5 in val) == (6 in val)
