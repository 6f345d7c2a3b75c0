"""Model folders and reports survive a second writer, Ctrl-C, a full disk and a read-only target: each
case is one line and exit 5, the old folder still loads and predicts as before, and no temporary file or
folder is left. Real faults where the machine allows them (a small tmpfs, remounted read-only), else the
same OSError raised by a monkeypatched write."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedflow import fsio, models
from embedflow.models import manifest as writer

from ..conftest import SIZE, embed_and_fit


@pytest.fixture
def fitted(tmp_path, weights_file):
    """tmp_path with data/, cache/embeddings.h5 and models/logreg (the cli fixture runs in tmp_path)."""
    return embed_and_fit(tmp_path, weights_file)


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _probabilities(folder: Path, root: Path) -> np.ndarray:
    from embedflow import open_cache

    return models.load_model(folder).predict_proba_vectors(open_cache(root / "cache" / "embeddings.h5").X)


def _errors(stderr: str) -> list[str]:
    """stderr without its warning lines (evaluating the training cache warns that the score is optimistic)."""
    return [line for line in stderr.strip().splitlines() if not line.startswith("warning:")]


def _leftovers(parent: Path) -> list[str]:
    """Staged, aside or temporary entries beside (or inside) model folders; the lock files may stay."""
    return sorted(p.name for p in parent.rglob(".*") if not p.name.endswith(".lock"))


@contextlib.contextmanager
def small_disk(path: Path, size: str):
    """A tmpfs of `size` mounted at path; yields False (nothing mounted) where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill(folder: Path, leave: int) -> None:
    """Fill the file system of folder until about `leave` bytes are free."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\1" * 4096)
    finally:
        os.close(fd)
    size = (folder / "filler").stat().st_size
    os.truncate(folder / "filler", max(0, size - leave))


# --- one writer per folder ------------------------------------------------------------------------------


def _hold_lock(*targets: Path):
    code = ("import sys; from embedflow import models; l = [models.output_lock(t).__enter__() for t in sys.argv[1:]]; "
            "print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, *map(str, targets)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_writer_of_a_model_folder_gets_one_line_and_exit_5_before_any_work(fitted, cli):
    target = fitted / "models" / "logreg"
    before = _snapshot(target)
    holder = _hold_lock(Path("models/logreg"), Path("models/logreg-fused"))  # relative: cwd is fitted
    try:
        for args, folder in ((("fit", "--head", "dense", "--out", "models/logreg"), "models/logreg"),
                             (("export", "models/logreg", "--format", "keras"), "models/logreg-fused"),
                             (("evaluate", "models/logreg", "data"), "models/logreg")):
            r = cli(*args, expect=5)
            assert r.stderr.strip() == (f"error: model folder {folder} is in use by process {holder.pid}; "
                                        "wait for it to finish or choose another --out"), args
            assert "training" not in r.stderr
    finally:
        holder.communicate("")
    assert _snapshot(target) == before  # never a mixed folder
    assert not (fitted / "models" / "logreg-fused").exists()
    assert not list((fitted / "cache").glob("data-*.h5"))  # evaluate stopped before embedding
    cli("fit", "--head", "logreg", "--C", "0.5", "--out", "models/logreg")  # free again


def test_two_fits_in_one_process_and_a_save_inside_a_locked_fit_nest(fitted):
    from embedflow import api

    with models.output_lock(fitted / "models" / "x"):
        clf = api.fit_head(fitted / "cache" / "embeddings.h5", "logreg", out=fitted / "models" / "x", reporter=None)
    assert clf.path == fitted / "models" / "x" and models.load_model(clf.path).kind == "cached-head"


def test_finetune_to_a_locked_folder_is_refused_before_decoding(fitted, cli):
    holder = _hold_lock(Path("models/ft"))
    try:
        r = cli("finetune", "data", "--out", "models/ft", "--epochs", "1", expect=5)
    finally:
        holder.communicate("")
    assert "models/ft is in use by process" in r.stderr and "fine-tuning on" not in r.stderr


# --- Ctrl-C and kills -----------------------------------------------------------------------------------


def test_ctrl_c_while_fit_saves_keeps_the_old_model_and_the_message_is_true(fitted, cli, monkeypatch):
    target = fitted / "models" / "logreg"
    before, proba = _snapshot(target), _probabilities(target, fitted)

    def interrupted(folder):
        raise KeyboardInterrupt  # the new folder is complete but not yet in place

    monkeypatch.setattr(writer, "_fsync_tree", interrupted)
    r = cli("fit", "--head", "logreg", "--C", "0.5", "--out", "models/logreg", expect=130)
    assert "interrupted: every file and folder it writes is replaced whole" in r.stderr
    assert _snapshot(target) == before and _leftovers(target.parent) == []
    np.testing.assert_array_equal(_probabilities(target, fitted), proba)


KILL_PHASES = {  # where the writer dies: (function of embedflow.models.manifest to wrap, die before or after it)
    "member-written": ("sha256_file", "before"),   # the head file is written, nothing else yet
    "manifest": ("write_manifest", "before"),      # every member written, manifest not yet
    "fsync": ("_fsync_tree", "before"),            # the folder complete, not yet fsynced
    "swap": ("swap_into_place", "before"),         # fsynced, not yet swapped
    "swapped": ("swap_into_place", "after"),       # swapped in: the new folder is the model
}

KILLER = """
import os, signal, sys
from embedflow.models import manifest as m
name, when = sys.argv[1], sys.argv[2]
SIG = getattr(signal, os.environ.get("KILL_WITH", "SIGKILL"))
real = getattr(m, name, None)  # "none": no kill
def die(*a, **k):
    if when == "before":
        os.kill(os.getpid(), SIG)
    out = real(*a, **k)
    os.kill(os.getpid(), SIG)
    return out
import embedflow.models as pkg, embedflow.models.classifier as c, embedflow.models.head_model as h
for mod in (m, c, h, pkg):  # export and finetune call models.sha256_file / models.write_manifest
    if real is not None and hasattr(mod, name):
        setattr(mod, name, die)
from embedflow.cli import run
sys.argv = ["embedflow"] + sys.argv[3:]
run()
"""


@pytest.mark.parametrize("head", ["logreg", pytest.param("dense", marks=pytest.mark.slow)])
def test_sigkill_at_every_phase_of_a_save_leaves_the_old_model_or_the_complete_new_one(fitted, head):
    """A short deterministic version of benchmarks/kill_saves.py: the writer SIGKILLs itself at each phase."""
    target = fitted / "models" / head
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    fit = ["fit", "--head", head, "--out", str(target), "--quiet"] + (["--epochs", "5"] if head == "dense" else [])
    from embedflow import api

    params = {"epochs": 5} if head == "dense" else {}
    api.fit_head(fitted / "cache" / "embeddings.h5", head, out=target, reporter=None, **params)
    old = _probabilities(target, fitted)
    for phase, (name, when) in KILL_PHASES.items():
        before = _snapshot(target)
        seed = str(1 + list(KILL_PHASES).index(phase))
        r = subprocess.run([sys.executable, "-c", KILLER, name, when, *fit, "--seed", seed], cwd=fitted, env=env,
                           capture_output=True, text=True)
        assert r.returncode == -9, f"{phase}: exit {r.returncode}\n{r.stderr}"
        now = _probabilities(target, fitted)  # loads: the folder is complete (old or new)
        if phase == "swapped":
            assert _snapshot(target) != before and models.read_manifest(target)["split"]["seed"] == int(seed)
        else:
            assert _snapshot(target) == before, phase
            np.testing.assert_array_equal(now, old)
        old = now
    api.fit_head(fitted / "cache" / "embeddings.h5", head, out=target, reporter=None, **params)
    assert _leftovers(target.parent) == []  # the next writer removes what killed ones left


def test_sigterm_while_fit_saves_exits_130_and_keeps_the_old_model_even_with_sigint_ignored(fitted):
    """SIGTERM always stops embedflow cleanly (exit 130, the true message), also in a process started with
    SIGINT ignored (a background job of a non-interactive shell), which keeps SIGINT ignored as Unix tools do."""
    import signal

    target = fitted / "models" / "logreg"
    before, proba = _snapshot(target), _probabilities(target, fitted)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "KILL_WITH": "SIGTERM"}
    r = subprocess.run([sys.executable, "-c", KILLER, "swap_into_place", "before", "fit", "--head", "logreg", "--C",
                        "0.5", "--out", str(target), "--quiet"], cwd=fitted, env=env, capture_output=True, text=True,
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert r.returncode == 130, r.stderr
    assert r.stderr.strip().splitlines()[-1] == ("interrupted: every file and folder it writes is replaced whole, so "
                                                 "each is the previous one or the complete new one; run the same "
                                                 "command again"), r.stderr
    assert "Traceback" not in r.stderr
    assert _snapshot(target) == before and _leftovers(target.parent) == []
    np.testing.assert_array_equal(_probabilities(target, fitted), proba)


# just before and right after the swap (the staging phases are the same writer's, killed for fit at every phase
# above; CI time is the budget: each kill here is a TensorFlow process)
SAVE_KILLS = {k: KILL_PHASES[k] for k in ("swap", "swapped")}


def _image_state(folder: Path, images: list[Path]) -> tuple[dict, np.ndarray]:
    """The folder's files and its probabilities on images; raises when it does not load (incomplete)."""
    return _snapshot(folder), models.load_model(folder).predict_proba([str(p) for p in images])


@pytest.mark.slow
@pytest.mark.timeout(1800)  # five TensorFlow processes per command
@pytest.mark.parametrize("command", ["export", "finetune"])
def test_sigkill_while_export_or_finetune_saves_leaves_the_old_model_or_the_complete_new_one(fitted, weights_file,
                                                                                            command):
    """The deterministic counterpart of benchmarks/kill_saves.py for export and finetune: `embedflow
    export`/`finetune` SIGKILL themselves just before and just after the swap (a killed finetune leaves its
    scratch pixel file too); after each kill the folder loads and predicts exactly as before (or is the complete new one
    after the swap), and the next run leaves nothing beside it."""
    target = fitted / "models" / command
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "TF_CPP_MIN_LOG_LEVEL": "3"}
    if command == "export":
        args = ["export", "models/logreg", "--format", "tflite", "--out", str(target), "--quiet"]
    else:
        args = ["finetune", "data", "--out", str(target), "--epochs", "1", "--fine-tune-epochs", "0", "--no-refit",
                "--batch-size", "8", "--weights", str(weights_file), "--image-size", "96", "--quiet"]
    seed = [] if command == "export" else ["--seed", "0"]
    first = subprocess.run([sys.executable, "-m", "embedflow.cli", *args, *seed], cwd=fitted, env=env,
                           capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    images = sorted((fitted / "data").rglob("*_00[01].*"))
    before, old = _image_state(target, images)
    for i, (phase, (name, when)) in enumerate(SAVE_KILLS.items()):
        seed = [] if command == "export" else ["--seed", str(i + 1)]
        r = subprocess.run([sys.executable, "-c", KILLER, name, when, *args, *seed], cwd=fitted, env=env,
                           capture_output=True, text=True)
        assert r.returncode == -9, f"{phase}: exit {r.returncode}\n{r.stderr}"
        now, proba = _image_state(target, images)  # loads: the folder is complete (old or new)
        if phase == "swapped":
            assert now != before, phase  # the complete new folder
        else:
            assert now == before, phase
            np.testing.assert_array_equal(proba, old)
        if phase == "swap":
            assert _leftovers(target.parent), "a killed writer's staged folder is there for the next one to remove"
        before, old = now, proba
    last = subprocess.run([sys.executable, "-m", "embedflow.cli", *args, *seed], cwd=fitted, env=env,
                          capture_output=True, text=True)
    assert last.returncode == 0, last.stderr
    assert _leftovers(target.parent) == []  # the next writer removed what the killed ones left
    models.load_model(target).predict_proba([str(p) for p in images])


# --- full and failing disks -----------------------------------------------------------------------------


def test_a_full_disk_while_fit_writes_is_one_line_and_the_old_folder_stays(fitted, cli, monkeypatch):
    disk = fitted / "small"
    with small_disk(disk, "2m") as real:
        cli("fit", "--head", "logreg", "--out", disk / "logreg")
        before, proba = _snapshot(disk / "logreg"), _probabilities(disk / "logreg", fitted)
        if real:
            _fill(disk, leave=12 * 1024)  # room for the staged folder, not for the head
        else:  # no tmpfs here: the same error, raised by the head's write
            real_write = Path.write_bytes

            def full(self, data):
                if self.name == "head.joblib":
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
                return real_write(self, data)

            monkeypatch.setattr(Path, "write_bytes", full)
        r = cli("fit", "--head", "logreg", "--C", "0.5", "--out", disk / "logreg", "--quiet", expect=5)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: cannot write {disk / 'logreg'}: No space left"), r.stderr
        assert _snapshot(disk / "logreg") == before and _leftovers(disk) == []
        np.testing.assert_array_equal(_probabilities(disk / "logreg", fitted), proba)


def test_a_full_disk_while_finetune_decodes_is_one_line_its_scratch_removed_and_the_old_folder_stays(
        fitted, cli, monkeypatch, weights_file):
    """finetune decodes the images into a scratch pixel file beside its --out folder: a disk that fills
    there is one line and exit 5, the scratch file is removed, and the previous model folder is intact."""
    disk = fitted / "small"
    with small_disk(disk, "2m") as real:
        cli("fit", "--head", "logreg", "--out", disk / "ft")  # the previous model of the target
        before, proba = _snapshot(disk / "ft"), _probabilities(disk / "ft", fitted)
        if real:
            _fill(disk, leave=64 * 1024)  # 18 images of 96 px need about 500 kB
        else:  # no tmpfs here: the same error, raised while the pixel file is written
            import embedflow.models.pixel_file as pixel_file

            real_replace = pixel_file.os.replace

            def full(src, dst):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src))

            monkeypatch.setattr(pixel_file.os, "replace", full)
        r = cli("finetune", "data", "--out", disk / "ft", "--epochs", "1", "--fine-tune-epochs", "0", "--no-refit",
                "--image-size", SIZE, "--weights", weights_file, "--quiet", expect=5)
        lines = _errors(r.stderr)
        assert len(lines) == 1 and lines[0].startswith(f"error: cannot write {disk / 'ft'}: No space left"), r.stderr
        assert "it was left as it was" in lines[0] and "Traceback" not in r.stderr
        assert _snapshot(disk / "ft") == before and _leftovers(disk) == [], _leftovers(disk)
        np.testing.assert_array_equal(_probabilities(disk / "ft", fitted), proba)
        if not real:
            monkeypatch.setattr(pixel_file.os, "replace", real_replace)


def test_a_failed_swap_without_renameat2_puts_the_old_folder_back_before_saying_so(fitted, cli, monkeypatch):
    """Without an atomic exchange the swap is two renames: when the second fails, the old folder is put
    back, so "it was left as it was" is true; a target that did not exist says nothing was written."""
    before, proba = _snapshot(fitted / "models" / "logreg"), _probabilities(fitted / "models" / "logreg", fitted)
    monkeypatch.setattr(writer, "_exchange", lambda a, b: False)
    real_rename = writer._rename

    def rename(src, dst):
        if Path(src).name.startswith(".") and ".tmp-" in Path(src).name:  # the staged folder into place
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(dst))
        return real_rename(src, dst)

    monkeypatch.setattr(writer, "_rename", rename)
    r = cli("fit", "--head", "logreg", "--C", "0.5", "--out", "models/logreg", "--quiet", expect=5)
    lines = _errors(r.stderr)
    assert len(lines) == 1 and "Input/output error" in lines[0] and lines[0].endswith("it was left as it was"), r.stderr
    assert _snapshot(fitted / "models" / "logreg") == before and _leftovers(fitted / "models") == []
    np.testing.assert_array_equal(_probabilities(fitted / "models" / "logreg", fitted), proba)
    r = cli("fit", "--head", "logreg", "--out", "models/new", "--quiet", expect=5)
    lines = _errors(r.stderr)
    assert len(lines) == 1 and "left as it was" not in lines[0] and "nothing was written" in lines[0], r.stderr
    assert not (fitted / "models" / "new").exists() and _leftovers(fitted / "models") == []


def test_a_full_disk_while_evaluate_writes_its_report_is_one_line_and_no_temporary_file(fitted, cli, monkeypatch):
    disk = fitted / "small"
    with small_disk(disk, "1m") as real:
        if real:
            (disk / "eval").mkdir()
            _fill(disk, leave=8 * 1024)  # the JSON fits, the PNG does not
        else:
            import embedflow.reports.write as report_writer

            def full(*args):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            monkeypatch.setattr(report_writer, "plot_confusion", full)
        r = cli("evaluate", "models/logreg", "cache/embeddings.h5", "--out", disk / "eval", "--quiet", expect=5)
        lines = _errors(r.stderr)
        assert len(lines) == 1 and "cannot write" in lines[0] and "No space left" in lines[0], r.stderr
        assert [p.name for p in (disk / "eval").iterdir() if ".tmp" in p.name] == []


def test_an_io_error_inside_a_staged_folder_is_output_error_and_removes_the_staged_folder(tmp_path):
    target = tmp_path / "m"
    with pytest.raises(models.manifest.OutputError, match="cannot write .*Input/output error"):
        with models.staged_folder(target) as staged:
            (staged / "x").write_text("half")
            raise OSError(errno.EIO, os.strerror(errno.EIO))
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the staged folder and the released lock file are gone


# --- read-only targets ----------------------------------------------------------------------------------


@contextlib.contextmanager
def read_only(disk: Path, monkeypatch, real: bool):
    """Make the tmpfs at disk read-only (remount), or, where it is no tmpfs, make every write there fail
    the way a read-only mount does."""
    if real:
        assert subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True).returncode == 0
        yield
        return
    import tempfile

    real_tf = tempfile.TemporaryFile

    def refused(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve().is_relative_to(disk.resolve()):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real_tf(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", refused)
    yield


def test_a_read_only_target_is_reported_before_the_work(fitted, cli, monkeypatch):
    disk = fitted / "ro"
    with small_disk(disk, "4m") as real:
        cli("fit", "--head", "logreg", "--out", disk / "logreg")
        before = _snapshot(disk / "logreg")
        with read_only(disk, monkeypatch, real):
            r = cli("fit", "--head", "logreg", "--out", disk / "logreg", expect=5)
            assert r.stderr.strip().startswith(f"error: cannot write {disk / 'logreg'}: {disk} is not writable")
            assert "training" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
            r = cli("evaluate", disk / "logreg", "data")  # its report would go into the folder: shown, not saved
            assert "wrote" not in r.stdout and "accuracy" in r.stdout.lower()
            assert [line for line in r.stderr.splitlines() if "cannot be written" in line] == [
                f"warning: {disk / 'logreg'} cannot be written (Read-only file system): the report is shown, not "
                "saved; pass --out DIR to keep it"], r.stderr
            assert _snapshot(disk / "logreg") == before
            cli("evaluate", disk / "logreg", "data", "--out", "reports")  # the way to keep its report
            assert (fitted / "reports" / "eval-report.json").is_file()
            r = cli("predict", disk / "logreg", "data/apples")  # reading still works
        assert _snapshot(disk / "logreg") == before


# --- long names -----------------------------------------------------------------------------------------


def test_derived_names_stay_within_name_max_and_differ():
    long_a, long_b = "a" * 250 + "1", "a" * 250 + "2"
    for name in (long_a, "é" * 127, "x.h5"):
        for tail, head in ((".lock", ""), (".journal", ""), (".faiss.json", ""), (".tmp-4194304", ".")):
            out = fsio.fit_name(name, tail, head)
            assert len(os.fsencode(out)) <= fsio.NAME_MAX and out.endswith(tail) and out.startswith(head)
            if len(os.fsencode(head + name + tail)) <= fsio.NAME_MAX:
                assert out == head + name + tail
    assert fsio.fit_name(long_a, ".lock") != fsio.fit_name(long_b, ".lock")
    assert len(os.fsencode(f".{fsio.staging_stem(long_a)}.old-4194304")) <= fsio.NAME_MAX


def test_a_cache_and_a_model_folder_with_250_byte_names(fitted, cli):
    cache_name = "c" * 247 + ".h5"  # 250 bytes: .lock, .journal and the temporary file would not fit
    model_name = "m" * 250
    cli("embed", "data", "--cache", f"cache/{cache_name}", "--quiet")
    cli("fit", "--cache", f"cache/{cache_name}", "--head", "logreg", "--out", f"models/{model_name}", "--quiet")
    cli("fit", "--cache", f"cache/{cache_name}", "--head", "logreg", "--out", f"models/{model_name}", "--quiet")
    cli("predict", f"models/{model_name}", "data/apples", "--cache", f"cache/{cache_name}")
    for folder in (fitted / "cache", fitted / "models"):
        assert all(len(os.fsencode(p.name)) <= fsio.NAME_MAX for p in folder.rglob("*"))


def test_evaluate_of_a_folder_with_a_240_byte_name(fitted, cli):
    import shutil

    long = fitted / ("d" * 240)
    shutil.copytree(fitted / "data", long)
    r = cli("evaluate", "models/logreg", long.name, "--json")
    assert '"accuracy"' in r.stdout
    assert all(len(os.fsencode(p.name)) <= fsio.NAME_MAX for p in (fitted / "cache").iterdir())


def test_report_files_with_long_names_are_written_atomically(tmp_path):
    from embedflow.reports import write_text_atomically

    path = tmp_path / ("r" * 250 + ".json")
    write_text_atomically(path, "{}")
    assert path.read_text() == "{}" and sorted(tmp_path.iterdir()) == [path]


def test_a_model_folder_lock_file_is_removed_on_release_and_a_stale_inode_is_not_trusted(tmp_path):
    """The writer lock beside a model folder leaves no file behind; an acquirer that locked a file the
    previous holder removed in between retries on the file now at the path (unlink-safe flock)."""
    import fcntl

    from embedflow.fsio import WriterLock, _same_file

    target = tmp_path / "m"
    lock = models.output_lock(target)
    with lock:
        assert lock.path.exists()
        fd = os.open(lock.path, os.O_RDWR)  # another open file description: as another process sees it
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    assert not lock.path.exists()
    stale = os.open(tmp_path / "x.lock", os.O_RDWR | os.O_CREAT)
    os.unlink(tmp_path / "x.lock")
    assert not _same_file(stale, tmp_path / "x.lock")
    os.close(stale)
    with WriterLock(tmp_path / "x.lock", "x", RuntimeError, RuntimeError, remove=True) as held:
        assert held.locked and _same_file(held._fd, tmp_path / "x.lock")
    assert not (tmp_path / "x.lock").exists()


# --- output folders that cannot be swapped --------------------------------------------------------------


def test_an_out_that_is_no_named_folder_or_a_file_is_refused_before_the_work(fitted, cli):
    """`fit --out .` (and "", "/", "..", an existing file) used to train, then end in a traceback renaming
    '.'; fit, finetune and export now refuse them with one line, exit 2, before any work."""
    (fitted / "afile").write_text("x")
    before = sorted(p.name for p in fitted.iterdir())
    for out, said in ((".", "not '.'"), ("", "not '.'"), ("/", "not '/'"), ("models/..", "not 'models/..'"),
                      ("afile", "afile exists and is not a folder")):
        for args in (("fit", "--head", "logreg"), ("finetune", "data", "--epochs", "1"), ("export", "models/logreg")):
            r = cli(*args, "--out", out, expect=2)
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and said in lines[0], r.stderr
            assert "training" not in r.stderr and "fine-tuning" not in r.stderr
    assert sorted(p.name for p in fitted.iterdir()) == before and (fitted / "afile").read_text() == "x"
    from embedflow.errors import UsageError

    with pytest.raises(UsageError, match="must be a named folder"):
        models.load_model(fitted / "models" / "logreg").save(".")  # Classifier.save checks the same (cwd: fitted)
    assert sorted(p.name for p in fitted.iterdir()) == before


def test_an_out_that_is_a_symbolic_link_is_refused_and_the_link_stays(fitted, cli):
    """`ln -s conc models/conclink; fit --out models/conclink` used to bypass the lock of models/conc (taken
    by a running fit) and replace the link with a folder: a link is refused, exit 2, one line."""
    cli("fit", "--head", "logreg", "--out", "models/conc")
    (fitted / "models" / "conclink").symlink_to("conc")
    (fitted / "models" / "dangling").symlink_to("nowhere")
    before = _snapshot(fitted / "models" / "conc")
    for link in ("models/conclink", "models/conclink/", "models/dangling"):
        for args in (("fit", "--head", "logreg"), ("export", "models/logreg")):
            r = cli(*args, "--out", link, expect=2)
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and "is a symbolic link" in lines[0], r.stderr
    assert (fitted / "models" / "conclink").is_symlink() and (fitted / "models" / "dangling").is_symlink()
    assert _snapshot(fitted / "models" / "conc") == before


def test_a_full_disk_while_evaluate_writes_its_last_report_file_leaves_every_old_file(fitted, cli, monkeypatch):
    """evaluate's report files are one set: eval-report.json, eval-confusion.*, eval-predictions.csv and
    eval-top-losses.png used to be replaced already when eval-report.html hit ENOSPC (a mixed set); now all
    are written to temporaries first and renamed in only when all are written."""
    import embedflow.reports.page as page
    from embedflow.reports import write as report_writer

    cli("evaluate", "models/logreg", "cache/embeddings.h5", "--out", "eval", "--quiet")
    before = _snapshot(fitted / "eval")
    assert {"eval-report.json", "eval-confusion.png", "eval-predictions.csv", "eval-report.html"} <= set(before)

    def full(tmp):
        tmp.write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

    cli("fit", "--head", "logreg", "--C", "0.01", "--out", "models/logreg", "--quiet")  # other numbers, other files
    monkeypatch.setattr(page, "write_text_atomically", lambda path, text: report_writer.write_atomically(path, full))
    r = cli("evaluate", "models/logreg", "cache/embeddings.h5", "--out", "eval", "--quiet", expect=5)
    lines = _errors(r.stderr)
    assert len(lines) == 1 and "eval-report.html" in lines[0] and "No space left" in lines[0], r.stderr
    assert _snapshot(fitted / "eval") == before  # every old file as it was, no temporary file left


def test_a_full_disk_while_fit_writes_a_report_names_the_target_not_the_staged_folder(fitted, cli, monkeypatch):
    """ENOSPC while fit writes its report used to name `.logreg.tmp-29421/top-losses.png`."""
    from embedflow.reports import write as report_writer

    real = report_writer.write_atomically

    def full(path, write):
        if Path(path).name == "top-losses.png":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, write)

    monkeypatch.setattr(report_writer, "write_atomically", full)
    import embedflow.reports.sheets as sheets

    monkeypatch.setattr(sheets, "write_atomically", full)
    r = cli("fit", "--head", "logreg", "--out", "models/new", "--quiet", expect=5)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left" in lines[0] and ".tmp-" not in lines[0], r.stderr
    assert "models/new" in lines[0] and not (fitted / "models" / "new").exists()


def test_a_disk_error_is_the_same_line_from_write_atomically_and_report_set(tmp_path, monkeypatch):
    """One helper turns a disk OSError into OutputError for both writers: the same line, naming the file."""
    from embedflow.errors import OutputError
    from embedflow.reports import write as report_writer

    def eio(src, dst):
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(dst))

    monkeypatch.setattr(report_writer.os, "replace", eio)
    with pytest.raises(OutputError) as alone:
        report_writer.write_text_atomically(tmp_path / "a.json", "{}")
    with pytest.raises(OutputError) as in_set:
        with report_writer.report_set():
            report_writer.write_text_atomically(tmp_path / "b.json", "{}")
    for e, name in ((alone, "a.json"), (in_set, "b.json")):
        assert str(e.value) == (f"cannot write {tmp_path / name}: Input/output error; "
                                "the previous file (if any) is unchanged")
    assert list(tmp_path.iterdir()) == []  # no temporary file left
