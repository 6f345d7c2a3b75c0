"""`embedflow finetune` options through the CLI (tiny 96 px backbone, 18 synthetic images), each checked
by its effect on the saved model: --unfreeze-top / --unfreeze-from (which base layers moved), the two
learning rates (a tiny one leaves what it drives in place), --average-from 0, --no-flip-tta; and Ctrl-C as a real SIGINT
to a child process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from ..conftest import default_sigint, SIZE, invoke, make_dataset

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # fine-tuning MobileNetV2, even at 96 px
BASE = ["--image-size", str(SIZE), "--epochs", "2", "--fine-tune-epochs", "1", "--dropout", "0", "--no-augment",
        "--no-refit", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, weights_file):
    """Two fine-tunes, made once: A trains only the top 12 base layers at stage-2 rate 0.01 with stage 1
    at rate 1e-9 (rates must be > 0), no weight averaging, no flip TTA; B unfreezes from block_16_expand at
    stage-2 rate 1e-9 with
    stage 1 at 0.001 (defaults otherwise). Returns their folders and the stderr of B."""
    work = tmp_path_factory.mktemp("finetune-options")
    data = make_dataset(work / "data", per_class=6)
    run = invoke

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        run("finetune", data, "--out", "a", "--weights", weights_file, *BASE, "--unfreeze-top", "12",
            "--learning-rate", "1e-9", "--fine-tune-learning-rate", "0.01", "--average-from", "0", "--patience", "0",
            "--no-flip-tta")
        b = run("finetune", data, "--out", "b", "--weights", weights_file, *[a for a in BASE if a != "--quiet"],
                "--unfreeze-from", "block_16_expand", "--learning-rate", "0.001", "--fine-tune-learning-rate", "1e-9")
    return SimpleNamespace(work=work, data=data, a=work / "a", b=work / "b", b_stderr=b.stderr)


def read(folder, name):
    return json.loads((folder / name).read_text())


def base_weights(model) -> dict:
    """{layer name: its weights} of the MobileNetV2 base inside an embedflow image model."""
    from embedflow.models.keras_parts import split_parts

    return {layer.name: [np.asarray(w) for w in layer.get_weights()] for layer in split_parts(model)[1].layers}


@pytest.fixture(scope="module")
def start(tiny_spec_module):
    """The base's weights before fine-tuning (the weights file both runs started from)."""
    from embedflow import backbones
    from embedflow.models.keras_parts import split_parts

    base = split_parts(backbones.build_keras_backbone(tiny_spec_module))[1]
    return {layer.name: [np.asarray(w) for w in layer.get_weights()] for layer in base.layers}, \
        [layer.name for layer in base.layers], base


@pytest.fixture(scope="module")
def tiny_spec_module(weights_file):
    from embedflow import backbones

    return backbones.get_spec("mobilenet_v2", SIZE, str(weights_file))


def load(folder):
    import keras

    return keras.models.load_model(folder / "model.keras", compile=False)


def moved(before: dict, after: dict, tol: float = 0.0) -> set:
    """Names of the layers whose weights changed by more than tol."""
    assert {name for name, ws in before.items() if ws} <= set(after)  # the same layers (inputs are renamed)
    return {name for name, ws in before.items() if ws and any(np.abs(a - b).max() > tol for a, b in zip(ws, after[name]))}


def test_unfreeze_top_trains_only_the_top_layers_of_the_base(runs, start):
    import keras

    before, names, base = start
    after = base_weights(load(runs.a))
    changed = moved(before, after)
    top = set(names[-12:])
    trainable_top = {layer.name for layer in base.layers[-12:]
                     if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)}
    assert changed and changed <= top  # nothing below the top 12 moved (BatchNormalization stays frozen)
    assert moved(before, after, tol=1e-5) == trainable_top  # and every trainable layer among them did
    assert read(runs.a, "manifest.json")["hyperparameters"]["unfreeze_top"] == 12


def test_a_tiny_fine_tune_learning_rate_leaves_the_base_as_it_started(runs, start):
    """Stage 2 at 1e-9 (B) moves no base weight by more than 1e-6, where 0.01 (A) moved the top layers."""
    before, names, base = start
    assert moved(before, base_weights(load(runs.b)), tol=1e-6) == set()
    assert moved(before, base_weights(load(runs.a)), tol=1e-5)
    hp = read(runs.b, "manifest.json")["hyperparameters"]
    assert hp["fine_tune_learning_rate"] == 1e-9 and hp["learning_rate"] == 0.001


def test_unfreeze_from_names_the_first_trained_layer(runs, start):
    import keras

    _, names, base = start
    cut = names.index("block_16_expand")
    n = sum(1 for layer in base.layers[cut:] if layer.weights and not isinstance(layer, keras.layers.BatchNormalization))
    assert f"stage 2: the base's top layers unfrozen (from block_16_expand on; {n} of them with weights" in runs.b_stderr
    assert read(runs.b, "manifest.json")["hyperparameters"]["unfreeze_from"] == "block_16_expand"


def test_stage_one_learning_rate_drives_the_head(runs):
    """Stage 1 trains the head on fixed features (no dropout here): at rate 1e-9 its loss does not move."""
    still = read(runs.a, "history.json")["history"]["stage1"]["loss"]
    learning = read(runs.b, "history.json")["history"]["stage1"]["loss"]
    assert len(still) == len(learning) == 2
    assert still[1] == pytest.approx(still[0], rel=1e-6)
    assert learning[1] != pytest.approx(learning[0], rel=1e-4)


def test_average_from_zero_keeps_the_best_epoch_instead_of_a_mean(runs):
    assert read(runs.a, "manifest.json")["stage2_weights"] == "the epoch with the best validation loss"
    assert read(runs.b, "manifest.json")["stage2_weights"] == "mean of the weights after stage 2 epochs 1-1"


def test_no_flip_tta_saves_the_plain_network(runs):
    from embedflow.models.keras_parts import predict_pixels, unwrap_tta

    plain, tta = load(runs.a), load(runs.b)
    assert not unwrap_tta(plain)[1] and unwrap_tta(tta)[1]
    assert read(runs.a, "manifest.json")["test_time_augmentation"] is None
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    pixels[:, :, : SIZE // 3] = 255  # asymmetric: a plain network sees the mirror image differently
    mirrored = np.ascontiguousarray(pixels[:, :, ::-1])
    # the plain network is saved as it is: the same layers as the network inside the flip-TTA model
    kinds = lambda model: [type(layer).__name__ for layer in model.layers]  # noqa: E731
    assert kinds(plain) == kinds(unwrap_tta(tta)[0])
    np.testing.assert_allclose(predict_pixels(tta, pixels), predict_pixels(tta, mirrored), atol=1e-5)


def _finetune_child(work, data, weights_file, out, *extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "embedflow.cli", "finetune", str(data), "--out", str(out), "--weights",
           str(weights_file), "--image-size", str(SIZE), "--no-refit", *extra]
    return subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)


def _interrupt_after(proc, marker: str, timeout: float = 900) -> tuple[str, str]:
    """Read the child's stderr until a line holds `marker`, send SIGINT, and return (stdout, stderr)."""
    seen = []
    deadline = time.monotonic() + timeout
    for line in proc.stderr:
        seen.append(line)
        if marker in line:
            proc.send_signal(signal.SIGINT)
            break
        assert time.monotonic() < deadline, "".join(seen)
    out, err = proc.communicate(timeout=timeout)
    return out, "".join(seen) + err


def test_ctrl_c_in_stage_two_writes_the_model_so_far_and_says_so(runs, weights_file, tmp_path):
    out = tmp_path / "ft"
    proc = _finetune_child(runs.work, runs.data, weights_file, out, "--epochs", "1", "--fine-tune-epochs", "500",
                           "--average-from", "1")
    stdout, stderr = _interrupt_after(proc, "stage 2 epoch 1/500")
    assert proc.returncode == 130, stderr
    manifest = read(out, "manifest.json")
    assert manifest["interrupted"] is True and 1 <= manifest["epochs_run"]["stage2"] < 500
    assert f"the best model so far was written to {out}" in stderr.strip().splitlines()[-1]
    from embedflow.models import load_model

    assert load_model(out).predict_proba([str(runs.data / "apples" / "apples_000.jpg")]).shape == (1, 3)


def test_ctrl_c_before_training_leaves_the_old_folder_and_says_what_happened(runs, weights_file, tmp_path):
    """Interrupted while the images are decoded or the model built: the old model folder stays as it was,
    byte for byte, and the message does not promise a resume that finetune does not do."""
    import shutil

    out = tmp_path / "ft"
    shutil.copytree(runs.a, out)
    old = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = _finetune_child(runs.work, runs.data, weights_file, out, "--epochs", "1", "--fine-tune-epochs", "1")
    stdout, stderr = _interrupt_after(proc, "fine-tuning on")
    assert proc.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    if "written to" in last:  # the signal landed once training had begun: a complete interrupted model
        assert read(out, "manifest.json")["interrupted"] is True
    else:
        assert last.startswith("interrupted") and "resume" not in last
        assert {p.name: p.read_bytes() for p in out.iterdir()} == old
    # no staging folder left beside it (the writer's lock file `.ft.lock` stays, as a cache's .lock does)
    assert not [p for p in tmp_path.iterdir() if p.name not in ("ft", ".ft.lock")]


def test_the_manifest_says_which_stage_2_weights_an_interrupted_run_saved():
    """A fresh tester's Ctrl-C during the first stage 2 epoch saved a manifest saying "mean of the weights
    after stage 2 epochs 1-1" while no stage 2 epoch had completed: the words follow what was saved."""
    from embedflow.finetune import DEFAULTS, stage2_weights

    averaged = {**DEFAULTS, "fine_tune_epochs": 10, "average_from": 4}
    best = {**DEFAULTS, "fine_tune_epochs": 10, "average_from": 0}
    assert stage2_weights(averaged, 10, False) == "mean of the weights after stage 2 epochs 4-10"
    assert stage2_weights(best, 10, False) == "the epoch with the best validation loss"
    assert stage2_weights(averaged, 0, True) == ("the weights at the end of stage 1 (interrupted before a stage 2 "
                                                 "epoch completed)")
    assert stage2_weights(averaged, 6, True) == "mean of the weights after stage 2 epochs 4-6 (interrupted)"
    assert stage2_weights(averaged, 2, True).startswith("the stage 2 epoch with the best validation loss of the 2")
    assert stage2_weights({**best, "fine_tune_epochs": 0}, 0, False).startswith("none: no stage 2")
