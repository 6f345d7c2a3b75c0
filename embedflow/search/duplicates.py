"""Near-duplicate groups: pairs of rows above a cosine threshold (exact blocks or the index), joined
into groups; identical files always belong together."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .. import cache
from ..errors import UsageError
from ..progress import SILENT, Reporter
from .exact import QUERY_ROWS, SEARCH_ROWS, CacheRow, cosine_to, normalise
from .index import ip_search, ivf_of, load_index
from .query import choose_method

DUPLICATE_NPROBE = 8  # lists probed per row when `duplicates` scans a large cache with the index
MAX_LISTED_PAIRS = 50  # pairs per group in the JSON (the result object keeps them all)


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


def similar_pairs_exact(cache_path, threshold: float, block_rows: int = SEARCH_ROWS,
                        snapshot: tuple = ()) -> Iterator[tuple[int, int, float]]:
    """Every pair (i < j) of rows with cosine >= threshold, block against block (upper triangle only).
    `snapshot`: the file the row names came from (see cache.iter_vector_blocks)."""
    for start_a, block_a in cache.iter_vector_blocks(cache_path, block_rows, snapshot):
        a = normalise(block_a)
        for start_b, block_b in cache.iter_vector_blocks(cache_path, block_rows, snapshot):
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
    ivf = ivf_of(index)
    ivf.nprobe = min(ivf.nlist, DUPLICATE_NPROBE)
    for start, block in cache.iter_vector_blocks(cache_path, QUERY_ROWS):
        scores, rows = ip_search(index, normalise(block), min(k, index.ntotal))
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


@dataclass
class Member(CacheRow):
    """One image of a group: its cache row, key, label and sha256."""

    hash: str

    def to_dict(self) -> dict:
        return {"key": self.key, "label": self.label, "hash": self.hash}


@dataclass
class Pair:
    """Two rows of a group linked by cosine >= threshold (1.0 for identical bytes)."""

    row_a: int
    row_b: int
    a: str
    b: str
    score: float

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "score": round(self.score, 6)}


@dataclass
class DuplicateGroup:
    """A connected component of near-duplicates: members by row, every linking pair (best first) and the
    distinct labels (sorted). cross_class: the members carry different labels (likely label noise)."""

    members: list[Member]
    pairs: list[Pair]
    labels: list[str]

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def cross_class(self) -> bool:
        return len(self.labels) > 1

    @property
    def min_score(self) -> float:
        return min(p.score for p in self.pairs)

    def to_dict(self) -> dict:
        """The JSON of one group; `pairs` lists the 50 best pairs (all are kept in `self.pairs`)."""
        return {"size": self.size, "cross_class": self.cross_class, "labels": self.labels,
                "min_score": round(self.min_score, 6), "members": [m.to_dict() for m in self.members],
                "pairs": [p.to_dict() for p in self.pairs[:MAX_LISTED_PAIRS]]}


@dataclass
class DuplicatesResult:
    """What `duplicates` found: groups with mixed labels first, then bigger groups first.
    `to_dict()` is the CLI's JSON; item access (`result["groups"]`) reads that dict."""

    cache: Path
    threshold: float
    method: str
    groups: list[DuplicateGroup] = field(default_factory=list)

    @property
    def n_groups(self) -> int:
        return len(self.groups)

    @property
    def n_cross_class(self) -> int:
        return sum(g.cross_class for g in self.groups)

    @property
    def n_images_in_groups(self) -> int:
        return sum(g.size for g in self.groups)

    def to_dict(self) -> dict:
        return {"cache": str(self.cache), "threshold": self.threshold, "method": self.method,
                "groups": [g.to_dict() for g in self.groups], "n_groups": self.n_groups,
                "n_cross_class": self.n_cross_class, "n_images_in_groups": self.n_images_in_groups}

    def __getitem__(self, name: str):
        return self.to_dict()[name]


def check_threshold(threshold: float) -> None:
    if not 0.0 < threshold <= 1.0:
        raise UsageError(f"--threshold must be in (0, 1], got {threshold}")


def find_duplicates(cache_path, columns: cache.CacheColumns, threshold: float, method: str = "auto",
                    reporter: Reporter = SILENT) -> DuplicatesResult:
    """Groups of near-identical images (cosine >= threshold in (0, 1], or identical bytes).
    UsageError for a threshold outside (0, 1]."""
    check_threshold(threshold)
    method = choose_method(method, len(columns), reporter)
    if method == "index":
        pairs = similar_pairs_index(load_index(cache_path, columns, reporter), cache_path, threshold)
    else:
        pairs = similar_pairs_exact(cache_path, threshold, snapshot=columns.snapshot)
    label_of = columns.label_names()  # None for an unlabelled image
    groups = []
    for edges in group_duplicates(len(columns), columns.hashes, pairs).values():
        rows = sorted({i for i, _, _ in edges} | {j for _, j, _ in edges})
        edges.sort(key=lambda e: (-e[2], e[0], e[1]))
        groups.append(DuplicateGroup(
            members=[Member(r, columns.keys[r], label_of[r], columns.hashes[r]) for r in rows],
            pairs=[Pair(i, j, columns.keys[i], columns.keys[j], s) for i, j, s in edges],
            labels=sorted({label_of[r] for r in rows} - {None})))
    groups.sort(key=lambda g: (not g.cross_class, -g.size, g.members[0].key))
    columns.check_unchanged()  # vectors were read in later opens: they must come from the same file
    return DuplicatesResult(Path(cache_path), threshold, method, groups)
