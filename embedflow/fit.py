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

    rejector_ = None  # insight.Rejector learned on the validation split (None: no rule)

    def _write_members(self, staged: Path) -> dict:
        """The head file and, with an unknown-input rule, rejector.npz (both checksummed in the manifest)."""
        files = super()._write_members(staged)
        if self.rejector_ is not None:
            from . import insight

            insight.save_rejector(self.rejector_, staged / insight.REJECTOR_FILE)
            files[insight.REJECTOR_FILE] = models.sha256_file(staged / insight.REJECTOR_FILE)
        return files

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
        val = self.val_rows_  # the rows of val_proba_, in its order
        m = self.manifest
        return report_page(
            title=f"{self.head} head — validation report", report=self.report_,
            subtitle=f"{len(self.classes)} classes, {len(cache)} images, backbone {m['fingerprint'].get('backbone', '?')}",
            summary=manifest_summary(m, kind=f"{self.head} head on cached vectors",
                                     scored=f"the validation split ({len(val)} images), by the head trained on "
                                            "the training split only"),
            keys=[cache.keys[i] for i in val], proba=self.val_proba_, y_true=cache.y[val], root=cache.root,
            class_counts=m["data"]["class_counts"], skipped=m["data"]["skipped"],
            vectors=(cache.X, cache.y, cache.keys), scored_rows=val, seed=int(m["split"].get("seed", 0)),
            coverage=self._coverage(val))

    def _coverage(self, val: np.ndarray) -> dict | None:
        """Coverage and accuracy on the accepted validation images under the unknown-input rule."""
        if self.rejector_ is None or not len(val):
            return None
        accepted = ~self.rejector_.reject(self.cache_.X[val])
        correct = self.val_proba_.argmax(axis=1) == self.cache_.y[val]
        return {"rate": float(accepted.mean()), "rejected": int((~accepted).sum()),
                "accuracy_kept": float(correct[accepted].mean()) if accepted.any() else None,
                "accuracy_all": float(correct.mean())}

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
             reject_rate: float | None = 0.05, reporter: Reporter = SILENT, **params) -> FittedHead:
    """Train a head (logreg, svm, dense, knn) on a cache's vectors with a deterministic stratified split
    that keeps identical files and groups of near-duplicates (cosine >= 0.92, connected components) on one
    side (models.split.split_indices_near_duplicates; the split record counts the groups kept together);
    nothing is written (call .save(path)).

    `params` are the head's own hyper-parameters (logreg/svm: C; dense: epochs, dropout, learning_rate,
    batch_size, patience; knn: k, space); one it does not take raises UsageError. The validation report
    (`report_`, a dict, None with val_split=0) scores a head trained on the training split only; with
    refit (the default, as in GridSearchCV) the returned head is then trained again on all vectors.
    A cache of train/ val/ test/ folders (cache.splits) is split by its folders: the head trains on train/
    and is validated on val/ (without val/, on a val_split of train/); test/ is never used (the manifest's
    split records `from` and `n_test`); refit trains on train/ + val/. Otherwise the split keeps groups of
    near-duplicates (models.split.split_indices_near_duplicates) on one side.
    The report also holds per-image "predictions" and "confused_pairs" (embedflow.reports.predictions),
    also available as `predictions_` / `confused_pairs_`; saving writes predictions.csv and top-losses.png.
    With a validation split and `reject_rate` (default 0.05; None: none), an unknown-input rule is learned
    (`rejector_`, insight.fit_rejector: 1 - mean cosine to the 5 most similar training-split vectors, the
    threshold rejecting `reject_rate` of the validation vectors) and recorded in the manifest ("rejector";
    saving writes the L2-normalised training-split vectors, float32 (n_train, D), to rejector.npz).
    Raises DatasetError (empty or unlabelled cache, a class too small for the split or below the head's
    minimum of training images, before any training), CacheError (non-finite vectors) and UsageError
    (reject_rate outside [0, 1))."""
    from threadpoolctl import threadpool_limits

    from .heads import busy_machine_threads, check_trainable, head_params, make_head
    from .reports import add_to_report, classification_report

    t0 = time.perf_counter()
    from . import options

    options.check(reject_rate=reject_rate)
    estimator = make_head(head, class_weight=class_weight, seed=seed, **params)
    cache = data if isinstance(data, Cache) else open_cache(data, vectors=True)
    if len(cache) == 0:
        raise DatasetError(f"cache {cache.path} holds no vectors")
    X, y = cache.X, cache.y
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise CacheError(f"cache {cache.path} holds {int(bad.sum())} non-finite vector(s) (e.g. "
                         f"{cache.keys[int(np.argmax(bad))]}); embed again with --rebuild")
    if not cache.labelled:
        raise DatasetError(f"cache {cache.path} holds unlabelled images: a head needs labels (embed one subfolder per "
                           "class, or --labels file.csv); neighbors, duplicates and predict use it as it is")
    test, grouping = np.arange(0), {}
    if cache.splits is not None:  # train/ val/ test/ folders: they are the split
        train, val, test = models.recorded_split_indices(cache.splits, y, cache.hashes, cache.classes, val_split, seed)
        reporter.info(f"train/val/test folders: training on train/ ({len(train)}), validating on "
                      f"{'val/' if (np.asarray(cache.splits)[val] == 'val').all() and len(val) else 'a split of train/'}"
                      f" ({len(val)}); the {len(test)} test/ image(s) are left for `evaluate --split test`")
        copies = _copies_of_train(cache.hashes, cache.splits, train)
        if copies:
            reporter.warn("identical files (same sha256) in train/ and another split: " + ", ".join(
                f"{n} {s}/ image(s)" for s, n in copies.items()) + " are copies of training images, so their "
                "scores are optimistic; remove them from one side")
    else:
        train, val, grouping = models.leak_free_split(X, y, cache.hashes, cache.classes, val_split, seed, reporter)
    pool = np.sort(np.concatenate([train, val]))  # every row fit may learn from (never test/)
    check_trainable(head, estimator, y[train], cache.classes, held_out=bool(val_split) and len(val) > 0
                    and (cache.splits is None or not (np.asarray(cache.splits)[val] == "val").all()))
    reporter.info(f"training {head} on {len(train)} vectors, validating on {len(val)}")
    with threadpool_limits(busy_machine_threads()):
        estimator.fit(X[train], y[train])
    report = val_proba = None
    rejector = None
    if len(val) and reject_rate is not None:
        from . import insight

        rejector = insight.fit_rejector(X[train], y[train], X[val], rate=reject_rate)
    if len(val):
        scored = HeadClassifier(estimator, {"classes": cache.classes, "fingerprint": cache.fingerprint})
        val_proba = scored._proba_vectors(X[val])
        report = classification_report(y[val], val_proba.argmax(axis=1), cache.classes)
        add_to_report(report, [cache.keys[i] for i in val], y[val], val_proba, cache.classes)
        if refit:
            reporter.info(f"refitting {head} on all {len(pool)} vectors")
            estimator = make_head(head, class_weight=class_weight, seed=seed, **params)
            check_trainable(head, estimator, y[pool], cache.classes)
            with threadpool_limits(busy_machine_threads()):
                estimator.fit(X[pool], y[pool])
    split = models.split_record(cache.keys, cache.hashes, train, val, val_split=val_split, seed=seed,
                                refit_on_all=bool(refit and len(val)))
    if cache.splits is not None:
        split = {**split, "from": "train/val/test folders", "n_test": int(len(test)),
                 "copies_of_train": _copies_of_train(cache.hashes, cache.splits, train)}
    split.update(grouping)  # grouped_by, threshold, near_duplicate_groups, images_in_groups
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
    if rejector is not None:
        from . import insight

        measured = float(np.mean(rejector.reject(X[val])))
        manifest["rejector"] = {**rejector.to_dict(), "file": insight.REJECTOR_FILE,
                                "reference": f"the {len(train)} training-split vectors, L2-normalised",
                                "calibrated_on": {"n_val": int(len(val)), "seed": seed,
                                                  "val_rejected": round(measured, 6)}}
    fitted = FittedHead(estimator, manifest, runtime=runtime)
    fitted.report_ = report
    fitted.rejector_ = rejector
    fitted.val_proba_, fitted.val_rows_, fitted.cache_ = val_proba, val, cache
    return fitted


def _copies_of_train(hashes: list[str], splits: list[str], train) -> dict[str, int]:
    """{"val": n, "test": m}: how many images of each other folder split have the sha256 of a training
    image (what the folder split cannot keep apart); splits with none are left out."""
    in_train = {hashes[i] for i in train}
    counts: dict[str, int] = {}
    for h, s in zip(hashes, splits):
        if s != "train" and h in in_train:
            counts[str(s)] = counts.get(str(s), 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: ("val", "test").index(kv[0]) if kv[0] in ("val", "test") else 9))
