"""load_model: the one place where the kind of a saved model is decided."""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelError
from . import head_model, image_models
from .classifier import Classifier
from .manifest import read_manifest


def load_model(path, *, runtime: str = "auto", threads: int | None = None) -> Classifier:
    """The model at `path`: a model folder written by fit/fit_head, finetune or export, or a .tflite file
    (with manifest.json or labels.txt beside it). `runtime` (auto, litert, keras) runs a head's backbone,
    as for `embed`; `threads` is for TFLite interpreters. Raises ModelError for a missing, damaged,
    tampered or unknown model (every member file is checked against its sha256 before it is loaded)."""
    path = Path(path)
    if path.suffix == ".tflite":
        return image_models.load(path, threads=threads)
    manifest = read_manifest(path)
    kind = manifest.get("kind", "cached-head")
    if kind == "cached-head":
        return head_model.from_manifest(path, manifest, runtime=runtime)
    if kind in image_models.IMAGE_KINDS:
        return image_models.from_manifest(path, manifest, threads=threads)
    raise ModelError(f"{path} holds a model of unknown kind '{kind}': written by a newer embedflow?")
