"""The report files beside a model (report.json, confusion.json and confusion.png), each written beside
its target and renamed into place."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import OutputError
from ..fsio import disk_error, fit_name
from .plots import plot_confusion


def write_report(report: dict, out_dir: Path, title: str, prefix: str = "") -> list[Path]:
    """report.json, confusion.json and confusion.png in out_dir (names prefixed with prefix)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{prefix}report.json", out_dir / f"{prefix}confusion.json", out_dir / f"{prefix}confusion.png"]
    write_text_atomically(paths[0], json.dumps(report, indent=2))
    write_text_atomically(paths[1], json.dumps({"classes": report["classes"], "matrix": report["confusion_matrix"],
                                                "rows": "true class", "columns": "predicted class"}, indent=2))
    write_atomically(paths[2], lambda tmp: plot_confusion(
        np.array(report["confusion_matrix"]), report["classes"], tmp,
        f"{title}  (accuracy {report['accuracy']:.1%}, n={report['n']})"))
    return paths


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
