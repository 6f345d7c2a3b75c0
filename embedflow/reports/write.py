"""Atomic file writing for every report file: written beside its target and renamed into place
(write_report, the report files themselves, is in reports/files.py)."""

from __future__ import annotations

import contextlib
import contextvars
import os
from pathlib import Path
from typing import Callable

from ..errors import OutputError
from ..fsio import disk_error, fit_name


# Inside report_set(): (temporary, target) pairs written but not yet renamed into place.
_pending: contextvars.ContextVar[list | None] = contextvars.ContextVar("embedflow_report_set", default=None)


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Call write(tmp) with a temporary path beside `path`, then rename it over `path`: a reader (or a crash)
    sees the old file or the new one, never half of one. Inside report_set() the rename waits until every
    file of the set is written. The temporary file is removed on any error; a full or failing disk, or a
    read-only folder, is OutputError (exit 5)."""
    path = Path(path)
    tmp = path.with_name(fit_name(path.stem, f".tmp{os.getpid()}{path.suffix}", "."))  # the suffix stays: savers read it
    pending = _pending.get()
    done = False
    try:
        with _disk_errors(path):
            write(tmp)
            if pending is not None:
                pending.append((tmp, path))
                done = True
            else:
                os.replace(tmp, path)
    finally:
        if not done:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def _disk_errors(path: Path):
    """A disk OSError (fsio.disk_error: full or failing disk, read-only folder) while writing `path` becomes
    one OutputError line (exit 5), the same for write_atomically and report_set; other errors pass."""
    try:
        yield
    except OSError as e:
        if not disk_error(e):
            raise
        raise OutputError(f"cannot write {path}: {e.strerror or e}; the previous file (if any) is unchanged") from None


@contextlib.contextmanager
def report_set():
    """Write a set of report files as one: every write_atomically inside the block writes its temporary
    file only; when the block ends without an error they are renamed into place, one after the other (all
    written, so only a crash between two renames can mix old and new files). On any error every temporary
    file is removed and every old file is left as it was. Nested sets join the outer one."""
    if _pending.get() is not None:
        yield
        return
    pending: list[tuple[Path, Path]] = []
    token = _pending.set(pending)
    try:
        yield
        for tmp, path in pending:
            with _disk_errors(path):
                os.replace(tmp, path)
    finally:
        _pending.reset(token)
        for tmp, _ in pending:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


def write_text_atomically(path: Path, text: str) -> Path:
    """UTF-8 text written beside `path` and renamed into place (see write_atomically)."""
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
