"""Choosing exact search or the index, and running a query batch against a cache."""

from __future__ import annotations

import numpy as np

from .. import cache
from ..errors import UsageError
from ..progress import SILENT, Reporter
from . import exact
from .exact import Hits, hash_codes, normalise
from .index import INDEX_MIN_ROWS, faiss_module, index_search, load_index


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
    hits = exact.search_exact_chunked(unit, lambda: cache.iter_vector_blocks(cache_path, exact.SEARCH_ROWS, columns.snapshot), k,
                                row_codes, query_codes, include_self)
    return hits, method
