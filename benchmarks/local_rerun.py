"""The warm rerun of `embed` on a local folder (nothing to embed: discover, stat, compare with the cache),
for this checkout and a reference checkout (e.g. main before object-storage inputs), in one run.

    python benchmarks/local_rerun.py --reference /tmp/main-export [--data ../shared/data/flowers-dev] [--repeats 7]

Each checkout runs in its own process (PYTHONPATH=its root), --rounds times, alternating, on one cache: the very first
embed uses a stand-in embedder (the mean colour: decoding is real, inference is not, since only reruns are
timed), then each process times `repeats` warm reruns; the median is reported. Writes benchmarks/results/local_rerun.json with the ratio this/reference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

MEASURE = r"""
import json, sys, time, numpy as np
from embedflow import backbones
from embedflow.embedding import embed_folder

class Mean:
    batch_size, runtime = 16, "mean-colour"
    def __call__(self, px):
        out = np.zeros((len(px), 1280), np.float32); out[:, :3] = px.mean(axis=(1, 2)); return out

data, cache_path, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
spec = backbones.get_spec("mobilenet_v2", 96, None)
first = embed_folder(data, cache_path, spec=spec, embedder_factory=lambda *a, **k: Mean())
times = []
for _ in range(repeats):
    t = time.perf_counter(); s = embed_folder(data, cache_path, spec=spec, embedder_factory=lambda *a, **k: Mean())
    times.append(time.perf_counter() - t)
    assert s.embedded == 0 and s.kept == first.total, s
print(json.dumps({"images": first.total, "rerun_seconds": times}))
"""


def measure(root: Path, data: Path, repeats: int, cache_path: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(root))
    out = subprocess.run([sys.executable, "-c", MEASURE, str(data), str(cache_path), str(repeats)],
                         env=env, capture_output=True, text=True, cwd=cache_path.parent, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["median_seconds"] = statistics.median(result["rerun_seconds"])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data" / "flowers-dev")
    ap.add_argument("--reference", type=Path, required=True, help="root of the reference checkout")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=3, help="alternations of the two checkouts")
    args = ap.parse_args()
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    # alternate the two, twice, so a busy machine weighs on both alike
    # one cache for both (the first process embeds, every other run is warm): the cache format is the same
    runs = {"this": [], "reference": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            runs["this"].append(measure(HERE.parent, args.data, args.repeats, Path(tmp) / "c.h5"))
            runs["reference"].append(measure(args.reference, args.data, args.repeats, Path(tmp) / "c.h5"))
    med = {k: statistics.median(t for r in v for t in r["rerun_seconds"]) for k, v in runs.items()}
    result = {"started": started, "data": str(args.data), "images": runs["this"][0]["images"],
              "median_rerun_seconds": med, "ratio_this_to_reference": med["this"] / med["reference"], "runs": runs}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "local_rerun.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['images']} images, warm rerun median: this {med['this']:.3f} s, reference "
          f"{med['reference']:.3f} s, ratio {result['ratio_this_to_reference']:.3f}")


if __name__ == "__main__":
    main()
