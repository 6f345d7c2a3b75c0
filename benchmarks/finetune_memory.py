"""Peak memory of `finetune` as the number of images grows (it should not).

    KERAS_HOME=/tmp/kh python benchmarks/finetune_memory.py [--sizes 1000 5000 20000] [--image-size 96]
        [--steps 4] [--code OLD_CHECKOUT --label before]

Per size, a synthetic tree of N unique 48x48 JPEGs in 5 classes (seeded noise around a class colour) is
written once; each fine-tune runs in a fresh Python process importing embedflow from --code (default: this
checkout; PYTHONDONTWRITEBYTECODE is set so another checkout is only read) with 1 stage-1 epoch, 1 stage-2
epoch, no refit, and augmentation on. Everything that scales with N runs in full: decoding every image,
the frozen base's features of every image, the leak-free split, building the tf.data pipelines (the old
in-memory pipeline fills a shuffle buffer of every image before its first batch); only stage 2's training
is cut to --steps batches (0: the whole epoch), since this measures memory, not accuracy. Peak RSS is the
child's ru_maxrss; the stage-2 epoch's seconds come from the run's own epoch timer. Writes
benchmarks/results/finetune_memory[-LABEL].json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import importlib, json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from embedflow import api
ft = importlib.import_module("embedflow.finetune")
steps = int(sys.argv[4])
if steps:
    plain = ft.image_dataset
    def capped(pixels, onehot, batch_size, augment=None, shuffle_seed=None, **kw):
        ds = plain(pixels, onehot, batch_size, augment=augment, shuffle_seed=shuffle_seed, **kw)
        return ds.take(steps) if augment is not None else ds  # the training batches of stage 2
    ft.image_dataset = capped
params = {"epochs": 1, "fine_tune_epochs": 1, "refit": False, "average_from": 0, "patience": 0}
t = time.perf_counter()
r = api.finetune(sys.argv[2], sys.argv[3], image_size=int(sys.argv[5]), params=params, reporter=None)
print(json.dumps({"seconds": time.perf_counter() - t, "epoch_seconds": r.epoch_seconds, "n_train": r.n_train,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40), (40, 200, 200)]


def make_tree(root: Path, n: int, seed: int = 0) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        c = i % len(COLOURS)
        arr = np.clip(np.array(COLOURS[c])[None, None] + rng.normal(0, 40, (48, 48, 3)), 0, 255).astype(np.uint8)
        path = root / f"class{c}" / f"img{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path, quality=90)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", type=int, default=[1000, 5000, 20000])
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--steps", type=int, default=4, help="stage-2 batches to train (0: a whole epoch)")
    ap.add_argument("--code", type=Path, default=HERE.parent, help="checkout whose embedflow is measured")
    ap.add_argument("--label", default="")
    ap.add_argument("--work", type=Path, help="keep the image trees here (default: a temporary folder)")
    args = ap.parse_args()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONDONTWRITEBYTECODE": "1"}
    results = {"code": str(args.code), "image_size": args.image_size, "steps": args.steps, "cpus": os.cpu_count(),
               "load_average_start": os.getloadavg(), "sizes": {}}
    out = HERE / "results" / f"finetune_memory{'-' + args.label if args.label else ''}.json"
    print(f"embedflow from {args.code}, {args.image_size} px, stage 2 cut to {args.steps or 'all'} steps")
    print("| images | peak RSS MB | stage-2 epoch s | total s |")
    print("| ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for n in args.sizes:
            tree = work / f"tree{n}"
            if not tree.exists():
                make_tree(tree, n)
            r = subprocess.run([sys.executable, "-c", CHILD, str(args.code), str(tree), str(Path(tmp) / f"model{n}"),
                                str(args.steps), str(args.image_size)], capture_output=True, text=True, env=env)
            if r.returncode:
                res = {"error": (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]}
                print(f"| {n} | error: {res['error']} | | |", flush=True)
            else:
                res = json.loads(r.stdout.strip().splitlines()[-1])
                stage2 = res["epoch_seconds"].get("stage2") or [float("nan")]
                print(f"| {n} | {res['peak_rss_mb']:.0f} | {stage2[0]:.1f} | {res['seconds']:.0f} |", flush=True)
            results["sizes"][str(n)] = res
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
