"""Decoded images in memory for the models that run end to end on pixels (fine-tuning, export parity,
evaluate/predict with fine-tuned, fused and TFLite models). Decoding is `data.load_image`, the same as
embedding: EXIF, colour modes, and bad files skipped with their reasons."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data import BadImage, ImageRef, key_path, read_image
from ..errors import DatasetError, UsageError
from ..progress import SILENT, Reporter


@dataclass
class Decoded:
    """Images that decoded, as a uint8 (N, S, S, 3) array, with their refs, labels and hashes."""

    refs: list[ImageRef]
    pixels: np.ndarray
    labels: np.ndarray  # class index per row (-1 for unlabelled inputs)
    hashes: list[str]
    classes: list[str]
    failed: list[tuple[ImageRef, str]] = field(default_factory=list)
    splits: list[str] | None = None  # each row's train/ val/ test/ folder, for data of that layout

    def __len__(self) -> int:
        return len(self.refs)

    def subset(self, rows) -> "Decoded":
        rows = np.asarray(rows, dtype=int)
        return Decoded([self.refs[i] for i in rows], self.pixels[rows], self.labels[rows],
                       [self.hashes[i] for i in rows], self.classes,
                       splits=None if self.splits is None else [self.splits[i] for i in rows])


def decode_ref(ref: ImageRef, size: int):
    """Read and decode one image once: (ref, sha256 hex of the bytes read, (size, size, 3) uint8 pixels,
    None, notes) or, when it cannot be used, (ref, None, None, reason, []). Never raises for a bad file."""
    if ref.refused:
        return ref, None, None, ref.refused, []
    said: list[str] = []
    try:
        digest, arr = read_image(ref.path, size, notes=said)
    except BadImage as e:
        return ref, None, None, str(e), []
    return ref, digest, arr, None, said


def decode_refs(refs: list[ImageRef], size: int, classes: list[str] | None = None, *, workers: int | None = None,
                reporter: Reporter = SILENT, description: str = "decoding") -> Decoded:
    """Hash and decode every ref in threads (PIL releases the GIL), each from one read of the file (the
    hash names the bytes decoded); bad files are skipped with a reason, and a file decoded with a warning (an
    unreadable colour profile) is one reporter warning "KEY: note"."""
    classes = list(classes or [])
    index = {c: i for i, c in enumerate(classes)}

    def one(ref: ImageRef):
        return decode_ref(ref, size)

    pixels = np.empty((len(refs), size, size, 3), dtype=np.uint8)
    ok, hashes, failed = [], [], []
    reporter.start(description, len(refs))
    try:
        with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
            for ref, digest, arr, reason, said in pool.map(one, refs):
                reporter.advance(1)
                if said:  # decoded with a warning (an unreadable colour profile taken as sRGB): one line a file
                    reporter.warn(f"{ref.key}: {'; '.join(said)}")
                if reason is not None:
                    failed.append((ref, reason))
                    continue
                pixels[len(ok)] = arr
                ok.append(ref)
                hashes.append(digest)
    finally:
        reporter.finish()
    labels = np.array([index.get(r.label, -1) for r in ok], dtype=np.int64)
    return Decoded(ok, pixels[:len(ok)], labels, hashes, classes, failed)


def decode_folder(root: str | os.PathLike, size: int, *, split: str | None = None,
                  reporter: Reporter = SILENT) -> Decoded:
    """Every image of a class-per-subfolder tree, decoded; notes and skipped files go to the reporter.
    In a train/ val/ test/ layout, `split` ("train" | "val" | "test" | "all"; default test/ when there is
    one, else all) chooses the images, and `.splits` gives each decoded image's folder; a split asked of
    another layout is a UsageError."""
    from ..data import discover

    found = discover(root, unlabelled=False)
    for note in found.notes:
        reporter.warn(note)
    refs, classes = found.refs, found.classes
    if found.split_of:
        chosen = split or ("test" if "test" in found.split_of.values() else "all")
        if split is None:
            reporter.info(f"{root}: train/val/test folders; using {chosen} (--split chooses)")
        if chosen != "all":
            refs = [r for r in refs if found.split_of.get(r.key) == chosen]
            if not refs:
                raise DatasetError(f"{root} has no image in a {chosen}/ folder")
    elif split not in (None, "all"):
        raise UsageError(f"--split {split}: {root} has no train/ val/ test/ folders")
    decoded = decode_refs(refs, size, classes, reporter=reporter)
    for ref, reason in decoded.failed:
        reporter.warn(f"skipped {ref.key}: {reason}")
    if found.split_of:
        decoded.splits = [found.split_of[r.key] for r in decoded.refs]
    return decoded


def refs_for_keys(root: Path, keys: list[str], labels: list[str]) -> list[ImageRef]:
    """Refs of cached keys under `root`; a key that would leave the root (`../x`, an absolute path) gets a
    ref that decode_refs skips with the reason, never reads."""
    refs = []
    for k, lab in zip(keys, labels):
        try:
            refs.append(ImageRef(k, key_path(root, k), lab))
        except BadImage as e:
            refs.append(ImageRef(k, Path(root), lab, refused=str(e)))
    return refs
