"""The Python API: what the CLI calls and what users import.

    from embedflow import embed_folder, open_cache, fit_head, load_model, evaluate, predict
    embed_folder("data/flower_photos")                 # -> cache/embeddings.h5
    clf = fit_head(open_cache(), head="svm", C=10.0)   # in memory; clf.report_ is the validation report
    clf.save("models/svm")
    clf.predict_proba([PIL.Image.open("photo.jpg")])   # (1, n_classes) float32
    evaluate(load_model("models/svm"), "data/test_photos").accuracy
    predict("models/svm", ["photo.jpg"], top_k=3).to_dict()
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING
from pathlib import Path

import numpy as np

from . import backbones, cache, models, options
from .embedding import EmbedSummary
from .embedding import embed_folder as _embed_folder
from .errors import CacheError, FingerprintMismatch, UsageError
from .fsio import fit_name
from .progress import SILENT, Reporter, as_reporter

if TYPE_CHECKING:
    from . import search
    from .audit import AuditResult

DEFAULT_CACHE = Path("cache/embeddings.h5")
DEFAULT_MODELS = Path("models")


def default_cache_for(spec: backbones.BackboneSpec) -> Path:
    """cache/embeddings.h5 for the default backbone (whatever --image-size/--weights), else
    cache/embeddings-<backbone slug>.h5, so caches of several backbones live side by side; a precision
    other than fp32 adds itself (cache/embeddings-int8.h5, cache/embeddings-resnet50-int8.h5), so int8
    and fp32 caches of one backbone live side by side too."""
    if spec.arg == backbones.DEFAULT_BACKBONE and spec.precision == backbones.DEFAULT_PRECISION:
        return DEFAULT_CACHE
    slug = spec.slug if spec.arg != backbones.DEFAULT_BACKBONE else spec.precision  # the slug ends in -int8
    return DEFAULT_CACHE.with_name(f"{DEFAULT_CACHE.stem}-{slug}{DEFAULT_CACHE.suffix}")


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


def _cache_for_model(loaded: models.Classifier) -> Path | None:
    """A cache made with the model's fingerprint, to reuse its vectors: the one it was fitted on, else
    one of cache/embeddings*.h5."""
    for path in models.recorded_caches(loaded.manifest) + embedding_caches():
        try:
            if path.exists() and backbones.same_backbone(cache.read_meta(path)["fingerprint"], loaded.fingerprint):
                return path
        except (CacheError, KeyError, OSError):
            continue
    return None


def _reusable_cache(path: Path, fingerprint: dict, reporter: Reporter) -> Path | None:
    """`path` when it is a cache of the model's backbone; else None, with one warning saying why its vectors
    are not reused (predict then embeds every image itself; evaluate, which embeds into its cache, refuses
    one of another backbone instead)."""
    try:
        have = cache.read_meta(path)["fingerprint"]
    except (CacheError, KeyError, OSError) as e:
        why = "there is no such file" if not path.exists() else f"it cannot be read ({str(e).splitlines()[0]})"
        reporter.warn(f"--cache {path} is not used: {why}; embedding every image")
        return None
    diffs = backbones.differences(have, fingerprint)
    if diffs:
        reporter.warn(f"--cache {path} is not used: its vectors were made with another backbone than the model's "
                      f"(differs in: {', '.join(_difference(k, have, fingerprint) for k in diffs)}); embedding "
                      "every image")
        return None
    return path


def _difference(field: str, have: dict, want: dict) -> str:
    """A fingerprint field that differs, with both values where they are short ("precision fp32, the model's int8")."""
    if field not in ("backbone", "alpha", "image_size", "precision", "weights_sha256"):
        return field
    default = "fp32" if field == "precision" else None
    a, b = (str(fp.get(field, default))[:8 if field == "weights_sha256" else None] for fp in (have, want))
    return f"{field} {a}, the model's {b}"


def embed_folder(root: str | os.PathLike, cache_path: str | os.PathLike | None = None, *,
                 backbone: str | None = None, image_size: int | None = None, weights: str | None = None,
                 precision: str | None = None,
                 rebuild: bool = False, runtime: str = "auto", batch_size: int | None = None, workers: int | None = None,
                 engine: str = "local", address: str | None = None, rehash: bool = False,
                 labels: str | os.PathLike | None = None, unlabelled: bool | None = None, strict: bool = False,
                 reporter: Reporter | str | None = "auto") -> EmbedSummary:
    """Embed a dataset folder into an HDF5 cache (incrementally). See embedflow.embedding.embed_folder.

    Layouts: one subfolder per class; train/ val/ test/ parents of the same class folders (each image's
    split is recorded); `labels`: a CSV of path,label rows (paths relative to root); `unlabelled=True`
    (or a folder whose images are not in class folders): images without labels (label -1), for
    neighbors, duplicates and predict. strict=True: StrictModeError (exit 7) before any work when an
    image-like file, a class or a folder is left out.

    engine="ray" embeds on a Ray cluster (`address`, e.g. "auto" or "ray://host:10001"; default a new
    local one) with `workers` actors; the cache is the same as a local run's.
    root may be an object-store URL ("s3://bucket/prefix/", gs://, az://, memory://: any installed fsspec
    protocol), with the same layouts and keys relative to the prefix; credentials come from the
    filesystem's own environment/config (README, *Images on object storage*).
    backbone: a registry name, mobilenet_v2:ALPHA:SIZE or hub:URL_OR_PATH (see list_backbones());
    without cache_path the cache is default_cache_for(the backbone and precision): cache/embeddings.h5,
    cache/embeddings-int8.h5 with precision "int8".
    precision: "fp32" or "int8" (a full-integer LiteRT backbone, Keras application backbones only; its
    vectors have their own fingerprint, so they never mix with fp32 ones); None: the existing cache's
    precision, else the default (backbones.DEFAULT_PRECISION)."""
    options.check(batch_size=batch_size, **{"ray_workers" if engine == "ray" else "workers": workers})
    # a bad value is refused before the cache is read; without --cache, an explicit precision has its own default
    asked = backbones.get_spec(backbone, image_size, weights, precision)
    cache_path = cache_path if cache_path is not None else default_cache_for(asked)
    if not rebuild:  # an existing cache (or an interrupted run's journal) keeps its precision
        precision = _kept_precision(Path(cache_path), precision)
    spec = backbones.get_spec(backbone, image_size, weights, precision or backbones.DEFAULT_PRECISION)
    return _embed_folder(root, cache_path, spec=spec, rebuild=rebuild, runtime=runtime,
                         batch_size=batch_size, workers=workers, engine=engine, address=address, rehash=rehash,
                         labels=labels, unlabelled=unlabelled, strict=strict, reporter=reporter)


def _kept_precision(cache_path: Path, precision: str | None) -> str | None:
    """`precision` (None: the one the cache was made with, else the one its journal records). An explicit
    precision other than the journal's, with no cache yet, is FingerprintMismatch (exit 3): an existing
    cache of another precision is refused the same way by the embedding itself."""
    recorded = _cache_precision(cache_path)
    journal = cache.Journal(cache_path, "") if recorded is None else None
    if journal is not None:
        recorded = journal.recorded_precision()
    if precision is None:
        return recorded
    if journal is not None and recorded is not None and precision.lower() != recorded:
        raise FingerprintMismatch(
            f"an interrupted run left vectors of precision {recorded} in {journal.dir}, not {precision.lower()}: "
            f"run again without --precision (or with --precision {recorded}) to resume, or pass --rebuild to "
            "discard them")
    return precision


def _cache_precision(path: str | os.PathLike) -> str | None:
    """The precision an existing cache was made with ("fp32" for caches older than --precision), None when
    there is no readable cache there."""
    try:
        return cache.read_meta(Path(path))["fingerprint"].get("precision", "fp32") if Path(path).exists() else None
    except (CacheError, KeyError, OSError):
        return None


def open_cache(path: str | os.PathLike | None = None, *, vectors: bool = False,
               reporter: Reporter | str | None = "auto") -> cache.Cache:
    """The embedding cache at `path` (default: cache/embeddings.h5, else the only cache/embeddings-*.h5) as
    a Cache: X (N, D) float32 read on first use (at once with vectors=True), y, keys, hashes, classes,
    fingerprint, root, failed."""
    reporter = as_reporter(reporter)
    return cache.open_cache(choose_cache(path, reporter), vectors=vectors)


def fit_head(cache_or_path: cache.Cache | str | os.PathLike | None = None, head: str = "logreg", *,
             val_split: float = 0.2, seed: int = 0, class_weight: str | None = None, refit: bool = True,
             runtime: str = "auto", reject_rate: float | None = 0.05, out: str | os.PathLike | None = None,
             reporter: Reporter | str | None = "auto",
             **params):
    """Train a head (logreg, svm, dense, knn) on a cache's vectors; returns the fitted classifier in memory
    (nothing is written: `.save(path)` writes the model folder). `params` are the head's own
    hyper-parameters (logreg/svm: C; dense: epochs, ...; knn: k); one it does not take is a UsageError.
    The classifier's `report_` is the validation report, `split_` the split record, `rejector_` the
    unknown-input rule (reject_rate of the validation vectors rejected; None: no rule). See embedflow.fit.

    out: also save the model folder there (what `embedflow fit` does). Its writer lock is held from before
    training to the end, so a second writer of the same folder gets OutputLocked (exit 5) at once, and a
    folder that cannot be written is OutputError before the training."""
    options.check(val_split=val_split, seed=seed, reject_rate=reject_rate, **params)
    from .heads import check_head_params

    check_head_params(head, {k: v for k, v in params.items() if v is not None})  # before any folder is made
    reporter = as_reporter(reporter)
    from .fit import fit_head as _fit_head

    data = cache_or_path if isinstance(cache_or_path, cache.Cache) else choose_cache(cache_or_path, reporter)
    if out is None:
        return _fit_head(data, head, val_split=val_split, seed=seed, class_weight=class_weight, refit=refit,
                         runtime=runtime, reject_rate=reject_rate, reporter=reporter, **params)
    with models.writing(out, reporter):
        clf = _fit_head(data, head, val_split=val_split, seed=seed, class_weight=class_weight, refit=refit,
                        runtime=runtime, reject_rate=reject_rate, reporter=reporter, **params)
        clf.save(out)
    return clf


def load_model(path: str | os.PathLike, *, runtime: str = "auto", trust: bool = False) -> models.Classifier:
    """The classifier at `path` (a model folder from fit_head(...).save, finetune or export, or a .tflite
    file); see embedflow.models.load_model. A folder this installation did not write (its manifest is not
    signed with this user's key) is refused (UntrustedModel, exit 5) unless `trust=True`, except TFLite."""
    return models.load_model(path, runtime=runtime, trust=trust)


def _eval_cache_path(folder: Path, fingerprint: dict) -> Path:
    """The default cache of a folder evaluated by a head: cache/NAME-HASH-ID.h5, HASH from the folder's
    absolute path, ID the first 8 hex digits of the backbone fingerprint's id (backbone, weights, size,
    precision), so models of different backbones (fp32 and int8) never share one."""
    digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]
    tail = f"-{digest}-{str(fingerprint['id'])[:8]}.h5"
    return DEFAULT_CACHE.parent / fit_name(folder.resolve().name, tail)  # within NAME_MAX


def _model_and_name(model, runtime: str, trust: bool) -> tuple[models.Classifier, str]:
    if isinstance(model, models.Classifier):
        return model, str(model.path or model.kind)
    return models.load_model(model, runtime=runtime, trust=trust), str(model)


def evaluate(model, data: str | os.PathLike, *, cache_path: str | os.PathLike | None = None,
             out: str | os.PathLike | None = None, runtime: str = "auto", weights: str | None = None,
             split: str | None = None, trust: bool = False, reporter: Reporter | str | None = "auto"):
    """Score a model (a Classifier or a model path) on a labelled folder or a cache file; returns an
    EvalResult (`.to_dict()` is the report JSON). A head embeds a folder through a cache of its own
    (`cache_path`, default cache/NAME-HASH-ID.h5); other kinds run on the folder's decoded images.
    Writes eval-report.json / eval-confusion.{json,png} into `out` only when it is given.
    Data from train/ val/ test/ folders: `split` ("train", "val", "test", "all"; default test/ if any)."""
    reporter = as_reporter(reporter)
    from .evaluate import evaluate as _evaluate

    clf, name = _model_and_name(model, runtime, trust)
    data = Path(data)
    if data.is_dir() and cache_path is None and hasattr(clf, "predict_proba_vectors"):
        cache_path = _eval_cache_path(data, clf.fingerprint)
    return _evaluate(clf, data, cache_path=cache_path, weights=weights, name=name, out=out, split=split,
                     reporter=reporter)


def report(model, data: str | os.PathLike | None = None, *, cache_path: str | os.PathLike | None = None,
           out: str | os.PathLike | None = None, runtime: str = "auto", trust: bool = False,
           reporter: Reporter | str | None = "auto") -> Path:
    """Write the self-contained HTML report page of a model (a Classifier or a model path); returns its path.

    data: a labelled folder (a head embeds it through `cache_path`, default cache/NAME-HASH-ID.h5) scored as
    by evaluate; with only cache_path, that cache is scored; with neither, a head's recorded validation
    images are scored from the cache it was fitted on. out: the .html file (default: in the model folder,
    eval-report.html, or report-validation.html without data); trust as for load_model. See
    evaluate.html_report."""
    reporter = as_reporter(reporter)
    from .evaluate import html_report

    clf, name = _model_and_name(model, runtime, trust)
    if data is None and cache_path is not None:
        data, cache_path = Path(cache_path), None
    elif data is not None:
        data = Path(data)
        if data.is_dir() and cache_path is None and hasattr(clf, "predict_proba_vectors"):
            cache_path = _eval_cache_path(data, clf.fingerprint)
    model_cache = _cache_for_model(clf) if data is None and hasattr(clf, "manifest") else None
    return html_report(clf, data, cache_path=cache_path, model_cache=model_cache, out=out, name=name,
                       reporter=reporter)


def predict(model, images, *, top_k: int = 3, cache_path: str | os.PathLike | None = "auto", runtime: str = "auto",
            reject: bool = True, trust: bool = False, reporter: Reporter | str | None = "auto"):
    """Top-k labels for images (files and folders, or PIL images / uint8 arrays) with a model (a Classifier
    or a model path); returns a PredictResult (`.to_dict()`: {"model", "predictions": [{"path", "top":
    [{"label", "probability"}]}], "failed"}). A head reuses the vectors of files already in a cache of its
    backbone (same sha256): cache_path "auto" looks for one, None uses none. A head fitted with a validation
    split carries an unknown-input rule: each prediction then has "unknown" (bool) and "unknown_score";
    reject=False turns it off."""
    reporter = as_reporter(reporter)
    from .predict import predict as _predict

    options.check(top_k=top_k)
    clf, name = _model_and_name(model, runtime, trust)
    if cache_path == "auto":
        cache_path = _cache_for_model(clf) if hasattr(clf, "predict_proba_vectors") else None
    elif cache_path is not None and hasattr(clf, "predict_proba_vectors"):
        cache_path = _reusable_cache(Path(cache_path), clf.fingerprint, reporter)
    return _predict(clf, images, top_k=top_k, cache_path=cache_path, name=name, reject=reject, reporter=reporter)


# --- image models: fine-tuned, fused, TFLite (embedflow.finetune, embedflow.export, embedflow.explain) ---


def finetune(data: str | os.PathLike, out: str | os.PathLike = DEFAULT_MODELS / "finetuned", *,
             backbone: str = "mobilenet_v2", image_size: int | None = None, weights: str | None = None,
             spec: backbones.BackboneSpec | None = None, val_split: float = 0.2, seed: int = 0,
             params: dict | None = None, reporter: Reporter | str | None = "auto"):
    """Fine-tune the backbone and a softmax head end to end on a class-per-subfolder tree (no cache).
    Returns embedflow.finetune.FinetuneResult (`.load()`: the Classifier); see that module for the recipe."""
    p = params or {}
    options.check(val_split=val_split, seed=seed, stage1_epochs=p.get("epochs"),
                  **{k: v for k, v in p.items() if k != "epochs"})
    reporter = as_reporter(reporter)
    from .finetune import finetune as _finetune

    spec = spec or backbones.get_spec(backbone, image_size, weights)
    backbones.require_fine_tunable(spec)
    return _finetune(data, out, spec=spec, val_split=val_split, seed=seed, params=params,
                              reporter=reporter)


def export(model: str | os.PathLike, fmt: str = "tflite", quantize: str = "none", out: str | os.PathLike | None = None,
           *, data: str | os.PathLike | None = None, cache_path: str | os.PathLike | None = None,
           strict: bool = False, trust: bool = False, reporter: Reporter | str | None = "auto"):
    """Export a fine-tuned model or a fusable cached head (logreg, dense), a Classifier or a model path, to
    TFLite or a fused Keras model, with a parity check on the validation images (a warning when they
    changed since the model was trained). Returns embedflow.export.ExportResult (`.load()`: the Classifier)."""
    reporter = as_reporter(reporter)
    from .export import export as _export

    return _export(model, fmt, quantize, out, trust=trust, data_root=str(data) if data else None,
                          cache_path=str(cache_path) if cache_path else None, strict=strict, reporter=reporter)


def explain(model: str | os.PathLike, images: list[str | os.PathLike], out: str | os.PathLike = "gradcam", *,
            trust: bool = False, reporter: Reporter | str | None = "auto") -> dict:
    """Grad-CAM overlays (PNG) for images, and a grid for several, from a fine-tuned or fused model (a
    Classifier or a model path)."""
    reporter = as_reporter(reporter)
    from .explain import explain as _explain

    return _explain(model, [str(i) for i in images], out, trust=trust, reporter=reporter)


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

    options.check(neighbors_k=k)
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

    options.check(threshold=threshold)
    search.check_threshold(threshold)
    reporter = as_reporter(reporter)
    cache_path = choose_cache(cache_path, reporter)
    return search.find_duplicates(cache_path, search.searchable(cache_path), threshold, method, reporter)


def list_backbones() -> list[dict]:
    """The backbone registry: name, family, dims, input size, preprocessing, weights and whether they
    are on this machine (never downloads). See embedflow.backbones."""
    return backbones.listing()


def audit(cache_path: str | os.PathLike | None = None, *, against: str | os.PathLike | None = None, top: int = 10,
          out: str | os.PathLike | None = None, reporter: Reporter | str | None = "auto") -> AuditResult:
    """What the cached vectors say about the data, from the cache alone: label issues (every image, most
    suspicious first: score = 1 - p(given label) from 5-fold logistic regression and a 10-NN vote),
    outliers (far from the rest of their class), near-duplicate groups (cosine >= 0.92 or identical
    files; cross-class ones first) and, with `against` (a cache of the same backbone, else
    FingerprintMismatch), the images of that cache with a near-copy in this one (train/test leakage).
    out: a folder for audit.json, audit.csv (one row per image) and label-issues.png (the `top` label
    issues). Returns an audit.AuditResult (`.to_dict()` is {"cache", "n_images", "classes", "threshold",
    "top", "label_issues": [{"key", "given", "suggested", "score"}], "outliers": [{"key", "label", "score"}],
    "duplicates": [group as in duplicates()], "against", "leaks": [{"key", "label", "other_key",
    "other_label", "score"}], "files"}). Raises CacheError (missing, damaged), DatasetError (unlabelled or
    single-class cache), UsageError (top < 0)."""
    from .audit import audit as _audit
    from .progress import as_reporter

    options.check(top=top)
    reporter = as_reporter(reporter)
    return _audit(choose_cache(cache_path, reporter), against=against, top=top, out=out, reporter=reporter)
