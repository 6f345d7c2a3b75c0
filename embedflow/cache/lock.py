"""One writer at a time: `<cache>.lock` is held with flock (released by the OS if the process dies) and
holds the writer's pid."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from ..errors import CacheLocked


class CacheLock:
    """Exclusive writer lock on a cache (flock on `<cache>.lock`, holding the writer's pid)."""

    def __init__(self, cache_path: Path):
        self.path = Path(str(cache_path) + ".lock")
        self._fd: int | None = None

    def __enter__(self) -> "CacheLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _holder_pid(fd)
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise CacheLocked(
                    f"cache {str(self.path)[:-5]} is in use by process {holder}; wait for it to finish"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock; the file stays (removing it would race)
            self._fd = None


def _holder_pid(fd: int) -> str:
    """The pid written in a lock file by its holder. A holder that has just taken the lock writes its pid
    right after: wait a moment for it, so a stale pid or an empty file is not reported."""
    time.sleep(0.05)
    for _ in range(20):
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.01)
    return "?"


def is_locked(cache_path: Path) -> int | None:
    """Pid of the process writing this cache, or None."""
    import fcntl

    lock = Path(str(cache_path) + ".lock")
    if not lock.exists():
        return None
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        text = _holder_pid(fd)
        return int(text) if text.isdigit() else -1
    finally:
        os.close(fd)
    return None
