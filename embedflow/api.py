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
from .reports import classification_report, deploy_files, write_report

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
                 reporter: Reporter = SILENT) -> EmbedSummary:
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
    counts = np.bincount(data.labels, minlength=len(data.classes))
    models.save(out_dir, estimator, head, data.classes, data.fingerprint, {
        "data": {"root": data.root, "count": len(data), "class_counts": dict(zip(data.classes, counts.tolist())),
                 "skipped": [[key, why] for key, why, _ in data.failed]},
        "hyperparameters": {**head_params(estimator), "class_weight": class_weight},
        "split": split,
        "cache": {"path": str(cache_path), "abspath": str(Path(cache_path).resolve()), "count": len(data),
                  "root": data.root},
        "metrics": {k: report[k] for k in ("accuracy", "macro_precision", "macro_recall", "macro_f1")} if report else {},
        "fit_seconds": round(time.perf_counter() - t0, 3),
    }, members=lambda manifest: deploy_files(manifest, report, str(out_dir)))
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


def info(cache_path: str | os.PathLike | None = None) -> dict:
    """What a cache holds: fingerprint, classes with counts, failed files, pending journal.

    Safe while a writer runs: it describes one complete snapshot (re-read if a new one was renamed in
    between its two reads)."""
    cache_path = choose_cache(cache_path)
    journal = cache.Journal(cache_path, "").chunks()
    if journal and not cache_path.exists():
        raise CacheError(f"no cache at {cache_path} yet: an interrupted run left {len(journal)} committed journal "
                         f"chunk(s) in {cache_path}.journal; run the same `embedflow embed` command again to finish")
    for _ in range(5):
        before = cache_path.stat() if cache_path.exists() else None
        meta = cache.read_meta(cache_path)
        held = cache.load(cache_path, vectors=False)
        after = cache_path.stat()
        if before and (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns):
            break
    counts = np.bincount(held.labels, minlength=len(held.classes)) if len(held) else np.zeros(len(held.classes), int)
    return {**meta, "per_class": {c: int(n) for c, n in zip(held.classes, counts)},
            "failed_files": [{"key": k, "reason": r} for k, r, _ in held.failed],
            "size_bytes": after.st_size,
            "pending_journal_chunks": len(journal)}


def _image_queries(images, columns: cache.CacheColumns, cache_path, runtime: str, reporter: Reporter):
    """(names, hashes, vectors, failures) for image files/folders: cached content is read from the cache,
    the rest is embedded with the cache's own backbone."""
    from .data import BadImage, hash_file

    refs, hashes, failures = [], [], []
    for ref in discover_inputs(images):
        try:
            hashes.append(hash_file(ref.path))
            refs.append(ref)
        except BadImage as e:
            failures.append({"path": str(ref.path), "reason": str(e)})
    fp = columns.fingerprint
    known = cache.vectors_for_hashes(cache_path, set(hashes), fp["id"])
    if all(h in known for h in hashes):
        vectors = np.stack([known[h] for h in hashes]) if hashes else np.zeros((0, columns.dim), np.float32)
        return [str(r.path) for r in refs], hashes, vectors, failures
    hash_of = {id(r): h for r, h in zip(refs, hashes)}
    ok, vectors, failed = embed_files(refs, backbones.spec_from_fingerprint(fp), fp, runtime=runtime,
                                      reporter=reporter, known_from=lambda wanted: known)
    failures += [{"path": str(ref.path), "reason": reason} for ref, reason in failed]
    return [str(r.path) for r in ok], [hash_of[id(r)] for r in ok], vectors, failures


def _key_queries(keys, columns: cache.CacheColumns, cache_path):
    import difflib

    row_of = {k: i for i, k in enumerate(columns.keys)}
    for key in keys:
        if key not in row_of:
            close = difflib.get_close_matches(key, columns.keys, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(f"no image with key '{key}' in cache {cache_path}{hint}")
    rows = [row_of[k] for k in keys]
    return list(keys), [columns.hashes[r] for r in rows], cache.read_vectors(cache_path, rows)


def _vector_queries(vectors, fingerprint, columns: cache.CacheColumns, cache_path):
    vectors = np.asarray(vectors, dtype=np.float32)
    vectors = vectors[None, :] if vectors.ndim == 1 else vectors
    if fingerprint is not None:
        have_id = fingerprint if isinstance(fingerprint, str) else fingerprint.get("id")
        want = columns.fingerprint
        if have_id != want["id"]:
            try:
                made_with = backbones.describe(want)
            except KeyError:
                made_with = f"backbone id {want['id']}"
            raise FingerprintMismatch(f"the query vectors come from backbone id {have_id}, but cache {cache_path} "
                                      f"holds vectors of {made_with}: embed the queries with the cache's backbone")
    if vectors.ndim != 2 or vectors.shape[1] != columns.dim:
        raise FingerprintMismatch(f"query vectors have shape {vectors.shape}, cache {cache_path} holds "
                                  f"{columns.dim}-d vectors: they come from another backbone")
    if not np.isfinite(vectors).all():
        raise UsageError("query vectors hold NaN or infinite values")
    return [f"vector[{i}]" for i in range(len(vectors))], [None] * len(vectors), vectors


def _searchable(cache_path) -> cache.CacheColumns:
    columns = cache.load_columns(cache_path)
    if len(columns) == 0:
        raise DatasetError(f"cache {cache_path} holds no vectors: embed a folder with images into it first")
    return columns


def neighbors(images: list[str | os.PathLike] | None = None, *, keys: list[str] | None = None,
              vectors: np.ndarray | None = None, fingerprint: dict | str | None = None, k: int = 5,
              cache_path: str | os.PathLike | None = None, include_self: bool = False, method: str = "auto",
              sheet: str | os.PathLike | None = None, runtime: str = "auto", reporter: Reporter = SILENT) -> dict:
    """The k most similar cached images (cosine) for image files/folders, cached keys, and/or raw vectors.

    Images already in the cache (same sha256) are read from it, others are embedded with the cache's
    backbone. Rows with the query's own content are left out unless include_self (then they score 1.0).
    `vectors` may carry the `fingerprint` (dict or id) they were made with; another one is refused.
    method: auto (exact below similarity.INDEX_MIN_ROWS vectors, else the faiss index), exact or index.
    Returns {"cache", "method", "k", "results": [{"query", "hash", "neighbors": [{"key", "label",
    "score"}]}], "failed": [{"path", "reason"}], "sheet"}."""
    from . import search as nn

    if k < 1:
        raise UsageError("--k must be at least 1")
    if not images and not keys and vectors is None:
        raise UsageError("give query images, --key KEY, or vectors")
    cache_path = choose_cache(cache_path, reporter)
    columns = _searchable(cache_path)
    names, hashes, parts, failed = [], [], [], []
    if images:
        n, h, v, failed = _image_queries(images, columns, cache_path, runtime, reporter)
        names, hashes, parts = names + n, hashes + h, parts + [v]
    if keys:
        n, h, v = _key_queries(keys, columns, cache_path)
        names, hashes, parts = names + n, hashes + h, parts + [v]
    if vectors is not None:
        n, h, v = _vector_queries(vectors, fingerprint, columns, cache_path)
        names, hashes, parts = names + n, hashes + h, parts + [v]
    queries = np.vstack(parts) if parts else np.zeros((0, columns.dim), np.float32)
    results = []
    if not len(queries):
        method_used = nn.choose_method(method, len(columns), reporter)
    else:
        hits, method_used = nn.search(cache_path, columns, queries, hashes, k, include_self, method, reporter)
        for i, (name, h) in enumerate(zip(names, hashes)):
            results.append({"query": name, "hash": h, "neighbors": [
                {"key": columns.keys[r], "label": columns.classes[columns.labels[r]], "score": round(s, 6)}
                for r, s in hits.for_query(i)]})
    columns.check_unchanged()  # vectors were read in later opens: they must come from the same file
    out = {"cache": str(cache_path), "method": method_used, "k": k, "results": results, "failed": failed,
           "sheet": None}
    if sheet and results:
        out["sheet"] = str(_neighbors_sheet(out, columns, keys or [], sheet))
    return out


def _neighbors_sheet(result: dict, columns: cache.CacheColumns, keys: list[str], out) -> Path:
    from .reports import sheets as sheet

    root = Path(columns.root) if columns.root else None
    label_of = dict(zip(columns.keys, (columns.classes[i] for i in columns.labels)))
    cached_key = dict(zip(columns.hashes, columns.keys))
    rows = []
    for r in result["results"]:
        query = r["query"]
        if query in keys:
            image = root / query if root else None
        else:
            image = None if query.startswith("vector[") else Path(query)
        own_key = query if query in keys else cached_key.get(r["hash"])
        own_label = label_of.get(own_key) if own_key else None
        rows.append({"image": image, "title": "query" + (f": {own_label}" if own_label else ""),
                     "detail": Path(query).name, "neighbors": [
            {"image": root / n["key"] if root else None, "title": f"{n['score']:.3f}  {n['label']}",
             "detail": Path(n["key"]).name, "mismatch": bool(own_label) and n["label"] != own_label}
            for n in r["neighbors"]]})
    return sheet.render(rows, out, f"{result['cache']}: {len(columns)} vectors, {result['method']} search, "
                                   f"k={result['k']}")


def duplicates(cache_path: str | os.PathLike | None = None, *, threshold: float = 0.92, method: str = "auto",
               reporter: Reporter = SILENT) -> dict:
    """Groups of near-duplicate images (cosine >= threshold; identical files always, at 1.0), those whose
    members carry different labels first (flagged cross_class: likely label noise).
    Returns {"cache", "threshold", "method", "groups": [{"size", "cross_class", "labels", "min_score",
    "members": [{"key", "label", "hash"}], "pairs": [{"a", "b", "score"}]}], "n_groups", "n_cross_class"}."""
    from . import search as nn

    if not 0.0 < threshold <= 1.0:
        raise UsageError(f"--threshold must be in (0, 1], got {threshold}")
    cache_path = choose_cache(cache_path, reporter)
    columns = _searchable(cache_path)
    groups, method_used = nn.find_duplicates(cache_path, columns, threshold, method, reporter)
    columns.check_unchanged()
    return {"cache": str(cache_path), "threshold": threshold, "method": method_used, "groups": groups,
            "n_groups": len(groups), "n_cross_class": sum(g["cross_class"] for g in groups),
            "n_images_in_groups": sum(g["size"] for g in groups)}


def list_backbones() -> list[dict]:
    """The backbone registry: name, family, dims, input size, preprocessing, weights and whether they
    are on this machine (never downloads). See embedflow.backbones."""
    return backbones.listing()
