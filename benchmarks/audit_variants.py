"""Label-issue scorers tried against issue #17's target (precision@k >= 0.85, recall@2k >= 0.95 at 5% flips).

    pip install cleanlab   # only for this script; embedflow does not depend on it
    python benchmarks/audit_variants.py --cache cache/embeddings.h5 [--seeds 3] [--fracs 0.05,0.1] \
        [--components /tmp/audit_components]

Same protocol as benchmarks/audit.py (its `flip`: a seeded random 5% / 10% of labels flipped to another class;
precision of the top k, k = number flipped, and recall within the top 2k; seeds 0..n-1). Out-of-fold class
probabilities are computed once per (fraction, seed) and kept in --components as comp_{frac}_{seed}.npz
(reused by later runs; the SVM part takes minutes per seed on a shared 2-core machine):

- lr5 / lr10: 5- / 10-fold out-of-fold logistic regression (standardised, C=0.03: insight.LR_C);
- knn10 / knn20: label share among the 10 / 20 nearest other vectors (cosine, leave-one-out);
- svm5: 5-fold out-of-fold RBF SVM as the svm head (L2-normalised, C=10, Platt-scaled probabilities);
- lr5_bag: lr5 again with 4 other fold splits (fold seeds 100-103), averaged with lr5 (bagging over splits);
- lr5_p2 / knn10_p2: a second pass: the top 2k suspects of the shipped score are dropped from the training
  folds and from the neighbours, then everything is rescored.

Scorers: 1 - p(given) on single components and on averaged probabilities; cleanlab's rankings
(`cleanlab.rank.get_label_quality_scores`: self_confidence, normalized_margin, confidence_weighted_entropy)
and its confident-joint filters (`cleanlab.filter.find_label_issues`, the flagged images first, each
group ordered by 1 - p(given)); per-class calibration (rank by the quantile of p(given) among the images
of the given class); a typicality term (mean cosine to the 20 nearest vectors). Also: where the shipped
scorer's false positives rank when no label is flipped (fraction 0, seed 0). Prints, and writes
benchmarks/results/audit_variants.json."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from audit import flip, given, load, ranking_metrics  # noqa: E402

from embedflow import insight  # noqa: E402

COMPONENTS = ("lr5", "knn10", "knn20", "svm5", "lr10")


def oof_logreg(X64, y, n_classes, seed, n_splits=5, drop=None):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler
    P = np.zeros((len(y), n_classes))
    for tr, te in StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(X64, y):
        if drop is not None:
            tr = tr[~drop[tr]]
        sc = StandardScaler().fit(X64[tr])
        lr = LogisticRegression(C=insight.LR_C, max_iter=1000).fit(sc.transform(X64[tr]), y[tr])
        P[np.ix_(te, lr.classes_)] = lr.predict_proba(sc.transform(X64[te]))
    return P


def oof_svm(X, y, n_classes, seed, n_splits=5):
    from sklearn.model_selection import StratifiedKFold

    from embedflow.heads.kinds import make_head
    P = np.zeros((len(y), n_classes))
    for tr, te in StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(X, y):
        m = make_head("svm", seed=seed).fit(X[tr], y[tr])
        P[np.ix_(te, m.classes_)] = m.predict_proba(X[te])
    return P


def knn_share(S, y, n_classes, k, drop=None):
    """S: cosine similarities with -inf on the diagonal."""
    if drop is not None:
        S = S.copy()
        S[:, drop] = -np.inf
    nn = np.argsort(-S, axis=1, kind="stable")[:, :k]
    votes = y[nn]
    return np.stack([(votes == c).mean(axis=1) for c in range(n_classes)], axis=1)


def components(X, S, y0, n_classes, frac, seed, folder, only=None):
    path = Path(folder) / f"comp_{frac:g}_{seed}.npz"
    d = dict(np.load(path)) if path.exists() else {}
    noisy, flipped = flip(y0, frac, seed, n_classes)
    if "noisy" in d and not np.array_equal(d["noisy"], noisy):
        raise SystemExit(f"{path} was made from other labels; remove it")
    d["noisy"], d["flipped"] = noisy, flipped
    X64 = X.astype(np.float64)
    jobs = {"lr5": lambda: oof_logreg(X64, noisy, n_classes, seed),
            "knn10": lambda: knn_share(S, noisy, n_classes, 10),
            "knn20": lambda: knn_share(S, noisy, n_classes, 20),
            "svm5": lambda: oof_svm(X, noisy, n_classes, seed),
            "lr10": lambda: oof_logreg(X64, noisy, n_classes, seed, n_splits=10),
            "lr5_bag": lambda: np.stack([oof_logreg(X64, noisy, n_classes, 100 + j) for j in range(4)])}
    for name, fn in jobs.items():
        if name not in d and (only is None or name in only):
            t = time.perf_counter()
            d[name] = fn()
            d["t_" + name] = time.perf_counter() - t
            np.savez(path, **d)
            print(f"  {frac:g} seed {seed}: {name} {d['t_' + name]:.1f}s", flush=True)
    if "lr5_p2" not in d and only is None:
        k = int(flipped.sum())
        score = 1 - given((d["lr5"] + d["knn10"]) / 2, noisy)
        drop = np.zeros(len(noisy), bool)
        drop[np.argsort(-score, kind="stable")[:2 * k]] = True
        t = time.perf_counter()
        d["lr5_p2"] = oof_logreg(X64, noisy, n_classes, seed, drop=drop)
        d["knn10_p2"] = knn_share(S, noisy, n_classes, 10, drop=drop)
        d["t_p2"] = time.perf_counter() - t
        np.savez(path, **d)
        print(f"  {frac:g} seed {seed}: second pass {d['t_p2']:.1f}s", flush=True)
    return d


def class_quantile(p, y):
    """1 - the share of the given class's images whose p(given) is <= this image's: per-class calibration."""
    s = np.zeros(len(y))
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        v = p[rows]
        s[rows] = 1 - np.searchsorted(np.sort(v), v, side="right") / len(rows)
    return s


def variants(d, typicality):
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    y = d["noisy"]
    lr5, knn10, knn20, svm5, lr10 = (d[k] for k in COMPONENTS)
    probs = {
        "lr5 (baseline)": lr5, "knn10": knn10, "knn20": knn20, "svm5": svm5, "lr10": lr10,
        "(lr5+knn10)/2 (shipped)": (lr5 + knn10) / 2,
        "(lr10+knn10)/2": (lr10 + knn10) / 2,
        "(lr5+knn20)/2": (lr5 + knn20) / 2,
        "(lr5+svm5)/2": (lr5 + svm5) / 2,
        "(svm5+knn10)/2": (svm5 + knn10) / 2,
        "(lr5+svm5+knn10)/3": (lr5 + svm5 + knn10) / 3,
        "(lr10+svm5+knn10)/3": (lr10 + svm5 + knn10) / 3,
        "0.7 lr5 + 0.3 knn10": 0.7 * lr5 + 0.3 * knn10,
        "0.3 lr5 + 0.7 knn10": 0.3 * lr5 + 0.7 * knn10,
        "second pass (lr5+knn10)/2, top 2k dropped from training": (d["lr5_p2"] + d["knn10_p2"]) / 2,
        "(lr5 averaged over 5 fold splits + knn10)/2": ((lr5 + d["lr5_bag"].sum(axis=0)) / 5 + knn10) / 2,
    }
    out = {}
    for pname, P in probs.items():
        base = 1 - given(P, y)
        out[f"{pname}: 1 - p(given)"] = base
        if pname not in ("lr5 (baseline)", "(lr5+knn10)/2 (shipped)", "(lr5+svm5+knn10)/3"):
            continue
        Pn = (P + 1e-6) / (P + 1e-6).sum(axis=1, keepdims=True)
        for method in ("self_confidence", "normalized_margin", "confidence_weighted_entropy"):
            out[f"{pname}: cleanlab {method}"] = -get_label_quality_scores(y, Pn, method=method)
        for filter_by in ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning"):
            flagged = find_label_issues(y, Pn, filter_by=filter_by)
            out[f"{pname}: cleanlab find_label_issues({filter_by}) first"] = base + 10 * flagged
        q = class_quantile(given(P, y), y)
        out[f"{pname}: per-class quantile of p(given)"] = q
        out[f"{pname}: (1 - p(given) + per-class quantile) / 2"] = (base + q) / 2
        if pname == "(lr5+knn10)/2 (shipped)":
            z = (typicality - typicality.mean()) / typicality.std()
            for lam in (0.05, 0.1, 0.2):
                out[f"{pname}: 1 - p(given) + {lam} z(typicality)"] = base + lam * z
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default="cache/embeddings.h5")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--fracs", default="0.05,0.1")
    ap.add_argument("--components", default="/tmp/audit_components")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "audit_variants.json"))
    args = ap.parse_args()
    try:
        import cleanlab
    except ImportError:
        raise SystemExit("this benchmark needs cleanlab: pip install cleanlab")
    warnings.filterwarnings("ignore")
    Path(args.components).mkdir(parents=True, exist_ok=True)
    X, y, keys, _, classes = load(args.cache)
    n_classes = len(classes)
    U = insight._unit(X)
    S = U @ U.T
    np.fill_diagonal(S, -np.inf)
    typicality = (-np.sort(-S, axis=1)[:, :20]).mean(axis=1)
    result = {"cache": str(args.cache), "n": len(y), "cleanlab": cleanlab.__version__, "fracs": {}}
    for frac in [float(f) for f in args.fracs.split(",")]:
        table = {}
        for seed in range(args.seeds):
            d = components(X, S, y, n_classes, frac, seed, args.components)
            for name, score in variants(d, typicality).items():
                p, r = ranking_metrics(score, d["flipped"])
                table.setdefault(name, []).append({"seed": seed, "precision_at_k": p, "recall_at_2k": r})
        summary = {}
        print(f"\n{frac:.0%} flipped, seeds 0-{args.seeds - 1} (best precision@k first):")
        for name, rows in sorted(table.items(), key=lambda kv: -np.mean([r["precision_at_k"] for r in kv[1]])):
            p = np.array([r["precision_at_k"] for r in rows])
            r = np.array([r["recall_at_2k"] for r in rows])
            summary[name] = {"precision_at_k_mean": float(p.mean()), "precision_at_k_std": float(p.std()),
                             "recall_at_2k_mean": float(r.mean()), "recall_at_2k_std": float(r.std()),
                             "per_seed": rows}
            print(f"  {name:95s} P@k {p.mean():.3f} ± {p.std():.3f}  R@2k {r.mean():.3f} ± {r.std():.3f}")
        result["fracs"][f"{frac:g}"] = summary

    # where the shipped scorer's false positives rank on the data as it is (nothing flipped)
    clean = components(X, S, y, n_classes, 0.0, 0, args.components, only=("lr5", "knn10"))
    s0 = 1 - given((clean["lr5"] + clean["knn10"]) / 2, y)
    rank0 = np.empty(len(y), int)
    rank0[np.argsort(-s0, kind="stable")] = np.arange(len(y))
    fps, recurring = [], {}
    for frac in [float(f) for f in args.fracs.split(",")]:
        for seed in range(args.seeds):
            d = components(X, S, y, n_classes, frac, seed, args.components)
            k = int(d["flipped"].sum())
            top = np.argsort(-(1 - given((d["lr5"] + d["knn10"]) / 2, d["noisy"])), kind="stable")[:k]
            fp = top[~d["flipped"][top]]
            for i in fp:
                recurring[int(i)] = recurring.get(int(i), 0) + 1
            fps.append({"frac": frac, "seed": seed, "k": k, "false_positives": len(fp),
                        "clean_rank_median": float(np.median(rank0[fp])),
                        "clean_rank_max": int(rank0[fp].max()) if len(fp) else None,
                        "in_clean_top_k": int((rank0[fp] < k).sum())})
            print(f"{frac:.0%} seed {seed}: {len(fp)} false positives in the top {k}; their rank with nothing "
                  f"flipped: median {np.median(rank0[fp]):.0f}, {int((rank0[fp] < k).sum())} in that top {k}")
    result["shipped_false_positives"] = fps
    result["recurring_false_positives"] = [
        {"key": keys[i], "times": n, "clean_rank": int(rank0[i]), "clean_score": round(float(s0[i]), 3),
         "given": classes[y[i]], "suggested": classes[int(((clean['lr5'] + clean['knn10']) / 2)[i].argmax())]}
        for i, n in sorted(recurring.items(), key=lambda kv: (-kv[1], rank0[kv[0]])) if n >= 2]
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
