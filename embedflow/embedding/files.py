"""Vectors for loose files (predict, neighbors, evaluate queries), in memory: the cache is not written."""

from __future__ import annotations

import os
from typing import Callable

import numpy as np

from .. import backbones
from ..data import ImageRef
from ..progress import SILENT, Reporter
from .incremental import hash_all
from .mapper import embed_stream, preferred_batch


def embed_files(refs: list[ImageRef], spec: backbones.BackboneSpec, fp: dict, *, runtime: str = "auto",
                known_from: Callable[[set[str]], dict] | None = None, batch_size: int | None = None, workers: int | None = None,
                reporter: Reporter = SILENT, embedder_factory: Callable | None = None):
    """Vectors for loose files, in memory (the cache is not written). Vectors whose content hash is in
    `known_from(hashes)` (e.g. a cache lookup) are taken from there. Returns (ok refs, their vectors (N, D), failures [(ref, reason)])."""
    workers = workers or max(2, os.cpu_count() or 2)
    vectors: dict[int, np.ndarray] = {}
    failures: list[tuple[ImageRef, str]] = []
    hashed = []
    for i, (ref, h, _, reason) in enumerate(hash_all(refs, workers)):
        if h is None:
            failures.append((ref, reason))
        else:
            hashed.append((i, ref, h))
    known = known_from({h for _, _, h in hashed}) if known_from else {}
    todo: list[tuple[ImageRef, str]] = []
    for i, ref, h in hashed:
        if h in known:
            vectors[i] = known[h]
        else:
            todo.append((ref, h))
    if todo:
        position = {id(ref): i for i, ref in enumerate(refs)}
        embedder = (embedder_factory or backbones.make_embedder)(spec, fp, runtime=runtime, reporter=reporter)
        reporter.start("embedding", len(todo))
        try:
            for batch in embed_stream(todo, embedder, spec.image_size, spec.output_dim,
                                      batch_size=batch_size or preferred_batch(embedder), workers=workers):
                failures.extend((ref, reason) for ref, _, reason in batch.bad)
                for (ref, _), v in zip(batch.ok, batch.vectors):
                    vectors[position[id(ref)]] = v
                reporter.advance(len(batch.ok) + len(batch.bad))
        finally:
            reporter.finish()
    order = sorted(vectors)
    matrix = np.stack([vectors[i] for i in order]) if order else np.zeros((0, spec.output_dim), np.float32)
    return [refs[i] for i in order], matrix, failures
