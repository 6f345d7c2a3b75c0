"""Identifying files: their stat (the cheap change detector) and the sha256 of their bytes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from pathlib import Path

from ..errors import BadImage
from .remote import RemotePath


def file_stat(path: Path) -> tuple[int, int, int, int]:
    """(size, mtime_ns, ctime_ns, inode) of a regular file: unchanged values mean unchanged bytes in practice
    (git relies on the same). Raises BadImage when the file cannot be used. For an object (RemotePath): the
    change detector its listing gave (see data.remote.detector)."""
    if isinstance(path, RemotePath):
        return path.stat
    with _read_errors(path):
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device named .jpg would block or never end
            raise BadImage("not a regular file")
        return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def hash_file(path: Path) -> str:
    """sha256 of the file's (or object's) bytes, hex. Raises BadImage when it cannot be read (file_stat's
    checks first)."""
    if isinstance(path, RemotePath):
        return hashlib.sha256(path.read()).hexdigest()
    file_stat(path)
    with _read_errors(path), open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@contextlib.contextmanager
def _read_errors(path: Path):
    """OS errors while reading a file become BadImage with a reason a user understands."""
    try:
        yield
    except FileNotFoundError:
        if os.path.islink(path):
            raise BadImage(f"broken symbolic link (to {os.readlink(path)})") from None
        raise BadImage("file vanished while the run was going") from None
    except PermissionError:
        raise BadImage("permission denied") from None
    except IsADirectoryError:
        raise BadImage("is a folder, not an image") from None
    except OSError as e:
        raise BadImage(f"cannot read: {e.strerror or e}") from None


def read_bytes(path: Path) -> bytes:
    """All the bytes of a regular file (or an object). Raises BadImage when it cannot be read (file_stat's
    checks first)."""
    if isinstance(path, RemotePath):
        return path.read()
    file_stat(path)
    with _read_errors(path), open(path, "rb") as f:
        return f.read()
