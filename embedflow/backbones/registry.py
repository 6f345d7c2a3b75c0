"""From a --backbone value to a spec, and from a spec to its weights file; the listing `embedflow
backbones` shows."""

from __future__ import annotations

import io
import os
import sys
from dataclasses import replace
from pathlib import Path

from ..errors import UsageError, WeightsError
from .hub import hub_spec, resolve_hub
from .silence import quiet_tensorflow
from .spec import (DEFAULT_BACKBONE, HUB_MAX_IMAGE_SIZE, HUB_MIN_IMAGE_SIZE, HUB_PREFIX, HUB_PREPROCESSING,
                   KERAS_WEIGHTS_ORIGIN, MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, MOBILENET_V2_ALPHAS, MOBILENET_V2_SIZES,
                   PRECISIONS, REGISTRY, BackboneSpec, _mobilenet_v2)
from .weights import _weights_candidates, local_weights


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


def get_spec(name: str | None = "mobilenet_v2", image_size: int | None = None, weights: str | None = None,
             precision: str | None = None) -> BackboneSpec:
    """The spec for a --backbone value, with --image-size (the input resize), --weights (a file) and
    --precision ("fp32" or "int8" in any case; None: fp32) applied. Raises UsageError for a bad value (int8
    of a hub backbone included), WeightsError for a missing weights file."""
    precision = precision.strip().lower() if isinstance(precision, str) else precision
    if precision not in (None, "fp32") and (name or "").strip().startswith(HUB_PREFIX):  # before any download
        raise UsageError(f"--precision {precision} applies to Keras application backbones only, not {name}")
    return _with_precision(_get_spec(name, image_size, weights), precision)


def _with_precision(spec: BackboneSpec, precision: str | None) -> BackboneSpec:
    precision = precision or "fp32"
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision '{precision}': use {' or '.join(PRECISIONS)}")
    if precision != "fp32" and spec.family != "keras":
        raise UsageError(f"--precision {precision} applies to Keras application backbones only, not {spec.arg}")
    return replace(spec, precision=precision) if precision != spec.precision else spec


def _get_spec(name: str | None, image_size: int | None, weights: str | None) -> BackboneSpec:
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


def listing() -> list[dict]:
    """One row per registry backbone (plus the mobilenet_v2 variants and hub:): what `embedflow backbones`
    shows. `available` says whether the weights are on this machine now (nothing is downloaded);
    `precisions` the --precision values it takes (int8: Keras application backbones)."""
    rows = []
    for spec in REGISTRY.values():
        found = local_weights(spec)
        rows.append({"backbone": spec.arg, "family": spec.family, "output_dim": spec.output_dim,
                     "input_size": spec.image_size, "image_sizes": f"{MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE}",
                     "preprocessing": spec.preprocessing, "weights_file": spec.weights_file,
                     "weights_origin": spec.weights_origin, "available": found is not None,
                     "weights_path": str(found) if found else None, "fine_tunable": spec.fine_tunable,
                     "precisions": precisions(spec.family)})
    variants = [f"mobilenet_v2:{a}:{n}" for a in MOBILENET_V2_ALPHAS for n in MOBILENET_V2_SIZES
                if (a, n) != (1.0, 224) and local_weights(_mobilenet_v2(a, n))]
    rows.append({"backbone": "mobilenet_v2:ALPHA:SIZE", "family": "keras",
                 "output_dim": "1280 (alpha <= 1), 1280*alpha above", "input_size": "SIZE",
                 "image_sizes": f"ALPHA in {', '.join(map(str, MOBILENET_V2_ALPHAS))}; "
                                f"SIZE in {', '.join(map(str, MOBILENET_V2_SIZES))}",
                 "preprocessing": REGISTRY["mobilenet_v2"].preprocessing,
                 "weights_file": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_ALPHA_SIZE_no_top.h5",
                 "weights_origin": KERAS_WEIGHTS_ORIGIN, "available": bool(variants),
                 "weights_path": None, "available_variants": variants, "fine_tunable": True,
                 "precisions": precisions("keras")})
    rows.append({"backbone": "hub:URL_OR_PATH", "family": "hub", "output_dim": "the model's",
                 "input_size": "the signature's, else 224", "image_sizes": f"{HUB_MIN_IMAGE_SIZE}..{HUB_MAX_IMAGE_SIZE}",
                 "preprocessing": HUB_PREPROCESSING, "weights_file": "a TF2 SavedModel folder",
                 "weights_origin": os.environ.get("TFHUB_CACHE_DIR") or "tensorflow_hub's cache (TFHUB_CACHE_DIR)",
                 "available": None, "weights_path": None, "fine_tunable": False, "precisions": precisions("hub")})
    return rows


def precisions(family: str) -> list[str]:
    """The --precision values a backbone family takes: every one for Keras applications, fp32 for hub."""
    return list(PRECISIONS) if family == "keras" else ["fp32"]


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

        quiet_tensorflow()  # importing Keras loads TensorFlow, whose native start-up notices go to stderr
        from keras.utils import get_file

        with contextlib.redirect_stdout(_HeldUntilProgress()):  # stdout stays clean; see _HeldUntilProgress
            return Path(get_file(fname, spec.weights_origin + fname, cache_subdir="models"))
    except Exception as e:  # offline, proxy, disk full: say what is missing and where it was sought
        why = str(e).split(" -- ")[-1].splitlines()[0][:120] if str(e) else type(e).__name__
        raise WeightsError(
            f"ImageNet weights for {spec.arg} not available: Keras looks for {fname} in "
            f"{_weights_candidates(spec)[0].parent} and could not download it from {spec.weights_origin} "
            f"({why}). Set KERAS_HOME to a folder whose models/ holds that file, or pass --weights PATH"
        ) from None


class _HeldUntilProgress(io.TextIOBase):
    """Where Keras' download messages go: its first line ("Downloading data from URL") is held back until
    the download reports progress, then everything goes to stderr. A download that fails at once (offline,
    no proxy) prints nothing, so its one WeightsError line is all the user sees."""

    def __init__(self):
        self.held: list[str] = []
        self.flowing = False

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return sys.stderr.isatty()

    def write(self, text: str) -> int:
        if not self.flowing and (not self.held or not text.strip()):
            self.held.append(text)
            return len(text)
        if not self.flowing:
            self.flowing = True
            sys.stderr.write("".join(self.held))
        sys.stderr.write(text)
        return len(text)

    def flush(self) -> None:
        if self.flowing:
            sys.stderr.flush()
