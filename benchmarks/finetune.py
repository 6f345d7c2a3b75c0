"""Fine-tuning benchmark: time per epoch and final validation accuracy on flowers-dev.

    KERAS_HOME=/work/shared/keras .venv/bin/python benchmarks/finetune.py [DATA] [--set key=value ...]

Writes benchmarks/results/finetune-<UTC time>.json (and the model folder under /tmp).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from embedflow import backbones  # noqa: E402
finetune = importlib.import_module("embedflow.finetune")  # the module (`from embedflow import finetune` is the function)
from embedflow.progress import Reporter  # noqa: E402


class Printer(Reporter):
    def info(self, message):
        print(time.strftime("%H:%M:%S"), message, flush=True)

    def warn(self, message):
        print(time.strftime("%H:%M:%S"), "warning:", message, flush=True)


def parse_value(key: str, text: str):
    """A --set value in the type of the default: true/false for flags, numbers for numbers."""
    if key not in finetune.DEFAULTS:
        raise SystemExit(f"unknown hyperparameter {key}; known: {', '.join(finetune.DEFAULTS)}")
    default = finetune.DEFAULTS[key]
    if isinstance(default, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise SystemExit(f"{key} takes true or false, not {text}")
        return text.lower() in ("true", "1")
    if isinstance(default, (int, float)):
        return type(default)(float(text))
    return text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="?", default=str(HERE.parent.parent / "shared" / "data" / "flowers-dev"))
    ap.add_argument("--out", default="/tmp/embedflow-bench-ft")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--seed", type=int, default=0, help="seed of the split and of training (0: the CLI default)")
    ap.add_argument("--set", action="append", default=[], help="hyperparameter override, e.g. unfreeze_top=80")
    args = ap.parse_args()
    params = {key: parse_value(key, value) for key, value in (item.split("=", 1) for item in args.set)}
    spec = backbones.get_spec("mobilenet_v2", args.image_size)
    t0 = time.perf_counter()
    r = finetune.finetune(args.data, args.out, spec=spec, seed=args.seed, params=params, reporter=Printer())
    result = {
        "benchmark": "finetune", "data": args.data, "image_size": args.image_size, "seed": args.seed,
        "hyperparameters": {**finetune.DEFAULTS, **params}, "n_train": r.n_train, "n_val": r.n_val,
        "val_accuracy": r.report["accuracy"], "val_macro_f1": r.report["macro_f1"],
        "stage1_val_accuracy_last": (r.history["stage1"].get("val_accuracy") or [None])[-1],
        "history": {stage: {k: [round(float(x), 4) for x in v] for k, v in h.items()} for stage, h in r.history.items()},
        "epoch_seconds": r.epoch_seconds, "epochs_run": {k: len(v) for k, v in r.epoch_seconds.items()},
        "total_seconds": round(time.perf_counter() - t0, 1), "cpus": os.cpu_count(),
        "machine": platform.machine(), "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = HERE / "results" / f"finetune-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print("wrote", out)


if __name__ == "__main__":
    main()
