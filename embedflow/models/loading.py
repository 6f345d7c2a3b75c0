"""load_model: the one place where the kind of a saved model is decided, and where trust is checked."""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelError
from . import head_model, image_models
from .classifier import Classifier
from .manifest import check_rejector, read_manifest, validate_manifest
from .trust import require_trust, signed_here

# Kinds whose model file can run code when loaded (a joblib pickle; a Keras file, whose loader has had
# code-execution flaws even in safe mode): a folder this installation did not sign needs trust=True.
# A TFLite flatbuffer is data for a fixed set of built-in ops and loads without it.
CODE_KINDS = ("cached-head", "finetuned", "fused")


def load_model(path, *, runtime: str = "auto", threads: int | None = None, trust: bool = False) -> Classifier:
    """The model at `path`: a model folder written by fit/fit_head, finetune or export, or a .tflite file
    (with manifest.json or labels.txt beside it). `runtime` (auto, litert, keras) runs a head's backbone,
    as for `embed`; `threads` is for TFLite interpreters.

    Every manifest field is validated; every model file is read once, its sha256 checked on those bytes and
    the model loaded from them; links and non-regular files are refused. A folder whose manifest is not
    signed with this user's key (models.trust: written elsewhere, or edited) is not loaded when its model
    file can run code (joblib, Keras) unless `trust=True`. The returned Classifier's `trusted` says whether
    it was signed here or trusted. Raises ModelError (exit 5) for a missing, damaged, tampered, untrusted
    (UntrustedModel) or unknown model."""
    path = Path(path)
    if path.suffix == ".tflite":
        clf = image_models._load_bare_tflite(path, threads)
        clf.trusted = bool(trust) or (clf.manifest.get("signature") is not None and signed_here(clf.manifest))
        return clf
    manifest = validate_manifest(read_manifest(path), path)
    trusted = bool(trust) or signed_here(manifest)
    kind = manifest.get("kind", "cached-head")
    if kind in CODE_KINDS:
        require_trust(path, trusted)
    if kind == "cached-head":
        check_rejector(path, manifest)  # its unknown-input rule: refused at load, not at the first predict
        clf = head_model.from_manifest(path, manifest, runtime=runtime)
    else:
        clf = image_models.from_manifest(path, manifest, threads=threads, trusted=trusted)
    clf.trusted = trusted
    return clf


def load(model_dir, *, runtime: str = "auto", trust: bool = False) -> head_model.HeadClassifier:
    """A head's model folder (kind cached-head), loaded as load_model does."""
    model = load_model(model_dir, runtime=runtime, trust=trust)
    if not isinstance(model, head_model.HeadClassifier):
        raise ModelError(f"{model_dir} is a {model.kind} model, which runs on images, not on cached vectors")
    return model


def load_image_model(path, threads: int | None = None, *, trust: bool = False) -> image_models.ImageClassifier:
    """An image classifier (a fine-tuned, fused or TFLite model folder, or a .tflite file), as load_model."""
    model = load_model(path, threads=threads, trust=trust)
    if not isinstance(model, image_models.ImageClassifier):
        raise ModelError(f"{path} is a {model.kind} model, which runs on cached vectors, not on images")
    return model
