"""TFLite metadata: labels and normalisation carried inside the .tflite file, read back by MediaPipe Tasks.

A tiny Keras classifier (uint8 32x32 RGB -> Rescaling -> 1x1 conv -> pooling -> softmax over 3 named
classes) whose class is the dominant colour channel, so each test image has a known class; converted as
export does: float32 and full-integer (int8) quantised, plus the dynamic and float16 variants once.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from embedflow.errors import ModelError

from .conftest import run_litert

LABELS = ["red rose", "green fern", "blue iris"]  # output column order: the dominant channel
SIZE = 32
INFO = dict(name="embedflow test classifier", version="1.2.3", description="Which colour dominates.",
            author="embedflow tests", image_size=SIZE,
            input_description="uint8 RGB image, 32x32; preprocessing is inside the model",
            output_description="softmax probabilities over the three colour classes")


def _images() -> tuple[np.ndarray, np.ndarray]:
    """Two noisy images per class, one channel dominant; returns (pixels uint8 (6, 32, 32, 3), classes)."""
    rng = np.random.default_rng(0)
    pixels, classes = [], []
    for c in range(3):
        for _ in range(2):
            img = rng.integers(0, 90, (SIZE, SIZE, 3))
            img[..., c] += 150
            pixels.append(img)
            classes.append(c)
    return np.asarray(pixels, dtype=np.uint8), np.asarray(classes)


def _keras_model(dtype="uint8"):
    """uint8 pixels in, as embedflow's models; dtype="float32" takes the pixels 0..255 as floats instead."""
    import keras

    inp = keras.Input((SIZE, SIZE, 3), dtype=dtype)
    x = keras.layers.Rescaling(1 / 255.0)(keras.ops.cast(inp, "float32"))
    conv = keras.layers.Conv2D(3, 1, name="conv")
    x = keras.layers.GlobalAveragePooling2D()(conv(x))
    dense = keras.layers.Dense(3, activation="softmax", name="probabilities")
    model = keras.Model(inp, dense(x))
    conv.set_weights([np.eye(3, dtype="float32").reshape(1, 1, 3, 3), np.zeros(3, "float32")])
    dense.set_weights([8 * np.eye(3, dtype="float32") - 4, np.zeros(3, "float32")])
    return model


def _convert(model, quantize: str, input_type=None) -> bytes:
    import warnings

    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if input_type is not None:
        converter.inference_input_type = input_type
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        calibration = np.random.default_rng(1).integers(0, 256, (8, SIZE, SIZE, 3), dtype=np.uint8)
        calibration = calibration.astype(model.inputs[0].dtype)
        converter.representative_dataset = lambda: ([calibration[i:i + 1]] for i in range(len(calibration)))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        return converter.convert()


@pytest.fixture(scope="module")
def models() -> dict[str, bytes]:
    """quantize -> (the converted model, the same with metadata)."""
    import keras

    keras.utils.set_random_seed(0)
    model = _keras_model()
    from embedflow.models.tflite_metadata import add_metadata

    out = {}
    for quantize in ("none", "dynamic", "float16", "int8"):
        raw = _convert(model, quantize)
        out[quantize] = (raw, add_metadata(raw, LABELS, **INFO))
    raw = _convert(_keras_model("float32"), "none")
    out["float-input"] = (raw, add_metadata(raw, LABELS, **INFO))
    return out


@pytest.mark.parametrize("quantize", ["none", "dynamic", "float16", "int8"])
def test_metadata_round_trips_and_the_model_computes_the_same(models, quantize):
    from embedflow.models.tflite_metadata import read_metadata

    raw, with_metadata = models[quantize]
    pixels, classes = _images()
    before, after = run_litert(raw, pixels), run_litert(with_metadata, pixels)
    np.testing.assert_array_equal(before, after)
    assert (after.argmax(1) == classes).all()  # the tiny model does classify by colour

    md = read_metadata(with_metadata)
    assert md["labels"] == LABELS
    assert (md["name"], md["version"], md["description"], md["author"]) == (
        INFO["name"], INFO["version"], INFO["description"], INFO["author"])
    assert md["min_parser_version"] == "1.0.0"
    assert md["input"]["description"] == INFO["input_description"]
    assert md["input"]["color_space"] == "RGB"
    assert md["input"]["normalization"] == {"mean": [0.0], "std": [1.0]}
    assert md["input"]["range"] == {"min": [0.0], "max": [255.0]}
    assert md["input"]["dtype"] == "uint8" and md["input"]["shape"] == [1, SIZE, SIZE, 3]
    assert md["output"]["description"] == INFO["output_description"]
    assert md["output"]["label_file"] == "labels.txt" and md["associated_files"] == ["labels.txt"]
    assert md["output"]["dtype"] == "float32" and md["output"]["shape"] == [1, 3]
    # the label file is a plain (stored) zip member, as readers that map it in place expect
    with zipfile.ZipFile(io.BytesIO(with_metadata)) as zf:
        assert zf.getinfo("labels.txt").compress_type == zipfile.ZIP_STORED
        assert zf.read("labels.txt").decode() == "red rose\ngreen fern\nblue iris\n"


def test_adding_again_replaces_the_metadata(models):
    from embedflow.models.tflite_metadata import add_metadata, read_metadata

    _, once = models["none"]
    twice = add_metadata(once, ["a", "b", "c"], **{**INFO, "version": "2"})
    md = read_metadata(twice)
    assert (md["labels"], md["version"], md["associated_files"]) == (["a", "b", "c"], "2", ["labels.txt"])
    assert abs(len(twice) - len(once)) < 64  # one metadata buffer and one archive, not two


@pytest.mark.parametrize("quantize", ["none", "int8", "float-input"])
def test_mediapipe_image_classifier_returns_the_label_names(models, quantize):
    pytest.importorskip("mediapipe", reason="mediapipe (the dev extra) is not installed")
    import mediapipe as mp
    from mediapipe.tasks.python.core.base_options import BaseOptions
    from mediapipe.tasks.python.vision import ImageClassifier, ImageClassifierOptions

    _, with_metadata = models[quantize]
    pixels, classes = _images()
    litert = run_litert(with_metadata, pixels).argmax(1)
    options = ImageClassifierOptions(base_options=BaseOptions(model_asset_buffer=with_metadata), max_results=3)
    with ImageClassifier.create_from_options(options) as classifier:
        for image, want, got_litert in zip(pixels, classes, litert):
            result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
            categories = result.classifications[0].categories
            assert sorted(c.category_name for c in categories) == sorted(LABELS)
            top = categories[0]
            assert top.category_name == LABELS[got_litert] == LABELS[want]
            assert top.index == got_litert


def test_a_model_without_metadata_or_damaged_gives_one_line_model_errors(models):
    from embedflow.models.tflite_metadata import read_metadata

    raw, with_metadata = models["none"]
    with pytest.raises(ModelError, match="carries no metadata"):
        read_metadata(raw)
    with pytest.raises(ModelError, match="not a TFLite model"):
        read_metadata(b"PK\x03\x04 a zip, not a model")
    with pytest.raises(ModelError, match="not a TFLite model"):
        read_metadata(b"")
    # the flatbuffer without its appended archive: the metadata names a label file that is not there
    flat_end = with_metadata.rindex(b"PK\x03\x04")
    with pytest.raises(ModelError, match="packed files are missing or damaged"):
        read_metadata(with_metadata[:flat_end])
    # cut in the middle of the flatbuffer
    with pytest.raises(ModelError) as cut:
        read_metadata(with_metadata[:flat_end // 3])
    assert "\n" not in str(cut.value)


def test_add_metadata_refuses_what_does_not_fit(models):
    from embedflow.models.tflite_metadata import add_metadata

    raw, _ = models["none"]
    with pytest.raises(ModelError, match="3 output columns|2 labels need 2"):
        add_metadata(raw, ["a", "b"], **INFO)
    with pytest.raises(ModelError, match=r"not \(1, 64, 64, 3\)"):
        add_metadata(raw, LABELS, **{**INFO, "image_size": 64})
    with pytest.raises(ModelError, match="not a TFLite model"):
        add_metadata(b"nonsense", LABELS, **INFO)
    with pytest.raises(ValueError, match="distinct"):
        add_metadata(raw, ["a", "a", "b"], **INFO)
    with pytest.raises(ValueError, match="one line"):
        add_metadata(raw, ["a", "b\nc", "d"], **INFO)


def test_add_metadata_refuses_an_int8_input(models):
    import tensorflow as tf

    from embedflow.models.tflite_metadata import add_metadata

    int8_input = _convert(_keras_model("float32"), "int8", input_type=tf.int8)
    with pytest.raises(ModelError, match="int8: MediaPipe feeds uint8 or float32 images only"):
        add_metadata(int8_input, LABELS, **INFO)
