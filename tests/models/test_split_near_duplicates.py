"""Leak-free splits (issue #17): fit's split keeps groups of near-duplicate images (cosine >= 0.92, chained)
on one side, not only identical files, and the manifest records how many groups it kept together."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedflow import api
from embedflow.models.split import near_duplicate_groups, split_indices, split_indices_near_duplicates

from ..test_audit import CLASSES, clusters, write_cache


def planted_copies(seed=0):
    """Clustered vectors where row 3 has a near-copy (row 40, cosine > 0.99, relabelled as its class) that a
    plain split puts on the other side; returns X, y, hashes, the pair."""
    X, y, _, rng = clusters(seed)
    hashes = [f"{i:064x}" for i in range(len(y))]
    for a in range(len(y)):
        for b in range(len(y)):
            if a == b or y[a] != y[b]:
                continue
            trial = X.copy()
            trial[b] = X[a] + rng.normal(0, 0.005, X.shape[1])
            train, val = split_indices(y, hashes, CLASSES, 0.2, 0)
            if (a in val) != (b in val):
                return trial, y, hashes, (a, b)
    raise AssertionError("no pair is cut by the plain split")


def test_near_duplicate_groups_chain_copies_and_identical_files():
    X, y, _, rng = clusters(1)
    X[5] = X[4] * 1.01 + rng.normal(0, 0.002, X.shape[1])
    X[6] = X[5] + rng.normal(0, 0.002, X.shape[1])  # a chain 4 - 5 - 6
    hashes = [f"{i:064x}" for i in range(len(y))]
    hashes[30] = hashes[70]  # identical bytes, whatever the vectors
    groups = near_duplicate_groups(X, hashes)
    assert groups[4] == groups[5] == groups[6] and groups[30] == groups[70]
    sizes = np.bincount(groups)
    assert sorted(sizes[sizes > 1]) == [2, 3] and groups[0] == 0 and len(groups) == len(y)


def test_a_planted_near_copy_stays_on_one_side_of_the_split():
    X, y, hashes, (a, b) = planted_copies()
    train, val, info = split_indices_near_duplicates(X, y, hashes, CLASSES, 0.2, 0)
    assert (a in val) == (b in val)
    assert info["near_duplicate_groups"] == 1 and info["images_in_groups"] == 2
    assert len(train) + len(val) == len(y) and not set(train) & set(val)
    assert len(val) == 18 + (a in val)  # 20% of the 89 groups, rounded up; the pair counts twice


def test_fit_keeps_the_near_copy_together_and_records_the_groups(tmp_path):
    X, y, hashes, (a, b) = planted_copies()
    path, keys = write_cache(tmp_path / "c.h5", X, y, hashes=hashes)
    clf = api.fit_head(path, "logreg", reporter=None)
    val = set(clf.split_["val_keys"])
    assert (keys[a] in val) == (keys[b] in val)
    out = clf.save(tmp_path / "m")
    split = json.loads((out / "manifest.json").read_text())["split"]
    assert split["near_duplicate_groups"] == 1 and split["images_in_groups"] == 2 and split["threshold"] == 0.92
    assert "near-duplicates" in split["grouped_by"]
    assert "1 group(s) of 2 images" in (out / "README.md").read_text()


def _groups_by_all_pairs(X, hashes, threshold):
    """The definition, with every pair held at once: connected components of the full pair graph."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    i, j = np.nonzero(np.triu(U @ U.T >= threshold, 1))
    same = [(a, b) for a in range(len(hashes)) for b in range(a + 1, len(hashes)) if hashes[a] == hashes[b]]
    i = np.concatenate([i, [a for a, _ in same]]).astype(int)
    j = np.concatenate([j, [b for _, b in same]]).astype(int)
    _, comp = connected_components(coo_matrix((np.ones(len(i)), (i, j)), shape=(len(X),) * 2), directed=False)
    return comp


@pytest.mark.parametrize("block_entries", [1, 7 * 120, 1 << 22])
@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.95])
def test_near_duplicate_groups_in_blocks_equal_the_components_of_all_pairs(block_entries, threshold):
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(6, 16))
    X = (centres[rng.integers(0, 6, 120)] + rng.normal(0, 0.6, (120, 16))).astype(np.float32)
    hashes = [f"{i % 97:064x}" for i in range(120)]  # rows i and i + 97 are identical files
    got = near_duplicate_groups(X, hashes, threshold, block_entries=block_entries)
    want = _groups_by_all_pairs(X, hashes, threshold)
    # the same partition, numbered 0..G-1 in order of first appearance
    assert got[0] == 0 and len(set(got)) == len(set(want))
    assert all(len(set(want[got == g])) == 1 for g in set(got))
    assert list(dict.fromkeys(got)) == list(range(len(set(got))))


def test_near_duplicate_groups_memory_does_not_grow_with_the_number_of_pairs():
    """A burst of near-identical shots: every one of 3,000 images is a near-copy of every other (4.5M pairs).
    Holding the pairs at once took 9.8 GB at 20,000 images in a fine-tune; the groups need O(N)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    X = (np.ones((3000, 64)) + rng.normal(0, 0.01, (3000, 64))).astype(np.float32)
    hashes = [f"{i:064x}" for i in range(3000)]
    tracemalloc.start()
    try:
        groups = near_duplicate_groups(X, hashes)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert set(groups) == {0}
    assert peak < 40e6, f"{peak / 1e6:.0f} MB for 3,000 vectors of 64 floats (all pairs: 4.5M x 16 bytes = 72 MB)"
