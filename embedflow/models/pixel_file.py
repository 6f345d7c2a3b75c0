"""Decoded images kept on disk: a raw uint8 (N, S, S, 3) file written once and read back by rows, so that
training on images (fine-tuning) reads them every epoch from the file instead of holding them all in
memory. Rows are read with os.preadv into fresh arrays: the operating system's page cache holds the file,
not this process (no memory map, whose pages would count in the process's resident memory)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import ImageRef
from ..embedding.decoded import Decoded, decode_ref
from ..progress import SILENT, Reporter

SUFFIX = ".pixels"


class PixelFile:
    """Rows of a raw uint8 file of (S, S, 3) images, in the order `rows` gives (default: all of them).

    `len(p)`, `p.shape` (len, S, S, 3) and `p.dtype` (uint8) behave like an array's; `p[i]` is one
    (S, S, 3) uint8 image and `p[i:j]` / `p[index_array]` a (k, S, S, 3) uint8 array read from the file;
    `p.take(rows)` is another PixelFile on some of these rows (nothing is read). The file stays open until
    every PixelFile on it is garbage-collected."""

    dtype = np.dtype(np.uint8)

    def __init__(self, path: str | os.PathLike, size: int, rows: np.ndarray | None = None, *, _fd: "_Fd | None" = None):
        self.path, self.size = Path(path), int(size)
        self.row_bytes = self.size * self.size * 3
        self._fd = _fd or _Fd(os.open(self.path, os.O_RDONLY))
        n = os.fstat(self._fd.fd).st_size // self.row_bytes
        self.rows = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.rows), self.size, self.size, 3)

    def take(self, rows) -> "PixelFile":
        return PixelFile(self.path, self.size, self.rows[np.asarray(rows, dtype=np.int64)], _fd=self._fd)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self.read(self.rows[[int(key)]])[0]
        return self.read(self.rows[key])

    def __array__(self, dtype=None, copy=None):
        out = self.read(self.rows)
        return out if dtype is None else out.astype(dtype)

    def read(self, file_rows: np.ndarray) -> np.ndarray:
        """(k, S, S, 3) uint8: the file's rows `file_rows` (indices into the file, not into this view)."""
        file_rows = np.atleast_1d(np.asarray(file_rows, dtype=np.int64))
        out = np.empty((len(file_rows), self.size, self.size, 3), dtype=np.uint8)
        flat = out.reshape(len(file_rows), -1)
        for i, r in enumerate(file_rows):
            got = os.preadv(self._fd.fd, [memoryview(flat[i])], int(r) * self.row_bytes)
            if got != self.row_bytes:
                raise OSError(f"{self.path}: row {int(r)} is short ({got} of {self.row_bytes} bytes)")
        return out


class _Fd:
    """An open file descriptor shared by the views of one file, closed with the last of them."""

    def __init__(self, fd: int):
        self.fd = fd

    def __del__(self):
        try:
            os.close(self.fd)
        except OSError:
            pass


@dataclass
class StreamedImages(Decoded):
    """Decoded images whose `pixels` is a PixelFile (rows read from disk when used); `subset` keeps them
    there."""

    def subset(self, rows) -> "StreamedImages":
        rows = np.asarray(rows, dtype=int)
        return StreamedImages([self.refs[i] for i in rows], self.pixels.take(rows), self.labels[rows],
                              [self.hashes[i] for i in rows], self.classes,
                              splits=None if self.splits is None else [self.splits[i] for i in rows])


def decode_to_file(refs: list[ImageRef], size: int, classes: list[str], path: str | os.PathLike, *,
                   workers: int | None = None, reporter: Reporter = SILENT,
                   description: str = "decoding") -> StreamedImages:
    """Hash and decode every ref (data.read_image, as embedding does: EXIF, colour modes, bad files skipped
    with their reasons) in threads, appending each image that decodes to a raw uint8 file written as
    `path` + ".partial" and renamed to `path` when complete. Memory holds a few images at a time, never the
    set. A file decoded with a warning is one reporter warning "KEY: note". Returns StreamedImages (refs
    that decoded, in order; the failed ones in `.failed`). Raises OSError when the file cannot be written."""
    index = {c: i for i, c in enumerate(classes)}
    path = Path(path)
    partial = path.with_name(path.name + ".partial")

    def one(ref: ImageRef):
        return decode_ref(ref, size)

    ok, hashes, failed = [], [], []
    reporter.start(description, len(refs))
    try:
        with open(partial, "wb") as out, ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
            # map() in chunks: results wait in order, so at most a chunk of decoded images is in memory
            chunk = 4 * (workers or os.cpu_count() or 1)
            for start in range(0, len(refs), chunk):
                for ref, digest, arr, reason, said in pool.map(one, refs[start:start + chunk]):
                    reporter.advance(1)
                    if said:
                        reporter.warn(f"{ref.key}: {'; '.join(said)}")
                    if reason is not None:
                        failed.append((ref, reason))
                        continue
                    out.write(np.ascontiguousarray(arr, dtype=np.uint8).tobytes())
                    ok.append(ref)
                    hashes.append(digest)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        reporter.finish()
    labels = np.array([index.get(r.label, -1) for r in ok], dtype=np.int64)
    return StreamedImages(ok, PixelFile(path, size), labels, hashes, list(classes), failed)
