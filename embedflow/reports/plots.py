"""Figures, drawn with matplotlib's object API (Figure, never pyplot or matplotlib.use): a notebook's
backend and state are left untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    from matplotlib.figure import Figure


    n = len(classes)
    size = max(4.0, 0.6 * n + 2.5)
    fig = Figure(figsize=(size, size), dpi=110)
    ax = fig.subplots()
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
