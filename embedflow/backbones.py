"""Registry of backbone specs, weight resolution, fingerprints, and the two inference runtimes.

A *spec* says what a backbone is (input size, preprocessing, output dimension, where its weights come
from). Its *fingerprint* adds the sha256 of the actual weights file: two artifacts are compatible exactly
when their fingerprint ids are equal. Nothing here imports TensorFlow until a model is really built, so
a warm `embed` (nothing new to embed) never pays for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .__about__ import __version__
from .errors import UsageError, WeightsError

# Bump when the way vectors are computed changes (decode, resize, preprocessing): old caches then
# no longer match and are refused instead of being mixed with new vectors.
EMBEDDING_VERSION = 1
KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/keras-applications/"
KERAS_WEIGHTS_ORIGIN = KERAS_ORIGIN + "mobilenet_v2/"
DEFAULT_BACKBONE = "mobilenet_v2"
HUB_PREFIX = "hub:"


class NotFineTunable(UsageError):
    """The backbone is not a Keras model (a TF Hub SavedModel): it can embed, not be trained or fused."""


@dataclass(frozen=True)
class BackboneSpec:
    name: str  # registry name, e.g. "mobilenet_v2", or "hub"
    alpha: float | None  # width multiplier (MobileNets), None where it does not apply
    image_size: int  # square input side in pixels
    output_dim: int  # length of the pooled feature vector
    preprocessing: str  # how uint8 pixels become model inputs (recorded in the fingerprint)
    weights: str = "imagenet"  # "imagenet" (Keras' own download/cache mechanism) or a file path; hub: the handle
    family: str = "keras"  # "keras" (keras.applications) or "hub" (TF Hub / SavedModel feature vector)
    keras_app: str = "MobileNetV2"  # keras.applications constructor
    pixels: str = "mobilenet_v2"  # preprocessing recipe: mobilenet_v2 ([-1, 1]), raw (0..255), caffe, unit ([0, 1])
    weights_file: str = ""  # file name Keras downloads the ImageNet (no-top) weights as
    weights_origin: str = ""  # URL folder Keras downloads that file from
    weights_size: int = 224  # resolution the ImageNet weights were trained at (MobileNetV2 has several)
    fixed_size: bool = False  # hub: the SavedModel's signature only takes image_size x image_size images

    @property
    def keras_weights_file(self) -> str:
        return self.weights_file

    @property
    def fine_tunable(self) -> bool:
        """Whether finetune/export can train or fuse it (a Keras model); hub backbones cannot."""
        return self.family == "keras"

    @property
    def arg(self) -> str:
        """The --backbone value that selects this backbone (without --image-size/--weights)."""
        if self.family == "hub":
            return HUB_PREFIX + self.weights
        if self.name == "mobilenet_v2" and (self.alpha, self.weights_size) != (1.0, 224):
            return f"mobilenet_v2:{self.alpha}:{self.weights_size}"
        return self.name

    @property
    def slug(self) -> str:
        """A file-name-safe name, for caches of several backbones side by side."""
        if self.family == "hub":
            parts = [p for p in re.split(r"[/\\]+", self.weights.split("://", 1)[-1]) if p][-2:]
            readable = re.sub(r"[^A-Za-z0-9_.]+", "_", "-".join(parts)).strip("_.-")[:40]
            return f"hub-{readable}-{hashlib.sha256(self.weights.encode()).hexdigest()[:6]}"
        return self.arg.replace(":", "-")


def _mobilenet_v2(alpha: float = 1.0, size: int = 224) -> BackboneSpec:
    return BackboneSpec(
        name="mobilenet_v2", alpha=float(alpha), image_size=size,
        output_dim=1280 if alpha <= 1.0 else int(1280 * alpha),
        preprocessing="mobilenet_v2: x/127.5 - 1 (pixels to [-1, 1])",
        weights_file=f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{size}_no_top.h5",
        weights_origin=KERAS_WEIGHTS_ORIGIN, weights_size=size,
    )


def _keras_app(name: str, app: str, dim: int, pixels: str, preprocessing: str, file: str, origin: str,
               alpha: float | None = None) -> BackboneSpec:
    return BackboneSpec(name=name, alpha=alpha, image_size=224, output_dim=dim, preprocessing=preprocessing,
                        keras_app=app, pixels=pixels, weights_file=file, weights_origin=origin)


_BUILT_IN = "built into the Keras model: raw pixels 0..255"
REGISTRY: dict[str, BackboneSpec] = {
    "mobilenet_v2": _mobilenet_v2(),
    "mobilenet_v3_small": _keras_app("mobilenet_v3_small", "MobileNetV3Small", 576, "raw",
                                     f"{_BUILT_IN} (Rescaling to [-1, 1] inside)",
                                     "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
                                     KERAS_ORIGIN + "mobilenet_v3/", alpha=1.0),
    "mobilenet_v3_large": _keras_app("mobilenet_v3_large", "MobileNetV3Large", 960, "raw",
                                     f"{_BUILT_IN} (Rescaling to [-1, 1] inside)",
                                     "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
                                     KERAS_ORIGIN + "mobilenet_v3/", alpha=1.0),
    "efficientnet_b0": _keras_app("efficientnet_b0", "EfficientNetB0", 1280, "raw",
                                  f"{_BUILT_IN} (Rescaling + ImageNet Normalization inside)",
                                  "efficientnetb0_notop.h5", "https://storage.googleapis.com/keras-applications/"),
    "resnet50": _keras_app("resnet50", "ResNet50", 2048, "caffe",
                           "caffe: RGB to BGR minus the ImageNet mean (103.939, 116.779, 123.68), no scaling",
                           "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", KERAS_ORIGIN + "resnet/"),
}
MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
MOBILENET_V2_SIZES = (96, 128, 160, 192, 224)
HUB_PREPROCESSING = "TF Hub image convention: x/255 (pixels to [0, 1])"
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 96, 224
HUB_MIN_IMAGE_SIZE, HUB_MAX_IMAGE_SIZE = 32, 512


def parse_backbone(arg: str) -> BackboneSpec:
    """A registry spec from a --backbone value: NAME, mobilenet_v2:ALPHA[:SIZE], or hub:HANDLE."""
    arg = (arg or DEFAULT_BACKBONE).strip()
    if arg.startswith(HUB_PREFIX):
        return hub_spec(arg[len(HUB_PREFIX):])
    name, _, rest = arg.partition(":")
    if name not in REGISTRY:
        raise UsageError(f"unknown backbone '{arg}'; available: {', '.join(sorted(REGISTRY))}, "
                         "mobilenet_v2:ALPHA:SIZE, hub:URL_OR_PATH (see `embedflow backbones`)")
    if not rest:
        return REGISTRY[name]
    if name != "mobilenet_v2":
        raise UsageError(f"backbone '{name}' takes no parameters (only mobilenet_v2:ALPHA:SIZE does), got '{arg}'")
    alpha_text, _, size_text = rest.partition(":")
    try:
        alpha, size = float(alpha_text), int(size_text or 224)
    except ValueError:
        raise UsageError(f"cannot parse '{arg}': expected mobilenet_v2:ALPHA:SIZE, e.g. mobilenet_v2:0.35:160") from None
    if alpha not in MOBILENET_V2_ALPHAS or size not in MOBILENET_V2_SIZES:
        raise UsageError(f"Keras has ImageNet weights for mobilenet_v2 with alpha in "
                         f"{', '.join(map(str, MOBILENET_V2_ALPHAS))} and size in "
                         f"{', '.join(map(str, MOBILENET_V2_SIZES))}; got '{arg}'")
    return _mobilenet_v2(alpha, size)


def get_spec(name: str | None = "mobilenet_v2", image_size: int | None = None, weights: str | None = None) -> BackboneSpec:
    """The spec for a --backbone value, with --image-size (the input resize) and --weights (a file) applied."""
    spec = parse_backbone(name or DEFAULT_BACKBONE)
    if spec.family == "hub":
        if weights is not None and weights != "imagenet":
            raise UsageError("--weights does not apply to hub backbones: the SavedModel holds its own weights")
        if image_size is not None and image_size != spec.image_size:
            if spec.fixed_size:
                raise UsageError(f"the hub model {spec.weights} takes {spec.image_size}x{spec.image_size} images "
                                 f"only (its signature), not --image-size {image_size}")
            if not HUB_MIN_IMAGE_SIZE <= image_size <= HUB_MAX_IMAGE_SIZE:
                raise UsageError(f"--image-size must be between {HUB_MIN_IMAGE_SIZE} and {HUB_MAX_IMAGE_SIZE} "
                                 f"for hub backbones, got {image_size}")
            spec = replace(spec, image_size=int(image_size))
        return spec
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
    """The spec an artifact was made with, to embed new images the same way. The weights found now
    (a Keras file, a --weights file, a hub SavedModel) must still be the ones the artifact recorded."""
    from .errors import FingerprintMismatch

    spec = get_spec(fp.get("backbone_arg") or fp["backbone"], fp["image_size"])
    weights = fp.get("weights_source", "imagenet")
    if fp["backbone"] != "hub" and weights != "imagenet":
        if not Path(weights).is_file():
            raise WeightsError(
                f"this artifact was made with the weights file {weights}, which is not there any more; "
                "pass --weights with a copy of it"
            )
        spec = replace(spec, weights=weights)
    now = fingerprint(spec)
    if now["id"] != fp["id"]:
        raise FingerprintMismatch(f"the weights of {spec.arg} have changed since this artifact was made "
                                  f"(was {describe(fp)}, now {describe(now)}); new images would not be "
                                  "embedded like the ones it was trained on")
    return spec


def listing() -> list[dict]:
    """One row per registry backbone (plus the mobilenet_v2 variants and hub:): what `embedflow backbones`
    shows. `available` says whether the weights are on this machine now; nothing is downloaded."""
    rows = []
    for spec in REGISTRY.values():
        found = local_weights(spec)
        rows.append({"backbone": spec.arg, "family": spec.family, "output_dim": spec.output_dim,
                     "input_size": spec.image_size, "image_sizes": f"{MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE}",
                     "preprocessing": spec.preprocessing, "weights_file": spec.weights_file,
                     "weights_origin": spec.weights_origin, "available": found is not None,
                     "weights_path": str(found) if found else None, "fine_tunable": spec.fine_tunable})
    variants = [f"mobilenet_v2:{a}:{n}" for a in MOBILENET_V2_ALPHAS for n in MOBILENET_V2_SIZES
                if (a, n) != (1.0, 224) and local_weights(_mobilenet_v2(a, n))]
    rows.append({"backbone": "mobilenet_v2:ALPHA:SIZE", "family": "keras",
                 "output_dim": "1280 (alpha <= 1), 1280*alpha above", "input_size": "SIZE",
                 "image_sizes": f"ALPHA in {', '.join(map(str, MOBILENET_V2_ALPHAS))}; "
                                f"SIZE in {', '.join(map(str, MOBILENET_V2_SIZES))}",
                 "preprocessing": REGISTRY["mobilenet_v2"].preprocessing,
                 "weights_file": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_ALPHA_SIZE_no_top.h5",
                 "weights_origin": KERAS_WEIGHTS_ORIGIN, "available": bool(variants),
                 "weights_path": None, "available_variants": variants, "fine_tunable": True})
    rows.append({"backbone": "hub:URL_OR_PATH", "family": "hub", "output_dim": "the model's",
                 "input_size": "the signature's, else 224", "image_sizes": f"{HUB_MIN_IMAGE_SIZE}..{HUB_MAX_IMAGE_SIZE}",
                 "preprocessing": HUB_PREPROCESSING, "weights_file": "a TF2 SavedModel folder",
                 "weights_origin": os.environ.get("TFHUB_CACHE_DIR") or "tensorflow_hub's cache (TFHUB_CACHE_DIR)",
                 "available": None, "weights_path": None, "fine_tunable": False})
    return rows

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


def _weights_candidates(spec: BackboneSpec) -> list[Path]:
    fname = spec.weights_file
    candidates = [_keras_home() / "models" / fname]
    if "KERAS_HOME" in os.environ:  # a read-only KERAS_HOME that Keras itself would ignore
        candidates.append(Path(os.environ["KERAS_HOME"]).expanduser() / "models" / fname)
    return candidates


def local_weights(spec: BackboneSpec) -> Path | None:
    """The weights file if it is already on this machine (never downloads)."""
    if spec.family == "hub":
        return None
    if spec.weights != "imagenet":
        return Path(spec.weights) if Path(spec.weights).is_file() else None
    return next((p for p in _weights_candidates(spec) if p.is_file()), None)


def resolve_weights(spec: BackboneSpec) -> Path:
    """Path of the weights file to load (hub: the SavedModel folder), fetching it through Keras' (or
    TF Hub's) own mechanism when needed."""
    if spec.family == "hub":
        return resolve_hub(spec.weights)
    found = local_weights(spec)
    if found:
        return found
    if spec.weights != "imagenet":
        raise WeightsError(f"weights file not found: {spec.weights}")
    fname = spec.weights_file
    try:
        import contextlib
        import sys

        from keras.utils import get_file

        with contextlib.redirect_stdout(sys.stderr):  # Keras prints its download progress; keep stdout clean
            return Path(get_file(fname, spec.weights_origin + fname, cache_subdir="models"))
    except Exception as e:  # offline, proxy, disk full: say what is missing and where it was sought
        why = str(e).split(" -- ")[-1].splitlines()[0][:120] if str(e) else type(e).__name__
        raise WeightsError(
            f"ImageNet weights for {spec.arg} not available: Keras looks for {fname} in "
            f"{_weights_candidates(spec)[0].parent} and could not download it from {spec.weights_origin} "
            f"({why}). Set KERAS_HOME to a folder whose models/ holds that file, or pass --weights PATH"
        ) from None


_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    st = path.stat()
    memo_key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo_key not in _HASH_MEMO:
        with open(path, "rb") as f:
            _HASH_MEMO[memo_key] = hashlib.file_digest(f, "sha256").hexdigest()
    return _HASH_MEMO[memo_key]


def weights_digest(spec: BackboneSpec, weights_path: Path | None = None) -> str:
    """sha256 of the weights file; for a SavedModel, over every file's relative path and sha256."""
    path = weights_path or resolve_weights(spec)
    if not path.is_dir():
        return file_sha256(path)
    lines = [f"{p.relative_to(path).as_posix()}:{file_sha256(p)}" for p in sorted(path.rglob("*")) if p.is_file()]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


# --- fingerprint ---------------------------------------------------------------------------------

_IDENTITY_FIELDS = ("backbone", "alpha", "image_size", "output_dim", "preprocessing", "pooling",
                    "resize", "weights_sha256", "embedding_version")


def fingerprint(spec: BackboneSpec, weights_path: Path | None = None) -> dict:
    """Everything that determines the vectors, plus an id hashing exactly those fields.

    embedflow_version, weights_source and backbone_arg are recorded for people (and to rebuild the
    spec), but are not part of the id: a new release that computes the same vectors, or the same
    weights file (or SavedModel) in another place, stays compatible.
    """
    fp = {
        "backbone": spec.name,
        "alpha": spec.alpha,
        "image_size": spec.image_size,
        "output_dim": spec.output_dim,
        "preprocessing": spec.preprocessing,
        "pooling": "global average" if spec.family == "keras" else "the SavedModel's own feature vector",
        "resize": "EXIF-rotated, RGB over white, bilinear to a square (no crop)",
        "weights_sha256": weights_digest(spec, weights_path),
        "weights_source": spec.weights,
        "backbone_arg": spec.arg,
        "embedding_version": EMBEDDING_VERSION,
        "embedflow_version": __version__,
    }
    fp["id"] = fingerprint_id(fp)
    return fp


def fingerprint_id(fp: dict) -> str:
    ident = json.dumps({k: fp[k] for k in _IDENTITY_FIELDS}, sort_keys=True)
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def describe(fp: dict) -> str:
    name = fp.get("backbone_arg") or fp["backbone"]
    width = f"alpha {fp['alpha']}, " if fp.get("alpha") is not None and fp["backbone"].startswith("mobilenet_v2") else ""
    return (f"{name} ({width}{fp['image_size']}px, {fp.get('output_dim', '?')}-d, "
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
    """Keep TensorFlow's start-up chatter off the terminal (TF_CPP_MIN_LOG_LEVEL=0 keeps all of it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    if "tensorflow" not in sys.modules and os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0":
        # TF 2.21 writes absl/oneDNN/CUDA notices to file descriptor 2 while it loads and first picks a
        # device, ignoring TF_CPP_MIN_LOG_LEVEL; Python errors still surface after the descriptor is back.
        with stderr_fd_silenced():
            import tensorflow as tf

            tf.constant(0)
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass


@contextlib.contextmanager
def stderr_fd_silenced():
    """File descriptor 2 (where C++ libraries write) points to /dev/null inside the block."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def require_fine_tunable(spec: BackboneSpec, what: str = "fine-tuned") -> None:
    """Raise NotFineTunable unless the backbone is a Keras model that can be trained or fused."""
    if not spec.fine_tunable:
        raise NotFineTunable(
            f"the {spec.family} backbone {spec.arg} runs as a TensorFlow SavedModel, not a Keras model, so it "
            f"cannot be {what}; use a Keras application backbone instead "
            f"(--backbone {', '.join(sorted(REGISTRY))})"
        )


def preprocessing_layers(spec: BackboneSpec) -> list:
    """Keras layers mapping uint8 pixels to the base model's inputs (frozen; saved with the model)."""
    import keras

    if spec.pixels == "mobilenet_v2":
        return [keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="mobilenet_v2_preprocess")]
    if spec.pixels == "raw":  # the base model preprocesses itself: only make the pixels floats
        return [keras.layers.Rescaling(1.0, name="to_float")]
    if spec.pixels == "caffe":  # x[..., ::-1] - mean, as one exact per-pixel linear map
        bgr = keras.layers.Dense(3, name="caffe_preprocess", trainable=False)
        bgr.build((None, None, None, 3))
        bgr.set_weights([np.eye(3, dtype="float32")[::-1], -np.array([103.939, 116.779, 123.68], "float32")])
        return [keras.layers.Rescaling(1.0, name="to_float"), bgr]
    raise UsageError(f"no Keras preprocessing for '{spec.pixels}'")


def build_keras_backbone(spec: BackboneSpec, weights_path: Path | None = None):
    """keras.Model: uint8 pixels (N, s, s, 3) -> (N, output_dim) pooled features, preprocessing inside."""
    require_fine_tunable(spec, "built as a Keras model (fine-tuned, fused or exported)")
    quiet_tensorflow()
    import keras

    weights_path = weights_path or resolve_weights(spec)
    size = spec.image_size
    width = {"alpha": spec.alpha} if spec.keras_app == "MobileNetV2" else {}
    base = getattr(keras.applications, spec.keras_app)(
        input_shape=(size, size, 3), include_top=False, weights=None, pooling="avg", **width
    )
    try:
        base.load_weights(str(weights_path))
    except Exception as e:
        raise WeightsError(f"cannot load weights from {weights_path} into {spec.arg}: {e}") from None
    inputs = keras.Input((size, size, 3), dtype="uint8", name="pixels")
    x = inputs
    for layer in preprocessing_layers(spec):
        x = layer(x)
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
    reference, flatbuffer = _reference_and_flatbuffer(spec)
    probe = np.random.default_rng(0).integers(0, 256, (2, spec.image_size, spec.image_size, 3), dtype=np.uint8)
    want = np.asarray(reference(probe))
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


def _reference_and_flatbuffer(spec: BackboneSpec):
    """(reference function uint8 -> vectors, TFLite flatbuffer of the same computation)."""
    if spec.family == "hub":
        import contextlib
        import io

        import tensorflow as tf

        reference = HubEmbedder(spec)
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [reference.serve.get_concrete_function()], reference.loaded)
        with contextlib.redirect_stdout(io.StringIO()):
            return reference, converter.convert()
    model = build_keras_backbone(spec)
    return (lambda pixels: model.predict_on_batch(pixels)), convert_to_tflite(model)


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
    with _native_stderr_silenced():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
        interpreter = Interpreter(model_path=model_path, model_content=model_content,
                                  num_threads=threads or os.cpu_count())
        interpreter.allocate_tensors()  # the delegate is applied (and logs) here
    return interpreter


_STDERR_LOCK = __import__("threading").Lock()


class _native_stderr_silenced:
    """Silence what native code writes to file descriptor 2 for a moment (LiteRT logs on creation).
    Python-level errors are unaffected; the interpreter's own exceptions still propagate."""

    def __enter__(self):
        import sys

        _STDERR_LOCK.acquire()
        try:
            sys.stderr.flush()
            self._saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except OSError:
            self._saved = None
        return self

    def __exit__(self, *exc):
        try:
            if self._saved is not None:
                os.dup2(self._saved, 2)
                os.close(self._saved)
        finally:
            _STDERR_LOCK.release()


class KerasEmbedder:
    """Reference path: Keras on the backbone (the right one on a GPU). Calls are serialised."""

    runtime = "keras"
    batch_size = 64  # images per call when the caller does not choose: large batches suit a GPU

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
    batch_size = 4  # measured on 2 cores: small batches keep XNNPACK's activations in cache (4 beats 16 by ~10%)

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
    """runtime: 'litert' (fast on CPU), 'keras' (reference; right on a GPU), or 'auto' (keras on a GPU).

    Hub backbones: 'keras' runs the SavedModel on TensorFlow; 'auto' converts it to LiteRT when that
    conversion passes the parity check, and otherwise (remembered) runs it on TensorFlow."""
    if runtime not in ("auto", "keras", "litert"):
        raise UsageError(f"unknown runtime '{runtime}': use auto, keras or litert")
    asked_for_litert = runtime == "litert"
    if runtime == "auto":
        runtime = "keras" if has_gpu() else "litert"
    if runtime == "keras":
        return HubEmbedder(spec) if spec.family == "hub" else KerasEmbedder(spec)
    if spec.family != "hub":
        return LiteRTEmbedder(spec, fp, threads=threads, reporter=reporter)
    return _hub_litert_or_tensorflow(spec, fp, strict=asked_for_litert, reporter=reporter, threads=threads)


def _hub_litert_or_tensorflow(spec: BackboneSpec, fp: dict, strict: bool, reporter=None, threads=None):
    failed_marker = embedflow_home() / "backbones" / f"{spec.name}-{fp['id']}-c{CONVERTER_VERSION}.no-tflite"
    if failed_marker.is_file() and not strict:
        return HubEmbedder(spec)
    try:
        return LiteRTEmbedder(spec, fp, threads=threads, reporter=reporter)
    except (UsageError, KeyboardInterrupt):
        raise
    except Exception as e:  # the converter cannot handle some op, or the result disagrees
        reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        if strict:
            raise WeightsError(f"cannot run {spec.arg} on LiteRT ({reason}); use --runtime keras") from None
        failed_marker.parent.mkdir(parents=True, exist_ok=True)
        failed_marker.write_text(reason + "\n")
        if reporter:
            reporter.warn(f"{spec.arg} does not convert to LiteRT ({reason}); running it on TensorFlow")
        return HubEmbedder(spec)

# --- TF Hub / SavedModel feature vectors ------------------------------------------------------------


def _is_url(handle: str) -> bool:
    return "://" in handle


def resolve_hub(handle: str) -> Path:
    """Local folder of a hub handle: a SavedModel folder as is, a URL through tensorflow_hub's own
    download cache (which honours TFHUB_CACHE_DIR)."""
    if not _is_url(handle):
        path = Path(handle).expanduser()
        if not (path / "saved_model.pb").is_file() and not (path / "saved_model.pbtxt").is_file():
            what = "has no saved_model.pb" if path.is_dir() else "does not exist"
            raise WeightsError(f"hub backbone {handle} {what}: give a TF2 SavedModel folder or a TF Hub URL")
        return path.resolve()
    quiet_tensorflow()
    try:
        import tensorflow_hub as hub

        return Path(hub.resolve(handle))
    except Exception as e:  # offline, 404, not a model
        cache_dir = os.environ.get("TFHUB_CACHE_DIR") or "the system temp folder (set TFHUB_CACHE_DIR)"
        raise WeightsError(f"cannot fetch hub model {handle} into {cache_dir} "
                           f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})") from None


def _hub_info_file() -> Path:
    return embedflow_home() / "hub-models.json"


def hub_spec(handle: str) -> BackboneSpec:
    """Spec of a hub feature vector: input size from its signature (224 if free), output dim by a probe
    (both remembered per model digest, so a rerun does not load TensorFlow)."""
    if not handle:
        raise UsageError("hub: needs a handle, e.g. hub:https://tfhub.dev/... or hub:/path/to/saved_model")
    if not _is_url(handle):
        handle = str(Path(handle).expanduser().resolve())
    path = resolve_hub(handle)
    digest = weights_digest(BackboneSpec("hub", None, 224, 0, HUB_PREPROCESSING, family="hub"), path)
    known = _read_json(_hub_info_file())
    if digest not in known:
        known[digest] = _probe_hub(path)
        _write_json(_hub_info_file(), {**_read_json(_hub_info_file()), digest: known[digest]})
    info = known[digest]
    return BackboneSpec(name="hub", alpha=None, image_size=int(info["input_size"] or 224),
                        output_dim=int(info["output_dim"]), preprocessing=HUB_PREPROCESSING, weights=handle,
                        family="hub", keras_app="", pixels="unit", fixed_size=bool(info["input_size"]))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def load_hub(path: Path):
    """(loaded SavedModel object, function float32 images -> output, static input size or None)."""
    quiet_tensorflow()
    import tensorflow as tf

    try:
        try:
            import tensorflow_hub as hub

            loaded = hub.load(str(path))
        except ImportError:  # pragma: no cover - tensorflow-hub is a dependency
            loaded = tf.saved_model.load(str(path))
    except Exception as e:
        raise WeightsError(f"cannot load the SavedModel in {path}: {type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200] if str(e) else ''}") from None
    fn, spec = _hub_callable(loaded, path)
    shape = spec.shape.as_list() if spec is not None and spec.shape.rank == 4 else [None] * 4
    size = shape[1] if shape[1] is not None and shape[1] == shape[2] else None
    return loaded, fn, size


def _hub_callable(loaded, path: Path):
    """The image -> features function of a SavedModel and its input TensorSpec (None if unknown):
    its __call__ (TF2 hub models), else its only-input serving signature."""
    import tensorflow as tf

    call = getattr(loaded, "__call__", None)
    if call is not None and callable(loaded) and hasattr(call, "concrete_functions"):
        specs = [c.structured_input_signature[0][0] for c in call.concrete_functions
                 if c.structured_input_signature[0] and isinstance(c.structured_input_signature[0][0], tf.TensorSpec)]
        return (lambda images: loaded(images)), (specs[0] if specs else None)
    signatures = getattr(loaded, "signatures", {}) or {}
    sig = signatures.get("serving_default") or (next(iter(signatures.values())) if signatures else None)
    if sig is None:
        raise WeightsError(f"the SavedModel in {path} has neither a __call__ function nor a serving signature")
    inputs = sig.structured_input_signature[1]
    if len(inputs) != 1:
        raise WeightsError(f"the serving signature of {path} takes {len(inputs)} inputs ({', '.join(inputs)}); "
                           "an image feature vector takes one batch of images")
    (name, spec), = inputs.items()
    return (lambda images: sig(**{name: images})), spec


def _as_features(out):
    """(N, D) features from a model output: a tensor, or the dict of a signature (the 2-d entry, or
    'feature_vector'/'default'); (N, h, w, D) maps are averaged over space."""
    import tensorflow as tf

    if isinstance(out, dict):
        for key in ("feature_vector", "default", "output_0"):
            if key in out:
                out = out[key]
                break
        else:
            two_d = [v for v in out.values() if v.shape.rank == 2]
            if len(two_d) != 1:
                raise WeightsError(f"cannot tell which output is the feature vector among {', '.join(out)}")
            out = two_d[0]
    if out.shape.rank == 4:
        out = tf.reduce_mean(out, axis=(1, 2))
    if out.shape.rank != 2:
        raise WeightsError(f"the hub model returns shape {out.shape}, not a (batch, features) feature vector")
    return tf.cast(out, tf.float32)


def _hub_serving_fn(fn, size: int):
    """tf.function: uint8 (N, size, size, 3) -> float32 (N, D), with the [0, 1] scaling inside."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name="pixels")])
    def serve(pixels):
        return _as_features(fn(tf.cast(pixels, tf.float32) / 255.0))

    return serve


def _probe_hub(path: Path) -> dict:
    loaded, fn, size = load_hub(path)
    probe_size = size or 224
    try:
        out = _hub_serving_fn(fn, probe_size)(np.zeros((1, probe_size, probe_size, 3), np.uint8))
    except WeightsError:
        raise
    except Exception as e:
        raise WeightsError(f"the SavedModel in {path} does not map a [0, 1] float image batch "
                           f"(1, {probe_size}, {probe_size}, 3) to a feature vector: {type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200] if str(e) else ''}") from None
    return {"input_size": size, "output_dim": int(out.shape[-1])}


class HubEmbedder:
    """A TF Hub / SavedModel feature vector run on TensorFlow: uint8 -> [0, 1] -> model -> (N, D)."""

    runtime = "tensorflow"
    batch_size = 32

    def __init__(self, spec: BackboneSpec):
        import threading

        self.loaded, fn, size = load_hub(resolve_hub(spec.weights))
        if size is not None and size != spec.image_size:
            raise UsageError(f"the hub model {spec.weights} takes {size}x{size} images only, not {spec.image_size}")
        self.serve = _hub_serving_fn(fn, spec.image_size)
        self._lock = threading.Lock()

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        with self._lock:
            out = self.serve(np.ascontiguousarray(pixels, dtype=np.uint8))
        return np.asarray(out, dtype=np.float32)
