"""Exact cosine search in bounded memory.

Exact search L2-normalises vectors (float32) and multiplies the queries with the cache a block of rows at a
time, keeping a running top-k: memory is O(queries x block), never N x N, whatever the cache size.
Rows whose content hash equals the query's are the query itself (or byte-identical copies of it): they are
left out by default, and score exactly 1.0 when kept (identical bytes, identical vector: no float rounding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

SEARCH_ROWS = 8192  # cache rows per matrix product
QUERY_ROWS = 1024  # queries per matrix product: a product block is at most 1024 x 8192 float32 = 32 MB


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
class CacheRow:
    """One row of a cache, named: its row number, key (path under the root) and label."""

    row: int
    key: str
    label: str | None  # None for an unlabelled image


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
