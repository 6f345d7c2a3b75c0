"""Scoring a classifier on labelled data, in memory: `evaluate` returns an EvalResult; files (eval-report.json,
eval-confusion.json/png) only when asked. One code path for every kind: a model that scores cached vectors
(a head) reads them from a cache (a folder is embedded into one first, incrementally); any other kind runs
on the decoded images of a folder."""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass, field
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
    # per image, in memory only (the HTML page): keys, y_true (N,) and proba (N, C) in the model's classes,
    # root (the folder the keys are under), vectors (X, y, keys) when they came from a cache, model manifest
    images: dict = field(default_factory=dict, repr=False)

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
        """eval-report.json, eval-confusion.json, eval-confusion.png, eval-predictions.csv,
        eval-top-losses.png (images found under the report's "root") and the page eval-report.html in out_dir,
        as one set: each is written to a temporary file first and all are renamed into place only when every
        one is written (a full disk leaves every old file as it was; OutputError, exit 5)."""
        from .reports import write_report
        from .reports.page import write_html

        from .reports.write import report_set

        with report_set():  # all written to temporaries first, renamed in only when every one is written
            paths = write_report(self.report, Path(out_dir), title, prefix="eval-", root=self.report.get("root"))
            if self.images:
                paths.append(write_html(Path(out_dir) / "eval-report.html", self.html_page(title)))
        return paths

    def html_page(self, title: str) -> dict:
        """The data of eval-report.html (reports.page.report_page)."""
        from .reports.page import manifest_summary, report_page

        im, r = self.images, self.report
        manifest = im.get("manifest") or {}
        summary = manifest_summary({k: v for k, v in manifest.items() if k not in ("split",)},
                                   kind=str(im.get("kind", "model")), scored=f"{r['data']} ({r['n']} images)")
        summary.insert(1, ("model folder", str(r.get("model"))))
        classes = list(r["classes"])
        counts = np.bincount(np.asarray(im["y_true"], dtype=np.int64), minlength=len(classes)) if r["n"] else []
        return report_page(title=title, subtitle=f"evaluation of {r.get('model')} on {r.get('data')}", report=r,
                           summary=summary, keys=im["keys"], proba=im["proba"], y_true=im["y_true"], root=r.get("root"),
                           class_counts={c: int(n) for c, n in zip(classes, counts) if n},
                           skipped=[(s["key"], s["reason"]) for s in r.get("skipped") or []],
                           vectors=im.get("vectors"), scored_rows=im.get("scored_rows"),
                           coverage=_coverage(r.get("rejection")))


def _coverage(rejection: dict | None) -> dict | None:
    """The page's coverage figures from a report's "rejection" (rejection_report), None without one."""
    if not rejection:
        return None
    return {"rate": rejection["coverage"], "rejected": rejection["n_rejected"],
            "accuracy_kept": rejection["accuracy_accepted"], "accuracy_all": rejection["accuracy_all"]}


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
    report["trained_on"] = _trained_on(getattr(model, "manifest", {}) or {}, extra.get("root"), keys)
    if report["trained_on"]:
        reporter.warn(f"{report['trained_on']} of the {len(keys)} images scored were used to train {name}: the score "
                      "is optimistic; --split val or test scores only the others")
    add_to_report(report, keys, y_true, proba, model.classes)
    if vectors is not None:
        from .insight import model_rejector

        rejector = model_rejector(model)
        if rejector is not None:
            report["rejection"] = rejection_report(rejector, vectors, y_true, proba.argmax(axis=1), keys)
    images = {"keys": keys, "y_true": y_true, "proba": proba, "kind": model.kind,
              "manifest": getattr(model, "manifest", {}),
              "vectors": None if vectors is None else (vectors, y_true, keys)}
    result = EvalResult(report, images)
    if out is not None:
        result.write(out, f"{Path(name).name} on {data.name}")
    return result


def _trained_on(manifest: dict, root: str | None, keys: list[str]) -> int | None:
    """How many of the scored keys the model was trained on, by its manifest's split record, when the data
    is the folder it was fitted on (the same root): every image but the recorded validation ones (all of them
    after a refit on all) and, for train/val/test folders, test/. None when that cannot be known (another
    folder, a model without a split record)."""
    from .data.discover import SPLIT_NAMES

    data_root = (manifest.get("data") or {}).get("root")
    split = manifest.get("split") or {}
    if not data_root or not root or "val_keys" not in split or os.path.abspath(root) != os.path.abspath(data_root):
        return None
    val = set(split["val_keys"])
    folders = split.get("from") == "train/val/test folders"

    def trained(key: str) -> bool:
        if folders and SPLIT_NAMES.get(key.split("/")[0].lower()) not in ("train", "val"):
            return False
        return bool(split.get("refit_on_all")) or key not in val

    return sum(map(trained, keys))


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
            spec = backbones.get_spec(spec.arg, spec.image_size, weights, spec.precision)
        if Path(cache_path).exists():  # refused here with the hint that fits evaluate (it has no --rebuild)
            backbones.check_compatible(cache.read_meta(Path(cache_path))["fingerprint"], model.fingerprint,
                                       f"the evaluation cache {cache_path}", "pass another --cache")
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


def html_report(model: Classifier, data: str | os.PathLike | None = None, *, cache_path=None, model_cache=None,
                out: str | os.PathLike | None = None, name: str | None = None,
                reporter: Reporter = SILENT) -> Path:
    """Write the HTML report page of `model` and return its path (`embedflow report`).

    With `data` (a labelled folder, or a cache file): the page of evaluate(model, data) (default out:
    MODEL/eval-report.html). Without: a head is scored on the validation images its manifest records, read
    from `model_cache` (the cache it was fitted on); the saved head may have been refit on all images, those
    included, which the page says (default out: MODEL/report-validation.html). Learning curves (history.json)
    and export parity (manifest) are added when the model folder has them. Raises UsageError (no data for a
    model that is not a head, or a head without a recorded validation split), DatasetError, CacheError."""
    import json

    from .reports.page import write_html

    name = name or str(model.path or model.kind)
    folder = model.path if model.path is not None and Path(model.path).is_dir() else (
        Path(model.path).parent if model.path is not None else Path("."))
    if data is not None:
        result = evaluate(model, data, cache_path=cache_path, name=name, reporter=reporter)
        page = result.html_page(f"{Path(name).name} on {Path(data).name}")
        default = folder / "eval-report.html"
    else:
        page = _validation_page(model, model_cache, name, reporter)
        default = folder / "report-validation.html"
    history = folder / "history.json"
    if history.is_file():
        page["learning_curves"] = json.loads(history.read_text()).get("history")
    parity = (getattr(model, "manifest", {}) or {}).get("parity")
    if parity:
        page["parity"] = parity
    path = Path(out) if out is not None else default
    path.parent.mkdir(parents=True, exist_ok=True)
    write_html(path, page)
    return path  # the caller says where it went (the CLI prints it once, on stdout)


def _validation_page(model: Classifier, model_cache, name: str, reporter: Reporter) -> dict:
    split = (getattr(model, "manifest", {}) or {}).get("split") or {}
    if not hasattr(model, "predict_proba_vectors"):
        raise UsageError(f"{name} is a {model.kind} model: give the labelled images to report on (--data FOLDER)")
    if not split.get("val_keys"):
        raise UsageError(f"{name} records no validation split: give the data to report on (--data or --cache)")
    if model_cache is None:
        raise UsageError(f"no cache with the vectors {name} was fitted on: give --data FOLDER or --cache CACHE")
    held = cache.load(model_cache)
    backbones.check_compatible(held.fingerprint, model.fingerprint, f"the cache {model_cache}",
                               f"model {name} was trained on another backbone's vectors")
    to_model = _class_map(held.classes, model.classes, name)
    wanted = set(split["val_keys"])
    rows = np.array([i for i, k in enumerate(held.keys) if k in wanted], dtype=np.int64)
    if not len(rows):
        raise DatasetError(f"none of the {len(wanted)} validation images of {name} is in {model_cache}")
    reporter.info(f"scoring {len(rows)} validation images of {name} from {model_cache}")
    from .reports import classification_report

    y_all = to_model[held.labels]
    proba = model._proba_vectors(held.embeddings[rows])
    report = classification_report(y_all[rows], proba.argmax(axis=1), model.classes)
    report["model"], report["data"], report["root"] = name, str(model_cache), held.root
    note = (" (the saved model was refit on all images, these included: optimistic; the report.html that fit "
            "wrote scores the head trained on the training split only)") if split.get("refit_on_all") else ""
    result = EvalResult(report, {"keys": [held.keys[i] for i in rows], "y_true": y_all[rows], "proba": proba,
                                 "kind": model.kind, "manifest": model.manifest,
                                 "vectors": (held.embeddings, y_all, list(held.keys)), "scored_rows": rows})
    page = result.html_page(f"{Path(name).name}: validation images")
    page["summary"] = [(k, v + note if k == "scored on" else v) for k, v in page["summary"]]
    return page
