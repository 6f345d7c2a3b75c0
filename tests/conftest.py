"""Shared fixtures: tiny random-weight backbone file, synthetic image folders, a CLI runner."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FLOWERS = Path(os.environ.get("EMBEDFLOW_DATA", SHARED / "data" / "flowers-dev"))
SIZE = 96  # the smallest input size: fast tests
IMAGENET_WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CLASS_COLOURS = {"apples": (200, 40, 40), "limes": (60, 190, 60), "plums": (90, 50, 160), "lemons": (230, 220, 50)}


# Under CI=true every test runs: a skip is a failure unless its reason matches one of these (faiss, Ray,
# the ImageNet weights and flowers-dev are all part of CI's set-up, see .ci/run). The one allowed skip:
# scikit-learn's array-API estimator check runs only when SCIPY_ARRAY_API=1 was set before scipy was first
# imported, a process-wide switch that would change scipy for the whole suite; embedflow's heads take
# numpy arrays only.
CI_ALLOWED_SKIPS: tuple[str, ...] = (r"SCIPY_ARRAY_API is not set: not checking array_api input",)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI, turn an unexpected skip into a failure that names the reason."""
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and in_ci()) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not any(re.search(allowed, reason) for allowed in CI_ALLOWED_SKIPS):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which must run every test: {reason}"


# `make test` runs the suite on 2 pytest-xdist workers with `--dist loadfile`: each test file runs on one
# worker, so its module fixtures are built once. (`--dist loadgroup` with xdist_group marks did not work:
# pytest-xdist 3.8 applies a group by rewriting item._nodeid, which pytest 9 ignores.) The files that start
# a local Ray cluster may run beside each other on the two workers; each cluster is started and stopped by
# its own test.


# The longest files start first, so that the two workers finish together (times of a CI run on 2 cores).
LONG_FILES = ("tests/models/test_output_safety.py", "tests/test_deploy.py",
              "tests/finetune/test_finetune_export_explain.py", "tests/finetune/test_finetune_options.py",
              "tests/finetune/test_export_options.py", "tests/embedding/test_ray_cli.py",
              "tests/test_scratch_folders.py", "tests/test_export_quantized_parity.py",
              "tests/backbones/test_int8_precision.py", "tests/api/test_notebook.py",
              "tests/embedding/test_s3_inputs.py", "tests/embedding/test_embedding_ray_engine.py",
              "tests/cli/test_cli_layouts.py", "tests/cli/test_cli_flowers_heads_realdata.py")


def pytest_collection_modifyitems(config, items):
    """Put the LONG_FILES first (a stable sort): with --dist loadfile the workers take files in this order."""
    order = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: order.get(item.path.relative_to(ROOT).as_posix(), len(order)))


@pytest.fixture(scope="session", autouse=True)
def embedflow_home(tmp_path_factory):
    """Converted backbones go to a per-session folder, never to the user's ~/.cache; so does the key that
    signs the model folders the tests write (never the user's ~/.config/embedflow/signing.key)."""
    home = tmp_path_factory.mktemp("embedflow-home")
    values = {"EMBEDFLOW_HOME": str(home), "EMBEDFLOW_SIGNING_KEY": str(home / "signing.key")}
    old = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    yield home
    for name, value in old.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory) -> Path:
    """A MobileNetV2 weights file with seeded random weights (no download; same structure as ImageNet's)."""
    import keras

    keras.utils.set_random_seed(1234)
    base = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), include_top=False, weights=None, pooling="avg")
    # Random weights give vanishing activations; calibrate batch-norm statistics on one batch of coloured
    # noise (momentum 0: the moving statistics become that batch's), so vectors are well scaled.
    rng = np.random.default_rng(0)
    colours = rng.uniform(-1, 1, (32, 1, 1, 3))
    batch = np.clip(colours + rng.normal(0, 0.3, (32, SIZE, SIZE, 3)), -1, 1).astype("float32")
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    base(batch, training=True)
    path = tmp_path_factory.mktemp("weights") / "random.weights.h5"
    base.save_weights(path)
    return path


def imagenet_keras_home() -> Path | None:
    """A KERAS_HOME holding the real MobileNetV2 ImageNet weights, or None (the realdata tests then skip)."""
    for home in (os.environ.get("KERAS_HOME"), SHARED / "keras", Path.home() / ".keras"):
        if home and (Path(home) / "models" / IMAGENET_WEIGHTS).is_file():
            return Path(home)
    return None


def make_image(path: Path, colour, seed: int, size=(64, 48), mode="RGB", fmt=None) -> Path:
    """A noisy, class-coloured picture with a seed-dependent bar, so images differ but classes separate."""
    rng = np.random.default_rng(seed)
    w, h = size
    arr = np.clip(np.array(colour)[None, None, :] + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    x = int(rng.integers(0, w - 8))
    arr[:, x:x + 6] = 255 - arr[:, x:x + 6]
    img = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path


def make_dataset(root: Path, per_class=6, classes=("apples", "limes", "plums"), seed=0) -> Path:
    for ci, c in enumerate(classes):
        for i in range(per_class):
            ext = [".jpg", ".png", ".JPEG"][i % 3]
            make_image(root / c / f"{c}_{i:03d}{ext}", CLASS_COLOURS[c], seed * 1000 + ci * 100 + i)
    return root


@pytest.fixture
def dataset(tmp_path) -> Path:
    return make_dataset(tmp_path / "data")


def default_sigint() -> None:
    """preexec_fn for a child the test will send SIGINT: a shell without job control starts background jobs
    (a CI runner's `bash .ci/run &`) with SIGINT ignored, which children inherit, and Python then installs
    no KeyboardInterrupt handler; restore the default so the child sees Ctrl-C as a user's process does."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_litert(model: bytes, inputs: np.ndarray) -> np.ndarray:
    """A TFLite model's outputs (float32 rows) on inputs, one row at a time through the LiteRT interpreter,
    each input cast to the model's input tensor dtype (uint8 pixels for embedflow's exports, float32
    vectors for a bare head)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    rows = []
    for x in inputs:
        interpreter.set_tensor(inp["index"], x[None].astype(inp["dtype"]))
        interpreter.invoke()
        rows.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.asarray(rows)


def invoke(*args, expect=0):
    """Run `embedflow ARGS` in-process (typer's CliRunner) and check its exit code (None: any)."""
    from typer.testing import CliRunner

    from embedflow.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    if expect is not None:
        assert result.exit_code == expect, f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


@pytest.fixture
def cli(weights_file, tmp_path, monkeypatch):
    """Run `embedflow ...` in-process in a temporary working folder; embed/evaluate get the tiny backbone."""
    from typer.testing import CliRunner

    from embedflow.cli import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def run(*args, expect=0, tiny=True):
        args = [str(a) for a in args]
        if tiny and args and args[0] == "embed":
            args += ["--weights", str(weights_file), "--image-size", str(SIZE)]
        result = runner.invoke(app, args, catch_exceptions=False)
        if expect is not None:
            assert result.exit_code == expect, f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        return result

    return run


@pytest.fixture
def tiny_spec(weights_file):
    from embedflow import backbones

    return backbones.get_spec("mobilenet_v2", SIZE, str(weights_file))


def interrupting_factory(at_call: int):
    """An embedder factory whose embedder raises KeyboardInterrupt (Ctrl-C) at its `at_call`-th batch."""
    from embedflow import backbones

    calls = {"n": 0}

    def factory(spec, fp, **kw):
        real = backbones.make_embedder(spec, fp, **kw)

        def embed(pixels):
            calls["n"] += 1
            if calls["n"] == at_call:
                raise KeyboardInterrupt
            return real(pixels)

        return embed

    return factory


def seeded(seed=0):
    random.seed(seed)
    np.random.seed(seed)


def embed_and_fit(root: Path, weights_file: Path) -> Path:
    """root/data (3 classes x 6 images), its cache root/cache/embeddings.h5 and a logreg head in
    root/models/logreg, made through the API with the tiny backbone; returns root."""
    from embedflow import api

    make_dataset(root / "data", per_class=6)
    api.embed_folder(root / "data", root / "cache" / "embeddings.h5", image_size=SIZE, weights=str(weights_file))
    api.fit_head(root / "cache" / "embeddings.h5", "logreg").save(root / "models" / "logreg")
    return root


# The fake credentials of the local S3 server: the secret is distinctive so that tests can prove it never
# reaches an output, a log, a cache or a manifest.
S3_SECRET = "embedflow-test-SECRET-7f3a9c1e5b"


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 API (moto's standalone server) on 127.0.0.1 and a free port, started and stopped here;
    s3fs (and botocore) reach it through AWS_ENDPOINT_URL and fake credentials in the environment, so
    child processes (the CLI, Ray workers) find it too. Yields the endpoint URL."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1"
    endpoint = f"http://127.0.0.1:{port}"
    values = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": S3_SECRET,
              "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
              "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    old = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield endpoint
    finally:
        server.stop()
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
