"""The report files beside a model or an evaluation (report.json, confusion.json, confusion.png, and with
per-image predictions predictions.csv and top-losses.png), each written beside its target and renamed into
place."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .plots import plot_confusion
from .predictions import write_predictions
from .write import write_atomically, write_text_atomically


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
    return paths + write_predictions(report, out_dir, root, title, prefix)
