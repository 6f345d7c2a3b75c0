"""Atomic file writing for every report file: written beside its target and renamed into place."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Call write(tmp) with a temporary path beside `path`, then rename it over `path`: a reader (or a crash)
    sees the old file or the new one, never half of one. The temporary file is removed on any error."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")  # the suffix stays: savers read it
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomically(path: Path, text: str) -> Path:
    """UTF-8 text written beside `path` and renamed into place (see write_atomically)."""
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
