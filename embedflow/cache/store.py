"""The HDF5 embedding cache: the only module that touches h5py.

Schema (format "embedflow.cache", schema_version 1), readable with plain h5py:

    /embeddings       float32 (N, D)   one pooled feature vector per image, rows sorted by key
    /keys             utf-8 str (N,)   path relative to the dataset root, "/"-separated
    /labels           int32 (N,)       index into /classes
    /hashes           ascii str (N,)   sha256 of the file's bytes (hex)
    /classes          utf-8 str (C,)   class names, sorted
    /failed/keys      utf-8 str (F,)   files that were skipped ...
    /failed/reasons   utf-8 str (F,)   ... and why
    /failed/hashes    ascii str (F,)   their sha256 ("" when the file could not be read)
    /file_stats       int64 (N, 4)     size, mtime_ns, ctime_ns, inode of each file when it was hashed;
                                       a row of zeros means "unknown". Optional (older caches lack it).
    attrs: format, schema_version, fingerprint (JSON), fingerprint_id, root, embedflow_version,
           created_utc, updated_utc

Crash safety: the cache file is never modified in place. A run writes a complete new file beside it and
atomically renames it over the old one, so a reader, a crash or a full disk only ever sees the old or
the new file.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CacheError

FORMAT = "embedflow.cache"
SCHEMA_VERSION = 1
BLOCK_ROWS = 4096  # rows copied at a time when writing: memory stays flat however large the cache


def _h5py():
    import h5py

    return h5py


def _strings(ds) -> list[str]:
    return list(ds.asstr()[()]) if len(ds) else []


@dataclass
class CacheData:
    """Everything a cache holds, in memory."""

    embeddings: np.ndarray
    labels: np.ndarray
    keys: list[str]
    hashes: list[str]
    classes: list[str]
    fingerprint: dict
    root: str = ""
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (key, reason, hash)
    path: str = ""
    file_stats: np.ndarray | None = None  # (N, 4) int64, see the schema; None when the cache has none

    def __len__(self) -> int:
        return len(self.keys)


def _open_read(path: Path):
    h5py = _h5py()
    if not path.exists():
        raise CacheError(f"no cache at {path}: run `embedflow embed FOLDER` first")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise CacheError(f"cannot read cache {path}: {e}") from None
    if f.attrs.get("format") != FORMAT:
        f.close()
        raise CacheError(f"{path} is not an embedflow cache")
    if int(f.attrs.get("schema_version", 0)) > SCHEMA_VERSION:
        f.close()
        raise CacheError(f"{path} has cache schema {f.attrs['schema_version']}; upgrade embedflow to read it")
    return f


@contextlib.contextmanager
def _reading(path: Path):
    """An open cache; a dataset or attribute that is missing or unreadable becomes one CacheError."""
    with _open_read(path) as f:
        try:
            yield f
        except (KeyError, ValueError, OSError, TypeError) as e:
            raise CacheError(f"cache {path} is damaged ({type(e).__name__}: {e}); embed again with --rebuild") from None


def read_meta(path: str | os.PathLike) -> dict:
    """Fingerprint, classes, sizes and timestamps, without reading the vectors."""
    path = Path(path)
    with _reading(path) as f:
        return {
            "path": str(path),
            "fingerprint": json.loads(f.attrs["fingerprint"]),
            "root": str(f.attrs.get("root", "")),
            "classes": _strings(f["classes"]),
            "count": int(f["keys"].shape[0]),
            "dim": int(f["embeddings"].shape[1]),
            "failed": int(f["failed/keys"].shape[0]),
            "created_utc": str(f.attrs.get("created_utc", "")),
            "updated_utc": str(f.attrs.get("updated_utc", "")),
            "embedflow_version": str(f.attrs.get("embedflow_version", "")),
        }


def load(path: str | os.PathLike, vectors: bool = True) -> CacheData:
    """The whole cache in memory; with vectors=False everything but the vectors (embeddings is then an
    empty (0, D) array), which is cheap for a cache of any size."""
    path = Path(path)
    with _reading(path) as f:
        emb = f["embeddings"]
        return CacheData(
            embeddings=emb[()].astype(np.float32, copy=False) if vectors else np.zeros((0, emb.shape[1]), np.float32),
            labels=f["labels"][()].astype(np.int64),
            keys=_strings(f["keys"]),
            hashes=_strings(f["hashes"]),
            classes=_strings(f["classes"]),
            fingerprint=json.loads(f.attrs["fingerprint"]),
            root=str(f.attrs.get("root", "")),
            failed=list(zip(_strings(f["failed/keys"]), _strings(f["failed/reasons"]), _strings(f["failed/hashes"]))),
            path=str(path),
            file_stats=f["file_stats"][()].astype(np.int64) if "file_stats" in f else None,
        )


def vectors_for_hashes(path: str | os.PathLike, wanted: set[str], fingerprint_id: str) -> dict[str, np.ndarray]:
    """hash -> vector for the wanted hashes a cache of that fingerprint holds; {} for no such cache."""
    path = Path(path)
    if not wanted or not path.exists():
        return {}
    try:
        with _reading(path) as f:
            if f.attrs.get("fingerprint_id") != fingerprint_id:
                return {}
            hashes = _strings(f["hashes"])
            rows = {h: i for i, h in enumerate(hashes) if h in wanted}
            if not rows:
                return {}
            idx = np.array(sorted(set(rows.values())))
            block = f["embeddings"][idx]
            where = {i: j for j, i in enumerate(idx)}
            return {h: block[where[i]] for h, i in rows.items()}
    except CacheError:
        return {}


@dataclass
class CacheColumns:
    """Everything a cache holds except the vectors: what a search needs to name its results."""

    keys: list[str]
    hashes: list[str]
    labels: np.ndarray
    classes: list[str]
    fingerprint: dict
    root: str
    dim: int
    updated_utc: str
    path: str
    snapshot: tuple = ()  # (device, inode, size, mtime_ns) of the file these columns were read from

    def __len__(self) -> int:
        return len(self.keys)

    def check_unchanged(self) -> None:
        """Raise CacheError if the cache file was replaced since these columns were read: vectors read
        by a later open would belong to another snapshot (a writer renames a new file over the old)."""
        try:
            now = _identity(os.stat(self.path))
        except OSError:
            now = None
        if self.snapshot and now != self.snapshot:
            raise CacheError(f"cache {self.path} was replaced by another run while it was being read; "
                             "run the command again")


def _identity(st: os.stat_result) -> tuple:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def load_columns(path: str | os.PathLike) -> CacheColumns:
    """Keys, hashes, labels and attributes, without reading the (possibly huge) vector matrix."""
    path = Path(path)
    with _reading(path) as f:
        return CacheColumns(
            keys=_strings(f["keys"]), hashes=_strings(f["hashes"]), labels=f["labels"][()].astype(np.int64),
            classes=_strings(f["classes"]), fingerprint=json.loads(f.attrs["fingerprint"]),
            root=str(f.attrs.get("root", "")), dim=int(f["embeddings"].shape[1]),
            updated_utc=str(f.attrs.get("updated_utc", "")), path=str(path),
            snapshot=_identity(os.fstat(f.id.get_vfd_handle())),
        )


def iter_vector_blocks(path: str | os.PathLike, rows: int = BLOCK_ROWS):
    """(first row, float32 block of at most `rows` vectors) over the whole cache, in row order:
    memory stays bounded by the block size however large the cache is."""
    with _reading(Path(path)) as f:
        emb = f["embeddings"]
        for start in range(0, emb.shape[0], rows):
            yield start, emb[start:start + rows].astype(np.float32, copy=False)


def read_vectors(path: str | os.PathLike, rows) -> np.ndarray:
    """The vectors of the given rows (any order, repeats allowed)."""
    rows = np.asarray(rows, dtype=np.int64)
    with _reading(Path(path)) as f:
        if not len(rows):
            return np.zeros((0, f["embeddings"].shape[1]), np.float32)
        uniq, inverse = np.unique(rows, return_inverse=True)
        return f["embeddings"][uniq].astype(np.float32, copy=False)[inverse]


@dataclass
class Row:
    """One row of the cache to write, and where its vector comes from."""

    key: str
    hash: str
    label: int
    source: Path  # the old cache file or a journal chunk
    index: int  # row in that source
    stat: tuple = (0, 0, 0, 0)  # the file's (size, mtime_ns, ctime_ns, inode) when hashed; zeros: unknown


def write(path: Path, rows: list[Row], classes: list[str], fingerprint: dict, root: str,
          failed: list[tuple[str, str, str]], dim: int, created_utc: str | None = None) -> None:
    """Write a complete new cache to a temporary file and rename it over `path` atomically."""
    h5py = _h5py()
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows, key=lambda r: r.key)
    failed = sorted(failed)
    for stale in path.parent.glob(f".{path.name}.tmp*"):  # left by a killed writer (we hold the lock)
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    str_t, ascii_t = h5py.string_dtype("utf-8"), h5py.string_dtype("ascii")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs.update({
                "format": FORMAT, "schema_version": SCHEMA_VERSION, "fingerprint": json.dumps(fingerprint),
                "fingerprint_id": fingerprint["id"], "root": root,
                "embedflow_version": fingerprint.get("embedflow_version", ""),
                "created_utc": created_utc or now, "updated_utc": now,
            })
            n = len(rows)
            emb = f.create_dataset("embeddings", shape=(n, dim), dtype="float32",
                                   chunks=(max(1, min(n, 1024)), dim) if n else None)
            f.create_dataset("keys", data=[r.key for r in rows], dtype=str_t)
            f.create_dataset("labels", data=np.array([r.label for r in rows], dtype=np.int32))
            f.create_dataset("hashes", data=[r.hash for r in rows], dtype=ascii_t)
            f.create_dataset("file_stats", data=np.array([r.stat for r in rows], dtype=np.int64).reshape(n, 4))
            f.create_dataset("classes", data=list(classes), dtype=str_t)
            g = f.create_group("failed")
            g.create_dataset("keys", data=[k for k, _, _ in failed], dtype=str_t)
            g.create_dataset("reasons", data=[r for _, r, _ in failed], dtype=str_t)
            g.create_dataset("hashes", data=[h for _, _, h in failed], dtype=ascii_t)
            for start in range(0, n, BLOCK_ROWS):
                emb[start:start + BLOCK_ROWS] = _gather(rows[start:start + BLOCK_ROWS], dim)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise CacheError(f"could not write cache {path}: {e.strerror or e}; its previous content is intact") from None
        raise


def _gather(block: list[Row], dim: int) -> np.ndarray:
    """Vectors of a block of rows, reading each source once."""
    out = np.empty((len(block), dim), dtype=np.float32)
    by_source: dict[Path, list[tuple[int, int]]] = {}
    for i, r in enumerate(block):
        by_source.setdefault(r.source, []).append((r.index, i))
    for source, pairs in by_source.items():
        pairs.sort()
        src_rows = np.array([p[0] for p in pairs])
        dst_rows = np.array([p[1] for p in pairs])
        if source.suffix == ".npz":
            out[dst_rows] = np.load(source)["vectors"][src_rows]
        else:
            with _h5py().File(source, "r") as f:
                uniq, inverse = np.unique(src_rows, return_inverse=True)
                out[dst_rows] = f["embeddings"][uniq][inverse]
    return out
