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
from .embedding import EmbedSummary, embed_files
from .embedding import embed_folder as _embed_folder
from .errors import CacheError, DatasetError, FingerprintMismatch, UsageError
from .progress import SILENT, Reporter
from .reports import classification_report, write_report

DEFAULT_CACHE = Path("cache/embeddings.h5")
DEFAULT_MODELS = Path("models")


def default_cache_for(spec: backbones.BackboneSpec) -> Path:
    """cache/embeddings.h5 for the default backbone (whatever --image-size/--weights), else
    cache/embeddings-<backbone slug>.h5, so caches of several backbones live side by side."""
    if spec.arg == backbones.DEFAULT_BACKBONE:
        return DEFAULT_CACHE
    return DEFAULT_CACHE.with_name(f"{DEFAULT_CACHE.stem}-{spec.slug}{DEFAULT_CACHE.suffix}")


def embedding_caches(folder: Path = DEFAULT_CACHE.parent) -> list[Path]:
    """The embedding caches `embed` wrote by default in a folder (cache/embeddings*.h5)."""
    return sorted(folder.glob(f"{DEFAULT_CACHE.stem}*{DEFAULT_CACHE.suffix}"))


def choose_cache(cache_path: str | os.PathLike | None, reporter: Reporter = SILENT) -> Path:
    """The cache to use when none was given: the default one if it exists, else the only one in
    cache/; with several and no default, a UsageError that lists them."""
    if cache_path is not None:
        return Path(cache_path)
    if DEFAULT_CACHE.exists():
        return DEFAULT_CACHE
    found = embedding_caches()
    if len(found) > 1:
        raise UsageError(f"several caches in {DEFAULT_CACHE.parent}/ and none is the default: choose one with "
                         f"--cache ({', '.join(str(p) for p in found)})")
    if found:
        reporter.info(f"using {found[0]}")
        return found[0]
    return DEFAULT_CACHE


def _cache_for_model(loaded: models.LoadedModel) -> Path | None:
    """A cache made with the model's fingerprint, to reuse its vectors: the one it was fitted on, else
    one of cache/embeddings*.h5."""
    for path in models.recorded_caches(loaded.manifest) + embedding_caches():
        try:
            if path.exists() and cache.read_meta(path)["fingerprint"].get("id") == loaded.fingerprint.get("id"):
                return path
        except (CacheError, KeyError, OSError):
            continue
    return None


def embed_folder(root: str | os.PathLike, cache_path: str | os.PathLike | None = None, *,
                 backbone: str | None = None, image_size: int | None = None, weights: str | None = None,
                 rebuild: bool = False, runtime: str = "auto", batch_size: int | None = None, workers: int | None = None,
                 engine: str = "local", address: str | None = None, rehash: bool = False,
                 reporter: Reporter | str | None = "auto") -> EmbedSummary:
    """Embed a class-per-subfolder tree into an HDF5 cache (incrementally). See embedflow.embed.

    engine="ray" embeds on a Ray cluster (`address`, e.g. "auto" or "ray://host:10001"; default a new
    local one) with `workers` actors; the cache is the same as a local run's.
    backbone: a registry name, mobilenet_v2:ALPHA:SIZE or hub:URL_OR_PATH (see list_backbones());
    without cache_path the cache is default_cache_for(the backbone)."""
    spec = backbones.get_spec(backbone, image_size, weights)
    cache_path = cache_path if cache_path is not None else default_cache_for(spec)
    return _embed_folder(root, cache_path, spec=spec, rebuild=rebuild, runtime=runtime,
                         batch_size=batch_size, workers=workers, engine=engine, address=address, rehash=rehash,
                         reporter=reporter)


@dataclass
class FitResult:
    model_dir: Path
    head: str
    report: dict | None  # validation report (None with val_split=0)
    n_train: int
    n_val: int
    seconds: float


def fit_head(cache_path: str | os.PathLike | None = None, head: str = "logreg", out: str | os.PathLike | None = None,
             *, val_split: float = 0.2, seed: int = 0, class_weight: str | None = None, params: dict | None = None,
             refit: bool = True, reporter: Reporter = SILENT) -> FitResult:
    """Train a head on cached vectors with a deterministic stratified split; write a model folder.

    The validation report scores a head trained on the training split only. With refit (the default,
    as in scikit-learn's GridSearchCV), the head that is saved is then trained again on all vectors:
    the report is an honest estimate for it, made on images the scored head never saw."""
    from .heads import head_params, make_head

    t0 = time.perf_counter()
    estimator = make_head(head, class_weight=class_weight, seed=seed, **(params or {}))
    cache_path = choose_cache(cache_path, reporter)
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
        "cache": {"path": str(cache_path), "abspath": str(Path(cache_path).resolve()), "count": len(data),
                  "root": data.root},
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

    Writes eval-report.json / eval-confusion.{json,png} to `out` (default: the model folder).
    Fine-tuned, fused and TFLite models run on the decoded images of a folder (no cache)."""
    from .models.image_models import is_image_model

    if is_image_model(model):
        return _evaluate_image_model(model, data, out=out, reporter=reporter)
    loaded = models.load(model)
    data = Path(data)
    if data.is_dir():
        spec = backbones.spec_from_fingerprint(loaded.fingerprint)
        if weights:
            spec = backbones.get_spec(spec.arg, spec.image_size, weights)
        cache_path = Path(cache_path) if cache_path else _eval_cache_path(data)
        summary = _embed_folder(data, cache_path, spec=spec, runtime=runtime, reporter=reporter)
        reporter.info(f"{data}: {summary.total} images in {cache_path} ({summary.embedded} embedded now)")
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
    report["skipped"] = [{"key": k, "reason": r} for k, r, _ in held.failed]  # files the evaluation could not use
    report["cache"] = str(cache_path)
    write_report(report, Path(out) if out else Path(model), f"{Path(model).name} on {data.name}", prefix="eval-")
    return report


def predict(model: str | os.PathLike, inputs: list[str | os.PathLike], *, top_k: int = 3,
            cache_path: str | os.PathLike | None = "auto", runtime: str = "auto",
            reporter: Reporter = SILENT) -> dict:
    """Top-k labels for image files and folders. Vectors of images already in the cache (same sha256)
    are reused; cache_path "auto" looks for one made with the model's backbone, None uses none. Returns {"predictions": [{"path", "top": [{"label", "probability"}]}], "failed": [...]}."""
    from .models.image_models import is_image_model

    if top_k < 1:
        raise UsageError("--top-k must be at least 1")
    if is_image_model(model):
        return _predict_image_model(model, inputs, top_k=top_k, reporter=reporter)
    loaded = models.load(model)
    refs = discover_inputs(inputs)
    spec = backbones.spec_from_fingerprint(loaded.fingerprint)
    if cache_path == "auto":
        cache_path = _cache_for_model(loaded)
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


# --- image models: fine-tuned, fused, TFLite (embedflow.finetune, embedflow.export, embedflow.explain) ---


def finetune(data: str | os.PathLike, out: str | os.PathLike = DEFAULT_MODELS / "finetuned", *,
             backbone: str = "mobilenet_v2", image_size: int | None = None, weights: str | None = None,
             spec: backbones.BackboneSpec | None = None, val_split: float = 0.2, seed: int = 0,
             params: dict | None = None, reporter: Reporter = SILENT):
    """Fine-tune the backbone and a softmax head end to end on a class-per-subfolder tree (no cache).
    Returns embedflow.finetune.FinetuneResult; see that module for the recipe and its defaults."""
    from . import finetune as _finetune

    spec = spec or backbones.get_spec(backbone, image_size, weights)
    backbones.require_fine_tunable(spec)
    return _finetune.finetune(data, out, spec=spec, val_split=val_split, seed=seed, params=params,
                              reporter=reporter)


def export(model: str | os.PathLike, fmt: str = "tflite", quantize: str = "none", out: str | os.PathLike | None = None,
           *, data: str | os.PathLike | None = None, cache_path: str | os.PathLike | None = None,
           reporter: Reporter = SILENT):
    """Export a fine-tuned model or a fusable cached head (logreg, dense) to TFLite or a fused Keras model,
    with a parity check on the validation images. Returns embedflow.export.ExportResult."""
    from . import export as _export

    return _export.export(model, fmt, quantize, out, data_root=str(data) if data else None,
                          cache_path=str(cache_path) if cache_path else None, reporter=reporter)


def explain(model: str | os.PathLike, images: list[str | os.PathLike], out: str | os.PathLike = "gradcam", *,
            reporter: Reporter = SILENT) -> dict:
    """Grad-CAM overlays (PNG) for images, and a grid for several, from a fine-tuned or fused model."""
    from .explain import explain as _explain

    return _explain(model, [str(i) for i in images], out, reporter=reporter)


def _evaluate_image_model(model, data, *, out, reporter: Reporter) -> dict:
    from .embedding import decode_folder
    from .models.image_models import load as load_image_model

    clf = load_image_model(model)
    data = Path(data)
    if not data.is_dir():
        raise UsageError(f"{model} is a {clf.kind} model: evaluate it on a labelled folder of images, not {data}")
    decoded = decode_folder(data, clf.image_size, reporter=reporter)
    unknown = sorted(set(decoded.classes) - set(clf.classes))
    if unknown:
        raise DatasetError(f"classes not known to model {model}: {', '.join(unknown)} "
                           f"(the model knows: {', '.join(clf.classes)})")
    if not len(decoded):
        raise DatasetError(f"no images to evaluate in {data}")
    to_model = np.array([clf.classes.index(c) for c in decoded.classes])
    y_pred = clf.predict_pixels(decoded.pixels).argmax(axis=1)
    report = classification_report(to_model[decoded.labels], y_pred, clf.classes)
    report["model"], report["data"] = str(model), str(data)
    report["skipped"] = [{"key": r.key, "reason": why} for r, why in decoded.failed]
    out_dir = Path(out) if out else (Path(model) if Path(model).is_dir() else Path(model).parent)
    write_report(report, out_dir, f"{Path(model).name} on {data.name}", prefix="eval-")
    return report


def _predict_image_model(model, inputs, *, top_k: int, reporter: Reporter) -> dict:
    from .embedding import decode_refs
    from .models.image_models import load as load_image_model

    clf = load_image_model(model)
    decoded = decode_refs(discover_inputs(inputs), clf.image_size, reporter=reporter)
    proba = clf.predict_pixels(decoded.pixels) if len(decoded) else np.zeros((0, len(clf.classes)))
    k = min(top_k, len(clf.classes))
    predictions = []
    for ref, p in zip(decoded.refs, proba):
        top = np.argsort(-p, kind="stable")[:k]
        predictions.append({"path": str(ref.path),
                            "top": [{"label": clf.classes[i], "probability": float(p[i])} for i in top]})
    return {"model": str(model), "predictions": predictions,
            "failed": [{"path": str(ref.path), "reason": reason} for ref, reason in decoded.failed]}


def info(cache_path: str | os.PathLike | None = None) -> cache.CacheInfo:
    """What a cache holds (fingerprint, classes with counts, skipped files, pending journal) as a
    cache.CacheInfo; see embedflow.cache.cache_info. Raises CacheError (missing, damaged)."""
    return cache.cache_info(choose_cache(cache_path))


def neighbors(images: list[str | os.PathLike] | None = None, *, keys: list[str] | None = None,
              vectors: np.ndarray | None = None, fingerprint: dict | str | None = None, k: int = 5,
              cache_path: str | os.PathLike | None = None, include_self: bool = False, method: str = "auto",
              sheet: str | os.PathLike | None = None, runtime: str = "auto",
              reporter: Reporter | str | None = "auto") -> search.NeighborsResult:
    """The k most similar cached images (cosine) for image files/folders, cached keys, and/or raw
    (D,) or (N, D) float32 vectors.

    Images already in the cache (same sha256) are read from it, others are embedded with the cache's
    backbone. Rows with the query's own content are left out unless include_self (then they score 1.0).
    `vectors` may carry the `fingerprint` (dict or id) they were made with; another one is refused
    (FingerprintMismatch). method: auto (exact below search.INDEX_MIN_ROWS vectors, else the faiss
    index), exact or index. sheet: also write a contact sheet PNG there.
    Returns a search.NeighborsResult (hits in memory; `.to_dict()` is {"cache", "method", "k", "results":
    [{"query", "hash", "neighbors": [{"key", "label", "score"}]}], "failed": [{"path", "reason"}], "sheet"})."""
    from . import search
    from .progress import as_reporter

    search.check_query(k, images, keys, vectors)
    reporter = as_reporter(reporter)
    cache_path = choose_cache(cache_path, reporter)
    columns = search.searchable(cache_path)
    result = search.find_neighbors(cache_path, columns, images, keys, vectors, fingerprint, k, include_self,
                                   method, runtime, reporter)
    if sheet and result.results:
        from .reports import neighbors_sheet

        result.sheet = neighbors_sheet(result, columns, sheet)
    return result


def duplicates(cache_path: str | os.PathLike | None = None, *, threshold: float = 0.92, method: str = "auto",
               reporter: Reporter | str | None = "auto") -> search.DuplicatesResult:
    """Groups of near-duplicate images (cosine >= threshold in (0, 1]; identical files always, at 1.0),
    those whose members carry different labels first (cross_class: likely label noise).
    Returns a search.DuplicatesResult (`.to_dict()` is {"cache", "threshold", "method", "groups": [{"size",
    "cross_class", "labels", "min_score", "members": [{"key", "label", "hash"}], "pairs": [{"a", "b",
    "score"}]}], "n_groups", "n_cross_class", "n_images_in_groups"})."""
    from . import search
    from .progress import as_reporter

    search.check_threshold(threshold)
    reporter = as_reporter(reporter)
    cache_path = choose_cache(cache_path, reporter)
    return search.find_duplicates(cache_path, search.searchable(cache_path), threshold, method, reporter)


def list_backbones() -> list[dict]:
    """The backbone registry: name, family, dims, input size, preprocessing, weights and whether they
    are on this machine (never downloads). See embedflow.backbones."""
    return backbones.listing()
