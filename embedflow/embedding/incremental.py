"""Embedding a folder into the cache: incremental by content hash, streaming, resumable."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .. import backbones, cache
from ..data import BadImage, ImageRef, RemotePath, discover, file_stat, hash_file, source_id
from ..errors import DatasetError, Interrupted, StrictModeError, UsageError
from ..progress import SILENT, Reporter, as_reporter
from .mapper import CHANGED, RAY_BATCH, embed_stream, preferred_batch

# Journal commits at least this often while embedding (EMBEDFLOW_COMMIT_SECONDS overrides it, e.g. in crash tests).
COMMIT_SECONDS = float(os.environ.get("EMBEDFLOW_COMMIT_SECONDS") or 3.0)
COMMIT_ROWS = 1024


@dataclass
class EmbedSummary:
    cache_path: str
    total: int = 0  # images in the cache after the run
    embedded: int = 0  # computed by the backbone in this run
    kept: int = 0  # unchanged, kept from the cache
    reused: int = 0  # new key but content known to the cache (renamed or copied files)
    resumed: int = 0  # embedded by an interrupted run of this command, taken from its journal
    removed: int = 0  # in the cache before, gone from the folder now
    failed: list[tuple[str, str]] = field(default_factory=list)  # (key, reason), this run's skipped files
    classes: list[str] = field(default_factory=list)
    layout: str = "class-folders"  # class-folders | splits | unlabelled | csv (see embedflow.data.discover)
    unlabelled: int = 0  # images without a class in the cache (the unlabelled layout)
    split_counts: dict[str, int] = field(default_factory=dict)  # train/val/test images of a splits layout
    dropped: list[tuple[str, str, str]] = field(default_factory=list)  # (key, kind, reason) left out by discovery
    # (key, reason) of every file not embedded that was taken for a picture: failed (could not be decoded or
    # read) plus the files discovery left out (a format not supported, a name that differs from another only
    # by Unicode normalisation, an image outside a class folder or missing from the labels CSV, ...)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    labels_csv: str = ""  # the labels file of a csv layout (given, or recorded in the cache by an earlier run)
    seconds: float = 0.0
    conversion_seconds: float = 0.0  # of `seconds`: converting the backbone to LiteRT once (0 once it is kept)
    runtime: str = ""  # what embedded this run's images: litert, keras, ray (litert), ...; "none" when nothing was embedded
    fingerprint_id: str = ""
    precision: str = ""  # of the backbone: fp32 or int8

    def to_dict(self) -> dict:
        """The CLI's JSON (`embed --json`): every field; failed as [key, reason] pairs."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    as_dict = to_dict  # the name before results had to_dict()

    def __getitem__(self, name: str):
        return self.to_dict()[name]


NO_STAT = (0, 0, 0, 0)
REMOTE_INODE = -1  # data.remote.REMOTE_INODE


RACY_NS = 2_000_000_000  # a file modified this close to a run may change again within its mtime granularity


def hash_all(refs: list[ImageRef], workers: int, known: dict[str, tuple[tuple, str]] | None = None
             ) -> Iterator[tuple[ImageRef, str | None, tuple, str | None]]:
    """(ref, sha256, stat, None) or (ref, None, NO_STAT, reason) for each file, in order, hashed in threads.

    `known` maps a key to the (stat, sha256) recorded when it was last hashed; a file whose stat
    (size, mtime_ns, ctime_ns, inode) is unchanged keeps that hash without being read again, as git does.
    An object (RemotePath) is never read here: its listed change detector (data.remote.detector) keeps the
    recorded hash, or its hash is "" (unknown: the one read that decodes it will hash it).
    """
    known = known or {}

    def one(ref: ImageRef):
        if isinstance(ref.path, RemotePath):
            st, recorded = ref.path.stat, known.get(ref.key)
            return ref, recorded[1] if recorded and st != NO_STAT and recorded[0] == st else "", st, None
        try:
            st = file_stat(ref.path)  # never NO_STAT: an unknown recorded stat matches no file
            recorded = known.get(ref.key)
            if recorded and recorded[0] == st:
                return ref, recorded[1], st, None
            return ref, hash_file(ref.path), st, None
        except BadImage as e:
            return ref, None, NO_STAT, str(e)

    def chunk(start: int):  # files are small: hand them out in chunks, not one future each
        return [one(ref) for ref in refs[start:start + 64]]

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for results in pool.map(chunk, range(0, len(refs), 64)):
            yield from results


def trusted_stat(st: tuple, started_ns: int) -> tuple:
    """The stat to record with a hash: unknown (re-hash next time) when the file was modified so close to
    this run that a further change could keep the same mtime ("racily clean" in git's words). An object's
    detector (inode column REMOTE_INODE) is kept as it is: it is no time."""
    if st[3] == REMOTE_INODE:
        return st
    return st if st[1] < started_ns - RACY_NS else NO_STAT


def embed_folder(
    root: str | os.PathLike,
    cache_path: str | os.PathLike = "cache/embeddings.h5",
    *,
    spec: backbones.BackboneSpec | None = None,
    rebuild: bool = False,
    runtime: str = "auto",
    batch_size: int | None = None,
    workers: int | None = None,
    reporter: Reporter | str | None = SILENT,
    embedder_factory: Callable | None = None,
    engine: str = "local",
    address: str | None = None,
    rehash: bool = False,
    labels: str | os.PathLike | None = None,
    unlabelled: bool | None = None,
    strict: bool = False,
    require_labels: bool = False,
) -> EmbedSummary:
    """Embed every image of a dataset folder into the cache at cache_path.

    The folder's layout is found by embedflow.data.discover: one subfolder per class; train/ val/ test/
    parents of the same class folders (each image's split is recorded in the cache's /splits); labels from
    a CSV (`labels`: path,label rows, paths relative to root); or unlabelled images (`unlabelled=True`, or
    a folder with images and no class folder), stored with label -1 and no classes. strict=True raises
    StrictModeError (exit 7) before any work when discovery left out an image-like file, a class or a
    folder (summary.dropped otherwise lists them); require_labels=True raises DatasetError for an
    unlabelled folder (evaluate).

    engine "local" embeds in this process; "ray" sends the images to embed to a Ray cluster
    (`address`, default: a new local one) and merges what comes back into the same cache.

    root may be an fsspec URL (s3://bucket/prefix/, ...; see data.remote): its objects are listed once,
    an object whose listed change detector (ETag + size on S3) is the recorded one keeps its hash unread,
    any other is read once by whoever embeds it (a Ray worker with engine "ray": the driver reads none),
    and the sha256 of those bytes is its identity.

    Only new or changed files (by sha256 of their bytes) are embedded; deleted ones are dropped;
    bad files are skipped with a reason. A file whose size, mtime, ctime and inode are those recorded
    when it was hashed is not read again (rehash=True reads every file). Raises FingerprintMismatch when the cache was made with
    another backbone/weights/size (pass rebuild=True to replace it).
    """
    t0, started_ns = time.perf_counter(), time.time_ns()
    reporter = as_reporter(reporter)
    spec = spec or backbones.get_spec()
    backbones.check_runtime(spec, runtime)  # before the lock file and the cache folder are made
    cache_path = Path(cache_path)
    workers = workers or max(2, os.cpu_count() or 2)
    read_early = None  # the old cache, read for its recorded labels: reused under the lock while unchanged
    if labels is None and unlabelled is None and not rebuild:
        labels, read_early = _recorded_labels(cache_path, reporter)
    found = discover(root, labels_csv=labels, unlabelled=unlabelled)
    labels_source = None
    if labels is not None:
        labels_source = {"path": os.path.abspath(labels), "sha256": hash_file(Path(labels))}
    if require_labels and found.layout == "unlabelled":
        raise DatasetError(f"{root} holds no class folders (its images are unlabelled): this needs one subfolder "
                           "per class, or labels from a CSV")
    for note in found.notes:
        reporter.warn(note)
    if strict and found.dropped:
        d = found.dropped[0]
        raise StrictModeError(f"{len(found.dropped)} file(s), class(es) or folder(s) left out of {root} and --strict "
                              f"is set (e.g. {d.key}: {d.reason})")
    images, classes = found.refs, found.classes
    fp = backbones.fingerprint(spec)
    summary = EmbedSummary(str(cache_path), classes=classes, fingerprint_id=fp["id"], precision=spec.precision,
                           layout=found.layout,
                           dropped=[(d.key, d.kind, d.reason) for d in found.dropped],
                           labels_csv=str(labels) if labels is not None else "")
    class_index: dict[str | None, int] = {c: i for i, c in enumerate(classes)}
    class_index[None] = -1  # an unlabelled image
    split_of = found.split_of

    with cache.CacheLock(cache_path, reporter) as lock:
        old = None  # the old cache's columns, read (and checked) once per run: the writer reuses its index
        old_by_key: dict[str, tuple[str, int]] = {}  # key -> (hash, row)
        old_by_hash: dict[str, int] = {}
        old_failed: dict[str, tuple[str, str]] = {}  # key -> (hash, reason)
        known: dict[str, tuple[tuple, str]] = {}  # key -> (stat, hash) recorded when last hashed
        created = None
        sharded = False  # the old cache is sharded: a write adds shards for new rows only
        unchanged_if: tuple | None = None  # what the new cache must equal for the write to be skipped
        if cache_path.exists() and not rebuild:
            old = read_early if read_early is not None and read_early.unchanged() else cache.load(
                cache_path, vectors=False)  # memory stays flat however large the cache
            read_early = None
            backbones.check_compatible(old.fingerprint, fp, f"cache {cache_path}",
                                       "pass --rebuild to replace it, or --cache to write another file")
            old_by_key = {k: (h, i) for i, (k, h) in enumerate(zip(old.keys, old.hashes))}
            old_by_hash = {h: i for i, h in enumerate(old.hashes)}
            old_failed = {k: (h, r) for k, r, h in old.failed if h}
            if old.file_stats is not None:
                known = {k: (tuple(st), h) for k, h, st in zip(old.keys, old.hashes, old.file_stats.tolist())}
            created, sharded = old.created_utc, old.schema_version >= cache.SHARDED_SCHEMA
            if sharded:  # a missing or unopenable shard: refused now, not "kept" and referenced by a new index
                cache.check_shards(cache_path)
            if old.root and source_id(root) != old.root:
                _check_same_images(old, images, root, cache_path)
                reporter.info(f"cache {cache_path} held {old.root}; it now follows {source_id(root)}")
            old_tags = list(zip(old.keys, cache.label_names(old.labels, old.classes), old.splits or [""] * len(old)))
            unchanged_if = (old.classes, sorted(old.failed), old.root, len(old.keys), old.file_stats is not None,
                            old_tags, old.labels_csv)
        journal = cache.Journal(cache_path, fp["id"], spec.precision)  # opened for writing by its first append only
        if foreign := journal.foreign_chunks():
            reporter.warn(f"{journal.dir} holds {foreign} chunk(s) of an interrupted run of another "
                          f"backbone or precision ({journal.recorded_precision() or 'not recorded'}): this run cannot "
                          "use them and replaces them")
        journaled = journal.vectors_by_hash()

        rows: list[cache.Row] = []
        failed: list[tuple[str, str, str]] = []
        todo: list[tuple[ImageRef, str]] = []
        stats: dict[str, tuple] = {}  # key -> stat to record
        restat = 0  # kept files whose recorded stat changed (a racily-clean unknown one waits for the next write)
        for ref, h, st, reason in hash_all(images, workers, None if rehash else known):
            label = class_index[ref.label]
            stats[ref.key] = trusted_stat(st, started_ns)
            if h is None:
                failed.append((ref.key, reason, ""))
                reporter.warn(f"skipped {ref.key}: {reason}")
            elif h == "":  # an object not read yet: the one read that decodes it hashes it (see _resolve)
                todo.append((ref, h))
            elif ref.key in old_by_key and old_by_key[ref.key][0] == h:
                rows.append(cache.Row(ref.key, h, label, cache_path, old_by_key[ref.key][1]))
                summary.kept += 1
                recorded = known.get(ref.key, (NO_STAT,))[0]
                restat += recorded != NO_STAT and recorded != stats[ref.key]  # e.g. touched: record the new stat
            elif h in old_by_hash:
                rows.append(cache.Row(ref.key, h, label, cache_path, old_by_hash[h]))
                summary.reused += 1
            elif h in journaled:
                src, i = journaled[h]
                rows.append(cache.Row(ref.key, h, label, src, i))
                summary.resumed += 1
            elif ref.key in old_failed and old_failed[ref.key][0] == h:
                failed.append((ref.key, old_failed[ref.key][1], h))
            else:
                todo.append((ref, h))
        current = {r.key for r in images}
        summary.removed = sum(1 for k in old_by_key if k not in current)
        tags = sorted((r.key, classes[r.label] if r.label >= 0 else None, split_of.get(r.key, "")) for r in rows)
        must_write = bool(todo) or restat or len(rows) != summary.kept or (
            classes, sorted(failed), source_id(root), summary.kept, True, tags, labels_source) != unchanged_if
        if must_write:  # refuse before the work, not after it
            lock.require_writable(f"{len(todo)} file(s) must be embedded" if todo else "it must be updated")
            journal_bytes = len(todo) * (spec.output_dim * 4 + 200)
            fresh = [ref.key for ref, _ in todo] + [r.key for r in rows if r.source != cache_path
                                                    or old_by_key.get(r.key, ("", -1))[1] != r.index]
            cache.check_space(cache_path, journal_bytes + cache.estimated_write_bytes(
                sharded, [r.key for r in rows] + [ref.key for ref, _ in todo], fresh, failed, classes,
                spec.output_dim))

        if todo:
            # Content this run need not embed again, for objects hashed by the read that decodes them.
            have: dict[str, tuple] = {h: ("failed", r) for h, r in old_failed.values()}
            have.update({h: ("row", cache_path, i) for h, i in old_by_hash.items()})
            have.update({h: ("resumed", src, i) for h, (src, i) in journaled.items()})
            stream_for = _stream_factory(spec, fp, engine, runtime, batch_size, workers, address, reporter,
                                         embedder_factory, summary, have if any(not h for _, h in todo) else {})
            pending_rows, counts = _embed_into_journal(todo, stream_for, journal, reporter, class_index, failed,
                                                       have, {k: h for k, (h, _) in old_by_key.items()})
            summary.embedded, summary.reused = counts["embedded"], summary.reused + counts["reused"]
            summary.kept, summary.resumed = summary.kept + counts["kept"], summary.resumed + counts["resumed"]
            rows.extend(pending_rows)
        summary.runtime = summary.runtime or "none"
        summary.failed = [(key, reason) for key, reason, _ in failed]
        summary.skipped = summary.failed + [(d.key, d.reason) for d in found.dropped if d.kind == "file"]
        for row in rows:
            row.stat = stats.get(row.key, NO_STAT)
            row.split = split_of.get(row.key, "")
        if must_write:
            cache.write(cache_path, rows, classes, fp, source_id(root), failed, spec.output_dim, created,
                        labels_source, read=old)
        if lock.writable:
            journal.clear()

    summary.total = len(rows)
    summary.unlabelled = sum(1 for r in rows if r.label < 0)
    for split in ("train", "val", "test"):
        n = sum(1 for r in rows if r.split == split)
        if n:
            summary.split_counts[split] = n
    summary.seconds = time.perf_counter() - t0
    return summary


def _check_same_images(old: cache.CacheData, images, root, cache_path: Path) -> None:
    """Before a cache made from another folder follows `root`: UsageError (exit 2) when the images found
    keep at most half of its keys (a mistyped folder, another dataset) and the run would remove the rest.
    A dataset folder moved or renamed (its keys kept) goes on; --rebuild or another --cache says what is meant."""
    if not len(old.keys):
        return
    found = {ref.key for ref in images}
    kept = sum(1 for key in old.keys if key in found)
    if kept * 2 <= len(old.keys):
        raise UsageError(f"cache {cache_path} holds {len(old.keys)} images of {old.root}; {source_id(root)} has "
                         f"{kept} of them, so embedding it there would remove {len(old.keys) - kept}: use --cache to "
                         "write another file, or --rebuild to replace that cache")


def _recorded_labels(cache_path: Path, reporter: Reporter) -> tuple[Path | None, cache.CacheData | None]:
    """The labels file an existing cache was labelled from (embed --labels), for a rerun that names none:
    kept, with a warning saying so; None when the cache has none (or cannot be read: loading it later says
    why). With it, the cache's columns as read here (cache.load without vectors), or None. Raises
    DatasetError when the recorded file is gone."""
    if not cache_path.exists():
        return None, None
    try:
        held = cache.load(cache_path, vectors=False)
    except cache.CacheError:
        return None, None
    if not held.labels_csv:
        return None, held
    path = Path(held.labels_csv["path"])
    if not path.is_file():
        raise DatasetError(f"cache {cache_path} holds the labels of {path} (embed --labels), which is gone: give "
                           "--labels FILE again, or --unlabelled, or --rebuild to start over from the folder's layout")
    reporter.warn(f"labels from {path}, as recorded in {cache_path} by an earlier `embed --labels` (--labels FILE "
                  "takes another file, --unlabelled drops the labels, --rebuild starts over)")
    return path, held


def _stream_factory(spec, fp, engine, runtime, batch_size, workers, address, reporter, embedder_factory, summary,
                    known=()):
    """A function (ref, hash) items -> iterator of BatchResult, for the chosen engine. Items of hash "" whose
    content hash is in known come back in BatchResult.known, not embedded."""
    if engine == "ray":
        from .ray_engine import ray_stream

        summary.runtime = f"ray ({'litert' if runtime == 'auto' else runtime})"
        return lambda items: ray_stream(items, spec, fp, address=address, workers=workers,
                                        batch_size=batch_size or RAY_BATCH, runtime=runtime, known=known)
    if engine != "local":
        raise UsageError(f"unknown engine '{engine}': use local or ray")

    def local(items):
        embedder = (embedder_factory or backbones.make_embedder)(spec, fp, runtime=runtime, reporter=reporter)
        summary.runtime = getattr(embedder, "runtime", "custom")
        summary.conversion_seconds = getattr(embedder, "conversion_seconds", 0.0)
        return embed_stream(items, embedder, spec.image_size, spec.output_dim,
                            batch_size=batch_size or preferred_batch(embedder), workers=workers, known=known)

    return local


def _embed_into_journal(todo, stream_for, journal, reporter, class_index, failed, have=None, old_hash_of=None
                        ) -> tuple[list[cache.Row], dict[str, int]]:
    """Embed the todo list, committing to the journal every few seconds. Returns the rows to write and how
    many were embedded, kept, reused or resumed (items of hash "", objects hashed by the read that decodes
    them, can turn out to hold content `have` knows: hash -> ("row", source, index) for the cache's rows,
    ("resumed", chunk, index) for the journal's, or ("failed", reason))."""
    have, old_hash_of = have or {}, old_hash_of or {}
    done: dict[str, np.ndarray] = {}  # hash -> vector, not yet committed
    reason_for: dict[str, str] = {}  # hash -> why the file decoded for it was skipped
    committed: dict[str, tuple[Path, int]] = {}
    hash_of: dict[int, str] = {}  # id(ref) -> content hash, for the items of hash ""
    keys_for: list[tuple[ImageRef, str]] = []
    last_commit = time.monotonic()

    def commit():
        nonlocal last_commit
        if done:
            hashes = list(done)
            chunk = journal.append(hashes, np.stack([done[h] for h in hashes]))
            committed.update({h: (chunk, i) for i, h in enumerate(hashes)})
            done.clear()
        last_commit = time.monotonic()

    def on_bad(ref, h, reason):
        if h:
            hash_of[id(ref)] = h
        failed.append((ref.key, reason, "" if reason == CHANGED else h))  # "": not remembered, retried next run
        if h:
            reason_for[h] = reason
        reporter.warn(f"skipped {ref.key}: {reason}")
        reporter.advance(1)

    reporter.start("embedding", len(todo))
    try:
        unique, seen = [], set()
        for ref, h in todo:
            keys_for.append((ref, h))
            if not h:
                unique.append((ref, h))
            elif h not in seen:
                seen.add(h)
                unique.append((ref, h))
        for batch in stream_for(unique):
            for ref, h, reason in batch.bad:
                on_bad(ref, h, reason)
            for ref, note in batch.notes:
                reporter.warn(f"{ref.key}: {note}")
            for (ref, h), v in zip(batch.ok, batch.vectors):
                done[h] = v
                hash_of[id(ref)] = h
            for ref, h in batch.known:
                hash_of[id(ref)] = h
            reporter.advance(len(batch.ok) + len(batch.known))
            if len(done) >= COMMIT_ROWS or time.monotonic() - last_commit >= COMMIT_SECONDS:
                commit()
        commit()
    except KeyboardInterrupt:
        commit()
        if not committed:
            raise Interrupted("interrupted before any new vector was embedded: nothing was kept; run the same "
                              "command again to start it") from None
        raise Interrupted(
            f"interrupted: {len(committed)} new vectors are kept in {journal.dir}; "
            "run the same command again to resume"
        ) from None
    finally:
        reporter.finish()
    # Files sharing content were decoded once: give each its row, or its copy of the failure.
    failed_keys = {key for key, _, _ in failed}
    rows, counts = [], {"embedded": 0, "kept": 0, "reused": 0, "resumed": 0}
    for ref, h in keys_for:
        h = h or hash_of.get(id(ref), "")
        if h in committed:
            src, i = committed[h]
            rows.append(cache.Row(ref.key, h, class_index[ref.label], src, i))
            counts["embedded"] += 1
        elif ref.key in failed_keys:
            continue
        elif h in reason_for:
            failed.append((ref.key, reason_for[h], "" if reason_for[h] == CHANGED else h))
        elif h in have and have[h][0] in ("row", "resumed"):
            rows.append(cache.Row(ref.key, h, class_index[ref.label], have[h][1], have[h][2]))
            counts["resumed" if have[h][0] == "resumed" else "kept" if old_hash_of.get(ref.key) == h else "reused"] += 1
        elif h in have:
            failed.append((ref.key, have[h][1], h))
    return rows, counts
