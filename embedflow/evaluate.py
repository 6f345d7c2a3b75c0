"""Scoring a classifier on labelled data, in memory: `evaluate` returns an EvalResult; files (eval-report.json,
eval-confusion.json/png) only when asked. One code path for every kind: a model that scores cached vectors
(a head) reads them from a cache (a folder is embedded into one first, incrementally); any other kind runs
on the decoded images of a folder."""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import backbones, cache, models
from .errors import DatasetError, UsageError
from .models import Classifier
from .progress import SILENT, Reporter


@dataclass
class EvalResult:
    """The evaluation report: n, accuracy, macro precision/recall/F1, per_class, confusion_matrix, classes,
    model, data, root (where the images are), skipped ([{key, reason}]), predictions (one per image, see
    reports.ImagePrediction.to_dict), confused_pairs and, when vectors came from a cache, cache."""

    report: dict

    def to_dict(self) -> dict:
        return dict(self.report)

    @property
    def accuracy(self) -> float:
        return self.report["accuracy"]

    @property
    def confusion_matrix(self) -> np.ndarray:
        return np.asarray(self.report["confusion_matrix"])

    @property
    def predictions(self) -> list:
        """Per evaluated image, in the data's order: reports.ImagePrediction (key, true, predicted, p_true,
        loss in nats, top-3 [{label, probability}])."""
        from .reports.predictions import from_report

        return from_report(self.report)

    @property
    def confused_pairs(self) -> list:
        """reports.ConfusedPair (true, predicted, count, share), most frequent first."""
        from .reports.predictions import ConfusedPair

        return [ConfusedPair(**c) for c in self.report.get("confused_pairs") or []]

    def top_losses(self, n: int | None = None) -> list:
        """The n evaluated images with the highest loss (reports.ImagePrediction), worst first."""
        from .reports.predictions import top_losses

        return top_losses(self.predictions, n)

    @property
    def skipped(self) -> list[dict]:
        return self.report.get("skipped") or []

    def __getitem__(self, key):  # result["accuracy"], as when this was a dict
        return self.report[key]

    def get(self, key, default=None):
        return self.report.get(key, default)

    def write(self, out_dir: str | os.PathLike, title: str) -> list[Path]:
        """eval-report.json, eval-confusion.json, eval-confusion.png, eval-predictions.csv and
        eval-top-losses.png (images found under the report's "root") in out_dir."""
        from .reports import write_report

        return write_report(self.report, Path(out_dir), title, prefix="eval-", root=self.report.get("root"))


SPLIT_CHOICES = ("train", "val", "test", "all")


def evaluate(model: Classifier, data: str | os.PathLike, *, cache_path: str | os.PathLike | None = None,
             weights: str | None = None, name: str | None = None, out: str | os.PathLike | None = None,
             split: str | None = None, reporter: Reporter = SILENT) -> EvalResult:
    """Score `model` on a labelled class-per-subfolder folder or on a cache file.

    Data from train/ val/ test/ folders is scored on one split: `split` ("train", "val", "test" or "all");
    by default test/ when there is one, else all images. A split asked of data without those folders is a
    UsageError. Class names are compared after Unicode NFC normalisation (a folder named on macOS matches
    a model trained on Linux). Unlabelled data (no classes) is a DatasetError.

    A head reads vectors from a cache: `data` itself, or for a folder `cache_path` (embedded into it
    first, incrementally; `weights` names a copy of the backbone's weights file); with a folder and no
    cache_path, and for every other kind, the folder's images are decoded and scored on their pixels.
    `name` is how the report names the model (default: its path). Writes the report files into `out`
    when given. Raises DatasetError (classes the model does not know, no images) and UsageError."""
    if out is not None:  # the report's folder: locked against its writers, and checked, before the work
        with models.writing(out, reporter, inside=True):
            return _evaluate(model, Path(data), cache_path, weights, name, out, split, reporter)
    return _evaluate(model, Path(data), cache_path, weights, name, None, split, reporter)


def _evaluate(model: Classifier, data: Path, cache_path, weights, name, out, split, reporter) -> EvalResult:
    name = name or str(model.path or model.kind)
    if split is not None and split not in SPLIT_CHOICES:
        raise UsageError(f"unknown --split '{split}': use {', '.join(SPLIT_CHOICES)}")
    vectors = hasattr(model, "predict_proba_vectors")
    if vectors and (data.is_dir() and cache_path is not None or not data.is_dir()):
        y_true, proba, keys, extra = _on_vectors(model, data, cache_path, weights, name, split, reporter)
    elif data.is_dir():
        y_true, proba, keys, extra = _on_pixels(model, data, name, split, reporter)
    else:
        raise UsageError(f"{name} is a {model.kind} model: evaluate it on a labelled folder of images, not {data}")
    from .reports import add_to_report, classification_report

    report = classification_report(y_true, proba.argmax(axis=1), model.classes)
    report["model"], report["data"] = name, str(data)
    vectors = extra.pop("_vectors", None)
    report.update(extra)
    add_to_report(report, keys, y_true, proba, model.classes)
    if vectors is not None:
        from .insight import model_rejector

        rejector = model_rejector(model)
        if rejector is not None:
            report["rejection"] = rejection_report(rejector, vectors, y_true, proba.argmax(axis=1), keys)
    result = EvalResult(report)
    if out is not None:
        result.write(out, f"{Path(name).name} on {data.name}")
    return result


def _split_rows(splits: list[str] | None, split: str | None, data: Path, reporter: Reporter) -> np.ndarray | None:
    """The rows of one split (None: every row) of data whose images carry a recorded split (or None)."""
    if splits is None:
        if split not in (None, "all"):
            raise UsageError(f"--split {split}: {data} has no train/ val/ test/ folders")
        return None
    splits = np.asarray(splits)
    if split is None:
        split = "test" if (splits == "test").any() else "all"
        reporter.info(f"{data}: train/val/test folders; scoring {'test/' if split == 'test' else 'every image'} "
                      "(--split chooses)")
    if split == "all":
        return None
    rows = np.flatnonzero(splits == split)
    if not len(rows):
        raise DatasetError(f"{data} has no image in a {split}/ folder")
    return rows


def _on_vectors(model, data: Path, cache_path, weights, name, split, reporter):
    if data.is_dir():
        from .embedding import embed_folder

        spec = backbones.spec_from_fingerprint(model.fingerprint)
        if weights:
            spec = backbones.get_spec(spec.arg, spec.image_size, weights)
        summary = embed_folder(data, cache_path, spec=spec, runtime=getattr(model, "runtime", "auto"),
                               require_labels=True, reporter=reporter)
        reporter.info(f"{data}: {summary.total} images in {cache_path} ({summary.embedded} embedded now)")
    elif data.suffix in (".h5", ".hdf5") or data.is_file():
        cache_path = data
    else:
        raise UsageError(f"no such folder or cache: {data}")
    held = cache.load(cache_path)
    backbones.check_compatible(held.fingerprint, model.fingerprint, f"the evaluation cache {cache_path}",
                               f"model {name} was trained on another backbone's vectors")
    if not held.labelled:
        raise DatasetError(f"{data} holds unlabelled images: evaluate needs labels (one subfolder per class, or "
                           "embed --labels file.csv)")
    rows = _split_rows(held.splits, split, data, reporter)
    X, labels = (held.embeddings, held.labels) if rows is None else (held.embeddings[rows], held.labels[rows])
    to_model = _class_map(held.classes, model.classes, name)
    missing = sorted(set(map(_nfc, model.classes)) - {_nfc(held.classes[i]) for i in np.unique(labels)})
    if missing:
        reporter.warn(f"no evaluation images for class(es): {', '.join(missing)}")
    if len(labels) == 0:
        raise DatasetError(f"no images to evaluate in {data}")
    proba = model._proba_vectors(X)
    keys = list(held.keys) if rows is None else [held.keys[i] for i in rows]
    return to_model[labels], proba, keys, {
        "skipped": [{"key": k, "reason": r} for k, r, _ in held.failed], "cache": str(cache_path), "root": held.root,
        "_vectors": X}


def rejection_report(rejector, vectors: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, keys: list[str]) -> dict:
    """Accuracy and coverage with and without the model's unknown-input rule on labelled vectors (N, D):
    coverage = share of images accepted (not unknown); accuracy_accepted = accuracy on those; rejected:
    the keys called unknown (all of them belong to a known class here: each is a false rejection)."""
    unknown = rejector.reject(vectors)
    accepted = ~unknown
    correct = np.asarray(y_true) == np.asarray(y_pred)
    return {**{k: v for k, v in rejector.to_dict().items() if k != "arrays"},
            "n": int(len(keys)), "n_rejected": int(unknown.sum()),
            "coverage": float(accepted.mean()) if len(keys) else float("nan"),
            "accuracy_all": float(correct.mean()) if len(keys) else float("nan"),
            "accuracy_accepted": float(correct[accepted].mean()) if accepted.any() else float("nan"),
            "rejected": [keys[i] for i in np.flatnonzero(unknown)]}


def _on_pixels(model, data: Path, name, split, reporter):
    from .embedding import decode_folder

    decoded = decode_folder(data, model.image_size, split=split, reporter=reporter)
    to_model = _class_map(decoded.classes, model.classes, name)
    if not len(decoded):
        raise DatasetError(f"no images to evaluate in {data}")
    proba = model.predict_pixels(decoded.pixels)
    return to_model[decoded.labels], proba, [r.key for r in decoded.refs], {
        "skipped": [{"key": r.key, "reason": why} for r, why in decoded.failed], "root": str(data.resolve())}


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _class_map(data_classes: list[str], model_classes: list[str], name: str) -> np.ndarray:
    """Index in the model's classes of each of the data's classes, names compared in Unicode NFC (macOS
    writes NFD folder names); DatasetError for unknown ones."""
    index = {_nfc(c): i for i, c in enumerate(model_classes)}
    unknown = sorted(c for c in data_classes if _nfc(c) not in index)
    if unknown:
        raise DatasetError(f"classes not known to model {name}: {', '.join(unknown)} "
                           f"(the model knows: {', '.join(model_classes)})")
    return np.array([index[_nfc(c)] for c in data_classes], dtype=np.int64)
