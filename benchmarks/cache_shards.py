"""The sharded cache against today's single file: adding 10 images, and reading every vector.

    python benchmarks/cache_shards.py --sizes 100k 1m [--workdir /big/disk] [--dim 1280]

Per size, on synthetic float32 vectors (1280-d unless --dim says otherwise) written as real caches:
* `add10_sharded_s`: an incremental run's cache work that keeps every row and adds 10, as `embed` does it:
  read the old columns (cache.load without vectors; `add10_sharded_columns_s`, measured within it), then
  cache.write with them passed through (`read=`), which writes one new shard and a new index file;
  `add10_sharded_write_s` is the write alone. Best of 2 (each adds 10 other rows). Since 2026-12-02 the
  columns are read once, inside this number (before: read again, alone, after it, and the write read
  and checked the old index a second time, as `embed` then did);
* `add10_single_s`: the same with a single-file cache (the reference: the whole file is rewritten);
* `read_*_s`: one pass over every vector with cache.iter_vector_blocks (what fit/neighbors/duplicates do;
  memory stays flat), best of 2, alternating (`read_*_cpu_s`: the process's CPU seconds of it); at <= 100k also cache.load (all in memory) and plain h5py
  `f["embeddings"][:]`.
Ratios compare numbers of the same run. Files are removed at the end (peak disk: about 2x the vectors).
Results: benchmarks/results/cache_shards.json (one entry per size, appended to what is there).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embedflow import cache  # noqa: E402
from embedflow.cache import shards  # noqa: E402

GEN_ROWS = 4096
FP = {"backbone": "synthetic", "id": "synthetic0000000", "embedflow_version": "bench"}


def parse_size(text: str) -> int:
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1].lower(), 1)
    return int(float(text.rstrip("kmKM")) * scale)


def chunks(folder: Path, n: int, dim: int, tag: str) -> list[cache.Row]:
    """n synthetic vectors in journal-style chunk files; the rows that name them (keys in order)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for start in range(0, n, GEN_ROWS):
        m = min(GEN_ROWS, n - start)
        hashes = [hashlib.sha256(f"{tag}-{start + i}".encode()).hexdigest() for i in range(m)]
        chunk = folder / f"{start // GEN_ROWS:08d}.npz"
        np.savez(chunk, hashes=np.array(hashes, dtype="S64"), vectors=rng.random((m, dim), dtype=np.float32))
        rows += [cache.Row(f"{tag}/{start + i:08d}.jpg", hashes[i], (start + i) % 10, chunk, i) for i in range(m)]
    return rows


def kept(path: Path, old: cache.CacheData | None = None) -> list[cache.Row]:
    old = old or cache.load(path, vectors=False)
    return [cache.Row(k, h, lab, path, i) for i, (k, h, lab) in enumerate(zip(old.keys, old.hashes, old.labels.tolist()))]


def add(path: Path, new: list[cache.Row], classes: list[str], dim: int) -> tuple[float, float, float]:
    """What an incremental `embed` does to the cache: read its columns, write it with `new` added.
    Returns (seconds in all, of which reading the columns, of which writing)."""
    t = time.perf_counter()
    old = cache.load(path, vectors=False)
    rows = kept(path, old)
    read = time.perf_counter() - t
    cache.write(path, rows + new, classes, FP, "/synthetic", [], dim, read=old)
    total = time.perf_counter() - t
    return total, read, total - read


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def read_pass(path: Path) -> None:
    for _ in cache.iter_vector_blocks(path):
        pass


def one_size(work: Path, n: int, dim: int) -> dict:
    classes = [f"c{i}" for i in range(10)]
    sharded, single = work / "sharded" / "embeddings.h5", work / "single" / "embeddings.h5"
    sharded.parent.mkdir(parents=True)
    single.parent.mkdir(parents=True)
    rows = chunks(work / "gen", n, dim, "base")
    os.environ["EMBEDFLOW_SHARD_MIN_ROWS"] = "1"
    write_sharded_s = timed(lambda: cache.write(sharded, rows, classes, FP, "/synthetic", [], dim))
    shutil.rmtree(work / "gen")
    os.environ["EMBEDFLOW_SHARD_MIN_ROWS"] = str(10**12)  # single file from here on for new caches
    write_single_s = timed(lambda: cache.write(single, kept(sharded), classes, FP, "/synthetic", [], dim))
    out = {"n": n, "dim": dim, "vector_gb": round(n * dim * 4 / 1e9, 2),
           "write_all_sharded_s": round(write_sharded_s, 2), "write_all_single_s": round(write_single_s, 2)}
    reads = {"sharded": [], "single": []}
    cpu = {"sharded": [], "single": []}  # process CPU seconds: what load from other jobs does not inflate
    for _ in range(2):
        for name, path in (("single", single), ("sharded", sharded)):
            c = time.process_time()
            reads[name].append(timed(lambda: read_pass(path)))
            cpu[name].append(time.process_time() - c)
    out["read_single_s"], out["read_sharded_s"] = round(min(reads["single"]), 2), round(min(reads["sharded"]), 2)
    out["read_single_cpu_s"], out["read_sharded_cpu_s"] = round(min(cpu["single"]), 2), round(min(cpu["sharded"]), 2)
    out["read_ratio_sharded_to_single"] = round(min(reads["sharded"]) / min(reads["single"]), 3)
    if n <= 100_000:
        import h5py

        def plain(p):
            with h5py.File(p, "r") as f:
                f["embeddings"][:]
        loads = {"single": [], "sharded": []}
        plains = {"single": [], "sharded": []}
        for _ in range(2):
            for name, path in (("single", single), ("sharded", sharded)):
                loads[name].append(timed(lambda: cache.load(path)))
                plains[name].append(timed(lambda: plain(path)))
        out["load_single_s"], out["load_sharded_s"] = round(min(loads["single"]), 2), round(min(loads["sharded"]), 2)
        out["load_ratio_sharded_to_single"] = round(min(loads["sharded"]) / min(loads["single"]), 3)
        out["plain_h5py_single_s"], out["plain_h5py_sharded_s"] = (round(min(plains["single"]), 2),
                                                                   round(min(plains["sharded"]), 2))
    load_before = os.getloadavg()[0]
    adds = []
    for attempt in range(2):
        new = chunks(work / f"new{attempt}", 10, dim, f"added{attempt}")
        adds.append(add(sharded, new, classes, dim))
    best = min(adds)
    out["add10_sharded_s"], out["add10_sharded_columns_s"], out["add10_sharded_write_s"] = (round(x, 3) for x in best)
    out["add10_loadavg_1min"] = round(load_before, 2)
    shutil.rmtree(sharded.parent)  # room for the single file's rewrite
    out["add10_single_s"] = round(add(single, new, classes, dim)[0], 3)
    out["add10_ratio_sharded_to_single"] = round(out["add10_sharded_s"] / out["add10_single_s"], 4)
    shutil.rmtree(single.parent)
    for attempt in range(2):
        shutil.rmtree(work / f"new{attempt}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["100k"])
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    results = []
    for size in args.sizes:
        n = parse_size(size)
        free = shutil.disk_usage(args.workdir or tempfile.gettempdir()).free
        if free < 2.3 * n * args.dim * 4:
            raise SystemExit(f"{size}: needs about {2.3 * n * args.dim * 4 / 1e9:.1f} GB free, {free / 1e9:.1f} GB there")
        with tempfile.TemporaryDirectory(dir=args.workdir) as work:
            results.append(one_size(Path(work), n, args.dim))
        print(json.dumps(results[-1]), flush=True)
    out = ROOT / "benchmarks" / "results" / "cache_shards.json"
    before = json.loads(out.read_text()) if out.exists() else {"runs": []}
    load = os.getloadavg()
    before["runs"].append({"utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu_count": os.cpu_count(),
                           "loadavg_at_end": [round(x, 1) for x in load], "shard_rows": shards.SHARD_ROWS,
                           "results": results})
    out.write_text(json.dumps(before, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
