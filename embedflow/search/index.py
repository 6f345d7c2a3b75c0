"""The approximate faiss index kept beside a large cache (`<cache>.faiss` and its JSON sidecar),
rebuilt when the cache changes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .. import cache
from ..errors import CacheError, UsageError
from ..fsio import sibling, staging_stem
from ..progress import SILENT, Reporter
from .exact import SEARCH_ROWS, Hits, _best_k, normalise

INDEX_MIN_ROWS = 50_000  # method="auto" uses the approximate index from this many vectors on
INDEX_SUFFIX = ".faiss"
INDEX_FORMAT = "embedflow.index"
INDEX_VERSION = 2  # 2: the sidecar records the index file's sha256
NPROBE_FRACTION = 1 / 16  # inverted lists scanned per query (see benchmarks/neighbors.py)
MAX_NLIST = 4096


def faiss_module():
    try:
        import faiss
    except ImportError:
        raise UsageError("the approximate index needs faiss-cpu: pip install 'embedflow[index]' (or use --exact)") from None
    return faiss


def index_paths(cache_path: str | os.PathLike) -> tuple[Path, Path]:
    """The index file and its JSON sidecar, beside the cache."""
    return sibling(cache_path, INDEX_SUFFIX), sibling(cache_path, INDEX_SUFFIX + ".json")  # within NAME_MAX


def cache_digest(columns: cache.CacheColumns) -> str:
    """Determines the index content: the fingerprint (how vectors are made) and the row order of contents."""
    h = hashlib.sha256(columns.fingerprint["id"].encode())
    for content in columns.hashes:
        h.update(content.encode())
    return h.hexdigest()


def _sidecar_for(columns: cache.CacheColumns) -> dict:
    return {"format": INDEX_FORMAT, "version": INDEX_VERSION, "fingerprint_id": columns.fingerprint["id"],
            "cache_digest": cache_digest(columns), "count": len(columns), "dim": columns.dim,
            "cache_updated_utc": columns.updated_utc}


def _recorded(cache_path) -> dict:
    try:
        recorded = json.loads(index_paths(cache_path)[1].read_text())
    except (OSError, ValueError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


def index_is_current(cache_path, columns: cache.CacheColumns) -> bool:
    """The sidecar describes this cache's content and an index file of the recorded size (its sha256 is
    checked when it is read, by load_index)."""
    index_file = index_paths(cache_path)[0]
    recorded, want = _recorded(cache_path), _sidecar_for(columns)
    same = all(recorded.get(k) == want[k] for k in ("format", "version", "fingerprint_id", "cache_digest", "count"))
    return same and index_file.is_file() and index_file.stat().st_size == recorded.get("index_bytes")


def build_index(cache_path, columns: cache.CacheColumns, reporter: Reporter = SILENT):
    """An IVF-flat inner-product index of the normalised cache vectors, written beside the cache
    (index file first, then its sidecar, each by atomic rename)."""
    faiss = faiss_module()
    n, dim = len(columns), columns.dim
    nlist = int(min(MAX_NLIST, max(1, round(np.sqrt(n)))))
    reporter.info(f"building the approximate index of {n} vectors ({nlist} lists); it is kept beside the cache")
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter, index.cp.min_points_per_centroid = 10, 1  # 10 k-means rounds; small caches do not warn
    index.train(_training_sample(cache_path, n, nlist))
    reporter.start("indexing", n)
    try:
        for start, block in cache.iter_vector_blocks(cache_path, SEARCH_ROWS):
            index.add(normalise(block))
            reporter.advance(len(block))
    finally:
        reporter.finish()
    index_file, sidecar_file = index_paths(cache_path)
    tmp = index_file.with_name(f".{staging_stem(index_file.name)}.tmp{os.getpid()}")
    tmp_side = sidecar_file.with_name(f".{staging_stem(sidecar_file.name)}.tmp{os.getpid()}")
    try:
        data = faiss.serialize_index(index).tobytes()
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        sidecar = {**_sidecar_for(columns), "kind": "faiss IndexIVFFlat inner product", "nlist": nlist,
                   "index_bytes": len(data), "index_sha256": hashlib.sha256(data).hexdigest()}
        os.replace(tmp, index_file)
        tmp_side.write_text(json.dumps(sidecar, indent=2))
        os.replace(tmp_side, sidecar_file)
    except OSError as e:
        for t in (tmp, tmp_side):
            t.unlink(missing_ok=True)
        raise CacheError(f"could not write the index {index_file}: {e.strerror or e}") from None
    return index


def _training_sample(cache_path, n: int, nlist: int) -> np.ndarray:
    """Evenly spread rows for k-means (64 per list, at least 10,000)."""
    size = min(n, max(64 * nlist, 10_000))
    rows = np.unique(np.linspace(0, n - 1, size).astype(np.int64))
    return normalise(cache.read_vectors(cache_path, rows))


def load_index(cache_path, columns: cache.CacheColumns, reporter: Reporter = SILENT):
    """The cache's index, rebuilt first when the cache changed since it was built (or it is missing)."""
    faiss = faiss_module()
    if not index_is_current(cache_path, columns):
        return build_index(cache_path, columns, reporter)
    index_file = index_paths(cache_path)[0]
    try:
        data = index_file.read_bytes()
    except OSError:
        return build_index(cache_path, columns, reporter)
    if hashlib.sha256(data).hexdigest() != _recorded(cache_path).get("index_sha256"):
        reporter.warn(f"the index {index_file} does not match the sha256 recorded in its sidecar: rebuilding it")
        return build_index(cache_path, columns, reporter)
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except Exception:  # recorded sha256 but unreadable: written by another faiss, say
        return build_index(cache_path, columns, reporter)
    if index.ntotal != len(columns) or index.d != columns.dim:
        return build_index(cache_path, columns, reporter)
    return index


def index_search(index, queries: np.ndarray, k: int, row_codes=None, query_codes=None,
                 include_self: bool = False) -> Hits:
    """Approximate top-k. Rows of the query's own content are dropped, or (include_self) all of them are
    put in at exactly 1.0 whether the index found them or not."""
    index.nprobe = max(1, int(np.ceil(index.nlist * NPROBE_FRACTION)))
    own_rows: dict[int, np.ndarray] = {}
    if query_codes is not None and (query_codes >= 0).any():
        mine = np.flatnonzero(np.isin(row_codes, query_codes[query_codes >= 0]))
        for code in np.unique(row_codes[mine]):
            own_rows[int(code)] = mine[row_codes[mine] == code]
    n_own = max((len(r) for r in own_rows.values()), default=0)
    fetch = min(index.ntotal, k + n_own)
    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), fetch)
    rows = rows.astype(np.int64)
    scores = np.where(rows < 0, -np.inf, scores).astype(np.float32)
    extra_rows = np.full((len(queries), n_own), -1, np.int64)
    extra_scores = np.full((len(queries), n_own), -np.inf, np.float32)
    for i, code in enumerate(query_codes if query_codes is not None else []):
        if int(code) not in own_rows:
            continue
        scores[i, np.isin(rows[i], own_rows[int(code)])] = -np.inf
        if include_self:
            own = own_rows[int(code)]
            extra_rows[i, :len(own)], extra_scores[i, :len(own)] = own, 1.0
    top_rows, top_scores = _best_k(np.hstack([rows, extra_rows]), np.hstack([scores, extra_scores]), k)
    return Hits(top_rows, top_scores)
