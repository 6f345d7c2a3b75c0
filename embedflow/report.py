"""Classification metrics and the report files (JSON, confusion matrix JSON and PNG)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def classification_report(y_true, y_pred, classes: list[str]) -> dict:
    """Accuracy, macro precision/recall/F1, a per-class table and the confusion matrix.

    y_true / y_pred are indices into classes.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = np.arange(len(classes))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    present = s > 0  # macro averages over the classes that occur in the evaluated data
    return {
        "n": int(len(y_true)),
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else float("nan"),
        "macro_precision": float(p[present].mean()) if present.any() else 0.0,
        "macro_recall": float(r[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f[present].mean()) if present.any() else 0.0,
        "per_class": [
            {"class": c, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(classes)
        ],
        "classes": list(classes),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


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


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    size = max(4.0, 0.6 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size, size), dpi=110)
    row_sums = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, row_sums, out=np.zeros_like(cm, dtype=float), where=row_sums > 0)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def format_report(report: dict) -> str:
    """A plain-text rendering for the terminal."""
    lines = [
        f"accuracy {report['accuracy']:.2%} on {report['n']} images   "
        f"macro P {report['macro_precision']:.3f}  R {report['macro_recall']:.3f}  F1 {report['macro_f1']:.3f}",
        f"{'class':<20} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}",
    ]
    for row in report["per_class"]:
        lines.append(f"{row['class'][:20]:<20} {row['precision']:>9.3f} {row['recall']:>7.3f} "
                     f"{row['f1']:>6.3f} {row['support']:>8d}")
    return "\n".join(lines)
