"""Decoding files into model-ready pixels, and the bad-file policy.

The policy: a file that cannot be turned into a faithful RGB image is *skipped*, with its path and a
short reason, and the run goes on. Everything that can be converted faithfully is converted
(grayscale, palette, RGBA, CMYK, 16-bit, animated -> first frame, EXIF rotation honoured).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import BadImage

# Images above this many pixels are refused as possible decompression bombs (PIL's default is 89M,
# and it only warns up to twice that). JPEGs are decoded at reduced scale, so they may be larger.
MAX_PIXELS = 100_000_000
MAX_JPEG_PIXELS = 1_000_000_000


def _to_rgb(img) -> "Image.Image":  # noqa: F821
    """Any PIL mode to 8-bit RGB; transparency is composited over white."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if img.mode != "RGB":
        return img.convert("RGB")
    return img


def load_image(path: Path, size: int) -> np.ndarray:
    """Decode one file into a (size, size, 3) uint8 array: EXIF orientation applied, first frame of an
    animation, any colour mode converted to RGB, resized bilinearly to a square (no crop, as
    keras.utils.image_dataset_from_directory does). Raises BadImage with a reason on failure."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        if os.stat(path).st_size == 0:
            raise BadImage("empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = MAX_JPEG_PIXELS
            with Image.open(path) as img:
                w, h = img.size
                if w < 1 or h < 1:
                    raise BadImage("image has no pixels")
                if img.format == "JPEG":
                    # Decode at the smallest DCT scale still >= 2x the target: fast and memory-light.
                    img.draft("RGB" if img.mode == "RGB" else None, (2 * size, 2 * size))
                elif w * h > MAX_PIXELS:
                    raise BadImage(f"{w}x{h} pixels: refused as a possible decompression bomb")
                img.load()
                ImageOps.exif_transpose(img, in_place=True)  # no copy when there is nothing to rotate
                img = _to_rgb(img)
                if img.size != (size, size):
                    img = img.resize((size, size), Image.BILINEAR, reducing_gap=None)
                arr = np.asarray(img, dtype=np.uint8)
    except BadImage:
        raise
    except FileNotFoundError:
        raise BadImage("file vanished while the run was going") from None
    except PermissionError:
        raise BadImage("permission denied") from None
    except UnidentifiedImageError:
        raise BadImage("not an image file (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(f"refused as a possible decompression bomb ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        text = str(e) or type(e).__name__
        if "truncated" in text.lower():
            raise BadImage(f"truncated image ({text})") from None
        raise BadImage(f"corrupt image ({text})") from None
    except MemoryError:
        raise BadImage("too large to decode in memory") from None
    if arr.shape != (size, size, 3):
        raise BadImage(f"decoded to an unexpected shape {arr.shape}")
    return arr
