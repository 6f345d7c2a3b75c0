"""The approximate faiss index kept beside a large cache (`<cache>.faiss` and its JSON sidecar),
rebuilt when the cache changes, grown with `add` when rows were only appended (a sharded cache's
incremental run appends its new rows).

Two kinds, by size (the sidecar's `kind` and `params` record which):
* below PQ_MIN_ROWS vectors: IVF-flat, inner product on normalised vectors (exact scores in the probed lists);
* from PQ_MIN_ROWS on: IVF-PQ (PQ_M bytes per vector) whose REFINE_FACTOR * k best candidates are
  re-ranked with exact inner products of float16 copies of the vectors (faiss IndexRefine): the codes keep
  the scan of many lists cheap, the re-ranking keeps the scores exact to float16. Memory: 2 bytes per
  dimension per vector (+ PQ_M), i.e. 0.5x the float32 vectors.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .. import cache
from ..errors import UsageError
from ..fsio import check_writable_folder, sibling, staging_stem
from ..progress import SILENT, Reporter
from .exact import SEARCH_ROWS, Hits, _best_k, normalise

INDEX_MIN_ROWS = 50_000  # method="auto" uses the approximate index from this many vectors on
INDEX_SUFFIX = ".faiss"
INDEX_FORMAT = "embedflow.index"
INDEX_VERSION = 3  # 2: the sidecar records the index file's sha256; 3: kind, params, prefix growth
NPROBE_FRACTION = 1 / 16  # inverted lists scanned per query by IVF-flat (see benchmarks/neighbors.py)
MAX_NLIST = 4096
PQ_MIN_ROWS = 20_000  # from this many vectors on: IVF-PQ + float16 re-ranking
PQ_M = 64  # bytes (sub-quantizers of 8 bits) per vector
PCA_DIM = 256  # IVF-PQ works on the vectors' first PCA_DIM principal components (the re-ranking on all)
ROWS_PER_LIST = 256  # IVF-PQ: about this many vectors per list (at least sqrt(N) lists, at most MAX_NLIST)
PQ_NPROBE_FRACTION = 1 / 24  # lists scanned per query by IVF-PQ (1M x 1280: recall@10 0.935 at 1/64, 0.974 at 1/24, p50 ~11 ms; benchmarks/results/neighbors_probes.json)
MIN_PQ_NPROBE = 8
REFINE_FACTOR = 16  # candidates re-ranked per neighbour asked
GROW_MAX = 1.0  # appended rows are added to the index up to this fraction of the rows it was trained on


def ivf_of(index):
    """The IVF part of an index of either kind (nprobe and nlist live there)."""
    return faiss_module().extract_index_ivf(index)


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


def _prefix_digest(columns: cache.CacheColumns, count: int) -> str:
    h = hashlib.sha256(columns.fingerprint["id"].encode())
    for content in columns.hashes[:count]:
        h.update(content.encode())
    return h.hexdigest()


def index_params(n: int) -> dict:
    """The kind and parameters of the index built for n vectors."""
    nlist = int(min(MAX_NLIST, max(1, round(np.sqrt(n)))))
    if n >= PQ_MIN_ROWS:
        nlist = int(min(MAX_NLIST, max(nlist, n // ROWS_PER_LIST)))
    if n < PQ_MIN_ROWS:
        return {"kind": "faiss IndexIVFFlat inner product", "nlist": nlist,
                "nprobe": max(1, int(np.ceil(nlist * NPROBE_FRACTION)))}
    return {"kind": "faiss PCA + IndexIVFPQ L2 + IndexRefine float16 (unit vectors)", "nlist": nlist, "pq_m": PQ_M,
            "pca_dim": PCA_DIM,
            "pq_bits": 8,
            "nprobe": min(nlist, max(MIN_PQ_NPROBE, int(np.ceil(nlist * PQ_NPROBE_FRACTION)))), "refine_factor": REFINE_FACTOR,
            "trained_on": n}


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
    (index file first, then its sidecar, each by atomic rename) when that folder can be written (else kept
    in memory only, with one warning: see _save_index)."""
    faiss = faiss_module()
    n, dim = len(columns), columns.dim
    params = index_params(n)
    nlist = params["nlist"]
    reporter.info(f"building the approximate index of {n} vectors ({nlist} lists); it is kept beside the cache")
    quantizer = faiss.IndexFlatIP(dim)
    if n < PQ_MIN_ROWS:
        index = ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        low = min(PCA_DIM, dim)
        # PCA centres the vectors, which keeps L2 distances, not inner products: the index is an L2 one (for
        # unit vectors the same order as inner products; ip_search turns its distances into cosines)
        quantizer = faiss.IndexFlatL2(low)
        ivf = faiss.IndexIVFPQ(quantizer, low, nlist, PQ_M if low % PQ_M == 0 else low, 8, faiss.METRIC_L2)
        base = faiss.IndexPreTransform(faiss.PCAMatrix(dim, low), ivf)
        index = faiss.IndexRefine(base, faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16,
                                                                   faiss.METRIC_L2))
        index.k_factor = REFINE_FACTOR
        ivf.pq.cp.niter, ivf.pq.cp.max_points_per_centroid = 10, 64  # the PQ learns from 16,384 of the sample
    ivf.cp.niter, ivf.cp.min_points_per_centroid = 10, 1  # 10 k-means rounds; small caches do not warn
    index.train(_training_sample(cache_path, n, nlist))
    reporter.start("indexing", n)
    try:
        for start, block in cache.iter_vector_blocks(cache_path, SEARCH_ROWS):
            index.add(normalise(block))
            reporter.advance(len(block))
    finally:
        reporter.finish()
    _save_index(cache_path, columns, index, params, reporter)
    return index


def _save_index(cache_path, columns: cache.CacheColumns, index, params: dict, reporter: Reporter) -> bool:
    """Write the index file, then its sidecar, beside the cache (each by atomic rename). Searching is a
    reader: where the folder cannot be written (read-only, full disk, no permission) the index is used in
    memory only, with one warning, and no temporary file is left. Returns whether it was saved."""
    faiss = faiss_module()
    index_file, sidecar_file = index_paths(cache_path)
    problem = check_writable_folder(index_file.parent)
    tmp = index_file.with_name(f".{staging_stem(index_file.name)}.tmp{os.getpid()}")
    tmp_side = sidecar_file.with_name(f".{staging_stem(sidecar_file.name)}.tmp{os.getpid()}")
    try:
        if problem is not None:
            raise problem
        data = faiss.serialize_index(index).tobytes()
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        sidecar = {**_sidecar_for(columns), "kind": params["kind"], "nlist": params["nlist"], "params": params,
                   "index_bytes": len(data), "index_sha256": hashlib.sha256(data).hexdigest()}
        os.replace(tmp, index_file)
        tmp_side.write_text(json.dumps(sidecar, indent=2))
        os.replace(tmp_side, sidecar_file)
    except OSError as e:
        for t in (tmp, tmp_side):
            with contextlib.suppress(OSError):  # a read-only folder refuses even removing a missing file
                t.unlink(missing_ok=True)
        reporter.warn(f"the index could not be saved beside the cache ({index_file.parent}: "
                      f"{e.strerror or e}); searching with it in memory (built again next time)")
        return False
    return True


def _training_sample(cache_path, n: int, nlist: int) -> np.ndarray:
    """Evenly spread rows for k-means (64 per list, at least 10,000)."""
    size = min(n, max(64 * nlist, 10_000) if n < PQ_MIN_ROWS else max(16 * nlist, 20_000))
    rows = np.unique(np.linspace(0, n - 1, size).astype(np.int64))
    return normalise(cache.read_vectors(cache_path, rows))


def load_index(cache_path, columns: cache.CacheColumns, reporter: Reporter = SILENT):
    """The cache's index, rebuilt first when the cache changed since it was built (or it is missing)."""
    faiss = faiss_module()
    if not index_is_current(cache_path, columns):
        grown = _grown(cache_path, columns, reporter)
        return grown if grown is not None else build_index(cache_path, columns, reporter)
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


def _read_verified(cache_path):
    """The saved index whose bytes match its sidecar's sha256, or None."""
    faiss = faiss_module()
    try:
        data = index_paths(cache_path)[0].read_bytes()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != _recorded(cache_path).get("index_sha256"):
        return None
    try:
        return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except Exception:
        return None


def _grown(cache_path, columns: cache.CacheColumns, reporter: Reporter):
    """The saved index with the rows appended to the cache since it was built added to it (and saved),
    or None when the cache changed otherwise (rows removed, reordered or replaced), when more rows were
    appended than GROW_MAX of those its lists were trained on, or the saved index is not usable."""
    recorded = _recorded(cache_path)
    count, params = recorded.get("count"), recorded.get("params") or {}
    if (not isinstance(count, int) or not 0 < count < len(columns) or recorded.get("version") != INDEX_VERSION
            or recorded.get("fingerprint_id") != columns.fingerprint["id"] or recorded.get("dim") != columns.dim
            or recorded.get("cache_digest") != _prefix_digest(columns, count)
            or len(columns) - count > GROW_MAX * params.get("trained_on", count)):
        return None
    index = _read_verified(cache_path)
    if index is None or index.ntotal != count or index.d != columns.dim:
        return None
    added = len(columns) - count
    reporter.info(f"adding {added} appended vector(s) to the approximate index of {count}")
    for start in range(count, len(columns), SEARCH_ROWS):
        index.add(normalise(cache.read_vectors(cache_path, np.arange(start, min(start + SEARCH_ROWS, len(columns))))))
    _save_index(cache_path, columns, index, {**params, "added": params.get("added", 0) + added}, reporter)
    return index


def ip_search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """index.search with inner products (cosines of unit vectors) as scores, for either kind."""
    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    if index.metric_type == faiss_module().METRIC_L2:  # |a - b|^2 = 2 - 2 a.b for unit vectors
        scores = 1 - scores / 2
    return scores, rows


def index_search(index, queries: np.ndarray, k: int, row_codes=None, query_codes=None,
                 include_self: bool = False) -> Hits:
    """Approximate top-k. Rows of the query's own content are dropped, or (include_self) all of them are
    put in at exactly 1.0 whether the index found them or not."""
    ivf = ivf_of(index)
    if isinstance(index, faiss_module().IndexRefine):
        ivf.nprobe = min(ivf.nlist, max(MIN_PQ_NPROBE, int(np.ceil(ivf.nlist * PQ_NPROBE_FRACTION))))
    else:
        ivf.nprobe = max(1, int(np.ceil(ivf.nlist * NPROBE_FRACTION)))
    own_rows: dict[int, np.ndarray] = {}
    if query_codes is not None and (query_codes >= 0).any():
        mine = np.flatnonzero(np.isin(row_codes, query_codes[query_codes >= 0]))
        for code in np.unique(row_codes[mine]):
            own_rows[int(code)] = mine[row_codes[mine] == code]
    n_own = max((len(r) for r in own_rows.values()), default=0)
    fetch = min(index.ntotal, k + n_own)
    scores, rows = ip_search(index, queries, fetch)
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
