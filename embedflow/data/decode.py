"""Decoding files into model-ready pixels, and the bad-file policy.

The rule: the pixels are those of the picture a viewer shows. Transparency of any kind (alpha, palette,
a PNG colour key) is composited over white; an embedded ICC profile is converted to sRGB; EXIF
orientation is applied; an animation gives its first frame; any colour mode and depth becomes 8-bit RGB.

The policy: a file that cannot be turned into a faithful RGB image is *skipped*, with its path and a
short reason, and the run goes on. Memory stays bounded: JPEGs (and MPOs, phone JPEGs) are decoded at
reduced DCT scale, other large images are box-reduced strip by strip before any conversion, and no
full-size float copy is ever made.
"""

from __future__ import annotations

import functools
import hashlib
import io
import warnings
from pathlib import Path

import numpy as np

from ..errors import BadImage
from .formats import identify, sniff_format
from .hashing import read_bytes
from .remote import RemotePath

# Images above this many pixels are refused as possible decompression bombs (PIL's default is 89M,
# and it only warns up to twice that). JPEGs are decoded at reduced scale, so they may be larger.
MAX_PIXELS = 100_000_000
MAX_JPEG_PIXELS = 1_000_000_000
JPEG_FORMATS = frozenset({"JPEG", "MPO"})  # MPO: a JPEG with an MPF segment (phones), first image = the JPEG
# Above this many pixels, a non-JPEG image is box-reduced (to >= 2x the target size) before it is converted,
# in strips: a 9,999 x 9,999 16-bit PNG then needs its decoded 200 MB and little more.
REDUCE_ABOVE_PIXELS = 1 << 24
_STRIP_PIXELS = 1 << 22
_DEEP_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
# EXIF orientation -> the transposition that displays the picture upright (what browsers do).
_TRANSPOSE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
              7: "TRANSVERSE", 8: "ROTATE_90"}


def load_image(path: Path, size: int, *, notes: list[str] | None = None) -> np.ndarray:
    """Decode one file into a (size, size, 3) uint8 array (see decode_bytes). Raises BadImage with a
    reason on failure (unreadable, not an image, corrupt, ...)."""
    return decode_bytes(read_bytes(path if isinstance(path, RemotePath) else Path(path)), size, notes=notes)


def read_image(path: Path, size: int, *, notes: list[str] | None = None) -> tuple[str, np.ndarray]:
    """(sha256 hex of the file's bytes, (size, size, 3) uint8 pixels decoded from those same bytes): one
    read, so the hash always names what was decoded. Raises BadImage with a reason on failure."""
    data = read_bytes(path if isinstance(path, RemotePath) else Path(path))
    return hashlib.sha256(data).hexdigest(), decode_bytes(data, size, notes=notes)


def decode_bytes(data: bytes, size: int, *, notes: list[str] | None = None) -> np.ndarray:
    """Decode an encoded image into a (size, size, 3) uint8 array: what a viewer shows (transparency over
    white, ICC profile converted to sRGB, EXIF orientation applied, first frame of an animation), resized
    bilinearly to a square (no crop, as keras.utils.image_dataset_from_directory does).

    Warnings about a file that is still decoded (an unreadable colour profile) are appended to notes.
    Raises BadImage with a short reason on failure.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadImage("empty file (0 bytes)")
    fmt = sniff_format(data[:64])
    if fmt in ("HEIC", "HEIF"):
        _register_heif(fmt)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = MAX_JPEG_PIXELS
            with Image.open(io.BytesIO(data)) as img:
                arr = _decode(img, size, notes)
    except BadImage:
        raise
    except UnidentifiedImageError:
        if fmt and not fmt.startswith("camera RAW"):
            kind = {"PDF": "document", "SVG": "document", "MP4": "video", "QuickTime": "video"}.get(fmt, "image")
            raise BadImage(f"{fmt} {kind}: not supported (the installed Pillow cannot decode it)") from None
        named = identify(data[:64])  # a Photoshop file, a camera RAW, ... named .jpg
        if named and named[0] == "unsupported":
            raise BadImage(f"{named[1]}: not supported") from None
        raise BadImage("not an image file (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(f"refused as a possible decompression bomb ({e})") from None
    except MemoryError:
        raise BadImage("too large to decode in memory") from None
    except (OSError, SyntaxError, ValueError, EOFError, RuntimeError) as e:
        text = str(e) or type(e).__name__
        if "truncated" in text.lower():
            raise BadImage(f"truncated image ({text})") from None
        raise BadImage(f"corrupt image ({text})") from None
    if arr.shape != (size, size, 3):
        raise BadImage(f"decoded to an unexpected shape {arr.shape}")
    return arr


def decode_image(img, size: int, *, notes: list[str] | None = None) -> np.ndarray:
    """An open PIL image (e.g. one a notebook user holds) -> (size, size, 3) uint8, through the same steps
    as a file: what a viewer shows, resized to a square. The image is loaded and may be modified: pass a copy
    to keep yours. Raises BadImage with a short reason on failure."""
    try:
        return _decode(img, size, notes)
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise BadImage(f"corrupt image ({str(e) or type(e).__name__})") from None


def _register_heif(fmt: str) -> None:
    try:
        import pillow_heif
    except ImportError:
        raise BadImage(f"{fmt} image: not supported (pillow-heif is not installed)") from None
    pillow_heif.register_heif_opener()


def _decode(img, size: int, notes: list[str] | None) -> np.ndarray:
    """An opened PIL image -> (size, size, 3) uint8."""
    from PIL import Image

    w, h = img.size
    if w < 1 or h < 1:
        raise BadImage("image has no pixels")
    if img.format in JPEG_FORMATS:
        # Decode at the smallest DCT scale still >= 2x the target: fast and memory-light.
        img.draft("RGB" if img.mode == "RGB" else None, (2 * size, 2 * size))
    elif w * h > MAX_PIXELS:
        raise BadImage(f"{w}x{h} pixels: refused as a possible decompression bomb")
    _eight_bit_colour_key(img)
    img.load()
    # Read after load, which is when a decoder that turns the picture upright itself (Pillow's TIFF) drops the
    # tag, so the orientation is applied exactly once; and before conversions, which drop the EXIF block.
    orientation = _orientation(img)
    icc = img.info.get("icc_profile")
    img = _to_srgb(_eight_bit(img, _reduction(img.size, size)), icc, notes)
    img = _over_white(img)
    if orientation in _TRANSPOSE:
        img = img.transpose(getattr(Image.Transpose, _TRANSPOSE[orientation]))
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR, reducing_gap=None)
    return np.asarray(img, dtype=np.uint8)


def _eight_bit_colour_key(img) -> None:
    """Pillow keeps 8 bits of a 16-bit RGB PNG but its colour key (tRNS) in 16: compare at 8 bits too (pixels
    within 1/256 of the key colour are taken as the key). Must run before load, while the tile is known. An
    in-memory image (a copy, a resize, Image.fromarray) has no tile: its 8-bit key is taken as it is."""
    key = img.info.get("transparency")
    tile = getattr(img, "tile", None) or ()  # only a file being read (an ImageFile) has one
    if img.mode == "RGB" and isinstance(key, tuple) and any(t.args == "RGB;16B" for t in tile):
        img.info["transparency"] = tuple(v >> 8 for v in key)


def _orientation(img) -> int | None:
    """The EXIF orientation tag (1-8), None when absent or unreadable (the picture is then shown as stored)."""
    import struct

    try:
        return img.getexif().get(0x0112)
    except (SyntaxError, ValueError, TypeError, KeyError, IndexError, struct.error):
        return None


def _reduction(wh: tuple[int, int], size: int) -> int:
    """The box-reduction factor for a large image: its smaller side stays >= 2x the target."""
    w, h = wh
    if w * h <= REDUCE_ABOVE_PIXELS:
        return 1
    return max(1, min(w, h) // (2 * size))


def _eight_bit(img, factor: int):
    """Any PIL mode -> an 8-bit L, LA, RGB, RGBA or CMYK image, reduced by factor (in strips of rows, so the
    conversion never holds a second full-size copy). A colour key (tRNS) becomes an alpha channel."""
    from PIL import Image

    if img.mode in _DEEP_MODES:
        convert = _deep_converter(img)
    else:
        mode = _working_mode(img)
        convert = (lambda part: part) if mode == img.mode else (lambda part: part.convert(mode))
    if factor == 1:
        return convert(img)
    w, h = img.size
    rows = factor * max(1, _STRIP_PIXELS // (w * factor))
    out = None
    for y in range(0, h, rows):
        part = convert(img.crop((0, y, w, min(h, y + rows)))).reduce(factor)
        if out is None:
            out = Image.new(part.mode, (-(-w // factor), -(-h // factor)))
        out.paste(part, (0, y // factor))
    return out


def _working_mode(img) -> str:
    keyed = img.info.get("transparency") is not None
    if img.mode in ("RGBA", "LA", "CMYK") or (img.mode in ("RGB", "L") and not keyed):
        return img.mode
    if img.mode in ("L", "La", "1") and keyed or img.mode == "La":
        return "LA"
    if img.mode in ("P", "RGB") and keyed or img.mode in ("PA", "RGBa"):
        return "RGBA"
    return "L" if img.mode == "1" else "RGB"


def _deep_converter(img):
    """16-bit, 32-bit integer and float images -> 8-bit L, scaled (not clipped) to 0..255 in float32, with
    a colour key composited over white."""
    from PIL import Image

    top = img.getextrema()[1]
    hi = 65535.0 if img.mode.startswith("I;16") or top > 255 else 255.0
    key = img.info.get("transparency")
    key = key if isinstance(key, int) else None

    def convert(part):
        raw = np.asarray(part)
        out = raw.astype(np.float32)
        out *= np.float32(255.0 / hi)
        out += np.float32(0.5)
        np.clip(out, 0, 255, out=out)
        out8 = out.astype(np.uint8)
        if key is not None:
            out8[raw == key] = 255  # a keyed pixel is fully transparent: white
        return Image.fromarray(out8, "L")

    return convert


def _to_srgb(img, icc: bytes | None, notes: list[str] | None):
    """Colour from the embedded ICC profile to sRGB (RGB, RGBA and CMYK images; alpha kept). Whether a profile
    is sRGB is decided by its content, never its name (a linear-gamma profile may be called "... sRGB"): one
    that maps every colour of a probe grid to itself within one level keeps the pixels exactly as they are.
    An unreadable or unusable profile: the pixels are kept as they are, with a note."""
    if not icc or img.mode not in ("RGB", "RGBA", "CMYK"):
        return img
    from PIL import ImageCms

    try:
        if img.mode != "CMYK" and _acts_as_srgb(bytes(icc)):
            return img
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"),
                                         outputMode="RGBA" if img.mode == "RGBA" else "RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as e:
        if notes is not None:
            notes.append(f"colour profile unreadable ({str(e) or type(e).__name__}): colours taken as sRGB")
        return img


@functools.lru_cache(maxsize=32)
def _acts_as_srgb(icc: bytes) -> bool:
    """True when the RGB profile converts a 9x9x9 grid of colours (and a grey ramp) to sRGB within one level:
    then it is sRGB in all but its bytes. Raises ImageCms.PyCMSError (and OSError) for an unreadable profile."""
    from PIL import Image, ImageCms

    levels = np.linspace(0, 255, 9).round().astype(np.uint8)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    probe = np.concatenate([grid, np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)])
    probe = probe.reshape(1, -1, 3)
    src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    out = ImageCms.profileToProfile(Image.fromarray(probe, "RGB"), src, ImageCms.createProfile("sRGB"),
                                    outputMode="RGB")
    return int(np.abs(np.asarray(out, dtype=np.int16) - probe).max()) <= 1


def _over_white(img):
    """8-bit L/LA/RGB/RGBA/CMYK -> RGB, transparency composited over white."""
    from PIL import Image

    if img.mode in ("RGBA", "LA"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")
