"""What a cache holds, as a typed result (`embedflow info`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ..errors import CacheDamaged, CacheError
from .journal import Journal
from .store import SHARD_NAME, SHARDED_SCHEMA, diagnose, load, read_meta, shard_folder


@dataclass
class CacheInfo:
    """A cache's attributes and contents, without its vectors. count (N) and dim (D) describe the float32
    (N, D) vector matrix; failed is the number of skipped files, listed in failed_files; size_bytes is the
    file's size (with its shard files' for a sharded cache); pending_journal_chunks counts vectors of an interrupted run not merged yet.
    `to_dict()` is the CLI's JSON; item access (`info["count"]`) reads that dict."""

    path: str
    fingerprint: dict
    root: str
    classes: list[str]
    count: int
    dim: int
    failed: int
    created_utc: str
    updated_utc: str
    embedflow_version: str
    schema_version: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    failed_files: list[dict] = field(default_factory=list)  # [{"key", "reason"}]
    size_bytes: int = 0
    pending_journal_chunks: int = 0
    unlabelled: int = 0  # images without a class (label -1: embed --unlabelled, a flat folder)
    split_counts: dict[str, int] = field(default_factory=dict)  # images per train/val/test folder, if any
    problems: list[dict] = field(default_factory=list)  # always [] here: a damaged cache raises CacheDamaged

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __getitem__(self, name: str):
        return self.to_dict()[name]


def cache_info(cache_path: str | os.PathLike) -> CacheInfo:
    """What the cache at cache_path holds. CacheError when it is missing (naming the journal an interrupted
    run left, if any) or unreadable; CacheDamaged when it is inconsistent or damaged, with every problem
    in its `problems` (store.diagnose: every column and every vector is checked, vectors in bounded
    blocks).

    Safe while a writer runs: it describes one complete snapshot (re-read if a new one was renamed in
    between its two reads)."""
    cache_path = Path(cache_path)
    journal = Journal(cache_path, "").chunks()
    if journal and not cache_path.exists():
        raise CacheError(f"no cache at {cache_path} yet: an interrupted run left {len(journal)} committed journal "
                         f"chunk(s) in {Journal(cache_path, '').dir}; run the same `embedflow embed` command again to finish")
    problems = diagnose(cache_path)
    if problems:
        raise CacheDamaged(cache_path, problems)
    for _ in range(5):
        before = cache_path.stat() if cache_path.exists() else None
        meta = read_meta(cache_path)
        held = load(cache_path, vectors=False)
        after = cache_path.stat()
        if before and (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns):
            break
    labelled = held.labels[held.labels >= 0]
    counts = np.bincount(labelled, minlength=len(held.classes)) if len(labelled) else np.zeros(len(held.classes), int)
    return CacheInfo(
        **{f.name: meta[f.name] for f in fields(CacheInfo) if f.name in meta},
        per_class={c: int(n) for c, n in zip(held.classes, counts)},
        failed_files=[{"key": k, "reason": r} for k, r, _ in held.failed],
        size_bytes=after.st_size + _shard_bytes(cache_path) if meta.get("schema_version", 0) >= SHARDED_SCHEMA
        else after.st_size, pending_journal_chunks=len(journal), unlabelled=int((held.labels < 0).sum()))


def _shard_bytes(cache_path: Path) -> int:
    """Bytes of a sharded cache's shard files."""
    folder = shard_folder(cache_path)
    try:
        return sum(p.stat().st_size for p in folder.iterdir() if SHARD_NAME.fullmatch(p.name))
    except OSError:
        return 0
