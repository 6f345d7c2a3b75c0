"""The report files beside a model: report.json, confusion.json and confusion.png."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .plots import plot_confusion


def write_report(report: dict, out_dir: Path, title: str, prefix: str = "") -> list[Path]:
    """report.json, confusion.json and confusion.png in out_dir (names prefixed with prefix)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{prefix}report.json", out_dir / f"{prefix}confusion.json", out_dir / f"{prefix}confusion.png"]
    paths[0].write_text(json.dumps(report, indent=2))
    paths[1].write_text(json.dumps({"classes": report["classes"], "matrix": report["confusion_matrix"],
                                    "rows": "true class", "columns": "predicted class"}, indent=2))
    plot_confusion(np.array(report["confusion_matrix"]), report["classes"], paths[2],
                   f"{title}  (accuracy {report['accuracy']:.1%}, n={report['n']})")
    return paths
