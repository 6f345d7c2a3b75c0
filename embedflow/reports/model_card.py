"""The files a person or another tool reads beside every model: labels.txt and the README.md model card.

Both are generated from the model's manifest (and its validation report when there is one) by pure
functions; :func:`deploy_files` returns them as ``{name: text}`` for the folder's writer, which records
their sha256 in the manifest's ``files`` like every other member.

The card opens with YAML front matter in the Hugging Face model-card style (``library_name``,
``pipeline_tag``, ``tags``, ``model-index`` with the validation metrics, the backbone and the dataset
counts), then says in words what the model is for, what it was trained on, how well it did on held-out
images, what it does with images of none of its classes, its limitations and how to load it.
"""

from __future__ import annotations

import json
import math
import re

from ..backbones import describe as describe_backbone

LABELS_FILE = "labels.txt"
CARD_FILE = "README.md"
MAX_SKIPPED_LISTED = 20
_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]*")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}
_HEADS = {"logreg": "a logistic-regression head", "svm": "an SVM head (RBF with Platt-calibrated probabilities up to 10 classes; above, a linear one-vs-rest SVM with temperature-scaled probabilities)",
          "dense": "a dense softmax head", "knn": "a k-nearest-neighbour head"}
# scikit-learn parameters that say nothing about the model (bookkeeping, defaults of no consequence here)
_QUIET_PARAMS = {"memory", "verbose", "copy", "transform_input", "n_jobs", "cache_size", "shrinking", "tol",
                 "break_ties", "probability", "ensemble", "decision_function_shape", "degree", "coef0",
                 "random_state", "max_iter", "warm_start", "dual", "fit_intercept", "intercept_scaling", "l1_ratio",
                 "multi_class", "with_mean", "with_std", "solver", "norm", "penalty"}


def labels_text(classes: list[str]) -> str:
    """labels.txt: one class name per line (UTF-8), in the order of the model's output columns."""
    return "".join(f"{c}\n" for c in classes)


def deploy_files(manifest: dict, report: dict | None = None, where: str | None = None) -> dict[str, str]:
    """``{"labels.txt": ..., "README.md": ...}`` for a model folder; see :func:`model_card`."""
    return {LABELS_FILE: labels_text(manifest["classes"]), CARD_FILE: model_card(manifest, report, where)}


def model_card(manifest: dict, report: dict | None = None, where: str | None = None) -> str:
    """A Markdown model card with YAML front matter, from a model manifest.

    Args:
        manifest: a model folder's manifest (kind ``cached-head``, ``finetuned``, ``fused`` or ``tflite``).
        report: the validation report (``embedflow.reports.classification_report``) of the model, or for
            an export that of its source model; None when there was no validation split.
        where: the folder's path, used in the commands of *How to use it* (default ``MODEL_FOLDER``).

    Returns:
        str: the card, UTF-8 text ending in a newline.
    """
    where = where or "MODEL_FOLDER"
    sections = [_front_matter(manifest, report), f"# {_title(manifest)}", _summary(manifest),
                _intended_use(manifest), _training_data(manifest), _validation(manifest, report),
                _unknown_inputs(manifest), _limitations(manifest, report), _how_to_use(manifest, where),
                _provenance(manifest)]
    return "\n\n".join(s.strip("\n") for s in sections if s) + "\n"


# --- what the manifest says, whatever its kind ---------------------------------------------------


def _head(m: dict) -> str | None:
    return m.get("head") or (m.get("source") or {}).get("head")


def _backbone_name(m: dict) -> str:
    fp = m.get("fingerprint") or {}
    return str(fp.get("backbone_arg") or fp.get("backbone") or "unknown backbone")


def _data(m: dict) -> dict:
    """root, count, class_counts, skipped: from the manifest's data, else its cache record."""
    data = dict(m.get("data") or {})
    cache = m.get("cache") or {}
    data.setdefault("root", cache.get("root"))
    data.setdefault("count", cache.get("count"))
    return data


def _what(m: dict) -> str:
    kind, backbone = m.get("kind"), _backbone_name(m)
    if kind == "cached-head":
        head = _HEADS.get(m.get("head"), f"a {m.get('head')} head")
        hp = m.get("hyperparameters") or {}
        if m.get("head") == "svm" and hp.get("kernel") in ("rbf", "linear"):  # the one this model uses
            head = (f"an SVM head ({'RBF' if hp['kernel'] == 'rbf' else 'linear one-vs-rest'} kernel, "
                    f"{hp.get('calibration') or 'calibrated'} probabilities)")
        return f"{head} trained on {backbone} image embeddings (`embedflow fit`)"
    if kind == "finetuned":
        return f"{backbone} fine-tuned end to end with a softmax head (`embedflow finetune`)"
    source = m.get("source") or {}
    origin = f"the {source.get('head')} head of `{source.get('path')}` fused with {backbone}" if source.get("head") \
        else f"the fine-tuned model `{source.get('path')}`"
    if kind == "fused":
        return f"{origin}, as one Keras model (`embedflow export --format keras`)"
    quantize = m.get("quantize") or "none"
    weights = "float32 weights" if quantize == "none" else f"{quantize}-quantised weights"
    return f"{origin}, exported to TFLite with {weights} and label metadata (`embedflow export`)"


def _title(m: dict) -> str:
    kind = m.get("kind")
    name = {"cached-head": f"{_head(m)} head on {_backbone_name(m)}", "finetuned": f"fine-tuned {_backbone_name(m)}",
            "fused": f"{_head(m) or 'fine-tuned'} model fused with {_backbone_name(m)}",
            "tflite": f"{_head(m) or 'fine-tuned'} model on {_backbone_name(m)}, TFLite"
                      + (f" ({m['quantize']})" if m.get("quantize") not in (None, "none") else "")}
    return f"Image classifier: {name.get(kind, kind)}"


def _class_list(classes: list[str], limit: int = 12) -> str:
    shown = ", ".join(classes[:limit])
    return shown + (f" and {len(classes) - limit} more" if len(classes) > limit else "")


# --- front matter --------------------------------------------------------------------------------


def _front_matter(m: dict, report: dict | None) -> str:
    data, classes = _data(m), m["classes"]
    tags = ["embedflow", "image-classification", _backbone_name(m).split(":")[0], m.get("kind")]
    tags += [t for t in (_head(m), f"tflite-{m['quantize']}" if m.get("kind") == "tflite" else None) if t]
    meta = {"library_name": "embedflow", "pipeline_tag": "image-classification",
            "tags": list(dict.fromkeys(t for t in tags if t))}
    metrics = _metric_values(m, report)
    if metrics:
        meta["metrics"] = sorted({t for t, _, _ in metrics})
        dataset = {"type": "imagefolder", "name": _folder_name(data.get("root")), "split": "validation"}
        meta["model-index"] = [{"name": _title(m), "results": [{
            "task": {"type": "image-classification", "name": "Image classification"}, "dataset": dataset,
            "metrics": [{"type": t, "value": round(v, 4), "name": name, **({"args": {"average": "macro"}}
                                                                          if t != "accuracy" else {})}
                        for t, v, name in metrics]}]}]
    fp = m.get("fingerprint") or {}
    meta["backbone"] = {"name": _backbone_name(m), "image_size": fp.get("image_size"), "fingerprint": fp.get("id")}
    meta["dataset"] = {k: v for k, v in {"folder": _folder_name(data.get("root")), "images": data.get("count"),
                                         "classes": len(classes), "class_counts": data.get("class_counts"),
                                         "skipped": len(data["skipped"]) if "skipped" in data else None,
                                         "validation_images": (report or {}).get("n")}.items() if v is not None}
    return "\n".join(["---", *_yaml(meta, ""), "---"])


def _metric_values(m: dict, report: dict | None) -> list[tuple[str, float, str]]:
    values = report or m.get("metrics") or (m.get("source") or {}).get("metrics") or {}
    names = [("accuracy", "accuracy", "Validation accuracy"), ("macro_precision", "precision", "Macro precision"),
             ("macro_recall", "recall", "Macro recall"), ("macro_f1", "f1", "Macro F1")]
    return [(t, float(values[k]), name) for k, t, name in names
            if isinstance(values.get(k), (int, float)) and math.isfinite(values[k])]


def _folder_name(root) -> str:
    return str(root).rstrip("/").rsplit("/", 1)[-1] if root else "unknown"


def _yaml(value, pad: str) -> list[str]:
    """Block-style YAML for dicts, lists and scalars (strings quoted as JSON unless plain words)."""
    lines = []
    if isinstance(value, dict):
        for key, v in value.items():
            if isinstance(v, (dict, list)) and v:
                lines += [f"{pad}{_scalar(str(key))}:", *_yaml(v, pad + "  ")]
            else:
                lines.append(f"{pad}{_scalar(str(key))}: {_scalar(v)}")
    else:
        for item in value:
            sub = _yaml(item, pad + "  ") if isinstance(item, (dict, list)) and item else [pad + "  " + _scalar(item)]
            lines += [pad + "- " + sub[0][len(pad) + 2:], *sub[1:]]
    return lines


def _scalar(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return json.dumps(v)
    if isinstance(v, (dict, list)):
        return "{}" if isinstance(v, dict) else "[]"
    s = str(v)
    if _PLAIN.fullmatch(s) and s.lower() not in _YAML_WORDS:
        return s
    return json.dumps(s, ensure_ascii=False)


# --- the sections --------------------------------------------------------------------------------


def _summary(m: dict) -> str:
    classes = m["classes"]
    version = f" {m['embedflow_version']}" if m.get("embedflow_version") else ""
    return (f"This model sorts an image into one of **{len(classes)} classes** ({_class_list(classes)}). "
            f"It is {_what(m)}, made with embedflow{version}.")


def _intended_use(m: dict) -> str:
    return ("## Intended use\n\n"
            f"Labelling photos of the same kind as its training images with one of these classes: "
            f"{', '.join(m['classes'])}. Give it images of any size (each is resized to a square without cropping); "
            "for each it returns a probability for every class. Check it on your own labelled images "
            "(`embedflow evaluate`) before relying on it: the numbers below come from one validation split of the "
            "training folder, not from your photos.")


def _training_data(m: dict) -> str:
    data, split = _data(m), m.get("split") or {}
    lines = ["## Training data", ""]
    lines.append(f"- Folder: `{data.get('root') or 'unknown'}` (one subfolder per class)")
    if data.get("count") is not None:
        lines.append(f"- Images: {data['count']}")
    if split:
        how = ", identical files kept on one side" if split.get("grouped_by") else ""
        if "near_duplicate_groups" in split:
            how = (f", identical files and near-duplicates (cosine >= {split.get('threshold')}) kept on one side: "
                   f"{split['near_duplicate_groups']} group(s) of {split.get('images_in_groups', '?')} images")
        lines.append(f"- Split: {split.get('n_train', '?')} training / {split.get('n_val', '?')} validation images "
                     f"(stratified, `--val-split {split.get('val_split')}`, `--seed {split.get('seed')}`{how})")
        if split.get("refit_on_all"):
            lines.append("- The saved model was then trained again on all images (training + validation)")
    counts = data.get("class_counts") or {}
    lines += ["", "| class | images |", "| --- | ---: |"]
    lines += [f"| {_cell(c)} | {counts.get(c, '?')} |" for c in m["classes"]]
    skipped = data.get("skipped")
    if skipped is not None:
        lines += ["", f"Skipped files (not used for training): {len(skipped)}."]
        for key, why in skipped[:MAX_SKIPPED_LISTED]:
            lines.append(f"- `{key}`: {why}")
        if len(skipped) > MAX_SKIPPED_LISTED:
            lines.append(f"- and {len(skipped) - MAX_SKIPPED_LISTED} more (see manifest.json)")
    return "\n".join(lines)


def _cell(text) -> str:
    return str(text).replace("|", "\\|")


def _validation(m: dict, report: dict | None) -> str:
    lines = ["## Validation results", ""]
    exported = m.get("kind") in ("fused", "tflite")
    if report:
        scored = "the source model, before export" if exported else (
            m.get("metrics_of") or ("the same head trained on the training split only (the saved head was then "
                                    "refit on all images)" if (m.get("split") or {}).get("refit_on_all")
                                    else "the saved model"))
        lines += [f"On {report['n']} held-out validation images, scoring {scored}:", "",
                  f"- accuracy **{report['accuracy']:.2%}**",
                  f"- macro precision {report['macro_precision']:.3f}, recall {report['macro_recall']:.3f}, "
                  f"F1 {report['macro_f1']:.3f}", "",
                  "| class | precision | recall | F1 | validation images |", "| --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {_cell(r['class'])} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |"
                  for r in report.get("per_class", [])]
        lines += ["", "The confusion matrix is in `confusion.json` and `confusion.png`" +
                  (" of the source model folder." if exported else ".")]
    elif _metric_values(m, None):
        values = {t: v for t, v, _ in _metric_values(m, None)}
        lines.append(f"Validation accuracy {values.get('accuracy', float('nan')):.2%}, macro F1 "
                     f"{values.get('f1', float('nan')):.3f} (from the manifest; the per-class report is not here).")
    else:
        lines.append("None: the model was trained without a validation split (`--val-split 0`), so there is no "
                     "held-out estimate of its accuracy.")
    parity = m.get("parity") or {}
    checked = parity.get("tflite") or parity.get("fused_keras")
    if checked:
        lines += ["", f"Export check on {checked['n']} validation images: this file agrees with its source model on "
                      f"{checked['top1_agreement']:.2%} of top-1 labels (accuracy {checked['accuracy']:.2%} against "
                      f"the source's {checked['source_accuracy']:.2%}; largest probability difference "
                      f"{checked['max_abs_probability_diff']:.4f})."]
        if parity.get("note"):
            lines.append(f"Note: {parity['note']}.")
    return "\n".join(lines)


def _unknown_inputs(m: dict) -> str:
    rejector = m.get("rejector")
    if isinstance(rejector, dict) and "threshold" in rejector:
        cal = rejector.get("calibrated_on") or {}
        return ("## Images of none of its classes\n\n"
                f"This model carries an unknown-input rule (`rejector.npz`): an image whose vector's mean cosine "
                f"to its {rejector.get('k', 5)} most similar training vectors is below "
                f"{1 - float(rejector['threshold']):.4f} is reported as `unknown` by `embedflow predict` "
                f"(`--no-reject` turns it off). The threshold rejects {float(rejector.get('rate', 0)):.0%} of the "
                f"{cal.get('n_val', '?')} validation images, so about that share of new photos like the training "
                "data are rejected too. It tells photos unlike the training set apart (other subjects, drawings, "
                "blank pictures); an unseen class that looks like the known ones (another flower species) is mostly "
                "not rejected.")
    rule = m.get("rejection")
    if rule:
        text = rule.get("description") if isinstance(rule, dict) else str(rule)
        return f"## Images of none of its classes\n\nThis model carries a rejection rule: {text or json.dumps(rule)}"
    n = len(m["classes"])
    return ("## Images of none of its classes\n\n"
            f"The model always answers one of its {n} classes. An image of something else (another subject, a blank "
            "or broken picture, a drawing) is **not rejected**: it gets one of these labels anyway, often with a high "
            "probability, because the probabilities are shared among the known classes only. A low top "
            "probability can hint at such an input, but is no guarantee; if unknown inputs matter, screen them "
            "before this model or train a class for them.")


def _limitations(m: dict, report: dict | None) -> str:
    items = []
    n_val = (report or {}).get("n") or (m.get("split") or {}).get("n_val")
    acc = (report or {}).get("accuracy") or (m.get("metrics") or {}).get("accuracy")
    if n_val and isinstance(acc, (int, float)) and math.isfinite(acc):
        se = math.sqrt(max(acc * (1 - acc), 1e-12) / n_val)
        items.append(f"The validation set has {n_val} images: the accuracy above is uncertain by about "
                     f"±{1.96 * se:.1%} (95%), before any difference between these images and yours.")
    counts = _data(m).get("class_counts") or {}
    small = [c for c, k in counts.items() if k < 30]
    if small:
        items.append(f"Classes with fewer than 30 training images ({_class_list(small)}) are estimated from few "
                     "examples; their per-class numbers are the least reliable.")
    items.append(f"The backbone ({_backbone_name(m)}) was pretrained on ImageNet; images unlike photos (drawings, "
                 "microscopy, screenshots) or unlike the training folder (other cameras, lighting, framing) can score "
                 "far lower than the validation numbers.")
    items.append("Images are resized to a square without cropping, so very wide or tall images are squeezed.")
    if m.get("kind") == "tflite" and m.get("quantize") not in (None, "none"):
        items.append(f"The weights are {m['quantize']}-quantised: see the export check above for how often it "
                     "differs from the float model.")
    return "## Limitations\n\n" + "\n".join(f"- {i}" for i in items)


def _how_to_use(m: dict, where: str) -> str:
    kind, size = m.get("kind"), int(m.get("image_size") or (m.get("fingerprint") or {}).get("image_size") or 224)
    target = f"{where}/model.tflite" if kind == "tflite" else where
    lines = ["## How to use it", "", "With embedflow (`pip install embedflow`):", "", "```",
             f"embedflow predict {target} photo.jpg some_folder/ --top-k 3 --format csv",
             f"embedflow evaluate {target} labelled_folder/", "```", "", "```python",
             "import embedflow", f"result = embedflow.predict({json.dumps(target)}, [\"photo.jpg\"], top_k=3)",
             "print(result[\"predictions\"][0][\"top\"])  # [{'label': ..., 'probability': ...}, ...]", "```"]
    if kind == "cached-head":
        lines += ["", f"The head (`{m.get('head_file')}`) works on {_backbone_name(m)} embeddings, which embedflow "
                      "computes from the images; its sha256 is checked against `manifest.json` before it is loaded "
                      "(only load model folders from sources you trust)."]
    if kind in ("finetuned", "fused"):
        lines += ["", f"`model.keras` takes uint8 RGB pixels `(N, {size}, {size}, 3)` (preprocessing is inside) and "
                      "returns softmax probabilities in `labels.txt` order."]
    if kind == "tflite":
        lines += ["", f"`model.tflite` takes uint8 RGB pixels `(1, {size}, {size}, 3)` (preprocessing is inside) and "
                      "returns float32 probabilities. It carries TFLite metadata (name, description, input "
                      "normalisation, the class names as an attached `labels.txt`), so MediaPipe Tasks, the TFLite "
                      "Support library and Android Studio name the classes:", "", "```python",
                  "import mediapipe as mp",
                  "from mediapipe.tasks.python.core.base_options import BaseOptions",
                  "from mediapipe.tasks.python.vision import ImageClassifier, ImageClassifierOptions",
                  "",
                  "options = ImageClassifierOptions(base_options=BaseOptions(model_asset_path=\"model.tflite\"), "
                  "max_results=3)",
                  "with ImageClassifier.create_from_options(options) as classifier:",
                  "    result = classifier.classify(mp.Image.create_from_file(\"photo.jpg\"))",
                  "    print([(c.category_name, c.score) for c in result.classifications[0].categories])",
                  "```", "",
                  "MediaPipe resizes the image itself; embedflow's own resize (EXIF rotation, transparency over "
                  "white, bilinear, no crop) can differ slightly from it."]
    return "\n".join(lines)


def _hyperparameters(params: dict) -> str:
    """The hyperparameters that describe the model, by their short names (C=10.0, kernel=rbf, ...)."""
    short = {}
    for key, value in params.items():
        name = key.rsplit("__", 1)[-1]
        if name not in _QUIET_PARAMS and not isinstance(value, (dict, list)) and name not in short:
            short[name] = value
    return ", ".join(f"{k}={v}" for k, v in short.items())


def _provenance(m: dict) -> str:
    fp = m.get("fingerprint") or {}
    lines = ["## Provenance", ""]
    if fp.get("id"):
        try:
            lines.append(f"- Backbone: {describe_backbone(fp)}")
        except (KeyError, TypeError):
            lines.append(f"- Backbone: {_backbone_name(m)} (fingerprint {fp.get('id')})")
    params = _hyperparameters(m.get("hyperparameters") or {})
    if params:
        lines.append(f"- Hyperparameters: {params} (all of them in `manifest.json`)")
    if m.get("created_utc"):
        lines.append(f"- Created: {m['created_utc']}")
    lines.append("- `manifest.json` records the configuration, the backbone fingerprint and the sha256 of every file "
                 "of this folder.")
    return "\n".join(lines)
