"""Finding images in folders: class-per-subfolder trees and loose inputs, with their keys."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError, UsageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})


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
