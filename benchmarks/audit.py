"""Label issues, outliers and near-duplicate groups on a real cache (issue #17), measured.

    python benchmarks/audit.py --cache cache/embeddings.h5 [--seeds 5] [--fracs 0.05,0.1]

Label issues: a seeded random `frac` of the labels is flipped to another class (uniformly); the scorers
rank all images, and we report precision of the top k (k = number flipped) and recall within the top
2k, per seed and averaged. Baseline: 5-fold out-of-fold logistic regression, rank by 1 - p(given
label). Chosen: embedflow.insight.label_issues (the mean of that and the label share among the 10 nearest
other vectors, cosine, leave-one-out; both parts come from one insight.out_of_fold_components call).
Then what the methods say about the data as it is: top label issues, top outliers, near-duplicate groups
and how many of them a plain stratified 80/20 split cuts. Prints, and writes
benchmarks/results/audit.json."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from embedflow import insight  # noqa: E402


def load(path):
    with h5py.File(path, "r") as f:
        return (f["embeddings"][:], f["labels"][:].astype(np.int64), list(f["keys"].asstr()[:]),
                list(f["hashes"].asstr()[:]), list(f["classes"].asstr()[:]))


def flip(y, frac, seed, n_classes):
    rng = np.random.default_rng(1000 + seed)
    idx = rng.choice(len(y), int(round(frac * len(y))), replace=False)
    noisy = y.copy()
    noisy[idx] = (noisy[idx] + rng.integers(1, n_classes, len(idx))) % n_classes
    flipped = np.zeros(len(y), bool)
    flipped[idx] = True
    return noisy, flipped


def ranking_metrics(scores, flipped):
    k = int(flipped.sum())
    order = np.argsort(-scores, kind="stable")
    return float(flipped[order[:k]].mean()), float(flipped[order[:2 * k]].sum() / k)


def given(P, y):
    return P[np.arange(len(y)), y]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default="cache/embeddings.h5")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--fracs", default="0.05,0.1")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "audit.json"))
    args = ap.parse_args()
    X, y, keys, hashes, classes = load(args.cache)
    n_classes = len(classes)
    result = {"cache": str(args.cache), "n": len(y), "dim": int(X.shape[1]), "classes": classes,
              "machine": platform.platform(), "label_issues": {}}

    scorers = {
        "baseline: oof logreg, 1 - p(given)": lambda parts, yy: 1 - given(parts["logreg"], yy),
        "leave-one-out kNN (cosine, k=10), 1 - share(given)": lambda parts, yy: 1 - given(parts["knn"], yy),
        "chosen: label_issues (mean of both)": lambda parts, yy: 1 - given((parts["logreg"] + parts["knn"]) / 2, yy),
    }
    for frac in [float(f) for f in args.fracs.split(",")]:
        per = {name: [] for name in scorers}
        for seed in range(args.seeds):
            noisy, flipped = flip(y, frac, seed, n_classes)
            t = time.perf_counter()
            parts = insight.out_of_fold_components(X, noisy, seed=seed)
            dt = time.perf_counter() - t
            line = [f"{frac:.0%} seed {seed} ({dt:.1f}s):"]
            for name, fn in scorers.items():
                p, r = ranking_metrics(fn(parts, noisy), flipped)
                per[name].append({"seed": seed, "precision_at_k": p, "recall_at_2k": r, "seconds": dt})
                line.append(f"{name.split(':')[0]} P@k {p:.3f} R@2k {r:.3f};")
            print(" ".join(line), flush=True)
        summary = {}
        for name, rows in per.items():
            p = np.array([r["precision_at_k"] for r in rows])
            r = np.array([r["recall_at_2k"] for r in rows])
            summary[name] = {"precision_at_k_mean": float(p.mean()), "precision_at_k_std": float(p.std()),
                             "recall_at_2k_mean": float(r.mean()), "recall_at_2k_std": float(r.std()),
                             "per_seed": rows}
            print(f"  {frac:.0%} {name:45s} P@k {p.mean():.3f} ± {p.std():.3f}   R@2k {r.mean():.3f} ± {r.std():.3f}")
        result["label_issues"][f"{frac:g}"] = {"k": int(round(frac * len(y))), "scorers": summary}

    # the data as it is
    t = time.perf_counter()
    scores, suggested = insight.label_issues(X, y, seed=0)
    result["label_issues_seconds"] = time.perf_counter() - t
    top = np.argsort(-scores, kind="stable")[:15]
    result["top_label_issues"] = [{"key": keys[i], "given": classes[y[i]], "suggested": classes[suggested[i]],
                                   "score": round(float(scores[i]), 3)} for i in top]
    print(f"\nlabel_issues on the data as it is: {result['label_issues_seconds']:.1f}s; "
          f"{int((scores > 0.5).sum())} images score > 0.5; top 15:")
    for row in result["top_label_issues"]:
        print(f"  {row['score']:.3f}  {row['key']}  -> {row['suggested']}")

    t = time.perf_counter()
    out = insight.outliers(X, y)
    result["outliers_seconds"] = time.perf_counter() - t
    top = np.argsort(-out, kind="stable")[:10]
    result["top_outliers"] = [{"key": keys[i], "score": round(float(out[i]), 2)} for i in top]
    print(f"\noutliers ({result['outliers_seconds']:.2f}s), top 10:")
    for row in result["top_outliers"]:
        print(f"  {row['score']:.2f}  {row['key']}")

    # exact duplicates (same bytes) and near-duplicate groups
    by_hash = {}
    for i, h in enumerate(hashes):
        by_hash.setdefault(h, []).append(i)
    exact = [[keys[i] for i in ix] for ix in by_hash.values() if len(ix) > 1]
    result["exact_duplicates"] = exact
    print(f"\nexact duplicate files (same sha256): {len(exact)} {exact}")
    from sklearn.model_selection import train_test_split
    train, val = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=0)
    side = np.zeros(len(y), int)
    side[val] = 1
    result["near_duplicates"] = {}
    for threshold in (0.99, 0.95, 0.92, 0.90):
        t = time.perf_counter()
        groups = insight.near_duplicate_groups(X, threshold)
        dt = time.perf_counter() - t
        sizes = np.bincount(groups)
        multi = np.flatnonzero(sizes > 1)
        cut = [g for g in multi if len(set(side[groups == g])) > 1]
        mixed = [g for g in multi if len(set(y[groups == g])) > 1]
        entry = {"seconds": dt, "groups_gt1": len(multi), "images_in_them": int(sizes[multi].sum()),
                 "largest": int(sizes.max()), "mixed_label_groups": len(mixed),
                 "cut_by_stratified_80_20_seed0": len(cut),
                 "groups": [[keys[i] for i in np.flatnonzero(groups == g)] for g in multi]}
        result["near_duplicates"][f"{threshold:g}"] = entry
        print(f"near-duplicate groups at cosine >= {threshold}: {len(multi)} groups of size > 1 "
              f"({entry['images_in_them']} images, largest {entry['largest']}, {len(mixed)} with mixed labels); "
              f"a plain stratified 80/20 split (seed 0) puts {len(cut)} of them on both sides ({dt:.2f}s)")

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
