"""`open_cache(path)` -> `Cache`: an embedding cache as an object for notebooks and the library, its
columns read at once and its vectors on first use."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import CacheError
from .store import _identity, load


class Cache:
    """One snapshot of an embedding cache.

    `X` float32 (N, D) vectors (read on first access), `y` int64 (N,) class indices into `classes`,
    `keys` (paths relative to `root`), `hashes` (sha256 of each file), `classes` (list of str),
    `fingerprint` (dict: backbone, weights, image size; `id` names it), `root` (the folder embedded),
    `failed` ([(key, reason, hash)] files that could not be embedded), `path`. len(cache) is N.
    Raises CacheError if the file is missing, damaged, or replaced by another run before X is read."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._snapshot = _snapshot(self.path)
        data = load(self.path, vectors=False)
        self.y = data.labels
        self.keys, self.hashes, self.classes = data.keys, data.hashes, data.classes
        self.fingerprint, self.root, self.failed = data.fingerprint, data.root, data.failed
        self._X: np.ndarray | None = None

    @property
    def X(self) -> np.ndarray:
        if self._X is None:
            data = load(self.path)
            if _snapshot(self.path) != self._snapshot or data.keys != self.keys:
                raise CacheError(f"cache {self.path} was replaced by another run since it was opened; "
                                 "open it again")
            self._X = data.embeddings
        return self._X

    @property
    def dim(self) -> int:
        return int(self.X.shape[1])

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return (f"<Cache {str(self.path)!r}: {len(self)} vectors, {len(self.classes)} classes, "
                f"backbone {self.fingerprint.get('backbone')} id {self.fingerprint.get('id')}>")


def _snapshot(path: Path) -> tuple:
    try:
        return _identity(os.stat(path))
    except OSError:
        return ()


def open_cache(path: str | os.PathLike) -> Cache:
    """The cache at `path` (see Cache). Raises CacheError for a missing or unreadable file."""
    return Cache(path)
