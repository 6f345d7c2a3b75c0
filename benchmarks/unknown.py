"""Unknown-input rejection (issue #17), measured on a real cache.

    python benchmarks/unknown.py --cache cache/embeddings.h5 [--ood-cache /tmp/ood.h5] [--seeds 3]

1. Far out of domain: non-flower images made here (never committed): real photographs that ship inside
   installed packages (scikit-learn's china.jpg; scikit-image's bundled data when it is installed:
   astronaut, coffee, chelsea, rocket, camera, ...), their flips and random crops; drawn/synthetic
   images (scikit-image's page/text/logo/colorwheel/checkerboard, rendered text documents, matplotlib
   charts, geometric shapes, noise, sklearn digits upscaled). They are embedded with `embedflow embed`
   into --ood-cache (made when missing). All classes of --cache are known; per seed a stratified 80/20
   split: each rejector is fitted on the 80% and calibrated on the 20% at a rate; reported: the
   rejection of held-out known images (the 20% cut in two halves, calibrated on one, measured on the
   other, both ways: an honest estimate for new photos of the known classes), the rejection of each
   out-of-domain kind, and AUROC.
2. Near unknowns, leave one class out: per class u, the other classes are known (80/20 split), u is
   the unknown; rejection of u at rate 0.05 and AUROC.

Candidates: softmax (1 - max probability of the logreg head, the baseline), knn_cosine k=1 and k=5,
mahalanobis, relative_mahalanobis. Prints, and writes benchmarks/results/unknown.json."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from embedflow import insight  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "immunohistochemistry",
          "hubble_deep_field", "clock", "moon", "brick", "grass", "gravel", "cell", "retina", "microaneurysms")
DRAWN = ("page", "text", "logo", "colorwheel", "checkerboard")
RATES = (0.02, 0.03, 0.05)


def make_ood_images(out: Path) -> None:
    """Write the non-flower images, one subfolder per kind, as PNG."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(0)

    def save(kind, name, img):
        d = out / kind
        d.mkdir(parents=True, exist_ok=True)
        img.convert("RGB").save(d / f"{name}.png")

    # real photos
    photos = {}
    from sklearn.datasets import load_sample_image
    photos["sklearn_china"] = load_sample_image("china.jpg")
    try:
        import skimage.data as sd
        for n in PHOTOS + DRAWN:
            try:
                a = getattr(sd, n)()
                if a.dtype != np.uint8:
                    a = (255 * (a.astype(float) - a.min()) / max(1e-9, np.ptp(a))).astype(np.uint8)
                if a.ndim == 2:
                    a = np.stack([a] * 3, -1)
                photos[f"skimage_{n}"] = a[..., :3]
            except Exception as e:
                print("skip", n, type(e).__name__, str(e)[:80])
    except ImportError:
        print("no skimage")
    for name, a in photos.items():
        im = Image.fromarray(a)
        kind = "photo" if name.split("_", 1)[1] in PHOTOS + ("china",) else "drawn"
        save(kind, name, im)
        w, h = im.size
        save(kind + "_aug", name + "_flip", im.transpose(Image.FLIP_LEFT_RIGHT))
        for j in range(3):
            s = rng.uniform(0.5, 0.8)
            cw, ch = int(w * s), int(h * s)
            x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
            save(kind + "_aug", f"{name}_crop{j}", im.crop((x0, y0, x0 + cw, y0 + ch)))


    # rendered text documents
    words = ("the of and to in is that for it as was with be by on not he this are or his from at which but have an they "
             "invoice total amount date payment account number customer order item quantity price report summary").split()
    font = ImageFont.load_default()
    for i in range(20):
        im = Image.new("RGB", (400, 520), "white"); d = ImageDraw.Draw(im)
        y = 20
        while y < 500:
            line = " ".join(rng.choice(words, rng.integers(4, 9)))
            d.text((20, y), line, fill=(0, 0, 0), font=font); y += int(rng.integers(12, 20))
        save("text", f"doc{i}", im)

    # matplotlib charts
    import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
    for i in range(20):
        fig, ax = plt.subplots(figsize=(4, 3), dpi=80)
        kind = i % 4
        if kind == 0: ax.plot(np.cumsum(rng.normal(size=(100, 3)), 0))
        elif kind == 1: ax.bar(range(8), rng.random(8), color=plt.cm.tab10(rng.integers(0, 10)))
        elif kind == 2: ax.scatter(*rng.normal(size=(2, 200)), s=5)
        else: ax.hist(rng.normal(size=500), bins=30)
        ax.set_title(f"chart {i}")
        fig.canvas.draw(); a = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy(); plt.close(fig)
        save("chart", f"chart{i}", Image.fromarray(a))

    # geometric shapes
    for i in range(20):
        bg = tuple(int(v) for v in rng.integers(0, 256, 3))
        im = Image.new("RGB", (256, 256), bg); d = ImageDraw.Draw(im)
        for _ in range(rng.integers(1, 6)):
            box = sorted(rng.integers(0, 256, 2)), sorted(rng.integers(0, 256, 2))
            xy = (box[0][0], box[1][0], box[0][1] + 5, box[1][1] + 5)
            col = tuple(int(v) for v in rng.integers(0, 256, 3))
            [d.rectangle, d.ellipse][int(rng.integers(0, 2))](xy, fill=col)
        save("shapes", f"shapes{i}", im)

    # noise
    for i in range(10):
        a = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) if i % 2 == 0 else \
            np.repeat(np.repeat(rng.integers(0, 256, (14, 14, 3), dtype=np.uint8), 16, 0), 16, 1)
        save("noise", f"noise{i}", Image.fromarray(a))

    # digits upscaled
    from sklearn.datasets import load_digits
    dig = load_digits()
    for i in range(20):
        a = (dig.images[i * 7] * 16).clip(0, 255).astype(np.uint8)
        save("digits", f"digit{i}", Image.fromarray(a).resize((224, 224), Image.NEAREST))

def load(path):
    with h5py.File(path, "r") as f:
        return f["embeddings"][:], f["labels"][:].astype(np.int64), list(f["classes"].asstr()[:]), list(f["keys"].asstr()[:])


class Softmax:
    """The baseline: 1 - max class probability of the logreg head (standardise, C=0.03)."""

    def __init__(self, X, y):
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler
        self.scaler = StandardScaler().fit(X)
        self.model = LogisticRegression(C=0.03, max_iter=1000).fit(self.scaler.transform(X), y)

    def score(self, X):
        return 1.0 - self.model.predict_proba(self.scaler.transform(X)).max(axis=1)


def candidates(X, y):
    """name -> object with score(X); the insight rejectors are fitted with a dummy calibration set
    (thresholds are recomputed here per rate)."""
    out = {"softmax (baseline)": Softmax(X, y)}
    for k in (1, 5):
        out[f"knn_cosine k={k}"] = insight.fit_rejector(X, y, X[:2], method="knn_cosine", k=k)
    out["mahalanobis"] = insight.fit_rejector(X, y, X[:2], method="mahalanobis")
    out["relative_mahalanobis"] = insight.fit_rejector(X, y, X[:2], method="relative_mahalanobis")
    return out


def threshold(calibration_scores, rate):
    return float(np.quantile(calibration_scores, 1.0 - rate, method="higher"))


def auroc(neg, pos):
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos]))


def main():
    from sklearn.model_selection import train_test_split

    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default="cache/embeddings.h5")
    ap.add_argument("--ood-cache", default=os.path.join(tempfile.gettempdir(), "embedflow-ood", "ood.h5"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "unknown.json"))
    args = ap.parse_args()

    ood_cache = Path(args.ood_cache)
    if not ood_cache.exists():
        folder = ood_cache.parent / "images"
        make_ood_images(folder)
        exe = Path(sys.executable).parent / "embedflow"
        subprocess.run([str(exe), "embed", str(folder), "--cache", str(ood_cache), "--quiet"], check=True)
    X, y, classes, _ = load(args.cache)
    Xo, yo, kinds, okeys = load(ood_cache)
    print(f"known: {len(y)} vectors of {len(classes)} classes; out of domain: {len(yo)} images: "
          + ", ".join(f"{k} {int((yo == i).sum())}" for i, k in enumerate(kinds)), flush=True)
    result = {"cache": str(args.cache), "ood_kinds": {k: int((yo == i).sum()) for i, k in enumerate(kinds)},
              "machine": platform.platform(), "far": {}, "loco": {}}

    far = {}
    for seed in range(args.seeds):
        train, val = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=seed)
        halves = np.array_split(np.random.default_rng(seed).permutation(val), 2)
        t = time.perf_counter()
        models = candidates(X[train], y[train])
        fit_s = time.perf_counter() - t
        for name, model in models.items():
            t = time.perf_counter()
            s_val, s_ood = model.score(X[val]), model.score(Xo)
            s_half = [model.score(X[h]) for h in halves]
            score_s = time.perf_counter() - t
            row = {"seed": seed, "auroc": auroc(s_val, s_ood), "score_seconds": score_s, "rates": {}}
            for rate in RATES:
                thr = threshold(s_val, rate)
                held = np.mean([np.mean(s_half[1 - i] > threshold(s_half[i], rate)) for i in (0, 1)])
                row["rates"][f"{rate:g}"] = {
                    "known_heldout_rejected": float(held),
                    "ood_rejected": float(np.mean(s_ood > thr)),
                    "by_kind": {k: float(np.mean(s_ood[yo == i] > thr)) for i, k in enumerate(kinds)},
                    "photos_not_rejected": [okeys[j] for j in np.flatnonzero((s_ood <= thr) & np.isin(yo, [kinds.index(k) for k in kinds if k.startswith("photo")]))],
                }
            far.setdefault(name, []).append(row)
        print(f"far, seed {seed}: fitted in {fit_s:.1f}s", flush=True)
    for name, rows in far.items():
        summary = {"auroc_mean": float(np.mean([r["auroc"] for r in rows])), "per_seed": rows, "rates": {}}
        for rate in RATES:
            key = f"{rate:g}"
            rr = [r["rates"][key] for r in rows]
            summary["rates"][key] = {
                "known_heldout_rejected_mean": float(np.mean([r["known_heldout_rejected"] for r in rr])),
                "ood_rejected_mean": float(np.mean([r["ood_rejected"] for r in rr])),
                "by_kind_mean": {k: float(np.mean([r["by_kind"][k] for r in rr])) for k in kinds},
            }
        result["far"][name] = summary
    print("\nfar out of domain (mean over seeds): rejected share of held-out known flowers / of all "
          "non-flower images / per kind, AUROC")
    for rate in RATES:
        for name, summary in result["far"].items():
            s = summary["rates"][f"{rate:g}"]
            kinds_txt = " ".join(f"{k} {v:.2f}" for k, v in s["by_kind_mean"].items())
            print(f"  rate {rate:.2f} {name:22s} known {s['known_heldout_rejected_mean']:.3f}  ood {s['ood_rejected_mean']:.3f}  "
                  f"[{kinds_txt}]  AUROC {summary['auroc_mean']:.3f}")

    loco = {}
    for seed in range(args.seeds):
        for u in range(len(classes)):
            known = np.flatnonzero(y != u)
            unknown = np.flatnonzero(y == u)
            train, val = train_test_split(known, test_size=0.2, stratify=y[known], random_state=seed)
            halves = np.array_split(np.random.default_rng(seed).permutation(val), 2)
            for name, model in candidates(X[train], y[train]).items():
                s_val, s_unk = model.score(X[val]), model.score(X[unknown])
                s_half = [model.score(X[h]) for h in halves]
                loco.setdefault(name, []).append({
                    "seed": seed, "unknown_class": classes[u], "auroc": auroc(s_val, s_unk),
                    "unknown_rejected": float(np.mean(s_unk > threshold(s_val, 0.05))),
                    "known_heldout_rejected": float(np.mean([np.mean(s_half[1 - i] > threshold(s_half[i], 0.05)) for i in (0, 1)])),
                })
            print(f"loco seed {seed} unknown {classes[u]} done", flush=True)
    print("\nleave one class out, rate 0.05 (mean over classes and seeds; per class: unknown rejected)")
    for name, rows in loco.items():
        per_class = {c: float(np.mean([r["unknown_rejected"] for r in rows if r["unknown_class"] == c])) for c in classes}
        result["loco"][name] = {
            "unknown_rejected_mean": float(np.mean([r["unknown_rejected"] for r in rows])),
            "known_heldout_rejected_mean": float(np.mean([r["known_heldout_rejected"] for r in rows])),
            "auroc_mean": float(np.mean([r["auroc"] for r in rows])),
            "unknown_rejected_by_class": per_class, "runs": rows}
        r = result["loco"][name]
        print(f"  {name:22s} unknown {r['unknown_rejected_mean']:.3f}  known held-out {r['known_heldout_rejected_mean']:.3f}  "
              f"AUROC {r['auroc_mean']:.3f}  [" + " ".join(f"{c} {v:.2f}" for c, v in per_class.items()) + "]")

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
