"""Any "images" a user hands the library -> one uint8 pixel batch, decoded and resized exactly as `embed`
decodes files (data.decode): EXIF orientation, any colour mode to RGB (transparency over white), bilinear
resize to a square without crop."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import BadImage, UsageError
from .decode import decode_image, load_image


def to_pixels(images, size: int) -> np.ndarray:
    """uint8 (N, size, size, 3) for `images`: a list of paths (str or os.PathLike), a list of PIL images,
    a list of uint8 (H, W, 3) arrays, or one uint8 array (N, H, W, 3) (any H, W).

    Raises UsageError naming the path of a file that cannot be read (with the reason), or describing an
    input that is not an image (wrong dtype or shape, another type)."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise UsageError(f"an image array must be uint8 of shape (N, H, W, 3), got {images.dtype} "
                             f"{images.shape}")
        if images.shape[1:3] == (size, size):
            return np.ascontiguousarray(images)
        return _stack([_resized_array(a, size) for a in images], size)
    if isinstance(images, (str, os.PathLike)) or not hasattr(images, "__iter__"):
        raise UsageError("images must be a list of images (paths, PIL images or uint8 arrays) or a uint8 array "
                         f"(N, H, W, 3), got {type(images).__name__}")
    return _stack([_one(image, size) for image in images], size)


def _one(image, size: int) -> np.ndarray:
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        try:
            return load_image(Path(image), size)
        except BadImage as e:
            raise UsageError(f"cannot read {image}: {e}") from None
    if isinstance(image, Image.Image):
        return decode_image(image.copy(), size)  # a copy: the caller's image is left alone
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise UsageError(f"an image array must be uint8 of shape (H, W, 3), got {image.dtype} {image.shape}")
        return _resized_array(image, size)
    raise UsageError(f"not an image: {type(image).__name__} (give paths, PIL images or uint8 arrays)")


def _resized_array(arr: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if arr.shape[:2] == (size, size):
        return arr
    return _resized(Image.fromarray(np.ascontiguousarray(arr), "RGB"), size)


def _resized(img, size: int) -> np.ndarray:
    from PIL import Image

    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR, reducing_gap=None)
    return np.asarray(img, dtype=np.uint8)


def _stack(arrays: list[np.ndarray], size: int) -> np.ndarray:
    return np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8)
