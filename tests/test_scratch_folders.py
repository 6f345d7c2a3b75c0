"""Scratch files (ours, Keras' and the TFLite converter's temporary folders) live in one folder of ours
beside what is written (a model folder's parent, EMBEDFLOW_HOME/backbones for a conversion), named with
the writer's pid: removed when the run ends however it ends, and by the next run when a kill left one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from embedflow import fsio

from .conftest import SIZE, make_dataset


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def stale_scratch(parent: Path, pid: int) -> Path:
    """A scratch folder as a run of `pid` on this machine names it, holding a file."""
    folder = parent / f"{fsio.SCRATCH_PREFIX}{pid}-{fsio.host_tag()}-x1y2z3"
    folder.mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"0" * 1000)
    return folder


def test_scratch_folder_points_temporary_files_into_it_and_removes_it(tmp_path):
    before = tempfile.gettempdir(), os.environ.get("TMPDIR")
    with pytest.raises(RuntimeError):
        with fsio.scratch_folder(tmp_path) as scratch:
            assert scratch.parent == tmp_path and scratch.name.startswith(f"{fsio.SCRATCH_PREFIX}{os.getpid()}-")
            assert tempfile.gettempdir() == str(scratch) and os.environ["TMPDIR"] == str(scratch)
            made = Path(tempfile.mkdtemp())  # what Keras and the TFLite converter do
            assert made.parent == scratch
            raise RuntimeError("a failed conversion")
    assert not scratch.exists() and (tempfile.gettempdir(), os.environ.get("TMPDIR")) == before
    assert list(tmp_path.iterdir()) == []


def test_stale_scratch_of_a_dead_process_is_removed_a_live_ones_is_kept(tmp_path):
    dead = stale_scratch(tmp_path, dead_pid())
    alive = stale_scratch(tmp_path, os.getppid())  # pytest's parent: alive
    elsewhere = tmp_path / f"{fsio.SCRATCH_PREFIX}{dead_pid()}-0000other-abc"  # another machine's (shared folder)
    elsewhere.mkdir()
    with fsio.scratch_folder(tmp_path):
        assert not dead.exists() and alive.exists() and elsewhere.exists()
    assert alive.exists() and elsewhere.exists()


def _env(tmp: Path, home: Path) -> dict:
    tmp.mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(tmp), "EMBEDFLOW_HOME": str(home), "PYTHONUNBUFFERED": "1"}


def test_a_killed_int8_conversion_leaves_nothing_in_tmp_and_the_next_run_removes_its_scratch(tmp_path, weights_file):
    """SIGKILL while the TFLite converter holds its SavedModel: nothing is left in the temporary folder
    (TMPDIR, /tmp by default); the scratch folder in EMBEDFLOW_HOME/backbones is removed by the next run."""
    data = make_dataset(tmp_path / "data", per_class=2)
    tmp, home = tmp_path / "tmp", tmp_path / "home"
    cmd = [sys.executable, "-m", "embedflow.cli", "embed", str(data), "--cache", str(tmp_path / "c8.h5"),
           "--precision", "int8", "--weights", str(weights_file), "--image-size", str(SIZE), "--quiet"]
    proc = subprocess.Popen(cmd, env=_env(tmp, home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    backbones = home / "backbones"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            held = [p for p in list(tmp.iterdir()) + list(backbones.glob(f"{fsio.SCRATCH_PREFIX}*/*"))]
            if any(p.is_dir() for p in held):  # the converter's SavedModel folder exists
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the conversion ended before a temporary folder was seen"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert list(tmp.iterdir()) == [], list(tmp.iterdir())
    left = list(backbones.glob(f"{fsio.SCRATCH_PREFIX}*"))
    assert len(left) == 1 and left[0].name.startswith(f"{fsio.SCRATCH_PREFIX}{proc.pid}-")
    done = subprocess.run(cmd, env=_env(tmp, home), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert list(tmp.iterdir()) == [] and not list(backbones.glob(f"{fsio.SCRATCH_PREFIX}*"))
    assert len(list(backbones.glob("*-int8-*.tflite"))) == 1


def test_finetune_makes_every_temporary_folder_in_its_scratch_beside_the_model(tmp_path, weights_file, monkeypatch):
    """Every temporary folder made while finetune runs (its decoded pixels, Keras' saves, TensorFlow's
    SavedModel) is inside the one scratch folder beside --out, and nothing is left anywhere afterwards."""
    from embedflow import api

    made = []
    real_mkdtemp = tempfile.mkdtemp

    def mkdtemp(*args, **kwargs):
        made.append(Path(real_mkdtemp(*args, **kwargs)))
        return str(made[-1])

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    data = make_dataset(tmp_path / "data", per_class=4)
    out = tmp_path / "models" / "ft"
    api.finetune(data, out, image_size=SIZE, weights=str(weights_file), reporter=None,
                 params={"epochs": 1, "fine_tune_epochs": 1, "refit": False})
    scratch = [p for p in made if p.parent == out.parent and p.name.startswith(fsio.SCRATCH_PREFIX)]
    assert len(scratch) == 1, made
    assert all(p == scratch[0] or scratch[0] in p.parents for p in made), made
    assert len(made) > 2  # the pixel file's folder and Keras' or TensorFlow's own
    assert not any(p.exists() for p in made)
    assert {p.name for p in out.parent.iterdir()} - {".ft.lock"} == {"ft"}
