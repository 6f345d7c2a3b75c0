"""One interface for every trained thing: `Classifier`, and `load_model`, which decides a model's kind once.

Kinds: a head on cached vectors (`cached-head`, models.head_model), a fine-tuned model (`finetuned`), a
cached head fused with its backbone (`fused`) and a TFLite export (`tflite`, a folder or a bare .tflite
file with labels.txt beside it) (models.image_models). Every kind implements `predict_pixels` on a uint8
batch; `predict_proba` and `predict` turn any images into that batch the way `embed` decodes files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ..errors import ModelError
from .manifest import MANIFEST, read_member, sha256_file, staged_folder, write_manifest, write_members


class Classifier:
    """A trained classifier: images -> probabilities over `classes_`.

    Attributes: `kind` (str), `classes_` (np.ndarray of str, the probability columns), `fingerprint`
    (dict: the backbone, weights and image size it expects), `manifest` (dict), `path` (Path of the
    folder it was loaded from or saved to, None for one only in memory), `image_size` (int, pixels)."""

    def __init__(self, manifest: dict, path: Path | None = None):
        self.manifest = manifest
        self.path = Path(path) if path is not None else None
        self.trusted = True  # False for a folder loaded without trust whose manifest this user did not sign

    @property
    def kind(self) -> str:
        return self.manifest.get("kind", "cached-head")

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def classes_(self) -> np.ndarray:
        return np.asarray(self.manifest["classes"], dtype=str)

    @property
    def fingerprint(self) -> dict:
        return self.manifest["fingerprint"]

    @property
    def image_size(self) -> int:
        return int(self.manifest.get("image_size") or self.fingerprint["image_size"])

    @property
    def split_(self) -> dict:
        """The train/validation split record (val_split, seed, counts, validation keys); {} if none."""
        return self.manifest.get("split") or {}

    def predict_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """float64 (N, len(classes_)) probabilities for uint8 pixels (N, image_size, image_size, 3)."""
        raise NotImplementedError(f"{type(self).__name__} must implement predict_pixels")

    def predict_proba(self, images) -> np.ndarray:
        """float32 (N, len(classes_)) probabilities. `images`: a list of paths, a list of PIL images, or a
        uint8 array (N, H, W, 3); each is decoded and resized exactly as `embed` does. Raises UsageError
        naming a file that cannot be read."""
        from ..data import to_pixels

        pixels = to_pixels(images, self.image_size)
        if not len(pixels):
            return np.zeros((0, len(self.classes)), np.float32)
        return self.predict_pixels(pixels).astype(np.float32)

    def predict(self, images) -> np.ndarray:
        """The most probable class name per image, (N,) str."""
        return self.classes_[self.predict_proba(images).argmax(axis=1)] if len(self.classes) else np.array([])

    def save(self, path) -> Path:
        """Write this model as a model folder at `path` (atomically replacing what is there); returns the
        folder. The saved folder loads with load_model to the same kind and the same probabilities."""
        with staged_folder(path) as staged:
            files = self._write_members(staged)
            self._write_extras(staged)
            manifest = {**self._manifest_for_save(), "files": files}
            write_members(staged, manifest, self._card_members(manifest, Path(path)))
            write_manifest(staged, manifest)
        self.path = Path(path)
        return self.path

    # what a folder-backed kind writes; the head kind overrides both
    def _write_members(self, staged: Path) -> dict:
        if self.path is None:
            raise ModelError(f"this {self.kind} model has no files to save")
        files = {}
        for name in (self.manifest.get("files") or {}):
            (staged / name).write_bytes(read_member(self.path, self.manifest, name))  # checked bytes only
            files[name] = sha256_file(staged / name)
        return files

    def _write_extras(self, staged: Path) -> None:
        """Reports and plots beside the model (report.json, confusion.*, history...): copied as they are."""
        if self.path is None or not self.path.is_dir():
            return
        members = set(self.manifest.get("files") or {}) | {MANIFEST}
        for src in self.path.iterdir():
            if src.is_file() and not src.is_symlink() and not src.name.startswith(".") and src.name not in members \
                    and not (staged / src.name).exists():
                shutil.copy2(src, staged / src.name)

    def _card_members(self, manifest: dict, target: Path) -> dict[str, str]:
        """Text members every model folder carries, recorded with their sha256: labels.txt (one class a line);
        the kinds trained above the reports layer add the README.md model card."""
        return {"labels.txt": "".join(f"{c}\n" for c in self.classes)}

    def _manifest_for_save(self) -> dict:
        return {k: v for k, v in self.manifest.items() if k not in ("files", "format", "schema_version", "signature")}

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path else ""
        return f"<{type(self).__name__} kind={self.kind!r}, {len(self.classes)} classes{where}>"
