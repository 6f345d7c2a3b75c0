"""Typed results of neighbors, duplicates, info and embed_folder: what they keep in memory, and that
their to_dict() (the CLI's --json) keeps the JSON structure scripts rely on."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from embedflow import api, cache
from embedflow.search import DuplicatesResult, NeighborsResult

from ..conftest import SIZE, make_dataset

CLASSES = ["a", "b"]
FP = {"backbone": "synthetic", "id": "00000000000000aa"}


def a_cache(path, vectors, labels=None):
    n, dim = vectors.shape
    labels = np.arange(n) % 2 if labels is None else np.asarray(labels)
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]
    src = path.with_name(path.name + ".npz")
    np.savez(src, hashes=np.array(hashes, dtype="S64"), vectors=vectors.astype(np.float32))
    rows = [cache.Row(f"{CLASSES[labels[i]]}/k{i:03d}.png", hashes[i], int(labels[i]), src, i) for i in range(n)]
    cache.write(path, rows, CLASSES, FP, str(path.parent), [], dim)
    return path


def test_neighbors_keeps_its_hits_and_query_vectors(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(0, 1, (30, 8)).astype(np.float32)
    path = a_cache(tmp_path / "c.h5", vectors)
    result = api.neighbors(keys=["a/k000.png"], vectors=vectors[5] * 2, fingerprint=FP, k=4, cache_path=path,
                           reporter=None)
    assert isinstance(result, NeighborsResult) and result.rows.shape == result.scores.shape == (2, 4)
    np.testing.assert_array_equal(result.vectors, np.stack([vectors[0], vectors[5] * 2]))
    by_key, by_vector = result.results
    assert (by_key.kind, by_key.own_key, by_vector.kind, by_vector.hash) == ("key", "a/k000.png", "vector", None)
    assert [n.row for n in by_vector.neighbors] == result.rows[1].tolist()
    assert by_vector.neighbors[0].key == "b/k005.png"  # the vector's own direction, at 1.0
    assert by_vector.neighbors[0].score == result.scores[1, 0] and abs(result.scores[1, 0] - 1) < 1e-6
    held = cache.load(path)  # rows are sorted by key
    own = held.keys.index("a/k000.png")
    assert own not in result.rows[0]  # the query's own row is left out
    unit = held.embeddings / np.linalg.norm(held.embeddings, axis=1, keepdims=True)
    np.testing.assert_allclose(result.scores[0], unit[result.rows[0]] @ unit[own], atol=1e-5)
    assert [n.key for n in by_key.neighbors] == [held.keys[r] for r in result.rows[0]]


def test_neighbors_json_keeps_its_structure(cli, tmp_path):
    data = make_dataset(tmp_path / "data", per_class=4)
    cli("embed", data, "--quiet")
    out = json.loads(cli("neighbors", "--key", "apples/apples_000.jpg", data / "limes", "--k", "2", "--json").stdout)
    assert list(out) == ["cache", "method", "k", "results", "failed", "sheet"]
    assert (out["cache"], out["method"], out["k"], out["failed"], out["sheet"]) == ("cache/embeddings.h5", "exact", 2,
                                                                                   [], None)
    assert len(out["results"]) == 5 and all(list(r) == ["query", "hash", "neighbors"] for r in out["results"])
    assert out["results"][-1]["query"] == "apples/apples_000.jpg" and len(out["results"][0]["hash"]) == 64
    hit = out["results"][0]["neighbors"][0]
    assert list(hit) == ["key", "label", "score"] and isinstance(hit["score"], float)
    assert round(hit["score"], 6) == hit["score"]


def test_duplicates_keeps_every_pair_and_lists_fifty(tmp_path):
    rng = np.random.default_rng(1)
    vectors = rng.normal(0, 1, (20, 16)).astype(np.float32)
    base = vectors[0].copy()
    vectors[:12] = base + rng.normal(0, 1e-3, (12, 16))  # 12 near-copies: 66 linked pairs
    path = a_cache(tmp_path / "c.h5", vectors, labels=[0] * 11 + [1] * 9)
    result = api.duplicates(path, threshold=0.99, reporter=None)
    assert isinstance(result, DuplicatesResult) and result.n_groups == 1 and result.n_cross_class == 1
    group = result.groups[0]
    assert group.size == 12 and len(group.pairs) == 66 and group.labels == ["a", "b"]
    assert [m.row for m in group.members] == list(range(12))
    assert group.min_score == min(p.score for p in group.pairs) >= 0.99
    out = result.to_dict()
    assert list(out) == ["cache", "threshold", "method", "groups", "n_groups", "n_cross_class", "n_images_in_groups"]
    listed = out["groups"][0]
    assert list(listed) == ["size", "cross_class", "labels", "min_score", "members", "pairs"]
    assert len(listed["pairs"]) == 50 and list(listed["pairs"][0]) == ["a", "b", "score"]
    assert list(listed["members"][0]) == ["key", "label", "hash"] and out["n_images_in_groups"] == 12
    assert result["n_groups"] == 1  # item access reads the dict


def test_info_and_embed_results_keep_their_json(cli, tmp_path, weights_file):
    data = make_dataset(tmp_path / "data", per_class=3)
    (data / "plums" / "bad.jpg").write_bytes(b"")
    summary = api.embed_folder(data, "cache/embeddings.h5", image_size=SIZE, weights=str(weights_file), reporter=None)
    assert (summary.embedded, summary.failed) == (9, [("plums/bad.jpg", "empty file (0 bytes)")])
    embedded = json.loads(json.dumps(summary.to_dict()))
    assert list(embedded) == ["cache_path", "total", "embedded", "kept", "reused", "resumed", "removed", "failed",
                              "classes", "layout", "unlabelled", "split_counts", "dropped", "skipped", "labels_csv",
                              "seconds", "conversion_seconds", "runtime", "fingerprint_id", "precision"]
    assert (embedded["layout"], embedded["unlabelled"], embedded["dropped"]) == ("class-folders", 0, [])
    held = api.info()
    assert held.per_class == {"apples": 3, "limes": 3, "plums": 3} and held.count == 9 and held.dim == 1280
    assert held.failed_files == [{"key": "plums/bad.jpg", "reason": "empty file (0 bytes)"}]
    out = json.loads(cli("info", "--json").stdout)
    assert list(out) == ["path", "fingerprint", "root", "classes", "count", "dim", "failed", "created_utc",
                         "updated_utc", "embedflow_version", "schema_version", "per_class", "failed_files", "size_bytes",
                         "pending_journal_chunks", "unlabelled", "split_counts", "problems"]
    assert out["unlabelled"] == 0 and out["problems"] == []  # a damaged cache: exit 4 and only path + problems
    assert out == json.loads(json.dumps(held.to_dict()))
