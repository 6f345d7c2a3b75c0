"""How many inverted lists the IVF-PQ index must probe: recall@10 and latency per probe fraction, at 1M.

    python benchmarks/neighbors_probes.py [--size 1m] [--workdir /big/disk]

One synthetic clustered cache (benchmarks/neighbors.py's generator, 1280-d), one index build (what
`neighbors` builds), exact top-10 of 200 cache rows as the truth (self excluded), then every probe fraction
x re-ranking factor below on the same index: single-query p50/p99 latency and recall@10. The index's probe
fraction is a search-time setting (search.index.PQ_NPROBE_FRACTION), so no rebuild is needed. Writes
benchmarks/results/neighbors_probes.json. Disk: the cache (5.1 GB at 1M) and the index (2.6 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import neighbors as nb  # noqa: E402

from embedflow import cache  # noqa: E402
from embedflow import search  # noqa: E402
from embedflow.search import index as ix  # noqa: E402
from embedflow.search.exact import SEARCH_ROWS  # noqa: E402

FRACTIONS = (1 / 64, 1 / 48, 1 / 32, 1 / 24, 1 / 16)
REFINE = (16, 32)


def sweep(path: Path, n: int) -> dict:
    t = time.perf_counter()
    nb.write_synthetic_cache(path, n)
    write_s = time.perf_counter() - t
    columns = cache.load_columns(path)
    rng = np.random.default_rng(1)
    rows = np.sort(rng.choice(len(columns), nb.N_QUERIES, replace=False))
    queries = search.normalise(cache.read_vectors(path, rows))
    row_codes, query_codes = search.hash_codes(columns.hashes, [columns.hashes[r] for r in rows])
    truth = search.search_exact_chunked(queries, lambda: cache.iter_vector_blocks(path, SEARCH_ROWS), nb.K,
                                        row_codes, query_codes)
    t = time.perf_counter()
    index = search.load_index(path, columns)
    build_s = time.perf_counter() - t
    runs = []
    for fraction in FRACTIONS:
        for k_factor in REFINE:
            ix.PQ_NPROBE_FRACTION, index.k_factor = fraction, k_factor
            times, recall = [], []
            for q, c, want in zip(queries, query_codes, truth.rows):
                t = time.perf_counter()
                got = ix.index_search(index, q[None, :], nb.K, row_codes, np.array([c])).rows[0]
                times.append(time.perf_counter() - t)
                recall.append(len(set(got[got >= 0]) & set(want[want >= 0])) / nb.K)
            runs.append({"nprobe_fraction": fraction, "nprobe": ix.ivf_of(index).nprobe, "k_factor": k_factor,
                         "recall_at_10": round(float(np.mean(recall)), 4),
                         "p50_ms": round(float(np.percentile(times, 50)) * 1000, 2),
                         "p99_ms": round(float(np.percentile(times, 99)) * 1000, 2)})
            print(runs[-1], flush=True)
    return {"n": n, "dim": nb.DIM, "nlist": ix.ivf_of(index).nlist, "write_s": round(write_s, 1),
            "build_s": round(build_s, 1), "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1m")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        result = sweep(Path(work) / "synthetic.h5", nb.parse_size(args.size))
    result.update({"cpu_count": os.cpu_count(), "load_average_end": [round(x, 2) for x in os.getloadavg()],
                   "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    out = HERE / "results" / "neighbors_probes.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
