"""Fingerprints: everything that determines the vectors, and an id over exactly the value fields. Two
artifacts are compatible exactly when their ids are equal once both are in the current id scheme
(same_backbone; artifacts written before it carry scheme 1 ids and are upgraded when compared)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from ..__about__ import __version__
from ..errors import FingerprintMismatch, WeightsError
from .registry import get_spec, resolve_weights
from .spec import EMBEDDING_VERSION, BackboneSpec
from .weights import digest_path


def weights_digest(spec: BackboneSpec, weights_path: Path | None = None) -> str:
    """sha256 of the weights file; for a SavedModel, over every file's relative path and sha256."""
    return digest_path(weights_path or resolve_weights(spec))


ID_SCHEME = 2  # ids hash value codes (scheme 1, before: the prose fields; still recognised, see upgrade)
_ID_FIELDS = ("backbone", "alpha", "image_size", "output_dim", "pixels", "pooling_code", "resize_code",
              "weights_sha256", "embedding_version")
# Only a reduced-precision backbone adds these to the id: fp32 ids (and every cache made before) stay as they were.
_PRECISION_FIELDS = ("precision", "calibration")
INT8 = "int8: full-integer TFLite (uint8 pixels in, int8 weights and activations, float32 vectors out)"
RESIZE = ("square-bilinear", "EXIF-rotated, RGB over white, bilinear to a square (no crop)")  # (code, prose)
POOLING = {"keras": ("avg", "global average"), "hub": ("model", "the SavedModel's own feature vector")}

# Scheme 1 (every artifact written before ID_SCHEME existed) hashed these fields, prose included. The
# prose values it ever wrote, frozen here, map to the codes that replace them in the id.
_SCHEME1_FIELDS = ("backbone", "alpha", "image_size", "output_dim", "preprocessing", "pooling", "resize",
                   "weights_sha256", "embedding_version")
_SCHEME1_PIXELS = {
    "mobilenet_v2: x/127.5 - 1 (pixels to [-1, 1])": "mobilenet_v2",
    "built into the Keras model: raw pixels 0..255 (Rescaling to [-1, 1] inside)": "raw",
    "built into the Keras model: raw pixels 0..255 (Rescaling + ImageNet Normalization inside)": "raw",
    "caffe: RGB to BGR minus the ImageNet mean (103.939, 116.779, 123.68), no scaling": "caffe",
    "TF Hub image convention: x/255 (pixels to [0, 1])": "unit",
}
_SCHEME1_POOLING = {"global average": "avg", "the SavedModel's own feature vector": "model"}
_SCHEME1_RESIZE = {"EXIF-rotated, RGB over white, bilinear to a square (no crop)": "square-bilinear"}


def fingerprint(spec: BackboneSpec, weights_path: Path | None = None) -> dict:
    """Everything that determines the vectors, plus an id hashing exactly the value fields (_ID_FIELDS).

    preprocessing, pooling and resize say the same as the codes pixels, pooling_code and resize_code, in
    words for people: rewording them changes no id. embedflow_version, weights_source and backbone_arg
    are recorded for people (and to rebuild the spec), but are not part of the id either: a new release
    that computes the same vectors, or the same weights file (or SavedModel) in another place, stays
    compatible. Raises WeightsError when the weights cannot be found.
    """
    pooling_code, pooling = POOLING["keras" if spec.family == "keras" else "hub"]
    fp = {
        "backbone": spec.name,
        "alpha": spec.alpha,
        "image_size": spec.image_size,
        "output_dim": spec.output_dim,
        "pixels": spec.pixels,
        "preprocessing": spec.preprocessing,
        "pooling_code": pooling_code,
        "pooling": pooling,
        "resize_code": RESIZE[0],
        "resize": RESIZE[1],
        "weights_sha256": weights_digest(spec, weights_path),
        "weights_source": spec.weights,
        "backbone_arg": spec.arg,
        "embedding_version": EMBEDDING_VERSION,
        "embedflow_version": __version__,
        "id_scheme": ID_SCHEME,
    }
    if spec.precision != "fp32":
        from .calibration import calibration_id

        fp.update(precision=spec.precision, calibration=calibration_id(), quantization=INT8)
    fp["id"] = fingerprint_id(fp)
    return fp


def id_fields(fp: dict) -> tuple[str, ...]:
    """The fields a fingerprint's id hashes: _ID_FIELDS, plus precision and calibration when not fp32."""
    return _ID_FIELDS + (_PRECISION_FIELDS if fp.get("precision", "fp32") != "fp32" else ())


def fingerprint_id(fp: dict) -> str:
    """16 hex digits of the sha256 over the value fields of a (scheme 2) fingerprint (id_fields)."""
    ident = json.dumps({k: fp.get(k) for k in id_fields(fp)}, sort_keys=True)
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def _scheme1_id(fp: dict) -> str | None:
    try:
        ident = json.dumps({k: fp[k] for k in _SCHEME1_FIELDS}, sort_keys=True)
    except KeyError:
        return None
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def upgrade(fp: dict) -> dict:
    """The scheme 2 form of a fingerprint read from an artifact. A scheme 1 fingerprint (no id_scheme)
    whose id matches its fields and whose prose is known gets the codes and the new id (its old id is
    kept as scheme1_id); anything else is returned as it is (and then only matches an equal id)."""
    scheme1 = _scheme1_id(fp)
    if fp.get("id_scheme") is not None or scheme1 is None or scheme1 != fp.get("id"):
        return fp
    codes = {"pixels": _SCHEME1_PIXELS.get(fp["preprocessing"]), "pooling_code": _SCHEME1_POOLING.get(fp["pooling"]),
             "resize_code": _SCHEME1_RESIZE.get(fp["resize"])}
    if None in codes.values():
        return fp
    new = {**fp, **codes, "id_scheme": ID_SCHEME, "scheme1_id": fp["id"]}
    new["id"] = fingerprint_id(new)
    return new


def same_backbone(a: dict | str, b: dict | str) -> bool:
    """Whether two fingerprints (dicts, or ids) describe the same vectors, whatever id scheme wrote them.
    An id string matches a fingerprint dict whose id it is, or, once upgraded, whose new or scheme 1 id."""
    if isinstance(a, str) or isinstance(b, str):
        ident, fp = (a, b) if isinstance(a, str) else (b, a)
        if isinstance(fp, str):
            return ident == fp
        return ident in (fp.get("id"), upgrade(fp).get("id"), upgrade(fp).get("scheme1_id"))
    return upgrade(a).get("id") == upgrade(b).get("id")


def describe(fp: dict) -> str:
    """One line naming a fingerprint's backbone, for messages; missing fields show as '?'."""
    name = fp.get("backbone_arg") or fp.get("backbone") or "?"
    width = f"alpha {fp['alpha']}, " if fp.get("alpha") is not None and str(name).startswith("mobilenet_v2") else ""
    precision = f"{fp['precision']}, " if fp.get("precision", "fp32") != "fp32" else ""
    return (f"{name} ({width}{precision}{fp.get('image_size', '?')}px, {fp.get('output_dim', '?')}-d, "
            f"weights {str(fp.get('weights_sha256') or '?')[:8]}, id {fp.get('id', '?')})")


def differences(have: dict, want: dict) -> list[str]:
    """The id fields in which two fingerprints differ (precision counts as fp32 where it is not recorded);
    [] when they describe the same vectors, ["id"] when they differ in no field we know."""
    if same_backbone(have, want):
        return []
    have2, want2 = upgrade(have), upgrade(want)
    diffs = [k for k in _ID_FIELDS if have2.get(k) != want2.get(k)]
    diffs += [k for k in _PRECISION_FIELDS if have2.get(k, "fp32" if k == "precision" else None)
              != want2.get(k, "fp32" if k == "precision" else None)]
    return diffs or ["id"]


def check_compatible(have: dict, want: dict, what: str, hint: str = "") -> None:
    """FingerprintMismatch (naming what differs) unless `have` and `want` describe the same vectors."""
    diffs = differences(have, want)
    if diffs:
        raise FingerprintMismatch(
            f"{what} was made with {describe(have)}, not {describe(want)} "
            f"(differs in: {', '.join(diffs)}){'; ' + hint if hint else ''}"
        )


def spec_from_fingerprint(fp: dict) -> BackboneSpec:
    """The spec an artifact was made with, to embed new images the same way. The weights found now
    (a Keras file, a --weights file, a hub SavedModel) must still be the ones the artifact recorded."""
    spec = get_spec(fp.get("backbone_arg") or fp["backbone"], fp["image_size"], precision=fp.get("precision", "fp32"))
    weights = fp.get("weights_source", "imagenet")
    if fp["backbone"] != "hub" and weights != "imagenet":
        if not Path(weights).is_file():
            raise WeightsError(
                f"this artifact was made with the weights file {weights}, which is not there any more; "
                "pass --weights with a copy of it"
            )
        spec = replace(spec, weights=weights)
    now = fingerprint(spec)
    if not same_backbone(now, fp):
        raise FingerprintMismatch(f"the weights of {spec.arg} have changed since this artifact was made "
                                  f"(was {describe(fp)}, now {describe(now)}); new images would not be "
                                  "embedded like the ones it was trained on")
    return spec
