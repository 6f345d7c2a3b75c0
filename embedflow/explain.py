"""Grad-CAM heatmaps for Keras image models (fine-tuned or fused): which regions drove the prediction.

The class score's gradient with respect to the last convolutional feature map of the MobileNetV2 base
(`out_relu`) is averaged per channel; the channel-weighted map, rectified and normalised, is the heatmap.
For a model with flip test-time augmentation, the maps of the image and of its mirror image (mirrored
back) are averaged, for the class the model's averaged probabilities pick.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelError
from .fsio import fit_name
from .progress import SILENT, Reporter
from .reports.write import write_atomically

CONV_LAYER = "out_relu"


@dataclass
class Explanation:
    path: Path  # the input image
    label: str
    probability: float
    heatmap: np.ndarray  # (h, w) in [0, 1], h x w the conv map's size
    overlay: Path  # the PNG written


def gradcam_model(model):
    """(preprocessing layers, conv model: preprocessed -> out_relu map, head layers after the pooling,
    whether the model averages over a horizontal flip)."""
    import keras

    from .models.keras_parts import split_parts, unwrap_tta

    pre, base, head = split_parts(model)
    flip_tta = unwrap_tta(model)[1]
    try:
        conv = base.get_layer(CONV_LAYER)
    except ValueError:
        raise ModelError(f"the model's base has no '{CONV_LAYER}' layer: Grad-CAM needs a MobileNetV2 base") from None
    if not isinstance(base.layers[-1], keras.layers.GlobalAveragePooling2D) or base.layers[-2] is not conv:
        raise ModelError("expected the base to end with out_relu and global average pooling")
    return pre, keras.Model(base.inputs, conv.output), head, flip_tta


def gradcam(model, pixels: np.ndarray, parts=None) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps (N, h, w) in [0, 1] for each image's top class, and the probabilities (N, C).
    `parts` is gradcam_model(model), to build it once for many calls."""
    pre, conv_model, head, flip_tta = parts or gradcam_model(model)
    if not flip_tta:
        return _gradcam(pre, conv_model, head, pixels)
    mirrored = np.ascontiguousarray(pixels[:, :, ::-1])
    proba = np.asarray(model.predict_on_batch(pixels))  # the mean over both views
    top = proba.argmax(axis=1)
    cam = _gradcam(pre, conv_model, head, pixels, top)[0] + _gradcam(pre, conv_model, head, mirrored, top)[0][:, :, ::-1]
    return _normalise(cam), proba


def _gradcam(pre, conv_model, head, pixels: np.ndarray, classes: np.ndarray | None = None):
    """(heatmaps, probabilities) of one network for `classes` (default: each image's top class)."""
    import tensorflow as tf

    x = tf.convert_to_tensor(pixels)
    for layer in pre:
        x = layer(x)
    conv = conv_model(x, training=False)
    with tf.GradientTape() as tape:
        tape.watch(conv)
        out = tf.reduce_mean(conv, axis=(1, 2))
        for layer in head:
            out = layer(out, training=False)
        top = tf.argmax(out, axis=1) if classes is None else tf.constant(classes, dtype=tf.int64)
        score = tf.gather(out, top, axis=1, batch_dims=1)
    grads = tape.gradient(score, conv)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * conv, axis=-1)).numpy()
    return _normalise(cam), out.numpy()


def _normalise(cam: np.ndarray) -> np.ndarray:
    """Each map scaled to a peak of 1 (all-zero maps stay zero)."""
    peak = cam.reshape(len(cam), -1).max(axis=1).reshape(-1, 1, 1)
    return np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)


def explain(model_path, images: list, out_dir, *, trust: bool = False, reporter: Reporter = SILENT) -> dict:
    """Write IMAGE-gradcam.png overlays (and grid.png for several images) into out_dir."""
    from .data import BadImage, discover_inputs, load_image
    from .models import Classifier, load_model
    from .models.image_models import load_keras_model

    if isinstance(model_path, Classifier):
        clf, model_path = model_path, Path(model_path.path or model_path.kind)
    else:
        model_path = Path(model_path)
        if model_path.suffix == ".tflite":
            raise ModelError("Grad-CAM needs gradients, which a .tflite file does not have: explain the Keras model "
                             "it was exported from")
        clf = load_model(model_path, trust=trust)
    manifest = clf.manifest
    if hasattr(clf, "keras_model"):
        model = clf.keras_model
    elif manifest.get("keras_file"):  # a TFLite export of a fused head keeps the Keras model beside it
        model = load_keras_model(clf.path, manifest, manifest["keras_file"], trusted=getattr(clf, "trusted", True))
    else:
        raise ModelError(f"{model_path} holds no Keras model (kind {clf.kind}); Grad-CAM works on "
                         "fine-tuned and fused models: export a cached head with --format keras, or explain "
                         f"{manifest.get('source', {}).get('path', 'the source model')}")
    size, classes = clf.image_size, clf.classes
    parts = gradcam_model(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done, failed = [], []
    for ref in discover_inputs(images):
        try:
            pixels = load_image(ref.path, size)
        except BadImage as e:
            failed.append({"path": str(ref.path), "reason": str(e)})
            reporter.warn(f"skipped {ref.path}: {e}")
            continue
        cam, proba = gradcam(model, pixels[None], parts)
        top = int(proba[0].argmax())
        overlay = out_dir / fit_name(_stem(ref.path, len(done)), "-gradcam.png")  # within NAME_MAX
        write_overlay(ref.path, pixels, cam[0], overlay)
        done.append(Explanation(ref.path, classes[top], float(proba[0, top]), cam[0], overlay))
    grid = out_dir / "grid.png" if len(done) > 1 else None
    if grid:
        write_grid(done, grid)
    return {"model": str(model_path), "out": str(out_dir), "grid": str(grid) if grid else None,
            "explanations": [{"path": str(e.path), "label": e.label, "probability": e.probability,
                              "overlay": str(e.overlay)} for e in done], "failed": failed}


def _stem(path: Path, i: int) -> str:
    return f"{i:03d}-{path.stem}"


def overlay_image(path: Path, pixels: np.ndarray, cam: np.ndarray, max_side: int = 512) -> np.ndarray:
    """The image (original aspect, EXIF-rotated; the decoded square if it cannot be reopened) with the
    heatmap blended in, as uint8 RGB."""
    import matplotlib
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            base = ImageOps.exif_transpose(img).convert("RGB")
            base.thumbnail((max_side, max_side))
    except Exception:  # decoded once already; fall back to what the model saw
        base = Image.fromarray(pixels)
    heat = Image.fromarray((cam * 255).astype(np.uint8)).resize(base.size, Image.BILINEAR)
    colours = matplotlib.colormaps["jet"](np.asarray(heat) / 255.0)[..., :3]
    blended = 0.6 * np.asarray(base, dtype=np.float64) / 255 + 0.4 * colours
    return (np.clip(blended, 0, 1) * 255).astype(np.uint8)


def write_overlay(path: Path, pixels: np.ndarray, cam: np.ndarray, out: Path) -> None:
    from PIL import Image

    image = Image.fromarray(overlay_image(path, pixels, cam))
    write_atomically(out, lambda tmp: image.save(tmp, format="PNG"))


def write_grid(done: list[Explanation], out: Path, columns: int = 4) -> None:
    from matplotlib.figure import Figure

    from PIL import Image

    rows = (len(done) + columns - 1) // columns
    cols = min(columns, len(done))
    fig = Figure(figsize=(3 * cols, 3.2 * rows), dpi=100)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, e in zip(axes.flat, done):
        with Image.open(e.overlay) as img:
            ax.imshow(np.asarray(img))
        ax.set_title(f"{e.path.name[:24]}\n{e.label} {e.probability:.2f}", fontsize=8)
    fig.tight_layout()
    write_atomically(out, lambda tmp: fig.savefig(tmp, format="png"))
