"""Model folders' manifest.json: the one reader, the member check (sha256 before anything is loaded),
and the fields every loaded model exposes. A joblib or Keras file can run code when loaded: only load
model folders from sources you trust."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..errors import ModelError

FORMAT = "embedflow.model"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_members(out_dir: Path, manifest: dict, members: dict[str, str]) -> None:
    """Write text members (e.g. labels.txt, README.md) into out_dir, each beside its target and renamed into
    place, and record their sha256 in manifest["files"]."""
    files = manifest.setdefault("files", {})
    for name, text in members.items():
        path = Path(out_dir) / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        files[name] = sha256_file(path)


class ManifestView:
    """What every loaded model says about itself through its manifest."""

    manifest: dict

    @property
    def classes(self) -> list[str]:
        return self.manifest["classes"]

    @property
    def fingerprint(self) -> dict:
        return self.manifest["fingerprint"]


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


def recorded_caches(manifest: dict) -> list[Path]:
    """Where the cache a head was fitted on should be: its path as given (relative to where `fit` ran),
    then its absolute path (older manifests lack it)."""
    recorded = manifest.get("cache") or {}
    return [Path(p) for p in dict.fromkeys(filter(None, (recorded.get("path"), recorded.get("abspath"))))]
