"""Fine-tuning: train MobileNetV2 + a softmax head end to end on images, bypassing the cache.

Stage 1 trains the head with the base frozen. Because a frozen base in inference mode maps each image to
a fixed vector, stage 1 runs on the pooled features of the (un-augmented) training images computed once,
which is exactly the frozen-base model and many times faster on a CPU. Stage 2 unfreezes the top of the
base (BatchNormalization stays frozen, in inference mode) and trains the whole model on augmented images
from a tf.data pipeline at a much lower learning rate. By default the weights of stage 2's epochs from
`average_from` on are averaged (stochastic weight averaging; BatchNormalization is frozen, so no
statistics need recomputing) and stage 2 runs all its epochs; with `average_from` 0 it instead stops
early on the validation loss and restores the best weights.

The saved model predicts with horizontal-flip test-time augmentation by default (`flip_tta`): it is the
trained network wrapped so that its output is the mean of the probabilities of the image and of its
mirror image, built from stock Keras ops (loadable without embedflow, exported to TFLite as one graph).

With refit (the default, as in `fit`), the validation report is measured first; then a fresh model is
trained the same way on all images (training + validation) for the same stage 1 epochs and stage 2
epochs (with averaging, all of them; without, the count that had the best validation loss), and that
model is saved. The report therefore scores the model trained on the training split only: an honest
estimate for the saved one, which saw 25% more data.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import backbones, models
from .fsio import disk_error
from .embedding import Decoded
from .errors import Interrupted, OutputError, UsageError
from .models.keras_parts import PREDICT_BATCH, assemble, predict_pixels, split_parts, with_flip_tta
from .progress import SILENT, Reporter
from .reports import add_to_report, classification_report, deploy_files, write_report
from .reports.page import write_html

MODEL_FILE = "model.keras"
DEFAULTS = {
    "epochs": 10,  # stage 1 (head only)
    "fine_tune_epochs": 12,  # stage 2 (top of the base + head)
    "unfreeze_top": 100,  # layers of the base trained in stage 2: 100 of 155 = from inside block_6 on
    "unfreeze_from": None,  # or: the name of the first base layer to train (e.g. block_13_expand)
    "learning_rate": 1e-3,
    "fine_tune_learning_rate": 1e-4,
    "dropout": 0.5,
    "label_smoothing": 0.1,
    "batch_size": 32,
    "average_from": 4,  # stage 2: average the weights of this epoch and the later ones (0: off, early stopping)
    "patience": 3,  # stage 2 early stopping on validation loss, when weights are not averaged (0: off)
    "augment": True,
    "flip": True,
    "rotation": 0.2,
    "zoom": 0.2,
    "refit": True,  # after validating, train again on all images for the chosen epochs and save that model
    "flip_tta": True,  # the saved model averages its predictions for the image and its mirror image
}


@dataclass
class FinetuneResult:
    model_dir: Path
    report: dict | None
    history: dict
    n_train: int
    n_val: int
    seconds: float
    epoch_seconds: dict = field(default_factory=dict)
    interrupted: bool = False

    @property
    def predictions(self) -> list:
        """Per validation image: reports.ImagePrediction (key, true, predicted, p_true, loss, top) of the
        model trained on the training split; [] without a validation split."""
        from .reports.predictions import from_report

        return from_report(self.report or {})

    @property
    def confused_pairs(self) -> list:
        """reports.ConfusedPair (true, predicted, count, share) on the validation split, most frequent first."""
        from .reports.predictions import ConfusedPair

        return [ConfusedPair(**c) for c in (self.report or {}).get("confused_pairs") or []]

    def load(self):
        """The fine-tuned model as a Classifier (models.load_model)."""
        return models.load_model(self.model_dir)


def build_model(spec, n_classes: int, dropout: float, weights_path=None, backbone=None):
    """(model, backbone, base, head layers): the backbone (built from spec, or the one given) with a
    dropout + softmax head of n_classes."""
    import keras

    backbone = backbone if backbone is not None else backbones.build_keras_backbone(spec, weights_path)
    pre, base, _ = split_parts(backbone)
    head = [keras.layers.Dropout(dropout, name="head_dropout"),
            keras.layers.Dense(n_classes, activation="softmax", name="probabilities")]
    return assemble(pre, base, head, spec.image_size, f"embedflow_finetuned_{spec.name}"), backbone, base, head


def set_trainable(base, unfreeze_top: int, unfreeze_from: str | None = None) -> int:
    """Unfreeze the top `unfreeze_top` layers of the base (or those from the layer named `unfreeze_from`
    on), BatchNormalization excepted; returns how many layers with weights train."""
    import keras

    names = check_unfreeze_from(base, unfreeze_from)
    base.trainable = True
    cut = names.index(unfreeze_from) if unfreeze_from else max(0, len(base.layers) - unfreeze_top)
    for i, layer in enumerate(base.layers):
        layer.trainable = i >= cut and not isinstance(layer, keras.layers.BatchNormalization)
    return sum(1 for layer in base.layers if layer.trainable and layer.weights)


def check_unfreeze_from(base, unfreeze_from: str | None) -> list[str]:
    """The base's layer names; UsageError (exit 2) when `unfreeze_from` is given and names none of them."""
    names = [layer.name for layer in base.layers]
    if unfreeze_from and unfreeze_from not in names:
        raise UsageError(f"--unfreeze-from: the base has no layer '{unfreeze_from}' (e.g. block_13_expand, Conv_1)")
    return names


def augmenter(p: dict, seed: int):
    """A tf function on uint8 batches (random flip/rotation/zoom), or None when augmentation is off."""
    import keras
    import tensorflow as tf

    layers = []
    if p["flip"]:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if p["rotation"]:
        layers.append(keras.layers.RandomRotation(p["rotation"], fill_mode="reflect", seed=seed + 1))
    if p["zoom"]:
        layers.append(keras.layers.RandomZoom(p["zoom"], fill_mode="reflect", seed=seed + 2))
    if not p["augment"] or not layers:
        return None
    pipeline = keras.Sequential(layers, name="augmentation")

    def augment(x, y):
        x = pipeline(tf.cast(x, tf.float32), training=True)
        return tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8), y

    return augment


def image_dataset(pixels, onehot: np.ndarray, batch_size: int, augment=None, shuffle_seed=None, rows=None):
    """A tf.data pipeline of (x, onehot) batches, reshuffled every epoch when `shuffle_seed` is given.
    `pixels`: an array held in memory (features, or small image arrays), or a models.pixel_file.PixelFile
    whose rows are read from disk batch by batch. Either way only the row numbers are shuffled and rows
    are gathered per batch, so the pipeline holds no copy of the data: a tensor of every row, plus a
    shuffle buffer of every row, took 330 MB of stage 1's features at 20,000 images. The order is the one
    `Dataset.from_tensor_slices(...).shuffle(n, seed)` gives (the shuffle permutes positions). `rows`
    (optional, int (M,)): use only these rows of `pixels`, in this order, as if pixels[rows] had been
    given (onehot then has M rows), without that copy."""
    import tensorflow as tf

    labels = tf.constant(onehot)
    shape = tuple(pixels.shape[1:])
    dtype = tf.as_dtype(pixels.dtype)
    chosen = None if rows is None else np.asarray(rows, dtype=np.int64)

    def read(positions):
        return np.asarray(pixels[positions if chosen is None else chosen[positions]])

    def load(positions):
        x = tf.numpy_function(read, [positions], dtype, stateful=False)
        x.set_shape((None, *shape))
        return x, tf.gather(labels, positions)

    n = len(pixels) if chosen is None else len(chosen)
    ds = tf.data.Dataset.range(n)
    if shuffle_seed is not None:
        ds = ds.shuffle(n, seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(load, num_parallel_calls=2)
    if augment is not None:
        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def make_callbacks(stage: str, epochs: int, reporter: Reporter, times: list):
    """Per-epoch progress through the reporter, and an in-memory copy of the best weights (val_loss)."""
    import keras

    class Progress(keras.callbacks.Callback):
        history: dict  # the logs of every completed epoch (kept when Ctrl-C cuts model.fit short)

        def on_train_begin(self, logs=None):
            self.history = {}

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            dt = time.perf_counter() - self.t0
            times.append(dt)
            logs = logs or {}
            for k, v in logs.items():
                self.history.setdefault(k, []).append(float(v))
            parts = "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if k in
                              ("loss", "accuracy", "val_loss", "val_accuracy"))
            reporter.info(f"{stage} epoch {epoch + 1}/{epochs}: {parts}  ({dt:.0f}s)")

    class KeepBest(keras.callbacks.Callback):
        best = np.inf
        weights = None

        def on_train_begin(self, logs=None):  # what Ctrl-C before the first epoch ends puts back, not a
            self.weights = self.model.get_weights()  # model cut in the middle of an epoch

        def on_epoch_end(self, epoch, logs=None):
            loss = (logs or {}).get("val_loss", (logs or {}).get("loss"))
            if loss is not None and loss < self.best:
                self.best, self.weights = loss, self.model.get_weights()

    return Progress(), KeepBest()


def weight_averager(start: int):
    """A callback keeping the running mean of the weights at the end of epoch `start` (1-based) and later
    ones; at the end of training the model gets the mean. `.mean` is None until an epoch was averaged."""
    import keras

    class AverageWeights(keras.callbacks.Callback):
        n = 0
        mean = None

        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 < start:
                return
            self.n += 1
            weights = self.model.get_weights()
            self.mean = weights if self.mean is None else [m + (w - m) / self.n for m, w in zip(self.mean, weights)]

        def on_train_end(self, logs=None):
            if self.mean is not None:
                self.model.set_weights(self.mean)

    return AverageWeights()


def average_start(p: dict) -> int:
    """The first stage 2 epoch (1-based) whose weights are averaged; 0 when averaging is off. A run shorter
    than `average_from` averages only its last epoch's weights."""
    if not p["average_from"] or not p["fine_tune_epochs"]:
        return 0
    return min(p["average_from"], p["fine_tune_epochs"])


def compile_model(model, learning_rate: float, label_smoothing: float):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
                  metrics=["accuracy"])


def fit_stage(model, train, val, epochs, patience, stage, reporter, times, restore_best: bool, average_from: int = 0):
    """Run model.fit (early stopping unless weights are averaged from epoch `average_from` on); on Ctrl-C
    put back the averaged weights so far, else the best weights seen, and re-raise. Returns the history."""
    import keras

    progress, keep = make_callbacks(stage, epochs, reporter, times)
    callbacks = [progress, keep]
    averager = weight_averager(average_from) if average_from else None
    if averager:
        callbacks.append(averager)
    elif patience and val is not None:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                                       restore_best_weights=restore_best))
    try:
        hist = model.fit(train, validation_data=val, epochs=epochs, callbacks=callbacks, verbose=0, shuffle=False)
    except KeyboardInterrupt as e:
        best = averager.mean if averager and averager.mean is not None else keep.weights
        if best is not None:
            model.set_weights(best)
        e.partial_history = (stage, getattr(progress, "history", {}))  # the epochs that did complete
        raise
    return {k: [float(v) for v in vals] for k, vals in hist.history.items()}


def finetune(root, out, *, spec, val_split: float = 0.2, seed: int = 0, params: dict | None = None,
             reporter: Reporter = SILENT) -> FinetuneResult:
    """Fine-tune on a class-per-subfolder tree; writes a model folder (see module docstring). The folder's
    writer lock is held from the start: another writer of `out` is OutputLocked (exit 5), and a folder that
    cannot be written is OutputError before any training. The decoded images go to a scratch pixel file
    (in the writer's scratch folder beside `out`, see models.writing); a full or failing disk while it is
    written is OutputError too: the scratch is removed, the old `out` left as it was."""
    with models.writing(out, reporter):
        try:
            # tempfile points to the writer's scratch folder beside `out`: the pixel file goes there too
            with tempfile.TemporaryDirectory(prefix="pixels-", ignore_cleanup_errors=True) as scratch:
                return _finetune(root, out, spec=spec, val_split=val_split, seed=seed, params=params,
                                 reporter=reporter, scratch=Path(scratch))
        except OSError as e:  # the scratch pixel file (the model folder's own writes are OutputError already)
            if not disk_error(e):
                raise
            raise OutputError(f"cannot write {out}: {e.strerror or e} (its scratch files in "
                              f"{Path(out).resolve().parent}); {models.manifest.left_note(Path(out))}") from None


def decode_streamed(root, size: int, pixel_path: Path, reporter: Reporter = SILENT):
    """Every image of a class-per-subfolder tree (all of a train/ val/ test/ layout, `.splits` giving each
    image's folder), decoded once into the raw uint8 file `pixel_path` (models.pixel_file): the returned
    StreamedImages reads its rows from there, so memory does not grow with the number of images. Notes and
    skipped files go to the reporter."""
    from .data import discover
    from .models.pixel_file import decode_to_file

    found = discover(root, unlabelled=False)
    for note in found.notes:
        reporter.warn(note)
    decoded = decode_to_file(found.refs, size, found.classes, pixel_path, reporter=reporter)
    for ref, reason in decoded.failed:
        reporter.warn(f"skipped {ref.key}: {reason}")
    if found.split_of:
        decoded.splits = [found.split_of[r.key] for r in decoded.refs]
    return decoded


def _finetune(root, out, *, spec, val_split: float, seed: int, params: dict | None,
              reporter: Reporter, scratch: Path) -> FinetuneResult:
    backbones.quiet_tensorflow()
    import keras

    t0 = time.perf_counter()
    p = {**DEFAULTS, **{k: v for k, v in (params or {}).items() if v is not None}}
    _check_params(p)
    fp = backbones.fingerprint(spec)
    keras.utils.set_random_seed(seed)
    backbone = backbones.build_keras_backbone(spec)
    check_unfreeze_from(split_parts(backbone)[1], p["unfreeze_from"])  # before decoding any image
    data = decode_streamed(root, spec.image_size, scratch / "images.u8", reporter)
    model, backbone, base, head = build_model(spec, len(data.classes), p["dropout"], backbone=backbone)
    check_room_for_model(model, scratch)  # before hours of training whose model could not be written
    features, grouping = None, None
    if data.splits is not None:  # train/ val/ test/ folders are the split; test/ is never trained on
        keep, train_rows, val_rows, n_test = models.without_test_rows(data.splits, data.labels, data.hashes,
                                                                       data.classes, val_split, seed)
        failed, data = data.failed, data.subset(keep)
        data.failed = failed
        grouping = {"from": "train/val/test folders", "n_test": n_test}
        reporter.info(f"train/val/test folders: fine-tuning on train/ ({len(train_rows)}), validating on "
                      f"{len(val_rows)}; the {n_test} test/ image(s) are left for `evaluate --split test`")
    if p["epochs"]:
        reporter.info("stage 1: computing the frozen base's features once")
        features = predict_pixels(backbone, data.pixels, dtype=np.float32)
    if grouping is None:  # the frozen base's pooled features are the cache's vectors: as in fit
        train_rows, val_rows, grouping = models.leak_free_split(features, data.labels, data.hashes, data.classes,
                                                                val_split, seed, reporter)
    train, val = data.subset(train_rows), data.subset(val_rows)
    audit = _page_audit(features, data, val_rows, root)
    reporter.info(f"fine-tuning on {len(train)} images, validating on {len(val)} ({len(data.classes)} classes, "
                  f"{len(data.failed)} skipped)")
    out_dir = Path(out)
    history, times = {"stage1": {}, "stage2": {}}, {"stage1": [], "stage2": []}
    interrupted = False
    try:
        history["stage1"] = _train_head(head, features, train_rows, val_rows, data.labels, p, len(data.classes),
                                        reporter, times["stage1"])
        n_trainable = set_trainable(base, p["unfreeze_top"], p["unfreeze_from"])
        reporter.info(f"stage 2: the base's top layers unfrozen ({_unfrozen_what(p)}; {n_trainable} of them with "
                      "weights, BatchNormalization frozen), "
                      f"learning rate {p['fine_tune_learning_rate']:g}")
        history["stage2"] = _train_end_to_end(model, train, val, p, seed, len(data.classes), reporter, times["stage2"])
    except KeyboardInterrupt as e:
        interrupted = True
        stage, partial = getattr(e, "partial_history", (None, None))
        if stage in ("stage 1", "stage 2"):  # history.json and epochs_run show the epochs that ran
            history[stage.replace(" ", "")] = partial
        reporter.warn("interrupted: saving the best model so far")
    base.trainable = False
    report = proba = None
    final = _final(model, p)
    if len(val):
        proba = predict_pixels(final, val.pixels)
        report = classification_report(val.labels, proba.argmax(axis=1), data.classes)
        add_to_report(report, [r.key for r in val.refs], val.labels, proba, data.classes)
    refit = None
    if p["refit"] and len(val) and not interrupted:
        stage2_epochs = p["fine_tune_epochs"] if average_start(p) else _best_epochs(history["stage2"])
        times["refit"] = []
        try:
            final = _final(_refit(spec, data, features, p, seed, stage2_epochs, reporter, times["refit"]), p)
            refit = {"images": len(data), "stage1_epochs": p["epochs"], "stage2_epochs": stage2_epochs}
        except KeyboardInterrupt:
            interrupted = True
            reporter.warn("interrupted during the refit: saving the model trained on the training split")
    page = {"proba": proba, "val_rows": val_rows, "features": features, "data": data, "root": root, "audit": audit}
    _save(out_dir, final, data, train, val, fp, p, val_split, seed, history, times, report, interrupted, root,
          time.perf_counter() - t0, refit, grouping, page)
    result = FinetuneResult(out_dir, report, history, len(train), len(val), time.perf_counter() - t0,
                            {k: [round(t, 2) for t in v] for k, v in times.items()}, interrupted)
    if interrupted:
        raise Interrupted(f"interrupted; the best model so far was written to {out_dir}")
    return result


def _final(model, p: dict):
    """The model as saved and scored: wrapped for flip test-time augmentation unless that is off."""
    return with_flip_tta(model) if p["flip_tta"] else model


def check_room_for_model(model, folder: Path) -> None:
    """OSError ENOSPC, before any training, when `folder`'s file system (the scratch beside --out, the same
    as the model folder's) has less free space than the saved model needs: about 2 x its float32 weights
    (model.keras, and the TFLite-free report files) + 16 MB. A fresh tester's 12 MB output disk held the
    pixel file, trained for 27 s, then could not write the model."""
    import errno

    from .fsio import free_bytes_short

    need = 2 * 4 * int(model.count_params()) + (16 << 20)
    if (free := free_bytes_short(folder, need)) is not None:
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: the model needs about {need >> 20} MB free "
                                    f"there, {free >> 20} MB are (checked before training)", str(folder))


def _unfrozen_what(p: dict) -> str:
    return f"from {p['unfreeze_from']} on" if p["unfreeze_from"] else f"the top {p['unfreeze_top']}"


def _check_params(p: dict) -> None:
    """The ranges of options.RANGES (the API checks them first; this covers direct callers)."""
    from . import options

    options.check(stage1_epochs=p["epochs"], **{k: v for k, v in p.items() if k != "epochs"})


def _onehot(labels: np.ndarray, n: int) -> np.ndarray:
    return np.eye(n, dtype=np.float32)[labels]


def _train_head(head, features, train_rows, val_rows, labels, p, n_classes, reporter, times, stage="stage 1") -> dict:
    """Stage 1: the head on the frozen base's pooled features (computed once per image)."""
    import keras

    if not p["epochs"]:
        return {}
    inputs = keras.Input((features.shape[1],), name="features")
    x = inputs
    for layer in head:
        x = layer(x)
    head_model = keras.Model(inputs, x)
    compile_model(head_model, p["learning_rate"], p["label_smoothing"])
    val_data = (features[val_rows], _onehot(labels[val_rows], n_classes)) if len(val_rows) else None
    train_data = image_dataset(features, _onehot(labels[train_rows], n_classes), p["batch_size"], shuffle_seed=0,
                               rows=train_rows)
    return fit_stage(head_model, train_data, val_data, p["epochs"], 0, stage, reporter, times, False)


def _best_epochs(stage2: dict) -> int:
    """How many stage 2 epochs gave the weights that were kept (the best validation loss)."""
    losses = stage2.get("val_loss") or stage2.get("loss") or []
    return int(np.argmin(losses)) + 1 if losses else 0


def _refit(spec, data: Decoded, features, p, seed, stage2_epochs, reporter, times):
    """A fresh model trained like the first on every image, for the epochs validation chose."""
    import keras

    how = (f"weights averaged from stage 2 epoch {average_start(p)}" if average_start(p)
           else "the stage 2 count with the best validation loss")
    reporter.info(f"refit: training a fresh model on all {len(data)} images ({p['epochs']} + {stage2_epochs} "
                  f"epochs, {how})")
    keras.utils.set_random_seed(seed)
    model, _, base, head = build_model(spec, len(data.classes), p["dropout"])
    everything, none = np.arange(len(data)), np.arange(0)
    _train_head(head, features, everything, none, data.labels, p, len(data.classes), reporter, times, "refit stage 1")
    set_trainable(base, p["unfreeze_top"], p["unfreeze_from"])
    if stage2_epochs:
        _train_end_to_end(model, data, data.subset(none), {**p, "fine_tune_epochs": stage2_epochs, "patience": 0},
                          seed, len(data.classes), reporter, times, "refit stage 2")
    base.trainable = False
    return model


def _train_end_to_end(model, train: Decoded, val: Decoded, p, seed, n_classes, reporter, times,
                      stage="stage 2") -> dict:
    """Stage 2: top of the base + head on augmented images; weights averaged over the later epochs, or
    early stopping with the best weights restored."""
    if not p["fine_tune_epochs"]:
        return {}
    compile_model(model, p["fine_tune_learning_rate"], p["label_smoothing"])
    train_data = image_dataset(train.pixels, _onehot(train.labels, n_classes), p["batch_size"],
                               augment=augmenter(p, seed), shuffle_seed=seed)
    # Validated in batches of PREDICT_BATCH, as every prediction is: at 224 px a batch of 64 held ~0.5 GB of
    # activations at once, the run's peak (the loss and accuracy do not depend on the batch).
    val_data = image_dataset(val.pixels, _onehot(val.labels, n_classes), PREDICT_BATCH) if len(val) else None
    return fit_stage(model, train_data, val_data, p["fine_tune_epochs"], p["patience"], stage, reporter,
                     times, True, average_start(p))


def _save(out_dir: Path, model, data, train, val, fp, p, val_split, seed, history, times, report, interrupted,
          root, seconds, refit, grouping: dict | None = None, page: dict | None = None) -> None:
    """The model folder, built beside out_dir and swapped into place (models.staged_folder)."""
    with models.staged_folder(out_dir) as staged:
        model.save(staged / MODEL_FILE)
        (staged / "history.json").write_text(json.dumps({"history": history, "epoch_seconds": times}, indent=2))
        final = report["accuracy"] if report else None
        plot_history(history, staged / "learning_curve.png", average_start(p), final, _final_label(p))
        if report:
            write_report(report, staged, "fine-tuned on the training split, validation split",
                         root=str(Path(root).resolve()))
        split = models.split_record([r.key for r in val.refs], val.hashes, range(len(train)), range(len(val)),
                                    val_split=val_split, seed=seed, refit_on_all=bool(refit))
        split.update(grouping or {})  # near-duplicate groups kept on one side (none without stage 1 features)
        manifest = {
            "kind": "finetuned",
            "model_file": MODEL_FILE, "head_file": MODEL_FILE, "classes": data.classes, "fingerprint": fp,
            "image_size": fp["image_size"], "input": "uint8 RGB (N, S, S, 3), resized without crop; preprocessing inside",
            "preprocessing": fp["preprocessing"], "data": {"root": str(Path(root).resolve()), "count": len(data),
                                                           "class_counts": _class_counts(data),
                                                           "skipped": [[r.key, why] for r, why in data.failed]},
            "split": split, "hyperparameters": p, "interrupted": interrupted,
            "test_time_augmentation": ("horizontal flip: the mean of the probabilities for the image and its mirror "
                                       "image, inside the model") if p["flip_tta"] else None,
            "stage2_weights": stage2_weights(p, len(history["stage2"].get("loss", [])), interrupted),
            "refit": refit,  # None: the saved model is the one the metrics score
            "metrics": {k: report[k] for k in ("accuracy", "macro_precision", "macro_recall", "macro_f1")} if report else {},
            "metrics_of": ("the same recipe trained on the training split only (the saved model was then refit on "
                           "all images)") if refit else "the saved model",
            "epochs_run": {k: len(v.get("loss", [])) for k, v in history.items()},
            "fit_seconds": round(seconds, 2),
            "files": {MODEL_FILE: models.sha256_file(staged / MODEL_FILE)},
        }
        if report and page is not None and page["proba"] is not None:
            write_html(staged / "report.html", html_page(manifest, report, history, **page))
        models.write_members(staged, manifest, deploy_files(manifest, report, str(out_dir)))  # labels.txt, README.md
        models.write_manifest(staged, manifest)


def _page_audit(features, data: Decoded, val_rows, root):
    """The audit section of report.html, from stage 1's features of every image: computed before training,
    while memory holds no training state (computed after stage 2 it raised the peak RSS by ~150 MB at 5,000
    images). "compute" (report_page's default) when there are no features to audit or no validation page."""
    from .reports.page import page_audit

    if features is None or not len(val_rows) or len(features) != len(data.refs):
        return "compute"
    return page_audit(features, data.labels, [r.key for r in data.refs], data.classes, str(Path(root).resolve()))


def stage2_weights(p: dict, completed: int, interrupted: bool) -> str:
    """Which weights of stage 2 the saved model holds, in words (the manifest's stage2_weights), given the
    stage 2 epochs that completed."""
    start = average_start(p)
    if not p["fine_tune_epochs"]:
        return "none: no stage 2 (--fine-tune-epochs 0), the weights at the end of stage 1"
    if not interrupted:
        return (f"mean of the weights after stage 2 epochs {start}-{p['fine_tune_epochs']}" if start
                else "the epoch with the best validation loss")
    if not completed:
        return "the weights at the end of stage 1 (interrupted before a stage 2 epoch completed)"
    if start and completed >= start:
        return f"mean of the weights after stage 2 epochs {start}-{completed} (interrupted)"
    return f"the stage 2 epoch with the best validation loss of the {completed} that completed (interrupted)"


def html_page(manifest: dict, report: dict, history: dict, *, proba, val_rows, features, data: Decoded, root,
              audit="compute") -> dict:
    """The data of report.html: the validation split scored by the model trained on the training split,
    learning curves, and the audit and map of the frozen backbone's vectors of every image (stage 1's)."""
    from .reports.page import manifest_summary, report_page

    keys = [r.key for r in data.refs]
    vectors = (features, data.labels, keys) if features is not None and len(features) == len(keys) else None
    return report_page(
        title="fine-tuned model — validation report", report=report,
        subtitle=f"{len(data.classes)} classes, {len(data)} images, backbone {manifest['fingerprint'].get('backbone', '?')}",
        summary=manifest_summary(manifest, kind="fine-tuned Keras model (backbone and softmax head)",
                                 scored=f"the validation split ({len(val_rows)} images), by the model trained on the "
                                        "training split; audit and map: the frozen backbone's vectors"),
        keys=[keys[i] for i in val_rows], proba=proba, y_true=data.labels[val_rows], root=str(Path(root).resolve()),
        class_counts=manifest["data"]["class_counts"], skipped=manifest["data"]["skipped"], vectors=vectors,
        scored_rows=np.asarray(val_rows), history=history, audit=audit)


def _class_counts(data: Decoded) -> dict:
    return dict(zip(data.classes, np.bincount(data.labels, minlength=len(data.classes)).tolist()))


def _final_label(p: dict) -> str:
    parts = (["averaged weights"] if average_start(p) else []) + (["flip TTA"] if p["flip_tta"] else [])
    return "saved recipe" + (f" ({' + '.join(parts)})" if parts else "")


def plot_history(history: dict, path: Path, average_from: int = 0, final_accuracy: float | None = None,
                 final_label: str = "saved recipe") -> None:
    """Accuracy and loss over both stages, the boundary marked, the epochs whose weights were averaged
    shaded, and the validation accuracy of the model as saved (averaged, mirrored) as a star."""
    from matplotlib.figure import Figure


    s1, s2 = history.get("stage1", {}), history.get("stage2", {})
    n1 = len(s1.get("loss", []))
    fig = Figure(figsize=(10, 4), dpi=100)
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("accuracy", "loss")):
        for key, label in ((metric, "training"), (f"val_{metric}", "validation")):
            values = s1.get(key, []) + s2.get(key, [])
            if values:
                ax.plot(range(1, len(values) + 1), values, marker=".", label=label)
        if n1 and s2.get("loss"):
            ax.axvline(n1 + 0.5, color="grey", linestyle="--", label="start of fine-tuning")
        n2 = len(s2.get("loss", []))
        if average_from and n2 >= average_from:
            ax.axvspan(n1 + average_from - 0.5, n1 + n2 + 0.5, color="grey", alpha=0.12, label="weights averaged")
        if metric == "accuracy" and final_accuracy is not None and n1 + n2:
            ax.plot([n1 + n2], [final_accuracy], marker="*", markersize=12, linestyle="none", color="tab:red",
                    label=f"{final_label}: {final_accuracy:.1%}")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
