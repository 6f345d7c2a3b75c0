"""In-memory images to model pixels, exactly as `embed` decodes files: paths through load_image, PIL
images through the same orientation, colour and resize steps, uint8 arrays resized per image."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import BadImage
from .decode import _to_rgb, load_image


def _from_pil(img, size: int) -> np.ndarray:
    from PIL import Image, ImageOps

    img = _to_rgb(ImageOps.exif_transpose(img))  # a copy when rotated: the caller's image is not changed
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR, reducing_gap=None)
    return np.asarray(img, dtype=np.uint8)


def _from_array(arr: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < 1:
        raise BadImage(f"an image array must be uint8 (H, W, 3) RGB, got {arr.dtype} {arr.shape}")
    if arr.shape[:2] == (size, size):
        return arr
    return np.asarray(Image.fromarray(arr, "RGB").resize((size, size), Image.BILINEAR, reducing_gap=None))


def _one(image, size: int) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        try:
            return load_image(Path(image), size)
        except BadImage as e:
            raise BadImage(f"{image}: {e}") from None
    if isinstance(image, np.ndarray):
        return _from_array(image, size)
    if hasattr(image, "getbands") and hasattr(image, "resize"):  # a PIL image, without importing PIL first
        return _from_pil(image, size)
    raise BadImage(f"not an image: {type(image).__name__} (give paths, PIL images or uint8 (H, W, 3) arrays)")


def to_pixels(images, size: int) -> np.ndarray:
    """uint8 (N, size, size, 3) pixels of `images`: a list of paths, a list of PIL images, a list of uint8
    (H, W, 3) arrays, or one uint8 array (N, H, W, 3). Every image is resized bilinearly to a square (no
    crop); paths are decoded by load_image (EXIF orientation, first frame, any colour mode to RGB over
    white), PIL images go through the same orientation and colour steps. Raises BadImage naming the first
    image that cannot be used (a path's reason, or the wrong type, dtype or shape)."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        if images.dtype != np.uint8 or images.shape[3] != 3:
            raise BadImage(f"an image batch must be uint8 (N, H, W, 3) RGB, got {images.dtype} {images.shape}")
        if images.shape[1:3] == (size, size):
            return images
    elif isinstance(images, (str, os.PathLike, np.ndarray)) or hasattr(images, "getbands"):
        raise BadImage("give a list of images (or a uint8 (N, H, W, 3) array), not a single one")
    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, image in enumerate(images):
        out[i] = _one(image, size)
    return out
