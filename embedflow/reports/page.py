"""The data of the HTML report (reports.html renders it): per-image predictions, thumbnails, a 2-D map of
the embeddings and the audit's findings, every part bounded in size whatever the data set.

`report_page(...)` takes what fit, evaluate, finetune and `embedflow report` have in memory (a
classification report, per-image probabilities, optionally the vectors) and returns the page dict;
`write_html(path, page)` renders it and writes it beside its target, renamed into place.

Bounds: MAX_MISCLASSIFIED worst mistakes, SAMPLES sample predictions and AUDIT_TOP findings per list get a
thumbnail (THUMB px, JPEG); the embedding map shows at most MAP_POINTS vectors (PCA to 50 dimensions, then
t-SNE), the marked ones always included. The page of a 1,449-image set is about 1 MB.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np

from .html import render_html
from .write import write_text_atomically

THUMB = 128  # thumbnail side in pixels (the longer side), JPEG
THUMB_QUALITY = 70
MAX_MISCLASSIFIED = 48
SAMPLES = 16
AUDIT_TOP = 12  # label issues, outliers and near-duplicate groups shown with thumbnails
MAP_POINTS = 1500
TSNE_ITERATIONS = 500  # sklearn's default is 1000: half the time, the same clusters at this size
TOP_PAIRS = 12
MAP_ISSUES = 50  # the most suspicious label issues marked on the map
ISSUE_SCORE = 0.5  # a label issue is shown (and marked on the map) from this score on
OUTLIER_SCORE = 3.0  # an outlier is shown from this robust z on
DUP_THRESHOLD = 0.92  # cosine of near-duplicates (as `duplicates` and `audit`)
AUDIT_MAX_IMAGES = 20000  # the 5-fold audit runs up to this many vectors; above, the report leaves it out


def thumbnail_uri(path: str | os.PathLike | None, size: int = THUMB) -> str | None:
    """The image at `path` as a `data:image/jpeg;base64,...` URI at most `size` px on its longer side
    (EXIF orientation applied, transparency on white); None when there is no such readable image."""
    if path is None:
        return None
    from PIL import Image, ImageOps

    from .sheets import openable

    try:
        with Image.open(openable(path)) as img:
            img.draft("RGB", (2 * size, 2 * size))  # JPEGs decode at a reduced scale: fast and small
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA", "P", "PA"):
                img = img.convert("RGBA")
                white = Image.new("RGBA", img.size, (255, 255, 255, 255))
                img = Image.alpha_composite(white, img)
            img = img.convert("RGB")
            img.thumbnail((size, size))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=THUMB_QUALITY, optimize=True)
    except Exception:  # a missing or unreadable file must not stop the report
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def image_path(root: str | os.PathLike | None, key: str) -> Path | None:
    """The file of cache key `key` under `root` (data.key_path: as it is named on disk), or None when root
    is unknown or the key would leave it."""
    from ..data import BadImage, key_path

    if not root:
        return None
    try:
        return key_path(root, key)
    except BadImage:
        return None


def confused_pairs(matrix, classes: list[str], top: int = TOP_PAIRS) -> list[dict]:
    """The `top` largest off-diagonal cells of a confusion matrix (rows true): [{true, pred, count,
    share}] with share = count / images of the true class, most images first."""
    cm = np.asarray(matrix)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    rows = cm.sum(axis=1)
    order = np.argsort(-off, axis=None, kind="stable")[:top]
    pairs = []
    for flat in order:
        i, j = np.unravel_index(flat, cm.shape)
        if off[i, j] == 0:
            break
        pairs.append({"true": classes[i], "pred": classes[j], "count": int(off[i, j]),
                      "share": float(off[i, j] / rows[i]) if rows[i] else None})
    return pairs


def embedding_map(X, labels: list[str], keys: list[str], *, marked=(), preds: dict[int, str] | None = None,
                  issues=(), max_points: int | None = None, seed: int = 0) -> dict:
    """2-D coordinates of at most max_points rows of X (N, D) for the map: PCA to 50 dimensions, then
    t-SNE (sklearn, seeded; plain PCA below 10 points). Rows in `marked` and `issues` are always kept.
    Returns {points: [{x, y, label, key, pred, wrong, issue}], method, n_total}."""
    from sklearn.decomposition import PCA

    X = np.asarray(X, dtype=np.float32)
    n = len(X)
    max_points = MAP_POINTS if max_points is None else max_points
    preds = preds or {}
    keep = sorted(set(int(i) for i in marked) | set(int(i) for i in issues))[:max_points]
    rest = np.setdiff1d(np.arange(n), keep)
    rng = np.random.default_rng(seed)
    extra = rng.choice(rest, size=min(len(rest), max_points - len(keep)), replace=False) if len(rest) else rest
    rows = np.sort(np.concatenate([np.asarray(keep, dtype=np.int64), extra.astype(np.int64)]))
    Z = X[rows]
    if len(rows) < 3:
        coords, method = np.zeros((len(rows), 2)), "no projection"
    else:
        pca = PCA(n_components=min(50, Z.shape[1], len(rows) - 1), random_state=seed)
        P = pca.fit_transform(Z)
        if len(rows) < 10:
            coords, method = P[:, :2] if P.shape[1] >= 2 else np.c_[P[:, 0], np.zeros(len(P))], "PCA"
        else:
            from sklearn.manifold import TSNE
            from threadpoolctl import threadpool_limits

            perplexity = float(min(30.0, (len(rows) - 1) / 3))
            # one OpenMP thread: Barnes-Hut t-SNE's threads spin on a busy machine (90 points: 17 s with
            # two threads under load, 1 s with one; 1,449 points: 12.7 s)
            with threadpool_limits(1):
                coords = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                              learning_rate="auto", max_iter=TSNE_ITERATIONS).fit_transform(P)
            method = "PCA (50 dimensions) then t-SNE"
    marked, issues = set(int(i) for i in marked), set(int(i) for i in issues)
    points = [{"x": round(float(x), 3), "y": round(float(y), 3), "label": labels[r], "key": keys[r],
               "pred": preds.get(int(r)), "wrong": int(r) in marked, "issue": int(r) in issues}
              for r, (x, y) in zip(rows.tolist(), coords)]
    return {"points": points, "method": method, "n_total": n}


def lowest_cosine(V: np.ndarray, block_entries: int = 1 << 21) -> float:
    """The lowest cosine between two different rows of V (M >= 2, D), computed in row blocks so memory
    stays about 4 bytes x block_entries however large the group (a group of every image of a burst)."""
    from ..models.split import unit_rows

    U = unit_rows(V)
    low = np.inf
    step = max(1, block_entries // len(U))
    for start in range(0, len(U), step):
        S = U[start:start + step] @ U.T
        rows = np.arange(S.shape[0])
        S[rows, start + rows] = np.inf
        low = min(low, float(S.min()))
    return low


def audit_findings(X, y, keys: list[str], classes: list[str], root, *, top: int = AUDIT_TOP) -> dict | None:
    """The audit's lists with thumbnails (embedflow.insight, as `embedflow audit`): label issues (score >=
    ISSUE_SCORE), outliers (z >= OUTLIER_SCORE) and near-duplicate groups (cosine >= DUP_THRESHOLD,
    cross-class first), `top` of each; plus "issue_rows" (every row with score >= ISSUE_SCORE). None when
    the vectors cannot be audited (fewer than two classes of two images, or more than AUDIT_MAX_IMAGES)."""
    from .. import insight
    from ..errors import UsageError

    X, y = np.asarray(X), np.asarray(y)
    if len(X) > AUDIT_MAX_IMAGES or len(X) < 4:
        return None
    try:
        scores, suggested = insight.label_issues(X, y)
    except UsageError:
        return None
    far = insight.outliers(X, y)
    order = np.argsort(-scores, kind="stable")
    issue_rows = [int(r) for r in order if scores[r] >= ISSUE_SCORE]
    thumb = lambda r: thumbnail_uri(image_path(root, keys[r]))  # noqa: E731
    label_issues = [{"key": keys[r], "given": classes[y[r]], "suggested": classes[suggested[r]],
                     "score": float(scores[r]), "thumb": thumb(r)} for r in issue_rows[:top]]
    outliers = [{"key": keys[r], "label": classes[y[r]], "score": float(far[r]), "thumb": thumb(r)}
                for r in np.argsort(-far, kind="stable")[:top] if far[r] >= OUTLIER_SCORE]
    groups = insight.near_duplicate_groups(X, DUP_THRESHOLD)
    sizes = np.bincount(groups)
    found = []
    for g in np.flatnonzero(sizes > 1):
        members = np.flatnonzero(groups == g)
        found.append((len(set(y[members].tolist())) > 1, lowest_cosine(X[members]), members))
    found.sort(key=lambda f: (not f[0], -f[1]))
    duplicates = [{"min_score": min(s, 1.0), "members": [{"key": keys[r], "label": classes[y[r]], "thumb": thumb(r)}
                                                           for r in members[:6]]} for _, s, members in found[:top]]
    return {"label_issues": label_issues, "outliers": outliers, "duplicates": duplicates, "n_images": len(X),
            "issue_rows": issue_rows}


def report_page(*, title: str, subtitle: str, report: dict, summary: list[tuple[str, str]],
                keys: list[str], proba: np.ndarray, y_true: np.ndarray, root=None,
                class_counts: dict | None = None, skipped: list | None = None,
                vectors: tuple | None = None, scored_rows: np.ndarray | None = None,
                history: dict | None = None, parity: dict | None = None, coverage: dict | None = None,
                seed: int = 0, audit: dict | None | str = "compute") -> dict:
    """The page dict of reports.html.render_html.

    report: a classification report (reports.classification_report) of the scored images; keys (N,),
    y_true (N,) int class indices and proba (N, C) float their probabilities, in the model's classes;
    root: the folder the keys are relative to (thumbnails; None: no pictures). vectors: (X (M, D), y (M,),
    keys (M,)) of the whole data set for the audit and the embedding map (None: neither section);
    scored_rows (N,): the row in those vectors of each scored image (default: the same rows); audit: the
    result of page_audit for those vectors when the caller computed it already (a fine-tune does, before
    training, while memory holds no training state), else "compute"."""
    classes = list(report["classes"])
    proba = np.asarray(proba, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    n = len(keys)
    pred = proba.argmax(axis=1) if n else np.zeros(0, np.int64)
    p_true = proba[np.arange(n), y_true] if n else np.zeros(0)
    wrong = np.flatnonzero(pred != y_true)
    worst = wrong[np.argsort(p_true[wrong], kind="stable")]
    thumb = lambda i: thumbnail_uri(image_path(root, keys[i]))  # noqa: E731
    misclassified = [{"key": keys[i], "true": classes[y_true[i]], "pred": classes[pred[i]], "p_true": float(p_true[i]),
                      "p_pred": float(proba[i, pred[i]]), "thumb": thumb(i)} for i in worst[:MAX_MISCLASSIFIED]]
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(SAMPLES, n), replace=False)) if n else []
    samples = [{"key": keys[i], "true": classes[y_true[i]], "pred": classes[pred[i]], "p_pred": float(proba[i, pred[i]]),
                "thumb": thumb(i)} for i in sample]
    page = {
        "title": title, "subtitle": subtitle, "classes": classes, "summary": summary,
        "metrics": {k: report.get(k) for k in ("n", "accuracy", "macro_precision", "macro_recall", "macro_f1")},
        "coverage": coverage, "class_counts": class_counts, "skipped": skipped or [],
        "per_class": report.get("per_class"), "confusion": report.get("confusion_matrix"),
        "confused_pairs": ([{"true": c["true"], "pred": c["predicted"], "count": c["count"], "share": c["share"]}
                            for c in report["confused_pairs"][:TOP_PAIRS]] if "confused_pairs" in report
                           else confused_pairs(report["confusion_matrix"], classes)),
        "misclassified": misclassified, "n_misclassified": int(len(wrong)), "samples": samples,
        "learning_curves": history, "parity": parity,
    }
    if vectors is not None:
        X, y_all, keys_all = vectors
        y_all = np.asarray(y_all)
        rows = np.arange(n) if scored_rows is None else np.asarray(scored_rows)
        if isinstance(audit, str):
            audit = page_audit(X, y_all, list(keys_all), classes, root)
        page["audit"] = audit
        preds = {int(rows[i]): classes[pred[i]] for i in range(n)}
        page["embedding_map"] = embedding_map(X, [classes[c] for c in y_all], list(keys_all), marked=rows[wrong],
                                              preds=preds, issues=(audit or {}).get("issue_rows", [])[:MAP_ISSUES], seed=seed)
    return page


def page_audit(X, y, keys: list[str], classes: list[str], root) -> dict | None:
    """audit_findings on one BLAS/OpenMP thread: on a shared or busy machine their threads spin
    (flowers-dev's audit: 22 s with two threads under load, 9 s with one)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return audit_findings(X, np.asarray(y), keys, classes, root)


def write_html(path: str | os.PathLike, page: dict) -> Path:
    """Render the page and write it to `path` (beside, then renamed into place)."""
    return write_text_atomically(Path(path), render_html(page))


MAIN_PARAMS = ("C", "kernel", "calibration", "gamma", "k", "n_neighbors", "epochs", "learning_rate", "dropout", "space")


def manifest_summary(manifest: dict, *, kind: str, scored: str) -> list[tuple[str, str]]:
    """The summary rows of a model's page from its manifest: model, backbone and fingerprint, data,
    split, hyperparameters, and what the figures score (`scored`)."""
    fp = manifest.get("fingerprint") or {}
    rows = [("model", kind)]
    backbone = fp.get("backbone_arg") or fp.get("backbone")
    if backbone:
        size = fp.get("image_size")
        rows.append(("backbone", f"{backbone}" + (f" ({size} px)" if size else "")))
    if fp.get("id"):
        rows.append(("fingerprint", str(fp["id"])))
    data = manifest.get("data") or {}
    if data.get("root"):
        rows.append(("data", f"{data['root']} ({data.get('count', '?')} images)"))
    split = manifest.get("split") or {}
    if split:
        text = f"{split.get('n_train', '?')} training / {split.get('n_val', '?')} validation images"
        extras = [f"{k} {split[k]}" for k in ("val_split", "seed") if k in split]
        if split.get("refit_on_all"):
            extras.append("the saved model was then refit on all images")
        rows.append(("split", text + (f" ({', '.join(extras)})" if extras else "")))
    hp = manifest.get("hyperparameters") or {}
    if hp:
        shown = {k.rsplit("__", 1)[-1]: v for k, v in hp.items()
                 if v is not None and ("__" not in k or k.rsplit("__", 1)[-1] in MAIN_PARAMS)}
        rows.append(("hyperparameters", ", ".join(f"{k}={v}" for k, v in shown.items())))
    rows.append(("scored on", scored))
    return rows
