"""`embedflow fit` end to end at many classes: the training alone (the manifest's fit_seconds: split fit,
validation report, refit) and the whole command (plus report.html: the audit's 5 out-of-fold logistic
regressions, the t-SNE map, the figures), against a plain scikit-learn LogisticRegression() fitted on
the same vectors in the same run.

    python benchmarks/fit_cli_scale.py [--n 8000] [--classes 100] [--heads logreg svm dense knn]

The vectors are heads_scale.py's synthetic clustered set, written as a cache; each `fit` runs as its own
`embedflow fit --json` process, whose peak RSS (ru_maxrss of that one child) is recorded.
Writes benchmarks/results/fit_cli_scale.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from heads_scale import synthetic  # noqa: E402

FP = {"backbone": "synthetic", "id": "00000000000000fc", "image_size": 32, "weights_sha256": "0" * 64}
# runs the command given as its arguments, then prints that child's peak RSS (KB) as stderr's last line
PEAK = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)")


def write_cache(path: Path, X, y, classes: list[str]) -> Path:
    import numpy as np

    from embedflow import cache

    src = path.with_suffix(".npz")
    hashes = [hashlib.sha256(f"row{i}".encode()).hexdigest() for i in range(len(X))]
    np.savez(src, hashes=np.array(hashes, dtype="S64"), vectors=X.astype(np.float32))
    rows = [cache.Row(f"{classes[y[i]]}/k{i:05d}.png", hashes[i], int(y[i]), src, i) for i in range(len(X))]
    cache.write(path, rows, classes, FP, str(path.parent / "images"), [], X.shape[1])
    return path


def plain_logreg_seconds(X, y) -> float:
    from sklearn.linear_model import LogisticRegression

    t = time.perf_counter()
    LogisticRegression().fit(X, y)
    return time.perf_counter() - t


def run_fit(exe: str, cache_path: Path, head: str, out: Path) -> dict:
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", PEAK, exe, "fit", "--cache", str(cache_path), "--head", head,
                             "--out", str(out), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t
    status = proc.returncode
    if status != 0:
        raise SystemExit(f"fit --head {head} failed ({status}): {stderr[-2000:]}")
    result = json.loads(stdout)
    peak_mb = int(stderr.strip().splitlines()[-1]) // 1024
    return {"wall_s": round(wall, 2), "peak_rss_mb": peak_mb, "fit_seconds": result["fit_seconds"], "seconds": round(result["seconds"], 2),
            "accuracy": result["report"]["accuracy"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8000)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--heads", nargs="+", default=["logreg", "svm", "dense", "knn"])
    ap.add_argument("--out", type=Path, default=HERE / "results" / "fit_cli_scale.json")
    args = ap.parse_args()
    exe = str(Path(sys.executable).with_name("embedflow"))
    X, y = synthetic(args.n, args.classes)
    classes = [f"c{i:03d}" for i in range(args.classes)]
    with tempfile.TemporaryDirectory(prefix="embedflow-fitcli-") as work:
        path = write_cache(Path(work) / "cache.h5", X, y, classes)
        reference = plain_logreg_seconds(X, y)
        print(f"plain LogisticRegression() on {args.n} x {args.classes} classes: {reference:.1f}s", flush=True)
        heads = {}
        for head in args.heads:
            r = run_fit(exe, path, head, Path(work) / f"m-{head}")
            r["training_vs_reference"] = round(r["fit_seconds"] / reference, 2)
            r["command_vs_reference"] = round(r["seconds"] / reference, 2)
            heads[head] = r
            print(f"fit --head {head}: trained in {r['fit_seconds']:.1f}s ({r['training_vs_reference']:.2f}x), "
                  f"{r['seconds']:.1f}s in all ({r['command_vs_reference']:.2f}x), peak {r['peak_rss_mb']} MB, accuracy {r['accuracy']:.2%}", flush=True)
    out = {"n": args.n, "classes": args.classes, "reference_plain_logreg_s": round(reference, 2), "heads": heads,
           "cpu_count": os.cpu_count(), "loadavg_at_end": [round(x, 1) for x in os.getloadavg()],
           "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
