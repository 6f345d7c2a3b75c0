"""Nearest neighbours, near-duplicates, the faiss index beside the cache, and the kNN head."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from embedflow import api, cache, search as neighbors
from embedflow.search import exact as exact_search
from embedflow.errors import DatasetError, FingerprintMismatch, UsageError
from embedflow.heads import KNNHead, make_head

from .conftest import make_dataset, make_image

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


def test_cli_neighbors_of_images_keys_and_a_sheet(cli, tmp_path):
    data = make_dataset(tmp_path / "data", per_class=6)
    cli("embed", data, "--quiet")
    query = data / "limes" / "limes_000.jpg"
    out = json.loads(cli("neighbors", query, "--k", "4", "--json").stdout)
    [res] = out["results"]
    keys = [n["key"] for n in res["neighbors"]]
    assert len(keys) == 4 and "limes/limes_000.jpg" not in keys  # read from the cache, not its own neighbour
    assert [n["label"] for n in res["neighbors"]].count("limes") >= 3
    assert all(a["score"] >= b["score"] for a, b in zip(res["neighbors"], res["neighbors"][1:]))
    by_key = json.loads(cli("neighbors", "--key", "limes/limes_000.jpg", "--k", "4", "--json").stdout)
    assert by_key["results"][0]["neighbors"] == res["neighbors"]
    new = make_image(tmp_path / "new" / "plum.png", (90, 50, 160), seed=999)  # not in the cache: embedded now
    text = cli("neighbors", new, "--k", "3", "--sheet", "sheet.png").stdout
    assert text.splitlines()[0] == str(new) and text.count("plums") >= 2
    assert Path("sheet.png").read_bytes()[:4] == b"\x89PNG"
    r = cli("neighbors", "--key", "limes/nope.jpg", expect=2)
    assert "no image with key 'limes/nope.jpg'" in r.stderr and "\n" not in r.stderr.strip()


def test_cli_duplicates_flags_a_copy_filed_under_another_class(cli, tmp_path):
    data = make_dataset(tmp_path / "data", per_class=5)
    shutil.copy(data / "apples" / "apples_001.png", data / "plums" / "copied.png")
    cli("embed", data, "--quiet")
    out = json.loads(cli("duplicates", "--json").stdout)
    flagged = [g for g in out["groups"] if g["cross_class"]]
    assert len(flagged) == 1 and flagged[0]["min_score"] == 1.0
    assert {m["key"] for m in flagged[0]["members"]} == {"apples/apples_001.png", "plums/copied.png"}
    assert "CROSS-CLASS group of 2" in cli("duplicates").stdout


def test_cli_index_follows_embed(cli, tmp_path):
    pytest.importorskip("faiss")
    data = make_dataset(tmp_path / "data", per_class=5)
    cli("embed", data, "--quiet")
    cli("neighbors", "--key", "apples/apples_000.jpg", "--index", "--quiet")
    sidecar = Path("cache/embeddings.h5.faiss.json")
    assert json.loads(sidecar.read_text())["count"] == 15
    copy = data / "limes" / "twin.png"
    shutil.copy(data / "apples" / "apples_001.png", copy)
    cli("embed", data, "--quiet")
    out = json.loads(cli("neighbors", "--key", "apples/apples_001.png", "--index", "--k", "1", "--include-self",
                         "--json").stdout)
    assert json.loads(sidecar.read_text())["count"] == 16
    assert out["method"] == "index" and out["results"][0]["neighbors"][0]["score"] == 1.0


def test_knn_head_is_a_cosine_distance_weighted_estimator():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (20, 8)) + 4 * np.eye(8)[0], rng.normal(0, 1, (20, 8)) + 4 * np.eye(8)[1]])
    y = np.repeat([0, 1], 20)
    head = make_head("knn", k=5, space="raw").fit(X, y)
    assert isinstance(head, KNNHead) and head.get_params() == {"k": 5, "space": "raw"}
    assert (head.predict(X * 10) == y).mean() > 0.9  # cosine: scale does not matter
    lda = make_head("knn", k=5, space="lda").fit(X, y)
    assert lda.space_ == "lda" and lda.projection_ is not None and (lda.predict(X) == y).mean() > 0.9
    assert lda.knn_.effective_metric_ == "euclidean"  # two classes: one discriminant axis
    proba = head.predict_proba(X[:3])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert np.array_equal(proba[0], [1.0, 0.0]) or proba[0, 0] > 0.5
    assert KNNHead(k=100).fit(X[:4], y[:4]).knn_.n_neighbors == 4  # capped at the training set
    with pytest.raises(UsageError):
        make_head("knn", class_weight="balanced")


def test_cli_fit_knn_head(cli, tmp_path):
    data = make_dataset(tmp_path / "data", per_class=10)
    cli("embed", data, "--quiet")
    out = json.loads(cli("fit", "--head", "knn", "--k", "3", "--json").stdout)
    manifest = json.loads((Path(out["model_dir"]) / "manifest.json").read_text())
    assert out["model_dir"] == str(Path("models/knn")) and manifest["head"] == "knn"
    assert manifest["hyperparameters"]["k"] == 3 and manifest["head_file"] == "head.joblib"
    assert out["report"]["accuracy"] >= 0.8
    pred = json.loads(cli("predict", "models/knn", data / "plums" / "plums_005.JPEG", "--json").stdout)
    assert pred["predictions"][0]["top"][0]["label"] == "plums"


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

    monkeypatch.setattr(neighbors, "search", search_while_replaced)
    with pytest.raises(CacheError, match="replaced by another run while it was being read"):
        api.neighbors(keys=["a/k0000.png"], cache_path=path)
    monkeypatch.setattr(neighbors, "search", real_search)
    assert api.neighbors(keys=["a/k0000.png"], cache_path=path, k=3)["results"][0]["neighbors"]
