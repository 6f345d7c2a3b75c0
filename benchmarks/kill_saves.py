"""Kill `embedflow fit` (logreg, dense), `export` and `finetune` with SIGKILL at random moments while each
replaces an existing model folder, and prove the folder is always the complete old model or the complete
new one.

    KERAS_HOME=/tmp/kh python benchmarks/kill_saves.py --data DATA_FOLDER --cache CACHE.h5 --kills 6 \\
        [--weights W.h5 --image-size 96] [--json benchmarks/results/kill_saves.json]

For each job: one uninterrupted run makes the folder, a second one is timed (T seconds: the first may
include one-time work, e.g. a backbone conversion); then the same command (with
another seed, so the new model differs; export takes no seed: its new folder differs by its timestamps)
is started `--kills` times and killed with SIGKILL after a random
delay in [0.3 T, 1.1 T] (most kills land in the save, the last part of a run). After each kill the folder
must load, and either predict exactly as the old model did, or be a complete new one (its manifest's
sha256s verified by load_model); no staged folder may survive the next writer. Finetune and export use
tiny settings (1 + 1 epochs, the image size given).

Exit 0 and a JSON report when every check held; exit 1 and the first failure otherwise. The test suite
runs a deterministic version (a kill at each phase of the save: tests/models/test_output_safety.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "embedflow.cli", *map(str, args), "--quiet"]


SEEDLESS = {"export"}  # commands without a --seed option


def jobs(data: Path, cache: Path, work: Path, weights: list[str]) -> dict[str, list[str]]:
    """name -> the command (without --seed) that writes WORK/models/NAME."""
    m = work / "models"
    return {
        "fit-logreg": cli("fit", "--cache", cache, "--head", "logreg", "--out", m / "fit-logreg"),
        "fit-dense": cli("fit", "--cache", cache, "--head", "dense", "--epochs", 20, "--out", m / "fit-dense"),
        "export": cli("export", m / "fit-logreg", "--format", "tflite", "--cache", cache, "--out", m / "export"),
        "finetune": cli("finetune", data, "--out", m / "finetune", "--epochs", 1, "--fine-tune-epochs", 1,
                        "--no-refit", "--batch-size", 8, *weights),
    }


def state(folder: Path, probe: np.ndarray) -> tuple[str, np.ndarray]:
    """(manifest's created_utc + its files' sha256s, probabilities on the probe images); raises when the
    folder does not load (incomplete, damaged)."""
    from embedflow import models

    clf = models.load_model(folder)
    ident = json.dumps([clf.manifest.get("created_utc"), clf.manifest.get("files")], sort_keys=True)
    return ident, clf.predict_proba(probe)


def kill_saves(data: Path, cache: Path, work: Path, *, kills: int, seed: int, weights: list[str],
               only: list[str] | None = None) -> dict:
    from embedflow.data import load_image

    rng = random.Random(seed)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    report = {"kills": kills, "seed": seed, "jobs": {}}
    probe_paths = sorted(p for p in data.rglob("*") if p.is_file())[:6]
    every = jobs(data, cache, work, weights)
    if only and "export" in only and "fit-logreg" not in only:  # export's source: made once, not killed
        subprocess.run(every["fit-logreg"] + ["--seed", "0"], env=env, check=True, capture_output=True)
    for name, command in every.items():
        if only and name not in only:
            continue

        def cmd(seed: int, command=command, name=name) -> list[str]:
            return command if name in SEEDLESS else command + ["--seed", str(seed)]

        folder = work / "models" / name
        subprocess.run(cmd(0), env=env, check=True, capture_output=True)  # warm-up: one-time conversions, caches
        t0 = time.monotonic()
        subprocess.run(cmd(0), env=env, check=True, capture_output=True)
        seconds = time.monotonic() - t0
        size = json.loads((folder / "manifest.json").read_text()).get("image_size") or \
            json.loads((folder / "manifest.json").read_text())["fingerprint"]["image_size"]
        probe = np.stack([load_image(p, size) for p in probe_paths])
        old_id, old_proba = state(folder, probe)
        outcomes = {"old": 0, "new": 0, "finished": 0}
        for k in range(kills):
            proc = subprocess.Popen(cmd(k + 1), env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            delay = rng.uniform(0.3, 1.1) * seconds
            try:
                proc.wait(timeout=delay)
                outcomes["finished"] += 1
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            ident, proba = state(folder, probe)  # raises if the folder is broken
            if ident == old_id:
                if not np.array_equal(proba, old_proba):
                    raise AssertionError(f"{name}: same manifest, other probabilities after kill {k}")
                outcomes["old"] += 1
            else:
                outcomes["new"] += 1
            old_id, old_proba = ident, proba
        subprocess.run(cmd(0), env=env, check=True, capture_output=True)
        left = [p.name for p in folder.parent.glob(f".{name}.*") if not p.name.endswith(".lock")]
        if left:
            raise AssertionError(f"{name}: left beside the folder after a clean run: {left}")
        report["jobs"][name] = {"reference_seconds": round(seconds, 2), **outcomes}
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="a class-per-subfolder folder")
    ap.add_argument("--cache", type=Path, required=True, help="its embedding cache (embedflow embed)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/embedflow-kill-saves"))
    ap.add_argument("--kills", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights", help="backbone weights for finetune (e.g. the tests' tiny random file)")
    ap.add_argument("--image-size", type=int, help="finetune input size (e.g. 96)")
    ap.add_argument("--json", type=Path, help="write the report here")
    ap.add_argument("--jobs", nargs="*", help="only these of fit-logreg fit-dense export finetune (export needs fit-logreg)")
    args = ap.parse_args(argv)
    weights = (["--weights", args.weights] if args.weights else []) + \
        (["--image-size", str(args.image_size)] if args.image_size else [])
    try:
        report = kill_saves(args.data, args.cache, args.work, kills=args.kills, seed=args.seed, weights=weights,
                            only=args.jobs)
    except (AssertionError, subprocess.CalledProcessError) as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
