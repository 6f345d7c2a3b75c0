"""Model folders of a head trained on cached vectors (kind "cached-head"): saving and loading."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..__about__ import __version__
from ..errors import ModelError
from .manifest import (FORMAT, MANIFEST, SCHEMA_VERSION, ManifestView, _jsonable, _require, checked_member,
                       read_manifest, sha256_file, write_members)


@dataclass
class LoadedModel(ManifestView):
    path: Path
    manifest: dict
    estimator: object

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(N, len(classes)) probabilities, columns in manifest class order."""
        proba = np.asarray(self.estimator.predict_proba(np.asarray(X, dtype=np.float32)))
        cols = [int(c) for c in self.estimator.classes_]
        out = np.zeros((len(X), len(self.classes)))
        out[:, cols] = proba
        return out


def save(out_dir: Path, estimator, head: str, classes: list[str], fingerprint: dict, extra: dict,
         members=None) -> Path:
    """Write the head file and manifest.json into out_dir; returns the manifest path. members: a function
    manifest -> {name: text} of more files to write and record (labels.txt, the README.md model card)."""
    from ..heads import DenseHead, dumps_sklearn

    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(estimator, DenseHead):
        head_file = "head.keras"
        estimator.model_.save(out_dir / head_file)
    else:
        head_file = "head.joblib"
        (out_dir / head_file).write_bytes(dumps_sklearn(estimator))
    manifest = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "kind": "cached-head",
        "head": head,
        "head_file": head_file,
        "classes": list(classes),
        "fingerprint": fingerprint,
        "files": {head_file: sha256_file(out_dir / head_file)},
        "embedflow_version": __version__,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }
    if members is not None:
        write_members(out_dir, manifest, members(manifest))
    path = out_dir / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, default=_jsonable))
    return path


def load(model_dir: str | Path) -> LoadedModel:
    """Load a model folder, refusing a head file whose sha256 differs from the manifest."""
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    if manifest.get("kind", "cached-head") != "cached-head":
        raise ModelError(f"{model_dir} is a {manifest['kind']} model, which runs on images, not on cached vectors")
    _require(manifest, model_dir, {"head_file": str, "classes": list, "fingerprint": dict})
    head_file = checked_member(model_dir, manifest, manifest["head_file"])
    try:
        est = _load_head(head_file, manifest)
    except Exception as e:  # noqa: BLE001 - a file that matches its hash but is not a head (a forged manifest)
        raise ModelError(f"cannot load {head_file}: {type(e).__name__}: {e}") from None
    return LoadedModel(model_dir, manifest, est)


def _load_head(head_file: Path, manifest: dict):
    if head_file.suffix == ".keras":
        from ..backbones import quiet_tensorflow
        from ..heads import DenseHead

        quiet_tensorflow()
        import keras

        est = DenseHead(**{k: v for k, v in manifest.get("hyperparameters", {}).items()
                           if k in DenseHead().get_params()})
        est.model_ = keras.models.load_model(head_file)
        est.classes_ = np.arange(len(manifest["classes"]))
        return est
    import joblib

    return joblib.load(head_file)
