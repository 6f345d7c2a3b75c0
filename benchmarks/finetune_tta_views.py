"""Test-time augmentation views on fine-tuned models: validation accuracy of the network inside each
model (no TTA), with the horizontal flip (the default), a centre crop of 87.5% resized back, and all four
(plain, flipped, crop, flipped crop). Models must be trained with --no-refit, so their validation split
is unseen; the split is recomputed from each model's seed.

    KERAS_HOME=/work/shared/keras .venv/bin/python benchmarks/finetune_tta_views.py /tmp/ft/def1 /tmp/ft/def2 ...

Writes benchmarks/results/finetune-tta-views.json.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from embedflow import models  # noqa: E402
ft = importlib.import_module("embedflow.finetune")  # the module (`from embedflow import finetune` is the function)
from embedflow.models import load_image_model  # noqa: E402
from embedflow.models.keras_parts import unwrap_tta  # noqa: E402
from embedflow.embedding import decode_folder  # noqa: E402


def centre_crop(pixels: np.ndarray, fraction: float) -> np.ndarray:
    import tensorflow as tf

    n = pixels.shape[1]
    side = int(round(n * fraction))
    o = (n - side) // 2
    resized = tf.image.resize(tf.cast(pixels[:, o:o + side, o:o + side], tf.float32), (n, n))
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8).numpy()


def main() -> None:
    results = []
    for folder in map(Path, sys.argv[1:]):
        manifest = models.read_manifest(folder)
        if manifest.get("refit"):
            raise SystemExit(f"{folder} was refit on all images: its validation split is not held out")
        core, _ = unwrap_tta(load_image_model(folder).model)
        data = decode_folder(manifest["data"]["root"], manifest["image_size"])
        _, val_rows = models.split_indices(data.labels, data.hashes, data.classes, manifest["split"]["val_split"],
                                           manifest["split"]["seed"])
        val = data.subset(val_rows)
        assert [r.key for r in val.refs] == manifest["split"]["val_keys"]

        def proba(x):
            return ft.predict_pixels(core, np.ascontiguousarray(x))

        crop = centre_crop(val.pixels, 0.875)
        plain, flipped = proba(val.pixels), proba(val.pixels[:, :, ::-1])
        cropped, crop_flipped = proba(crop), proba(crop[:, :, ::-1])
        accuracy = {name: float((p.argmax(1) == val.labels).mean()) for name, p in (
            ("plain", plain), ("flip", plain + flipped), ("crop", cropped),
            ("flip_and_crop", plain + flipped + cropped + crop_flipped))}
        row = {"model": str(folder), "seed": manifest["split"]["seed"], "accuracy": accuracy}
        print(json.dumps(row), flush=True)
        results.append(row)
    out = HERE / "results" / "finetune-tta-views.json"
    out.write_text(json.dumps(results, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
