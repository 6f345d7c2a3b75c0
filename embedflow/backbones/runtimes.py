"""The inference runtimes: the Keras model (reference; right on a GPU), its TFLite conversion run by
LiteRT/XNNPACK (fast on a CPU), and the choice between them."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import CacheError, UsageError, WeightsError
from ..fsio import (READ_ONLY, WriterLock, check_writable_folder, disk_error, fchmod_as_umask, free_bytes_short,
                    scratch_folder)
from .hub import HubEmbedder
from .registry import resolve_weights
from .silence import _native_stderr_silenced, quiet_tensorflow
from .spec import BackboneSpec, require_fine_tunable
from .weights import embedflow_home


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


def build_keras_backbone(spec: BackboneSpec, weights_path: Path | None = None, input_dtype: str = "uint8"):
    """keras.Model: uint8 pixels (N, s, s, 3) -> (N, output_dim) pooled features, preprocessing inside.
    input_dtype "float32" takes the same pixel values as floats (what the int8 converter quantizes)."""
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
    inputs = keras.Input((size, size, 3), dtype=input_dtype, name="pixels")
    x = inputs
    for layer in preprocessing_layers(spec):
        x = layer(x)
    outputs = base(x, training=False)
    return keras.Model(inputs, outputs, name=f"embedflow_{spec.name}")


def space_guarded(convert, model) -> bytes:
    """convert() (a TFLite conversion of the Keras `model`), with a full disk reported as one: OSError
    ENOSPC naming the temporary folder (where the converter writes a SavedModel of the model) when it has
    less free space than the conversion needs (about 3 x the float32 weights + 16 MB: the SavedModel and
    the flatbuffer), before converting or after the converter failed. TensorFlow's converter catches the
    "No space left on device" of its SavedModel writer and falls back to a path that fails with an
    unrelated TypeError under Keras 3, so without this a full disk was a 110-line traceback."""
    folder = tempfile.gettempdir()
    need = 3 * 4 * int(model.count_params()) + (16 << 20)

    def full() -> bool:
        return free_bytes_short(folder, need) is not None

    def enospc() -> OSError:
        return OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (a TFLite conversion needs about "
                                     f"{need >> 20} MB free there)", folder)

    if full():
        raise enospc()
    try:
        return convert()
    except OSError:
        raise
    except Exception as e:
        if full():
            raise enospc() from e
        raise


def convert_to_tflite(model) -> bytes:
    """TFLite flatbuffer of a Keras model (weights frozen into constants, so XNNPACK can pack them).
    Raises OSError ENOSPC when the temporary folder is too full for the conversion (space_guarded)."""
    import contextlib
    import io

    import tensorflow as tf

    with contextlib.redirect_stdout(io.StringIO()):  # Keras' export prints every captured variable
        return space_guarded(tf.lite.TFLiteConverter.from_keras_model(model).convert, model)


CONVERTER_VERSION = 2  # part of the converted file's name: a new conversion recipe never reuses old files


def convert_to_int8(model, representative: np.ndarray) -> bytes:
    """Full-integer TFLite flatbuffer of a float-input Keras model: uint8 pixels in (scale 1, zero point 0
    when the calibration pixels span 0..255), int8 weights and activations, float32 vectors out.
    representative: uint8 (N, s, s, 3) calibration images."""
    import io
    import warnings

    import tensorflow as tf

    def samples():
        for i in range(len(representative)):
            yield [representative[i:i + 1].astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = samples
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.float32
    with contextlib.redirect_stdout(io.StringIO()), _native_stderr_silenced(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        return space_guarded(converter.convert, model)


# Per probe image, int8 against Keras fp32: catches a broken conversion. ImageNet weights measure 0.996 on
# average over flowers-dev photos (docs/performance.md); a random-weight test backbone about 0.87.
INT8_MIN_COSINE = 0.8


def converted_path(spec: BackboneSpec, fp: dict) -> Path:
    """Where the converted backbone of this fingerprint is kept (EMBEDFLOW_HOME/backbones)."""
    kind = "int8" if spec.precision == "int8" else "float32"
    return embedflow_home() / "backbones" / f"{spec.name}-{fp['id']}-{kind}-c{CONVERTER_VERSION}.tflite"


def tflite_backbone_path(spec: BackboneSpec, fp: dict, reporter=None) -> Path:
    """The converted backbone for this fingerprint (float32, or full-integer int8 when spec.precision is
    "int8"), converting once and keeping it on disk (written beside, renamed into place).

    A fresh conversion is checked against the Keras model on a probe batch before it is kept (float32:
    cosine >= 0.9999 on random pixels; int8: >= INT8_MIN_COSINE on held-back calibration crops).
    Raises WeightsError when the check fails, CacheError when the file cannot be written."""
    kind = "int8" if spec.precision == "int8" else "float32"
    path = converted_path(spec, fp)
    if path.is_file():
        problem = _unverified(path)
        if problem is None:
            return path
        if reporter and problem.startswith("damaged"):
            reporter.warn(f"{path} is {problem}; converting it again")
        elif reporter:
            reporter.info(f"{path}: {problem}; converting it again once")
    _check_writable(path.parent)  # before a conversion of tens of seconds whose result could not be kept
    with _converting(path, reporter):
        if path.is_file() and _unverified(path) is None:  # converted by the run we waited for
            return path
        try:
            with scratch_folder(path.parent):  # the converter's SavedModel and Keras' files, never left in /tmp
                return _convert(spec, path, kind, reporter)
        except OSError as e:  # a full or read-only EMBEDFLOW_HOME under the scratch folder (the kept file's
            if not disk_error(e):  # own writes are CacheError already)
                raise
            raise _home_write_error(path.parent, e) from None


CONVERSION_WAIT_S = 1800  # how long a run waits for another one converting the same backbone


class _ConversionBusy(CacheError):
    """Another process holds the conversion lock (raised by WriterLock; waited on, never shown)."""


@contextlib.contextmanager
def _converting(path: Path, reporter=None):
    """Hold `.<converted file>.lock` beside it while converting, so that two first runs at once convert
    once: the second waits (saying so once, for at most CONVERSION_WAIT_S; then CacheError) and finds the
    file. The lock file is removed on release (a killed holder's is reused and removed by the next run);
    on a filesystem without locks the reporter is warned and the runs may both convert."""
    lock, told, deadline = path.with_name(f".{path.name}.lock"), False, time.monotonic() + CONVERSION_WAIT_S
    while True:
        held = WriterLock(lock, path.name, _ConversionBusy, CacheError, reporter, remove=True,
                          hint="another run is converting it")
        try:
            held.__enter__()
            break
        except _ConversionBusy as e:
            if time.monotonic() > deadline:
                raise CacheError(f"{e}; waited {CONVERSION_WAIT_S // 60} min: stop that run or remove {lock}") from None
            if reporter and not told:
                reporter.info(f"waiting for another run converting {path.name} (in use: {lock})")
            told = True
            time.sleep(0.5)
    try:
        yield
    finally:
        held.__exit__(None, None, None)


def _convert(spec: BackboneSpec, path: Path, kind: str, reporter=None) -> Path:
    """Convert the backbone to `path` (kind "int8" or "float32"), checked against Keras (see tflite_backbone_path)."""
    if kind == "int8":
        return _int8_backbone(spec, path, reporter)
    if reporter:
        reporter.info(f"converting {spec.name} to TFLite once (kept in {path.parent})")
    reference, flatbuffer = _reference_and_flatbuffer(spec)
    probe = np.random.default_rng(0).integers(0, 256, (2, spec.image_size, spec.image_size, 3), dtype=np.uint8)
    want = np.asarray(reference(probe))
    got = run_tflite(make_interpreter(model_content=flatbuffer), probe)
    if min_cosine(got, want) < 0.9999:
        raise WeightsError(f"the TFLite conversion of {spec.name} disagrees with Keras "
                           f"(cosine {min_cosine(got, want):.4f}); use --runtime keras")
    _keep_converted(path, flatbuffer)
    return path


def _int8_backbone(spec: BackboneSpec, path: Path, reporter=None) -> Path:
    from .calibration import calibration_images

    require_fine_tunable(spec, "quantized to int8 (only Keras application backbones are)")
    if reporter:
        reporter.info(f"converting {spec.name} to full-integer int8 TFLite once (kept in {path.parent})")
    quiet_tensorflow()
    model = build_keras_backbone(spec, input_dtype="float32")
    flatbuffer = convert_to_int8(model, calibration_images(spec.image_size))
    probe = calibration_images(spec.image_size, n=4, seed=1)
    want = np.asarray(model.predict_on_batch(probe.astype(np.float32)))
    got = run_tflite(make_interpreter(model_content=flatbuffer), probe)
    if min_cosine(got, want) < INT8_MIN_COSINE:
        raise WeightsError(f"the int8 conversion of {spec.name} disagrees with Keras "
                           f"(cosine {min_cosine(got, want):.4f}); use --precision fp32")
    _keep_converted(path, flatbuffer)
    return path


_VERIFIED: dict[str, tuple] = {}  # converted file -> its (size, mtime, inode) when this process checked it


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _stamp(path: Path) -> tuple:
    st = path.stat()
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _unverified(path: Path) -> str | None:
    """None when the converted file matches the sha256 recorded beside it at conversion (checked once per
    process while the file stays the same), else why it must be converted again: "damaged ..." (a
    mismatch) or a file converted before the sidecar existed."""
    stamp = _stamp(path)
    if _VERIFIED.get(str(path)) == stamp:
        return None
    try:
        recorded = _sidecar(path).read_text().split()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return "converted before its sha256 was recorded (or its record is unreadable)"
    if _sha256(path) != recorded:
        return f"damaged (its sha256 does not match the one recorded in {_sidecar(path).name})"
    _VERIFIED[str(path)] = stamp
    return None


def _keep_converted(path: Path, flatbuffer: bytes) -> None:
    """Write a converted backbone and its sha256 sidecar (the file first: a crash in between leaves a file
    without a record, converted again next time), and remember it as verified by this process."""
    _write_beside(path, flatbuffer)
    _write_beside(_sidecar(path), (hashlib.sha256(flatbuffer).hexdigest() + "\n").encode())
    _VERIFIED[str(path)] = _stamp(path)


def _check_writable(folder: Path) -> None:
    """Raise the CacheError _write_beside would raise when a file cannot be written in `folder`."""
    error = check_writable_folder(folder)
    if error is not None:
        raise _home_write_error(folder, error) from None


def _write_beside(path: Path, data: bytes) -> None:
    """Write a file through a temporary one beside it, renamed into place; on a full disk, a read-only
    folder or an I/O error the temporary file is removed and the error is one CacheError (exit 4) naming
    the folder and what to do."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        fchmod_as_umask(fd)  # readable by whoever the umask lets read it (a shared EMBEDFLOW_HOME), not 0o600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise _home_write_error(path, e) from None


def _home_write_error(path: Path, e: OSError) -> CacheError:
    """The one-line CacheError (exit 4) for a write to `path` under EMBEDFLOW_HOME that failed with `e`,
    with the advice that fits its cause."""
    if e.errno in READ_ONLY:
        return CacheError(f"could not write {path}: {e.strerror or e}; the converted backbone is kept in "
                          f"EMBEDFLOW_HOME ({embedflow_home()}): set EMBEDFLOW_HOME to a writable folder "
                          "and run again")
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return CacheError(f"could not write {path}: {e.strerror or e}; free space in {path.parent} "
                          "(EMBEDFLOW_HOME) and run again")
    return CacheError(f"could not write {path}: {e.strerror or e}; EMBEDFLOW_HOME ({embedflow_home()}) must be a "
                      "writable folder: set EMBEDFLOW_HOME to one and run again")


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
        import time

        path = converted_path(spec, fp)
        before, t0 = _stamp(path) if path.is_file() else None, time.perf_counter()
        self.model_path = str(tflite_backbone_path(spec, fp, reporter))
        # seconds spent converting the backbone now (0.0 when the kept file was used), apart from embedding
        self.conversion_seconds = time.perf_counter() - t0 if _stamp(path) != before else 0.0
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


def check_runtime(spec: BackboneSpec, runtime: str) -> None:
    """UsageError when `runtime` is not auto, keras or litert, or cannot run this backbone (an int8 one runs
    on LiteRT only). Cheap: callers check before they take a lock or create a file."""
    if runtime not in ("auto", "keras", "litert"):
        raise UsageError(f"unknown runtime '{runtime}': use auto, keras or litert")
    if spec.precision == "int8" and runtime == "keras":
        raise UsageError("an int8 backbone runs on LiteRT only: use --runtime auto or litert (--runtime keras "
                         "runs fp32 backbones)")


def make_embedder(spec: BackboneSpec, fp: dict, runtime: str = "auto", reporter=None, threads: int | None = None):
    """runtime: 'litert' (fast on CPU), 'keras' (reference; right on a GPU), or 'auto' (keras on a GPU).

    Hub backbones: 'keras' runs the SavedModel on TensorFlow; 'auto' converts it to LiteRT when that
    conversion passes the parity check, and otherwise (remembered) runs it on TensorFlow."""
    check_runtime(spec, runtime)
    asked_for_litert = runtime == "litert"
    if spec.precision == "int8":  # a full-integer TFLite model: LiteRT is the only runtime that runs it
        return LiteRTEmbedder(spec, fp, threads=threads, reporter=reporter)
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
    except (UsageError, CacheError, KeyboardInterrupt):
        raise
    except Exception as e:  # the converter cannot handle some op, or the result disagrees
        reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        if strict:
            raise WeightsError(f"cannot run {spec.arg} on LiteRT ({reason}); use --runtime keras") from None
        _write_beside(failed_marker, (reason + "\n").encode())
        if reporter:
            reporter.warn(f"{spec.arg} does not convert to LiteRT ({reason}); running it on TensorFlow")
        return HubEmbedder(spec)
