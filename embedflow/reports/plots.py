"""Figures, drawn with matplotlib's object API (Figure, never pyplot or matplotlib.use): a notebook's
backend and state are left untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np


MAX_FIGURE_INCHES = 12.0  # at 110 dpi: at most 1,320 px a side, whatever the number of classes
LABELLED_TICKS = 60  # above this many classes the axes carry no names (report.html shows them on hover)


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    """The row-normalised confusion matrix as a PNG of at most MAX_FIGURE_INCHES x 110 dpi a side (it grew
    with the classes: 7,007 px for 102); counts in the cells up to 30 classes, class names up to 60."""
    from matplotlib.figure import Figure

    n = len(classes)
    size = min(MAX_FIGURE_INCHES, max(4.0, 0.6 * n + 2.5))
    fig = Figure(figsize=(size, size), dpi=110)
    ax = fig.subplots()
    row_sums = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, row_sums, out=np.zeros_like(cm, dtype=float), where=row_sums > 0)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if n <= LABELLED_TICKS:
        fontsize = 10 if n <= 15 else max(5, int(400 / n))
        ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=fontsize)
        ax.set_yticks(range(n), classes, fontsize=fontsize)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
        title += f"\n{n} classes in the order of confusion.json (report.html names each cell on hover)"
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
