"""How each head's fit time, peak memory and accuracy grow with vectors and classes.

    python benchmarks/heads_scale.py [--sets 1kx5 10kx20 10kx100] [--cache FLOWERS.h5] [--heads logreg svm dense knn]

Synthetic sets: N x CLASSES clustered 1280-d vectors (Gaussian class centres, per-vector noise 4.0 and a
shared 32-d nuisance, then ReLU: non-negative like MobileNetV2's pooled features; overlapping enough that
a plain logistic regression scores ~88% at 10k x 100). With --cache, the vectors of a real cache too
(e.g. flowers-dev). Each set is split 80/20 (stratified, seed 0); every fit runs in a fresh Python process
(embedflow.heads.make_head + check_trainable as `fit` builds it, then fit on the 80%, accuracy on the 20%),
whose peak RSS (imports included) is recorded: `peak_rss_mb` is the process's own high-water mark (Linux
VmHWM; before r5 it was ru_maxrss, which Linux keeps across exec, so it never read below this script's own
RSS when the child started: r4's 294 MB rows were that floor), `ru_maxrss_mb` the old measure. The
reference in the same run: a plain scikit-learn LogisticRegression() on the same raw vectors; every head's
time is also given as a ratio to it.
Writes benchmarks/results/heads_scale.json.
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
import json, resource, sys, time, warnings
import numpy as np
sys.path.insert(0, sys.argv[1])
warnings.filterwarnings("ignore")
data = np.load(sys.argv[2])
X, y, test = data["X"], data["y"], data["test"]
train = np.setdiff1d(np.arange(len(y)), test)
kind = sys.argv[3]
if kind == "sklearn-logreg":
    from sklearn.linear_model import LogisticRegression
    est = LogisticRegression()
else:
    from embedflow.heads import check_trainable, make_head
    est = make_head(kind)
    check_trainable(kind, est, y[train], [str(c) for c in range(int(y.max()) + 1)])
def hwm():  # this process's own peak RSS (Linux VmHWM); ru_maxrss also counts the parent's RSS before exec
    try:
        return next(int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
rss0 = hwm()
t = time.perf_counter()
est.fit(X[train], y[train])
fit_s = time.perf_counter() - t
t = time.perf_counter()
acc = float((est.predict_proba(X[test]).argmax(axis=1) == y[test]).mean())
out = {"fit_seconds": fit_s, "predict_seconds": time.perf_counter() - t, "accuracy": acc,
       "rss_before_fit_mb": rss0, "peak_rss_mb": hwm(),
       "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
if getattr(est, "svm_kernel_", None):
    out["kernel"] = est.svm_kernel_
print(json.dumps(out))
"""


def synthetic(n: int, classes: int, dim: int = 1280, seed: int = 0, noise: float = 4.0):
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    basis = rng.normal(size=(32, dim)).astype(np.float32) / np.sqrt(32)
    y = np.arange(n) % classes
    rng.shuffle(y)
    X = (centres[y] + rng.normal(0, noise, (n, dim)).astype(np.float32)
         + (rng.normal(0, 2.0, (n, 32)).astype(np.float32) @ basis) * 3)
    return np.maximum(X, 0).astype(np.float32), y


def vector_sets(names: list[str], cache: Path | None = None) -> list[tuple]:
    """(name, make) per set: "NkxC" names a synthetic set of N vectors in C classes (e.g. 10kx100), and
    `cache` a real cache (its stem); make() returns (X float32 (N, D), y (N,))."""
    sets = []
    for name in names:
        n, c = name.lower().split("x")
        n = int(float(n[:-1]) * 1000) if n.endswith("k") else int(n)
        sets.append((name, lambda n=n, c=int(c): synthetic(n, c)))
    if cache:
        def real(path=cache):
            from embedflow.cache import open_cache

            held = open_cache(path, vectors=True)
            return held.X.astype("float32"), held.y
        sets.append((cache.stem, real))
    return sets


def write_set(path: Path, X, y) -> Path:
    import numpy as np
    from sklearn.model_selection import train_test_split

    _, test = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=0)
    np.savez(path, X=X, y=y, test=np.sort(test))
    return path


def measure(code: Path, data: Path, kind: str) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    r = subprocess.run([sys.executable, "-c", CHILD, str(code), str(data), kind], capture_output=True, text=True,
                       env=env)
    if r.returncode:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="*", default=["1kx5", "10kx20", "10kx100"], help="NkxCLASSES synthetic sets")
    ap.add_argument("--cache", type=Path, help="also a real cache (e.g. of flowers-dev)")
    ap.add_argument("--heads", nargs="+", default=["logreg", "svm", "dense", "knn"])
    ap.add_argument("--code", type=Path, default=HERE.parent, help="checkout whose embedflow is measured")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "heads_scale.json")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE.parent))
    commit = subprocess.run(["git", "-C", str(args.code), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(args.code), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True).stdout.strip())
    results = {"code": str(args.code), "commit": commit, "uncommitted_changes": dirty, "cpus": os.cpu_count(),
               "load_average": os.getloadavg(), "sets": {}}
    print("| set | head | fit s | x sklearn LogisticRegression | peak RSS MB | accuracy |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in vector_sets(args.sets, args.cache):
            X, y = make()
            data = write_set(Path(tmp) / f"{name}.npz", X, y)
            entry = {"vectors": int(len(y)), "classes": int(y.max()) + 1, "dim": int(X.shape[1]), "heads": {}}
            del X, y
            ref = measure(args.code, data, "sklearn-logreg")
            entry["reference"] = ref
            print(f"| {name} | sklearn LogisticRegression() | {ref.get('fit_seconds', float('nan')):.1f} | 1.00 | "
                  f"{ref.get('peak_rss_mb', float('nan')):.0f} | {ref.get('accuracy', float('nan')):.1%} |", flush=True)
            for head in args.heads:
                r = measure(args.code, data, head)
                if "fit_seconds" in r and "fit_seconds" in ref:
                    r["fit_ratio_to_reference"] = r["fit_seconds"] / ref["fit_seconds"]
                entry["heads"][head] = r
                results["sets"][name] = entry
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(results, indent=2))  # after every fit: a long run keeps what it measured
                label = head + (f" ({r['kernel']})" if r.get("kernel") else "")
                if "error" in r:
                    print(f"| {name} | {label} | error: {r['error']} | | | |", flush=True)
                    continue
                print(f"| {name} | {label} | {r['fit_seconds']:.1f} | {r.get('fit_ratio_to_reference', float('nan')):.2f} | "
                      f"{r['peak_rss_mb']:.0f} | {r['accuracy']:.1%} |", flush=True)
            results["sets"][name] = entry
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2))  # after every set: a long run keeps what it measured
    results["load_average_after"] = os.getloadavg()
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
