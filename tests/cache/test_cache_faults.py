"""Disk and filesystem faults: a full disk (a real, small tmpfs where we may mount one) and I/O errors
(injected) anywhere while the cache is written, the backbone conversion, the lock file, a read-only cache
folder, a filesystem without locks. Each is exit 0 with nothing written, or one line and exit 4 with
nothing left behind; never a traceback or a crash."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from embedflow import cache
from embedflow.embedding import embed_folder
from embedflow.errors import CacheError

from ..conftest import ROOT, make_image


@pytest.fixture
def mount_tmpfs(tmp_path):
    """mount_tmpfs(size) -> a fresh tmpfs of that size (real ENOSPC); skipped where mounting is not allowed."""
    mounted = []

    def mount(size: str = "2m") -> Path:
        folder = tmp_path / f"fs{len(mounted)}"
        folder.mkdir()
        if os.geteuid() != 0 or not shutil.which("mount"):
            pytest.skip("mounting a tmpfs needs root")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path) -> None:
    """Fill a filesystem to the last byte."""
    with open(folder / "filler", "wb", buffering=0) as f:
        for size in (65536, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC


def listing(folder: Path) -> dict:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.iterdir())}


def one_line(r, code: int, *needles: str) -> None:
    err = r.stderr.strip()
    assert r.exit_code == code, f"exit {r.exit_code}\n{r.stdout}\n{r.stderr}"
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def boom(*a, **k):
    raise AssertionError("the backbone was asked for: the work was done before the refusal")


# --- the HDF5 write itself -------------------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import errno, hashlib, json, os, sys
    import numpy as np
    from pathlib import Path
    from embedflow import cache
    from embedflow.cache import store

    folder, mode = Path(sys.argv[1]), sys.argv[2]
    path = folder / "c.h5"
    src = Path(sys.argv[3])
    n_max, dim = 3000, 1280
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n_max)]
    rng = np.random.default_rng(0)
    np.savez(src, hashes=np.array(hashes, dtype="S64"), vectors=rng.random((n_max, dim), dtype=np.float32))
    rows = lambda n: [cache.Row(f"a/k{i:05d}.png", hashes[i], 0, src, i) for i in range(n)]
    cache.write(path, rows(10), ["a"], {"id": "x"}, "/r", [], dim)  # the previous cache
    store._check_space = lambda *a: None  # let h5py itself meet the full disk (the estimate would refuse first)
    real_open, real_fsync = open, os.fsync

    class Failing:  # the OS failing after `budget` bytes, under the file object h5py writes through
        def __init__(self, f, budget):
            self.f, self.budget = f, budget
        def write(self, data):
            if self.budget < len(data):
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            self.budget -= len(data)
            return self.f.write(data)
        def __getattr__(self, name):
            return getattr(self.f, name)
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            self.f.close()

    outcomes = []
    cases = [(n, None) for n in range(300, 520, 8)] + [(3000, None)] if mode == "enospc" else \\
            [(400, b) for b in (0, 1, 100, 800, 2048, 4096, 9000, 50000, 200000, 1000000, 2000000)] + [(400, "fsync")]
    for n, budget in cases:
        if budget == "fsync":
            os.fsync = lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, os.strerror(errno.EIO)))
        elif budget is not None:
            store.open = lambda p, m="r", *a, budget=budget: Failing(real_open(p, m, *a), budget)
        before = path.read_bytes()
        try:
            cache.write(path, rows(n), ["a"], {"id": "x"}, "/r", [], dim)
            outcome = "written"
            cache.write(path, rows(10), ["a"], {"id": "x"}, "/r", [], dim)  # back to the small one
        except cache.CacheError as e:
            outcome = str(e)
        finally:
            store.open, os.fsync = real_open, real_fsync
        left = sorted(p.name for p in folder.iterdir() if p.name != "c.h5")
        intact = (outcome == "written" or path.read_bytes() == before) and len(cache.load(path)) == 10
        outcomes.append({"n": n, "budget": budget, "outcome": outcome, "left": left, "intact": intact})
    print(json.dumps(outcomes))
""")


def run_writer(folder: Path, mode: str, src: Path) -> list[dict]:
    out = subprocess.run([sys.executable, "-c", WRITER, str(folder), mode, str(src)], capture_output=True,
                         text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, f"exit {out.returncode} (a crash inside HDF5?)\n{out.stderr[-3000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_full_disk_while_hdf5_writes_is_one_error_never_a_crash(mount_tmpfs, tmp_path):
    """A 2 MB tmpfs filled by caches of growing size: the disk fills at every stage of the HDF5 write
    (data chunks, metadata, the final flush). Each failure is one CacheError line; the process goes on,
    the previous cache is intact and no temporary file is left."""
    outcomes = run_writer(mount_tmpfs("2m"), "enospc", tmp_path / "src.npz")
    failed = [o for o in outcomes if o["outcome"] != "written"]
    assert len(failed) >= 5 and any(o["outcome"] == "written" for o in outcomes), outcomes
    for o in outcomes:
        assert o["intact"] and o["left"] == [], o
    for o in failed:
        assert o["outcome"].endswith("No space left on device; its previous content is intact"), o
        assert "\n" not in o["outcome"]


def test_io_error_at_any_byte_of_the_write_is_one_error_never_a_crash(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    outcomes = run_writer(folder, "eio", tmp_path / "src.npz")
    for o in outcomes:
        assert o["outcome"].endswith("Input/output error; its previous content is intact"), o
        assert o["intact"] and o["left"] == [], o


def test_embed_on_a_disk_too_small_is_refused_before_the_work(mount_tmpfs, dataset, tiny_spec, cli):
    small = mount_tmpfs("64k")
    with pytest.raises(CacheError, match=r"No space left on device \(it needs about .* MB"):
        embed_folder(dataset, small / "c.h5", spec=tiny_spec, embedder_factory=boom)
    assert list(listing(small)) == ["c.h5.lock"]  # no journal, no temporary file
    one_line(cli("embed", dataset, "--cache", small / "c.h5", expect=None), 4, "No space left on device")
    assert list(listing(small)) == ["c.h5.lock"]


def test_full_disk_unchanged_rerun_writes_nothing_and_a_changing_one_is_one_line(mount_tmpfs, dataset, cli):
    fs = mount_tmpfs("2m")
    path = fs / "c.h5"
    cli("embed", dataset, "--cache", path)
    (fs / "c.h5.lock").unlink()  # the lock file must be made again, on the full disk
    fill(fs)
    before = listing(fs)
    r = cli("embed", dataset, "--cache", path, "--json")
    assert json.loads(r.stdout)["kept"] == 18
    after = listing(fs)
    assert after.pop("c.h5.lock")[1] == 0 and after == before  # only the lock file, without the pid
    make_image(dataset / "apples" / "new.jpg", (9, 9, 9), 77)
    one_line(cli("embed", dataset, "--cache", path, expect=None), 4, "No space left on device")
    assert sorted(listing(fs)) == ["c.h5", "c.h5.lock", "filler"] and len(cache.load(path)) == 18


# --- the lock file -----------------------------------------------------------------------------------------


def test_lock_file_errors_are_one_line_or_harmless(dataset, cli, monkeypatch, tmp_path):
    cli("embed", dataset)
    real_open, real_pwrite = os.open, os.pwrite

    def pwrite_fails(fd, data, offset):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "pwrite", pwrite_fails)  # the pid cannot be recorded: the lock still holds
    assert json.loads(cli("embed", dataset, "--json").stdout)["kept"] == 18
    monkeypatch.setattr(os, "pwrite", real_pwrite)

    def open_fails(path, flags, *a, **k):
        if str(path).endswith(".lock"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", open_fails)
    one_line(cli("embed", dataset, expect=None), 4, "cannot create the lock file", "Input/output error")


def test_filesystem_without_locks_warns_once_and_goes_on(dataset, cli, monkeypatch, tmp_path):
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    r = cli("embed", dataset)
    warnings = [line for line in r.stderr.splitlines() if "no file locks" in line]
    assert len(warnings) == 1 and "make sure no other run writes cache cache/embeddings.h5 at the same time" in warnings[0], r.stderr
    assert "Traceback" not in r.stderr
    make_image(dataset / "apples" / "new.jpg", (9, 9, 9), 77)
    assert json.loads(cli("embed", dataset, "--json").stdout)["embedded"] == 1
    assert cache.is_locked(tmp_path / "cache" / "embeddings.h5") is None


# --- a read-only cache folder ------------------------------------------------------------------------------


@pytest.mark.parametrize("lock_file", ["present", "absent"])
def test_read_only_cache_folder(mount_tmpfs, dataset, tiny_spec, cli, lock_file):
    fs = mount_tmpfs("4m")
    path = fs / "c.h5"
    cli("embed", dataset, "--cache", path)
    if lock_file == "absent":
        (fs / "c.h5.lock").unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
    before = listing(fs)
    assert json.loads(cli("embed", dataset, "--cache", path, "--json").stdout)["kept"] == 18  # nothing to write
    cli("fit", "--cache", path, "--out", "m")
    assert listing(fs) == before
    make_image(dataset / "apples" / "new.jpg", (9, 9, 9), 77)
    with pytest.raises(CacheError, match="is read-only and 1 file"):
        embed_folder(dataset, path, spec=tiny_spec, embedder_factory=boom)  # refused before the work
    one_line(cli("embed", dataset, "--cache", path, expect=None), 4, f"cannot write cache {path}", "read-only")
    (dataset / "apples" / "new.jpg").unlink()
    (dataset / "apples" / "apples_000.jpg").unlink()  # nothing to embed, but the cache must change
    one_line(cli("embed", dataset, "--cache", path, expect=None), 4, "read-only and it must be updated")
    one_line(cli("embed", dataset, "--cache", path, "--rebuild", expect=None), 4, "read-only")
    assert listing(fs) == before


# --- the backbone conversion -----------------------------------------------------------------------------


def test_full_disk_during_the_backbone_conversion_leaves_no_temp_file(mount_tmpfs, dataset, cli, monkeypatch):
    home = mount_tmpfs("1m")  # the converted backbone does not fit
    monkeypatch.setenv("EMBEDFLOW_HOME", str(home))
    r = cli("embed", dataset, "--runtime", "litert", "--quiet", expect=None)
    one_line(r, 4, "No space left on device", "EMBEDFLOW_HOME")
    assert [p.name for p in (home / "backbones").iterdir()] == []


def test_a_system_without_fcntl_warns_like_a_filesystem_without_locks(dataset, cli, monkeypatch):
    """Windows has no fcntl: the writer lock is then skipped with the same warning as on a filesystem
    without locks (docs/reliability.md), never an ImportError traceback."""
    import sys

    monkeypatch.setitem(sys.modules, "fcntl", None)  # `import fcntl` raises ImportError, as on Windows
    r = cli("embed", dataset)
    warnings = [line for line in r.stderr.splitlines() if "no file locks" in line]
    assert len(warnings) == 1 and "make sure no other run writes cache cache/embeddings.h5 at the same time" in warnings[0], r.stderr
    assert "Traceback" not in r.stderr
