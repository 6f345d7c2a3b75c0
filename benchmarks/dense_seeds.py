"""The numpy dense head against the Keras one it replaced (issue #20), over several seeds, on
heads_scale.py's exact 80/20 splits: is the accuracy within the seed-to-seed noise?

    python benchmarks/dense_seeds.py --keras-code DIR [--cache FLOWERS.h5] [--sets 1kx5 10kx100] [--seeds 0 1 2]

--keras-code: a checkout (e.g. `git archive 65d009f embedflow | tar -x -C DIR`) whose embedflow has the
Keras DenseHead. Each (head, set) runs in a fresh process that fits DenseHead(random_state=seed) for every
seed on the 80% and scores the 20%. Writes benchmarks/results/dense_seeds.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, sys, time, warnings
import numpy as np
code, data, seeds = sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3:]]
sys.path.insert(0, code)
warnings.filterwarnings("ignore")
from embedflow.heads import DenseHead
d = np.load(data)
X, y, test = d["X"], d["y"], d["test"]
train = np.setdiff1d(np.arange(len(y)), test)
for seed in seeds:
    t = time.perf_counter()
    head = DenseHead(random_state=seed).fit(X[train], y[train])
    s = time.perf_counter() - t
    acc = float((head.predict_proba(X[test]).argmax(axis=1) == y[test]).mean())
    print(json.dumps({"seed": seed, "fit_seconds": s, "epochs": head.n_epochs_, "accuracy": acc}), flush=True)
"""


def run(code: Path, data: Path, seeds: list[int]) -> list[dict]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    r = subprocess.run([sys.executable, "-c", CHILD, str(code), str(data), *map(str, seeds)], capture_output=True,
                       text=True, env=env)
    if r.returncode:
        raise SystemExit(r.stderr.strip().splitlines()[-1])
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def summary(rows: list[dict]) -> dict:
    accs = [r["accuracy"] for r in rows]
    return {"mean_accuracy": sum(accs) / len(accs), "min_accuracy": min(accs), "max_accuracy": max(accs),
            "mean_fit_seconds": sum(r["fit_seconds"] for r in rows) / len(rows), "per_seed": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keras-code", type=Path, required=True)
    ap.add_argument("--cache", type=Path)
    ap.add_argument("--sets", nargs="*", default=["1kx5", "10kx100"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4, 5, 6, 7])
    ap.add_argument("--seeds-large", nargs="+", type=int, default=[0, 1, 2], help="seeds for sets of 10k+ vectors")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "dense_seeds.json")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent))
    import tempfile

    from heads_scale import vector_sets, write_set

    commit = subprocess.run(["git", "-C", str(HERE.parent), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    out = {"numpy_code": str(HERE.parent), "numpy_commit": commit, "keras_code": str(args.keras_code),
           "cpus": os.cpu_count(), "load_average": os.getloadavg(), "sets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in vector_sets(args.sets, args.cache):
            X, y = make()
            data = write_set(Path(tmp) / f"{name}.npz", X, y)
            seeds = args.seeds_large if len(y) >= 10_000 else args.seeds
            entry = out["sets"][name] = {"vectors": int(len(y)), "classes": int(y.max()) + 1, "seeds": seeds}
            for head, code in (("numpy", HERE.parent), ("keras", args.keras_code)):
                entry[head] = summary(run(code, data, seeds))
                print(f"{name} {head}: mean {entry[head]['mean_accuracy']:.1%} (min {entry[head]['min_accuracy']:.1%}, "
                      f"max {entry[head]['max_accuracy']:.1%}), mean fit {entry[head]['mean_fit_seconds']:.1f} s",
                      flush=True)
                args.out.write_text(json.dumps(out, indent=2))
    out["load_average_after"] = os.getloadavg()
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
