"""`open_cache(path)` -> `Cache`: an embedding cache as an object for notebooks and the library, its
columns read at once and its vectors on first use."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import CacheError
from .store import load


class Cache:
    """One snapshot of an embedding cache.

    `X` float32 (N, D) vectors (read on first access), `y` int64 (N,) class indices into `classes` (-1 for
    an unlabelled image: `labelled` is False when any image has none), `splits` (N,) "train"/"val"/"test"
    of a train/val/test folder layout, else None,
    `keys` (paths relative to `root`), `hashes` (sha256 of each file), `classes` (list of str),
    `fingerprint` (dict: backbone, weights, image size; `id` names it), `root` (the folder embedded),
    `failed` ([(key, reason, hash)] files that could not be embedded), `path`. len(cache) is N.
    Raises CacheError if the file is missing or damaged, or when X is first read after another run
    rewrote the file with other content (the columns would no longer describe it)."""

    def __init__(self, path: str | os.PathLike, *, vectors: bool = False):
        self.path = Path(path)
        data = load(self.path, vectors=vectors)  # one open: columns (and vectors) of one snapshot
        self.y = data.labels
        self.keys, self.hashes, self.classes = data.keys, data.hashes, data.classes
        self.fingerprint, self.root, self.failed = data.fingerprint, data.root, data.failed
        self.splits = data.splits
        self._X: np.ndarray | None = data.embeddings if vectors else None

    @property
    def X(self) -> np.ndarray:
        if self._X is None:
            data = load(self.path)
            same = (data.keys == self.keys and data.hashes == self.hashes
                    and data.fingerprint.get("id") == self.fingerprint.get("id"))
            if not same:  # a writer renamed another snapshot over the file since it was opened
                raise CacheError(f"cache {self.path} changed since it was opened (another run rewrote it); "
                                 "open it again")
            self._X = data.embeddings
        return self._X

    @property
    def labelled(self) -> bool:
        """Every image carries a class (no label -1)."""
        return bool(len(self.y) == 0 or self.y.min() >= 0)

    @property
    def dim(self) -> int:
        return int(self.X.shape[1])

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return (f"<Cache {str(self.path)!r}: {len(self)} vectors, {len(self.classes)} classes, "
                f"backbone {self.fingerprint.get('backbone')} id {self.fingerprint.get('id')}>")


def open_cache(path: str | os.PathLike, *, vectors: bool = False) -> Cache:
    """The cache at `path` (see Cache); with vectors=True X is read at once, in the same open as the
    columns (one consistent snapshot even while a writer replaces the file). Raises CacheError for a
    missing or unreadable file."""
    return Cache(path, vectors=vectors)
