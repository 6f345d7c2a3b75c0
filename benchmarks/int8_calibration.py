"""Which calibration set gives int8 vectors closer to fp32 on flowers-dev (issue #20, item 1)?

    KERAS_HOME=... python benchmarks/int8_calibration.py [--data ../shared/data/flowers-dev]

Converts the ImageNet MobileNetV2 to full-integer int8 with each candidate calibration set, embeds 400
flowers-dev photos (a seeded sample, disjoint from the user-data calibration sample) and compares each
vector with the fp32 LiteRT vector: cosine mean, 1st percentile and min. Candidates: the fixed set
embedflow ships (seeded crops of scikit-learn's two sample photos, 128 and 256 images) and a seeded
sample of the user's own photos (200 and 50). Writes benchmarks/results/int8_calibration.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data" / "flowers-dev")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "int8_calibration.json")
    args = ap.parse_args()
    from embedflow import backbones
    from embedflow.backbones.calibration import calibration_images
    from embedflow.backbones.runtimes import (build_keras_backbone, convert_to_int8, make_interpreter, run_tflite,
                                              tflite_backbone_path)
    from embedflow.data import load_image

    files = sorted(str(p) for p in args.data.rglob("*.jpg"))
    idx = np.random.default_rng(0).permutation(len(files))
    cal_files, test_files = [files[i] for i in idx[:200]], [files[i] for i in idx[200:600]]
    test = np.stack([load_image(f, 224) for f in test_files])
    spec = backbones.get_spec()
    f32 = make_interpreter(str(tflite_backbone_path(spec, backbones.fingerprint(spec))), threads=2)
    ref = np.concatenate([run_tflite(f32, test[i:i + 8]) for i in range(0, len(test), 8)])
    model = build_keras_backbone(spec, input_dtype="float32")
    results = {"data": str(args.data), "test_images": len(test)}
    for name, cal in [("fixed: sklearn sample crops, 128 (shipped)", lambda: calibration_images(224)),
                      ("fixed: sklearn sample crops, 256", lambda: calibration_images(224, n=256)),
                      ("user data: 200 flowers-dev photos", lambda: np.stack([load_image(f, 224) for f in cal_files])),
                      ("user data: 50 flowers-dev photos", lambda: np.stack([load_image(f, 224) for f in cal_files[:50]]))]:
        t = time.time()
        it = make_interpreter(model_content=convert_to_int8(model, cal()), threads=2)
        got = np.concatenate([run_tflite(it, test[i:i + 8]) for i in range(0, len(test), 8)])
        cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
        results[name] = {"cos_mean": float(cos.mean()), "cos_min": float(cos.min()),
                         "cos_p1": float(np.percentile(cos, 1)), "convert_s": time.time() - t}
        print(name, results[name], flush=True)
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
