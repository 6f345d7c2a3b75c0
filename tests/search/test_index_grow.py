"""The approximate index at scale: IVF-PQ + float16 re-ranking (from PQ_MIN_ROWS vectors on) finds what
exact search finds, and grows with `add` when a sharded cache's rows were appended instead of being
rebuilt (rebuilt when rows were removed)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from embedflow import api, cache
from embedflow.cache import shards

faiss = pytest.importorskip("faiss")
from embedflow import search  # noqa: E402
from embedflow.search import index as index_module  # noqa: E402

FP = {"backbone": "synthetic", "image_size": 32, "weights_sha256": "0" * 64, "id": "0123456789abcdef", "output_dim": 32}
DIM = 32


@pytest.fixture(autouse=True)
def small_thresholds(monkeypatch):
    monkeypatch.setenv("EMBEDFLOW_SHARD_MIN_ROWS", "1")
    monkeypatch.setattr(shards, "SHARD_ROWS", 512)
    monkeypatch.setattr(index_module, "PQ_MIN_ROWS", 500)  # the IVF-PQ kind, at test size
    monkeypatch.setattr(index_module, "PQ_M", 8)


def clustered(tag: str, n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = np.abs(np.random.default_rng(7).normal(0, 1, (20, DIM)))
    x = centres[rng.integers(0, 20, n)] + rng.normal(0, 0.3, (n, DIM))
    return x.astype(np.float32), [hashlib.sha256(f"{tag}-{i}".encode()).hexdigest() for i in range(n)]


def write(path, rows_before, tag: str, n: int, seed: int, tmp_path):
    x, hashes = clustered(tag, n, seed)
    src = tmp_path / f"{tag}.npz"
    np.savez(src, hashes=np.array(hashes, dtype="S64"), vectors=x)
    rows = rows_before + [cache.Row(f"{tag}/{i:05d}.png", hashes[i], 0, src, i) for i in range(n)]
    cache.write(path, rows, ["a"], FP, "/data", [], DIM)
    return x


def kept(path, drop=()):
    old = cache.load(path, vectors=False)
    return [cache.Row(k, h, 0, path, i) for i, (k, h) in enumerate(zip(old.keys, old.hashes)) if k not in drop]


def exact_and_index(path, keys):
    exact = api.neighbors(keys=keys, k=10, cache_path=path, method="exact")
    approx = api.neighbors(keys=keys, k=10, cache_path=path, method="index")
    return ([{n.key for n in r.neighbors} for r in exact.results], [{n.key for n in r.neighbors} for r in approx.results],
            approx)


def test_ivfpq_with_reranking_finds_the_exact_neighbours_and_scores(tmp_path):
    path = tmp_path / "embeddings.h5"
    write(path, [], "a", 2000, 0, tmp_path)
    keys = [f"a/{i:05d}.png" for i in range(0, 2000, 50)]
    exact, approx, result = exact_and_index(path, keys)
    recall = np.mean([len(e & a) / 10 for e, a in zip(exact, approx)])
    assert recall >= 0.9, recall
    sidecar = json.loads(search.index_paths(path)[1].read_text())
    assert sidecar["kind"].startswith("faiss PCA + IndexIVFPQ") and sidecar["params"]["refine_factor"] >= 1
    exact_scores = {(q, n.key): n.score for q, r in enumerate(
        api.neighbors(keys=keys, k=10, cache_path=path, method="exact").results) for n in r.neighbors}
    both = [(n.score, exact_scores[q, n.key]) for q, r in enumerate(result.results) for n in r.neighbors
            if (q, n.key) in exact_scores]
    assert both and max(abs(a - b) for a, b in both) < 2e-3  # re-ranked cosines, float16 precision


def test_appended_rows_are_added_to_the_index_not_rebuilt(tmp_path, monkeypatch):
    path = tmp_path / "embeddings.h5"
    write(path, [], "a", 1000, 0, tmp_path)
    api.neighbors(keys=["a/00000.png"], k=5, cache_path=path, method="index")  # builds it
    index_file, sidecar_file = search.index_paths(path)
    assert json.loads(sidecar_file.read_text())["count"] == 1000
    x = write(path, kept(path), "b", 60, 1, tmp_path)  # a sharded cache appends the new rows
    assert cache.load_columns(path).keys[-60:] == [f"b/{i:05d}.png" for i in range(60)]

    def no_rebuild(*a, **k):
        raise AssertionError("rebuilt instead of grown")

    monkeypatch.setattr(index_module, "build_index", no_rebuild)
    exact, approx, _ = exact_and_index(path, ["b/00000.png", "b/00030.png", "a/00001.png"])
    assert np.mean([len(e & a) / 10 for e, a in zip(exact, approx)]) >= 0.9
    sidecar = json.loads(sidecar_file.read_text())
    assert sidecar["count"] == 1060 and sidecar["params"]["added"] == 60
    assert faiss.read_index(str(index_file)).ntotal == 1060
    assert hashlib.sha256(index_file.read_bytes()).hexdigest() == sidecar["index_sha256"]
    # a query equal to an appended vector finds that row first
    found = api.neighbors(vectors=x[:1], fingerprint=FP, k=1, cache_path=path, method="index")
    assert found.results[0].neighbors[0].key == "b/00000.png"
    monkeypatch.undo()
    # rows removed: the index is rebuilt (its row numbers no longer match)
    monkeypatch.setenv("EMBEDFLOW_SHARD_MIN_ROWS", "1")
    write(path, kept(path, drop={"a/00003.png"}), "c", 1, 2, tmp_path)
    built = []
    real = index_module.build_index
    monkeypatch.setattr(index_module, "build_index", lambda *a, **k: built.append(1) or real(*a, **k))
    api.neighbors(keys=["a/00000.png"], k=5, cache_path=path, method="index")
    assert built == [1] and json.loads(sidecar_file.read_text())["count"] == 1060
