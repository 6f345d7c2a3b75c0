"""The embedding cache: the HDF5 store (store), the journal of an unfinished run (journal) and the
writer lock (lock); `open_cache` gives a snapshot as an object (view). See store's docstring for the schema."""

from ..errors import CacheError, CacheLocked
from .info import CacheInfo, cache_info
from .journal import Journal
from .lock import CacheLock, is_locked
from .view import Cache, open_cache
from .store import (BLOCK_ROWS, FORMAT, SCHEMA_VERSION, SHARDED_SCHEMA, CacheColumns, CacheData, Row, check_shards, check_space, estimated_bytes,
                    iter_vector_blocks, label_names, labels_csv, load, load_columns, read_meta, read_vectors, vectors_for_hashes)
from .shards import estimated_write_bytes, write_cache as write

__all__ = ["BLOCK_ROWS", "Cache", "check_shards", "SHARDED_SCHEMA", "CacheError", "CacheInfo", "CacheLocked", "FORMAT", "SCHEMA_VERSION", "CacheColumns",
           "CacheData", "CacheLock", "Journal", "Row", "cache_info", "check_space", "estimated_bytes", "estimated_write_bytes", "is_locked",
           "iter_vector_blocks", "label_names", "labels_csv", "load", "load_columns", "open_cache", "read_meta", "read_vectors",
           "vectors_for_hashes", "write"]
