"""Fingerprints: everything that determines the vectors, and an id over exactly those fields. Two
artifacts are compatible exactly when their fingerprint ids are equal."""

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
    if have.get("id") != want.get("id"):
        diffs = [k for k in _IDENTITY_FIELDS if have.get(k) != want.get(k)]
        raise FingerprintMismatch(
            f"{what} was made with {describe(have)}, not {describe(want)} "
            f"(differs in: {', '.join(diffs) or 'id'}){'; ' + hint if hint else ''}"
        )


def spec_from_fingerprint(fp: dict) -> BackboneSpec:
    """The spec an artifact was made with, to embed new images the same way. The weights found now
    (a Keras file, a --weights file, a hub SavedModel) must still be the ones the artifact recorded."""
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
