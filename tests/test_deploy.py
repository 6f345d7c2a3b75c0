"""Deployable artifacts (issue #19): TFLite metadata in every export, read by MediaPipe Tasks; labels.txt and
the README.md model card in every model folder; `predict --format text|tsv|csv|jsonl`."""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest

from tests.conftest import SIZE, make_dataset, make_image

CLASSES = ["apples", "limes", "plums"]


def read_json(path):
    return json.loads(path.read_text())


def front_matter(card: str) -> dict:
    yaml = pytest.importorskip("yaml")
    assert card.startswith("---\n")
    return yaml.safe_load(card[4:card.index("\n---\n", 4)])


def assert_members_recorded(folder, names=("labels.txt", "README.md")):
    from embedflow.models import sha256_file

    files = read_json(folder / "manifest.json")["files"]
    for name in names:
        assert files[name] == sha256_file(folder / name), name


# --- the model card, as a pure function ------------------------------------------------------------


def _manifest(**over) -> dict:
    manifest = {
        "format": "embedflow.model", "schema_version": 1, "kind": "cached-head", "head": "svm",
        "head_file": "head.joblib", "classes": ["daisy", "roses", "tulips | red"],
        "fingerprint": {"backbone": "mobilenet_v2", "backbone_arg": "mobilenet_v2", "alpha": 1.0, "image_size": 224,
                        "output_dim": 1280, "weights_sha256": "ab" * 32, "id": "0123456789abcdef"},
        "hyperparameters": {"C": 10.0, "class_weight": None},
        "split": {"val_split": 0.2, "seed": 0, "n_train": 80, "n_val": 20, "refit_on_all": True,
                  "grouped_by": "sha256 (identical files share a side)"},
        "data": {"root": "/data/flowers-dev", "count": 100, "class_counts": {"daisy": 40, "roses": 35, "tulips | red": 25},
                 "skipped": [["roses/bad.jpg", "truncated image (broken data stream)"]]},
        "metrics": {"accuracy": 0.9, "macro_precision": 0.91, "macro_recall": 0.89, "macro_f1": 0.895},
        "embedflow_version": "9.9.9", "created_utc": "2026-12-01T00:00:00Z",
    }
    return {**manifest, **over}


def _report() -> dict:
    return {"n": 20, "accuracy": 0.9, "macro_precision": 0.91, "macro_recall": 0.89, "macro_f1": 0.895,
            "per_class": [{"class": c, "precision": p, "recall": r, "f1": f, "support": s} for c, p, r, f, s in
                          [("daisy", 1.0, 0.875, 0.933, 8), ("roses", 0.857, 0.857, 0.857, 7),
                           ("tulips | red", 0.875, 0.94, 0.9, 5)]],
            "classes": ["daisy", "roses", "tulips | red"], "confusion_matrix": [[7, 1, 0], [0, 6, 1], [0, 0, 5]]}


def test_model_card_front_matter_is_hugging_face_style_yaml():
    from embedflow.reports import model_card

    meta = front_matter(model_card(_manifest(), _report(), "models/svm"))
    assert meta["library_name"] == "embedflow" and meta["pipeline_tag"] == "image-classification"
    assert {"embedflow", "image-classification", "mobilenet_v2", "svm"} <= set(meta["tags"])
    assert meta["backbone"] == {"name": "mobilenet_v2", "image_size": 224, "fingerprint": "0123456789abcdef"}
    assert meta["dataset"] == {"folder": "flowers-dev", "images": 100, "classes": 3, "skipped": 1,
                               "class_counts": {"daisy": 40, "roses": 35, "tulips | red": 25}, "validation_images": 20}
    (result,) = meta["model-index"][0]["results"]
    assert result["task"]["type"] == "image-classification"
    assert result["dataset"] == {"type": "imagefolder", "name": "flowers-dev", "split": "validation"}
    values = {m["type"]: m["value"] for m in result["metrics"]}
    assert values == {"accuracy": 0.9, "precision": 0.91, "recall": 0.89, "f1": 0.895}
    assert set(meta["metrics"]) == {"accuracy", "precision", "recall", "f1"}


def test_model_card_says_what_a_reader_needs():
    from embedflow.reports import model_card

    card = model_card(_manifest(), _report(), "models/svm")
    for section in ("## Intended use", "## Training data", "## Validation results", "## Images of none of its classes",
                    "## Limitations", "## How to use it"):
        assert section in card, section
    assert "| tulips \\| red | 25 |" in card  # a table cell cannot break on a class name
    assert "`roses/bad.jpg`: truncated image" in card and "Skipped files (not used for training): 1." in card
    assert "accuracy **90.00%**" in card and "| daisy | 1.000 | 0.875 | 0.933 | 8 |" in card
    assert "refit on all images" in card  # which model the numbers score
    assert "always answers one of its 3 classes" in card and "**not rejected**" in card
    assert "embedflow predict models/svm photo.jpg" in card and "MediaPipe" not in card
    assert "±13.1%" in card  # 1.96 * sqrt(0.9 * 0.1 / 20)
    assert card.endswith("\n") and "\n\n\n" not in card


def test_model_card_without_validation_or_with_a_rejection_rule():
    from embedflow.reports import model_card

    bare = _manifest(metrics={}, split={"val_split": 0.0, "seed": 0, "n_train": 100, "n_val": 0})
    card = model_card(bare, None)
    assert "no held-out estimate" in card and "model-index" not in front_matter(card)
    ruled = model_card(_manifest(rejection={"description": "top probability below 0.6 answers `unknown`"}), _report())
    assert "carries a rejection rule: top probability below 0.6" in ruled and "not rejected" not in ruled


def test_model_card_of_a_tflite_export_shows_parity_and_mediapipe():
    from embedflow.reports import deploy_files

    manifest = _manifest(kind="tflite", quantize="int8", head=None, metrics=None, model_file="model.tflite",
                         source={"path": "models/logreg", "kind": "cached-head", "head": "logreg", "metrics": {}},
                         parity={"tflite": {"n": 20, "top1_agreement": 0.95, "accuracy": 0.85,
                                            "source_accuracy": 0.9, "max_abs_probability_diff": 0.12}})
    files = deploy_files(manifest, _report(), "models/logreg-tflite-int8")
    assert files["labels.txt"] == "daisy\nroses\ntulips | red\n"
    card = files["README.md"]
    assert "agrees with its source model on 95.00% of top-1 labels" in card
    assert "source model, before export" in card and "int8-quantised" in card
    assert "ImageClassifier" in card and "embedflow predict models/logreg-tflite-int8/model.tflite" in card
    assert {"tflite-int8", "logreg"} <= set(front_matter(card)["tags"])


# --- predict --format -------------------------------------------------------------------------------

ODD_NAMES = ["comma, here.jpg", 'quote "q".png', "tab\there.jpg", "naïve 日本.jpg", "line\nbreak.png"]


@pytest.fixture
def fitted(cli, tmp_path):
    """A logreg folder fitted through the CLI, and a folder of images with awkward names."""
    data = make_dataset(tmp_path / "data", per_class=6)
    cli("embed", data, "--runtime", "keras", "--quiet")
    cli("fit", "--head", "logreg", "--quiet")
    odd = tmp_path / "odd"
    for i, name in enumerate(ODD_NAMES):
        make_image(odd / name, (200, 40, 40) if i % 2 else (60, 190, 60), 500 + i)
    return tmp_path / "models" / "logreg", odd


def test_fit_writes_labels_and_a_model_card_recorded_in_the_manifest(fitted):
    model, _ = fitted
    assert (model / "labels.txt").read_text() == "apples\nlimes\nplums\n"
    assert_members_recorded(model)
    manifest = read_json(model / "manifest.json")
    assert manifest["data"]["class_counts"] == {"apples": 6, "limes": 6, "plums": 6}
    assert manifest["data"]["skipped"] == []
    card = (model / "README.md").read_text()
    assert front_matter(card)["dataset"]["images"] == 18
    assert "| apples | 6 |" in card and "embedflow predict" in card


def test_predict_formats_round_trip_awkward_paths(cli, fitted):
    model, odd = fitted
    want = json.loads(cli("predict", model, odd, "--top-k", "2", "--runtime", "keras", "--json").stdout)["predictions"]
    assert sorted(p["path"] for p in want) == sorted(str(odd / n) for n in ODD_NAMES)
    by_path = {p["path"]: p["top"] for p in want}

    text = cli("predict", model, odd, "--top-k", "2", "--runtime", "keras").stdout
    assert text == "".join(f"{p['path']}\t" + (f"unknown {p['unknown_score']:.3f}  " if p["unknown"] else "")
                           + "  ".join(f"{t['label']} {t['probability']:.3f}" for t in p["top"]) + "\n" for p in want)

    for fmt, delimiter in (("csv", ","), ("tsv", "\t")):
        out = cli("predict", model, odd, "--top-k", "2", "--runtime", "keras", "--format", fmt).stdout
        rows = list(csv.reader(io.StringIO(out, newline=""), delimiter=delimiter))
        # the fitted head carries an unknown-input rule: two more columns
        assert rows[0] == ["path", "label_1", "probability_1", "label_2", "probability_2", "unknown", "unknown_score"]
        assert len(rows) == 1 + len(ODD_NAMES)
        for path, label1, p1, label2, p2, unknown, _ in rows[1:]:
            assert unknown == str(int({p["path"]: p["unknown"] for p in want}[path]))
            top = by_path[path]  # the path comes back exactly: commas, quotes, tabs, line breaks, non-ASCII
            assert [label1, label2] == [t["label"] for t in top]
            assert abs(float(p1) - top[0]["probability"]) < 1e-6 and abs(float(p2) - top[1]["probability"]) < 1e-6

    lines = cli("predict", model, odd, "--top-k", "2", "--runtime", "keras", "--format", "jsonl").stdout.splitlines()
    assert [json.loads(line) for line in lines] == [{"path": p["path"], "top": p["top"], "unknown": p["unknown"],
                                                     "unknown_score": p["unknown_score"]} for p in want]


def test_predict_format_failures_and_usage(cli, fitted, tmp_path):
    model, odd = fitted
    (odd / "broken.jpg").write_bytes(b"not an image")
    result = cli("predict", model, odd / "broken.jpg", odd / "comma, here.jpg", "--runtime", "keras", "--format", "csv",
                 "--top-k", "9")
    rows = list(csv.reader(io.StringIO(result.stdout, newline="")))
    assert rows[0] == ["path", "label_1", "probability_1", "label_2", "probability_2", "label_3", "probability_3",
                       "unknown", "unknown_score"]
    assert [r[0] for r in rows[1:]] == [str(odd / "comma, here.jpg")]  # the failure is not a row ...
    assert "broken.jpg" in result.stderr  # ... it goes to stderr, as with text
    assert "--format" in cli("predict", model, odd, "--format", "xml", expect=2).stderr
    both = cli("predict", model, odd, "--format", "csv", "--json", expect=2).stderr
    assert "--json and --format" in both and len(both.strip().splitlines()) == 1
    only_bad = cli("predict", model, odd / "broken.jpg", "--runtime", "keras", "--format", "jsonl", expect=1)
    assert only_bad.stdout == ""


# --- TFLite exports with metadata, read by MediaPipe (slow: four Keras-to-TFLite conversions) --------


@pytest.fixture(scope="module")
def exports(tmp_path_factory, weights_file):
    """One fitted logreg head and one fine-tuned model, each exported to float32 and int8 TFLite."""
    from embedflow import api

    root = tmp_path_factory.mktemp("deploy")
    data = make_dataset(root / "data", per_class=8)
    api.embed_folder(data, root / "cache.h5", image_size=SIZE, weights=str(weights_file), runtime="keras")
    api.fit_head(root / "cache.h5", "logreg").save(root / "logreg")
    api.finetune(data, root / "ft", image_size=SIZE, weights=str(weights_file),
                 params={"epochs": 1, "fine_tune_epochs": 1, "refit": False})
    out = {"data": data}
    for source in ("logreg", "ft"):
        for quantize in ("none", "int8"):
            out[source, quantize] = api.export(root / source, "tflite", quantize, root / f"{source}-{quantize}").out_dir
    out["ft"] = root / "ft"
    return out


def _pixels(data) -> np.ndarray:
    """Two images per class, decoded and resized as embedflow does (so MediaPipe's own resize is a no-op)."""
    from embedflow.data import discover_labelled
    from embedflow.embedding import decode_refs

    refs, _, _ = discover_labelled(data)
    picked = [r for c in CLASSES for r in [r for r in refs if r.label == c][:2]]
    return decode_refs(picked, SIZE, CLASSES).pixels


@pytest.mark.slow
@pytest.mark.parametrize("source", ["logreg", "ft"])
@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_mediapipe_names_the_classes_of_every_export(exports, source, quantize):
    pytest.importorskip("mediapipe", reason="mediapipe (the dev extra) is not installed")
    import mediapipe as mp
    from mediapipe.tasks.python.core.base_options import BaseOptions
    from mediapipe.tasks.python.vision import ImageClassifier, ImageClassifierOptions

    from embedflow.models import load_image_model as load
    from embedflow.models.tflite_metadata import read_metadata

    folder = exports[source, quantize]
    model_file = folder / "model.tflite"
    md = read_metadata(model_file.read_bytes())
    assert md["labels"] == CLASSES and md["input"]["dtype"] == "uint8" and md["output"]["dtype"] == "float32"
    assert md["input"]["shape"] == [1, SIZE, SIZE, 3] and md["input"]["normalization"] == {"mean": [0.0], "std": [1.0]}
    assert md["author"].startswith("embedflow") and "apples, limes, plums" in md["description"]
    manifest = read_json(folder / "manifest.json")
    assert manifest["parity"]["tflite"]["n"] > 0  # the check ran on this file, metadata included
    assert_members_recorded(folder, ("model.tflite", "labels.txt", "README.md"))

    pixels = _pixels(exports["data"])
    ours = load(model_file).predict_pixels(pixels).argmax(1)
    options = ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(model_file)), max_results=3)
    with ImageClassifier.create_from_options(options) as classifier:
        for image, want in zip(pixels, ours):
            result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
            categories = result.classifications[0].categories
            assert sorted(c.category_name for c in categories) == CLASSES
            assert categories[0].category_name == CLASSES[want]


@pytest.mark.slow
def test_finetuned_and_export_folders_carry_the_card(exports):
    ft = exports["ft"]
    assert_members_recorded(ft)
    assert read_json(ft / "manifest.json")["data"]["class_counts"] == {c: 8 for c in CLASSES}
    card = (exports["logreg", "int8"] / "README.md").read_text()
    meta = front_matter(card)
    # 24 images are too few to calibrate int8 (fewer than 50): the export falls back to dynamic-range
    # quantization, and the card names what was applied
    assert read_json(exports["logreg", "int8"] / "manifest.json")["quantize_requested"] == "int8"
    assert {"tflite-dynamic", "logreg"} <= set(meta["tags"]) and meta["dataset"]["class_counts"] == {c: 8 for c in CLASSES}
    assert "Export check on" in card and "ImageClassifier" in card
    assert "fine-tuned" in front_matter((exports["ft", "none"] / "README.md").read_text())["model-index"][0]["name"]


@pytest.mark.slow
def test_a_bare_tflite_file_names_its_classes_from_its_metadata(exports, tmp_path, cli):
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(exports["logreg", "none"] / "model.tflite", alone / "classifier.tflite")
    from embedflow.models import load_image_model as load

    assert load(alone / "classifier.tflite").classes == CLASSES
    data = exports["data"]
    got = json.loads(cli("predict", alone / "classifier.tflite", data / "plums", "--json").stdout)["predictions"]
    want = json.loads(cli("predict", exports["logreg", "none"] / "model.tflite", data / "plums", "--json").stdout)
    assert [p["top"] for p in got] == [p["top"] for p in want["predictions"]]
    # damaged metadata and no labels.txt: one line, exit 5
    raw = (alone / "classifier.tflite").read_bytes()
    flat = raw[:raw.rindex(b"PK\x03\x04")]  # the label archive cut off: the metadata names a file that is gone
    (alone / "damaged.tflite").write_bytes(flat)
    bad = cli("predict", alone / "damaged.tflite", data / "plums", expect=5).stderr
    assert "neither a manifest.json nor a labels.txt" in bad and len(bad.strip().splitlines()) == 1
