"""Ray engine against the local engine, on the same folder in one run.

    python benchmarks/distributed.py [--data ../shared/data/flowers-dev] [--workers 1 2]

Each configuration embeds the whole folder into a fresh cache in its own process (`embedflow embed
--engine ...`), end to end (the Ray runs include starting a local cluster). Also reports the steady
rate of the Ray runs (images / (wall - cluster start-up), start-up measured in the same run as the time
to embed a 4-image folder) and the throughput per worker. Checks that every cache equals the local one.
Writes benchmarks/results/distributed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from embed_throughput import count_images, embed_cmd, run, synthetic_folder  # noqa: E402


def same_cache(a: Path, b: Path) -> bool:
    import numpy as np

    from embedflow import cache

    x, y = cache.load(a), cache.load(b)
    return (x.keys == y.keys and x.hashes == y.hashes and bool((x.labels == y.labels).all())
            and bool(np.allclose(x.embeddings, y.embeddings, rtol=1e-5, atol=1e-6)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data" / "flowers-dev")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, default=HERE / "results" / "distributed.json")
    args = ap.parse_args()
    n = count_images(args.data)
    work = Path(tempfile.mkdtemp(prefix="embedflow-dist-"))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "EMBEDFLOW_HOME": str(work / "home")}
    run(embed_cmd(synthetic_folder(work / "tiny", 4), work / "warm.h5"), env)  # one-time conversion, not timed
    results = {"data": str(args.data), "images": n, "cpu_count": os.cpu_count(),
               "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": []}

    wall, rss, _ = run(embed_cmd(args.data, work / "local.h5"), env)
    results["runs"].append({"engine": "local", "workers": os.cpu_count(), "seconds": wall,
                            "images_per_s": n / wall, "peak_rss_mb": rss})
    print(f"local engine: {wall:.1f}s = {n / wall:.1f} img/s", flush=True)
    for w in args.workers:
        start, _, _ = run(embed_cmd(synthetic_folder(work / f"tiny{w}", 4), work / f"t{w}.h5",
                                    "--engine", "ray", "--workers", str(w)), env)
        cache = work / f"ray{w}.h5"
        wall, rss, _ = run(embed_cmd(args.data, cache, "--engine", "ray", "--workers", str(w)), env)
        steady = n / max(wall - start, 1e-6)
        results["runs"].append({"engine": "ray", "workers": w, "seconds": wall, "images_per_s": n / wall,
                                "cluster_startup_seconds": start, "steady_images_per_s": steady,
                                "steady_images_per_s_per_worker": steady / w, "driver_peak_rss_mb": rss,
                                "same_cache_as_local": same_cache(work / "local.h5", cache)})
        print(f"ray, {w} worker(s): {wall:.1f}s = {n / wall:.1f} img/s end to end; start-up {start:.1f}s; "
              f"steady {steady:.1f} img/s ({steady / w:.1f} per worker); same cache: "
              f"{results['runs'][-1]['same_cache_as_local']}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
