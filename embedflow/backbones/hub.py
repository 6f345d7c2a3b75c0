"""TF Hub / SavedModel feature vectors: resolving a handle, probing its input size and dimension, and
running it on TensorFlow."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import UsageError, WeightsError
from ..fsio import fchmod_as_umask
from .silence import quiet_tensorflow
from .spec import HUB_PREPROCESSING, BackboneSpec
from .weights import digest_path, embedflow_home


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
    digest = digest_path(path)
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
    """Best effort: the file only remembers probes (a read-only or full EMBEDFLOW_HOME probes again next time)."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        fchmod_as_umask(fd)
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


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
