"""Pipeline balance (issue #20, item 3): does the local engine reach the decode+inference limit?

    KERAS_HOME=... python benchmarks/pipeline_balance.py [--precision int8] [--workers 2 3 4]

In one process: decode-only img/s per core (CPU time, 400 flowers-dev photos), inference-only img/s per
core (one single-threaded interpreter, batches of 4, CPU time), their per-core limit 1 / (1/decode +
1/inference), then embed_stream (decode + inference in worker threads, as `embed` runs them) over the
same photos with each worker count: images per CPU-second against that limit (the pipeline's own
overhead: GIL contention, stacking, queueing) and CPU-seconds per wall-second (how many cores it kept
busy; on a machine shared with other jobs this is what the scheduler gave it). CPU-time measures are
used because the machine is shared: wall-clock rates move with other jobs, CPU-time rates much less.
Writes benchmarks/results/pipeline_balance.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data" / "flowers-dev")
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--workers", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--out", type=Path, default=HERE / "results" / "pipeline_balance.json")
    args = ap.parse_args()
    from embedflow import backbones
    from embedflow.data import ImageRef
    from embedflow.data import decode as dec
    from embedflow.embedding.mapper import embed_stream

    files = sorted(args.data.rglob("*.jpg"))[::3][:400]
    items = [(ImageRef(f.name, f, None), "") for f in files]
    spec = backbones.get_spec(precision=args.precision)
    emb = backbones.make_embedder(spec, backbones.fingerprint(spec))
    datas = [f.read_bytes() for f in files]
    t = time.process_time()
    pixels = [dec.decode_bytes(d, spec.image_size) for d in datas]
    decode = len(datas) / (time.process_time() - t)
    batch = np.stack(pixels[:4])
    emb(batch)
    t = time.process_time()
    for _ in range(50):
        emb(batch)
    inference = 200 / (time.process_time() - t)
    limit = 1 / (1 / decode + 1 / inference)
    out = {"precision": args.precision, "images": len(items), "cpu_count": os.cpu_count(),
           "load_average": os.getloadavg(), "decode_per_core": decode, "inference_per_core": inference,
           "limit_per_core": limit, "runs": []}
    for workers in args.workers:
        t, c = time.perf_counter(), time.process_time()
        n = sum(len(b.ok) for b in embed_stream(items, emb, spec.image_size, spec.output_dim, batch_size=4,
                                                  workers=workers))
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        run = {"workers": workers, "images_per_cpu_second": n / cpu, "fraction_of_limit_cpu": n / cpu / limit,
               "cores_busy": cpu / wall, "images_per_s": n / wall}
        out["runs"].append(run)
        print(json.dumps(run), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"decode {decode:.0f}, inference {inference:.0f}, limit {limit:.0f} img/s per core; wrote {args.out}")


if __name__ == "__main__":
    main()
