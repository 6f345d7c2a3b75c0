"""Classification metrics, and their plain-text rendering for the terminal."""

from __future__ import annotations

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
    rej = report.get("rejection")
    if rej:
        lines.append(f"unknown-input rule: {rej['n_rejected']} of {rej['n']} rejected as unknown (coverage "
                     f"{rej['coverage']:.1%}); accuracy {rej['accuracy_all']:.2%} on all, "
                     f"{rej['accuracy_accepted']:.2%} on the accepted")
    pairs = report.get("confused_pairs") or []
    if pairs:
        lines.append("most confused (true -> predicted): " + ", ".join(
            f"{c['true']} -> {c['predicted']} {c['count']}" for c in pairs[:3]))
    return "\n".join(lines)
