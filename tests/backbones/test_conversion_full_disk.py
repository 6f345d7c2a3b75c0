"""A full disk during the one-time TFLite conversion is one line and the documented exit code, not the
converter's traceback: TensorFlow's converter swallows the "No space left on device" of its SavedModel
writer and falls back to a path that fails with an unrelated TypeError under Keras 3 (a fresh tester's
110-line traceback with EMBEDFLOW_HOME on a 12 MB tmpfs)."""

from __future__ import annotations

import errno
import shutil
import subprocess
from collections import namedtuple

import pytest

from embedflow import backbones

from ..conftest import make_dataset

Usage = namedtuple("Usage", "total used free")


class _Model:
    def count_params(self):
        return 1_000_000  # needs 3 x 4 MB + 16 MB = 28 MB free


def _free(monkeypatch, free: int):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(1 << 40, 0, free))


def test_a_conversion_on_a_full_disk_is_enospc_before_converting(monkeypatch):
    _free(monkeypatch, 10 << 20)
    called = []
    with pytest.raises(OSError) as e:
        backbones.space_guarded(lambda: called.append(1), _Model())
    assert e.value.errno == errno.ENOSPC and "needs about 27 MB" in str(e.value) and not called


def test_a_converter_failure_is_enospc_only_when_the_disk_is_full(monkeypatch):
    def fails():
        raise TypeError("'NoneType' object is not callable")  # what the converter's fallback raises

    free = [64 << 20]
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(1 << 40, 0, free[0]))

    def fills_then_fails():
        free[0] = 1 << 20  # the SavedModel filled the disk
        fails()

    with pytest.raises(OSError) as e:
        backbones.space_guarded(fills_then_fails, _Model())
    assert e.value.errno == errno.ENOSPC and isinstance(e.value.__cause__, TypeError)
    free[0] = 64 << 20
    with pytest.raises(TypeError):  # a real converter bug is not dressed up as a full disk
        backbones.space_guarded(fails, _Model())
    assert backbones.space_guarded(lambda: b"flatbuffer", _Model()) == b"flatbuffer"


def test_embed_with_embedflow_home_on_a_full_disk_is_one_line_exit_4(cli, tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "data", per_class=3)
    home = tmp_path / "home"
    home.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(home)],
                             capture_output=True).returncode == 0
    try:
        if not mounted:  # no tmpfs here: the same free space, reported by the file system call
            _free(monkeypatch, 12 << 20)
        monkeypatch.setenv("EMBEDFLOW_HOME", str(home))
        r = cli("embed", data, "--runtime", "litert", expect=4)
        lines = r.stderr.strip().splitlines()  # the conversion's progress line, then the one error line
        assert [line for line in lines if line.startswith("error:")] == lines[-1:], r.stderr
        assert "No space left on device" in lines[-1] and "EMBEDFLOW_HOME" in lines[-1] and len(lines) <= 2, r.stderr
        assert "Traceback" not in r.stdout + r.stderr
        assert not list((home / "backbones").glob("*.tflite")) and not list((home / "backbones").glob(".embedflow-scratch-*"))
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(home)], capture_output=True)
