"""Nearest neighbours over cached vectors: exact cosine search in bounded memory (exact), an approximate
faiss index kept beside the cache for large caches (index), choosing between them (query), and
near-duplicate groups (duplicates)."""

from .duplicates import find_duplicates, group_duplicates
from .exact import Hits, exact_search, hash_codes, memory_blocks, normalise, search_exact_chunked
from .index import INDEX_MIN_ROWS, build_index, index_is_current, index_paths, load_index
from .query import choose_method, search

__all__ = ["Hits", "INDEX_MIN_ROWS", "build_index", "choose_method", "exact_search", "find_duplicates",
           "group_duplicates", "hash_codes", "index_is_current", "index_paths", "load_index", "memory_blocks", "normalise",
           "search", "search_exact_chunked"]
