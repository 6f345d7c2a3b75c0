"""Nearest neighbours (exact and the faiss index beside the cache) and near-duplicates, on real cache files."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from embedflow import api, cache, search as neighbors
from embedflow.search import exact as exact_search
from embedflow.errors import DatasetError, FingerprintMismatch, UsageError

FP = {"backbone": "synthetic", "id": "0123456789abcdef"}
CLASSES = ["a", "b", "c"]


def write_cache(path: Path, vectors: np.ndarray, labels=None, hashes=None, fingerprint=FP) -> Path:
    """A real cache file holding these vectors (keys k0000.., sorted like the rows)."""
    n, dim = vectors.shape if len(vectors) else (0, 16)
    labels = np.arange(n) % len(CLASSES) if labels is None else np.asarray(labels)
    hashes = hashes or [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]
    src = path.with_name(path.name + ".src.npz")
    np.savez(src, hashes=np.array(hashes, dtype="S64"), vectors=np.asarray(vectors, np.float32).reshape(n, dim))
    rows = [cache.Row(f"{CLASSES[labels[i]]}/k{i:04d}.png", hashes[i], int(labels[i]), src, i) for i in range(n)]
    cache.write(path, rows, CLASSES, fingerprint, str(path.parent / "images"), [], dim)
    return path


def clustered(n: int, dim: int = 32, clusters: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (clusters, dim))
    return (centres[rng.integers(0, clusters, n)] + rng.normal(0, 0.5, (n, dim))).astype(np.float32)


def brute_force(cache_vectors: np.ndarray, queries: np.ndarray, k: int):
    a = cache_vectors / np.linalg.norm(cache_vectors, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = q.astype(np.float64) @ a.T.astype(np.float64)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, 1)


def test_exact_search_matches_brute_force_across_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(exact_search, "SEARCH_ROWS", 37)  # many cache blocks ...
    monkeypatch.setattr(exact_search, "QUERY_ROWS", 11)  # ... and several query chunks
    vectors = clustered(301)
    path = write_cache(tmp_path / "c.h5", vectors)
    queries = clustered(40, seed=5)
    out = api.neighbors(vectors=queries, fingerprint=FP, k=7, cache_path=path, method="exact")
    want_rows, want_scores = brute_force(vectors, queries, 7)
    assert out["method"] == "exact" and len(out["results"]) == 40
    for r, rows, scores in zip(out["results"], want_rows, want_scores):
        assert [n["key"] for n in r["neighbors"]] == [f"{CLASSES[i % 3]}/k{i:04d}.png" for i in rows]
        np.testing.assert_allclose([n["score"] for n in r["neighbors"]], scores, atol=1e-5)
        assert [n["label"] for n in r["neighbors"]] == [CLASSES[i % 3] for i in rows]


def test_k_larger_than_the_cache_returns_every_row(tmp_path):
    path = write_cache(tmp_path / "c.h5", clustered(4))
    out = api.neighbors(keys=["a/k0000.png"], k=10, cache_path=path)
    assert sorted(n["key"] for n in out["results"][0]["neighbors"]) == ["a/k0003.png", "b/k0001.png", "c/k0002.png"]


def test_a_cached_query_and_its_copies_are_not_their_own_neighbours(tmp_path):
    vectors = clustered(50)
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(50)]
    vectors[7], hashes[7] = vectors[3], hashes[3]  # row 7 is a byte-identical copy of row 3
    path = write_cache(tmp_path / "c.h5", vectors, hashes=hashes)
    out = api.neighbors(keys=["a/k0003.png"], k=5, cache_path=path)
    keys = [n["key"] for n in out["results"][0]["neighbors"]]
    assert len(keys) == 5 and "a/k0003.png" not in keys and "b/k0007.png" not in keys
    kept = api.neighbors(keys=["a/k0003.png"], k=5, cache_path=path, include_self=True)["results"][0]["neighbors"]
    assert {n["key"] for n in kept[:2]} == {"a/k0003.png", "b/k0007.png"}
    assert [n["score"] for n in kept[:2]] == [1.0, 1.0]  # exactly, not a float dot product
    assert [n["key"] for n in kept[2:]] == keys[:3]


def test_index_search_agrees_with_exact_and_excludes_self(tmp_path):
    pytest.importorskip("faiss")
    vectors = clustered(600, dim=48, clusters=12)
    path = write_cache(tmp_path / "c.h5", vectors)
    keys = [f"{CLASSES[i % 3]}/k{i:04d}.png" for i in range(0, 600, 37)]
    exact = api.neighbors(keys=keys, k=10, cache_path=path, method="exact")
    approx = api.neighbors(keys=keys, k=10, cache_path=path, method="index")
    assert approx["method"] == "index"
    recall = np.mean([len({n["key"] for n in a["neighbors"]} & {n["key"] for n in e["neighbors"]}) / 10
                      for a, e in zip(approx["results"], exact["results"])])
    assert recall >= 0.9
    for r in approx["results"]:
        assert r["query"] not in [n["key"] for n in r["neighbors"]]
    kept = api.neighbors(keys=keys[:3], k=3, cache_path=path, method="index", include_self=True)
    assert [r["neighbors"][0] for r in kept["results"]] == [
        {"key": key, "label": key.split("/")[0], "score": 1.0} for key in keys[:3]]
    index_file, sidecar = neighbors.index_paths(path)
    meta = json.loads(sidecar.read_text())
    assert index_file.stat().st_size == meta["index_bytes"] and meta["count"] == 600
    assert meta["fingerprint_id"] == FP["id"]


def test_index_is_rebuilt_when_the_cache_changes(tmp_path):
    pytest.importorskip("faiss")
    path = write_cache(tmp_path / "c.h5", clustered(100))
    api.neighbors(keys=["a/k0000.png"], k=3, cache_path=path, method="index")
    index_file, sidecar = neighbors.index_paths(path)
    first = json.loads(sidecar.read_text())
    columns = cache.load_columns(path)
    assert neighbors.index_is_current(path, columns)
    vectors = clustered(101)
    vectors[100] = vectors[0] * 2  # a new image whose direction equals row 0's
    write_cache(path, vectors)
    assert not neighbors.index_is_current(path, cache.load_columns(path))
    out = api.neighbors(keys=["a/k0000.png"], k=1, cache_path=path, method="index")
    assert out["results"][0]["neighbors"][0]["key"] == "b/k0100.png"
    second = json.loads(sidecar.read_text())
    assert second["count"] == 101 and second["cache_digest"] != first["cache_digest"]


def test_planted_duplicates_are_grouped_and_cross_class_copies_flagged(tmp_path):
    rng = np.random.default_rng(3)
    vectors = rng.normal(0, 1, (60, 32)).astype(np.float32)  # random directions: no pair is near
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(60)]
    labels = np.arange(60) % 3
    vectors[10] = vectors[4] + rng.normal(0, 0.01, 32)  # a re-encoded copy in the same class (4, 10: class b)
    vectors[22] = vectors[4] * 3  # same direction (scaled), class b as well
    vectors[21], hashes[21] = vectors[8], hashes[8]  # identical bytes filed under another class (c and a)
    path = write_cache(tmp_path / "c.h5", vectors, labels=labels, hashes=hashes)
    out = api.duplicates(path, threshold=0.97)
    assert out["n_groups"] == 2 and out["n_cross_class"] == 1
    cross, same = out["groups"]  # cross-class groups come first
    assert cross["cross_class"] and cross["labels"] == ["a", "c"] and cross["min_score"] == 1.0
    assert {m["key"] for m in cross["members"]} == {"c/k0008.png", "a/k0021.png"}
    assert not same["cross_class"] and {m["key"] for m in same["members"]} == {"b/k0004.png", "b/k0010.png", "b/k0022.png"}
    assert 0.97 <= same["min_score"] < 1.0
    if importlib.util.find_spec("faiss"):
        by_index = api.duplicates(path, threshold=0.97, method="index")
        assert by_index["method"] == "index"
        assert [g["members"] for g in by_index["groups"]] == [g["members"] for g in out["groups"]]
    at_one = api.duplicates(path, threshold=1.0)["groups"]  # identical bytes always reach 1.0, a noisy copy not
    assert {"c/k0008.png", "a/k0021.png"} in [{m["key"] for m in g["members"]} for g in at_one]
    assert "b/k0010.png" not in {m["key"] for g in at_one for m in g["members"]}


def test_duplicate_groups_chain_through_union_find():
    hashes = ["h0", "h1", "h2", "h3", "h1"]
    groups = neighbors.group_duplicates(5, hashes, [(0, 2, 0.98), (2, 3, 0.99)])
    members = sorted(sorted({i for e in g for i in e[:2]}) for g in groups.values())
    assert members == [[0, 2, 3], [1, 4]]


def test_clear_errors(tmp_path):
    empty = write_cache(tmp_path / "empty.h5", np.zeros((0, 16), np.float32))
    with pytest.raises(DatasetError, match="holds no vectors"):
        api.neighbors(vectors=np.ones(16), cache_path=empty)
    with pytest.raises(DatasetError, match="holds no vectors"):
        api.duplicates(empty)
    path = write_cache(tmp_path / "c.h5", clustered(20))
    with pytest.raises(FingerprintMismatch):
        api.neighbors(vectors=np.ones(32), fingerprint={**FP, "id": "ffffffffffffffff"}, cache_path=path)
    with pytest.raises(FingerprintMismatch):
        api.neighbors(vectors=np.ones(1280), cache_path=path)
    with pytest.raises(UsageError, match="no image with key 'a/k9999.png'"):
        api.neighbors(keys=["a/k9999.png"], cache_path=path)
    with pytest.raises(UsageError):
        api.neighbors(keys=["a/k0000.png"], k=0, cache_path=path)
    with pytest.raises(UsageError):
        api.duplicates(path, threshold=1.5)


def test_a_cache_replaced_during_a_search_is_refused(tmp_path, monkeypatch):
    """Keys are read in one open and vectors in later ones: if a writer renames a new cache over the old in
    between, the result would mix two snapshots, so the search refuses it instead."""
    from embedflow.errors import CacheError

    path = write_cache(tmp_path / "c.h5", clustered(40))
    real_search = neighbors.search

    def search_while_replaced(cache_path, *args, **kwargs):
        out = real_search(cache_path, *args, **kwargs)
        write_cache(tmp_path / "new.h5", clustered(41, seed=1)).replace(path)  # what embed's rename does
        return out

    monkeypatch.setattr(neighbors.neighbors, "search", search_while_replaced)  # the module that runs the query
    with pytest.raises(CacheError, match="replaced by another run while it was being read"):
        api.neighbors(keys=["a/k0000.png"], cache_path=path)
    monkeypatch.setattr(neighbors.neighbors, "search", real_search)
    assert api.neighbors(keys=["a/k0000.png"], cache_path=path, k=3)["results"][0]["neighbors"]


def test_index_search_on_a_read_only_cache_folder_searches_in_memory_with_one_warning(tmp_path, cli, monkeypatch):
    """Readers never write: neighbors/duplicates --index on a cache in a read-only folder build the index in
    memory, warn once and exit 0 (it used to be a traceback removing the index's temporary file)."""
    pytest.importorskip("faiss")
    from ..models.test_output_safety import read_only, small_disk

    disk = tmp_path / "ro"
    with small_disk(disk, "4m") as real:
        path = write_cache(disk / "c.h5", clustered(120))
        before = sorted(p.name for p in disk.iterdir())
        with read_only(disk, monkeypatch, real):
            exact = api.neighbors(keys=["a/k0000.png"], k=3, cache_path=path, method="exact")
            for args in (("neighbors", "--cache", path, "--index", "--key", "a/k0000.png", "--k", "3"),
                         ("duplicates", "--cache", path, "--index")):
                r = cli(*args)
                warnings = [line for line in r.stderr.splitlines() if "could not be saved" in line]
                assert len(warnings) == 1 and "searching with it in memory" in warnings[0], r.stderr
                assert "Traceback" not in r.stderr
            out = api.neighbors(keys=["a/k0000.png"], k=3, cache_path=path, method="index")
            assert out["method"] == "index"
            assert [n["key"] for n in out["results"][0]["neighbors"]] == [n["key"] for n in exact["results"][0]["neighbors"]]
        assert sorted(p.name for p in disk.iterdir()) == before  # no index, no temporary file


def test_an_index_write_that_fails_even_to_remove_its_temporary_file_is_a_warning(tmp_path, monkeypatch):
    """The exact failure seen on a read-only mount: creating the temporary index file fails with EROFS, and
    removing it (in the cleanup) fails with EROFS too."""
    pytest.importorskip("faiss")
    import errno
    import os

    from embedflow.progress import ListReporter
    from embedflow.search import index as index_module

    path = write_cache(tmp_path / "c.h5", clustered(80))

    def refused(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(args[0]))

    monkeypatch.setattr(index_module, "open", refused, raising=False)
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: refused(self))
    reporter = ListReporter()
    index = neighbors.load_index(path, cache.load_columns(path), reporter)
    assert index.ntotal == 80 and len(reporter.warnings) == 1 and "Read-only file system" in reporter.warnings[0]
    assert not neighbors.index_paths(path)[0].exists()
