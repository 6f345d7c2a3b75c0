"""The `neighbors` query: image files, cached keys and raw vectors against one cache, as a typed result.

Image queries whose content (sha256) is in the cache are read from it; the others are embedded with the
cache's own backbone. Vector queries must come from that backbone (their fingerprint, when given, is
checked)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import backbones, cache
from ..data import BadImage, discover_inputs, hash_file, name_key
from ..embedding import embed_files
from ..errors import DatasetError, FingerprintMismatch, UsageError
from ..progress import SILENT, Reporter
from .exact import CacheRow
from .query import choose_method, search


@dataclass
class Neighbor(CacheRow):
    """One hit: the cache row, its key and label, and the cosine similarity to the query (float, 1.0 at most)."""

    score: float

    def to_dict(self) -> dict:
        return {"key": self.key, "label": self.label, "score": round(self.score, 6)}


@dataclass
class QueryResult:
    """The hits of one query, best first. kind: "image" (a file), "key" (a cached image) or "vector";
    hash: the query's sha256 (None for a vector); own_key: the cache key holding the query's content, if any."""

    query: str
    hash: str | None
    kind: str
    neighbors: list[Neighbor]
    own_key: str | None = None

    def to_dict(self) -> dict:
        return {"query": self.query, "hash": self.hash, "neighbors": [n.to_dict() for n in self.neighbors]}


@dataclass
class NeighborsResult:
    """What `neighbors` found. `rows` (Q, k) int64 (-1 where a query has fewer than k hits) and `scores`
    (Q, k) float32 are the raw hits, `vectors` (Q, D) float32 the query vectors, in the order of `results`.
    `to_dict()` is the CLI's JSON; item access (`result["results"]`) reads that dict."""

    cache: Path
    method: str
    k: int
    results: list[QueryResult]
    failed: list[dict] = field(default_factory=list)  # [{"path", "reason"}]: query files that could not be read
    rows: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    sheet: Path | None = None

    def to_dict(self) -> dict:
        return {"cache": str(self.cache), "method": self.method, "k": self.k,
                "results": [r.to_dict() for r in self.results], "failed": [dict(f) for f in self.failed],
                "sheet": None if self.sheet is None else str(self.sheet)}

    def __getitem__(self, name: str):
        return self.to_dict()[name]


@dataclass
class _Queries:
    names: list[str] = field(default_factory=list)
    hashes: list[str | None] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    parts: list[np.ndarray] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)

    def add(self, kind: str, names: list[str], hashes: list, vectors: np.ndarray) -> None:
        self.names += names
        self.hashes += hashes
        self.kinds += [kind] * len(names)
        self.parts.append(vectors)


def check_query(k: int, images, keys, vectors) -> None:
    """UsageError unless k >= 1 and there is at least one query."""
    if k < 1:
        raise UsageError("--k must be at least 1")
    if not images and not keys and vectors is None:
        raise UsageError("give query images, --key KEY, or vectors")


def searchable(cache_path) -> cache.CacheColumns:
    """The cache's columns; DatasetError when it holds no vector."""
    columns = cache.load_columns(cache_path)
    if len(columns) == 0:
        raise DatasetError(f"cache {cache_path} holds no vectors: embed a folder with images into it first")
    return columns


def image_queries(images, columns: cache.CacheColumns, cache_path, runtime: str, reporter: Reporter):
    """(names, hashes, vectors (N, D) float32, failures) for image files/folders: cached content is read
    from the cache, the rest is embedded with the cache's own backbone."""
    refs, hashes, failures = [], [], []
    for ref in discover_inputs(images):
        try:
            hashes.append(hash_file(ref.path))
            refs.append(ref)
        except BadImage as e:
            failures.append({"path": str(ref.path), "reason": str(e)})
    fp = columns.fingerprint
    known = cache.vectors_for_hashes(cache_path, set(hashes), fp)
    if all(h in known for h in hashes):
        vectors = np.stack([known[h] for h in hashes]) if hashes else np.zeros((0, columns.dim), np.float32)
        return [str(r.path) for r in refs], hashes, vectors, failures
    hash_of = {id(r): h for r, h in zip(refs, hashes)}
    ok, vectors, failed = embed_files(refs, backbones.spec_from_fingerprint(fp), backbones.upgrade(fp), runtime=runtime,
                                      reporter=reporter, known_from=lambda wanted: known)
    failures += [{"path": str(ref.path), "reason": reason} for ref, reason in failed]
    return [str(r.path) for r in ok], [hash_of[id(r)] for r in ok], vectors, failures


def key_queries(keys, columns: cache.CacheColumns, cache_path):
    """(keys, hashes, vectors) of cached images named by key; UsageError (with the closest key) for an unknown one.
    Keys are compared as the cache stores them (data.name_key: NFC), so a key pasted from a macOS (NFD)
    listing finds its image."""
    row_of = {k: i for i, k in enumerate(columns.keys)}
    keys = [name_key(k) if isinstance(k, str) else k for k in keys]
    for key in keys:
        if key not in row_of:
            close = difflib.get_close_matches(key, columns.keys, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(f"no image with key '{key}' in cache {cache_path}{hint}")
    rows = [row_of[k] for k in keys]
    return list(keys), [columns.hashes[r] for r in rows], cache.read_vectors(cache_path, rows)


def vector_queries(vectors, fingerprint, columns: cache.CacheColumns, cache_path):
    """Raw (D,) or (N, D) vectors as queries. fingerprint (a dict or an id) must be the cache's backbone's;
    FingerprintMismatch otherwise or when D differs, UsageError for NaN/inf."""
    vectors = np.asarray(vectors, dtype=np.float32)
    vectors = vectors[None, :] if vectors.ndim == 1 else vectors
    if fingerprint is not None and not backbones.same_backbone(fingerprint, columns.fingerprint):
        have_id = fingerprint if isinstance(fingerprint, str) else fingerprint.get("id")
        want = columns.fingerprint
        try:
            made_with = backbones.describe(want)
        except KeyError:
            made_with = f"backbone id {want['id']}"
        raise FingerprintMismatch(f"the query vectors come from backbone id {have_id}, but cache {cache_path} "
                                  f"holds vectors of {made_with}: embed the queries with the cache's backbone")
    if vectors.ndim != 2 or vectors.shape[1] != columns.dim:
        raise FingerprintMismatch(f"query vectors have shape {vectors.shape}, cache {cache_path} holds "
                                  f"{columns.dim}-d vectors: they come from another backbone")
    if not np.isfinite(vectors).all():
        raise UsageError("query vectors hold NaN or infinite values")
    return [f"vector[{i}]" for i in range(len(vectors))], [None] * len(vectors), vectors


def find_neighbors(cache_path: Path, columns: cache.CacheColumns, images=None, keys=None, vectors=None,
                   fingerprint=None, k: int = 5, include_self: bool = False, method: str = "auto",
                   runtime: str = "auto", reporter: Reporter = SILENT) -> NeighborsResult:
    """The k most similar rows of the cache (cosine) for each query; see NeighborsResult."""
    q = _Queries()
    if images:
        names, hashes, found, q.failed = image_queries(images, columns, cache_path, runtime, reporter)
        q.add("image", names, hashes, found)
    if keys:
        q.add("key", *key_queries(keys, columns, cache_path))
    if vectors is not None:
        q.add("vector", *vector_queries(vectors, fingerprint, columns, cache_path))
    queries = np.vstack(q.parts) if q.parts else np.zeros((0, columns.dim), np.float32)
    if not len(queries):
        method_used = choose_method(method, len(columns), reporter)
        rows, scores = np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    else:
        hits, method_used = search(cache_path, columns, queries, q.hashes, k, include_self, method, reporter)
        rows, scores = hits.rows, hits.scores
    columns.check_unchanged()  # vectors were read in later opens: they must come from the same file
    key_of_content = dict(zip(columns.hashes, columns.keys))
    results = []
    label_of = columns.label_names()  # None for an unlabelled image
    for name, h, kind, hit_rows, hit_scores in zip(q.names, q.hashes, q.kinds, rows, scores):
        hits = [Neighbor(int(r), columns.keys[r], label_of[r], float(s))
                for r, s in zip(hit_rows, hit_scores) if r >= 0]
        own = name if kind == "key" else key_of_content.get(h) if h else None
        results.append(QueryResult(name, h, kind, hits, own))
    return NeighborsResult(Path(cache_path), method_used, k, results, q.failed, rows, scores, queries)
