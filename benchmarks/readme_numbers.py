"""The flowers-dev numbers the README states that no other benchmark produces, measured in one run.

    KERAS_HOME=/path/to/keras python benchmarks/readme_numbers.py --data ../shared/data/flowers-dev \
        [--work /tmp/readme-numbers] [--only cv,knn,duplicates,hub,audit]

Writes benchmarks/results/readme_numbers.json (checked against README.md by benchmarks/check_readme.py):

* cv: 5-fold stratified cross-validated accuracy of the logreg and svm heads (embedflow.heads.make_head,
  exactly as `fit` builds them) over a grid of C, on the whole flowers-dev cache;
* knn: the knn head's validation accuracy (k=7) in the LDA and the raw space, mean over six seeded 80/20
  splits (a stratified split keeping identical files together, seeds 0-5);
* duplicates: near-duplicate pairs of flowers-dev at the default threshold 0.92 (and the most similar
  pairs below it), then 5 photos (the first of each class) re-saved at JPEG quality 60, resized to 80%,
  cropped by 5% per side and brightened 15%, embedded with the same backbone: their cosine to the
  original and whether the original is their nearest cached image;
* hub: a TF2 SavedModel made from Keras' MobileNetV2 (ImageNet weights, x*2-1 inside) embedded through
  `hub:` against `--backbone mobilenet_v2`, on 150 photos (30 per class): the minimum cosine;
* audit: `embedflow audit --json` on the cache in a child process: wall and CPU seconds, peak RSS, and
  what it finds (label issues > 0.5, outliers > 3, duplicate groups).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "results" / "readme_numbers.json"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def embed(folder: Path, cache_path: Path, backbone: str | None = None):
    from embedflow import api

    return api.embed_folder(folder, cache_path, backbone=backbone, reporter=None)


def unit(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def head_cv(held) -> dict:
    from sklearn.model_selection import StratifiedKFold

    from embedflow.heads import make_head

    X, y = held.embeddings, np.asarray(held.labels)
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(X, y))
    grids = {"logreg": [0.01, 0.03, 0.1, 0.3, 1.0], "svm": [1.0, 3.0, 10.0, 30.0]}
    out = {}
    for head, grid in grids.items():
        scores = {}
        for C in grid:
            t = time.perf_counter()
            acc = [float((make_head(head, C=C).fit(X[tr], y[tr]).predict(X[va]) == y[va]).mean()) for tr, va in folds]
            scores[str(C)] = {"mean": float(np.mean(acc)), "folds": acc}
            log(f"cv {head} C={C}: {np.mean(acc):.4f} ({time.perf_counter() - t:.0f} s)")
        best = max(scores, key=lambda c: scores[c]["mean"])
        out[head] = {"scores": scores, "best_C": float(best), "best_mean": scores[best]["mean"]}
    return out


def knn_splits(held) -> dict:
    from embedflow.heads import KNNHead
    from embedflow.models.split import split_indices

    X, y = held.embeddings, np.asarray(held.labels)
    out = {}
    for space in ("lda", "raw"):
        accs = []
        for seed in range(6):
            tr, va = split_indices(y, held.hashes, held.classes, 0.2, seed)
            accs.append(float((KNNHead(k=7, space=space).fit(X[tr], y[tr]).predict(X[va]) == y[va]).mean()))
        out[space] = {"mean": float(np.mean(accs)), "per_seed": accs}
        log(f"knn {space}: {np.mean(accs):.4f}")
    return out


VARIANTS = ("jpeg_q60", "resize_80", "crop_5", "brighten_15")


def make_variant(src: Path, kind: str, dst: Path) -> None:
    from PIL import Image, ImageEnhance, ImageOps

    img = ImageOps.exif_transpose(Image.open(src)).convert("RGB")
    w, h = img.size
    if kind == "resize_80":
        img = img.resize((round(w * 0.8), round(h * 0.8)), Image.BICUBIC)
    elif kind == "crop_5":
        img = img.crop((round(w * 0.05), round(h * 0.05), round(w * 0.95), round(h * 0.95)))
    elif kind == "brighten_15":
        img = ImageEnhance.Brightness(img).enhance(1.15)
    img.save(dst, "JPEG", quality=60 if kind == "jpeg_q60" else 90)


def duplicates(held, data: Path, work: Path) -> dict:
    from embedflow import cache
    from embedflow.insight import near_duplicate_pairs

    X = unit(held.embeddings)
    labels = np.asarray(held.labels)
    pairs = near_duplicate_pairs(held.embeddings, 0.86)
    rows = []
    for i, j, s in zip(*pairs):
        rows.append({"a": held.keys[int(i)], "b": held.keys[int(j)], "cosine": float(s),
                     "cross_class": bool(labels[int(i)] != labels[int(j)])})
    rows.sort(key=lambda r: -r["cosine"])
    at = [r for r in rows if r["cosine"] >= 0.92]
    below = [r for r in rows if r["cosine"] < 0.92]
    variants_dir = work / "variants"
    shutil.rmtree(variants_dir, ignore_errors=True)
    originals = [next(k for k in held.keys if k.startswith(c + "/")) for c in held.classes]
    for key in originals:
        for kind in VARIANTS:
            dst = variants_dir / key.split("/")[0] / f"{Path(key).stem}__{kind}.jpg"
            dst.parent.mkdir(parents=True, exist_ok=True)
            make_variant(data / key, kind, dst)
    embed(variants_dir, work / "variants.h5")
    var = cache.load(work / "variants.h5")
    V = unit(var.embeddings)
    sims = V @ X.T
    copies = []
    for r, key in enumerate(var.keys):
        stem, kind = Path(key).stem.split("__")
        original = next(k for k in originals if Path(k).stem == stem)
        o = held.keys.index(original)
        copies.append({"copy": key, "kind": kind, "original": original, "cosine": float(sims[r, o]),
                       "original_is_top1": bool(int(np.argmax(sims[r])) == o)})
    cos = [c["cosine"] for c in copies]
    return {"threshold": 0.92, "pairs_at_threshold": len(at), "cross_class_at_threshold": sum(r["cross_class"] for r in at),
            "pairs": at, "highest_below_threshold": below[:5],
            "copies": copies, "n_copies": len(copies), "copies_at_threshold": sum(c >= 0.92 for c in cos),
            "copies_min_cosine": min(cos), "copies_max_cosine": max(cos),
            "copies_top1": sum(c["original_is_top1"] for c in copies)}


def hub_vs_keras(data: Path, work: Path) -> dict:
    import keras
    import tensorflow as tf

    from embedflow import cache

    subset = work / "hub150"
    shutil.rmtree(subset, ignore_errors=True)
    for c in sorted(p.name for p in data.iterdir() if p.is_dir()):
        for f in sorted((data / c).iterdir())[:30]:
            (subset / c).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, subset / c / f.name)
    base = keras.applications.MobileNetV2(input_shape=(224, 224, 3), include_top=False, pooling="avg")

    class FeatureVector(tf.Module):
        def __init__(self):
            super().__init__()
            self.base = base

        @tf.function(input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32)])
        def __call__(self, images):
            return self.base(images * 2.0 - 1.0, training=False)

    saved = work / "mobilenet_v2_savedmodel"
    shutil.rmtree(saved, ignore_errors=True)
    tf.saved_model.save(FeatureVector(), str(saved))
    embed(subset, work / "hub150-keras.h5")
    embed(subset, work / "hub150-hub.h5", backbone=f"hub:{saved}")
    a, b = cache.load(work / "hub150-keras.h5"), cache.load(work / "hub150-hub.h5")
    assert a.keys == b.keys
    cos = np.sum(unit(a.embeddings) * unit(b.embeddings), axis=1)
    return {"images": len(a.keys), "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
            "hub_runtime_fingerprint": b.fingerprint.get("backbone")}


AUDIT_CHILD = """import resource, runpy, sys, time
sys.argv = ["embedflow", "audit", "--cache", sys.argv[1], "--json"]
try:
    runpy.run_module("embedflow.cli", run_name="__main__")
finally:
    r = resource.getrusage(resource.RUSAGE_SELF)
    print(f"RUSAGE {r.ru_utime + r.ru_stime} {r.ru_maxrss}", file=sys.stderr)
"""


def audit_run(cache_path: Path) -> dict:
    """`embedflow audit --json` in a child process that reports its own CPU time and peak RSS."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", AUDIT_CHILD, str(cache_path)], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    cpu, rss_kb = proc.stderr.rsplit("RUSAGE ", 1)[1].split()
    result = json.loads(proc.stdout)
    return {"wall_s": wall, "cpu_s": float(cpu), "peak_rss_mb": int(rss_kb) / 1024,
            "label_issues_over_0_5": sum(i["score"] > 0.5 for i in result["label_issues"]),
            "outliers_over_3": sum(o["score"] > 3 for o in result["outliers"]),
            "duplicate_groups": len(result["duplicates"]),
            "cross_class_groups": sum(bool(g.get("cross_class")) for g in result["duplicates"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("EMBEDFLOW_DATA", ROOT.parent / "shared/data/flowers-dev")))
    ap.add_argument("--work", type=Path, default=Path("/tmp/readme-numbers"))
    ap.add_argument("--only", default="cv,knn,duplicates,hub,audit")
    args = ap.parse_args()
    from embedflow import cache

    args.work.mkdir(parents=True, exist_ok=True)
    cache_path = args.work / "flowers.h5"
    t = time.perf_counter()
    embed(args.data, cache_path)
    log(f"cache ready ({time.perf_counter() - t:.0f} s)")
    held = cache.load(cache_path)
    result = json.loads(OUT.read_text()) if OUT.exists() else {}
    result.update({"data": str(args.data), "images": len(held.keys), "classes": held.classes,
                   "cpu_count": os.cpu_count(), "machine": platform.platform(),
                   "when_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
    parts = {"cv": lambda: head_cv(held), "knn": lambda: knn_splits(held),
             "duplicates": lambda: duplicates(held, args.data, args.work),
             "hub": lambda: hub_vs_keras(args.data, args.work), "audit": lambda: audit_run(cache_path)}
    for name in args.only.split(","):
        t = time.perf_counter()
        result[name] = parts[name]()
        result[name]["seconds"] = time.perf_counter() - t
        OUT.write_text(json.dumps(result, indent=1) + "\n")  # after each part: a later failure keeps the rest
        log(f"{name}: {time.perf_counter() - t:.0f} s")
    print(json.dumps({k: v for k, v in result.items() if k not in ("duplicates",)}, indent=1)[:4000])


if __name__ == "__main__":
    main()
