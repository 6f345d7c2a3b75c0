"""The report files beside a model (report.json, confusion.json and confusion.png), each written beside
its target and renamed into place."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from .plots import plot_confusion


def write_report(report: dict, out_dir: Path, title: str, prefix: str = "", root: str | Path | None = None) -> list[Path]:
    """report.json, confusion.json and confusion.png in out_dir (names prefixed with prefix); when the report
    holds per-image "predictions" (reports.predictions.add_to_report), also predictions.csv and
    top-losses.png (the images found under `root`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{prefix}report.json", out_dir / f"{prefix}confusion.json", out_dir / f"{prefix}confusion.png"]
    write_text_atomically(paths[0], json.dumps(report, indent=2))
    write_text_atomically(paths[1], json.dumps({"classes": report["classes"], "matrix": report["confusion_matrix"],
                                                "rows": "true class", "columns": "predicted class"}, indent=2))
    write_atomically(paths[2], lambda tmp: plot_confusion(
        np.array(report["confusion_matrix"]), report["classes"], tmp,
        f"{title}  (accuracy {report['accuracy']:.1%}, n={report['n']})"))
    from .predictions import write_predictions

    return paths + write_predictions(report, out_dir, root, title, prefix)


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
