"""`embedflow embed --engine ray` as a user runs it: a child process that starts its own local Ray cluster
and stops it, a Ray worker killed mid-run, and a driver interrupted (SIGINT) or killed (SIGKILL) and run
again, which resumes from the committed journal shards without embedding them again.

Every process of a run (the driver and the Ray processes it starts) carries a marker in its environment,
so the test finds them, checks that none outlives the run, and kills only those it started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from embedflow import cache

from ..conftest import default_sigint, SIZE, make_dataset

pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'embedflow[ray]'")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # each run starts a local Ray cluster
MARK = "EMBEDFLOW_RAY_TEST"


def marked(tag: str, *, name: str = "") -> list[int]:
    """pids of live processes whose environment holds MARK=tag (and whose command line holds `name`)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if f"{MARK}={tag}".encode() in (proc / "environ").read_bytes().split(b"\0") and \
                    name.encode() in (proc / "cmdline").read_bytes():
                if (proc / "stat").read_text().split()[2] != "Z":
                    found.append(int(proc.name))
        except OSError:
            continue
    return found


def kill_marked(tag: str) -> None:
    for pid in marked(tag):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_gone(tag: str, seconds: float = 30) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := marked(tag)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


class Run:
    """`embedflow embed DATA --engine ray --workers 2 --json` in a child process with a fresh marker."""

    def __init__(self, data: Path, cache_path: Path, weights: Path, cwd: Path, commit_seconds: str = "0"):
        self.tag = uuid.uuid4().hex
        env = {**os.environ, MARK: self.tag, "EMBEDFLOW_COMMIT_SECONDS": commit_seconds, "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "embedflow.cli", "embed", str(data), "--cache", str(cache_path), "--engine", "ray",
               "--workers", "2", "--batch-size", "4", "--weights", str(weights), "--image-size", str(SIZE), "--json"]
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=default_sigint)

    def finish(self, timeout: float = 900) -> dict:
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err[-3000:]
        try:
            return json.loads(out)  # --json: stdout is the summary and nothing else
        except json.JSONDecodeError:
            raise AssertionError(f"stdout is not one JSON document:\n{out[-3000:]}\nstderr:\n{err[-3000:]}") from None


@pytest.fixture
def runs():
    started: list[Run] = []
    yield started
    for run in started:  # whatever a failed test left: only the processes these runs started
        if run.proc.poll() is None:
            run.proc.kill()
        kill_marked(run.tag)


def wait_for_shards(journal: Path, n: int, run: Run, timeout: float = 600) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shards = list(journal.glob("[0-9]" * 8 + ".npz"))
        if len(shards) >= n:
            return len(shards)
        assert run.proc.poll() is None, "the run ended before committing a shard: " + run.proc.stderr.read()[-2000:]
        time.sleep(0.05)
    raise AssertionError(f"no {n} shards in {journal} after {timeout} s")


def journal_hashes(journal: Path) -> set[str]:
    out = set()
    for shard in journal.glob("[0-9]" * 8 + ".npz"):
        with np.load(shard) as z:
            out.update(h.decode() if isinstance(h, bytes) else str(h) for h in z["hashes"])
    return out


def test_embed_starts_and_stops_its_own_local_cluster(tmp_path, weights_file, runs, embedflow_home):
    data = make_dataset(tmp_path / "data", per_class=6)
    runs.append(run := Run(data, tmp_path / "ray.h5", weights_file, tmp_path))
    summary = run.finish()
    assert summary["runtime"].startswith("ray") and summary["embedded"] == 18
    assert wait_gone(run.tag) == []  # the cluster embedflow started (GCS, raylet, workers) is gone
    held = cache.load(tmp_path / "ray.h5")
    assert len(held.keys) == 18 and np.isfinite(held.embeddings).all()
    # the workers found the backbone the driver converted in the forwarded EMBEDFLOW_HOME
    assert list((Path(embedflow_home) / "backbones").glob("*.tflite"))


def test_a_worker_killed_mid_run_is_restarted_and_the_run_completes(tmp_path, weights_file, runs):
    data = make_dataset(tmp_path / "data", per_class=40)
    runs.append(run := Run(data, tmp_path / "ray.h5", weights_file, tmp_path))
    wait_for_shards(Path(str(tmp_path / "ray.h5") + ".journal"), 1, run)
    deadline = time.monotonic() + 60
    while not (workers := marked(run.tag, name="MapWorker")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert workers, "no Ray Data map worker found"
    os.kill(workers[0], signal.SIGKILL)
    summary = run.finish()
    assert summary["embedded"] == 120 and summary["failed"] == []
    held = cache.load(tmp_path / "ray.h5")
    assert len(held.keys) == 120 and np.isfinite(held.embeddings).all() and (np.abs(held.embeddings).sum(1) > 0).all()
    assert wait_gone(run.tag) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_an_interrupted_driver_resumes_without_embedding_committed_vectors_again(tmp_path, weights_file, runs, sig):
    data = make_dataset(tmp_path / "data", per_class=40)
    cache_path = tmp_path / "ray.h5"
    journal = Path(str(cache_path) + ".journal")
    runs.append(first := Run(data, cache_path, weights_file, tmp_path))
    wait_for_shards(journal, 2, first)
    first.proc.send_signal(sig)
    _, err = first.proc.communicate(timeout=300)
    if sig == signal.SIGINT:
        assert first.proc.returncode == 130, err[-3000:]
        assert "new vectors are kept in" in err and "run the same command again to resume" in err
        assert wait_gone(first.tag) == []  # Ctrl-C still stops the cluster it started
    else:
        kill_marked(first.tag)  # a killed driver cannot stop its cluster: the test does, as a user would
    kept = journal_hashes(journal)
    assert kept and not cache_path.exists()
    runs.append(second := Run(data, cache_path, weights_file, tmp_path))
    summary = second.finish()
    assert summary["resumed"] >= len(kept)  # every committed vector came back from the journal ...
    assert summary["embedded"] + summary["resumed"] == 120  # ... and only the rest was embedded
    held = cache.load(cache_path)
    assert len(held.keys) == 120 and not journal.exists()
