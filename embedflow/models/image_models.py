"""Image classifiers: models that map raw uint8 pixels to class probabilities without the cache.

Three kinds of the Classifier interface (models.classifier):
a fine-tuned model folder (`kind: finetuned`, model.keras), a cached head fused with its backbone
(`kind: fused`, model.keras) and a TFLite export (`kind: tflite`, model.tflite, or a bare .tflite file
with labels.txt beside it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import manifest as models
from ..errors import ModelError
from .classifier import Classifier

IMAGE_KINDS = ("finetuned", "fused", "tflite")


class ImageClassifier(Classifier):
    """uint8 (N, S, S, 3) -> (N, len(classes)) probabilities, columns in `classes` order."""

    def __init__(self, path: Path, manifest: dict):
        super().__init__(manifest, path)


class KerasImageClassifier(ImageClassifier):
    """A fine-tuned or fused Keras model (uint8 pixels in, probabilities out; preprocessing inside)."""

    def __init__(self, path: Path, manifest: dict, model):
        super().__init__(path, manifest)
        self.model = model

    @property
    def keras_model(self):
        return self.model

    def predict_pixels(self, pixels: np.ndarray, batch_size: int = 64) -> np.ndarray:
        from .keras_parts import predict_pixels

        return predict_pixels(self.model, np.asarray(pixels, dtype=np.uint8), batch_size)


class TFLiteImageClassifier(ImageClassifier):
    """A TFLite export run by LiteRT (a folder with manifest.json, or a bare .tflite with labels.txt)."""

    def __init__(self, path: Path, manifest: dict, model_file: Path, threads: int | None = None):
        from ..backbones import make_interpreter

        super().__init__(path, manifest)
        self.model_file = Path(model_file)
        self.interpreter = make_interpreter(str(model_file), threads=threads)

    def _write_members(self, staged: Path) -> dict:
        if self.manifest.get("files"):
            return super()._write_members(staged)
        # a bare .tflite file: the folder gets the file, its labels and a manifest describing them
        import shutil

        shutil.copy2(self.model_file, staged / "model.tflite")
        (staged / "labels.txt").write_text("".join(f"{c}\n" for c in self.classes))
        self.manifest.update(model_file="model.tflite", labels_file="labels.txt")
        return {name: models.sha256_file(staged / name) for name in ("model.tflite", "labels.txt")}

    def _write_extras(self, staged: Path) -> None:
        if self.manifest.get("files"):
            super()._write_extras(staged)

    def predict_pixels(self, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
        from ..backbones import run_tflite

        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        outs = [run_tflite(self.interpreter, pixels[i:i + batch_size]) for i in range(0, len(pixels), batch_size)]
        return np.concatenate(outs).astype(np.float64) if outs else np.zeros((0, len(self.classes)))


def load_keras_model(model_dir: Path, manifest: dict, name: str):
    from ..backbones import quiet_tensorflow

    path = models.checked_member(model_dir, manifest, name)
    quiet_tensorflow()
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as e:  # a damaged or foreign file
        raise ModelError(f"cannot load {path}: {e}") from None


def load(path: str | Path, threads: int | None = None) -> ImageClassifier:
    """The image classifier at `path` (a model folder of an image kind, or a .tflite file)."""
    path = Path(path)
    if path.suffix == ".tflite":
        return _load_bare_tflite(path, threads)
    return from_manifest(path, models.read_manifest(path), threads)


def from_manifest(path: Path, manifest: dict, threads: int | None = None) -> ImageClassifier:
    """The image classifier of a model folder whose manifest was read (load_model decides the kind)."""
    kind = manifest.get("kind")
    if kind in ("finetuned", "fused"):
        return KerasImageClassifier(path, manifest, load_keras_model(path, manifest, manifest["model_file"]))
    if kind == "tflite":
        return TFLiteImageClassifier(path, manifest, models.checked_member(path, manifest, manifest["model_file"]), threads)
    raise ModelError(f"{path} is a {kind} model, which runs on cached vectors, not on images")


def _classes_from_metadata(path: Path) -> list[str]:
    """The class names packed in a .tflite file's metadata (embedflow exports carry them)."""
    from .tflite_metadata import read_metadata

    try:
        return read_metadata(path.read_bytes())["labels"]
    except OSError as e:
        raise ModelError(f"cannot read {path}: {e.strerror or e}") from None
    except ModelError as e:
        raise ModelError(f"{path} has neither a manifest.json nor a labels.txt beside it, and its class names cannot "
                         f"be read from its metadata ({e})") from None


def _load_bare_tflite(path: Path, threads: int | None) -> ImageClassifier:
    """A .tflite file: its folder's manifest when it describes this file, else labels.txt beside it, else the
    labels packed in its TFLite metadata."""
    if not path.is_file():
        raise ModelError(f"no such TFLite file: {path}")
    folder = path.parent
    if (folder / models.MANIFEST).is_file():
        manifest = models.read_manifest(folder)
        if manifest.get("model_file") == path.name:
            return TFLiteImageClassifier(folder, manifest, models.checked_member(folder, manifest, path.name), threads)
    labels = folder / "labels.txt"
    if labels.is_file():
        classes = [line for line in labels.read_text().splitlines() if line]
    else:
        classes = _classes_from_metadata(path)
    clf = TFLiteImageClassifier(folder, {"kind": "tflite", "classes": classes}, path, threads)
    shape = clf.interpreter.get_input_details()[0]["shape"]
    clf.manifest["image_size"] = int(shape[1])
    clf.manifest["fingerprint"] = {"id": "unknown", "image_size": int(shape[1])}
    return clf
