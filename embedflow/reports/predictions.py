"""Per-image predictions (issue #17): what a classifier said about each labelled image, the most confused
class pairs, `predictions.csv` and a top-losses contact sheet. Pure functions of (keys, true labels,
probabilities); fit, evaluate and finetune call them on their validation / evaluation images."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .write import write_text_atomically

TOP_K = 3  # labels kept per image
EPS = 1e-12  # probability floor of the loss: -ln(1e-12) = 27.6 at most
SHEET_ROWS = 4  # rows of the top-losses sheet
SHEET_COLUMNS = 6
CSV_COLUMNS = ("key", "true", "predicted", "p_true", "loss", "correct", "top")


@dataclass
class ImagePrediction:
    """One labelled image: `key` (its path relative to the data root), `true` and `predicted` class
    names, `p_true` the probability (float, [0, 1]) given to the true class, `loss` its cross-entropy
    -ln(max(p_true, 1e-12)) in nats, `top` the TOP_K most probable [{"label", "probability"}], best first."""

    key: str
    true: str
    predicted: str
    p_true: float
    loss: float
    top: list[dict]

    @property
    def correct(self) -> bool:
        return self.true == self.predicted

    def to_dict(self) -> dict:
        return {"key": self.key, "true": self.true, "predicted": self.predicted, "p_true": round(self.p_true, 6),
                "loss": round(self.loss, 6), "correct": self.correct,
                "top": [{"label": t["label"], "probability": round(t["probability"], 6)} for t in self.top]}


@dataclass
class ConfusedPair:
    """`count` images of class `true` predicted as `predicted` (true != predicted), and their `share` of
    the images of class `true` (float, [0, 1])."""

    true: str
    predicted: str
    count: int
    share: float

    def to_dict(self) -> dict:
        return {"true": self.true, "predicted": self.predicted, "count": self.count, "share": round(self.share, 6)}


def image_predictions(keys: list[str], y_true, proba, classes: list[str], top_k: int = TOP_K) -> list[ImagePrediction]:
    """One ImagePrediction per row, in the given order. y_true: (N,) int indices into classes; proba:
    (N, len(classes)) probabilities (rows sum to 1). Ties are broken towards the lower class index."""
    y_true, proba = np.asarray(y_true, dtype=np.int64), np.asarray(proba, dtype=np.float64)
    k = min(top_k, len(classes))
    out = []
    for key, t, p in zip(keys, y_true, proba):
        order = np.argsort(-p, kind="stable")[:k]
        p_true = float(p[t])
        out.append(ImagePrediction(str(key), classes[t], classes[int(order[0])], p_true,
                                   -math.log(max(p_true, EPS)),
                                   [{"label": classes[int(i)], "probability": float(p[i])} for i in order]))
    return out


def confused_pairs(predictions: list[ImagePrediction], classes: list[str]) -> list[ConfusedPair]:
    """The (true, predicted) pairs with true != predicted, most frequent first (ties: class order)."""
    index = {c: i for i, c in enumerate(classes)}
    counts: dict[tuple[str, str], int] = {}
    per_class: dict[str, int] = {}
    for p in predictions:
        per_class[p.true] = per_class.get(p.true, 0) + 1
        if not p.correct:
            counts[(p.true, p.predicted)] = counts.get((p.true, p.predicted), 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], index[kv[0][0]], index[kv[0][1]]))
    return [ConfusedPair(t, q, n, n / per_class[t]) for (t, q), n in ranked]


def top_losses(predictions: list[ImagePrediction], n: int | None = None) -> list[ImagePrediction]:
    """The predictions by decreasing loss (ties: the given order), the first n (all with None)."""
    order = sorted(range(len(predictions)), key=lambda i: -predictions[i].loss)
    return [predictions[i] for i in order[:n]]


def add_to_report(report: dict, keys: list[str], y_true, proba, classes: list[str]) -> list[ImagePrediction]:
    """Put "predictions" (list of ImagePrediction.to_dict(), in the given order) and "confused_pairs"
    (list of ConfusedPair.to_dict()) into a classification report; returns the ImagePredictions."""
    preds = image_predictions(keys, y_true, proba, classes)
    report["predictions"] = [p.to_dict() for p in preds]
    report["confused_pairs"] = [c.to_dict() for c in confused_pairs(preds, classes)]
    return preds


def from_report(report: dict) -> list[ImagePrediction]:
    """The ImagePredictions of a report dict written by add_to_report (e.g. read back from report.json)."""
    return [ImagePrediction(p["key"], p["true"], p["predicted"], float(p["p_true"]), float(p["loss"]),
                            [dict(t) for t in p["top"]]) for p in report.get("predictions") or []]


def predictions_csv(predictions: list[ImagePrediction]) -> str:
    """CSV text, one row per image in the given order: key, true, predicted, p_true, loss, correct (0/1),
    top ("label:probability" joined by ";", best first)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for p in predictions:
        writer.writerow([p.key, p.true, p.predicted, f"{p.p_true:.6f}", f"{p.loss:.6f}", int(p.correct),
                         ";".join(f"{t['label']}:{t['probability']:.6f}" for t in p.top)])
    return buf.getvalue()


def top_losses_sheet(predictions: list[ImagePrediction], root: str | Path | None, out: str | Path,
                     title: str = "", n: int = SHEET_ROWS * SHEET_COLUMNS) -> Path:
    """Contact sheet PNG of the n highest-loss images (found as root/key; a grey cell when missing), each
    captioned "true -> predicted" and "p(true) loss", wrong predictions outlined in red, SHEET_COLUMNS a row."""
    from .sheets import render

    worst = top_losses(predictions, n)
    base = Path(root).resolve() if root else None

    def cell(p: ImagePrediction) -> dict:
        image = None
        if base is not None:
            path = (base / p.key).resolve()
            image = path if path.is_relative_to(base) and path != base else None
        return {"image": image, "title": f"{p.true} -> {p.predicted}",
                "detail": f"p={p.p_true:.2f} loss={p.loss:.2f} {Path(p.key).name}", "mismatch": not p.correct}

    cells = [cell(p) for p in worst]
    rows = []
    for i in range(0, len(cells), SHEET_COLUMNS):
        first, rest = cells[i], cells[i + 1:i + SHEET_COLUMNS]
        rows.append({**first, "neighbors": rest})
    return render(rows, out, title or f"top {len(worst)} losses (true -> predicted, p(true), loss)")


def write_predictions(report: dict, out_dir: Path, root: str | Path | None, title: str, prefix: str = "") -> list[Path]:
    """predictions.csv and top-losses.png (prefixed) in out_dir from a report holding "predictions";
    nothing when it holds none. Each written beside its target and renamed into place."""
    preds = from_report(report)
    if not preds:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, sheet_path = out_dir / f"{prefix}predictions.csv", out_dir / f"{prefix}top-losses.png"
    write_text_atomically(csv_path, predictions_csv(preds))
    top_losses_sheet(preds, root, sheet_path, f"{title}: top losses (true -> predicted, p(true), loss)")
    return [csv_path, sheet_path]


__all__ = ["ConfusedPair", "ImagePrediction", "add_to_report", "confused_pairs", "from_report", "image_predictions",
           "predictions_csv", "top_losses", "top_losses_sheet", "write_predictions"]
