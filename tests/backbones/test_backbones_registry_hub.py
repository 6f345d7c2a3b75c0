"""Backbone registry, fingerprints, per-backbone caches, offline errors, and TF Hub / SavedModel
feature vectors (tiny SavedModels built here with TensorFlow, embedded through `hub:<path>`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from embedflow import backbones
from embedflow.errors import FingerprintMismatch, UsageError, WeightsError

from ..conftest import CLASS_COLOURS, make_dataset, make_image

HUB_SIZE = 64


def save_feature_vector(path: Path, seed: int = 1, dim: int = 12, size: int | None = HUB_SIZE,
                        signature_only: bool = False) -> Path:
    """A TF2 SavedModel feature vector: float32 [None, size, size, 3] in [0, 1] -> (N, dim).

    signature_only: no restorable __call__, just a serving signature returning {"feature_vector": ...}."""
    import tensorflow as tf

    class FeatureVector(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(tf.random.stateless_normal([3, 3, 3, 8], seed=[seed, 0]))
            self.project = tf.Variable(tf.random.stateless_normal([8, dim], seed=[seed, 1]))

        def features(self, images):
            x = tf.nn.relu(tf.nn.conv2d(images - 0.5, self.kernel, 2, "SAME"))
            return tf.matmul(tf.reduce_mean(x, axis=[1, 2]), self.project)

    module = FeatureVector()
    spec = tf.TensorSpec([None, size, size, 3], tf.float32, name="images")
    if signature_only:
        sig = tf.function(lambda images: {"feature_vector": module.features(images)}, input_signature=[spec])
        tf.saved_model.save(module, str(path), signatures={"serving_default": sig.get_concrete_function()})
    else:
        module.__call__ = tf.function(module.features, input_signature=[spec])
        tf.saved_model.save(module, str(path))
    return path


@pytest.fixture(scope="module")
def hub_model(tmp_path_factory) -> Path:
    return save_feature_vector(tmp_path_factory.mktemp("hub") / "tiny_feature_vector")


# --- registry --------------------------------------------------------------------------------------


def test_registry_dims_and_weights_files():
    expect = {"mobilenet_v2": 1280, "efficientnet_b0": 1280, "resnet50": 2048,
              "mobilenet_v3_small": 576, "mobilenet_v3_large": 960}
    assert {name: spec.output_dim for name, spec in backbones.REGISTRY.items()} == expect
    assert backbones.get_spec("efficientnet_b0").weights_file == "efficientnetb0_notop.h5"
    assert backbones.get_spec("resnet50").pixels == "caffe"
    assert all(spec.fine_tunable for spec in backbones.REGISTRY.values())


def test_parse_mobilenet_variants_and_round_trip():
    small = backbones.get_spec("mobilenet_v2:0.35:160")
    assert (small.alpha, small.image_size, small.output_dim) == (0.35, 160, 1280)
    assert small.weights_file == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_160_no_top.h5"
    assert backbones.get_spec("mobilenet_v2:1.4").output_dim == 1792
    assert backbones.get_spec("mobilenet_v2:1.0:224") == backbones.get_spec()  # the default, spelled out
    for arg in [*backbones.REGISTRY, "mobilenet_v2:0.5:128", "mobilenet_v2:1.3:96"]:
        spec = backbones.get_spec(arg)
        assert backbones.get_spec(spec.arg) == spec
    # --image-size only resizes: the default weights (224) stay
    assert backbones.get_spec("mobilenet_v2", 160).weights_file.endswith("_1.0_224_no_top.h5")


@pytest.mark.parametrize("arg, words", [
    ("vgg16", ["unknown backbone 'vgg16'", "efficientnet_b0", "resnet50", "hub:"]),
    ("mobilenet_v2:0.3:160", ["alpha in 0.35"]),
    ("mobilenet_v2:1.0:150", ["size in 96"]),
    ("mobilenet_v2:big", ["mobilenet_v2:ALPHA:SIZE"]),
    ("resnet50:2", ["takes no parameters"]),
    ("hub:", ["needs a handle"]),
])
def test_bad_backbone_names(arg, words):
    with pytest.raises(UsageError) as err:
        backbones.get_spec(arg)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_fingerprint_changes_with_weights_size_and_backbone(weights_file, tmp_path):
    base = backbones.fingerprint(backbones.get_spec("mobilenet_v2", 96, str(weights_file)))
    moved = shutil.copy(weights_file, tmp_path / "elsewhere.weights.h5")
    assert backbones.fingerprint(backbones.get_spec("mobilenet_v2", 96, str(moved)))["id"] == base["id"]
    other = tmp_path / "other.weights.h5"
    other.write_bytes(Path(weights_file).read_bytes() + b"\0")
    ids = {
        "weights": backbones.fingerprint(backbones.get_spec("mobilenet_v2", 96, str(other)))["id"],
        "size": backbones.fingerprint(backbones.get_spec("mobilenet_v2", 128, str(weights_file)))["id"],
        "alpha": backbones.fingerprint(backbones.get_spec("mobilenet_v2:0.5:224", 96, str(weights_file)))["id"],
        "backbone": backbones.fingerprint(backbones.get_spec("efficientnet_b0", 96, str(weights_file)))["id"],
    }
    assert base["id"] not in ids.values() and len(set(ids.values())) == 4


def test_default_fingerprint_id_unchanged(tmp_path):
    """Caches written before the registry existed keep matching: ids computed by the previous code (id
    scheme 1, over the prose fields) are recognised from their fields and match today's fingerprint."""
    weights = tmp_path / "fixed.weights"
    weights.write_bytes(b"weights")
    for spec, old_id in ((backbones.get_spec("mobilenet_v2", 96), "bc0fb7047ef854c8"),
                         (backbones.get_spec(), "2be249448f8ae26a")):
        now = backbones.fingerprint(spec, weights)
        old = {**{k: now[k] for k in ("backbone", "alpha", "image_size", "output_dim", "weights_sha256",
                                      "embedding_version")},
               "preprocessing": "mobilenet_v2: x/127.5 - 1 (pixels to [-1, 1])", "pooling": "global average",
               "resize": "EXIF-rotated, RGB over white, bilinear to a square (no crop)", "id": old_id}
        assert backbones.upgrade(old)["id"] == now["id"]  # only when old_id is the scheme 1 hash of these fields
        assert backbones.same_backbone(old, now)


def test_caffe_preprocessing_matches_keras():
    import keras

    pixels = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    x = pixels
    for layer in backbones.preprocessing_layers(backbones.get_spec("resnet50")):
        x = layer(x)
    want = keras.applications.resnet50.preprocess_input(pixels.astype("float32"))
    np.testing.assert_allclose(np.asarray(x), want, atol=1e-4)


# --- offline weights ---------------------------------------------------------------------------------


def test_missing_weights_is_one_clear_line(cli, tmp_path, monkeypatch):
    empty = tmp_path / "empty-keras-home"
    empty.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(empty))
    make_dataset(tmp_path / "data", per_class=2, classes=("apples", "limes"))
    result = cli("embed", "data", "--backbone", "efficientnet_b0", expect=6, tiny=False)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr  # (Keras' "Downloading data from" goes to stderr)
    line = errors[0]
    assert "efficientnetb0_notop.h5" in line and str(empty / "models") in line
    assert not (tmp_path / "cache" / "embeddings-efficientnet_b0.h5").exists()
    listing = {r["backbone"]: r for r in json.loads(cli("backbones", "--json").stdout)}
    assert listing["efficientnet_b0"]["available"] is False
    (empty / "models").mkdir()
    (empty / "models" / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5").write_bytes(b"x")
    listing = {r["backbone"]: r for r in json.loads(cli("backbones", "--json").stdout)}
    assert listing["resnet50"]["available"] is True and listing["mobilenet_v2"]["available"] is False
    assert listing["resnet50"]["output_dim"] == 2048 and listing["hub:URL_OR_PATH"]["fine_tunable"] is False
    text = cli("backbones").stdout
    assert "mobilenet_v3_large" in text and "960" in text and "missing" in text


@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_missing_imagenet_weights_print_only_the_error_line(tmp_path, precision):
    """The whole output of `embed` (stdout and stderr of the real command, TensorFlow's native logging
    included) is the one error line when the ImageNet weights are missing and cannot be downloaded."""
    import os
    import subprocess
    import sys

    from embedflow.errors import WeightsError

    empty = tmp_path / "empty-keras-home"
    empty.mkdir()
    make_dataset(tmp_path / "data", per_class=2, classes=("apples", "limes"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}  # TensorFlow's defaults, as a user has
    env.update(KERAS_HOME=str(empty), HTTPS_PROXY="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
               EMBEDFLOW_HOME=str(tmp_path / "home"))  # a download fails at once, offline or not
    done = subprocess.run([sys.executable, "-m", "embedflow.cli", "embed", "data", "--precision", precision],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == WeightsError.exit_code, done.stderr
    assert done.stdout == "", done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ImageNet weights for mobilenet_v2 not available"), lines
    assert str(empty / "models") in lines[0]


def test_backbones_say_which_take_precision_int8(cli):
    rows = {r["backbone"]: r for r in json.loads(cli("backbones", "--json").stdout)}
    assert rows["mobilenet_v2"]["precisions"] == ["fp32", "int8"]
    assert rows["efficientnet_b0"]["precisions"] == ["fp32", "int8"]
    assert rows["mobilenet_v2:ALPHA:SIZE"]["precisions"] == ["fp32", "int8"]
    assert rows["hub:URL_OR_PATH"]["precisions"] == ["fp32"]
    lines = cli("backbones").stdout.splitlines()
    header = lines[0].split()
    assert "precisions" in header, lines[0]
    column = header.index("precisions")
    by_name = {line.split()[0]: line.split() for line in lines[1:] if line and not line.startswith((" ", "*"))}
    assert by_name["mobilenet_v2"][column] == "fp32,int8" and by_name["hub:URL_OR_PATH"][column] == "fp32"


# --- TF Hub / SavedModel -----------------------------------------------------------------------------


def test_hub_embed_fit_predict_through_the_cli(cli, hub_model, tmp_path):
    import tensorflow as tf

    from embedflow import cache
    from embedflow.data import load_image

    data = make_dataset(tmp_path / "data", per_class=4)
    result = cli("embed", data, "--backbone", f"hub:{hub_model}", tiny=False)
    found = sorted((tmp_path / "cache").glob("embeddings-hub-*.h5"))
    assert len(found) == 1 and "tiny_feature_vector" in found[0].name, result.stdout
    held = cache.load(found[0])
    assert held.embeddings.shape == (12, 12)
    assert held.fingerprint["backbone"] == "hub" and held.fingerprint["image_size"] == HUB_SIZE  # from the signature
    # the vectors are the SavedModel's own, on [0, 1] pixels
    model = tf.saved_model.load(str(hub_model))
    pixels = np.stack([load_image(data / key, HUB_SIZE) for key in held.keys[:3]])
    want = model(tf.constant(pixels, tf.float32) / 255.0).numpy()
    assert backbones.min_cosine(held.embeddings[:3], want) > 0.9999
    # fit without --cache picks the only cache; predict re-embeds a new image the same way
    cli("fit", "--val-split", "0")
    new = make_image(tmp_path / "new" / "red.jpg", CLASS_COLOURS["apples"], 4242)
    out = json.loads(cli("predict", "models/logreg", new, "--json").stdout)
    assert out["predictions"][0]["path"] == str(new) and len(out["predictions"][0]["top"]) == 3
    info = json.loads(cli("info", "--json").stdout)
    assert info["fingerprint"]["backbone_arg"] == f"hub:{hub_model}"


def test_hub_signature_only_model_and_runtimes(tmp_path):
    path = save_feature_vector(tmp_path / "sig_only", seed=3, dim=7, size=None, signature_only=True)
    spec = backbones.get_spec(f"hub:{path}", 48)
    assert (spec.output_dim, spec.image_size, spec.fine_tunable) == (7, 48, False)
    fp = backbones.fingerprint(spec)
    pixels = np.random.default_rng(1).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    reference = backbones.make_embedder(spec, fp, runtime="keras")
    fast = backbones.make_embedder(spec, fp, runtime="auto")
    assert reference.runtime == "tensorflow" and fast.runtime == "litert"
    assert backbones.min_cosine(fast(pixels), reference(pixels)) >= 0.9999
    assert backbones.spec_from_fingerprint(fp) == spec
    with pytest.raises(backbones.NotFineTunable, match="efficientnet_b0"):
        backbones.build_keras_backbone(spec)
    with pytest.raises(UsageError, match="--weights does not apply"):
        backbones.get_spec(f"hub:{path}", weights=str(path / "saved_model.pb"))


def test_changed_hub_model_is_refused(tmp_path):
    path = save_feature_vector(tmp_path / "model", seed=5, dim=4)
    fp = backbones.fingerprint(backbones.get_spec(f"hub:{path}"))
    shutil.rmtree(path)
    save_feature_vector(path, seed=6, dim=4)
    with pytest.raises(FingerprintMismatch, match="changed since this artifact was made"):
        backbones.spec_from_fingerprint(fp)
    shutil.rmtree(path)
    with pytest.raises(WeightsError, match="does not exist"):
        backbones.spec_from_fingerprint(fp)


def test_caches_of_several_backbones_side_by_side(cli, hub_model, tmp_path):
    data = make_dataset(tmp_path / "data", per_class=3)
    second = save_feature_vector(tmp_path / "second_model", seed=9, dim=5)
    cli("embed", data, "--backbone", f"hub:{hub_model}", tiny=False)
    cli("embed", data, "--backbone", f"hub:{second}", tiny=False)
    err = cli("fit", expect=2).stderr
    assert "several caches" in err and err.count("embeddings-hub-") == 2 and "--cache" in err
    cli("embed", data, "--runtime", "keras")  # the default backbone (tiny weights): cache/embeddings.h5, used from now on
    caches = sorted(p.name for p in (tmp_path / "cache").glob("embeddings*.h5"))
    assert len(caches) == 3 and "embeddings.h5" in caches
    fitted = json.loads(cli("fit", "--json", "--val-split", "0").stdout)
    manifest = json.loads((tmp_path / fitted["model_dir"] / "manifest.json").read_text())
    assert manifest["cache"]["path"] == str(Path("cache/embeddings.h5"))
    assert manifest["fingerprint"]["output_dim"] == 1280


def test_hub_fixed_size_and_litert_fallback(hub_model, monkeypatch):
    with pytest.raises(UsageError, match=f"takes {HUB_SIZE}x{HUB_SIZE} images only"):
        backbones.get_spec(f"hub:{hub_model}", 96)
    spec = backbones.get_spec(f"hub:{hub_model}", HUB_SIZE)
    fp = backbones.fingerprint(spec)

    def no_conversion(spec):
        raise RuntimeError("op not supported by the converter")

    class Notes:
        warnings: list = []

        def info(self, message):
            pass

        def warn(self, message):
            self.warnings.append(message)

    notes = Notes()
    monkeypatch.setattr(backbones.runtimes, "_reference_and_flatbuffer", no_conversion)
    monkeypatch.setenv("EMBEDFLOW_HOME", str(Path(backbones.embedflow_home()) / "fallback"))
    with pytest.raises(WeightsError, match="use --runtime keras"):
        backbones.make_embedder(spec, fp, runtime="litert")
    embedder = backbones.make_embedder(spec, fp, runtime="auto", reporter=notes)
    assert embedder.runtime == "tensorflow" and "running it on TensorFlow" in notes.warnings[0]
    pixels = np.zeros((2, HUB_SIZE, HUB_SIZE, 3), np.uint8)
    assert embedder(pixels).shape == (2, 12)
    # remembered: the next run goes straight to TensorFlow without trying (or warning) again
    assert backbones.make_embedder(spec, fp, runtime="auto", reporter=notes).runtime == "tensorflow"
    assert len(notes.warnings) == 1
