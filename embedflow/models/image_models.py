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

    def predict_pixels(self, pixels: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        from .keras_parts import PREDICT_BATCH, predict_pixels

        return predict_pixels(self.model, np.asarray(pixels, dtype=np.uint8), batch_size or PREDICT_BATCH)


class TFLiteImageClassifier(ImageClassifier):
    """A TFLite export run by LiteRT (a folder with manifest.json, or a bare .tflite with labels.txt)."""

    def __init__(self, path: Path, manifest: dict, model_file: Path, threads: int | None = None,
                 content: bytes | None = None):
        from ..backbones import make_interpreter

        super().__init__(path, manifest)
        self.model_file = Path(model_file)
        self.model_content = Path(model_file).read_bytes() if content is None else content
        try:  # from the bytes that were checked, never from the path again
            self.interpreter = make_interpreter(model_content=self.model_content, threads=threads)
        except Exception as e:  # noqa: BLE001 - not a TFLite flatbuffer
            raise ModelError(f"cannot load {model_file}: {type(e).__name__}: {e}".splitlines()[0]) from None
        out = self.interpreter.get_output_details()[0]["shape"]
        if self.manifest.get("classes") and (len(out) != 2 or int(out[-1]) != len(self.classes)):
            raise ModelError(f"{model_file} outputs {list(out)}, not the {len(self.classes)} classes of its "
                             "labels: damaged or tampered with")

    def _write_members(self, staged: Path) -> dict:
        if self.manifest.get("files"):
            return super()._write_members(staged)
        # a bare .tflite file: the folder gets the file, its labels and a manifest describing them
        (staged / "model.tflite").write_bytes(self.model_content)
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


def load_keras_model(model_dir: Path, manifest: dict, name: str, *, trusted: bool):
    """The Keras model member `name` of a validated model folder, from the bytes whose sha256 was checked.
    A Keras file can run code when loaded: a folder not `trusted` (signed here, or trust=True) is refused."""
    from .keras_parts import load_keras_bytes
    from .trust import require_trust

    require_trust(model_dir, trusted)
    data = models.read_member(model_dir, manifest, name)
    return load_keras_bytes(data, str(Path(model_dir) / name), len(manifest["classes"]))


def from_manifest(path: Path, manifest: dict, threads: int | None = None, *, trusted: bool = False) -> ImageClassifier:
    """The image classifier of a model folder whose manifest was read and validated (load_model decides)."""
    kind = manifest.get("kind")
    if kind in ("finetuned", "fused"):
        return KerasImageClassifier(path, manifest, load_keras_model(path, manifest, manifest["model_file"],
                                                                     trusted=trusted))
    if kind == "tflite":
        name = manifest["model_file"]
        return TFLiteImageClassifier(path, manifest, path / name, threads,
                                     content=models.read_member(path, manifest, name))
    raise ModelError(f"{path} is a {kind} model, which runs on cached vectors, not on images")


def _classes_from_metadata(path: Path, content: bytes) -> list[str]:
    """The class names packed in a .tflite file's metadata (embedflow exports carry them)."""
    from .tflite_metadata import read_metadata

    try:
        return read_metadata(content)["labels"]
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
        manifest = models.validate_manifest(models.read_manifest(folder), folder)
        if manifest.get("model_file") == path.name:
            return TFLiteImageClassifier(folder, manifest, path, threads,
                                         content=models.read_member(folder, manifest, path.name))
    content = models.read_regular(path, "file")  # a bare file: no recorded hash, but one read all the same
    labels = folder / "labels.txt"
    if labels.is_file():
        try:
            classes = [line for line in models.read_regular(labels, "labels").decode("utf-8").splitlines() if line]
        except UnicodeDecodeError:
            raise ModelError(f"{labels} is not UTF-8 text") from None
    else:
        classes = _classes_from_metadata(path, content)
    clf = TFLiteImageClassifier(folder, {"kind": "tflite", "classes": classes}, path, threads, content=content)
    shape = clf.interpreter.get_input_details()[0]["shape"]
    clf.manifest["image_size"] = int(shape[1])
    clf.manifest["fingerprint"] = {"id": "unknown", "image_size": int(shape[1])}
    return clf
