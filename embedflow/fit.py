"""Training a head on cached vectors, in memory: `fit_head` returns the fitted classifier with its
validation report (`report_`) and split record (`split_`); `.save(path)` writes the model folder."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from . import models
from .cache import Cache, open_cache
from .errors import CacheError, DatasetError
from .models import HeadClassifier
from .progress import SILENT, Reporter


class FittedHead(HeadClassifier):
    """A head fitted by fit_head: a HeadClassifier whose folder also gets its validation report
    (report.json, confusion.json, confusion.png and the HTML page report.html) when saved."""

    report_: dict | None = None
    val_proba_: np.ndarray | None = None  # (n_val, C) probabilities of the validation vectors (training-split head)
    cache_: Cache | None = None
    val_rows_: np.ndarray | None = None

    def _write_extras(self, staged: Path) -> None:
        from .reports import write_report

        if self.report_:
            write_report(self.report_, staged, f"{self.head} head, validation split",
                         root=(self.manifest.get("data") or {}).get("root"))
            if self.val_proba_ is not None and self.cache_ is not None:
                from .reports.page import write_html

                write_html(staged / "report.html", self.html_page())

    def html_page(self) -> dict:
        """The data of report.html (reports.page.report_page): the validation split scored by the head
        trained on the training split, the audit and the embedding map of every cached vector."""
        from .reports.page import manifest_summary, report_page

        cache = self.cache_
        val = self.val_rows_  # sorted, the rows of val_proba_
        m = self.manifest
        return report_page(
            title=f"{self.head} head — validation report", report=self.report_,
            subtitle=f"{len(self.classes)} classes, {len(cache)} images, backbone {m['fingerprint'].get('backbone', '?')}",
            summary=manifest_summary(m, kind=f"{self.head} head on cached vectors",
                                     scored=f"the validation split ({len(val)} images), by the head trained on "
                                            "the training split only"),
            keys=[cache.keys[i] for i in val], proba=self.val_proba_, y_true=cache.y[val], root=cache.root,
            class_counts=m["data"]["class_counts"], skipped=m["data"]["skipped"],
            vectors=(cache.X, cache.y, cache.keys), scored_rows=val, seed=int(m["split"].get("seed", 0)))

    def _card_members(self, manifest: dict, target: Path) -> dict[str, str]:
        """labels.txt and the README.md model card, with the validation report."""
        from .reports import deploy_files

        return deploy_files(manifest, self.report_, str(target))

    @property
    def predictions_(self) -> list:
        """Per validation image, in split order: reports.ImagePrediction (key, true, predicted, p_true,
        loss, top) of the head trained on the training split; [] without a validation split or when loaded."""
        from .reports.predictions import from_report

        return from_report(self.report_ or {})

    @property
    def confused_pairs_(self) -> list:
        """reports.ConfusedPair (true, predicted, count, share) on the validation split, most frequent first."""
        from .reports.predictions import ConfusedPair

        return [ConfusedPair(**c) for c in (self.report_ or {}).get("confused_pairs") or []]

    @property
    def n_train(self) -> int:
        return int(self.split_.get("n_train", 0))

    @property
    def n_val(self) -> int:
        return int(self.split_.get("n_val", 0))


def fit_head(data: Cache | str | os.PathLike, head: str = "logreg", *, val_split: float = 0.2, seed: int = 0,
             class_weight: str | None = None, refit: bool = True, runtime: str = "auto",
             reporter: Reporter = SILENT, **params) -> FittedHead:
    """Train a head (logreg, svm, dense, knn) on a cache's vectors with a deterministic stratified split
    that keeps identical files on one side; nothing is written (call .save(path)).

    `params` are the head's own hyper-parameters (logreg/svm: C; dense: epochs, dropout, learning_rate,
    batch_size, patience; knn: k, space); one it does not take raises UsageError. The validation report
    (`report_`, a dict, None with val_split=0) scores a head trained on the training split only; with
    refit (the default, as in GridSearchCV) the returned head is then trained again on all vectors.
    The report also holds per-image "predictions" and "confused_pairs" (embedflow.reports.predictions),
    also available as `predictions_` / `confused_pairs_`; saving writes predictions.csv and top-losses.png.
    Raises DatasetError (empty cache, a class too small for the split) and CacheError (non-finite vectors)."""
    from .heads import head_params, make_head
    from .reports import add_to_report, classification_report

    t0 = time.perf_counter()
    estimator = make_head(head, class_weight=class_weight, seed=seed, **params)
    cache = data if isinstance(data, Cache) else open_cache(data, vectors=True)
    if len(cache) == 0:
        raise DatasetError(f"cache {cache.path} holds no vectors")
    X, y = cache.X, cache.y
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise CacheError(f"cache {cache.path} holds {int(bad.sum())} non-finite vector(s) (e.g. "
                         f"{cache.keys[int(np.argmax(bad))]}); embed again with --rebuild")
    train, val = models.split_indices(y, cache.hashes, cache.classes, val_split, seed)
    reporter.info(f"training {head} on {len(train)} vectors, validating on {len(val)}")
    estimator.fit(X[train], y[train])
    report = val_proba = None
    if len(val):
        scored = HeadClassifier(estimator, {"classes": cache.classes, "fingerprint": cache.fingerprint})
        val_proba = scored._proba_vectors(X[val])
        report = classification_report(y[val], val_proba.argmax(axis=1), cache.classes)
        add_to_report(report, [cache.keys[i] for i in val], y[val], val_proba, cache.classes)
        if refit:
            reporter.info(f"refitting {head} on all {len(cache)} vectors")
            estimator = make_head(head, class_weight=class_weight, seed=seed, **params)
            estimator.fit(X, y)
    split = models.split_record(cache.keys, cache.hashes, train, val, val_split=val_split, seed=seed,
                                refit_on_all=bool(refit and len(val)))
    counts = np.bincount(y, minlength=len(cache.classes)) if len(y) else np.zeros(len(cache.classes), int)
    manifest = {
        "head": head, "classes": list(cache.classes), "fingerprint": cache.fingerprint,
        "data": {"root": cache.root, "count": len(cache), "class_counts": dict(zip(cache.classes, counts.tolist())),
                 "skipped": [[key, why] for key, why, _ in cache.failed]},
        "hyperparameters": {**head_params(estimator), "class_weight": class_weight},
        "split": split,
        "cache": {"path": str(cache.path), "abspath": str(cache.path.resolve()), "count": len(cache),
                  "root": cache.root},
        "metrics": {k: report[k] for k in ("accuracy", "macro_precision", "macro_recall", "macro_f1")} if report else {},
        "fit_seconds": round(time.perf_counter() - t0, 3),
    }
    fitted = FittedHead(estimator, manifest, runtime=runtime)
    fitted.report_ = report
    fitted.val_proba_, fitted.val_rows_, fitted.cache_ = val_proba, val, cache
    return fitted
