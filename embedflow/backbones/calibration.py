"""The calibration images of the int8 backbone: a fixed, deterministic set that needs no user data.

A full-integer backbone's quantization ranges come from the images it is calibrated on, so they are part of
its identity (its fingerprint records CALIBRATION_NAME and the digest of the source photos). The set is
derived from the two sample photos scikit-learn ships (sklearn/datasets/images/china.jpg and flower.jpg,
a dependency already): CALIBRATION_IMAGES seeded crops at several scales, some mirrored, resized like any
input. The same sklearn release gives the same pixels on every machine, so caches are reproducible.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

CALIBRATION_NAME = "sklearn-sample-crops-v1"
CALIBRATION_IMAGES = 128
_SOURCES = ("china.jpg", "flower.jpg")


def calibration_sources() -> list[Path]:
    """The two sample photos scikit-learn ships (found without importing sklearn)."""
    import importlib.util

    found = importlib.util.find_spec("sklearn")
    if found is None or not found.submodule_search_locations:  # pragma: no cover - sklearn is a dependency
        from ..errors import WeightsError

        raise WeightsError("scikit-learn is not installed: its sample photos calibrate the int8 backbone")
    folder = Path(list(found.submodule_search_locations)[0]) / "datasets" / "images"
    return [folder / name for name in _SOURCES]


def calibration_id() -> str:
    """CALIBRATION_NAME plus 12 hex digits of the sha256 over the source photos' sha256s."""
    from .weights import file_sha256

    digest = hashlib.sha256("\n".join(file_sha256(p) for p in calibration_sources()).encode()).hexdigest()
    return f"{CALIBRATION_NAME}:{CALIBRATION_IMAGES}:{digest[:12]}"


def calibration_images(size: int, n: int = CALIBRATION_IMAGES, seed: int = 0) -> np.ndarray:
    """uint8 (n, size, size, 3): seeded square crops (a quarter to all of the shorter side) of the sample
    photos, every other one mirrored, resized bilinearly to size x size; the first two are the whole
    photos squashed to a square (as `embed` resizes). Deterministic for a given sklearn release."""
    from PIL import Image

    photos = [Image.open(p).convert("RGB") for p in calibration_sources()]
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        img = photos[i % len(photos)]
        w, h = img.size
        if i < len(photos):
            crop = img
        else:
            side = int(min(w, h) * rng.uniform(0.25, 1.0))
            x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            crop = img.crop((x, y, x + side, y + side))
            if i % 2:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out[i] = np.asarray(crop.resize((size, size), Image.BILINEAR, reducing_gap=None), np.uint8)
    return out
