"""Labelling images with a classifier, in memory: `predict` returns a PredictResult (top-k labels with
probabilities per image). One code path for every kind; for a head, vectors of files already in a cache
of its backbone (same sha256) are read from there instead of being computed again."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .errors import UsageError
from .models import Classifier
from .progress import SILENT, Reporter


@dataclass
class Prediction:
    """One image: its path (or image[i] for an image given in memory) and its top-k (label, probability)."""

    path: str
    top: list[dict]  # [{"label": str, "probability": float}], most probable first
    unknown: bool | None = None  # the model's unknown-input rule says the image is like none it was trained on
    unknown_score: float | None = None  # that rule's score (1 - mean cosine to the 5 nearest training vectors)

    @property
    def label(self) -> str:
        return self.top[0]["label"]

    def to_dict(self) -> dict:
        out = {"path": self.path, "top": [dict(t) for t in self.top]}
        if self.unknown is not None:
            out["unknown"], out["unknown_score"] = self.unknown, round(self.unknown_score, 6)
        return out


@dataclass
class PredictResult:
    """Predictions for the images that could be read, and the ones that could not ([{path, reason}]).
    `proba` is float64 (N, len(classes)) for the predictions, rows in their order."""

    model: str
    predictions: list[Prediction]
    failed: list[dict] = field(default_factory=list)
    proba: np.ndarray | None = None
    rejection: dict | None = None  # the unknown-input rule applied ({method, k, threshold, rate}), None: none

    def to_dict(self) -> dict:
        out = {"model": self.model, "predictions": [p.to_dict() for p in self.predictions],
               "failed": [dict(f) for f in self.failed]}
        if self.rejection is not None:
            out["rejection"] = dict(self.rejection)
        return out

    def __getitem__(self, key):  # result["predictions"], as when this was a dict
        return self.to_dict()[key]


def predict(model: Classifier, images, *, top_k: int = 3, cache_path: str | os.PathLike | None = None,
            name: str | None = None, reject: bool = True, reporter: Reporter = SILENT) -> PredictResult:
    """Top-k labels for `images`: image files and folders (paths), or PIL images / uint8 arrays (named
    image[i]). Files that cannot be read are listed in `failed`, not raised. For a head, `cache_path` is a
    cache whose vectors of identical files are reused. With `reject` and a model holding an unknown-input
    rule (insight.model_rejector: heads fitted with a validation split), each Prediction also carries
    `unknown` (bool) and `unknown_score`. Raises UsageError for top_k < 1, ModelError for a damaged rule file."""
    if top_k < 1:
        raise UsageError("--top-k must be at least 1")
    name = name or str(model.path or model.kind)
    rejector = None
    if reject and hasattr(model, "predict_proba_vectors"):
        from .insight import model_rejector

        rejector = model_rejector(model)
    vectors = None
    if isinstance(images, np.ndarray) or not all(isinstance(i, (str, os.PathLike)) for i in images):
        from .data import to_pixels

        pixels = to_pixels(images, model.image_size)
        names, failed = [f"image[{i}]" for i in range(len(pixels))], []
        if hasattr(model, "predict_proba_vectors"):
            vectors = model.embed_pixels(pixels)
            proba = model._proba_vectors(vectors)
        else:
            proba = model.predict_pixels(pixels)
    else:
        names, proba, vectors, failed = _on_files(model, images, cache_path, reporter)
    scores = rejector.score(vectors) if rejector is not None and vectors is not None and len(vectors) else None
    k = min(top_k, len(model.classes))
    predictions = []
    for i, (path, p) in enumerate(zip(names, proba)):
        top = np.argsort(-p, kind="stable")[:k]
        pred = Prediction(path, [{"label": model.classes[j], "probability": float(p[j])} for j in top])
        if scores is not None:
            pred.unknown, pred.unknown_score = bool(scores[i] > rejector.threshold_), float(scores[i])
        predictions.append(pred)
    rejection = None
    if rejector is not None:
        rejection = {key: value for key, value in rejector.to_dict().items() if key != "arrays"}
    return PredictResult(name, predictions, failed, proba, rejection)


def _on_files(model, inputs, cache_path, reporter):
    from .data import discover_inputs

    refs = discover_inputs(inputs)
    if hasattr(model, "predict_proba_vectors"):
        from . import backbones, cache
        from .embedding import embed_files

        spec = backbones.spec_from_fingerprint(model.fingerprint)
        ok, vectors, failures = embed_files(
            refs, spec, model.fingerprint, runtime=model.runtime, reporter=reporter,
            embedder_factory=lambda *args, **kwargs: model.backbone_embedder(kwargs.get("reporter")),
            known_from=lambda hashes: cache.vectors_for_hashes(cache_path, hashes, model.fingerprint)
            if cache_path else {})
        proba = model._proba_vectors(vectors) if len(ok) else np.zeros((0, len(model.classes)))
    else:
        vectors = None
        from .embedding import decode_refs

        decoded = decode_refs(refs, model.image_size, reporter=reporter)
        ok, failures = decoded.refs, decoded.failed
        proba = model.predict_pixels(decoded.pixels) if len(decoded) else np.zeros((0, len(model.classes)))
    return [str(r.path) for r in ok], proba, vectors, [{"path": str(r.path), "reason": why} for r, why in failures]
