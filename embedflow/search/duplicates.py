"""Near-duplicate groups: pairs of rows above a cosine threshold (exact blocks or the index), joined
into groups; identical files always belong together."""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from .. import cache
from ..progress import SILENT, Reporter
from .exact import QUERY_ROWS, SEARCH_ROWS, cosine_to, normalise
from .index import load_index
from .query import choose_method

DUPLICATE_NPROBE = 8  # lists probed per row when `duplicates` scans a large cache with the index


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
