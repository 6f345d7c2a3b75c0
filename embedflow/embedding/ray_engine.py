"""Embedding on a Ray cluster: the batch-inference pattern of Ray Data (map_batches over a pool of
actors that each hold the backbone). Only the embedding is distributed; the driver keeps doing what a
local run does (hashing, the incremental plan, the journal, the final cache), so the cache is the same.

Each batch that comes back is committed to the cache's journal (`<cache>.journal/`, one shard per
commit) exactly like a local run; the driver merges the shards into the HDF5 cache at the end. A worker
that dies is restarted and its batch retried by Ray; an interrupted driver resumes from the shards.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

import numpy as np

from .. import backbones
from ..data import ImageRef, source_path
from ..errors import UsageError
from .mapper import BatchResult, checked, map_batch

# Environment that workers need to find weights and converted backbones the way the driver does.
# Where objects are (an S3-compatible endpoint, a region) travels too; credentials never do: each node finds
# its own in its environment or config (an instance role, ~/.aws), as the filesystem's docs describe.
FORWARDED_ENV = ("KERAS_HOME", "EMBEDFLOW_HOME", "TFHUB_CACHE_DIR", "TF_CPP_MIN_LOG_LEVEL", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")


class EmbedActor:
    """Ray Data actor: reads and decodes a batch of paths (or object URLs: read here, on the worker, never
    through the driver) and embeds it with its own LiteRT interpreter."""

    known: frozenset = frozenset()  # content hashes not to embed again (see map_batch)

    def __init__(self, spec: backbones.BackboneSpec, fp: dict, runtime: str, threads: int, known=frozenset()):
        self.spec = spec
        self.known = known
        self.embedder = backbones.make_embedder(spec, fp, runtime=runtime, threads=threads)

    def __call__(self, batch: dict) -> dict:
        """One row per input path: its id, its hash (that of the bytes read when it came without one), "" or
        the reason it was skipped, "" or the note of a file decoded with a warning, whether its content was
        in `known` (not embedded), its vector (zeros if skipped or known)."""
        items = [(ImageRef(str(path), source_path(str(path)), None), str(h)) for path, h in zip(batch["path"], batch["hash"])]
        result = map_batch(items, self.spec.image_size, self.embedder, self.spec.output_dim, self.known)
        digest = {id(ref): h for ref, h in result.ok + result.known}
        digest.update({id(ref): h for ref, h, _ in result.bad})
        reasons = {id(ref): reason for ref, _, reason in result.bad}
        seen = {id(ref) for ref, _ in result.known}
        good = np.array([id(ref) not in reasons and id(ref) not in seen for ref, _ in items], dtype=bool)
        vectors = np.zeros((len(items), self.spec.output_dim), np.float32)
        vectors[good] = result.vectors
        errors = np.array([reasons.get(id(ref), "") for ref, _ in items], dtype=object)
        said = {id(ref): note for ref, note in result.notes}
        notes = np.array([said.get(id(ref), "") for ref, _ in items], dtype=object)
        hashes = np.array([digest.get(id(ref), h) or "" for ref, h in items], dtype=object)
        known = np.array([id(ref) in seen for ref, _ in items], dtype=bool)
        return {"id": batch.get("id", np.arange(len(items))), "hash": hashes, "error": errors, "note": notes, "known": known, "vector": vectors}


def _connect(address: str | None, workers: int):
    try:
        import ray
    except ImportError:
        raise UsageError('--engine ray needs Ray: pip install "embedflow[ray]"') from None
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    started_here = not ray.is_initialized()
    if started_here:
        kwargs = dict(runtime_env={"env_vars": env}, include_dashboard=False, log_to_driver=False,
                      configure_logging=False)
        if address:
            kwargs["address"] = address
        else:  # a local cluster of this machine's cores
            kwargs["num_cpus"] = max(workers, os.cpu_count() or 1)
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UsageError(f"cannot reach the Ray cluster at {address or 'a new local cluster'}: {e}") from None
    ray.data.DataContext.get_current().enable_progress_bars = False
    return ray, started_here


def ray_stream(items: list[tuple[ImageRef, str]], spec: backbones.BackboneSpec, fp: dict, *,
               address: str | None = None, workers: int = 2, batch_size: int = 16,
               runtime: str = "litert", threads_per_worker: int = 1, known=()) -> Iterator:
    """BatchResults (see embed.embed_stream) computed by `workers` Ray actors, in completion order. The
    driver sends paths or object URLs, never bytes; items of hash "" whose content hash is in known come
    back in BatchResult.known."""
    if runtime == "litert" or runtime == "auto":
        runtime = "litert"
        backbones.tflite_backbone_path(spec, fp)  # convert once here, so local workers only load it
    # Ray's driver prints cluster errors (a worker that died, ...) to sys.stdout, which belongs to the command's
    # own output (`embed --json` is one JSON document): send them to stderr while Ray runs.
    with contextlib.redirect_stdout(sys.stderr):
        yield from _ray_batches(items, spec, fp, address, workers, batch_size, runtime, threads_per_worker,
                                frozenset(known))


def _ray_batches(items, spec, fp, address, workers, batch_size, runtime, threads_per_worker, known) -> Iterator:
    ray, started_here = _connect(address, workers)
    refs: list[ImageRef] = []
    sent: list[dict] = []
    seen: set[str] = set()
    for ref, h in items:
        if not h or h not in seen:
            seen.add(h)
            sent.append({"id": len(refs), "path": str(ref.path), "hash": h})
            refs.append(ref)
    try:
        blocks = max(1, min(len(sent) // batch_size, 64 * workers))
        ds = ray.data.from_items(sent, override_num_blocks=blocks)
        ds = ds.map_batches(EmbedActor, fn_constructor_args=(spec, fp, runtime, threads_per_worker, known),
                            batch_size=batch_size, batch_format="numpy", concurrency=min(workers, blocks),
                            num_cpus=threads_per_worker, max_restarts=3, max_task_retries=3)
        for out in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
            ok, vectors, bad, notes, seen_known = [], [], [], [], []
            for i, h, err, note, was_known, v in zip(out["id"], out["hash"], out["error"], out["note"], out["known"],
                                                     out["vector"]):
                ref = refs[int(i)]
                if note:
                    notes.append((ref, str(note)))
                if err:
                    bad.append((ref, str(h), str(err)))
                elif was_known:
                    seen_known.append((ref, str(h)))
                else:
                    ok.append((ref, str(h)))
                    vectors.append(v)
            vecs = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, spec.output_dim), np.float32)
            yield BatchResult(ok, checked(vecs, len(ok), spec.output_dim), bad, notes, seen_known)
    except Exception as e:
        if _caused_by_interrupt(e):  # Ray Data may wrap a Ctrl-C that arrived in one of its threads
            raise KeyboardInterrupt from None
        raise
    finally:
        if started_here:
            ray.shutdown()


def _caused_by_interrupt(e: BaseException | None) -> bool:
    """Whether a KeyboardInterrupt is in e's chain of causes and contexts (a wrapped Ctrl-C)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False
