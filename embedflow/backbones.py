"""Registry of backbone specs, weight resolution, fingerprints, and the two inference runtimes.

A *spec* says what a backbone is (input size, preprocessing, output dimension, where its weights come
from). Its *fingerprint* adds the sha256 of the actual weights file: two artifacts are compatible exactly
when their fingerprint ids are equal. Nothing here imports TensorFlow until a model is really built, so
a warm `embed` (nothing new to embed) never pays for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .__about__ import __version__
from .errors import UsageError, WeightsError

# Bump when the way vectors are computed changes (decode, resize, preprocessing): old caches then
# no longer match and are refused instead of being mixed with new vectors.
EMBEDDING_VERSION = 1
KERAS_WEIGHTS_ORIGIN = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"


@dataclass(frozen=True)
class BackboneSpec:
    name: str  # registry name, e.g. "mobilenet_v2"
    alpha: float  # width multiplier
    image_size: int  # square input side in pixels
    output_dim: int  # length of the pooled feature vector
    preprocessing: str  # how uint8 pixels become model inputs
    weights: str = "imagenet"  # "imagenet" (Keras' own download/cache mechanism) or a file path

    @property
    def keras_weights_file(self) -> str:
        """File name Keras uses for these ImageNet weights (always the 224 file: the convolution
        weights do not depend on the input size, and it is the one every size can load)."""
        return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(self.alpha)}_224_no_top.h5"


_MOBILENET_V2 = BackboneSpec(
    name="mobilenet_v2",
    alpha=1.0,
    image_size=224,
    output_dim=1280,
    preprocessing="mobilenet_v2: x/127.5 - 1 (pixels to [-1, 1])",
)
REGISTRY: dict[str, BackboneSpec] = {"mobilenet_v2": _MOBILENET_V2}
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 96, 224


def get_spec(name: str = "mobilenet_v2", image_size: int | None = None, weights: str | None = None) -> BackboneSpec:
    if name not in REGISTRY:
        raise UsageError(f"unknown backbone '{name}'; available: {', '.join(sorted(REGISTRY))}")
    spec = REGISTRY[name]
    if image_size is not None:
        if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
            raise UsageError(f"--image-size must be between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE}, got {image_size}")
        spec = replace(spec, image_size=int(image_size))
    if weights is not None and weights != "imagenet":
        path = Path(weights)
        if not path.is_file():
            raise WeightsError(f"weights file not found: {weights}")
        spec = replace(spec, weights=str(path.resolve()))
    return spec


def spec_from_fingerprint(fp: dict) -> BackboneSpec:
    """The spec an artifact was made with, to embed new images the same way."""
    spec = get_spec(fp["backbone"], fp["image_size"])
    weights = fp.get("weights_source", "imagenet")
    if weights != "imagenet" and not Path(weights).is_file():
        raise WeightsError(
            f"this artifact was made with the weights file {weights}, which is not there any more; "
            "pass --weights with a copy of it"
        )
    return replace(spec, weights=weights)


# --- weights -------------------------------------------------------------------------------------


def _keras_home() -> Path:
    """Where Keras looks for cached downloads (mirrors keras.src.backend.config / file_utils)."""
    if "KERAS_HOME" in os.environ:
        home = Path(os.environ["KERAS_HOME"]).expanduser()
    else:
        base = Path.home() if os.access(Path.home(), os.W_OK) else Path("/tmp")
        home = base / ".keras"
    if not os.access(home, os.W_OK):
        home = Path("/tmp/.keras")
    return home


def resolve_weights(spec: BackboneSpec) -> Path:
    """Path of the weights file to load, fetching it through Keras' own mechanism when needed."""
    if spec.weights != "imagenet":
        return Path(spec.weights)
    fname = spec.keras_weights_file
    candidates = [_keras_home() / "models" / fname]
    if "KERAS_HOME" in os.environ:  # a read-only KERAS_HOME that Keras itself would ignore
        candidates.append(Path(os.environ["KERAS_HOME"]).expanduser() / "models" / fname)
    for path in candidates:
        if path.is_file():
            return path
    try:
        from keras.utils import get_file

        return Path(get_file(fname, KERAS_WEIGHTS_ORIGIN + fname, cache_subdir="models"))
    except Exception as e:  # offline, proxy, disk full: say what is missing and where it was sought
        raise WeightsError(
            f"ImageNet weights for {spec.name} not available: Keras looks for {fname} in "
            f"{candidates[0].parent} and could not download it ({type(e).__name__}). Set KERAS_HOME to a folder "
            f"whose models/ holds that file, or pass --weights PATH"
        ) from None


_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    st = path.stat()
    memo_key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo_key not in _HASH_MEMO:
        with open(path, "rb") as f:
            _HASH_MEMO[memo_key] = hashlib.file_digest(f, "sha256").hexdigest()
    return _HASH_MEMO[memo_key]


# --- fingerprint ---------------------------------------------------------------------------------

_IDENTITY_FIELDS = ("backbone", "alpha", "image_size", "output_dim", "preprocessing", "pooling",
                    "resize", "weights_sha256", "embedding_version")


def fingerprint(spec: BackboneSpec, weights_path: Path | None = None) -> dict:
    """Everything that determines the vectors, plus an id hashing exactly those fields.

    embedflow_version and weights_source are recorded for people, but are not part of the id: a new
    release that computes the same vectors, or the same weights file in another place, stays compatible.
    """
    weights_path = weights_path or resolve_weights(spec)
    fp = {
        "backbone": spec.name,
        "alpha": spec.alpha,
        "image_size": spec.image_size,
        "output_dim": spec.output_dim,
        "preprocessing": spec.preprocessing,
        "pooling": "global average",
        "resize": "EXIF-rotated, RGB over white, bilinear to a square (no crop)",
        "weights_sha256": file_sha256(weights_path),
        "weights_source": spec.weights,
        "embedding_version": EMBEDDING_VERSION,
        "embedflow_version": __version__,
    }
    fp["id"] = fingerprint_id(fp)
    return fp


def fingerprint_id(fp: dict) -> str:
    ident = json.dumps({k: fp[k] for k in _IDENTITY_FIELDS}, sort_keys=True)
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def describe(fp: dict) -> str:
    return (f"{fp['backbone']} (alpha {fp['alpha']}, {fp['image_size']}px, "
            f"weights {fp['weights_sha256'][:8]}, id {fp['id']})")


def check_compatible(have: dict, want: dict, what: str, hint: str = "") -> None:
    from .errors import FingerprintMismatch

    if have.get("id") != want.get("id"):
        diffs = [k for k in _IDENTITY_FIELDS if have.get(k) != want.get(k)]
        raise FingerprintMismatch(
            f"{what} was made with {describe(have)}, not {describe(want)} "
            f"(differs in: {', '.join(diffs) or 'id'}){'; ' + hint if hint else ''}"
        )


# --- runtimes ------------------------------------------------------------------------------------


def quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass


def build_keras_backbone(spec: BackboneSpec, weights_path: Path | None = None):
    """keras.Model: uint8 pixels (N, s, s, 3) -> (N, output_dim) pooled features, preprocessing inside."""
    quiet_tensorflow()
    import keras

    weights_path = weights_path or resolve_weights(spec)
    size = spec.image_size
    base = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), alpha=spec.alpha, include_top=False, weights=None, pooling="avg"
    )
    try:
        base.load_weights(str(weights_path))
    except Exception as e:
        raise WeightsError(f"cannot load weights from {weights_path}: {e}") from None
    inputs = keras.Input((size, size, 3), dtype="uint8", name="pixels")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="mobilenet_v2_preprocess")(inputs)
    outputs = base(x, training=False)
    return keras.Model(inputs, outputs, name=f"embedflow_{spec.name}")


def embedflow_home() -> Path:
    """Where derived files (converted models) are kept: $EMBEDFLOW_HOME or ~/.cache/embedflow."""
    if "EMBEDFLOW_HOME" in os.environ:
        return Path(os.environ["EMBEDFLOW_HOME"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "embedflow"


def convert_to_tflite(model) -> bytes:
    """TFLite flatbuffer of a Keras model (weights frozen into constants, so XNNPACK can pack them)."""
    import contextlib
    import io

    import tensorflow as tf

    with contextlib.redirect_stdout(io.StringIO()):  # Keras' export prints every captured variable
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


CONVERTER_VERSION = 2  # part of the converted file's name: a new conversion recipe never reuses old files


def tflite_backbone_path(spec: BackboneSpec, fp: dict, reporter=None) -> Path:
    """The converted (float32) backbone for this fingerprint, converting once and keeping it on disk.

    A fresh conversion is checked against the Keras model on a probe batch before it is kept."""
    path = embedflow_home() / "backbones" / f"{spec.name}-{fp['id']}-float32-c{CONVERTER_VERSION}.tflite"
    if path.is_file():
        return path
    if reporter:
        reporter.info(f"converting {spec.name} to TFLite once (kept in {path.parent})")
    model = build_keras_backbone(spec)
    flatbuffer = convert_to_tflite(model)
    probe = np.random.default_rng(0).integers(0, 256, (2, spec.image_size, spec.image_size, 3), dtype=np.uint8)
    want = np.asarray(model.predict_on_batch(probe))
    got = run_tflite(make_interpreter(model_content=flatbuffer), probe)
    if min_cosine(got, want) < 0.9999:
        raise WeightsError(f"the TFLite conversion of {spec.name} disagrees with Keras "
                           f"(cosine {min_cosine(got, want):.4f}); use --runtime keras")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(flatbuffer)
    os.replace(tmp, path)
    return path


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest row-wise cosine similarity of two (N, D) arrays (nan-safe: nan counts as -1)."""
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(den > 0, num / np.where(den > 0, den, 1), np.where(num == 0, 1.0, 0.0))
    return float(np.nan_to_num(cos, nan=-1.0).min())


def run_tflite(interpreter, pixels: np.ndarray) -> np.ndarray:
    """One batch through an interpreter, resizing its input to the batch."""
    inp = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(inp, list(pixels.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp, pixels)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()


def make_interpreter(model_path: str | None = None, model_content: bytes | None = None, threads: int | None = None):
    """A LiteRT interpreter (ai_edge_litert; tf.lite as a fallback) with XNNPACK."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - ai-edge-litert is a dependency
        quiet_tensorflow()
        from tensorflow.lite import Interpreter
    return Interpreter(model_path=model_path, model_content=model_content, num_threads=threads or os.cpu_count())


class KerasEmbedder:
    """Reference path: Keras on the backbone (the right one on a GPU). Calls are serialised."""

    runtime = "keras"

    def __init__(self, spec: BackboneSpec):
        import threading

        self.model = build_keras_backbone(spec)
        self._lock = threading.Lock()

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        with self._lock:
            out = self.model.predict_on_batch(np.asarray(pixels, dtype=np.uint8))
        return np.asarray(out, dtype=np.float32)


class LiteRTEmbedder:
    """Fast CPU path: the same weights converted to TFLite, run by XNNPACK. Vectors match the Keras
    path to cosine >= 0.9999 (tested), so both write the same fingerprint.

    Thread-safe: each calling thread gets its own interpreter with `threads` threads (default 1), so
    several pipeline workers run inference side by side instead of sharing one oversubscribed pool."""

    runtime = "litert"

    def __init__(self, spec: BackboneSpec, fp: dict, threads: int | None = None, reporter=None):
        import threading

        self.model_path = str(tflite_backbone_path(spec, fp, reporter))
        self.threads = threads or 1
        self._local = threading.local()

    def _interpreter(self, batch: int, shape: tuple):
        local = self._local
        if getattr(local, "interpreter", None) is None:
            local.interpreter = make_interpreter(self.model_path, threads=self.threads)
            local.input = local.interpreter.get_input_details()[0]["index"]
            local.output = local.interpreter.get_output_details()[0]["index"]
            local.batch = 0
        if local.batch != batch:
            local.interpreter.resize_tensor_input(local.input, [batch, *shape])
            local.interpreter.allocate_tensors()
            local.batch = batch
        return local

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        local = self._interpreter(len(pixels), pixels.shape[1:])
        local.interpreter.set_tensor(local.input, np.ascontiguousarray(pixels, dtype=np.uint8))
        local.interpreter.invoke()
        return local.interpreter.get_tensor(local.output).copy()


def has_gpu() -> bool:
    """A cheap check that does not import TensorFlow (which costs seconds): an NVIDIA driver is loaded."""
    return Path("/proc/driver/nvidia/version").exists() or bool(os.environ.get("EMBEDFLOW_ASSUME_GPU"))


def make_embedder(spec: BackboneSpec, fp: dict, runtime: str = "auto", reporter=None, threads: int | None = None):
    """runtime: 'litert' (fast on CPU), 'keras' (reference; right on a GPU), or 'auto' (keras on a GPU)."""
    if runtime not in ("auto", "keras", "litert"):
        raise UsageError(f"unknown runtime '{runtime}': use auto, keras or litert")
    if runtime == "auto":
        runtime = "keras" if has_gpu() else "litert"
    if runtime == "keras":
        return KerasEmbedder(spec)
    return LiteRTEmbedder(spec, fp, threads=threads, reporter=reporter)
