"""Nearest-neighbour search on synthetic caches: index build time, query latency, recall@10, peak memory.

    python benchmarks/neighbors.py                       # 10k and 100k vectors of 1280 dims
    python benchmarks/neighbors.py --sizes 10k 100k 1m   # 1M writes a 5 GB cache (in chunks)
    python benchmarks/neighbors.py --sizes 100k --kinds embedflow faiss-hnsw hnswlib   # compare libraries

Vectors are clustered (cluster centres + a 64-d shared low-rank variation + isotropic noise, non-negative
like pooled ReLU features), written as a real embedflow cache. Each (size, kind) runs in its own process,
so the peak memory (ru_maxrss) is that run's own. `embedflow` is what the library does (its faiss index
beside the cache: IVF-flat below 20,000 vectors, PCA + IVF-PQ + float16 re-ranking from there on; see
embedflow/search/index.py); recall@10 is measured against exact search with
the same queries (200 cache rows, self excluded). Prints a table; writes benchmarks/results/neighbors-*.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embedflow import cache  # noqa: E402
from embedflow.cache import shards  # noqa: E402
from embedflow import search as neighbors  # noqa: E402
from embedflow.search.exact import SEARCH_ROWS  # noqa: E402
from embedflow.search.index import index_search  # noqa: E402

DIM, K, N_QUERIES, GEN_ROWS = 1280, 10, 200, 4096
FINGERPRINT = {"backbone": "synthetic", "id": "synthetic0000000", "embedflow_version": "bench"}


def parse_size(text: str) -> int:
    text = text.lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("km")) * scale)


APPEND_ROWS = 65_536  # a large cache is written in appends of this many rows (disk: the cache + one piece)


def write_synthetic_cache(path: Path, n: int, seed: int = 0) -> None:
    """A clustered cache of n vectors, generated and written GEN_ROWS at a time (memory stays flat). From
    the sharded cache's threshold on, it is written as a series of incremental appends of APPEND_ROWS
    rows (each a new shard), so the generated chunks never take more disk than one append."""
    rng = np.random.default_rng(seed)
    n_clusters = max(10, n // 500)
    centres = np.abs(rng.normal(0, 1, (n_clusters, DIM))).astype(np.float32)
    basis = rng.normal(0, 1 / np.sqrt(64), (64, DIM)).astype(np.float32)
    chunks = Path(str(path) + ".gen")
    chunks.mkdir(parents=True, exist_ok=True)
    piece = n if n < shards.shard_min_rows() else APPEND_ROWS
    rows: list = []

    def flush() -> None:
        kept = []
        if path.exists():
            old = cache.load(path, vectors=False)
            kept = [cache.Row(k, h, int(lab), path, i) for i, (k, h, lab) in enumerate(zip(old.keys, old.hashes, old.labels))]
        cache.write(path, kept + rows, [f"class{c:02d}" for c in range(20)], FINGERPRINT, "/synthetic", [], DIM)
        for chunk in chunks.iterdir():
            chunk.unlink()
        rows.clear()

    for start in range(0, n, GEN_ROWS):
        m = min(GEN_ROWS, n - start)
        which = rng.integers(0, n_clusters, m)
        x = centres[which] + rng.normal(0, 0.6, (m, 64)).astype(np.float32) @ basis
        x = np.maximum(x + rng.normal(0, 0.15, (m, DIM)).astype(np.float32), 0)
        hashes = [hashlib.sha256(f"{seed}-{start + i}".encode()).hexdigest() for i in range(m)]
        chunk = chunks / f"{start // GEN_ROWS:08d}.npz"
        np.savez(chunk, hashes=np.array(hashes, dtype="S64"), vectors=x)
        for i in range(m):  # keys sort in generation order: every written block reads one chunk file
            label = (start + i) * 20 // n
            rows.append(cache.Row(f"class{label:02d}/{start + i:08d}.jpg", hashes[i], label, chunk, i))
        if len(rows) >= piece:
            flush()
    if rows:
        flush()
    chunks.rmdir()


def percentile_ms(seconds: list[float], q: float) -> float:
    return round(float(np.percentile(seconds, q)) * 1000, 2)


def timed_single_queries(search, queries: np.ndarray, codes: np.ndarray) -> tuple[list[float], list[np.ndarray]]:
    times, found = [], []
    for q, c in zip(queries, codes):
        t = time.perf_counter()
        hits = search(q[None, :], np.array([c]))
        times.append(time.perf_counter() - t)
        found.append(hits.rows[0])
    return times, found


def run_one(path: Path, kind: str) -> dict:
    """Build (or load) the index of one cache, time single queries, measure recall against exact search."""
    columns = cache.load_columns(path)
    n = len(columns)
    rng = np.random.default_rng(1)
    query_rows = np.sort(rng.choice(n, min(N_QUERIES, n), replace=False))
    queries = neighbors.normalise(cache.read_vectors(path, query_rows))
    row_codes, query_codes = neighbors.hash_codes(columns.hashes, [columns.hashes[r] for r in query_rows])

    t = time.perf_counter()
    truth = neighbors.search_exact_chunked(queries, lambda: cache.iter_vector_blocks(path, SEARCH_ROWS),
                                           K, row_codes, query_codes)
    exact_batch_s = time.perf_counter() - t
    n_single = 20 if n <= 100_000 else 3
    exact_times, _ = timed_single_queries(
        lambda q, c: neighbors.exact_search(q, cache.iter_vector_blocks(path, SEARCH_ROWS), K, row_codes, c),
        queries[:n_single], query_codes[:n_single])

    t = time.perf_counter()
    search = build_kind(kind, path, columns, row_codes)
    build_s = time.perf_counter() - t
    times, found = timed_single_queries(search, queries, query_codes)
    recall = np.mean([len(set(f[f >= 0]) & set(e[e >= 0])) / K for f, e in zip(found, truth.rows)])
    index_file = neighbors.index_paths(path)[0]
    return {
        "n": n, "dim": columns.dim, "kind": kind, "k": K, "queries": len(queries),
        "build_s": round(build_s, 2),
        "query_p50_ms": percentile_ms(times, 50), "query_p99_ms": percentile_ms(times, 99),
        "recall_at_10": round(float(recall), 4),
        "exact_query_p50_ms": percentile_ms(exact_times, 50),
        "exact_batch_ms_per_query": round(exact_batch_s / len(queries) * 1000, 2),
        "index_mb": round(index_file.stat().st_size / 1e6, 1) if kind == "embedflow" and index_file.exists() else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def build_kind(kind: str, path: Path, columns, row_codes):
    """A search(query (1, D), query codes) -> Hits function for one index kind."""
    if kind == "embedflow":
        index = neighbors.load_index(path, columns)
        return lambda q, c: index_search(index, q, K, row_codes, c)
    vectors = np.vstack([neighbors.normalise(b) for _, b in cache.iter_vector_blocks(path, SEARCH_ROWS)])
    if kind == "faiss-hnsw":
        import faiss

        index = faiss.IndexHNSWFlat(columns.dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 40
        index.add(vectors)
        index.hnsw.efSearch = 64

        def search(q, c):
            s, r = index.search(q, K + 1)
            return _drop_own(r, s, row_codes, c)

        return search
    if kind == "hnswlib":
        import hnswlib

        index = hnswlib.Index(space="ip", dim=columns.dim)
        index.init_index(max_elements=len(vectors), ef_construction=100, M=16)
        index.add_items(vectors)
        index.set_ef(64)

        def search(q, c):
            r, d = index.knn_query(q, K + 1)
            return _drop_own(r.astype(np.int64), 1 - d, row_codes, c)

        return search
    raise SystemExit(f"unknown kind {kind}")


def _drop_own(rows, scores, row_codes, codes):
    keep = [r for r in rows[0] if row_codes[r] != codes[0]][:K]
    return neighbors.Hits(np.array([keep]), np.zeros((1, len(keep)), np.float32))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["10k", "100k"], help="cache sizes, e.g. 10k 100k 1m")
    ap.add_argument("--kinds", nargs="+", default=["embedflow"], help="embedflow (faiss IVF), faiss-hnsw, hnswlib")
    ap.add_argument("--workdir", default=None, help="where the synthetic caches go (default: a temp folder)")
    ap.add_argument("--one", nargs=2, metavar=("CACHE", "KIND"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(Path(args.one[0]), args.one[1])))
        return
    results = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        for size in args.sizes:
            n = parse_size(size)
            path = Path(work) / f"synthetic-{n}.h5"
            t = time.perf_counter()
            write_synthetic_cache(path, n)
            print(f"wrote {n} vectors in {time.perf_counter() - t:.0f}s", file=sys.stderr)
            for kind in args.kinds:
                out = subprocess.run([sys.executable, __file__, "--one", str(path), kind], check=True,
                                     capture_output=True, text=True).stdout
                results.append(json.loads(out.strip().splitlines()[-1]))
                print_row(results[-1])
            for p in Path(work).iterdir():  # the cache, its shard folder (sharded from 50,000 rows), the index
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"neighbors-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps({"cpu_count": os.cpu_count(), "results": results}, indent=2))
    print(f"wrote {out}")


HEADER = ("n", "kind", "build_s", "query_p50_ms", "query_p99_ms", "recall_at_10", "exact_query_p50_ms",
          "exact_batch_ms_per_query", "index_mb", "peak_rss_mb")


def print_row(r: dict) -> None:
    if not getattr(print_row, "done", False):
        print(" | ".join(HEADER))
        print_row.done = True
    print(" | ".join(str(r[h]) for h in HEADER), flush=True)


if __name__ == "__main__":
    main()
