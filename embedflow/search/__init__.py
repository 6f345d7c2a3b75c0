"""Nearest neighbours over cached vectors: exact cosine search in bounded memory (exact), an approximate
faiss index kept beside the cache for large caches (index), choosing between them (query), the
`neighbors` query with its typed result (neighbors) and near-duplicate groups (duplicates)."""

from .duplicates import (DuplicateGroup, DuplicatesResult, Member, Pair, check_threshold, find_duplicates,
                         group_duplicates)
from .exact import CacheRow, Hits, exact_search, hash_codes, memory_blocks, normalise, search_exact_chunked
from .index import INDEX_MIN_ROWS, build_index, index_is_current, index_paths, load_index
from .neighbors import (Neighbor, NeighborsResult, QueryResult, check_query, find_neighbors, image_queries,
                        key_queries, searchable, vector_queries)
from .query import choose_method, search

__all__ = ["CacheRow", "DuplicateGroup", "DuplicatesResult", "Hits", "INDEX_MIN_ROWS", "Member", "Neighbor", "NeighborsResult",
           "Pair", "QueryResult", "build_index", "check_query", "check_threshold", "choose_method", "exact_search",
           "find_duplicates", "find_neighbors", "group_duplicates", "hash_codes", "image_queries", "index_is_current",
           "index_paths", "key_queries", "load_index", "memory_blocks", "normalise", "search", "search_exact_chunked",
           "searchable", "vector_queries"]
