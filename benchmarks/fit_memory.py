"""Peak memory and time of `fit` on many classes: what the report files (confusion.png, report.html)
cost on top of training.

    python benchmarks/fit_memory.py [--classes 102] [--per-class 80] [--heads logreg svm] [--code DIR]

A synthetic cache of CLASSES x PER_CLASS 1280-d vectors (seeded class centres plus noise, so the heads make
some mistakes) is written to a temporary folder. Each measurement runs in a fresh Python process that
imports embedflow from --code (default: this checkout; give an older checkout to measure "before"):
"fit" trains and scores the head (fit_head, nothing written): the reference; "fit+save" also writes the
model folder with its reports. Peak memory is the child's ru_maxrss. Prints a table and writes
benchmarks/results/fit_memory[-LABEL].json with each peak as a ratio to the reference of the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from embedflow import api
t = time.perf_counter()
clf = api.fit_head(sys.argv[2], sys.argv[3], reporter=None)
fit_s = time.perf_counter() - t
out = {"fit_seconds": fit_s, "accuracy": clf.report_["accuracy"]}
if sys.argv[4] == "save":
    t = time.perf_counter()
    folder = clf.save(Path(sys.argv[5]))
    out["save_seconds"] = time.perf_counter() - t
    from PIL import Image
    with Image.open(folder / "confusion.png") as im:
        out["confusion_png_px"] = list(im.size)
    page = folder / "report.html"
    out["report_html_bytes"] = page.stat().st_size if page.exists() else None
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def synthetic_cache(path: Path, classes: int, per_class: int, dim: int = 1280, seed: int = 0) -> Path:
    import numpy as np

    from embedflow import cache

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    y = np.repeat(np.arange(classes), per_class)
    X = np.maximum(centres[y] + rng.normal(0, 3.0, (len(y), dim)), 0).astype(np.float32)  # ReLU-like, overlapping
    n = len(y)
    hashes = [hashlib.sha256(f"v{i}".encode()).hexdigest() for i in range(n)]
    src = path.with_suffix(".npz")
    np.savez(src, hashes=np.array(hashes, dtype="S64"), vectors=X)
    names = [f"class_{c:03d}" for c in range(classes)]
    rows = [cache.Row(f"{names[y[i]]}/img{i:05d}.jpg", hashes[i], int(y[i]), src, i) for i in range(n)]
    cache.write(path, rows, names, {"backbone": "synthetic", "id": "00000000000000cc"}, str(path.parent / "images"),
                [], dim)
    return path


def measure(code: Path, cache_path: Path, head: str, mode: str, out: Path) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    r = subprocess.run([sys.executable, "-c", CHILD, str(code), str(cache_path), head, mode, str(out)],
                       capture_output=True, text=True, env=env, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, default=102)
    ap.add_argument("--per-class", type=int, default=80)
    ap.add_argument("--heads", nargs="+", default=["logreg", "svm"])
    ap.add_argument("--code", type=Path, default=HERE.parent, help="checkout whose embedflow is measured")
    ap.add_argument("--label", default="", help="suffix of the results file (e.g. before)")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE.parent))
    results = {"classes": args.classes, "per_class": args.per_class, "code": str(args.code), "heads": {}}
    with tempfile.TemporaryDirectory() as tmp:
        cache_path = synthetic_cache(Path(tmp) / "many.h5", args.classes, args.per_class)
        print(f"{args.classes} classes x {args.per_class} vectors; embedflow from {args.code}")
        print("| head | fit: peak MB | fit+save: peak MB | ratio | save s | confusion.png px | report.html KB |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for head in args.heads:
            ref = measure(args.code, cache_path, head, "fit", Path(tmp) / "unused")
            full = measure(args.code, cache_path, head, "save", Path(tmp) / head)
            ratio = full["peak_rss_mb"] / ref["peak_rss_mb"]
            results["heads"][head] = {"fit": ref, "fit_save": full, "peak_ratio_to_fit": ratio}
            page = full.get("report_html_bytes")
            print(f"| {head} | {ref['peak_rss_mb']:.0f} | {full['peak_rss_mb']:.0f} | {ratio:.2f} | "
                  f"{full['save_seconds']:.1f} | {'x'.join(map(str, full['confusion_png_px']))} | "
                  f"{'-' if page is None else f'{page / 1024:.0f}'} |", flush=True)
    out = HERE / "results" / f"fit_memory{'-' + args.label if args.label else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
