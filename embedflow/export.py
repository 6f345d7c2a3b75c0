"""Deployable models: TFLite export (optionally quantized) and fusing a cached head with its backbone.

A head trained on cached vectors (logreg or dense) is fused with the backbone into ONE Keras model,
uint8 image -> class probabilities (logreg: StandardScaler and LogisticRegression folded into one
softmax Dense layer; dense: its softmax Dense layer, built from coef_/intercept_), so deployment needs
neither the cache nor scikit-learn.
Every export runs a parity check on the source model's validation images and records it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import backbones, cache, models
from .__about__ import __version__
from .errors import CacheError, DatasetError, ModelError, StrictModeError, UsageError
from .fsio import fit_name
from .embedding import Decoded, decode_refs, refs_for_keys
from .progress import SILENT, Reporter
from .reports import deploy_files

QUANTIZE = ("none", "dynamic", "float16", "int8")
FORMATS = ("tflite", "keras")
PARITY_THRESHOLD = 0.99  # top-1 agreement every export (float or quantized) must reach with its source
FLOAT_PARITY = PARITY_THRESHOLD  # the name before quantized exports were gated too
REPRESENTATIVE_IMAGES = 100
# Fewer training images than this cannot calibrate int8 activation ranges faithfully (a 14-image set gave
# one class for every image): the export then falls back to dynamic-range quantization (int8 weights,
# float activations) and says so.
MIN_CALIBRATION_IMAGES = 50


class NotFusable(ModelError):
    """The head cannot be written as layers on top of the backbone (an RBF SVM, kNN...)."""


@dataclass
class Source:
    """What is exported: a Keras image model, the validation images and the source model's outputs on them."""

    model: object  # keras.Model, uint8 pixels -> probabilities
    manifest: dict
    classes: list[str]
    fingerprint: dict
    val: Decoded
    source_proba: np.ndarray  # the source model's probabilities on val
    train_refs: list  # for int8 calibration
    split: dict
    data_root: str
    fused_from: str | None = None
    # the same model with a logreg head's StandardScaler kept as its own float ops instead of folded into the
    # Dense kernel (what quantized exports convert: a folded 1/scale makes the kernel's range too wide for int8)
    unfolded: object | None = None


@dataclass
class ExportResult:
    out_dir: Path
    model_file: Path
    fmt: str
    quantize: str
    parity: dict
    seconds: float

    def load(self):
        """The exported model as a Classifier (models.load_model)."""
        return models.load_model(self.out_dir)


# --- fusing --------------------------------------------------------------------------------------


def fuse(loaded: models.HeadClassifier, spec, weights_path=None, fold_scaler: bool = True):
    """keras.Model: uint8 image -> probabilities of the cached head (logreg or dense) on the backbone.
    fold_scaler=False keeps a logreg head's standardisation as a Normalization layer before its Dense
    layer (for quantization) instead of folding it into the Dense kernel."""
    from .models.keras_parts import assemble, split_parts

    head = loaded.manifest.get("head")
    backbone = backbones.build_keras_backbone(spec, weights_path)
    pre, base, _ = split_parts(backbone)
    if head == "logreg":
        layers = (logreg_layers(loaded.estimator, len(loaded.classes), spec.output_dim) if not fold_scaler
                  else [logreg_dense_layer(loaded.estimator, len(loaded.classes), spec.output_dim)])
    elif head == "dense":
        layers = [dense_head_layer(loaded.estimator, len(loaded.classes), spec.output_dim)]
    else:
        raise NotFusable(f"a {head} head cannot be fused into the network (only logreg and dense heads are "
                         "layers on the features); fit a logreg or dense head to export it")
    return assemble(pre, base, layers, spec.image_size, f"embedflow_fused_{head}")


def _logreg_parts(pipeline, dim: int):
    scaler, clf = pipeline.named_steps["scale"], pipeline.named_steps["clf"]
    mean = scaler.mean_ if scaler.with_mean else np.zeros(dim)
    scale = scaler.scale_ if scaler.with_std and scaler.scale_ is not None else np.ones(dim)
    coef, intercept = np.asarray(clf.coef_, dtype=np.float64), np.asarray(clf.intercept_, dtype=np.float64)
    if coef.shape[0] == 1:  # binary: sigmoid(z) == softmax([0, z])
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    return mean, scale, coef, intercept, [int(c) for c in clf.classes_]


def _softmax_dense(kernel_part, bias_part, cols, n_classes: int, dim: int):
    import keras

    kernel = np.zeros((dim, n_classes))
    bias = np.full(n_classes, -1e9)  # classes the head never saw get probability 0
    kernel[:, cols], bias[cols] = kernel_part, bias_part
    layer = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")
    layer.build((None, dim))
    layer.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return layer


def logreg_dense_layer(pipeline, n_classes: int, dim: int):
    """One softmax Dense layer equal to StandardScaler + (multinomial) LogisticRegression."""
    mean, scale, coef, intercept, cols = _logreg_parts(pipeline, dim)
    return _softmax_dense((coef / scale).T, intercept - (mean / scale) @ coef.T, cols, n_classes, dim)


def dense_head_layer(head, n_classes: int, dim: int):
    """The softmax Dense layer of a dense head (heads.DenseHead, trained in numpy): kernel coef_.T, bias
    intercept_ (the Keras layer it replaced at fit time, built here because export imports Keras anyway)."""
    return _softmax_dense(np.asarray(head.coef_).T, np.asarray(head.intercept_), [int(c) for c in head.classes_],
                          n_classes, dim)


def logreg_layers(pipeline, n_classes: int, dim: int) -> list:
    """StandardScaler + LogisticRegression as two layers: a Normalization ((x - mean) / scale, float
    element-wise ops) and a softmax Dense layer on standardised features, whose kernel (the logistic
    regression's coefficients) has a range int8 weights can hold."""
    import keras

    mean, scale, coef, intercept, cols = _logreg_parts(pipeline, dim)
    norm = keras.layers.Normalization(mean=mean.astype(np.float32), variance=(scale ** 2).astype(np.float32),
                                      name="standardise")
    norm.build((None, dim))
    return [norm, _softmax_dense(coef.T, intercept, cols, n_classes, dim)]


# --- sources -------------------------------------------------------------------------------------


def load_source(clf: models.Classifier, model_dir: Path, *, data_root: str | None = None,
                cache_path: str | None = None, reporter: Reporter = SILENT) -> Source:
    if isinstance(clf, models.HeadClassifier):
        return _cached_head_source(model_dir, clf, data_root, cache_path, reporter)
    if hasattr(clf, "keras_model"):
        return _image_model_source(model_dir, clf, data_root, reporter)
    raise UsageError(f"{model_dir} is already an export ({clf.kind}); export its source model instead")


def _image_model_source(model_dir, clf, data_root, reporter) -> Source:
    from .data import discover_labelled
    from .models.keras_parts import predict_pixels

    manifest, model = clf.manifest, clf.keras_model
    root = Path(data_root or manifest["data"]["root"])
    if not root.is_dir():
        raise DatasetError(f"the parity check needs the validation images of {model_dir}, from {root}, which is "
                           "not there; pass --data FOLDER")
    refs, _, _ = discover_labelled(root)
    check = models.check_split(manifest["split"], [r.key for r in refs])
    in_val = {refs[i].key for i in check.rows}
    val_refs = [r for r in refs if r.key in in_val]
    train_refs = [r for r in refs if r.key not in in_val]
    val = _decode(val_refs, manifest, reporter)
    recorded = dict(zip(manifest["split"]["val_keys"], manifest["split"].get("val_hashes") or []))
    check.changed = [r.key for r, h in zip(val.refs, val.hashes) if recorded.get(r.key, h) != h]
    _warn_split(check, f"the images in {root}", reporter)
    return Source(model, manifest, clf.classes, clf.fingerprint, val, predict_pixels(model, val.pixels),
                  train_refs, manifest["split"], str(root.resolve()))


NO_SPLIT_PARITY_IMAGES = 300  # training images a head fitted without a validation split is checked on


def _cached_head_source(model_dir, loaded, data_root, cache_path, reporter) -> Source:
    manifest = loaded.manifest
    spec = backbones.spec_from_fingerprint(loaded.fingerprint)
    backbones.check_compatible(backbones.fingerprint(spec), loaded.fingerprint, "the backbone weights found now",
                               f"model {model_dir} was trained on vectors of another backbone")
    model = fuse(loaded, spec)
    fused_fp = loaded.fingerprint  # the backbone inside the export: float32 even for a head of int8 vectors
    if (trained_on := _trained_precision(loaded.fingerprint)) != "fp32":
        reporter.warn(f"{model_dir} was trained on {trained_on} vectors; the export fuses "
                      "the float32 backbone, and its parity check measures the difference")
        fused_fp = backbones.fingerprint(replace(spec, precision="fp32"))
    candidates = [Path(cache_path)] if cache_path else models.recorded_caches(manifest)
    cache_path = next((p for p in candidates if p.is_file()), None)
    if cache_path is None:
        raise CacheError(f"the parity check needs the cache {model_dir} was trained from "
                         f"({candidates[0] if candidates else 'unknown'}), which is not there; pass --cache PATH")
    held = cache.load(cache_path)
    backbones.check_compatible(held.fingerprint, loaded.fingerprint, f"cache {cache_path}")
    split = manifest.get("split", {})
    train_rows, val_rows = _recorded_split(split, held, cache_path, reporter)
    parity_on = "validation images"
    if not len(val_rows):  # agreement with the source needs images, not held-out ones: use training images
        val_rows = np.sort(np.random.default_rng(0).permutation(train_rows)[:NO_SPLIT_PARITY_IMAGES])
        parity_on = "training images (the model was fitted without a validation split)"
        reporter.info(f"{model_dir} was fitted without a validation split: the parity check compares export and "
                      f"source on {len(val_rows)} of its training images (agreement, not accuracy)")
    root = Path(data_root or held.root)
    if not root.is_dir():
        raise DatasetError(f"the parity check needs the images of {cache_path}, in {root}, which is not there; "
                           "pass --data FOLDER")
    val_refs = refs_for_keys(root, [held.keys[i] for i in val_rows], [held.classes[held.labels[i]] for i in val_rows])
    val = _decode(val_refs, manifest, reporter)
    val.labels = np.array([loaded.classes.index(r.label) for r in val.refs], dtype=np.int64)
    row_of = {held.keys[i]: i for i in val_rows}
    source_proba = loaded._proba_vectors(held.embeddings[[row_of[r.key] for r in val.refs]])
    train_refs = refs_for_keys(root, [held.keys[i] for i in train_rows],
                               [held.classes[held.labels[i]] for i in train_rows])
    unfolded = fuse(loaded, spec, fold_scaler=False) if manifest.get("head") == "logreg" else None
    return Source(model, manifest, loaded.classes, fused_fp, val, source_proba, train_refs,
                  {**split, "val_keys": [r.key for r in val.refs], "parity_on": parity_on}, str(root.resolve()),
                  fused_from=manifest.get("head"),
                  unfolded=unfolded)


def _recorded_split(split: dict, held, cache_path, reporter) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows) of the cache read now for the split the model recorded; a warning
    when the cache changed since. Older folders record no keys: the split is computed again and checked
    against the recorded digest of its keys."""
    check = models.check_split(split, held.keys, held.hashes)
    if check is None:
        train, val = models.split_indices(held.labels, held.hashes, held.classes, split.get("val_split", 0.2),
                                          split.get("seed", 0))
        digest = hashlib.sha256("\n".join(held.keys[i] for i in val).encode()).hexdigest()
        if split.get("val_keys_sha256") and len(val) and digest != split["val_keys_sha256"]:
            reporter.warn(f"cache {cache_path} changed since the model was trained: its validation split, computed "
                          "again, is not the recorded one (the model may have seen some of these images)")
        return train, val
    _warn_split(check, f"cache {cache_path}", reporter)
    val = np.sort(check.rows)
    return np.setdiff1d(np.arange(len(held)), val), val


def _warn_split(check, what: str, reporter: Reporter) -> None:
    line = check.warning(what)
    if line:
        reporter.warn(line)


def _decode(refs, manifest, reporter) -> Decoded:
    val = decode_refs(refs, int(manifest["fingerprint"]["image_size"]), manifest["classes"], reporter=reporter,
                      description="decoding validation images")
    for ref, reason in val.failed:
        reporter.warn(f"skipped {ref.key}: {reason}")
    if not len(val):
        raise DatasetError("none of the validation images could be read: cannot check parity")
    return val


# --- conversion ----------------------------------------------------------------------------------


def to_tflite(model, quantize: str, representative: np.ndarray | None = None) -> bytes:
    backbones.quiet_tensorflow()
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        def samples():
            for i in range(len(representative)):
                yield [representative[i:i + 1]]

        converter.representative_dataset = samples
    # Keras' export prints every captured variable; the converter's C++ side notes its settings on fd 2
    # (a failed conversion still raises, with its message)
    with contextlib.redirect_stdout(io.StringIO()), backbones.stderr_fd_silenced(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        return backbones.space_guarded(converter.convert, model)


def parity(proba: np.ndarray, source_proba: np.ndarray, labels: np.ndarray) -> dict:
    pred, want = proba.argmax(1), source_proba.argmax(1)
    return {"n": int(len(pred)), "top1_agreement": float(np.mean(pred == want)),
            "accuracy": float(np.mean(pred == labels)), "source_accuracy": float(np.mean(want == labels)),
            "max_abs_probability_diff": float(np.abs(proba - source_proba).max()) if len(pred) else 0.0}


# --- the export ----------------------------------------------------------------------------------


def export(model, fmt: str = "tflite", quantize: str = "none", out=None, *, trust: bool = False,
           data_root: str | None = None, cache_path: str | None = None, strict: bool = False,
           reporter: Reporter = SILENT) -> ExportResult:
    """Export `model` (a Classifier, or the path of a fine-tuned model folder or of a logreg/dense head's
    folder) to `out` (default: beside the source, see default_name), with the parity check.

    Every export (float or quantized) is gated: a top-1 agreement with the source below PARITY_THRESHOLD
    on the validation images is a warning and `"ok": false` in the manifest's parity; with strict=True the
    export is still written, then StrictModeError (exit 7) is raised. int8 calibrates on up to 100
    training images (parity["calibration_images"]); with fewer than MIN_CALIBRATION_IMAGES it falls back
    to dynamic-range quantization (parity["fallback"], manifest "quantize": "dynamic",
    "quantize_requested": "int8"). A logreg head is quantized with its standardisation unfolded (float ops).
    Raises UsageError (bad format/quantization, already an export), NotFusable, DatasetError/CacheError
    when the validation images or the cache are not there."""
    t0 = time.perf_counter()
    if fmt not in FORMATS:
        raise UsageError(f"unknown format '{fmt}': use {' or '.join(FORMATS)}")
    if quantize not in QUANTIZE:
        raise UsageError(f"unknown quantization '{quantize}': use {', '.join(QUANTIZE)}")
    if fmt == "keras" and quantize != "none":
        raise UsageError("--quantize applies to --format tflite only")
    clf = model if isinstance(model, models.Classifier) else models.load_model(model, trust=trust)
    if clf.path is None and out is None:
        raise UsageError("this model was never saved: give the export an out folder")
    model_dir = Path(clf.path) if clf.path is not None else Path(clf.kind)
    out_dir = Path(out) if out else model_dir.parent / default_name(model_dir, fmt, quantize)
    if clf.path is not None and out_dir.resolve() == model_dir.resolve():
        raise UsageError("--out must differ from the source model folder")
    with models.writing(out_dir, reporter):  # another writer, a read-only folder: refused before the work
        return _export(clf, model_dir, out_dir, fmt, quantize, data_root, cache_path, reporter, t0, strict)


def _export(clf, model_dir: Path, out_dir: Path, fmt: str, quantize: str, data_root, cache_path, reporter,
            t0: float, strict: bool) -> ExportResult:
    src = load_source(clf, model_dir, data_root=data_root, cache_path=cache_path, reporter=reporter)
    if fmt == "keras" and not src.fused_from:
        raise UsageError(f"{model_dir} is already a Keras image model ({src.manifest['kind']}): nothing to fuse")
    with models.staged_folder(out_dir) as staged:
        files, result = _write_export(staged, src, fmt, quantize, reporter)
        applied = result.get("quantize_applied", quantize)
        checked = result.get("tflite", result.get("fused_keras"))
        ok = checked["top1_agreement"] >= PARITY_THRESHOLD
        if not ok:
            reporter.warn(f"parity below {PARITY_THRESHOLD:.0%}: the {'float32' if applied == 'none' else applied} "
                          f"export disagrees with its source on {1 - checked['top1_agreement']:.1%} of the "
                          f"{checked['n']} validation images (top-1 agreement {checked['top1_agreement']:.1%})")
        model_file = "model.tflite" if fmt == "tflite" else "model.keras"
        _write_manifest(staged, src, model_dir, fmt, applied, model_file, files,
                        {**result, "threshold": PARITY_THRESHOLD, "ok": ok}, time.perf_counter() - t0, target=out_dir,
                        requested=quantize)
    parity_result = {**result, "threshold": PARITY_THRESHOLD, "ok": ok}
    if strict and not ok:
        raise StrictModeError(f"wrote {out_dir}, but its top-1 agreement with the source is "
                              f"{checked['top1_agreement']:.1%}, below {PARITY_THRESHOLD:.0%}, and --strict is set")
    return ExportResult(out_dir, out_dir / model_file, fmt, applied, parity_result, time.perf_counter() - t0)


def _write_export(out_dir: Path, src: Source, fmt: str, quantize: str, reporter: Reporter) -> tuple[dict, dict]:
    """The model file(s) and labels.txt in out_dir, with the parity of each against the source:
    ({file name: sha256}, {"fused_keras"/"tflite": parity, "note"?})."""
    from .embedding import decode_refs as _decode_refs
    from .models.image_models import TFLiteImageClassifier
    from .models.keras_parts import predict_pixels

    labels = src.val.labels
    result, files = {}, {}
    if src.fused_from:
        fused_proba = predict_pixels(src.model, src.val.pixels)
        result["fused_keras"] = parity(fused_proba, src.source_proba, labels)
        src.model.save(out_dir / "model.keras")
        files["model.keras"] = models.sha256_file(out_dir / "model.keras")
    if fmt == "tflite":
        representative = None
        if quantize == "int8":
            rng = np.random.default_rng(0)
            pick = rng.choice(len(src.train_refs), min(REPRESENTATIVE_IMAGES, len(src.train_refs)), replace=False)
            representative = _decode_refs([src.train_refs[i] for i in sorted(pick)],
                                          int(src.fingerprint["image_size"]), src.classes).pixels
            result["calibration_images"] = int(len(representative))
            if not len(representative):
                raise DatasetError("no training image could be read for the int8 representative set")
            if len(representative) < MIN_CALIBRATION_IMAGES:
                result["fallback"] = (f"int8 needs at least {MIN_CALIBRATION_IMAGES} calibration images, the training "
                                      f"split has {len(representative)}: exported with dynamic-range quantization "
                                      "(int8 weights, float activations) instead")
                reporter.warn(result["fallback"])
                quantize, representative = "dynamic", None
                result["quantize_applied"] = "dynamic"
        reporter.info(f"converting to TFLite ({quantize if quantize != 'none' else 'float32'}"
                      + (f", calibrated on {len(representative)} training images" if representative is not None else "")
                      + ")")
        model = src.unfolded if quantize in ("dynamic", "int8") and src.unfolded is not None else src.model
        # the metadata goes in before the parity check, so the check runs on the file that ships
        (out_dir / "model.tflite").write_bytes(with_metadata(to_tflite(model, quantize, representative), src,
                                                             quantize))
        files["model.tflite"] = models.sha256_file(out_dir / "model.tflite")
        tfl = TFLiteImageClassifier(out_dir, {"classes": src.classes}, out_dir / "model.tflite")
        result["tflite"] = parity(tfl.predict_pixels(src.val.pixels), src.source_proba, labels)
    if src.manifest.get("split", {}).get("refit_on_all"):
        result["note"] = ("the source model was refit on all its data, validation images included: accuracy here "
                          "is not a held-out estimate; agreement is what this check measures")
    return files, result


def default_name(model_dir: Path, fmt: str, quantize: str) -> str:
    if fmt == "keras":
        return fit_name(model_dir.name, "-fused")
    return fit_name(model_dir.name, "-tflite" + ("" if quantize == "none" else f"-{quantize}"))  # within NAME_MAX


def _write_manifest(out_dir, src: Source, model_dir, fmt, quantize, model_file, files, parity_result, seconds,
                    target=None, requested=None):
    manifest = {
        "kind": "tflite" if fmt == "tflite" else "fused",
        "model_file": model_file, "keras_file": "model.keras" if "model.keras" in files else None,
        "classes": src.classes, "labels_file": "labels.txt", "fingerprint": src.fingerprint,
        "image_size": int(src.fingerprint["image_size"]),
        "input": "uint8 RGB (N, S, S, 3): EXIF-rotated, RGB over white, bilinear resize to a square (no crop)",
        "preprocessing": f"inside the model: {src.fingerprint['preprocessing']}",
        "output": "float32 (N, classes) softmax probabilities, columns in labels.txt order",
        "quantize": quantize if fmt == "tflite" else None,
        **({"quantize_requested": requested} if fmt == "tflite" and requested not in (None, quantize) else {}),
        "source": {"path": str(model_dir), "kind": src.manifest.get("kind"), "head": src.fused_from,
                   "metrics": src.manifest.get("metrics", {})},
        "data": {**_source_data(src.manifest), "root": src.data_root}, "split": src.split,
        "parity": parity_result, "files": files, "export_seconds": round(seconds, 2),
    }
    trained_on = _trained_precision(src.manifest.get("fingerprint") or {})
    if src.fused_from and trained_on != _trained_precision(src.fingerprint):
        manifest["backbone_precision"] = {"fused": _trained_precision(src.fingerprint), "head_trained_on": trained_on,
                                          "head_fingerprint_id": src.manifest["fingerprint"].get("id")}
    # labels.txt and README.md (the model card, with the source model's validation report)
    models.write_members(out_dir, manifest, deploy_files(manifest, _source_report(model_dir), str(target or out_dir)))
    models.write_manifest(out_dir, manifest)


def _trained_precision(fingerprint: dict) -> str:
    """The precision of the vectors a head was trained on ("fp32" or "int8"); a fused export always runs the
    float32 Keras backbone (an int8 LiteRT backbone has no Keras form to fuse)."""
    return fingerprint.get("precision", "fp32")


def _source_data(manifest: dict) -> dict:
    """What the source model records about its images: count, class_counts, skipped."""
    data = {**(manifest.get("data") or {})}
    if "count" not in data and (manifest.get("cache") or {}).get("count") is not None:
        data["count"] = manifest["cache"]["count"]
    return {k: data[k] for k in ("count", "class_counts", "skipped") if k in data}


def _source_report(model_dir: Path) -> dict | None:
    """The source model's validation report (report.json), or None when it has none or it is unreadable."""
    try:
        report = json.loads(models.read_regular(Path(model_dir) / "report.json", "report"))
    except (ModelError, OSError, ValueError):
        return None
    return report if isinstance(report, dict) and {"n", "accuracy", "per_class"} <= set(report) else None


def with_metadata(model: bytes, src: Source, quantize: str) -> bytes:
    """The TFLite model with its image-classifier metadata: names, input meaning, the labels file packed in."""
    from .models.tflite_metadata import add_metadata

    size = int(src.fingerprint["image_size"])
    backbone = src.fingerprint.get("backbone_arg") or src.fingerprint.get("backbone")
    what = f"a {src.fused_from} head on {backbone}" if src.fused_from else f"fine-tuned {backbone}"
    accuracy = (src.manifest.get("metrics") or {}).get("accuracy")
    n_val = src.manifest.get("split", {}).get("n_val", len(src.val))
    scored = f" Validation accuracy {accuracy:.1%} on {n_val} images." if isinstance(accuracy, float) else ""
    return add_metadata(
        model, src.classes, name=f"embedflow image classifier ({what})", version=__version__,
        description=(f"Classifies an image into one of {len(src.classes)} classes: {', '.join(src.classes)}. "
                     f"Made with embedflow from {Path(src.data_root).name}/ ({what}, "
                     f"{'float32' if quantize == 'none' else quantize} weights).{scored}"),
        author=f"embedflow {__version__}", image_size=size,
        input_description=(f"uint8 RGB image, {size}x{size}, resized without cropping; the preprocessing "
                           f"({src.fingerprint['preprocessing']}) is inside the model"),
        output_description="softmax probabilities, one per class, in labels.txt order")
