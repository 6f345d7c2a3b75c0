"""One writer at a time: `<cache>.lock` is held with flock (released by the OS if the process dies) and
holds the writer's pid (the lock itself is fsio.WriterLock, shared with model folders).

Two situations do not stop a run here, and are left to the caller:
* the cache folder cannot be written (read-only mount, no permission): `writable` is False; a run that
  then needs to write must refuse (`require_writable`) before doing any work, one that changes nothing
  goes on;
* the filesystem has no locks (flock fails with ENOLCK: NFS without lockd): `locked` is False and the
  caller's reporter is warned once that concurrent writers are then the user's to avoid.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CacheError, CacheLocked
from ..fsio import NO_LOCKS, READ_ONLY, WriterLock, lock_holder, sibling

__all__ = ["CacheLock", "is_locked", "lock_path", "NO_LOCKS", "READ_ONLY"]


def lock_path(cache_path: Path) -> Path:
    """`<cache>.lock` (shortened with a hash when the cache's name is near the filesystem's limit)."""
    return sibling(cache_path, ".lock")


class CacheLock(WriterLock):
    """Exclusive writer lock on a cache (flock on `<cache>.lock`, holding the writer's pid).

    After entering: `locked` (the flock is held), `writable` (the cache folder can be written).
    Raises CacheLocked (exit 4) when another process holds it, CacheError on any other I/O error."""

    def __init__(self, cache_path: Path, reporter=None):
        self.cache_path = Path(cache_path)
        super().__init__(lock_path(self.cache_path), f"cache {self.cache_path}", CacheLocked, CacheError, reporter)

    def require_writable(self, why: str) -> None:
        """Raise CacheError when the cache must be written (`why`) but its folder cannot be."""
        if not self.writable or not os.access(self.cache_path.parent, os.W_OK):
            raise CacheError(f"cannot write cache {self.cache_path}: its folder {self.cache_path.parent} is read-only "
                             f"and {why}; use --cache to write another file")


def is_locked(cache_path: Path) -> int | None:
    """Pid of the process writing this cache (-1 when it is unknown), or None."""
    return lock_holder(lock_path(Path(cache_path)))
