"""Does the svm head's fixed C hold? Accuracy of the linear SVM over a grid of C, beside the logreg head.

    python benchmarks/svm_c.py [--cache FLOWERS.h5] [--sets 10kx20 10kx100] [--C 0.1 0.3 1 3 10 30]

The svm head above 10 classes is L2-normalise + LinearSVMHead with C=1 (embedflow.heads.defaults.
SVM_DEFAULT_C); issue #20 asks that its defaults hold beyond 5 classes. Per set, the linear SVM at each C
and the logreg head (as `make_head("logreg")` builds it) are scored on the same folds: 5-fold stratified
cross-validation (seed 0) for a real cache (--cache, e.g. flowers-dev), one stratified 80/20 split (seed
0) for the synthetic sets of benchmarks/heads_scale.py (N x classes clustered 1280-d vectors). Reported:
mean accuracy and fit seconds per C, the best C, and how far C=1 is from the best and from logreg.
Writes benchmarks/results/svm_c.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def folds(y, cross_validate: bool):
    from sklearn.model_selection import StratifiedKFold, train_test_split

    if cross_validate:
        return list(StratifiedKFold(5, shuffle=True, random_state=0).split(np.zeros(len(y)), y))
    train, test = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=0)
    return [(train, test)]


def score(make, X, y, splits) -> tuple[float, float]:
    """(mean accuracy, mean fit seconds) of make() over the splits."""
    accuracy, seconds = [], []
    for train, test in splits:
        est = make()
        t = time.perf_counter()
        est.fit(X[train], y[train])
        seconds.append(time.perf_counter() - t)
        accuracy.append(float((est.predict(X[test]) == y[test]).mean()))
    return float(np.mean(accuracy)), float(np.mean(seconds))


def one_set(name: str, X, y, grid: list[float], cross_validate: bool) -> dict:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import Normalizer

    from embedflow.heads import make_head
    from embedflow.heads.linear_svm import LinearSVMHead

    splits = folds(y, cross_validate)
    entry = {"vectors": int(len(y)), "classes": int(y.max()) + 1,
             "protocol": "5-fold stratified CV" if cross_validate else "one stratified 80/20 split", "linear_svm": {}}
    acc, sec = score(lambda: make_head("logreg"), X, y, splits)
    entry["logreg_head"] = {"accuracy": acc, "fit_seconds": sec}
    print(f"| {name} | logreg head | {acc:.2%} | {sec:.1f} |", flush=True)
    for C in grid:
        acc, sec = score(lambda: Pipeline([("l2", Normalizer()), ("clf", LinearSVMHead(C=C))]), X, y, splits)
        entry["linear_svm"][f"{C:g}"] = {"accuracy": acc, "fit_seconds": sec}
        print(f"| {name} | linear svm C={C:g} | {acc:.2%} | {sec:.1f} |", flush=True)
    accs = {c: r["accuracy"] for c, r in entry["linear_svm"].items()}
    best = max(accs, key=accs.get)
    entry["best_C"] = float(best)
    if "1" in accs:
        entry["C1_points_below_best"] = round(100 * (accs[best] - accs["1"]), 2)
        entry["C1_points_above_logreg"] = round(100 * (accs["1"] - entry["logreg_head"]["accuracy"]), 2)
    return entry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, help="a real cache (e.g. of flowers-dev): 5-fold CV on its vectors")
    ap.add_argument("--sets", nargs="*", default=["10kx20", "10kx100"], help="NkxCLASSES synthetic sets")
    ap.add_argument("--C", nargs="+", type=float, default=[0.1, 0.3, 1, 3, 10, 30])
    ap.add_argument("--out", type=Path, default=HERE / "results" / "svm_c.json")
    args = ap.parse_args()
    from heads_scale import vector_sets

    results = {"cpus": os.cpu_count(), "load_average": os.getloadavg(), "sets": {}}
    print("| set | head | accuracy | fit s |\n| --- | --- | ---: | ---: |")
    for name, make in vector_sets(args.sets, args.cache):
        X, y = make()
        real = args.cache is not None and name == args.cache.stem
        results["sets"][name] = one_set(name, np.asarray(X, np.float32), np.asarray(y), args.C, real)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    results["load_average_after"] = os.getloadavg()
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
