"""Model folders: a trained head, its manifest (classes, fingerprint, split, hyperparameters, metrics,
file hashes) and its reports. Loading checks the head file's sha256 against the manifest *before*
unpickling it: a joblib file can run code, so only load model folders from sources you trust."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .__about__ import __version__
from .errors import DatasetError, ModelError

FORMAT = "embedflow.model"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def split_indices(labels: np.ndarray, hashes: list[str], classes: list[str], val_split: float, seed: int):
    """Deterministic stratified train/validation split that keeps identical files (same sha256) on the
    same side, so exact duplicates cannot leak from training into validation."""
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    n = len(labels)
    if not 0.0 <= val_split < 1.0:
        raise DatasetError(f"--val-split must be in [0, 1), got {val_split}")
    present = np.unique(labels)
    if len(present) < 2:
        only = classes[int(present[0])] if len(present) else "none"
        raise DatasetError(f"need at least 2 classes to train a classifier, the cache holds one ({only})")
    if val_split == 0:
        return np.arange(n), np.arange(0)
    group_of: dict[str, int] = {}
    group_ids = np.array([group_of.setdefault(h, len(group_of)) for h in hashes])
    first_row = np.zeros(len(group_of), dtype=int)
    first_row[group_ids[::-1]] = np.arange(n)[::-1]
    group_labels = labels[first_row]
    counts = np.bincount(group_labels, minlength=len(classes))
    for c in present:
        if counts[c] < 2:
            raise DatasetError(
                f"class '{classes[c]}' has {counts[c]} distinct image(s); a validation split needs at least 2 "
                "per class (add images, remove the class folder, or use --val-split 0)"
            )
    n_val = int(np.ceil(val_split * len(group_labels)))
    if n_val < len(present) or len(group_labels) - n_val < len(present):
        raise DatasetError(
            f"a {val_split:.0%} validation split of {len(group_labels)} distinct images cannot hold every one of "
            f"the {len(present)} classes on both sides; use a larger dataset or another --val-split"
        )
    g_train, g_val = train_test_split(np.arange(len(group_labels)), test_size=n_val, stratify=group_labels,
                                      random_state=seed)
    in_val = np.isin(group_ids, g_val)
    return np.flatnonzero(~in_val), np.flatnonzero(in_val)


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class ManifestView:
    """What every loaded model says about itself through its manifest."""

    manifest: dict

    @property
    def classes(self) -> list[str]:
        return self.manifest["classes"]

    @property
    def fingerprint(self) -> dict:
        return self.manifest["fingerprint"]


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


def save(out_dir: Path, estimator, head: str, classes: list[str], fingerprint: dict, extra: dict) -> Path:
    """Write the head file and manifest.json into out_dir; returns the manifest path."""
    from .heads import DenseHead, dumps_sklearn

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
    path = out_dir / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, default=_jsonable))
    return path


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def read_manifest(model_dir: str | Path) -> dict:
    model_dir = Path(model_dir)
    path = model_dir / MANIFEST
    if not model_dir.exists():
        raise ModelError(f"no model folder at {model_dir}: train one with `embedflow fit`")
    if not path.is_file():
        raise ModelError(f"{model_dir} is not an embedflow model folder (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read {path}: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelError(f"{path} is not an embedflow model manifest")
    try:
        schema = int(manifest.get("schema_version", 0))
    except (TypeError, ValueError):
        raise ModelError(f"{path} has an invalid schema_version: damaged or tampered with") from None
    if schema > SCHEMA_VERSION:
        raise ModelError(f"{model_dir} was written by a newer embedflow; upgrade to load it")
    return manifest


def checked_member(model_dir: Path, manifest: dict, name) -> Path:
    """model_dir/name, after checking that the manifest names a plain file of the folder and that its
    sha256 is the one the manifest records. Call before loading anything that can run code."""
    where = model_dir / MANIFEST
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise ModelError(f"{where} names {name!r} as its model file, which is not a file of the folder: "
                         "damaged or tampered with; refusing to load it")
    path = model_dir / name
    if not path.is_file():
        raise ModelError(f"{model_dir} is incomplete: {name} is missing")
    files = manifest.get("files")
    recorded = files.get(name) if isinstance(files, dict) else None
    if not recorded:
        raise ModelError(f"{where} records no sha256 for {name}: damaged or tampered with; refusing to load it")
    if sha256_file(path) != recorded:
        raise ModelError(
            f"{path} does not match the sha256 in its manifest: it was modified or replaced; refusing to "
            "load it (model files can run code: only use ones from sources you trust)"
        )
    return path


def _require(manifest: dict, model_dir: Path, fields: dict) -> None:
    """Fields a loader needs, with their types: a missing or mistyped one is one clear error."""
    for name, kind in fields.items():
        if not isinstance(manifest.get(name), kind):
            raise ModelError(f"{model_dir / MANIFEST} has no valid '{name}': damaged or tampered with")
    if "id" not in manifest.get("fingerprint", {"id": ""}):
        raise ModelError(f"{model_dir / MANIFEST} has no fingerprint id: damaged or tampered with")


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
        from .backbones import quiet_tensorflow
        from .heads import DenseHead

        quiet_tensorflow()
        import keras

        est = DenseHead(**{k: v for k, v in manifest.get("hyperparameters", {}).items()
                           if k in DenseHead().get_params()})
        est.model_ = keras.models.load_model(head_file)
        est.classes_ = np.arange(len(manifest["classes"]))
        return est
    import joblib

    return joblib.load(head_file)


def recorded_caches(manifest: dict) -> list[Path]:
    """Where the cache a head was fitted on should be: its path as given (relative to where `fit` ran),
    then its absolute path (older manifests lack it)."""
    recorded = manifest.get("cache") or {}
    return [Path(p) for p in dict.fromkeys(filter(None, (recorded.get("path"), recorded.get("abspath"))))]
