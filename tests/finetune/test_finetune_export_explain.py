"""Fine-tuning, export (TFLite, quantized, fused heads), image-model predict/evaluate, and Grad-CAM,
end to end through the CLI on tiny synthetic images with the random-weight 96 px backbone."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from ..conftest import SIZE, invoke, make_dataset

TINY = ["--epochs", "1", "--fine-tune-epochs", "1", "--image-size", str(SIZE)]
# The first test to use the module-scoped fine-tuned model pays for fine-tuning and two exports (about
# a minute on 2 idle cores, ten on a busy machine): more than the default per-test timeout.
pytestmark = pytest.mark.timeout(1800)


def read_json(path):
    return json.loads(path.read_text())


def models_sha256(path) -> str:
    from embedflow.models import sha256_file

    return sha256_file(path)


def top_labels(result) -> dict:
    return {p["path"]: p["top"][0]["label"] for p in json.loads(result.stdout)["predictions"]}


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, weights_file):
    """One model fine-tuned on 18 synthetic images (1 + 1 epochs), with its float TFLite and dynamic-range
    quantized exports: made once for this module; the tests below only read them."""
    work = tmp_path_factory.mktemp("finetuned")
    data = make_dataset(work / "data", per_class=6)
    run = invoke

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        run("finetune", data, "--out", "models/ft", *TINY, "--weights", weights_file, "--quiet")
        export_stdout = run("export", "models/ft", "--format", "tflite").stdout
        run("export", "models/ft", "--quantize", "dynamic", "--quiet")
    models = work / "models"
    return SimpleNamespace(data=data, ft=models / "ft", tfl=models / "ft-tflite", quant=models / "ft-tflite-dynamic",
                           export_stdout=export_stdout)


@pytest.mark.slow
def test_finetuned_manifest_records_kind_classes_fingerprint_and_split(finetuned, tiny_spec):
    from embedflow import backbones

    manifest = read_json(finetuned.ft / "manifest.json")
    assert manifest["kind"] == "finetuned"
    assert manifest["classes"] == ["apples", "limes", "plums"]
    assert manifest["fingerprint"]["id"] == backbones.fingerprint(tiny_spec)["id"]
    assert manifest["split"]["n_train"] == 14 and manifest["split"]["n_val"] == 4
    assert len(manifest["split"]["val_keys"]) == 4


@pytest.mark.slow
def test_finetuned_metrics_are_those_of_its_report(finetuned):
    """The manifest's accuracy is the report's: the trace of the 4-image validation confusion matrix."""
    manifest = read_json(finetuned.ft / "manifest.json")
    report = read_json(finetuned.ft / "report.json")
    confusion = np.array(report["confusion_matrix"])
    assert confusion.shape == (3, 3) and confusion.sum() == 4
    assert manifest["metrics"]["accuracy"] == report["accuracy"] == pytest.approx(np.trace(confusion) / 4)


@pytest.mark.slow
def test_finetuned_model_is_refit_on_all_images(finetuned):
    """The report scores the model trained on the training split; the saved one is refit on all 18 images."""
    manifest = read_json(finetuned.ft / "manifest.json")
    assert manifest["refit"] == {"images": 18, "stage1_epochs": 1, "stage2_epochs": 1}
    assert manifest["split"]["refit_on_all"] and "training split only" in manifest["metrics_of"]
    assert manifest["stage2_weights"] == "mean of the weights after stage 2 epochs 1-1"
    history = read_json(finetuned.ft / "history.json")
    assert len(history["epoch_seconds"]["refit"]) == 2
    assert len(history["history"]["stage1"]["loss"]) == 1 and len(history["history"]["stage2"]["val_loss"]) == 1


@pytest.mark.slow
def test_finetuned_folder_holds_model_report_and_labels(finetuned):
    manifest = read_json(finetuned.ft / "manifest.json")
    assert manifest["files"]["model.keras"] == models_sha256(finetuned.ft / "model.keras")
    assert manifest["test_time_augmentation"].startswith("horizontal flip")
    for name in ("model.keras", "learning_curve.png", "report.json", "confusion.png", "labels.txt"):
        assert (finetuned.ft / name).is_file(), name


@pytest.mark.slow
def test_finetuned_report_holds_one_prediction_per_validation_image(finetuned):
    """Issue #17: report.json's per-image predictions are the validation images (the manifest's val_keys),
    consistent with the confusion matrix; predictions.csv and top-losses.png are beside it."""
    manifest = read_json(finetuned.ft / "manifest.json")
    report = read_json(finetuned.ft / "report.json")
    preds = report["predictions"]
    assert [p["key"] for p in preds] == manifest["split"]["val_keys"]
    assert sum(p["correct"] for p in preds) == np.trace(np.array(report["confusion_matrix"]))
    for p in preds:
        assert p["loss"] == pytest.approx(-np.log(max(p["p_true"], 1e-12)), abs=1e-5)
        assert p["top"][0]["label"] == p["predicted"] and len(p["top"]) == 3
    assert sum(c["count"] for c in report["confused_pairs"]) == len(preds) - sum(p["correct"] for p in preds)
    rows = (finetuned.ft / "predictions.csv").read_text().splitlines()
    assert rows[0].startswith("key,true,predicted,p_true,loss") and len(rows) == 1 + len(preds)
    assert (finetuned.ft / "top-losses.png").stat().st_size > 0


@pytest.mark.slow
def test_finetuned_report_page_has_learning_curves_and_its_export_parity(finetuned, cli, tmp_path):
    """Issue #18: finetune writes report.html with its learning curves; `embedflow report` on the export
    scores a folder and shows the export's parity figures."""
    html = (finetuned.ft / "report.html").read_text(encoding="utf-8")
    for section in ("summary", "per-class", "confusion", "misclassified", "learning-curves", "embedding-map"):
        assert f'<section id="{section}">' in html, section
    assert "export-parity" not in html
    cli("report", finetuned.tfl, "--data", finetuned.data, "--out", tmp_path / "tfl.html")
    page = (tmp_path / "tfl.html").read_text(encoding="utf-8")
    assert '<section id="export-parity">' in page and "top1_agreement" in page


def test_float_tflite_export_agrees_with_keras(finetuned):
    """Parity with the Keras model on its validation images is printed and recorded; labels.txt beside it."""
    assert "top-1 agreement 100.00%" in finetuned.export_stdout
    exported = read_json(finetuned.tfl / "manifest.json")
    assert exported["kind"] == "tflite" and exported["quantize"] == "none"
    assert exported["parity"]["tflite"]["n"] == 4 and exported["parity"]["tflite"]["top1_agreement"] == 1.0
    assert exported["parity"]["tflite"]["max_abs_probability_diff"] < 1e-3
    assert (finetuned.tfl / "labels.txt").read_text().split() == ["apples", "limes", "plums"]
    assert exported["preprocessing"].startswith("inside the model")


@pytest.mark.slow
def test_quantized_export_records_the_parity_it_has(finetuned, cli):
    """The recorded agreement and accuracy are those of the quantized model on the 4 validation images,
    recomputed here through `predict` on the quantized file and on the Keras model."""
    quant = read_json(finetuned.quant / "manifest.json")
    assert quant["quantize"] == "dynamic"
    assert "refit on all" in quant["parity"]["note"]  # its validation images were in the refit's training data
    val_keys = read_json(finetuned.ft / "manifest.json")["split"]["val_keys"]
    images = [finetuned.data / key for key in val_keys]
    labels = [key.split("/")[0] for key in val_keys]
    keras_top = top_labels(cli("predict", finetuned.ft, *images, "--json"))
    quant_top = top_labels(cli("predict", finetuned.quant / "model.tflite", *images, "--json"))
    keys = [str(p) for p in images]
    recorded = quant["parity"]["tflite"]
    assert recorded["n"] == 4
    assert recorded["top1_agreement"] == pytest.approx(np.mean([quant_top[k] == keras_top[k] for k in keys]))
    assert recorded["accuracy"] == pytest.approx(np.mean([quant_top[k] == lab for k, lab in zip(keys, labels)]))
    assert recorded["source_accuracy"] == pytest.approx(np.mean([keras_top[k] == lab for k, lab in zip(keys, labels)]))


@pytest.mark.slow
def test_quantized_export_is_less_than_half_the_float_size(finetuned):
    assert (finetuned.quant / "model.tflite").stat().st_size < (finetuned.tfl / "model.tflite").stat().st_size / 2


@pytest.mark.slow
def test_predict_gives_the_same_labels_from_keras_and_tflite(finetuned, cli):
    data = finetuned.data
    from_keras = top_labels(cli("predict", finetuned.ft, data / "apples", data / "plums", "--json"))
    from_tflite = top_labels(cli("predict", finetuned.tfl / "model.tflite", data / "apples", data / "plums", "--json"))
    assert len(from_keras) == 12 and from_keras == from_tflite


@pytest.mark.slow
def test_evaluate_gives_the_same_report_from_keras_and_tflite(finetuned, cli, tmp_path):
    report_keras = json.loads(cli("evaluate", finetuned.ft, finetuned.data, "--json", "--out", "ek").stdout)
    report_tflite = json.loads(cli("evaluate", finetuned.tfl / "model.tflite", finetuned.data, "--json",
                                   "--out", "et").stdout)
    assert report_keras["n"] == report_tflite["n"] == 18
    assert report_keras["accuracy"] == report_tflite["accuracy"]
    assert report_keras["confusion_matrix"] == report_tflite["confusion_matrix"]
    assert (tmp_path / "et" / "eval-report.json").is_file() and (tmp_path / "ek" / "eval-report.json").is_file()


GRADCAM_IMAGES = ["apples/apples_000.jpg", "limes/limes_001.png"]


@pytest.mark.slow
def test_gradcam_overlays_each_image_at_its_own_size_plus_a_grid(finetuned, cli, tmp_path):
    images = [finetuned.data / key for key in GRADCAM_IMAGES]
    result = json.loads(cli("explain", finetuned.ft, *images, "--out", "gradcam", "--json").stdout)
    assert len(result["explanations"]) == 2 and result["grid"]
    overlay = Image.open(result["explanations"][0]["overlay"])
    assert overlay.size == Image.open(images[0]).size
    assert not np.array_equal(np.asarray(overlay.convert("RGB")), np.asarray(Image.open(images[0]).convert("RGB")))
    assert (tmp_path / "gradcam" / "grid.png").is_file()


@pytest.mark.slow
def test_gradcam_of_a_tflite_model_is_one_line_exit_5(finetuned, cli):
    bad = cli("explain", finetuned.tfl / "model.tflite", finetuned.data / GRADCAM_IMAGES[0], expect=5)
    assert "gradients" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_modified_model_file_is_refused_before_it_is_loaded(finetuned, cli, tmp_path):
    ft = tmp_path / "ft"
    shutil.copytree(finetuned.ft, ft)  # the shared model stays intact
    with open(ft / "model.keras", "ab") as f:
        f.write(b"x")
    assert "sha256" in cli("predict", ft, finetuned.data / GRADCAM_IMAGES[0], expect=5).stderr


@pytest.mark.slow
def test_fused_logreg_matches_cached_head_and_svm_is_refused(cli, tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "data", per_class=8)
    cli("embed", data, "--runtime", "keras", "--quiet")
    cli("fit", "--head", "logreg", "--quiet")
    cli("export", "models/logreg", "--format", "keras", "--quiet")
    fused = tmp_path / "models" / "logreg-fused"
    manifest = read_json(fused / "manifest.json")
    assert manifest["kind"] == "fused" and manifest["source"]["head"] == "logreg"
    parity = manifest["parity"]["fused_keras"]
    assert parity["top1_agreement"] == 1.0 and parity["max_abs_probability_diff"] < 1e-3
    cached = top_labels(cli("predict", "models/logreg", data, "--json"))
    assert top_labels(cli("predict", fused, data, "--json")) == cached
    cli("fit", "--head", "dense", "--epochs", "20", "--quiet")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the manifest's relative cache path no longer resolves: its absolute one does
    cli("export", tmp_path / "models" / "dense", "--format", "keras", "--quiet")
    monkeypatch.chdir(tmp_path)
    dense = read_json(tmp_path / "models" / "dense-fused" / "manifest.json")["parity"]["fused_keras"]
    assert dense["top1_agreement"] == 1.0 and dense["max_abs_probability_diff"] < 1e-3
    cli("fit", "--head", "svm", "--quiet")
    refused = cli("export", "models/svm", "--format", "tflite", expect=5)
    assert "cannot be fused" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("n_classes", [2, 4])
def test_logreg_folds_into_one_dense_layer(n_classes):
    from embedflow.export import logreg_dense_layer
    from embedflow.heads import make_head

    rng = np.random.default_rng(0)
    X = rng.normal(3, 2, (80, 16)).astype(np.float32)
    y = rng.integers(0, n_classes, 80)
    X[np.arange(80), y] += 4
    head = make_head("logreg", C=1.0).fit(X, y)
    layer = logreg_dense_layer(head, n_classes, 16)
    np.testing.assert_allclose(np.asarray(layer(X)), head.predict_proba(X), atol=1e-5)


def test_refit_uses_the_epoch_count_with_the_best_validation_loss():
    from embedflow.finetune import _best_epochs

    assert _best_epochs({"val_loss": [0.9, 0.7, 0.75, 0.72], "loss": [1, 0.5, 0.4, 0.3]}) == 2
    assert _best_epochs({"loss": [1.0, 0.8]}) == 2 and _best_epochs({}) == 0


def _tiny_classifier(size=8, n_classes=3):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3)(x)
    x = keras.layers.Flatten()(x)  # position-dependent, so a mirror image gets other probabilities
    return keras.Model(inputs, keras.layers.Dense(n_classes, activation="softmax")(x), name="tiny")


def test_flip_tta_model_averages_the_mirror_image_and_loads_with_plain_keras(tmp_path):
    import keras

    from embedflow.models.keras_parts import predict_pixels, unwrap_tta, with_flip_tta

    core = _tiny_classifier()
    tta = with_flip_tta(core)
    pixels = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    mirrored = np.ascontiguousarray(pixels[:, :, ::-1])
    plain, of_mirror = predict_pixels(core, pixels), predict_pixels(core, mirrored)
    assert np.abs(plain - of_mirror).max() > 1e-3  # the check below can fail
    np.testing.assert_allclose(predict_pixels(tta, pixels), (plain + of_mirror) / 2, atol=1e-6)
    tta.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)  # no embedflow objects needed
    np.testing.assert_allclose(predict_pixels(loaded, mirrored), predict_pixels(tta, pixels), atol=1e-6)
    assert unwrap_tta(loaded)[1] and unwrap_tta(loaded)[0].name == "tiny"
    assert unwrap_tta(core) == (core, False)


def _fit_stage_recording(monkeypatch, model, epochs, average_from, seen, interrupt_at=None):
    """Run finetune.fit_stage on random data, appending the weights after each completed epoch to `seen`
    (and raising KeyboardInterrupt at the end of epoch `interrupt_at`, before the later callbacks run)."""
    import importlib

    import keras

    finetune = importlib.import_module("embedflow.finetune")  # `from embedflow import finetune` is the function

    real = finetune.make_callbacks

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == interrupt_at:
                raise KeyboardInterrupt
            seen.append(self.model.get_weights())

    monkeypatch.setattr(finetune, "make_callbacks", lambda *a: (Record(), real(*a)[1]))
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8), np.eye(3, dtype=np.float32)[rng.integers(0, 3, 16)]
    finetune.compile_model(model, 0.05, 0.0)
    train = finetune.image_dataset(x, y, 4, shuffle_seed=0)
    finetune.fit_stage(model, train, None, epochs, 0, "stage 2", finetune.SILENT, [], True, average_from)


def test_weights_are_averaged_from_the_chosen_epoch_on(monkeypatch):
    model, seen = _tiny_classifier(), []
    _fit_stage_recording(monkeypatch, model, epochs=4, average_from=2, seen=seen)
    assert len(seen) == 4 and np.abs(seen[3][-1] - seen[1][-1]).max() > 1e-4
    for got, *per_epoch in zip(model.get_weights(), *seen[1:]):
        np.testing.assert_allclose(got, np.mean(per_epoch, axis=0), atol=1e-6)


def test_ctrl_c_keeps_the_weights_averaged_so_far(monkeypatch):
    model, seen = _tiny_classifier(), []
    with pytest.raises(KeyboardInterrupt):
        _fit_stage_recording(monkeypatch, model, epochs=5, average_from=1, seen=seen, interrupt_at=3)
    # epochs 1 and 2 finished (and were averaged) before Ctrl-C at the end of epoch 3
    assert len(seen) == 2 and np.abs(seen[1][-1] - seen[0][-1]).max() > 1e-4
    for got, first, second in zip(model.get_weights(), *seen):
        np.testing.assert_allclose(got, (first + second) / 2, atol=1e-6)


def test_average_start_clamps_to_the_run():
    from embedflow.finetune import DEFAULTS, average_start

    assert average_start({**DEFAULTS, "average_from": 4, "fine_tune_epochs": 12}) == 4
    assert average_start({**DEFAULTS, "average_from": 4, "fine_tune_epochs": 1}) == 1  # the last epoch alone
    assert average_start({**DEFAULTS, "average_from": 0}) == 0
    assert average_start({**DEFAULTS, "fine_tune_epochs": 0}) == 0


@pytest.mark.slow  # builds the MobileNetV2 model
def test_gradcam_of_a_flip_tta_model_is_mirror_symmetric(tiny_spec):
    from embedflow.explain import gradcam
    from embedflow.finetune import build_model
    from embedflow.models.keras_parts import predict_pixels, with_flip_tta

    model = with_flip_tta(build_model(tiny_spec, 3, 0.5)[0])
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    pixels[:, :, : SIZE // 3] = 255  # asymmetric content, so a map that is not mirrored back would differ
    cam, proba = gradcam(model, pixels)
    np.testing.assert_allclose(proba, predict_pixels(model, pixels), atol=1e-5)
    assert cam.shape[0] == 2 and cam.max() > 0
    mirrored_cam, mirrored_proba = gradcam(model, np.ascontiguousarray(pixels[:, :, ::-1]))
    np.testing.assert_allclose(mirrored_proba, proba, atol=1e-5)
    np.testing.assert_allclose(mirrored_cam, cam[:, :, ::-1], atol=1e-4)
    assert np.abs(cam - cam[:, :, ::-1]).max() > 1e-3  # the map itself is not symmetric
