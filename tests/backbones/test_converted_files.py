"""The converted backbones kept under EMBEDFLOW_HOME/backbones: each .tflite has a sha256 sidecar written
at conversion and checked once per process when it is loaded; a damaged file is converted again with a
warning, a file converted before sidecars existed is converted again once; a read-only EMBEDFLOW_HOME is
one line saying what to do."""

from __future__ import annotations

import hashlib
import importlib
import os

import pytest

from embedflow import backbones
from embedflow.progress import ListReporter

from ..conftest import SIZE

runtimes = importlib.import_module("embedflow.backbones.runtimes")


@pytest.fixture(scope="module")
def converted(tmp_path_factory, weights_file):
    """The tiny backbone converted once for this module: (spec, fingerprint, flatbuffer bytes)."""
    from embedflow.backbones.weights import embedflow_home

    spec = backbones.get_spec("mobilenet_v2", SIZE, str(weights_file))
    fp = backbones.fingerprint(spec)
    path = backbones.tflite_backbone_path(spec, fp)
    assert path.parent.parent == embedflow_home()
    return spec, fp, path.read_bytes()


@pytest.fixture
def home(tmp_path, monkeypatch, converted):
    """A fresh EMBEDFLOW_HOME, a process that has verified nothing yet, and a conversion that returns the
    module's flatbuffer at once (the TFLite converter takes seconds; what is checked here is what is done
    with its bytes)."""
    folder = tmp_path / "home"
    monkeypatch.setenv("EMBEDFLOW_HOME", str(folder))
    monkeypatch.setattr(runtimes, "_VERIFIED", {})
    flatbuffer = converted[2]
    reference = runtimes.make_interpreter(model_content=flatbuffer)
    monkeypatch.setattr(runtimes, "_reference_and_flatbuffer",
                        lambda spec: (lambda pixels: runtimes.run_tflite(reference, pixels), flatbuffer))
    return folder


@pytest.fixture
def tiny_spec(converted):
    return converted[0]


def _sidecar(path):
    return path.with_name(path.name + ".sha256")


def _new_process(monkeypatch):
    monkeypatch.setattr(runtimes, "_VERIFIED", {})


def test_a_conversion_writes_a_sha256_sidecar_checked_once_per_process(home, tiny_spec, monkeypatch):
    fp = backbones.fingerprint(tiny_spec)
    path = backbones.tflite_backbone_path(tiny_spec, fp)
    assert _sidecar(path).read_text().split()[0] == hashlib.sha256(path.read_bytes()).hexdigest()
    hashed = []
    real = runtimes._sha256
    monkeypatch.setattr(runtimes, "_sha256", lambda p: hashed.append(p) or real(p))
    for _ in range(3):
        assert backbones.tflite_backbone_path(tiny_spec, fp) == path
    assert hashed == []  # verified when written: this process never reads it again
    _new_process(monkeypatch)
    for _ in range(3):
        assert backbones.tflite_backbone_path(tiny_spec, fp) == path
    assert hashed == [path]  # a new process: once


def test_a_damaged_converted_file_is_converted_again_with_a_warning(home, tiny_spec, monkeypatch):
    fp = backbones.fingerprint(tiny_spec)
    path = backbones.tflite_backbone_path(tiny_spec, fp)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    _new_process(monkeypatch)
    rep = ListReporter()
    assert backbones.tflite_backbone_path(tiny_spec, fp, rep) == path
    assert len(rep.warnings) == 1 and str(path) in rep.warnings[0] and "damaged" in rep.warnings[0], rep.warnings
    assert _sidecar(path).read_text().split()[0] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.read_bytes() != bytes(data) and not list(path.parent.glob(".*.tmp"))


def test_a_file_converted_before_sidecars_is_converted_again_once(home, tiny_spec, monkeypatch):
    fp = backbones.fingerprint(tiny_spec)
    path = backbones.tflite_backbone_path(tiny_spec, fp)
    _sidecar(path).unlink()  # as every file converted before this release
    _new_process(monkeypatch)
    rep = ListReporter()
    backbones.tflite_backbone_path(tiny_spec, fp, rep)
    assert _sidecar(path).is_file() and rep.warnings == [] and any("again" in m for m in rep.infos), rep.infos
    stamp = path.stat().st_mtime_ns
    _new_process(monkeypatch)
    rep = ListReporter()
    backbones.tflite_backbone_path(tiny_spec, fp, rep)
    assert path.stat().st_mtime_ns == stamp and rep.infos == [] and rep.warnings == []


def test_a_read_only_embedflow_home_through_the_cli(cli, dataset, home, monkeypatch):
    """Read-only, as a read-only mount or a folder of another user is to anyone: every write there fails
    with EROFS (injected: mounting needs privileges the tests may not have)."""
    import errno

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(home))

    monkeypatch.setattr(runtimes.tempfile, "mkstemp", read_only)
    r = cli("embed", dataset, "--runtime", "litert", "--quiet", expect=4)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "Read-only file system" in lines[0] and "set EMBEDFLOW_HOME to a writable folder" in lines[0], lines


def test_an_embedflow_home_that_is_a_file_is_refused_before_converting(cli, dataset, tmp_path, monkeypatch):
    """Not a folder (a real ENOTDIR): one line that says what EMBEDFLOW_HOME must be, not "free space",
    and before the conversion (which would be lost)."""
    not_a_folder = tmp_path / "home-file"
    not_a_folder.write_text("x")
    monkeypatch.setenv("EMBEDFLOW_HOME", str(not_a_folder))
    monkeypatch.setattr(runtimes, "_reference_and_flatbuffer", lambda spec: pytest.fail("converted first"))
    r = cli("embed", dataset, "--runtime", "litert", "--quiet", expect=4)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "Not a directory" in lines[0] and "must be a writable folder" in lines[0], lines
    assert "free space" not in lines[0]


def test_two_first_runs_at_once_convert_once_and_leave_no_lock(home, tiny_spec, monkeypatch):
    """Two conversions of the same backbone at once (threads: each holds its own flock) run the converter
    once; the second waits, says so, and takes the kept file. The lock file beside it is removed."""
    import threading
    import time

    fp = backbones.fingerprint(tiny_spec)
    plain, calls = runtimes._reference_and_flatbuffer, []

    def slow(spec):
        calls.append(threading.get_ident())
        time.sleep(1.5)
        return plain(spec)

    monkeypatch.setattr(runtimes, "_reference_and_flatbuffer", slow)
    results, reporters = [None, None], [ListReporter(), ListReporter()]

    def run(i):
        results[i] = backbones.tflite_backbone_path(tiny_spec, fp, reporter=reporters[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    threads[0].start()
    time.sleep(0.3)
    threads[1].start()
    for t in threads:
        t.join(60)
    assert len(calls) == 1
    assert results[0] == results[1] and results[0].is_file()
    assert any("waiting for another run converting" in m for m in reporters[1].infos), reporters[1].infos
    assert sorted(p.name for p in results[0].parent.iterdir()) == [results[0].name, _sidecar(results[0]).name]


def test_a_lock_file_left_by_a_killed_conversion_does_not_stop_the_next(home, tiny_spec):
    """SIGKILL leaves the lock file (the flock itself dies with the process): the next run converts and removes it."""
    fp = backbones.fingerprint(tiny_spec)
    target = runtimes.converted_path(tiny_spec, fp)
    target.parent.mkdir(parents=True)
    lock = target.with_name(f".{target.name}.lock")
    lock.write_text("12345\n")
    path = backbones.tflite_backbone_path(tiny_spec, fp)
    assert path.is_file() and not lock.exists()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_converted_files_get_the_bits_the_umask_gives(home, tiny_spec, umask, mode):
    """A shared EMBEDFLOW_HOME: the converted backbone and its sidecar are written through mkstemp (0o600
    whatever the umask) and renamed into place; they end with the bits a plain open() gives under the
    user's umask, like every other file embedflow writes (the sidecar is written by open() itself)."""
    old = os.umask(umask)
    try:
        path = backbones.tflite_backbone_path(tiny_spec, backbones.fingerprint(tiny_spec))
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == oct(mode)
    assert oct(_sidecar(path).stat().st_mode & 0o777) == oct(mode)


def test_new_file_mode_reads_the_umask_without_changing_it():
    from embedflow.fsio import new_file_mode

    old = os.umask(0o027)
    try:
        assert new_file_mode() == 0o640
        assert os.umask(0o027) == 0o027  # unchanged by the read
    finally:
        os.umask(old)
