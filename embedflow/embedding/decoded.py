"""Decoded images in memory for the models that run end to end on pixels (fine-tuning, export parity,
evaluate/predict with fine-tuned, fused and TFLite models). Decoding is `data.load_image`, the same as
embedding: EXIF, colour modes, and bad files skipped with their reasons."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data import BadImage, ImageRef, discover_labelled, read_image
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

    def __len__(self) -> int:
        return len(self.refs)

    def subset(self, rows) -> "Decoded":
        rows = np.asarray(rows, dtype=int)
        return Decoded([self.refs[i] for i in rows], self.pixels[rows], self.labels[rows],
                       [self.hashes[i] for i in rows], self.classes)


def decode_refs(refs: list[ImageRef], size: int, classes: list[str] | None = None, *, workers: int | None = None,
                reporter: Reporter = SILENT, description: str = "decoding") -> Decoded:
    """Hash and decode every ref in threads (PIL releases the GIL), each from one read of the file (the
    hash names the bytes decoded); bad files are skipped with a reason."""
    classes = list(classes or [])
    index = {c: i for i, c in enumerate(classes)}

    def one(ref: ImageRef):
        try:
            digest, arr = read_image(ref.path, size)
        except BadImage as e:
            return ref, None, None, str(e)
        return ref, digest, arr, None

    pixels = np.empty((len(refs), size, size, 3), dtype=np.uint8)
    ok, hashes, failed = [], [], []
    reporter.start(description, len(refs))
    try:
        with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
            for ref, digest, arr, reason in pool.map(one, refs):
                reporter.advance(1)
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


def decode_folder(root: str | os.PathLike, size: int, *, reporter: Reporter = SILENT) -> Decoded:
    """Every image of a class-per-subfolder tree, decoded; notes and skipped files go to the reporter."""
    refs, classes, notes = discover_labelled(root)
    for note in notes:
        reporter.warn(note)
    decoded = decode_refs(refs, size, classes, reporter=reporter)
    for ref, reason in decoded.failed:
        reporter.warn(f"skipped {ref.key}: {reason}")
    return decoded


def refs_for_keys(root: Path, keys: list[str], labels: list[str]) -> list[ImageRef]:
    return [ImageRef(k, root / k, lab) for k, lab in zip(keys, labels)]
