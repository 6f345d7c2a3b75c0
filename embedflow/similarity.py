"""Nearest neighbours over cached vectors: exact cosine search in bounded memory, an approximate
faiss index kept beside the cache for large caches, and near-duplicate groups.

Exact search L2-normalises vectors (float32) and multiplies the queries with the cache a block of rows at a
time, keeping a running top-k: memory is O(queries x block), never N x N, whatever the cache size.
Rows whose content hash equals the query's are the query itself (or byte-identical copies of it): they are
left out by default, and score exactly 1.0 when kept (identical bytes, identical vector: no float rounding).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from . import cache
from .errors import CacheError, UsageError
from .progress import SILENT, Reporter

SEARCH_ROWS = 8192  # cache rows per matrix product
QUERY_ROWS = 1024  # queries per matrix product: a product block is at most 1024 x 8192 float32 = 32 MB
INDEX_MIN_ROWS = 50_000  # method="auto" uses the approximate index from this many vectors on
INDEX_SUFFIX = ".faiss"
INDEX_FORMAT = "embedflow.index"
INDEX_VERSION = 1
NPROBE_FRACTION = 1 / 16  # inverted lists scanned per query (see benchmarks/neighbors.py)
MAX_NLIST = 4096
DUPLICATE_NPROBE = 8  # lists probed per row when `duplicates` scans a large cache with the index


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, float32 (all-zero rows stay zero and match nothing)."""
    x = np.array(vectors, dtype=np.float32, copy=True, ndmin=2)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def cosine_to(unit_queries: np.ndarray, block: np.ndarray) -> np.ndarray:
    """Cosine similarities (Q, B) of normalised queries to raw block rows, without copying the block."""
    block = np.asarray(block, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", block, block))
    sims = unit_queries @ block.T
    np.divide(sims, norms, out=sims, where=norms > 0)
    sims[:, norms == 0] = 0.0
    return sims


def hash_codes(row_hashes: list[str], query_hashes: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes for the cache rows' hashes and the queries' (-1: content not in the cache)."""
    code_of: dict[str, int] = {}
    rows = np.fromiter((code_of.setdefault(h, len(code_of)) for h in row_hashes), np.int64, len(row_hashes))
    queries = np.array([code_of.get(h, -1) if h else -1 for h in query_hashes], dtype=np.int64)
    return rows, queries


@dataclass
class Hits:
    """Top-k per query: cache row numbers and cosine similarities, best first (row -1: fewer than k rows)."""

    rows: np.ndarray  # (Q, k) int64
    scores: np.ndarray  # (Q, k) float32

    def for_query(self, i: int) -> list[tuple[int, float]]:
        return [(int(r), float(s)) for r, s in zip(self.rows[i], self.scores[i]) if r >= 0]


def _best_k(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per line, the k highest scores (ties: lower row first), sorted, -inf candidates made row -1."""
    if scores.shape[1] > k:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        rows, scores = np.take_along_axis(rows, part, 1), np.take_along_axis(scores, part, 1)
    order = np.lexsort((rows, -scores), axis=1)
    rows, scores = np.take_along_axis(rows, order, 1), np.take_along_axis(scores, order, 1)
    rows = np.where(np.isneginf(scores), -1, rows)
    return rows, scores


def exact_search(queries: np.ndarray, blocks: Iterable[tuple[int, np.ndarray]], k: int,
                 row_codes: np.ndarray | None = None, query_codes: np.ndarray | None = None,
                 include_self: bool = False) -> Hits:
    """Exact cosine top-k of `queries` (already normalised, at most QUERY_ROWS of them is best) over
    blocks of (first row, vectors). With codes, rows of the query's own content are dropped, or scored 1.0
    when include_self."""
    n_q = len(queries)
    best_rows = np.full((n_q, 0), -1, np.int64)
    best_scores = np.full((n_q, 0), -np.inf, np.float32)
    for start, block in blocks:
        sims = cosine_to(queries, block)
        if query_codes is not None:
            same = query_codes[:, None] == row_codes[None, start:start + len(block)]
            sims[same] = 1.0 if include_self else -np.inf
        block_rows = np.broadcast_to(np.arange(start, start + len(block)), sims.shape)
        top_rows, top_scores = _best_k(block_rows, sims, k)
        best_rows, best_scores = _best_k(np.hstack([best_rows, top_rows]), np.hstack([best_scores, top_scores]), k)
    return Hits(best_rows, best_scores)


def search_exact_chunked(queries: np.ndarray, blocks_factory, k: int, row_codes=None, query_codes=None,
                         include_self: bool = False) -> Hits:
    """exact_search over query chunks of QUERY_ROWS (blocks_factory() gives a fresh block iterator)."""
    parts = []
    for s in range(0, max(len(queries), 1), QUERY_ROWS):
        qc = None if query_codes is None else query_codes[s:s + QUERY_ROWS]
        parts.append(exact_search(queries[s:s + QUERY_ROWS], blocks_factory(), k, row_codes, qc, include_self))
    return Hits(np.vstack([p.rows for p in parts]), np.vstack([p.scores for p in parts]))


def memory_blocks(vectors: np.ndarray, rows: int = SEARCH_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, len(vectors), rows):
        yield start, vectors[start:start + rows]


# --- the approximate index ------------------------------------------------------------------------


def faiss_module():
    try:
        import faiss
    except ImportError:
        raise UsageError("the approximate index needs faiss-cpu: pip install 'embedflow[index]' (or use --exact)") from None
    return faiss


def index_paths(cache_path: str | os.PathLike) -> tuple[Path, Path]:
    """The index file and its JSON sidecar, beside the cache."""
    index = Path(str(cache_path) + INDEX_SUFFIX)
    return index, Path(str(index) + ".json")


def cache_digest(columns: cache.CacheColumns) -> str:
    """Determines the index content: the fingerprint (how vectors are made) and the row order of contents."""
    h = hashlib.sha256(columns.fingerprint["id"].encode())
    for content in columns.hashes:
        h.update(content.encode())
    return h.hexdigest()


def _sidecar_for(columns: cache.CacheColumns) -> dict:
    return {"format": INDEX_FORMAT, "version": INDEX_VERSION, "fingerprint_id": columns.fingerprint["id"],
            "cache_digest": cache_digest(columns), "count": len(columns), "dim": columns.dim,
            "cache_updated_utc": columns.updated_utc}


def index_is_current(cache_path, columns: cache.CacheColumns) -> bool:
    index_file, sidecar_file = index_paths(cache_path)
    try:
        recorded = json.loads(sidecar_file.read_text())
    except (OSError, ValueError):
        return False
    want = _sidecar_for(columns)
    same = all(recorded.get(k) == want[k] for k in ("format", "version", "fingerprint_id", "cache_digest", "count"))
    return same and index_file.is_file() and index_file.stat().st_size == recorded.get("index_bytes")


def build_index(cache_path, columns: cache.CacheColumns, reporter: Reporter = SILENT):
    """An IVF-flat inner-product index of the normalised cache vectors, written beside the cache
    (index file first, then its sidecar, each by atomic rename)."""
    faiss = faiss_module()
    n, dim = len(columns), columns.dim
    nlist = int(min(MAX_NLIST, max(1, round(np.sqrt(n)))))
    reporter.info(f"building the approximate index of {n} vectors ({nlist} lists); it is kept beside the cache")
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter, index.cp.min_points_per_centroid = 10, 1  # 10 k-means rounds; small caches do not warn
    index.train(_training_sample(cache_path, n, nlist))
    reporter.start("indexing", n)
    try:
        for start, block in cache.iter_vector_blocks(cache_path, SEARCH_ROWS):
            index.add(normalise(block))
            reporter.advance(len(block))
    finally:
        reporter.finish()
    index_file, sidecar_file = index_paths(cache_path)
    tmp = index_file.with_name(f".{index_file.name}.tmp{os.getpid()}")
    try:
        faiss.write_index(index, str(tmp))
        os.replace(tmp, index_file)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CacheError(f"could not write the index {index_file}: {e.strerror or e}") from None
    sidecar = {**_sidecar_for(columns), "kind": "faiss IndexIVFFlat inner product", "nlist": nlist,
               "index_bytes": index_file.stat().st_size}
    tmp_side = sidecar_file.with_name(f".{sidecar_file.name}.tmp{os.getpid()}")
    tmp_side.write_text(json.dumps(sidecar, indent=2))
    os.replace(tmp_side, sidecar_file)
    return index


def _training_sample(cache_path, n: int, nlist: int) -> np.ndarray:
    """Evenly spread rows for k-means (64 per list, at least 10,000)."""
    size = min(n, max(64 * nlist, 10_000))
    rows = np.unique(np.linspace(0, n - 1, size).astype(np.int64))
    return normalise(cache.read_vectors(cache_path, rows))


def load_index(cache_path, columns: cache.CacheColumns, reporter: Reporter = SILENT):
    """The cache's index, rebuilt first when the cache changed since it was built (or it is missing)."""
    faiss = faiss_module()
    if not index_is_current(cache_path, columns):
        return build_index(cache_path, columns, reporter)
    index = faiss.read_index(str(index_paths(cache_path)[0]))
    if index.ntotal != len(columns) or index.d != columns.dim:
        return build_index(cache_path, columns, reporter)
    return index


def index_search(index, queries: np.ndarray, k: int, row_codes=None, query_codes=None,
                 include_self: bool = False) -> Hits:
    """Approximate top-k. Rows of the query's own content are dropped, or (include_self) all of them are
    put in at exactly 1.0 whether the index found them or not."""
    index.nprobe = max(1, int(np.ceil(index.nlist * NPROBE_FRACTION)))
    own_rows: dict[int, np.ndarray] = {}
    if query_codes is not None and (query_codes >= 0).any():
        mine = np.flatnonzero(np.isin(row_codes, query_codes[query_codes >= 0]))
        for code in np.unique(row_codes[mine]):
            own_rows[int(code)] = mine[row_codes[mine] == code]
    n_own = max((len(r) for r in own_rows.values()), default=0)
    fetch = min(index.ntotal, k + n_own)
    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), fetch)
    rows = rows.astype(np.int64)
    scores = np.where(rows < 0, -np.inf, scores).astype(np.float32)
    extra_rows = np.full((len(queries), n_own), -1, np.int64)
    extra_scores = np.full((len(queries), n_own), -np.inf, np.float32)
    for i, code in enumerate(query_codes if query_codes is not None else []):
        if int(code) not in own_rows:
            continue
        scores[i, np.isin(rows[i], own_rows[int(code)])] = -np.inf
        if include_self:
            own = own_rows[int(code)]
            extra_rows[i, :len(own)], extra_scores[i, :len(own)] = own, 1.0
    top_rows, top_scores = _best_k(np.hstack([rows, extra_rows]), np.hstack([scores, extra_scores]), k)
    return Hits(top_rows, top_scores)


# --- near duplicates ----------------------------------------------------------------------------


class UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, a: int) -> int:
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:
            self.parent[a], a = root, self.parent[a]
        return int(root)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def similar_pairs_exact(cache_path, threshold: float, block_rows: int = SEARCH_ROWS) -> Iterator[tuple[int, int, float]]:
    """Every pair (i < j) of rows with cosine >= threshold, block against block (upper triangle only)."""
    for start_a, block_a in cache.iter_vector_blocks(cache_path, block_rows):
        a = normalise(block_a)
        for start_b, block_b in cache.iter_vector_blocks(cache_path, block_rows):
            if start_b < start_a:
                continue
            sims = cosine_to(a, block_b)
            ia, ib = np.nonzero(sims >= threshold)
            i, j = ia + start_a, ib + start_b
            keep = i < j
            yield from zip(i[keep].tolist(), j[keep].tolist(), sims[ia[keep], ib[keep]].tolist())


def similar_pairs_index(index, cache_path, threshold: float, k: int = 32) -> Iterator[tuple[int, int, float]]:
    """Pairs with cosine >= threshold among each row's k approximate neighbours (for very large caches).
    Near-duplicates sit next to each other, so a few probed lists find them: DUPLICATE_NPROBE keeps an
    all-rows scan affordable."""
    index.nprobe = min(index.nlist, DUPLICATE_NPROBE)
    for start, block in cache.iter_vector_blocks(cache_path, QUERY_ROWS):
        scores, rows = index.search(normalise(block), min(k, index.ntotal))
        for qi in range(len(block)):
            for r, s in zip(rows[qi], scores[qi]):
                if r >= 0 and r != start + qi and s >= threshold:
                    yield min(start + qi, int(r)), max(start + qi, int(r)), float(s)


def group_duplicates(n: int, hashes: list[str], pairs: Iterable[tuple[int, int, float]]):
    """Connected components of rows linked by a similar pair or by identical content (score 1.0).
    Returns {root: [(i, j, score), ...]} for every component of two or more rows."""
    uf = UnionFind(n)
    edges: dict[tuple[int, int], float] = {}
    first_with: dict[str, int] = {}
    for i, h in enumerate(hashes):
        j = first_with.setdefault(h, i)
        if j != i:
            uf.union(j, i)
            edges[(j, i)] = 1.0
    same_content = {pair for pair in edges}
    for i, j, s in pairs:
        uf.union(i, j)
        if (i, j) not in same_content:
            edges[(i, j)] = 1.0 if hashes[i] == hashes[j] else min(float(s), 1.0)
    groups: dict[int, list[tuple[int, int, float]]] = {}
    for (i, j), s in edges.items():
        groups.setdefault(uf.find(i), []).append((i, j, s))
    return groups


# --- what the API calls ---------------------------------------------------------------------------


def choose_method(method: str, n: int, reporter: Reporter = SILENT) -> str:
    """'exact' or 'index' for a cache of n vectors ('auto': the index from INDEX_MIN_ROWS vectors on)."""
    if method not in ("auto", "exact", "index"):
        raise UsageError(f"unknown search method '{method}': choose auto, exact or index")
    if method != "auto":
        return method
    if n < INDEX_MIN_ROWS:
        return "exact"
    try:
        faiss_module()
    except UsageError:
        reporter.warn(f"{n} vectors: an approximate index would be faster, but faiss-cpu is not installed; "
                      "searching exactly")
        return "exact"
    return "index"


def search(cache_path, columns: cache.CacheColumns, queries: np.ndarray, query_hashes: list[str | None], k: int,
           include_self: bool = False, method: str = "auto", reporter: Reporter = SILENT) -> tuple[Hits, str]:
    """Top-k cache rows for raw query vectors; returns (hits, the method used)."""
    method = choose_method(method, len(columns), reporter)
    unit = normalise(queries)
    row_codes, query_codes = hash_codes(columns.hashes, query_hashes)
    if method == "index":
        index = load_index(cache_path, columns, reporter)
        return index_search(index, unit, k, row_codes, query_codes, include_self), method
    hits = search_exact_chunked(unit, lambda: cache.iter_vector_blocks(cache_path, SEARCH_ROWS), k,
                                row_codes, query_codes, include_self)
    return hits, method


def find_duplicates(cache_path, columns: cache.CacheColumns, threshold: float, method: str = "auto",
                    reporter: Reporter = SILENT) -> tuple[list[dict], str]:
    """Groups of near-identical images (cosine >= threshold, or identical bytes), biggest first."""
    method = choose_method(method, len(columns), reporter)
    if method == "index":
        pairs = similar_pairs_index(load_index(cache_path, columns, reporter), cache_path, threshold)
    else:
        pairs = similar_pairs_exact(cache_path, threshold)
    groups = []
    for edges in group_duplicates(len(columns), columns.hashes, pairs).values():
        rows = sorted({i for i, _, _ in edges} | {j for _, j, _ in edges})
        labels = sorted({columns.classes[columns.labels[r]] for r in rows})
        edges.sort(key=lambda e: (-e[2], e[0], e[1]))
        groups.append({
            "size": len(rows), "cross_class": len(labels) > 1, "labels": labels,
            "min_score": round(min(s for _, _, s in edges), 6),
            "members": [{"key": columns.keys[r], "label": columns.classes[columns.labels[r]],
                         "hash": columns.hashes[r]} for r in rows],
            "pairs": [{"a": columns.keys[i], "b": columns.keys[j], "score": round(s, 6)} for i, j, s in edges[:50]],
        })
    groups.sort(key=lambda g: (not g["cross_class"], -g["size"], g["members"][0]["key"]))
    return groups, method
