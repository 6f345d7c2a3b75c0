"""The one batch mapper: decode a batch of files, skip the bad ones with their reasons, run a function
(the backbone) on the pixels of the good ones. The local engine runs it in threads; the Ray engine
(ray_engine) runs the same per-batch work in actors."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Container, Iterator, Sequence

import numpy as np

from ..data import BadImage, ImageRef, decode_bytes, read_bytes, read_image
from ..errors import EmbedflowError


# The reason of a file whose bytes are no longer those hashed: it is skipped (never stored under the old
# hash, nor remembered as bad), and the next run hashes and embeds it.
CHANGED = "changed while the run was reading it; the next run embeds it"


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
    vectors: np.ndarray  # (len(ok), D) float32 vectors; the uint8 (len(ok), S, S, 3) pixels when fn is None
    bad: list[tuple[ImageRef, str, str]]  # (ref, hash, reason), in input order
    notes: list[tuple[ImageRef, str]] = field(default_factory=list)  # (ref, note): decoded, with a warning
    # (ref, hash) of items read without a hash whose content hash was in `known`: not decoded (see map_batch)
    known: list[tuple[ImageRef, str]] = field(default_factory=list)


def map_batch(items: Sequence[tuple[ImageRef, str]], size: int, fn: Callable | None = None, dim: int = 0,
              known: Container[str] = ()) -> BatchResult:
    """Decode each (ref, hash) item to (size, size, 3) uint8 pixels, skip the bad files with their reasons,
    and run `fn` once on the stacked pixels of the good ones.

    Each file is read once, and its pixels are decoded from the very bytes whose sha256 is checked against
    the item's hash: a file rewritten since it was hashed is a `bad` entry with reason CHANGED (a hash of
    "" or None accepts any content), so a vector is never returned under the hash of other content.
    An item read without a hash (an object whose change detector moved) gets the hash of the bytes read, in
    `ok`, in `bad` (the file's reason, remembered under that hash) or, when that hash is in `known` (content
    the caller already has a vector or a failure for), in `known`, without being decoded.

    fn: the backbone, uint8 (n, size, size, 3) -> (n, dim) vectors; None keeps the pixels themselves.
    dim: the width of fn's vectors, for the (0, dim) float32 result of a batch with no good file.
    A file decoded with a warning (an unreadable colour profile taken as sRGB) gives one `notes` entry, its
    notes joined by "; ".
    The vectors are returned as fn gives them (callers check them with `checked`). Raises only what fn
    raises: a file that cannot be decoded (data.BadImage) is a `bad` entry, never an error.
    """
    ok, pixels, bad, notes = [], [], [], []
    seen = []
    for ref, h in items:
        said: list[str] = []
        if not h:
            try:
                data = read_bytes(ref.path)
            except BadImage as e:
                bad.append((ref, h, str(e)))
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest in known:
                seen.append((ref, digest))
                continue
            try:
                arr = decode_bytes(data, size, notes=said)
            except BadImage as e:
                bad.append((ref, digest, str(e)))
                continue
        else:
            try:
                digest, arr = read_image(ref.path, size, notes=said)
            except BadImage as e:
                bad.append((ref, h, str(e)))
                continue
        if h and digest != h:
            bad.append((ref, h, CHANGED))
            continue
        pixels.append(arr)
        ok.append((ref, h or digest))
        if said:
            notes.append((ref, "; ".join(said)))
    stacked = np.stack(pixels) if pixels else np.zeros((0, size, size, 3), np.uint8)
    if fn is None:
        return BatchResult(ok, stacked, bad, notes, seen)
    return BatchResult(ok, fn(stacked) if ok else np.zeros((0, dim), np.float32), bad, notes, seen)


def embed_stream(items: list[tuple[ImageRef, str]], embedder: Callable, size: int, dim: int, *,
                 batch_size: int, workers: int, known: Container[str] = ()) -> Iterator[BatchResult]:
    """Decode and embed (ref, hash) items in order, `workers` batches at a time.

    Each worker thread decodes one batch (PIL releases the GIL) and then runs the embedder on it; the
    LiteRT embedder gives every thread its own single-threaded interpreter, so the cores are never
    oversubscribed and decoding overlaps inference. Look-ahead is bounded: memory stays flat.
    """

    def work(chunk: list[tuple[ImageRef, str]]) -> BatchResult:
        result = map_batch(chunk, size, embedder, dim, known)
        result.vectors = checked(result.vectors, len(result.ok), dim)
        return result

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
