"""The HDF5 embedding cache: the only module that touches h5py.

Schema (format "embedflow.cache", schema_version 2 or 3), readable with plain h5py (HDF5 >= 1.8):

    /embeddings       float32 (N, D)   one pooled feature vector per image, rows sorted by key
    /keys             utf-8 str (N,)   path relative to the dataset root, "/"-separated
    /labels           int32 (N,)       index into /classes; -1 for an unlabelled image (schema 3)
    /hashes           ascii str (N,)   sha256 of the file's bytes (hex)
    /classes          utf-8 str (C,)   class names, sorted
    /failed/keys      utf-8 str (F,)   files that were skipped ...
    /failed/reasons   utf-8 str (F,)   ... and why
    /failed/hashes    ascii str (F,)   their sha256 ("" when the file could not be read)
    /file_stats       int64 (N, 4)     size, mtime_ns, ctime_ns, inode of each file when it was hashed;
                                       a row of zeros means "unknown". Optional (older caches lack it).
    /vector_crc32     uint32 (ceil(N / 1024),)  CRC-32 of each block of 1024 rows of /embeddings (float32
                                       little-endian bytes; the last block may be shorter). Schema 2.
    /splits           utf-8 str (N,)   "train", "val" or "test": the split folder each image came from
                                       (data/train|val|validation|test/<class>/...). Schema 3, optional.
    attrs: format, schema_version, fingerprint (JSON), fingerprint_id, root, embedflow_version,
           created_utc, updated_utc, content_sha256; labels_csv (JSON {"path", "sha256"}: the labels file of
           `embed --labels`, absolute path and sha256 of its bytes; only in caches labelled from a CSV)

Integrity (schema 2): /embeddings, /labels and /file_stats are chunked with HDF5's fletcher32 filter,
so a damaged chunk cannot be read; the file is written in the HDF5 1.8 format, whose superblock and
object headers carry checksums (not the 1.10 one: its superblock marks a file open for writing, which
would lock readers out while any h5py session holds the cache open); /vector_crc32 checks every block of
vectors wherever it is read, so a chunk index pointing at the wrong chunk cannot go unnoticed;
`content_sha256` is the sha256 of every attribute above, the vector matrix's shape and the content of
every other dataset (see `content_digest`), so a damaged string is detected too. Every open validates shapes, dtypes, row counts,
label range, class table, keys (relative, inside the root), hashes and, where
vectors are read, that they are finite. Any failure is one CacheError naming the cache and `--rebuild`.

Schema 3 is schema 2 plus unlabelled rows (label -1; /classes may then be empty: `embed --unlabelled`,
a flat folder of photos) and /splits; a cache is written as schema 3 only when it holds either, so
plain labelled caches stay readable by versions that know schema 2 (an older version refuses a schema 3
cache with "upgrade embedflow" instead of misreading it).

Schema 1 caches (no checksums, no content_sha256) still open, with every structural check; they become
schema 2 the next time `embed` writes them (or at once with `--rebuild`).

Schema 4 is the sharded cache (see shards.py): the same columns plus /shards, /shard_rows and /mask in an
index file whose /embeddings is a virtual dataset over immutable shard files in `<cache>.d/`; readers
here read the shards directly and return only live (unmasked) rows. Its /hashes may be fixed-length
(64-byte) ascii strings: any string column may be variable- or fixed-length to a reader.

Crash safety: the cache file is never modified in place. A run writes a complete new file beside it and
atomically renames it over the old one, so a reader, a crash or a full disk only ever sees the old or
the new file. Readers therefore open it without HDF5's own file locking (which an NFS mount or another
program holding the file open would turn into errors).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import backbones
from ..errors import CacheDamaged, CacheError, EmbedflowError
from ..fsio import free_bytes_short, sibling, staging_stem

FORMAT = "embedflow.cache"
SCHEMA_VERSION = 3  # the newest single-file schema read and written (2 is written when 3 is not needed)
SHARDED_SCHEMA = 4  # an index file over immutable shard files (see shards.py), the newest schema read
BLOCK_ROWS = 4096  # rows copied at a time when writing (a multiple of VECTOR_BLOCK): memory stays flat
VECTOR_BLOCK = 1024  # rows per /vector_crc32 entry (and per HDF5 chunk of /embeddings)
MAX_ABS = 1e15  # a larger vector component is damage: float32 norms and dot products would overflow
DIGEST_ATTRS = ("format", "schema_version", "fingerprint", "fingerprint_id", "root", "embedflow_version",
                "created_utc", "updated_utc")
_HEX = re.compile(r"[0-9a-f]*")


def _h5py():
    import h5py

    return h5py


def _strings(ds) -> list[str]:
    """A 1-d string dataset (variable or fixed length) as str, decoded strictly with its own encoding: the
    bytes are read at once and decoded here (h5py's asstr() takes twice as long at a million rows)."""
    if not len(ds):
        return []
    encoding = _h5py().check_string_dtype(ds.dtype).encoding
    return [b.decode(encoding) for b in ds[()].tolist()]


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
    splits: list[str] | None = None  # (N,) "train" | "val" | "test", see the schema; None when the cache has none
    schema_version: int = 0
    created_utc: str = ""
    labels_csv: dict | None = None  # see `labels_csv`
    # file_identity of the file these columns were read from, and (a sharded cache) its validated index:
    # cache.write(..., read=this) uses the index instead of reading and checking it again while the file
    # at `path` still has this identity (see shards.write_cache)
    snapshot: tuple = ()
    index: object = field(default=None, repr=False, compare=False)

    @property
    def labelled(self) -> bool:
        """Every image carries a class (no label -1)."""
        return bool(len(self.labels) == 0 or self.labels.min() >= 0)

    def __len__(self) -> int:
        return len(self.keys)

    def unchanged(self) -> bool:
        """The file at `path` is still the one this was read from (same file_identity): neither replaced
        by a writer's rename nor modified in place since."""
        try:
            return bool(self.snapshot) and file_identity(os.stat(self.path)) == self.snapshot
        except OSError:
            return False


def _damaged(path, what: str) -> CacheDamaged:
    return CacheDamaged(path, [{"problem": what}])


def _open_read(path: Path):
    h5py = _h5py()
    if not path.exists():
        raise CacheError(f"no cache at {path}: run `embedflow embed FOLDER` first")
    try:
        f = h5py.File(path, "r", locking=False)  # only ever replaced by rename: HDF5's lock adds nothing
    except Exception as e:  # OSError for most damage; anything else is damage too
        raise CacheError(f"cannot read cache {path}: {_reason(e)}") from None
    try:
        fmt = f.attrs.get("format")
        version = int(f.attrs.get("schema_version", 0))
        ours = fmt is not None or "embeddings" in f or any(name in f.attrs for name in DIGEST_ATTRS)
        if fmt == FORMAT and version < 2 and "vector_crc32" in f:
            raise ValueError("schema 2 datasets without schema_version 2")
    except Exception as e:
        f.close()
        raise _damaged(path, _reason(e)) from None
    if fmt != FORMAT:
        f.close()
        if not ours:
            raise CacheError(f"{path} is not an embedflow cache")
        raise CacheError(f"cache {path} is damaged (its format attribute is {None if fmt is None else str(fmt)[:40]!r}); "
                         "embed again with --rebuild")
    if version > SHARDED_SCHEMA:
        f.close()
        raise CacheError(f"{path} has cache schema {version}; upgrade embedflow to read it")
    return f


def _reason(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


@contextlib.contextmanager
def _reading(path: Path):
    """An open cache; a dataset or attribute that is missing, unreadable or fails its checksum becomes
    one CacheError."""
    with _open_read(path) as f:
        try:
            yield f
        except EmbedflowError:
            raise
        except Exception as e:  # h5py turns damage into OSError, KeyError, ValueError, TypeError, ...
            raise _damaged(path, _reason(e)) from None


def content_digest(attrs: dict, shape: tuple, keys: list[str], labels: np.ndarray, hashes: list[str],
                   classes: list[str], failed: list[tuple[str, str, str]], file_stats: np.ndarray | None,
                   vector_crc32: np.ndarray, splits: list[str] | None = None, sharded: tuple | None = None) -> str:
    """sha256 (hex) of what a cache holds besides its vectors: the attributes in DIGEST_ATTRS, the shape
    of /embeddings, and every other dataset (strings NUL-joined, which HDF5 strings cannot contain;
    integers as little-endian int64; /splits only when the cache has it)."""
    h = hashlib.sha256()

    def put(name: str, data: bytes, count: int = 0) -> None:
        h.update(f"{name}:{count}:{len(data)}:".encode())
        h.update(data)

    def strings(name: str, values) -> None:
        values = list(values)
        put(name, "\0".join(values).encode("utf-8", "surrogatepass"), len(values))

    for name in DIGEST_ATTRS:
        put(name, str(attrs.get(name, "")).encode("utf-8", "surrogatepass"))
    if attrs.get("labels_csv"):  # only when present: the digests of caches without it are unchanged
        put("labels_csv", str(attrs["labels_csv"]).encode("utf-8", "surrogatepass"))
    put("shape", f"{int(shape[0])}x{int(shape[1])}".encode())
    strings("keys", keys)
    put("labels", np.ascontiguousarray(labels, "<i8").tobytes(), len(labels))
    strings("hashes", hashes)
    strings("classes", classes)
    strings("failed/keys", (k for k, _, _ in failed))
    strings("failed/reasons", (r for _, r, _ in failed))
    strings("failed/hashes", (x for _, _, x in failed))
    if file_stats is not None:
        put("file_stats", np.ascontiguousarray(file_stats, "<i8").tobytes(), len(file_stats))
    put("vector_crc32", np.ascontiguousarray(vector_crc32, "<i8").tobytes(), len(vector_crc32))
    if splits is not None:
        strings("splits", splits)
    if sharded is not None:  # schema 4: (shard names, their row counts, the mask)
        names, rows, mask = sharded
        strings("shards", names)
        put("shard_rows", np.ascontiguousarray(rows, "<i8").tobytes(), len(rows))
        put("mask", np.ascontiguousarray(mask, "<i8").tobytes(), len(mask))
    return h.hexdigest()


def block_crc32(vectors: np.ndarray) -> np.ndarray:
    """CRC-32 of each VECTOR_BLOCK rows of a float32 matrix whose first row starts a block."""
    data = np.ascontiguousarray(vectors, dtype="<f4")
    return np.array([zlib.crc32(data[i:i + VECTOR_BLOCK].tobytes()) for i in range(0, len(data), VECTOR_BLOCK)],
                    dtype=np.uint32)


def _dataset(f, name: str, path):
    h5py = _h5py()
    ds = f.get(name)
    if not isinstance(ds, h5py.Dataset):
        raise _damaged(path, f"no dataset /{name}")
    return ds


def _string_column(f, name: str, path) -> list[str]:
    ds = _dataset(f, name, path)
    if ds.ndim != 1 or _h5py().check_string_dtype(ds.dtype) is None:
        raise _damaged(path, f"/{name} is not a 1-d string column ({ds.dtype}, shape {ds.shape})")
    return _strings(ds)


def _int_column(f, name: str, path, ndim: int) -> np.ndarray:
    ds = _dataset(f, name, path)
    if ds.ndim != ndim or ds.dtype.kind not in "iu":
        raise _damaged(path, f"/{name} is not an integer array of {ndim} dimension(s) ({ds.dtype}, shape {ds.shape})")
    return ds[()].astype(np.int64)


def _vectors_dataset(f, path):
    emb = _dataset(f, "embeddings", path)
    if emb.ndim != 2 or emb.dtype != np.float32 or emb.shape[1] < 1:  # embedflow writes float32 only
        raise _damaged(path, f"/embeddings must be a 2-d float32 matrix, not {emb.dtype} of shape {emb.shape}")
    return emb


# A key that is empty, absolute (/x, C:/x), or has an empty, "." or ".." part ("\\" counts as a separator
# here: it is one on Windows). Keys are searched NUL-joined (HDF5 strings hold no NUL).
_UNSAFE_KEY = re.compile(r"(?:^|\0)(?:/|[A-Za-z]:[/\\]|\0|$)|(?:^|\0|/|\\)\.{1,2}(?:/|\\|\0|$)|//|/(?:\0|$)")


# What every match of _UNSAFE_KEY contains (or starts or ends the joined keys): searched for first, as plain
# substrings (a 1M-key search with the pattern itself takes seconds, these milliseconds).
_SUSPECT = ("\0/", "//", "/\0", "\0\0", ":/", ":\\", "\0.", "/.", "\\.")


def _may_be_unsafe(joined: str) -> bool:
    """False when no match of _UNSAFE_KEY can be in the NUL-joined keys: its anchors (a key starting with
    "/", "." or empty; one ending in "/" or empty) and every _SUSPECT substring are absent."""
    return not joined or joined[0] in "/.\0" or joined[-1] in "/\0" or any(s in joined for s in _SUSPECT)


def _unsafe_key(keys: list[str]) -> str | None:
    """The first key that would leave the dataset root (or name no file in it), or None."""
    if not keys:
        return None
    joined = "\0".join(keys)
    if not _may_be_unsafe(joined) or not _UNSAFE_KEY.search(joined):
        return None
    return next(k for k in keys if _UNSAFE_KEY.search(k))


def _all_sha256(hashes: list[str]) -> bool:
    """Every hash is 64 lower-case hex digits (checked at once, not hash by hash)."""
    if set(map(len, hashes)) - {64}:
        return False
    try:
        data = "".join(hashes).encode("ascii")
    except UnicodeEncodeError:
        return False
    return not data.translate(None, b"0123456789abcdef")


@dataclass
class _Validated:
    attrs: dict
    shape: tuple
    keys: list[str]
    labels: np.ndarray
    hashes: list[str]
    classes: list[str]
    failed: list[tuple[str, str, str]]
    file_stats: np.ndarray | None
    fingerprint: dict
    vector_crc32: np.ndarray | None  # None in schema 1
    splits: list[str] | None = None  # schema 3, optional
    # schema 4 (sharded): the shard table and, for each live row, its row in the virtual matrix (None: all
    # rows are live, in order); all_keys/all_hashes are the columns before the mask was applied
    shards: list[tuple[str, int]] | None = None
    live: np.ndarray | None = None
    all_keys: list[str] | None = None
    all_hashes: list[str] | None = None


SPLITS = ("train", "val", "test")


EXAMPLES = 3  # keys named per problem by `diagnose`


def _validated(f, path, found: list | None = None) -> _Validated | None:
    """Every column but the vectors, checked for consistency (and against content_sha256 in schema 2).
    Raises CacheDamaged at the first problem; with `found` (a list), appends every problem to it instead
    (see `diagnose`) and returns None when there was one."""

    def fail(what: str, rows=None, many: str | None = None) -> None:
        if found is None:
            raise _damaged(path, what)
        item: dict = {"problem": many or what}
        if rows is not None:
            rows = np.asarray(rows)
            item["count"] = int(len(rows))
            item["keys"] = [keys[int(i)] for i in rows[:EXAMPLES]] if keys is not None and len(keys) == n else []
        found.append(item)

    def column(read, name: str, *args):
        if found is None:
            return read(f, name, path, *args)
        try:
            return read(f, name, path, *args)
        except CacheDamaged as e:
            found.extend(e.problems)
        except Exception as e:  # an unreadable dataset (checksum, damaged header)
            found.append({"problem": f"/{name} cannot be read ({_reason(e)})"})
        return None

    keys = None
    n = -1
    attrs = {name: f.attrs.get(name) for name in (*DIGEST_ATTRS, "labels_csv", "content_sha256")}
    attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}
    emb = column(lambda f, name, path: _vectors_dataset(f, path), "embeddings")
    shape = emb.shape if emb is not None else None
    keys, hashes, classes = (column(_string_column, name) for name in ("keys", "hashes", "classes"))
    labels = column(_int_column, "labels", 1)
    failed_cols = [column(_string_column, f"failed/{name}") for name in ("keys", "reasons", "hashes")]
    file_stats = column(_int_column, "file_stats", 2) if "file_stats" in f else None
    version = int(attrs.get("schema_version") or 0)
    splits = column(_string_column, "splits") if version >= 3 and "splits" in f else None
    sharded = column(lambda f, name, path: _shard_table(f, path), "shards") if version >= SHARDED_SCHEMA else None
    counts = {name: len(c) for name, c in (("keys", keys), ("labels", labels), ("hashes", hashes)) if c is not None}
    if shape is not None:
        counts = {"embeddings": shape[0], **counts}
    if sharded is not None:
        counts["mask"] = len(sharded[2])
        counts["shard_rows"] = int(sum(sharded[1]))
    counts.update({name: len(c) for name, c in (("file_stats", file_stats), ("splits", splits)) if c is not None})
    if len(set(counts.values())) > 1:
        fail("row counts differ: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    elif counts:
        n = next(iter(counts.values()))
    if file_stats is not None and file_stats.shape[1] != 4:
        fail(f"/file_stats has {file_stats.shape[1]} columns, not 4")
    if len({len(c) for c in failed_cols if c is not None}) > 1:
        fail("the /failed columns differ in length")
    crc = column(lambda f, name, path: _vector_crc32(f, path, shape[0], None if sharded is None else sharded[1]),
                 "vector_crc32") if shape is not None else None
    complete = not found and n >= 0 and all(c is not None for c in (keys, hashes, classes, labels, *failed_cols))
    if crc is not None and complete:
        want = attrs.get("content_sha256")
        got = content_digest(attrs, shape, keys, labels, hashes, classes, list(zip(*failed_cols)), file_stats, crc,
                             splits, sharded)
        if want != got:
            fail("content checksum mismatch" if want else "no content checksum")
    live = all_keys = all_hashes = None
    if sharded is not None and complete and not found:  # from here on only live rows: masked ones are history
        live = np.flatnonzero(sharded[2] == 0)
        all_keys, all_hashes = keys, hashes
        if len(live) == len(keys):  # every row is live: the same columns, in lists of their own
            keys, hashes = list(keys), list(hashes)
        else:
            pick = live.tolist()
            keys, hashes, labels = [keys[i] for i in pick], [hashes[i] for i in pick], labels[live]
            file_stats = None if file_stats is None else file_stats[live]
            splits = None if splits is None else [splits[i] for i in pick]
        n, shape = len(live), (len(live), shape[1])
    fingerprint = None
    try:
        fingerprint = json.loads(attrs["fingerprint"])
        if not isinstance(fingerprint, dict) or not isinstance(fingerprint.get("id"), str):
            raise ValueError("no id")
    except (TypeError, ValueError):
        fingerprint = None
        fail("its fingerprint attribute is not a fingerprint")
    if fingerprint is not None:
        if attrs.get("fingerprint_id") not in (None, fingerprint["id"]):
            fail("fingerprint_id disagrees with the fingerprint")
        dim = fingerprint.get("output_dim")
        if isinstance(dim, int) and shape is not None and dim != shape[1]:
            fail(f"{shape[1]}-d vectors, but the fingerprint says {dim}")
    lowest = -1 if version >= 3 else 0  # schema 3: -1 marks an unlabelled image
    if classes is not None:
        if labels is not None and len(labels) and not classes and (version < 3 or labels.max() >= 0):
            fail(f"{len(labels)} rows but an empty class table")
        if len(set(classes)) != len(classes) or not all(classes):
            fail("the class table has empty or repeated names")
        elif labels is not None and len(labels) and classes and (labels.min() < lowest or labels.max() >= len(classes)):
            fail(f"labels outside {lowest}..{len(classes) - 1}",
                 np.flatnonzero((labels < lowest) | (labels >= len(classes))))
    if splits is not None and not set(splits) <= set(SPLITS):
        fail(f"/splits holds names other than {', '.join(SPLITS)}",
             [i for i, s in enumerate(splits) if s not in SPLITS])
    if keys is not None:
        if len(set(keys)) != len(keys):
            seen: dict[str, int] = {}
            for k in keys:
                seen[k] = seen.get(k, 0) + 1
            fail("repeated keys", [i for i, k in enumerate(keys) if seen[k] > 1])
        unsafe = _unsafe_key(keys)
        if unsafe is not None:
            fail(f"key {unsafe!r} leaves the dataset root", [i for i, k in enumerate(keys) if _UNSAFE_KEY.search(k)],
                 many="keys whose path leaves the dataset root")
    if hashes is not None and not _all_sha256(hashes):
        fail("a content hash is not a sha256", [i for i, h in enumerate(hashes) if len(h) != 64 or not _HEX.fullmatch(h)],
             many="content hashes that are not a sha256")
    if found:
        return None
    return _Validated(attrs, shape, keys, labels, hashes, classes, list(zip(*failed_cols)), file_stats, fingerprint,
                      crc, splits, None if sharded is None else list(zip(*sharded[:2])), live, all_keys, all_hashes)


def diagnose(path: str | os.PathLike) -> list[dict]:
    """Every problem of a cache, not just the first: each a dict with `problem` (what is wrong, in words)
    and, for problems of rows, `count` (rows affected) and `keys` (the first few of their keys). Reads
    every column and every vector (in blocks of BLOCK_ROWS rows: memory stays bounded), checking block
    checksums (schema 2) and that vectors are finite. [] for a sound cache. Raises CacheError when the
    file cannot be opened as a cache at all (missing, not HDF5, not a cache, a newer schema)."""
    path = Path(path)
    found: list[dict] = []
    with _open_read(path) as f:
        try:
            v = _validated(f, path, found)
            keys = (v.all_keys if v.all_keys is not None else v.keys) if v is not None else None  # every row
            if keys is None:  # name the rows of bad vectors by key where the keys column can be read
                with contextlib.suppress(Exception):
                    keys = _string_column(f, "keys", path)
            emb = f.get("embeddings")
            skip = None
            if v is not None and v.shards is not None:  # a missing shard reads as NaN rows: name the file instead
                shard_found, skip = _shard_problems(f, path, v.shards, keys)
                found.extend(shard_found)
            if v is not None or (emb is not None and not any(p["problem"].startswith("/embeddings") for p in found)):
                # schema 4's checksums run per shard (readers check them); here: finite values only
                crc = v.vector_crc32 if v is not None and v.live is None else None
                found.extend(_vector_problems(emb, crc, keys, skip))
        except Exception as e:  # anything h5py throws at a damaged file
            found.append({"problem": _reason(e)})
    return found


def _shard_problems(f, path: Path, shards: list[tuple[str, int]], keys) -> tuple[list[dict], np.ndarray]:
    """Shard files of the table that are missing or cannot be opened as shards (one problem each, with
    their rows' keys), and a bool mask (N,) of the virtual matrix's rows they hold."""
    folder, identity = shard_folder(path), file_identity(os.fstat(f.id.get_vfd_handle()))
    skip = np.zeros(sum(rows for _, rows in shards), bool)
    found, start = [], 0
    for name, rows in shards:
        try:
            _open_shard(folder / name, path, identity).close()
        except CacheError:
            what = "is missing" if not (folder / name).exists() else "cannot be opened as a shard"
            found.append({"problem": f"shard file {name} {what}", "count": rows,
                          "keys": list(keys[start:start + EXAMPLES]) if keys is not None else []})
            skip[start:start + rows] = True
        start += rows
    return found, skip


def _read_rows(emb, start: int, stop: int, skip: np.ndarray | None) -> np.ndarray:
    """Rows start..stop of emb as float32; the rows where `skip` is True are not read (left NaN): a shard
    already reported as missing or unreadable must not make the rows of its neighbours unreadable too."""
    if skip is None or not skip.any():
        return np.asarray(emb[start:stop], dtype=np.float32)
    block = np.full((stop - start, emb.shape[1]), np.nan, np.float32)
    edges = np.flatnonzero(np.diff(np.concatenate([[True], skip, [True]]).astype(np.int8)))
    for a, b in zip(edges[::2], edges[1::2]):  # each run of rows not skipped
        block[a:b] = emb[start + a:start + b]
    return block


def _vector_problems(emb, crc: np.ndarray | None, keys: list[str] | None, skip: np.ndarray | None = None) -> list[dict]:
    """Blocks failing their checksum and non-finite (or absurdly large) vectors of /embeddings; rows where
    `skip` is True (held by a shard already reported) are not read."""
    unreadable, failing, bad_rows = [], [], []
    n = emb.shape[0]
    for start in range(0, n, BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, n)
        if skip is not None and skip[start:stop].all():
            continue
        try:
            block = _read_rows(emb, start, stop, None if skip is None else skip[start:stop])
        except Exception:  # a chunk failing fletcher32
            unreadable.extend(r for r in range(start, stop) if skip is None or not skip[r])
            continue
        if crc is not None:
            for b, got in enumerate(block_crc32(block)):
                if got != crc[start // VECTOR_BLOCK + b]:
                    failing.extend(range(start + b * VECTOR_BLOCK, min(start + (b + 1) * VECTOR_BLOCK, stop)))
        with np.errstate(invalid="ignore"):
            bad = ~(np.abs(block) <= MAX_ABS).all(axis=1) if block.size else np.zeros(len(block), bool)
        if skip is not None:
            bad &= ~skip[start:stop]
        bad_rows.extend(start + int(i) for i in np.flatnonzero(bad))

    def item(what: str, rows: list[int]) -> dict:
        return {"problem": what, "count": len(rows),
                "keys": [keys[i] for i in rows[:EXAMPLES]] if keys is not None and len(keys) == n else []}

    return [item(what, rows) for what, rows in (("vectors that cannot be read (HDF5 checksum)", unreadable),
                                                ("vectors failing their block checksum", failing),
                                                ("non-finite or out-of-range vectors", bad_rows)) if rows]


SHARD_NAME = re.compile(r"shard-[0-9]{5,12}\.h5")


def _shard_table(f, path) -> tuple[list[str], list[int], np.ndarray]:
    """(shard file names, their row counts, the mask (N,) uint8) of a sharded (schema 4) index file."""
    names = _string_column(f, "shards", path)
    rows = _int_column(f, "shard_rows", path, 1)
    mask = _int_column(f, "mask", path, 1)
    if len(rows) != len(names) or (len(rows) and rows.min() < 1):
        raise _damaged(path, "the shard table is inconsistent")
    if not all(SHARD_NAME.fullmatch(name) for name in names) or len(set(names)) != len(names):
        raise _damaged(path, "the shard table names files other than shard-NNNNN.h5")
    if len(mask) and not set(np.unique(mask).tolist()) <= {0, 1}:
        raise _damaged(path, "/mask holds values other than 0 and 1")
    return names, [int(r) for r in rows], mask


def shard_folder(path: str | os.PathLike) -> Path:
    """The folder of a sharded cache's shard files: `<cache>.d` beside it (shortened like `<cache>.lock`)."""
    return sibling(path, ".d")


def _vector_crc32(f, path, n: int, shard_rows: list[int] | None = None) -> np.ndarray | None:
    """The block checksums of a schema-2 cache (None for schema 1), of the right length (schema 4: the
    blocks of each shard, one after another)."""
    if int(f.attrs.get("schema_version", 0)) < 2:
        return None
    crc = _int_column(f, "vector_crc32", path, 1)
    want = -(-n // VECTOR_BLOCK) if shard_rows is None else sum(-(-r // VECTOR_BLOCK) for r in shard_rows)
    if len(crc) != want:
        raise _damaged(path, f"{len(crc)} vector checksums for {n} rows")
    return crc


@dataclass
class _Segment:
    """Rows start..start+rows-1 of the (virtual) vector matrix: a dataset and the CRC-32s of its blocks."""

    emb: object
    start: int
    rows: int
    crc: np.ndarray | None
    where: object  # the file named in errors


class _Matrix:
    """The vectors of a cache's live rows, read from the single file or straight from its shard files
    (opened here, at once, so a shard removed by a later compaction stays readable to this snapshot;
    the virtual dataset is there for plain h5py, not used by embedflow)."""

    def __init__(self, f, path: Path, v: _Validated, stack: contextlib.ExitStack):
        self.path, self.live, self.dim = path, v.live, int(v.shape[1])
        if v.shards is None:
            emb = _vectors_dataset(f, path)
            self.segments = [_Segment(emb, 0, emb.shape[0], v.vector_crc32, path)]
            self.n = emb.shape[0]
            return
        folder, start, first_block = shard_folder(path), 0, 0
        self.segments = []
        identity = file_identity(os.fstat(f.id.get_vfd_handle()))
        for name, rows in v.shards:
            sf = _open_shard(folder / name, path, identity)
            stack.enter_context(sf)
            emb = _vectors_dataset(sf, folder / name)
            if emb.shape != (rows, self.dim):
                raise _damaged(path, f"shard {name} holds {emb.shape}, the index says ({rows}, {self.dim})")
            blocks = -(-rows // VECTOR_BLOCK)
            self.segments.append(_Segment(emb, start, rows, v.vector_crc32[first_block:first_block + blocks],
                                          folder / name))
            start, first_block = start + rows, first_block + blocks
        self.n = start

    def _range(self, lo: int, hi: int) -> np.ndarray:
        """Virtual rows lo..hi-1, checked."""
        parts = [_verified_rows(s.emb, s.crc, s.where, max(lo, s.start) - s.start, min(hi, s.start + s.rows) - s.start)
                 for s in self.segments if max(lo, s.start) < min(hi, s.start + s.rows)]
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)

    def _virtual_rows(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), self.dim), np.float32)
        for s in self.segments:
            mine = (rows >= s.start) & (rows < s.start + s.rows)
            if mine.any():
                out[mine] = _rows(s.emb, s.crc, s.where, rows[mine] - s.start)
        return out

    def __len__(self) -> int:
        return self.n if self.live is None else len(self.live)

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of sorted unique live rows."""
        return self._virtual_rows(rows if self.live is None else self.live[rows])

    def blocks(self, size: int):
        """(first live row, vectors of the next `size` live rows), in order."""
        for start in range(0, len(self), size):
            stop = min(start + size, len(self))
            if self.live is None:
                yield start, self._range(start, stop)
                continue
            want = self.live[start:stop]
            block = self._range(int(want[0]), int(want[-1]) + 1)
            yield start, block if len(block) == len(want) else block[want - want[0]]

    def all(self) -> np.ndarray:
        if self.live is None and len(self.segments) == 1:
            return self._range(0, self.n)
        out = np.empty((len(self), self.dim), np.float32)
        for start, block in self.blocks(BLOCK_ROWS):
            out[start:start + len(block)] = block
        return out


def _open_shard(shard: Path, path: Path, identity: tuple):
    try:
        sf = _h5py().File(shard, "r", locking=False)
    except Exception as e:
        try:
            replaced = file_identity(os.stat(path)) != identity
        except OSError:
            replaced = True
        if replaced:
            raise _replaced(path) from None
        raise _damaged(path, f"its shard {shard.name} cannot be read ({_reason(e)})") from None
    try:
        if sf.attrs.get("format") != SHARD_FORMAT:
            raise ValueError("not a shard")
    except Exception:
        sf.close()
        raise _damaged(path, f"{shard.name} is not a shard of it") from None
    return sf


SHARD_FORMAT = "embedflow.cache-shard"


def _verified_rows(emb, crc: np.ndarray | None, path, lo: int, hi: int) -> np.ndarray:
    """Rows lo..hi-1 of /embeddings as float32; in schema 2 every block they touch is read whole and
    checked against its CRC-32."""
    if crc is None or hi <= lo:
        return _checked_vectors(emb[lo:hi], path, lo)
    first, last = lo // VECTOR_BLOCK, -(-hi // VECTOR_BLOCK)
    start = first * VECTOR_BLOCK
    block = np.asarray(emb[start:min(last * VECTOR_BLOCK, emb.shape[0])], dtype=np.float32)
    got = block_crc32(block)
    bad = np.flatnonzero(got != crc[first:last])
    if len(bad):
        row = (first + int(bad[0])) * VECTOR_BLOCK
        raise _damaged(path, f"the vectors of rows {row}..{row + VECTOR_BLOCK - 1} fail their checksum")
    return _checked_vectors(block[lo - start:hi - start], path, lo)


def _rows(emb, crc, path, rows: np.ndarray) -> np.ndarray:
    """The vectors of sorted unique rows, each block they touch verified once."""
    if crc is None:
        return _checked_vectors(emb[rows], path)
    out = np.empty((len(rows), emb.shape[1]), np.float32)
    blocks = rows // VECTOR_BLOCK
    for b in np.unique(blocks):
        mine = blocks == b
        lo = int(b) * VECTOR_BLOCK
        data = _verified_rows(emb, crc, path, lo, min(lo + VECTOR_BLOCK, emb.shape[0]))
        out[mine] = data[rows[mine] - lo]
    return out


def _checked_vectors(block: np.ndarray, path, first_row: int = 0) -> np.ndarray:
    """float32 vectors, refused when one is non-finite or absurdly large (damage, never a result)."""
    block = np.asarray(block, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(block) <= MAX_ABS).all(axis=1) if block.size else np.zeros(len(block), bool)
    if bad.any():
        raise _damaged(path, f"{int(bad.sum())} non-finite or out-of-range vector(s), e.g. row {first_row + int(np.argmax(bad))}")
    return block


def labels_csv(path: str | os.PathLike) -> dict | None:
    """The labels file a cache's labels came from ({"path": absolute path, "sha256": hex}, see `embed
    --labels`), None when they did not come from one. Raises CacheError when the cache cannot be read."""
    with _reading(Path(path)) as f:
        _validated(f, Path(path))  # the attribute is covered by content_sha256
        value = f.attrs.get("labels_csv")
        return json.loads(value) if value else None


def read_meta(path: str | os.PathLike) -> dict:
    """Fingerprint, classes, sizes and timestamps, without reading the vectors (the columns are read
    and validated)."""
    path = Path(path)
    with _reading(path) as f:
        v = _validated(f, path)
        return {
            "path": str(path),
            "fingerprint": v.fingerprint,
            "root": str(v.attrs.get("root") or ""),
            "classes": v.classes,
            "count": len(v.keys),
            "dim": int(v.shape[1]),
            "failed": len(v.failed),
            "created_utc": str(v.attrs.get("created_utc") or ""),
            "updated_utc": str(v.attrs.get("updated_utc") or ""),
            "embedflow_version": str(v.attrs.get("embedflow_version") or ""),
            "schema_version": int(v.attrs.get("schema_version") or 0),
            "labelled": bool(len(v.labels) == 0 or v.labels.min() >= 0),
            "split_counts": ({s: v.splits.count(s) for s in SPLITS if s in v.splits} if v.splits is not None else {}),
        }


def load(path: str | os.PathLike, vectors: bool = True) -> CacheData:
    """The whole cache in memory; with vectors=False everything but the vectors (embeddings is then an
    empty (0, D) array), which is cheap for a cache of any size. Raises CacheError when the cache is
    missing, damaged or inconsistent (see the module docstring)."""
    path = Path(path)
    with _reading(path) as f, contextlib.ExitStack() as stack:
        v = _validated(f, path)
        return CacheData(
            embeddings=_Matrix(f, path, v, stack).all() if vectors else np.zeros((0, v.shape[1]), np.float32),
            labels=v.labels,
            keys=v.keys,
            hashes=v.hashes,
            classes=v.classes,
            fingerprint=v.fingerprint,
            root=str(v.attrs.get("root") or ""),
            failed=v.failed,
            path=str(path),
            file_stats=v.file_stats,
            splits=v.splits,
            schema_version=int(v.attrs.get("schema_version") or 0),
            created_utc=str(v.attrs.get("created_utc") or ""),
            labels_csv=json.loads(v.attrs["labels_csv"]) if v.attrs.get("labels_csv") else None,
            snapshot=file_identity(os.fstat(f.id.get_vfd_handle())),
            index=v if v.shards is not None else None,
        )


def vectors_for_hashes(path: str | os.PathLike, wanted: set[str], fingerprint: dict | str) -> dict[str, np.ndarray]:
    """hash -> (D,) float32 vector for the wanted hashes a cache of that backbone holds (`fingerprint`: a
    dict or an id, of any id scheme: backbones.same_backbone decides); {} for no such cache (or a damaged
    one: the caller then embeds the images itself)."""
    path = Path(path)
    if not wanted or not path.exists():
        return {}
    try:
        with _reading(path) as f, contextlib.ExitStack() as stack:
            v = _validated(f, path)
            if not backbones.same_backbone(fingerprint, v.fingerprint):
                return {}
            rows = {h: i for i, h in enumerate(v.hashes) if h in wanted}
            if not rows:
                return {}
            idx = np.array(sorted(set(rows.values())))
            block = _Matrix(f, path, v, stack).rows(idx)
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

    def label_names(self) -> list[str | None]:
        """The class name of each row, None for an unlabelled image (label -1)."""
        return label_names(self.labels, self.classes)

    def __len__(self) -> int:
        return len(self.keys)

    def check_unchanged(self) -> None:
        """Raise CacheError if the cache file was replaced since these columns were read: vectors read
        by a later open would belong to another snapshot (a writer renames a new file over the old)."""
        try:
            now = file_identity(os.stat(self.path))
        except OSError:
            now = None
        if self.snapshot and now != self.snapshot:
            raise _replaced(self.path)


def label_names(labels, classes: list[str]) -> list[str | None]:
    """The class name of each label index, None for -1 (an unlabelled image): never classes[-1]."""
    return [classes[i] if i >= 0 else None for i in np.asarray(labels).tolist()]


def _replaced(path: Path) -> CacheError:
    return CacheError(f"cache {path} was replaced by another run while it was being read; run the command again")


def file_identity(st: os.stat_result) -> tuple:
    """What tells one cache file from another, or from itself modified: a new file (a writer renames one
    over the cache) has another inode, and any change in place moves ctime, which no program can set."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def load_columns(path: str | os.PathLike) -> CacheColumns:
    """Keys, hashes, labels and attributes, without reading the (possibly huge) vector matrix."""
    path = Path(path)
    with _reading(path) as f:
        v = _validated(f, path)
        return CacheColumns(
            keys=v.keys, hashes=v.hashes, labels=v.labels, classes=v.classes, fingerprint=v.fingerprint,
            root=str(v.attrs.get("root") or ""), dim=int(v.shape[1]),
            updated_utc=str(v.attrs.get("updated_utc") or ""), path=str(path),
            snapshot=file_identity(os.fstat(f.id.get_vfd_handle())),
        )


def iter_vector_blocks(path: str | os.PathLike, rows: int = BLOCK_ROWS, snapshot: tuple = ()):
    """(first row, float32 block of at most `rows` vectors) over the whole cache, in row order:
    memory stays bounded by the block size however large the cache is. A damaged block raises
    CacheError when it is reached. `snapshot`: the CacheColumns.snapshot the caller read names from; a
    file replaced since (a writer renamed a new cache over it) raises CacheError before any block."""
    path = Path(path)
    with _reading(path) as f, contextlib.ExitStack() as stack:
        if snapshot and file_identity(os.fstat(f.id.get_vfd_handle())) != snapshot:
            raise _replaced(path)
        yield from _Matrix(f, path, _matrix_columns(f, path), stack).blocks(rows)


def read_vectors(path: str | os.PathLike, rows) -> np.ndarray:
    """The vectors of the given rows (any order, repeats allowed)."""
    path = Path(path)
    rows = np.asarray(rows, dtype=np.int64)
    with _reading(path) as f, contextlib.ExitStack() as stack:
        matrix = _Matrix(f, path, _matrix_columns(f, path), stack)
        if not len(rows):
            return np.zeros((0, matrix.dim), np.float32)
        if rows.min() < 0 or rows.max() >= len(matrix):
            raise _damaged(path, f"row {int(rows.max())} asked of a {len(matrix)}-row matrix")
        uniq, inverse = np.unique(rows, return_inverse=True)
        return matrix.rows(uniq)[inverse]


def check_shards(path: str | os.PathLike) -> None:
    """Raise CacheError (damaged, naming the file) when a shard of a sharded cache is missing or cannot be
    opened as a shard; nothing for a single-file cache. Opens each shard's header only (no vector is
    read): cheap enough for every `embed` run, which otherwise never opens the shards it keeps."""
    path = Path(path)
    with _reading(path) as f:
        if int(f.attrs.get("schema_version", 0)) < SHARDED_SCHEMA:
            return
        names, _, _ = _shard_table(f, path)
        identity = file_identity(os.fstat(f.id.get_vfd_handle()))
        for name in names:
            _open_shard(shard_folder(path) / name, path, identity).close()


def _matrix_columns(f, path) -> _Validated:
    """What _Matrix needs: for a single file only the block checksums (cheap: the columns are not read
    again), for a sharded cache the validated shard table and mask."""
    emb = _vectors_dataset(f, path)
    if int(f.attrs.get("schema_version", 0)) >= SHARDED_SCHEMA:  # the shard table, mask and checksums only
        names, rows, mask = _shard_table(f, path)
        if not len(mask) == sum(rows) == emb.shape[0]:
            raise _damaged(path, "row counts differ: " + f"embeddings {emb.shape[0]}, mask {len(mask)}, shards {sum(rows)}")
        live = np.flatnonzero(mask == 0)
        return _Validated({}, (len(live), emb.shape[1]), [], np.zeros(0), [], [], [], None, {},
                          _vector_crc32(f, path, emb.shape[0], rows), shards=list(zip(names, rows)), live=live)
    return _Validated({}, emb.shape, [], np.zeros(0), [], [], [], None, {}, _vector_crc32(f, path, emb.shape[0]))


@dataclass
class Row:
    """One row of the cache to write, and where its vector comes from."""

    key: str
    hash: str
    label: int
    source: Path  # the old cache file or a journal chunk
    index: int  # row in that source
    stat: tuple = (0, 0, 0, 0)  # the file's (size, mtime_ns, ctime_ns, inode) when hashed; zeros: unknown
    split: str = ""  # "train" | "val" | "test" in a train/val/test layout, else ""


def estimated_bytes(keys: list[str], failed: list[tuple[str, str, str]], classes: list[str], dim: int) -> int:
    """An upper bound of the size of the cache file `write` makes for these rows (vectors, columns and
    HDF5's own overhead, measured with margin)."""
    n = len(keys)
    text = sum(len(k.encode("utf-8", "surrogatepass")) for k in keys) + 64 * n
    text += sum(len(k.encode()) + len(r.encode()) + len(h) for k, r, h in failed) + sum(len(c.encode()) for c in classes)
    strings = 2 * n + 3 * len(failed) + len(classes)
    chunks = 3 * -(-n // VECTOR_BLOCK)
    return n * (dim * 4 + 4 + 32) + text + 32 * strings + 64 * chunks + 64 * 1024


def check_space(path: Path, need: int) -> None:
    """Raise CacheError when the filesystem of the cache's folder has less than `need` bytes free."""
    _check_space(path, need)


def _check_space(path: Path, need: int) -> None:
    """Refuse before writing a byte when the folder's filesystem cannot hold the new file."""
    if (free := free_bytes_short(path.parent, need)) is not None:
        raise CacheError(f"could not write cache {path}: No space left on device (it needs about {_mb(need)}, "
                         f"{path.parent} has {_mb(free)} free); {kept_note(path)}")


def kept_note(path: Path) -> str:
    """What a refused or failed write (which never replaced the cache) left: the previous cache, or none."""
    return "its previous content is intact" if os.path.lexists(path) else "no cache was written"


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def write_through_sink(tmp: Path, write) -> None:
    """Create `tmp`, let `write(sink)` fill it through a _Sink (h5py writes to the sink, which records the
    first disk error), then flush and fsync it. Raises the sink's OSError when there was one (h5py's own
    error after it is only a consequence), else whatever `write` raised."""
    with open(tmp, "wb+") as fh:
        sink = _Sink(fh)
        try:
            write(sink)
        except BaseException:
            if sink.error is not None:
                raise sink.error from None
            raise
        if sink.error is not None:
            raise sink.error
        fh.flush()
        os.fsync(fh.fileno())


class _Sink:
    """The file object h5py writes the new cache through (its "fileobj" driver): Python I/O, whose
    errors (ENOSPC, EIO) are kept here and raised by `write` after h5py has let go of the file, instead
    of surfacing inside HDF5's close, from which h5py cannot recover cleanly."""

    def __init__(self, f):
        self.f = f
        self.error: OSError | None = None

    def _guard(self, op, *args):
        if self.error is not None:
            raise self.error
        try:
            return op(*args)
        except OSError as e:
            self.error = e
            raise

    def write(self, data):
        return self._guard(self.f.write, data)

    def truncate(self, size=None):
        return self._guard(self.f.truncate, size)

    def flush(self):
        return self._guard(self.f.flush)

    def readinto(self, b):
        return self.f.readinto(b)

    def read(self, n=-1):
        return self.f.read(n)

    def seek(self, offset, whence=0):
        return self.f.seek(offset, whence)

    def tell(self):
        return self.f.tell()


def write(path: Path, rows: list[Row], classes: list[str], fingerprint: dict, root: str,
          failed: list[tuple[str, str, str]], dim: int, created_utc: str | None = None,
          labels_csv: dict | None = None) -> None:
    """Write a complete new single-file cache (schema 2) to a temporary file and rename it over `path`
    atomically (`cache.write`, i.e. shards.write_cache, decides between this and a sharded write).
    labels_csv ({"path": absolute path, "sha256": hex}) records the labels file the labels came from.

    Raises CacheError, leaving the previous cache and no temporary file, when the folder lacks the
    space (checked before writing), the disk fills or fails while writing, or a source of vectors (the
    old cache, a journal chunk) is damaged."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows, key=lambda r: r.key)
    failed = sorted(failed)
    for stale in path.parent.glob(f".{glob.escape(staging_stem(path.name))}.tmp*"):  # left by a killed writer (we hold the lock)
        stale.unlink(missing_ok=True)
    _check_space(path, estimated_bytes([r.key for r in rows], failed, classes, dim))
    tmp = path.with_name(f".{staging_stem(path.name)}.tmp{os.getpid()}")  # within NAME_MAX
    try:
        write_through_sink(tmp, lambda sink: _write_h5(sink, rows, classes, fingerprint, root, failed, dim,
                                                       created_utc, labels_csv))
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise CacheError(f"could not write cache {path}: {e.strerror or e}; {kept_note(path)}") from None
        raise


def cache_attrs(schema_version: int, fingerprint: dict, root: str, created_utc: str, updated_utc: str,
                labels_csv: dict | None) -> dict:
    """The root attributes every cache file (single-file or sharded index) carries."""
    attrs = {"format": FORMAT, "schema_version": schema_version, "fingerprint": json.dumps(fingerprint),
             "fingerprint_id": fingerprint["id"], "root": root,
             "embedflow_version": fingerprint.get("embedflow_version", ""),
             "created_utc": created_utc, "updated_utc": updated_utc}
    if labels_csv:
        attrs["labels_csv"] = json.dumps(labels_csv, sort_keys=True)
    return attrs


def _write_h5(sink, rows, classes, fingerprint, root, failed, dim, created_utc, labels_csv=None) -> None:
    h5py = _h5py()
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    str_t, ascii_t = h5py.string_dtype("utf-8"), h5py.string_dtype("ascii")
    n = len(rows)
    keys, hashes = [r.key for r in rows], [r.hash for r in rows]
    labels = np.array([r.label for r in rows], dtype=np.int32)
    stats = np.array([r.stat for r in rows], dtype=np.int64).reshape(n, 4)
    splits = [r.split for r in rows] if any(r.split for r in rows) else None
    if splits is not None and not set(splits) <= set(SPLITS):
        raise ValueError(f"every row of a cache with splits needs one of {SPLITS}")
    version = 3 if splits is not None or (labels < 0).any() else 2
    attrs = cache_attrs(version, fingerprint, root, created_utc or now, now, labels_csv)

    def checked(rows_per_chunk, width=None):  # chunked + fletcher32; an empty dataset has nothing to check
        if not n:
            return {}
        return {"chunks": (min(n, rows_per_chunk),) + ((width,) if width else ()), "fletcher32": True}

    with h5py.File(sink, "w", libver=("v108", "v108"), locking=False) as f:
        emb = f.create_dataset("embeddings", shape=(n, dim), dtype="float32", **checked(VECTOR_BLOCK, dim))
        f.create_dataset("keys", data=keys, dtype=str_t)
        f.create_dataset("labels", data=labels, **checked(1 << 16))
        f.create_dataset("hashes", data=hashes, dtype=ascii_t)
        f.create_dataset("file_stats", data=stats, **checked(1 << 14, 4))
        f.create_dataset("classes", data=list(classes), dtype=str_t)
        if splits is not None:
            f.create_dataset("splits", data=splits, dtype=str_t)
        g = f.create_group("failed")
        g.create_dataset("keys", data=[k for k, _, _ in failed], dtype=str_t)
        g.create_dataset("reasons", data=[r for _, r, _ in failed], dtype=str_t)
        g.create_dataset("hashes", data=[h for _, _, h in failed], dtype=ascii_t)
        crc = []
        for start in range(0, n, BLOCK_ROWS):  # BLOCK_ROWS is a multiple of VECTOR_BLOCK
            block = _gather(rows[start:start + BLOCK_ROWS], dim)
            emb[start:start + BLOCK_ROWS] = block
            crc.append(block_crc32(block))
            if sink.error is not None:
                raise sink.error
        crc = np.concatenate(crc) if crc else np.zeros(0, np.uint32)
        f.create_dataset("vector_crc32", data=crc, dtype=np.uint32)
        attrs["content_sha256"] = content_digest(attrs, (n, dim), keys, labels, hashes, classes, failed, stats, crc,
                                                 splits)
        f.attrs.update(attrs)


def _gather(block: list[Row], dim: int) -> np.ndarray:
    """Vectors of a block of rows, reading each source once (and checking what it reads)."""
    out = np.empty((len(block), dim), dtype=np.float32)
    by_source: dict[Path, list[tuple[int, int]]] = {}
    for i, r in enumerate(block):
        by_source.setdefault(r.source, []).append((r.index, i))
    for source, pairs in by_source.items():
        pairs.sort()
        src_rows = np.array([p[0] for p in pairs])
        dst_rows = np.array([p[1] for p in pairs])
        if source.suffix == ".npz":
            try:
                with np.load(source) as z:
                    out[dst_rows] = _checked_vectors(z["vectors"][src_rows], source)
            except EmbedflowError:
                raise
            except Exception as e:
                raise CacheError(f"journal chunk {source} became unreadable ({_reason(e)}); "
                                 "run the same command again") from None
        else:
            out[dst_rows] = read_vectors(source, src_rows)
    return out


__all__ = ["BLOCK_ROWS", "FORMAT", "SCHEMA_VERSION", "CacheColumns", "CacheData", "Row", "content_digest",
           "check_space", "estimated_bytes", "iter_vector_blocks", "label_names", "load", "load_columns", "read_meta",
           "read_vectors", "vectors_for_hashes", "write"]
