"""Fine-tuning ablation: per stage-2 epoch, the validation accuracy and log loss of the raw weights, of the
running mean of the weights from epoch --swa-start on (SWA), and of both with horizontal-flip test-time
augmentation (TTA). One run answers "which epoch, averaged or not, mirrored or not" on one split.

    KERAS_HOME=/work/shared/keras .venv/bin/python benchmarks/finetune_ablation.py --seed 0 [--tag base12]

Stage 1 and stage 2 follow embedflow.finetune (same split, head, augmentation, optimizer), without early
stopping, refit or saving. `val_loss` is Keras' (label-smoothed); the [accuracy, log loss] pairs are
unsmoothed. Writes benchmarks/results/finetune-ablation-<tag>-s<seed>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from embedflow import backbones, finetune as ft, models  # noqa: E402
from embedflow.embedding import decode_folder  # noqa: E402
from finetune import Printer  # noqa: E402  (benchmarks/finetune.py, this script's folder)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="?", default=str(HERE.parent.parent / "shared" / "data" / "flowers-dev"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--ft-epochs", type=int, default=12)
    ap.add_argument("--lr2", type=float, default=1e-4)
    ap.add_argument("--swa-start", type=int, default=4)
    ap.add_argument("--unfreeze-top", type=int, default=100)
    ap.add_argument("--rotation", type=float, default=0.2)
    ap.add_argument("--zoom", type=float, default=0.2)
    ap.add_argument("--tag", default="base12")
    a = ap.parse_args()

    import keras

    spec = backbones.get_spec("mobilenet_v2", 224)
    rep = Printer()
    data = decode_folder(a.data, 224, reporter=rep)
    tr_rows, va_rows = models.split_indices(data.labels, data.hashes, data.classes, 0.2, a.seed)
    train, val = data.subset(tr_rows), data.subset(va_rows)
    p = {**ft.DEFAULTS, "epochs": a.epochs, "fine_tune_epochs": a.ft_epochs, "fine_tune_learning_rate": a.lr2,
         "unfreeze_top": a.unfreeze_top, "rotation": a.rotation, "zoom": a.zoom}
    keras.utils.set_random_seed(a.seed)
    n_classes = len(data.classes)
    model, backbone, base, head = ft.build_model(spec, n_classes, p["dropout"])
    features = ft.predict_pixels(backbone, data.pixels)
    h1 = ft._train_head(head, features, tr_rows, va_rows, data.labels, p, n_classes, rep, [])
    ft.set_trainable(base, p["unfreeze_top"], None)

    def score(weights=None, tta=False):
        """[accuracy, log loss] on the validation split, with `weights` put in for the call."""
        if weights is not None:
            current = model.get_weights()
            model.set_weights(weights)
        proba = ft.predict_pixels(model, val.pixels)
        if tta:
            proba = (proba + ft.predict_pixels(model, np.ascontiguousarray(val.pixels[:, :, ::-1, :]))) / 2
        if weights is not None:
            model.set_weights(current)
        picked = np.clip(proba[np.arange(len(proba)), val.labels], 1e-9, 1)
        return [float((proba.argmax(1) == val.labels).mean()), float(-np.log(picked).mean())]

    rows = []

    class Track(keras.callbacks.Callback):
        n, mean = 0, None

        def on_epoch_end(self, epoch, logs=None):
            row = {"epoch": epoch + 1, "val_acc": round(logs["val_accuracy"], 4), "val_loss": round(logs["val_loss"], 4),
                   "tta": score(tta=True)}
            if epoch + 1 >= a.swa_start:
                weights = self.model.get_weights()
                self.n += 1
                self.mean = weights if self.mean is None else [m + (w - m) / self.n for m, w in zip(self.mean, weights)]
                row["swa"], row["swa_tta"] = score(self.mean), score(self.mean, tta=True)
            rows.append(row)
            print("ROW", json.dumps(row), flush=True)

    ft.compile_model(model, a.lr2, p["label_smoothing"])
    train_data = ft.image_dataset(train.pixels, ft._onehot(train.labels, n_classes), p["batch_size"],
                                  augment=ft.augmenter(p, a.seed), shuffle_seed=a.seed)
    val_data = ft.image_dataset(val.pixels, ft._onehot(val.labels, n_classes), 64)
    model.fit(train_data, validation_data=val_data, epochs=a.ft_epochs, callbacks=[Track()], verbose=0)
    result = {"args": vars(a), "stage1_val_acc": h1["val_accuracy"][-1], "stage1_val_loss": h1["val_loss"][-1],
              "rows": rows, "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = HERE / "results" / f"finetune-ablation-{a.tag}-s{a.seed}.json"
    out.write_text(json.dumps(result, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
