"""The journal: vectors computed during a run, committed every few seconds to `<cache>.journal/` (one
atomically-renamed .npz per chunk). An interrupted or killed run leaves them there and the next run with
the same fingerprint picks them up instead of embedding again."""

from __future__ import annotations

import contextlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from ..errors import CacheError
from ..fsio import sibling


class Journal:
    """Committed-but-not-yet-merged vectors of an unfinished run, one .npz per chunk."""

    def __init__(self, cache_path: Path, fingerprint_id: str, precision: str = "fp32"):
        self.cache_path = Path(cache_path)
        self.dir = sibling(cache_path, ".journal")  # within NAME_MAX
        self.fingerprint_id = fingerprint_id
        self.precision = precision  # recorded in meta.json: a rerun without --precision resumes with it
        self._next = 0
        self._opened = False

    def open(self) -> int:
        """Prepare for appending (done by the first append): discard a journal of another fingerprint and
        half-written chunks. Returns the chunks already there (their content is checked by
        vectors_by_hash, which skips a damaged one). Raises CacheError when the folder cannot be written."""
        try:
            if self.dir.exists() and not self._same_fingerprint():
                self.clear()
            self.dir.mkdir(parents=True, exist_ok=True)
            for tmp in self.dir.glob("*.tmp*"):
                tmp.unlink(missing_ok=True)
            if not (self.dir / "meta.json").exists():
                meta = {"fingerprint_id": self.fingerprint_id, "precision": self.precision}
                _atomic_write_bytes(self.dir / "meta.json", json.dumps(meta).encode())
        except OSError as e:
            raise CacheError(f"could not write to the journal {self.dir}: {e.strerror or e}; {self._cache_note()}: "
                             "free space (or make the folder writable) and run the same command again") from None
        chunks = self.chunks()
        self._next = 1 + max((int(c.stem) for c in chunks), default=-1)
        self._opened = True
        return len(chunks)

    def _same_fingerprint(self) -> bool:
        try:
            return json.loads((self.dir / "meta.json").read_text())["fingerprint_id"] == self.fingerprint_id
        except (OSError, ValueError, KeyError, TypeError):
            return False

    CHUNK_GLOB = "[0-9]" * 8 + ".npz"  # committed chunks only: never a half-written 00000007.tmp.npz

    def chunks(self) -> list[Path]:
        return sorted(self.dir.glob(self.CHUNK_GLOB)) if self.dir.exists() else []

    def append(self, hashes: list[str], vectors: np.ndarray) -> Path:
        """Commit one chunk (written to a temporary file, fsynced, renamed). Returns its path."""
        if not self._opened:
            self.open()
        path = self.dir / f"{self._next:08d}.npz"
        tmp = self.dir / f"{self._next:08d}.tmp.npz"
        try:
            with open(tmp, "wb") as f:
                np.savez(f, hashes=np.array(hashes, dtype="S64"), vectors=np.asarray(vectors, np.float32))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            kept = len(self.chunks())
            raise CacheError(
                f"could not write to the journal {self.dir}: {e.strerror or e}; {self._cache_note()} and the "
                f"{kept} chunk(s) committed before are kept: free space and run the same command again"
            ) from None
        self._next += 1
        return path

    def vectors_by_hash(self) -> dict[str, tuple[Path, int]]:
        """hash -> (chunk file, row) for every committed vector of this fingerprint (reads only: a
        journal of another fingerprint is ignored here and discarded by the next append)."""
        found: dict[str, tuple[Path, int]] = {}
        if not self._same_fingerprint():
            return found
        for c in self.chunks():
            try:  # read it all: a damaged chunk is only lost work, never wrong data or a crash later
                with np.load(c) as z:
                    hashes, vectors = z["hashes"], z["vectors"]
                if vectors.ndim != 2 or len(vectors) != len(hashes) or not np.isfinite(vectors).all():
                    raise ValueError("hashes and vectors disagree")
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                with contextlib.suppress(OSError):  # a read-only folder keeps it; it is skipped all the same
                    c.unlink(missing_ok=True)
                continue
            for i, h in enumerate(hashes):
                found[h.decode()] = (c, i)
        return found

    def _cache_note(self) -> str:
        return "the cache is intact" if os.path.lexists(self.cache_path) else "there is no cache yet"

    def foreign_chunks(self) -> int:
        """Committed chunks of an interrupted run of another fingerprint (another backbone, size or
        precision): this run cannot use them and its first append discards them."""
        return len(self.chunks()) if self.dir.exists() and not self._same_fingerprint() else 0

    def recorded_precision(self) -> str | None:
        """The precision ("fp32", "int8") of the interrupted run whose committed chunks are here; None when
        there are none or the journal predates the record."""
        if not self.chunks():
            return None
        try:
            precision = json.loads((self.dir / "meta.json").read_text()).get("precision")
        except (OSError, ValueError, AttributeError):
            return None
        return precision if isinstance(precision, str) else None

    def clear(self) -> None:
        """Remove the journal (best effort: one left behind holds only vectors the cache now has)."""
        with contextlib.suppress(OSError):
            if self.dir.exists():
                for p in self.dir.iterdir():
                    p.unlink(missing_ok=True)
                self.dir.rmdir()
        self._opened = False


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
