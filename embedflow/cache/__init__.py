"""The embedding cache: the HDF5 store (store), the journal of an unfinished run (journal) and the
writer lock (lock). See store's docstring for the schema."""

from ..errors import CacheError, CacheLocked
from .journal import Journal
from .lock import CacheLock, is_locked
from .store import (BLOCK_ROWS, FORMAT, SCHEMA_VERSION, CacheColumns, CacheData, Row, iter_vector_blocks, load,
                    load_columns, read_meta, read_vectors, vectors_for_hashes, write)

__all__ = ["BLOCK_ROWS", "CacheError", "CacheLocked", "FORMAT", "SCHEMA_VERSION", "CacheColumns", "CacheData", "CacheLock", "Journal", "Row",
           "is_locked", "iter_vector_blocks", "load", "load_columns", "read_meta", "read_vectors",
           "vectors_for_hashes", "write"]
