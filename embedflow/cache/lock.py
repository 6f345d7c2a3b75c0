"""One writer at a time: `<cache>.lock` is held with flock (released by the OS if the process dies) and
holds the writer's pid.

Two situations do not stop a run here, and are left to the caller:
* the cache folder cannot be written (read-only mount, no permission): `writable` is False; a run that
  then needs to write must refuse (`require_writable`) before doing any work, one that changes nothing
  goes on;
* the filesystem has no locks (flock fails with ENOLCK: NFS without lockd): `locked` is False and the
  caller's reporter is warned once that concurrent writers are then the user's to avoid.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from ..errors import CacheError, CacheLocked

READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP)


class CacheLock:
    """Exclusive writer lock on a cache (flock on `<cache>.lock`, holding the writer's pid).

    After entering: `locked` (the flock is held), `writable` (the cache folder can be written).
    Raises CacheLocked (exit 4) when another process holds it, CacheError on any other I/O error."""

    def __init__(self, cache_path: Path, reporter=None):
        self.cache_path = Path(cache_path)
        self.path = Path(str(cache_path) + ".lock")
        self.reporter = reporter
        self.locked = False
        self.writable = True
        self._fd: int | None = None

    def __enter__(self) -> "CacheLock":
        import fcntl

        fd = self._open()
        if fd is None:
            return self
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in NO_LOCKS:
                os.close(fd)
                if self.reporter is not None:
                    self.reporter.warn(f"cannot lock {self.path} ({e.strerror}): this filesystem has no file locks; "
                                       "make sure no other run writes this cache at the same time")
                return self
            holder = _holder_pid(fd)
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise CacheLocked(f"cache {self.cache_path} is in use by process {holder}; wait for it to finish") from None
            raise CacheError(f"cannot lock {self.path}: {e.strerror or e}") from None
        self._fd, self.locked = fd, True
        if self.writable:
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, str(os.getpid()).encode(), 0)
            except OSError:
                pass  # a full disk: the lock holds without the pid (a second writer is told "process ?")
        return self

    def _open(self) -> int | None:
        """The lock file's descriptor: read-write, or read-only in a folder that cannot be written (an
        existing lock file still shows a writer), or None when there is none to open."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if e.errno not in READ_ONLY:
                raise CacheError(f"cannot create the lock file {self.path}: {e.strerror or e}") from None
        self.writable = False
        try:
            return os.open(self.path, os.O_RDONLY)
        except OSError:
            return None

    def require_writable(self, why: str) -> None:
        """Raise CacheError when the cache must be written (`why`) but its folder cannot be."""
        if not self.writable or not os.access(self.cache_path.parent, os.W_OK):
            raise CacheError(f"cannot write cache {self.cache_path}: its folder {self.cache_path.parent} is read-only "
                             f"and {why}; use --cache to write another file")

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock; the file stays (removing it would race)
            self._fd = None
        self.locked = False


def _holder_pid(fd: int) -> str:
    """The pid written in a lock file by its holder. A holder that has just taken the lock writes its pid
    right after: wait a moment for it, so a stale pid or an empty file is not reported."""
    time.sleep(0.05)
    for _ in range(20):
        try:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        except OSError:
            return "?"
        if text:
            return text
        time.sleep(0.01)
    return "?"


def is_locked(cache_path: Path) -> int | None:
    """Pid of the process writing this cache (-1 when it is unknown), or None."""
    import fcntl

    lock = Path(str(cache_path) + ".lock")
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in NO_LOCKS:
            return None
        text = _holder_pid(fd)
        return int(text) if text.isdigit() else -1
    finally:
        os.close(fd)
    return None
