"""The one batch mapper: decode a batch of files, skip the bad ones with their reasons, run a function
(the backbone) on the pixels of the good ones. The local engine runs it in threads; the Ray engine
(ray_engine) runs the same per-batch work in actors."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from ..data import BadImage, ImageRef, load_image
from ..errors import EmbedflowError


class BackboneFailure(EmbedflowError):
    """The backbone returned vectors that cannot be right (NaN/inf or of the wrong shape)."""


def checked(vectors: np.ndarray, n: int, dim: int) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape != (n, dim) or not np.isfinite(vectors).all():
        raise BackboneFailure(
            f"the backbone returned {'non-finite values' if vectors.shape == (n, dim) else f'shape {vectors.shape}'} "
            f"instead of {n} finite {dim}-d vectors; nothing of this batch was cached (try --runtime keras)"
        )
    return vectors


@dataclass
class BatchResult:
    ok: list[tuple[ImageRef, str]]  # (ref, hash) of the images embedded, in input order
    vectors: np.ndarray  # (len(ok), D)
    bad: list[tuple[ImageRef, str, str]]  # (ref, hash, reason)


def embed_stream(items: list[tuple[ImageRef, str]], embedder: Callable, size: int, dim: int, *,
                 batch_size: int, workers: int) -> Iterator[BatchResult]:
    """Decode and embed (ref, hash) items in order, `workers` batches at a time.

    Each worker thread decodes one batch (PIL releases the GIL) and then runs the embedder on it; the
    LiteRT embedder gives every thread its own single-threaded interpreter, so the cores are never
    oversubscribed and decoding overlaps inference. Look-ahead is bounded: memory stays flat.
    """

    def work(chunk: list[tuple[ImageRef, str]]) -> BatchResult:
        ok, pixels, bad = [], [], []
        for ref, h in chunk:
            try:
                pixels.append(load_image(ref.path, size))
                ok.append((ref, h))
            except BadImage as e:
                bad.append((ref, h, str(e)))
        vectors = checked(embedder(np.stack(pixels)), len(ok), dim) if ok else np.zeros((0, dim), np.float32)
        return BatchResult(ok, vectors, bad)

    chunks = (items[i:i + batch_size] for i in range(0, len(items), batch_size))
    with ThreadPoolExecutor(max(1, workers)) as pool:
        pending = []
        try:
            for chunk in chunks:
                pending.append(pool.submit(work, chunk))
                if len(pending) > workers:
                    yield pending.pop(0).result()
            while pending:
                yield pending.pop(0).result()
        finally:
            for fut in pending:
                fut.cancel()


RAY_BATCH = 16  # images per Ray task: larger than a local batch, so scheduling costs little


def preferred_batch(embedder) -> int:
    """The embedder's own batch size (small for LiteRT on a CPU, large for Keras), 16 for a custom one."""
    return getattr(embedder, "batch_size", 16)
