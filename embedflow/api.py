"""The Python API: what the CLI calls and what users import.

    from embedflow import embed_folder, fit_head, evaluate, predict, info
    embed_folder("data/flower_photos")                 # -> cache/embeddings.h5
    result = fit_head(head="svm")                      # -> models/svm
    evaluate("models/svm", "data/test_photos")["accuracy"]
    predict("models/svm", ["photo.jpg"], top_k=3)
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import backbones, cache, models
from .data import discover_inputs
from .embed import EmbedSummary, embed_files
from .embed import embed_folder as _embed_folder
from .errors import CacheError, DatasetError, UsageError
from .progress import SILENT, Reporter
from .report import classification_report, write_report

DEFAULT_CACHE = Path("cache/embeddings.h5")
DEFAULT_MODELS = Path("models")


def embed_folder(root: str | os.PathLike, cache_path: str | os.PathLike = DEFAULT_CACHE, *,
                 backbone: str = "mobilenet_v2", image_size: int | None = None, weights: str | None = None,
                 rebuild: bool = False, runtime: str = "auto", batch_size: int = 16, workers: int | None = None,
                 reporter: Reporter = SILENT) -> EmbedSummary:
    """Embed a class-per-subfolder tree into an HDF5 cache (incrementally). See embedflow.embed."""
    spec = backbones.get_spec(backbone, image_size, weights)
    return _embed_folder(root, cache_path, spec=spec, rebuild=rebuild, runtime=runtime,
                         batch_size=batch_size, workers=workers, reporter=reporter)


@dataclass
class FitResult:
    model_dir: Path
    head: str
    report: dict | None  # validation report (None with val_split=0)
    n_train: int
    n_val: int
    seconds: float


def fit_head(cache_path: str | os.PathLike = DEFAULT_CACHE, head: str = "logreg", out: str | os.PathLike | None = None,
             *, val_split: float = 0.2, seed: int = 0, class_weight: str | None = None, params: dict | None = None,
             refit: bool = True, reporter: Reporter = SILENT) -> FitResult:
    """Train a head on cached vectors with a deterministic stratified split; write a model folder.

    The validation report scores a head trained on the training split only. With refit (the default,
    as in scikit-learn's GridSearchCV), the head that is saved is then trained again on all vectors:
    the report is an honest estimate for it, made on images the scored head never saw."""
    from .heads import head_params, make_head

    t0 = time.perf_counter()
    estimator = make_head(head, class_weight=class_weight, seed=seed, **(params or {}))
    data = cache.load(cache_path)
    if len(data) == 0:
        raise DatasetError(f"cache {cache_path} holds no vectors")
    bad = ~np.isfinite(data.embeddings).all(axis=1)
    if bad.any():
        raise CacheError(f"cache {cache_path} holds {int(bad.sum())} non-finite vector(s) (e.g. {data.keys[int(np.argmax(bad))]}); "
                         "embed again with --rebuild")
    train, val = models.split_indices(data.labels, data.hashes, data.classes, val_split, seed)
    reporter.info(f"training {head} on {len(train)} vectors, validating on {len(val)}")
    estimator.fit(data.embeddings[train], data.labels[train])
    out_dir = Path(out) if out else DEFAULT_MODELS / head
    report = None
    if len(val):
        pred = models.LoadedModel(out_dir, {"classes": data.classes}, estimator).predict_proba(
            data.embeddings[val]).argmax(axis=1)
        report = classification_report(data.labels[val], pred, data.classes)
        write_report(report, out_dir, f"{head} head, validation split")
        if refit:
            reporter.info(f"refitting {head} on all {len(data)} vectors")
            estimator = make_head(head, class_weight=class_weight, seed=seed, **(params or {}))
            estimator.fit(data.embeddings, data.labels)
    split = {"val_split": val_split, "seed": seed, "n_train": int(len(train)), "n_val": int(len(val)),
             "refit_on_all": bool(refit and len(val)), "grouped_by": "sha256 (identical files share a side)",
             "val_keys_sha256": hashlib.sha256("\n".join(data.keys[i] for i in val).encode()).hexdigest()}
    models.save(out_dir, estimator, head, data.classes, data.fingerprint, {
        "hyperparameters": {**head_params(estimator), "class_weight": class_weight},
        "split": split,
        "cache": {"path": str(cache_path), "count": len(data), "root": data.root},
        "metrics": {k: report[k] for k in ("accuracy", "macro_precision", "macro_recall", "macro_f1")} if report else {},
        "fit_seconds": round(time.perf_counter() - t0, 3),
    })
    return FitResult(out_dir, head, report, len(train), len(val), time.perf_counter() - t0)


def _eval_cache_path(folder: Path) -> Path:
    digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]
    return DEFAULT_CACHE.parent / f"{folder.resolve().name}-{digest}.h5"


def evaluate(model: str | os.PathLike, data: str | os.PathLike, *, cache_path: str | os.PathLike | None = None,
             out: str | os.PathLike | None = None, runtime: str = "auto", weights: str | None = None,
             reporter: Reporter = SILENT) -> dict:
    """Score a model on a labelled folder (embedded through a cache of its own) or on a cache file.

    Writes eval-report.json / eval-confusion.{json,png} to `out` (default: the model folder)."""
    loaded = models.load(model)
    data = Path(data)
    if data.is_dir():
        spec = backbones.spec_from_fingerprint(loaded.fingerprint)
        if weights:
            spec = backbones.get_spec(spec.name, spec.image_size, weights)
        cache_path = Path(cache_path) if cache_path else _eval_cache_path(data)
        summary = _embed_folder(data, cache_path, spec=spec, runtime=runtime, reporter=reporter)
        reporter.info(f"{data}: {summary.total} images in {cache_path} ({summary.embedded} embedded now)")
        for key, reason in summary.failed:
            reporter.warn(f"skipped {key}: {reason}")
    elif data.suffix in (".h5", ".hdf5") or data.is_file():
        cache_path = data
    else:
        raise UsageError(f"no such folder or cache: {data}")
    held = cache.load(cache_path)
    backbones.check_compatible(held.fingerprint, loaded.fingerprint, f"the evaluation cache {cache_path}",
                               f"model {model} was trained on another backbone's vectors")
    unknown = sorted(set(held.classes) - set(loaded.classes))
    if unknown:
        raise DatasetError(
            f"classes not known to model {model}: {', '.join(unknown)} (the model knows: {', '.join(loaded.classes)})"
        )
    missing = sorted(set(loaded.classes) - set(held.classes))
    if missing:
        reporter.warn(f"no evaluation images for class(es): {', '.join(missing)}")
    if len(held) == 0:
        raise DatasetError(f"no images to evaluate in {data}")
    to_model = np.array([loaded.classes.index(c) for c in held.classes])
    y_true = to_model[held.labels]
    y_pred = loaded.predict_proba(held.embeddings).argmax(axis=1)
    report = classification_report(y_true, y_pred, loaded.classes)
    report["model"], report["data"] = str(model), str(data)
    write_report(report, Path(out) if out else Path(model), f"{Path(model).name} on {data.name}", prefix="eval-")
    return report


def predict(model: str | os.PathLike, inputs: list[str | os.PathLike], *, top_k: int = 3,
            cache_path: str | os.PathLike | None = DEFAULT_CACHE, runtime: str = "auto",
            reporter: Reporter = SILENT) -> dict:
    """Top-k labels for image files and folders. Vectors of images already in the cache (same sha256)
    are reused. Returns {"predictions": [{"path", "top": [{"label", "probability"}]}], "failed": [...]}."""
    if top_k < 1:
        raise UsageError("--top-k must be at least 1")
    loaded = models.load(model)
    refs = discover_inputs(inputs)
    spec = backbones.spec_from_fingerprint(loaded.fingerprint)
    ok, vectors, failures = embed_files(refs, spec, loaded.fingerprint, runtime=runtime, reporter=reporter,
                                        known_from=lambda hashes: cache.vectors_for_hashes(
                                            cache_path, hashes, loaded.fingerprint["id"]) if cache_path else {})
    proba = loaded.predict_proba(vectors) if len(ok) else np.zeros((0, len(loaded.classes)))
    k = min(top_k, len(loaded.classes))
    predictions = []
    for ref, p in zip(ok, proba):
        top = np.argsort(-p, kind="stable")[:k]
        predictions.append({"path": str(ref.path),
                            "top": [{"label": loaded.classes[i], "probability": float(p[i])} for i in top]})
    return {"model": str(model), "predictions": predictions,
            "failed": [{"path": str(ref.path), "reason": reason} for ref, reason in failures]}


def info(cache_path: str | os.PathLike = DEFAULT_CACHE) -> dict:
    """What a cache holds: fingerprint, classes with counts, failed files, pending journal."""
    held = cache.load(cache_path)
    counts = np.bincount(held.labels, minlength=len(held.classes)) if len(held) else np.zeros(len(held.classes), int)
    meta = cache.read_meta(cache_path)
    journal = cache.Journal(Path(cache_path), "").chunks()
    return {**meta, "per_class": {c: int(n) for c, n in zip(held.classes, counts)},
            "failed_files": [{"key": k, "reason": r} for k, r, _ in held.failed],
            "size_bytes": Path(cache_path).stat().st_size,
            "pending_journal_chunks": len(journal)}
