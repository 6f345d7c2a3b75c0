"""Time to train each head from the cache (and its validation accuracy).

    python benchmarks/fit_speed.py [--cache cache/embeddings.h5] [--heads logreg svm dense]

Needs a cache (`embedflow embed ../shared/data/flowers-dev` makes one). Each head is trained through
the same API the CLI uses (split, fit, validation report, refit on all vectors, model folder), timed
end to end in this process; the reference is the time to read the cache itself, measured in the same run.
Writes benchmarks/results/fit_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=Path("cache/embeddings.h5"))
    ap.add_argument("--heads", nargs="+", default=["logreg", "svm", "dense"])
    ap.add_argument("--out", type=Path, default=HERE / "results" / "fit_speed.json")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from embedflow import api, cache

    t = time.perf_counter()
    held = cache.load(args.cache)
    read_s = time.perf_counter() - t
    results = {"cache": str(args.cache), "vectors": len(held), "dim": int(held.embeddings.shape[1]),
               "read_cache_seconds": read_s, "heads": {}}
    print(f"{len(held)} vectors of {held.embeddings.shape[1]} dims; reading the cache takes {read_s:.2f}s")
    print("| head | seconds (split fit + report + refit + save) | validation accuracy | macro F1 |")
    print("| --- | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as out:
        for head in args.heads:
            t = time.perf_counter()
            r = api.fit_head(args.cache, head)
            r.save(Path(out) / head)
            seconds, report = time.perf_counter() - t, r.report_
            results["heads"][head] = {"seconds": seconds, "accuracy": report["accuracy"],
                                      "macro_f1": report["macro_f1"], "n_train": r.n_train, "n_val": r.n_val}
            print(f"| {head} | {seconds:.1f} | {report['accuracy']:.2%} | {report['macro_f1']:.3f} |", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
