"""Embedding throughput: embedflow against the notebook recipe, measured side by side in one run.

    python benchmarks/embed_throughput.py [--data ../shared/data/flowers-dev] [--repeat 2]

Phases, each in its own process (so import and start-up costs count, as they do for a user):
  recipe      keras.utils.image_dataset_from_directory(image_size=(224,224), batch_size=32)
              -> preprocess_input -> MobileNetV2(include_top=False, pooling="avg").predict
  first       `embedflow embed` with an empty EMBEDFLOW_HOME: includes the one-time TFLite conversion
              (fp32, then int8 with its calibration)
  cold        `embedflow embed` (fp32) and `embedflow embed --precision int8` into new caches
  warm        `embedflow embed` again on unchanged data (hashing only)
  limits      in one process: inference-only img/s per core (one single-threaded interpreter, CPU time) and
              on all cores (one interpreter per thread), fp32 and int8; decode-only img/s per core
              (CPU time) with the old decoder (PIL only, ICC transforms rebuilt per image) and the new one;
              the decode+inference limit on all cores = cores / (1/decode + 1/inference)
  heads       held-out accuracy of logreg, svm, dense, knn on the fp32 and the int8 vectors (same split:
              stratified 80/20, seed 0, the same keys on both sides)
  memory      peak RSS of `embed` on 1,000 and 4,000 synthetic images (96 px): must stay flat
Images/s are end to end: files on disk to vectors (the recipe's own predict-only rate is reported too).
The machine is noisy, so recipe and the cold runs alternate `--repeat` times and the best of each is
compared. Writes benchmarks/results/embed_throughput-int8-<UTC time>.json (--out to choose; never the
fp32-only embed_throughput.json the README cites by default). Needs the ImageNet weights (KERAS_HOME).
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


LIMITS = r"""
import json, os, sys, threading, time
import numpy as np
from pathlib import Path
from embedflow import backbones
from embedflow.backbones.runtimes import make_interpreter, tflite_backbone_path
import embedflow.data.decode as dec
files = sorted(p for p in Path(sys.argv[1]).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[::3]
datas = [p.read_bytes() for p in files]
out = {"decode_images": len(datas)}

def decode_rate(old):
    turbo, transform = dec._turbo_jpeg, dec._srgb_transform
    if old:  # the decoder before: PIL decodes every JPEG, a colour transform is built for every image
        dec._turbo_jpeg, dec._srgb_transform = (lambda *a: None), transform.__wrapped__
    try:
        best = 0.0
        for _ in range(2):
            t = time.process_time()
            for d in datas:
                dec.decode_bytes(d, 224)
            best = max(best, len(datas) / (time.process_time() - t))
        return best
    finally:
        dec._turbo_jpeg, dec._srgb_transform = turbo, transform

out["decode_old_per_core"] = decode_rate(True)
out["decode_new_per_core"] = decode_rate(False)
pixels = np.stack([dec.decode_bytes(d, 224) for d in datas[:8]])[:4]
cores = os.cpu_count()
for precision in ("fp32", "int8"):
    spec = backbones.get_spec(precision=precision)
    path = str(tflite_backbone_path(spec, backbones.fingerprint(spec)))
    one = make_interpreter(path, threads=1)
    inp = one.get_input_details()[0]["index"]
    one.resize_tensor_input(inp, list(pixels.shape)); one.allocate_tensors()
    def loop(it, n):
        for _ in range(n):
            it.set_tensor(inp, pixels); it.invoke()
    loop(one, 3)
    n = 40 if precision == "fp32" else 80
    t = time.process_time(); loop(one, n); per_core = n * len(pixels) / (time.process_time() - t)
    its = [make_interpreter(path, threads=1) for _ in range(cores)]
    for it in its:
        it.resize_tensor_input(inp, list(pixels.shape)); it.allocate_tensors(); loop(it, 1)
    threads = [threading.Thread(target=loop, args=(it, n)) for it in its]
    t = time.perf_counter(); [th.start() for th in threads]; [th.join() for th in threads]
    all_cores = cores * n * len(pixels) / (time.perf_counter() - t)
    out[f"inference_{precision}_per_core"] = per_core
    out[f"inference_{precision}_all_cores"] = all_cores
    out[f"limit_{precision}_all_cores"] = cores / (1 / per_core + 1 / out["decode_new_per_core"])
print(json.dumps(out))
"""

HEADS = r"""
import json, sys, warnings
import numpy as np
from sklearn.model_selection import train_test_split
from embedflow import cache
from embedflow.heads import make_head
warnings.filterwarnings("ignore")
a, b = cache.load(sys.argv[1]), cache.load(sys.argv[2])
keys = sorted(set(a.keys) & set(b.keys))
ia, ib = {k: i for i, k in enumerate(a.keys)}, {k: i for i, k in enumerate(b.keys)}
y = np.array([a.labels[ia[k]] for k in keys])
tr, va = train_test_split(np.arange(len(keys)), test_size=0.2, stratify=y, random_state=0)
out = {"train": int(len(tr)), "validation": int(len(va))}
for name, held, index in (("fp32", a, ia), ("int8", b, ib)):
    X = np.stack([held.embeddings[index[k]] for k in keys]).astype(np.float32)
    for kind in ("logreg", "svm", "dense", "knn"):
        head = make_head(kind, seed=0).fit(X[tr], y[tr])
        out[f"{kind}_{name}"] = float(np.mean(head.predict(X[va]) == y[va]))
c = (a.embeddings[[ia[k] for k in keys]] * b.embeddings[[ib[k] for k in keys]]).sum(1)
c /= np.linalg.norm(a.embeddings[[ia[k] for k in keys]], axis=1) * np.linalg.norm(b.embeddings[[ib[k] for k in keys]], axis=1)
out["cosine_int8_vs_fp32_mean"], out["cosine_int8_vs_fp32_min"] = float(c.mean()), float(c.min())
print(json.dumps(out))
"""


CPU_SECONDS: list[float] = []  # user+system CPU seconds of each run() (the last one: CPU_SECONDS[-1])


def run(cmd: list[str], env: dict) -> tuple[float, int, str]:
    """(wall seconds, peak RSS in MB of that process, stdout); its CPU seconds go to CPU_SECONDS."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    CPU_SECONDS.append(usage.ru_utime + usage.ru_stime)
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


def default_out() -> Path:
    """A new results file per run, named apart from the fp32-only embed_throughput.json."""
    return HERE / "results" / f"embed_throughput-int8-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "flowers-dev")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default: default_out())")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    args.out = args.out or default_out()
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
    wall, rss, out = run(embed_cmd(args.data, work / "first8.h5", "--precision", "int8"), env)
    results["first_run_int8"] = {"seconds": wall, "images_per_s": n / wall, "peak_rss_mb": rss,
                                 "summary": json.loads(out)}
    print(f"first int8 run (with one-time int8 conversion): {wall:.1f}s", flush=True)

    recipe, cold, cold8 = [], [], []
    for i in range(args.repeat):
        wall, rss, out = run([sys.executable, "-c", RECIPE, str(args.data)], env)
        r = json.loads(out)
        recipe.append({"seconds": wall, "images_per_s": r["images"] / wall,
                       "predict_images_per_s": r["images"] / r["seconds_predict"], "peak_rss_mb": rss})
        print(f"recipe #{i + 1}: {wall:.1f}s = {r['images'] / wall:.1f} img/s "
              f"(predict alone {r['images'] / r['seconds_predict']:.1f} img/s)", flush=True)
        cache = work / f"cold{i}.h5"
        wall, rss, out = run(embed_cmd(args.data, cache), env)
        cold.append({"seconds": wall, "images_per_s": n / wall, "peak_rss_mb": rss, "summary": json.loads(out),
                     "cpu_seconds": CPU_SECONDS[-1], "cores_busy": CPU_SECONDS[-1] / wall})
        print(f"embed cold #{i + 1}: {wall:.1f}s = {n / wall:.1f} img/s", flush=True)
        cache8 = work / f"cold8-{i}.h5"
        wall, rss, out = run(embed_cmd(args.data, cache8, "--precision", "int8"), env)
        cold8.append({"seconds": wall, "images_per_s": n / wall, "peak_rss_mb": rss, "summary": json.loads(out),
                      "cpu_seconds": CPU_SECONDS[-1], "cores_busy": CPU_SECONDS[-1] / wall})
        print(f"embed --precision int8 cold #{i + 1}: {wall:.1f}s = {n / wall:.1f} img/s", flush=True)
    wall, rss, out = run(embed_cmd(args.data, cache), env)
    warm = {"seconds": wall, "peak_rss_mb": rss, "summary": json.loads(out)}
    print(f"embed warm: {wall:.2f}s", flush=True)
    _, _, out = run([sys.executable, "-c", LIMITS, str(args.data)], env)
    limits = json.loads(out)
    print("limits: " + ", ".join(f"{k} {v:.1f}" for k, v in limits.items()), flush=True)
    _, _, out = run([sys.executable, "-c", HEADS, str(cache), str(cache8)], env)
    heads = json.loads(out)
    print("heads: " + ", ".join(f"{k} {v:.4f}" for k, v in heads.items()), flush=True)

    best_recipe = max(recipe, key=lambda r: r["images_per_s"])
    best_cold = max(cold, key=lambda r: r["images_per_s"])
    best_cold8 = max(cold8, key=lambda r: r["images_per_s"])
    results.update({
        "recipe_runs": recipe, "cold_runs": cold, "cold_int8_runs": cold8, "warm": warm,
        "recipe_images_per_s": best_recipe["images_per_s"],
        "cold_images_per_s": best_cold["images_per_s"],
        "cold_int8_images_per_s": best_cold8["images_per_s"],
        "speedup_vs_recipe": best_cold["images_per_s"] / best_recipe["images_per_s"],
        "speedup_int8_vs_recipe": best_cold8["images_per_s"] / best_recipe["images_per_s"],
        "warm_fraction_of_cold": warm["seconds"] / best_cold["seconds"],
        "limits": limits,
        "limits_vs_recipe": {k: v / best_recipe["images_per_s"] for k, v in limits.items() if k != "decode_images"},
        "fraction_of_limit_fp32": best_cold["images_per_s"] / limits["limit_fp32_all_cores"],
        "fraction_of_limit_int8": best_cold8["images_per_s"] / limits["limit_int8_all_cores"],
        # the same in CPU time (robust to other jobs on the machine): images per CPU-second of the whole run
        # (start-up, hashing and writing included) against the per-core decode+inference limit
        "cpu_fraction_of_limit_fp32": (n / best_cold["cpu_seconds"]) / (limits["limit_fp32_all_cores"] / os.cpu_count()),
        "cpu_fraction_of_limit_int8": (n / best_cold8["cpu_seconds"]) / (limits["limit_int8_all_cores"] / os.cpu_count()),
        "decode_speedup": limits["decode_new_per_core"] / limits["decode_old_per_core"],
        "heads": heads,
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
    print(f"| embedflow embed --precision int8, cold (best of {args.repeat}) | {best_cold8['seconds']:.1f} | {best_cold8['images_per_s']:.1f} | {best_cold8['peak_rss_mb']} |")
    print(f"| embedflow embed --precision int8, first run ever (+ conversion) | {results['first_run_int8']['seconds']:.1f} | {results['first_run_int8']['images_per_s']:.1f} | {results['first_run_int8']['peak_rss_mb']} |")
    print(f"| embedflow embed, warm (unchanged) | {warm['seconds']:.2f} | - | {warm['peak_rss_mb']} |")
    print(f"speed-up vs recipe: fp32 {results['speedup_vs_recipe']:.2f}x, int8 {results['speedup_int8_vs_recipe']:.2f}x; "
          f"warm rerun = {results['warm_fraction_of_cold']:.1%} of cold")
    print(f"fraction of the decode+inference limit: fp32 {results['fraction_of_limit_fp32']:.0%}, "
          f"int8 {results['fraction_of_limit_int8']:.0%} (in CPU time: fp32 {results['cpu_fraction_of_limit_fp32']:.0%}, "
          f"int8 {results['cpu_fraction_of_limit_int8']:.0%}; cores busy: int8 {best_cold8['cores_busy']:.2f}); "
          f"decoder {results['decode_speedup']:.2f}x per core")
    print("limits (img/s; x recipe): " + ", ".join(f"{k} {limits[k]:.0f} ({v:.2f}x)" for k, v in results["limits_vs_recipe"].items()))
    print("held-out accuracy fp32 / int8: " + ", ".join(
        f"{k} {heads[k + '_fp32']:.2%} / {heads[k + '_int8']:.2%}" for k in ("logreg", "svm", "dense", "knn")))
    if "memory" in results:
        print(f"peak RSS 4,000 vs 1,000 images: {results['memory_ratio_4000_vs_1000']:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
