"""Atomic file writing for every report file: written beside its target and renamed into place
(write_report, the report files themselves, is in reports/files.py)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable

from ..errors import OutputError
from ..fsio import disk_error, fit_name


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Call write(tmp) with a temporary path beside `path`, then rename it over `path`: a reader (or a crash)
    sees the old file or the new one, never half of one. The temporary file is removed on any error; a full
    or failing disk, or a read-only folder, is OutputError (exit 5)."""
    path = Path(path)
    tmp = path.with_name(fit_name(path.stem, f".tmp{os.getpid()}{path.suffix}", "."))  # the suffix stays: savers read it
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        if not disk_error(e):
            raise
        raise OutputError(f"cannot write {path}: {e.strerror or e}; the previous file (if any) is unchanged") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path


def write_text_atomically(path: Path, text: str) -> Path:
    """UTF-8 text written beside `path` and renamed into place (see write_atomically)."""
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
