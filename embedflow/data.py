"""Finding images, hashing them, decoding them into model-ready pixels, and the bad-file policy.

The policy: a file that cannot be turned into a faithful RGB image is *skipped*, with its path and a
short reason, and the run goes on. Everything that can be converted faithfully is converted
(grayscale, palette, RGBA, CMYK, 16-bit, animated -> first frame, EXIF rotation honoured).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DatasetError, UsageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})
# Images above this many pixels are refused as possible decompression bombs (PIL's default is 89M,
# and it only warns up to twice that). JPEGs are decoded at reduced scale, so they may be larger.
MAX_PIXELS = 100_000_000
MAX_JPEG_PIXELS = 1_000_000_000


class BadImage(Exception):
    """Raised by decode/hash for one file; carries a short reason. Never escapes a run."""


@dataclass(frozen=True)
class ImageRef:
    key: str  # path relative to the dataset root, "/"-separated: the identity of an image in a cache
    path: Path  # where to read it now
    label: str | None  # class name (top-level folder), None for unlabelled inputs


def _key_for(rel: str) -> str:
    """A printable UTF-8 key, even for file names that are not valid UTF-8."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace").replace(os.sep, "/")


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def walk_images(folder: Path) -> list[tuple[Path, str]]:
    """(path, path relative to folder) of every image file below folder, sorted, following symlinks
    but never looping."""
    found: list[tuple[Path, str]] = []
    seen_dirs: set[tuple[int, int]] = set()
    top = str(folder)
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        ident = (st.st_dev, st.st_ino)
        if ident in seen_dirs:  # a symlink loop or a second link to a folder already walked
            dirnames[:] = []
            continue
        seen_dirs.add(ident)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = dirpath[len(top) + 1:]  # os.walk's dirpath is always top joined with the subfolders
        found.extend((Path(dirpath, f), os.path.join(rel_dir, f) if rel_dir else f)
                     for f in filenames if is_image_name(f))
    return sorted(found, key=lambda item: item[1])  # by the relative path: comparing Paths is slow


def discover_labelled(root: str | os.PathLike) -> tuple[list[ImageRef], list[str], list[str]]:
    """Images of a class-per-subfolder tree.

    Returns (images sorted by key, class names sorted, notes about ignored things).
    Raises DatasetError when the folder is missing or holds no labelled image at all.
    """
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"folder not found: {root}")
    if not root.is_dir():
        raise DatasetError(f"not a folder: {root} (embed takes a folder with one subfolder per class)")
    notes: list[str] = []
    images: list[ImageRef] = []
    classes: list[str] = []
    loose = [f for f in os.listdir(root) if is_image_name(f) and (root / f).is_file()]
    if loose:
        notes.append(f"{len(loose)} image(s) directly in {root} ignored: put them in a class subfolder")
    for entry in sorted(os.listdir(root)):
        sub = root / entry
        if entry.startswith(".") or not sub.is_dir():
            continue
        label = _key_for(entry)
        files = walk_images(sub)
        if not files:
            notes.append(f"class folder '{label}' holds no images: ignored")
            continue
        classes.append(label)
        images.extend(ImageRef(_key_for(os.path.join(entry, rel)), f, label) for f, rel in files)
    if not images:
        raise DatasetError(
            f"no images found in {root}: expected one subfolder per class holding "
            f"{'/'.join(sorted(e.lstrip('.') for e in IMAGE_EXTENSIONS))} files"
        )
    images.sort(key=lambda r: r.key)
    return _without_key_collisions(images, notes), classes, notes


def _utf8_name(path: Path) -> bool:
    try:
        os.fsencode(path).decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _without_key_collisions(images: list[ImageRef], notes: list[str]) -> list[ImageRef]:
    """A name that is not valid UTF-8 gets a backslash-escaped key, which can equal a real file's name
    (b"caf\xe9.jpg" and "caf\\xe9.jpg"). Keys must stay unique: the real name keeps it, the other is skipped."""
    kept: list[ImageRef] = []
    for ref in images:  # sorted by key: collisions are neighbours
        if not kept or kept[-1].key != ref.key:
            kept.append(ref)
            continue
        if not _utf8_name(kept[-1].path):  # the one kept so far is the escaped name: the real one takes its place
            kept[-1], ref = ref, kept[-1]
        notes.append(f"skipped {os.fsencode(ref.path)!r}: its name is not valid UTF-8 and its printable key "
                     f"'{ref.key}' is the name of another file; rename it")
    return kept


def discover_inputs(paths: list[str | os.PathLike]) -> list[ImageRef]:
    """Files and folders given on a command line (predict, neighbors): unlabelled, in the order given."""
    refs: list[ImageRef] = []
    for p in map(Path, paths):
        if p.is_dir():
            refs.extend(ImageRef(_key_for(str(f)), f, None) for f, _ in walk_images(p))
        elif p.exists() or p.is_symlink():
            refs.append(ImageRef(_key_for(str(p)), p, None))
        else:
            raise UsageError(f"no such file or folder: {p}")
    if not refs:
        raise UsageError(f"no images found in: {', '.join(map(str, paths))}")
    return refs


def file_stat(path: Path) -> tuple[int, int, int, int]:
    """(size, mtime_ns, ctime_ns, inode) of a regular file: unchanged values mean unchanged bytes in practice
    (git relies on the same). Raises BadImage when the file cannot be used."""
    with _read_errors(path):
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device named .jpg would block or never end
            raise BadImage("not a regular file")
        return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def hash_file(path: Path) -> str:
    """sha256 of the file's bytes, hex. Raises BadImage when it cannot be read (file_stat's checks first)."""
    file_stat(path)
    with _read_errors(path), open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@contextlib.contextmanager
def _read_errors(path: Path):
    """OS errors while reading a file become BadImage with a reason a user understands."""
    try:
        yield
    except FileNotFoundError:
        if os.path.islink(path):
            raise BadImage(f"broken symbolic link (to {os.readlink(path)})") from None
        raise BadImage("file vanished while the run was going") from None
    except PermissionError:
        raise BadImage("permission denied") from None
    except IsADirectoryError:
        raise BadImage("is a folder, not an image") from None
    except OSError as e:
        raise BadImage(f"cannot read: {e.strerror or e}") from None


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
