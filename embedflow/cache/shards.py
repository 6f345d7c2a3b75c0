"""The sharded cache (schema 4): vectors in immutable shard files, `embeddings.h5` a small index over them.

    cache/embeddings.h5                  the index file: every column of the schema (keys, labels, hashes,
                                         file_stats, classes, failed, splits, vector_crc32) plus
        /embeddings   float32 (N, D)     an HDF5 *virtual* dataset mapping the shards' rows, in order
                                         (relative source paths: the cache folder can be moved or copied;
                                         a missing shard reads as NaN in plain h5py)
        /shards       utf-8 str (S,)     shard file names, in row order ("shard-00012.h5")
        /shard_rows   int64 (S,)         rows of each shard
        /mask         uint8 (N,)         1: the row was removed or replaced by a later run (masked), 0: live
        /hashes       ascii str (N,)     fixed-length 64-byte strings (variable-length in index files written
                                         before 2026-12-02; both read the same, in plain h5py too)
    cache/embeddings.h5.d/shard-NNNNN.h5 /embeddings float32 (n, D) (chunks of 1024 rows, fletcher32),
                                         /vector_crc32, attrs format "embedflow.cache-shard"

Readers (every embedflow reader: open_cache, load, fit, neighbors, duplicates, audit, ...) see only live
rows, in index order; plain h5py sees every row of /embeddings and must apply /mask itself. Masked rows
keep their key and hash; their label is -1. /vector_crc32 holds each shard's block checksums one shard
after another, and content_sha256 covers the shard table and the mask too.

Writing (under the cache lock): a run whose old cache is sharded keeps every old row whose key and
content are unchanged where it is, masks the others, writes the new vectors as new shard files (each
written to a temporary name, fsynced, renamed) and then a new index file, renamed over the old one: the
rename is the commit, exactly as for a single-file cache. When more than COMPACT_MASKED of the rows would
be masked, or the shards would outnumber what the rows need by more than MAX_EXTRA_SHARDS, the run
compacts instead: every live row is written into fresh shards (new names; nothing in use is touched), the
new index is renamed in, and only then are the old shards removed. Shard files that no index names
(left by a killed run, or by a compaction whose removal did not finish) are removed by the next writer.

A cache is written sharded from SHARD_MIN_ROWS rows on (env EMBEDFLOW_SHARD_MIN_ROWS), and stays
sharded once it is; smaller caches are one file, as before (schemas 2-3).

The old index is read and checked once per run: `embed` hands the writer the columns it read to plan
the run (cache.write(..., read=)), whose checked index is used while the file keeps its identity (see
passed_index); otherwise the writer reads and checks it again."""

from __future__ import annotations

import contextlib
import glob
import itertools
import operator
import os
import re
import time
from pathlib import Path

import numpy as np

from ..errors import CacheError
from ..fsio import staging_stem
from . import store
from .store import (SHARD_FORMAT, SHARDED_SCHEMA, SPLITS, VECTOR_BLOCK, Row, _check_space, _gather,
                    _h5py, block_crc32, content_digest, shard_folder)

SHARD_MIN_ROWS = 50_000  # a cache of this many rows or more is written sharded
SHARD_ROWS = 65_536  # rows per shard when many rows are written at once (a multiple of VECTOR_BLOCK)
COMPACT_MASKED = 0.25  # compact when more than this share of the rows would be masked
MAX_EXTRA_SHARDS = 64  # ... or when there would be this many more shards than the rows need
_NUMBER = re.compile(r"shard-([0-9]+)\.h5")


def shard_min_rows() -> int:
    try:
        return max(0, int(os.environ.get("EMBEDFLOW_SHARD_MIN_ROWS", SHARD_MIN_ROWS)))
    except ValueError:
        return SHARD_MIN_ROWS


def old_index(path: Path):
    """The validated columns of the sharded cache at path, or None (missing, single-file, unreadable)."""
    try:
        with _h5py().File(path, "r", locking=False) as f:
            if int(f.attrs.get("schema_version", 0)) < SHARDED_SCHEMA:
                return None
            return store._validated(f, path)
    except Exception:
        return None


def estimated_write_bytes(sharded: bool, keys: list[str], fresh_keys: list[str], failed: list[tuple[str, str, str]],
                          classes: list[str], dim: int) -> int:
    """An upper bound of the free bytes the next write of a cache with these rows (`keys`) needs, in bytes.
    An existing sharded cache (`sharded`) writes only shards for the rows it does not hold yet
    (`fresh_keys`) and a new index (128 bytes a row, masked rows included: at most 4/3 of the live rows, or
    `write` compacts); any other cache writes every row. A compaction, decided by `write`, checks its own
    need there (the journal keeps the vectors embedded before it)."""
    if sharded:
        return store.estimated_bytes(fresh_keys, failed, classes, dim) + 300 * len(keys)
    return store.estimated_bytes(keys, failed, classes, dim)


def is_sharded(path: Path) -> bool:
    return old_index(path) is not None


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_unreferenced(path: Path, keep: set[str], folder_too: bool = False) -> None:
    """Remove temporary files and shard files not in `keep`, and the empty folder when folder_too (best
    effort; the caller holds the lock)."""
    folder = shard_folder(path)
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if p.name not in keep and (p.name.startswith(".") or _NUMBER.fullmatch(p.name)):
            with contextlib.suppress(OSError):
                p.unlink()
    if folder_too:
        with contextlib.suppress(OSError):
            folder.rmdir()


def passed_index(path: Path, read: store.CacheData | None):
    """The validated index of the cache at `path` as `read` (a cache.load of that file) holds it, when the
    file is still the one read (same store.file_identity): None for a single-file cache, False (read it
    again) for anything else: no `read`, another path, or a file replaced or modified since."""
    if read is None or os.path.abspath(read.path) != os.path.abspath(path) or not read.unchanged():
        return False
    return read.index


def write_cache(path: Path, rows: list[Row], classes: list[str], fingerprint: dict, root: str,
                failed: list[tuple[str, str, str]], dim: int, created_utc: str | None = None,
                labels_csv: dict | None = None, read: store.CacheData | None = None) -> None:
    """`cache.write`: a sharded cache (write, below) from shard_min_rows() rows on or when the cache at
    `path` is sharded already, else a single file (store.write). `read`: the CacheData the caller loaded
    from `path` (cache.load), whose index is used instead of reading and checking it a second time while
    the file is unchanged (passed_index). Raises CacheError as those do."""
    path = Path(path)
    old = passed_index(path, read)
    if old is False:
        old = old_index(path) if path.exists() else None
    if old is None and len(rows) < shard_min_rows():
        store.write(path, rows, classes, fingerprint, root, failed, dim, created_utc, labels_csv)
        if shard_folder(path).exists():  # shards no index names any more (a killed sharded write, say)
            remove_unreferenced(path, set(), folder_too=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(staging_stem(path.name))}.tmp*"):  # left by a killed writer
        stale.unlink(missing_ok=True)
    write(path, sorted(rows, key=_KEY), classes, fingerprint, root, sorted(failed), dim, created_utc, old,
          labels_csv)


def write(path: Path, rows: list[Row], classes: list[str], fingerprint: dict, root: str,
          failed: list[tuple[str, str, str]], dim: int, created_utc: str | None = None, old=False,
          labels_csv: dict | None = None) -> dict:
    """Write the cache sharded (see the module docstring). rows: sorted by key. Returns what was done:
    {"new_shards", "new_rows", "masked", "compacted"}. Raises CacheError like store.write, leaving the
    previous cache and no new shard or temporary file."""
    old = old_index(path) if old is False else old  # the caller may have read it already
    folder = shard_folder(path)
    folder.mkdir(parents=True, exist_ok=True)
    if old is not None:  # room first: what a killed run left (an unreadable index deletes nothing before the commit)
        remove_unreferenced(path, {name for name, _ in old.shards})
    kept_at, kept_rows, fresh = np.zeros(0, np.int64), [], list(rows)
    if old is not None:
        at = _kept(rows, old, path)
        keep = (at >= 0).tolist()
        kept_at = at[at >= 0]
        kept_rows = list(itertools.compress(rows, keep))
        fresh = list(itertools.compress(rows, (not k for k in keep)))
        n_all = len(old.all_keys) + len(fresh)
        n_shards = len(old.shards) + -(-len(fresh) // SHARD_ROWS)
        compact = (n_all - len(rows) > COMPACT_MASKED * n_all
                   or n_shards > -(-len(rows) // SHARD_ROWS) + MAX_EXTRA_SHARDS)
    else:
        compact = True
    if compact:
        kept_at, kept_rows, fresh, table = np.zeros(0, np.int64), [], list(rows), []
    else:
        table = list(old.shards)
    _check_space(path, store.estimated_bytes([r.key for r in fresh], failed, classes, dim)
                 + 128 * (len(rows) + len(old.all_keys) if old else len(rows)))
    taken = [int(m.group(1)) for p in folder.iterdir() if (m := _NUMBER.fullmatch(p.name))]
    number = max(taken, default=0) + 1
    written: list[Path] = []
    tmp = path.with_name(f".{staging_stem(path.name)}.tmp{os.getpid()}")
    try:
        crc_new = []
        for start in range(0, len(fresh), SHARD_ROWS):
            name = f"shard-{number:05d}.h5"
            number += 1
            part = fresh[start:start + SHARD_ROWS]
            crc_new.append(_write_shard(folder / name, part, dim, fingerprint, written))
            table.append((name, len(part)))
        _fsync_dir(folder)
        if compact or old is None:
            columns = _columns([], [], kept_at, kept_rows, fresh)
            crc = np.concatenate(crc_new) if crc_new else np.zeros(0, np.uint32)
        else:
            columns = _columns(old.all_keys, old.all_hashes, kept_at, kept_rows, fresh)
            crc = np.concatenate([old.vector_crc32, *crc_new])
        store.write_through_sink(tmp, lambda sink: _write_index(sink, folder.name, table, crc, columns, classes,
                                                                 fingerprint, root, failed, dim, created_utc,
                                                                 labels_csv))
        os.replace(tmp, path)
    except BaseException as e:
        for p in (tmp, *written):
            with contextlib.suppress(OSError):
                p.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise CacheError(f"could not write cache {path}: {e.strerror or e}; {store.kept_note(path)}") from None
        raise
    try:  # the new index is in place and names the new shards: they stay whatever happens now
        _fsync_dir(path.parent)
    except OSError as e:
        raise CacheError(f"cache {path} was written, but its folder could not be synced to disk "
                         f"({e.strerror or e}): a power cut now could lose the new cache") from None
    # what the new index does not name: the old shards of a compaction (a reader that opened them keeps
    # them), shards of an unreadable index a --rebuild replaced
    remove_unreferenced(path, {name for name, _ in table})
    return {"new_shards": len(written), "new_rows": len(fresh), "masked": int((columns["mask"] == 1).sum()),
            "compacted": bool(compact and old is not None)}


def _kept(rows: list[Row], old, path: Path) -> np.ndarray:
    """For each row (sorted by key), the virtual row of the old cache it keeps where it is: its source is
    that cache, and the live row it names there has its key and hash (each virtual row kept once, by the
    first such row); -1 for a row whose vector goes into a new shard. Per-row work stays in C (map,
    numpy): ~1 s at 1M rows."""
    n, same = len(rows), os.path.abspath(path)
    sources = list(map(_SOURCE, rows))
    verdict = {id(s): os.path.abspath(s) == same for s in {id(s): s for s in sources}.values()}
    index = np.fromiter(map(_INDEX, rows), np.int64, n)
    ok = np.fromiter(map(verdict.__getitem__, map(id, sources)), bool, n) & (index >= 0) & (index < len(old.live))
    cand = np.flatnonzero(ok)
    virtual = old.live[index[cand]]
    same_row = ((_objects(map(_KEY, rows))[cand] == _objects(old.all_keys)[virtual])
                & (_objects(map(_HASH, rows))[cand] == _objects(old.all_hashes)[virtual]))
    cand, virtual = cand[same_row], virtual[same_row]
    _, first = np.unique(virtual, return_index=True)
    at = np.full(n, -1, np.int64)
    at[cand[first]] = virtual[first]
    return at


_SOURCE, _INDEX, _KEY, _HASH, _LABEL, _STAT = (operator.attrgetter(a) for a in ("source", "index", "key", "hash",
                                                                              "label", "stat"))


def _objects(values) -> np.ndarray:
    """A 1-d object array of the values (strings compare element-wise in C)."""
    values = list(values)
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _columns(all_keys: list[str], all_hashes: list[str], kept_at: np.ndarray, kept_rows: list[Row],
             fresh: list[Row]) -> dict:
    """Every column of the new index: the old virtual rows first (all_keys, all_hashes; those at kept_at
    live, with kept_rows' labels, stats and splits; the others masked: label -1, zero stats, no split),
    then the fresh rows."""
    n_old = len(all_keys)
    n = n_old + len(fresh)
    mask = np.zeros(n, np.uint8)
    mask[:n_old] = 1
    mask[kept_at] = 0
    labels = np.full(n, -1, np.int32)
    labels[kept_at] = np.fromiter(map(_LABEL, kept_rows), np.int32, len(kept_rows))
    labels[n_old:] = np.fromiter(map(_LABEL, fresh), np.int32, len(fresh))
    stats = np.zeros((n, 4), np.int64)
    stats[kept_at] = _stats(kept_rows)
    stats[n_old:] = _stats(fresh)
    splits = None
    if any(r.split for r in kept_rows) or any(r.split for r in fresh):
        if not {r.split for r in kept_rows} | {r.split for r in fresh} <= set(SPLITS):
            raise ValueError(f"every row of a cache with splits needs one of {SPLITS}")
        splits = [""] * n
        for a, r in zip(kept_at.tolist(), kept_rows):
            splits[a] = r.split
        splits[n_old:] = [r.split for r in fresh]
    return {"keys": list(all_keys) + [r.key for r in fresh], "hashes": list(all_hashes) + [r.hash for r in fresh],
            "labels": labels, "file_stats": stats, "splits": splits, "mask": mask}


def _stats(rows: list[Row]) -> np.ndarray:
    return np.fromiter(itertools.chain.from_iterable(map(_STAT, rows)), np.int64, 4 * len(rows)).reshape(-1, 4)


def _write_shard(shard: Path, rows: list[Row], dim: int, fingerprint: dict, written: list[Path]) -> np.ndarray:
    """One immutable shard file (temporary name, fsync, rename). Returns its block CRC-32s."""
    h5py = _h5py()
    tmp = shard.with_name(f".{shard.name}.tmp{os.getpid()}")
    written.append(tmp)
    n, crc = len(rows), []

    def fill(sink):
        with h5py.File(sink, "w", libver=("v108", "v108"), locking=False) as f:
            emb = f.create_dataset("embeddings", shape=(n, dim), dtype="float32",
                                   chunks=(min(n, VECTOR_BLOCK), dim), fletcher32=True)
            for start in range(0, n, store.BLOCK_ROWS):
                block = _gather(rows[start:start + store.BLOCK_ROWS], dim)
                emb[start:start + len(block)] = block
                crc.append(block_crc32(block))
                if sink.error is not None:
                    raise sink.error
            f.create_dataset("vector_crc32", data=np.concatenate(crc), dtype=np.uint32)
            f.attrs.update({"format": SHARD_FORMAT, "rows": n, "fingerprint_id": fingerprint["id"]})

    store.write_through_sink(tmp, fill)
    os.replace(tmp, shard)
    written[-1] = shard
    return np.concatenate(crc)


def _write_index(sink, folder_name: str, table: list[tuple[str, int]], crc: np.ndarray, columns: dict,
                 classes: list[str], fingerprint: dict, root: str, failed, dim: int, created_utc,
                 labels_csv: dict | None = None) -> None:
    h5py = _h5py()
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    str_t, ascii_t = h5py.string_dtype("utf-8"), h5py.string_dtype("ascii")
    n = len(columns["keys"])
    names, counts = [t[0] for t in table], [t[1] for t in table]
    attrs = store.cache_attrs(SHARDED_SCHEMA, fingerprint, root, created_utc or now, now, labels_csv)
    with h5py.File(sink, "w", libver=("v108", "v110"), locking=False) as f:
        if n:
            layout = h5py.VirtualLayout((n, dim), np.float32)
            start = 0
            for name, rows in table:
                layout[start:start + rows] = h5py.VirtualSource(f"{folder_name}/{name}", "embeddings",
                                                                shape=(rows, dim))
                start += rows
            f.create_virtual_dataset("embeddings", layout, fillvalue=np.nan)
        else:
            f.create_dataset("embeddings", shape=(0, dim), dtype="float32")
        f.create_dataset("keys", data=columns["keys"], dtype=str_t)
        f.create_dataset("labels", data=columns["labels"])
        _hash_column(f, columns["hashes"])
        f.create_dataset("file_stats", data=columns["file_stats"])
        f.create_dataset("classes", data=list(classes), dtype=str_t)
        if columns["splits"] is not None:
            f.create_dataset("splits", data=columns["splits"], dtype=str_t)
        f.create_dataset("mask", data=columns["mask"], dtype=np.uint8)
        f.create_dataset("shards", data=names, dtype=str_t)
        f.create_dataset("shard_rows", data=np.array(counts, dtype=np.int64))
        g = f.create_group("failed")
        g.create_dataset("keys", data=[k for k, _, _ in failed], dtype=str_t)
        g.create_dataset("reasons", data=[r for _, r, _ in failed], dtype=str_t)
        g.create_dataset("hashes", data=[h for _, _, h in failed], dtype=ascii_t)
        f.create_dataset("vector_crc32", data=crc, dtype=np.uint32)
        attrs["content_sha256"] = content_digest(attrs, (n, dim), columns["keys"], columns["labels"],
                                                 columns["hashes"], classes, failed, columns["file_stats"], crc,
                                                 columns["splits"], (names, counts, columns["mask"]))
        f.attrs.update(attrs)


def _hash_column(f, hashes: list[str]) -> None:
    """/hashes as fixed-length 64-byte ascii strings (written and read at once, where variable-length
    strings cost a second per million rows each way); variable-length where a hash is not 64 ascii
    characters (never in a cache embedflow wrote, whose hashes are sha256 hex; readers refuse it anyway)."""
    if set(map(len, hashes)) <= {64}:
        with contextlib.suppress(UnicodeEncodeError):
            f.create_dataset("hashes", data=np.array(hashes, dtype="S64"), dtype=_h5py().string_dtype("ascii", 64))
            return
    f.create_dataset("hashes", data=hashes, dtype=_h5py().string_dtype("ascii"))


__all__ = ["COMPACT_MASKED", "MAX_EXTRA_SHARDS", "SHARD_MIN_ROWS", "SHARD_ROWS", "is_sharded", "old_index",
           "remove_unreferenced", "write_cache",
           "shard_min_rows", "write"]
