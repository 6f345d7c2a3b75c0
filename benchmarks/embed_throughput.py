"""Embedding throughput: embedflow against the notebook recipe, measured side by side in one run.

    python benchmarks/embed_throughput.py [--data ../shared/data/flowers-dev] [--repeat 2]

Phases, each in its own process (so import and start-up costs count, as they do for a user):
  recipe      keras.utils.image_dataset_from_directory(image_size=(224,224), batch_size=32)
              -> preprocess_input -> MobileNetV2(include_top=False, pooling="avg").predict
  first       `embedflow embed` with an empty EMBEDFLOW_HOME: includes the one-time TFLite conversion
  cold        `embedflow embed` into a new cache (converted backbone already on disk)
  warm        `embedflow embed` again on unchanged data (hashing only)
  memory      peak RSS of `embed` on 1,000 and 4,000 synthetic images (96 px): must stay flat
Images/s are end to end: files on disk to vectors (the recipe's own predict-only rate is reported too).
The machine is noisy, so recipe and cold alternate `--repeat` times and the best of each is compared.
Writes benchmarks/results/embed_throughput.json. Needs the ImageNet weights (KERAS_HOME).
"""

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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EMBEDFLOW = str(Path(sys.executable).with_name("embedflow"))

RECIPE = r"""
import json, os, sys, time
t0 = time.perf_counter()
import tensorflow as tf, keras
data = sys.argv[1]
ds = keras.utils.image_dataset_from_directory(data, image_size=(224, 224), batch_size=32, shuffle=False, verbose=False)
model = keras.applications.MobileNetV2(include_top=False, pooling="avg", weights="imagenet", input_shape=(224, 224, 3))
ds = ds.map(lambda x, y: keras.applications.mobilenet_v2.preprocess_input(x))
t1 = time.perf_counter()
out = model.predict(ds, verbose=0)
t2 = time.perf_counter()
print(json.dumps({"images": int(out.shape[0]), "seconds_total": t2 - t0, "seconds_predict": t2 - t1}))
"""


def run(cmd: list[str], env: dict) -> tuple[float, int, str]:
    """(wall seconds, peak RSS in MB of that process, stdout)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    return wall, usage.ru_maxrss // 1024, out


def count_images(data: Path) -> int:
    exts = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
    return sum(1 for p in data.rglob("*") if p.suffix.lower() in exts and not p.name.startswith("."))


def embed_cmd(data, cache, *extra):
    return [EMBEDFLOW, "embed", str(data), "--cache", str(cache), "--json", *extra]


def synthetic_folder(root: Path, n: int) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(n)
    for i in range(n):
        d = root / f"class{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)
        Image.fromarray(arr).save(d / f"{i:06d}.jpg", quality=80)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "flowers-dev")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "embed_throughput.json")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    n = count_images(args.data)
    work = Path(tempfile.mkdtemp(prefix="embedflow-bench-"))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "EMBEDFLOW_HOME": str(work / "home")}
    results: dict = {"data": str(args.data), "images": n, "cpu_count": os.cpu_count(),
                     "machine": platform.processor() or platform.machine(), "python": platform.python_version(),
                     "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    print(f"{n} images in {args.data}; work folder {work}", flush=True)
    wall, rss, out = run(embed_cmd(args.data, work / "first.h5"), env)
    results["first_run"] = {"seconds": wall, "images_per_s": n / wall, "peak_rss_mb": rss, "summary": json.loads(out)}
    print(f"first run (with one-time conversion): {wall:.1f}s", flush=True)

    recipe, cold = [], []
    for i in range(args.repeat):
        wall, rss, out = run([sys.executable, "-c", RECIPE, str(args.data)], env)
        r = json.loads(out)
        recipe.append({"seconds": wall, "images_per_s": r["images"] / wall,
                       "predict_images_per_s": r["images"] / r["seconds_predict"], "peak_rss_mb": rss})
        print(f"recipe #{i + 1}: {wall:.1f}s = {r['images'] / wall:.1f} img/s "
              f"(predict alone {r['images'] / r['seconds_predict']:.1f} img/s)", flush=True)
        cache = work / f"cold{i}.h5"
        wall, rss, out = run(embed_cmd(args.data, cache), env)
        cold.append({"seconds": wall, "images_per_s": n / wall, "peak_rss_mb": rss, "summary": json.loads(out)})
        print(f"embed cold #{i + 1}: {wall:.1f}s = {n / wall:.1f} img/s", flush=True)
    wall, rss, out = run(embed_cmd(args.data, cache), env)
    warm = {"seconds": wall, "peak_rss_mb": rss, "summary": json.loads(out)}
    print(f"embed warm: {wall:.2f}s", flush=True)

    best_recipe = max(recipe, key=lambda r: r["images_per_s"])
    best_cold = max(cold, key=lambda r: r["images_per_s"])
    results.update({
        "recipe_runs": recipe, "cold_runs": cold, "warm": warm,
        "recipe_images_per_s": best_recipe["images_per_s"],
        "cold_images_per_s": best_cold["images_per_s"],
        "speedup_vs_recipe": best_cold["images_per_s"] / best_recipe["images_per_s"],
        "warm_fraction_of_cold": warm["seconds"] / best_cold["seconds"],
    })

    if not args.skip_memory:
        mem = {}
        warmup = synthetic_folder(work / "syn-warmup", 8)  # converts the 96 px backbone outside the measurement
        run(embed_cmd(warmup, work / "warmup.h5", "--image-size", "96"), env)
        for size in (1000, 4000):
            folder = synthetic_folder(work / f"syn{size}", size)
            wall, rss, _ = run(embed_cmd(folder, work / f"syn{size}.h5", "--image-size", "96"), env)
            mem[size] = {"seconds": wall, "peak_rss_mb": rss}
            print(f"memory: {size} images -> peak RSS {rss} MB ({wall:.1f}s)", flush=True)
        results["memory"] = mem
        results["memory_ratio_4000_vs_1000"] = mem[4000]["peak_rss_mb"] / mem[1000]["peak_rss_mb"]

    print()
    print(f"| what | seconds | images/s | peak RSS MB |")
    print(f"| --- | ---: | ---: | ---: |")
    print(f"| notebook recipe (best of {args.repeat}) | {best_recipe['seconds']:.1f} | {best_recipe['images_per_s']:.1f} | {best_recipe['peak_rss_mb']} |")
    print(f"| embedflow embed, cold (best of {args.repeat}) | {best_cold['seconds']:.1f} | {best_cold['images_per_s']:.1f} | {best_cold['peak_rss_mb']} |")
    print(f"| embedflow embed, first run ever (+ conversion) | {results['first_run']['seconds']:.1f} | {results['first_run']['images_per_s']:.1f} | {results['first_run']['peak_rss_mb']} |")
    print(f"| embedflow embed, warm (unchanged) | {warm['seconds']:.2f} | - | {warm['peak_rss_mb']} |")
    print(f"speed-up vs recipe: {results['speedup_vs_recipe']:.2f}x; warm rerun = {results['warm_fraction_of_cold']:.1%} of cold")
    if "memory" in results:
        print(f"peak RSS 4,000 vs 1,000 images: {results['memory_ratio_4000_vs_1000']:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
