"""Crash safety and concurrency, for real: `embedflow embed` subprocesses killed with SIGKILL and SIGINT,
two writers started at once, readers running while a writer process rewrites the cache, disk errors."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from embedflow import backbones, cache
from embedflow.embedding import embed_folder

from ..conftest import CLASS_COLOURS, ROOT, SIZE, make_image


def _kill_resume_module():
    spec = importlib.util.spec_from_file_location("kill_resume", ROOT / "benchmarks" / "kill_resume.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def converted(tiny_spec):
    """Convert the tiny backbone once in this process, so subprocesses (same EMBEDFLOW_HOME) start fast."""
    backbones.tflite_backbone_path(tiny_spec, backbones.fingerprint(tiny_spec))
    return ["--weights", tiny_spec.weights, "--image-size", str(SIZE)]


def synthetic(root, per_class=100, size=(160, 120)):
    for ci, c in enumerate(CLASS_COLOURS):
        for i in range(per_class):
            make_image(root / c / f"{i:04d}.jpg", CLASS_COLOURS[c], ci * 1000 + i, size=size)
    (root / "apples" / "zero.jpg").write_bytes(b"")
    (root / "limes" / "text.jpg").write_text("not a picture")
    shutil.copy(root / "plums" / "0001.jpg", root / "plums" / "copy.jpg")
    return root


def embed_proc(data, cache_path, args, **kw):
    env = {**os.environ, "EMBEDFLOW_COMMIT_SECONDS": "0.2"}
    return subprocess.Popen([sys.executable, "-m", "embedflow.cli", "embed", str(data), "--cache", str(cache_path),
                             "--quiet", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kw)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["single-file", "sharded"])
def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(tmp_path, converted, layout):
    """8 SIGKILLs (first journal commit, random moments while embedding, cache write, right after the rename): after each
    the cache opens and agrees with an uninterrupted run, committed vectors are never lost, and the
    resumed run ends with exactly the uninterrupted run's content (the harness raises otherwise). Sharded:
    the same with every cache written as shard files plus an index (EMBEDFLOW_SHARD_MIN_ROWS=1); the final
    run leaves no shard the index does not name."""
    kr = _kill_resume_module()
    data = synthetic(tmp_path / "data", per_class=80)
    lines = []
    env = {**os.environ, "EMBEDFLOW_SHARD_MIN_ROWS": "1" if layout == "sharded" else str(10**9)}
    report = kr.kill_resume(data, tmp_path / "work", kills=8, seed=3, extra=converted, commit_seconds=0.2,
                            env=env, log=lines.append)
    assert (tmp_path / "work" / "crash.h5.d").is_dir() == (layout == "sharded")
    log = "\n".join(lines)
    assert report["ok"] and report["images"] == 321 and report["skipped"] == 2
    killed = {e["trigger"]: e for e in report["events"] if e["outcome"].startswith("killed")}
    # A kill in each phase, each leaving the state it should have been checked in:
    # right after the first journal commit (committed vectors, no cache yet) ...
    assert report["events"][0]["trigger"] == "first-chunk" and "first-chunk" in killed, log
    assert killed["first-chunk"]["journal_vectors"] and not killed["first-chunk"]["cache_rows"], log
    # ... at random moments while embedding, with work still to do ...
    while_embedding = [e for e in report["events"] if e["trigger"] == "progress" and e["outcome"].startswith("killed")
                       and not e["cache_rows"]]
    assert len(while_embedding) >= 2, log
    # ... during the cache write (its temporary file left behind, the journal still holding everything) ...
    assert "cache-write" in killed and killed["cache-write"]["temp_files"], log
    assert killed["cache-write"]["journal_vectors"] >= killed["cache-write"]["cache_rows"], log
    # ... and right after the rename (the whole cache in place).
    assert "cache-renamed" in killed and killed["cache-renamed"]["cache_rows"] == 320, log  # 321 images, 2 alike


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sigint_stops_within_seconds_commits_and_resumes(tmp_path, converted, signum):
    """Ctrl-C (or SIGTERM) while decode workers are busy with large images: exit 130 quickly, progress
    committed, `info` says what is pending, and the same command resumes from the journal."""
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for c in ("big", "bigger"):
        for i in range(32):  # 1600x1200 PNGs: each batch keeps a worker decoding for a while
            arr = np.full((1200, 1600, 3), rng.integers(0, 256, 3), np.uint8)
            arr[:, i * 40:i * 40 + 40] = 255
            (data / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(data / c / f"{i:03d}.png", compress_level=1)
    cache_path = tmp_path / "c.h5"
    journal = cache_path.with_name("c.h5.journal")
    proc = embed_proc(data, cache_path, converted + ["--batch-size", "4"])
    deadline = time.monotonic() + 60
    while not cache.Journal(cache_path, "").chunks():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    sent = time.monotonic()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    stopped_after = time.monotonic() - sent
    assert proc.returncode == 130, err
    assert stopped_after < 2.5, f"took {stopped_after:.1f}s to stop"
    assert "run the same command again to resume" in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: interrupted: "), err  # (LiteRT may print an INFO line)
    assert not cache_path.exists()
    kept = sum(len(np.load(c)["hashes"]) for c in cache.Journal(cache_path, "").chunks())
    assert kept >= 4
    info = subprocess.run([sys.executable, "-m", "embedflow.cli", "info", "--cache", str(cache_path)],
                          capture_output=True, text=True)
    assert info.returncode == 4 and "journal chunk(s)" in info.stderr and "run the same" in info.stderr
    resumed = subprocess.run([sys.executable, "-m", "embedflow.cli", "embed", str(data), "--cache", str(cache_path),
                              "--json", *converted], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["resumed"] == kept and summary["embedded"] == 64 - kept and summary["total"] == 64
    assert not journal.exists()


@pytest.mark.slow
def test_two_writers_started_at_once(tmp_path, converted):
    data = synthetic(tmp_path / "data", per_class=60)
    cache_path = tmp_path / "c.h5"
    procs = [embed_proc(data, cache_path, converted) for _ in range(2)]
    results = [(p.pid, *p.communicate(timeout=120), p.returncode) for p in procs]
    codes = sorted(r[3] for r in results)
    assert codes == [0, 4], results
    winner = next(r for r in results if r[3] == 0)
    loser = next(r for r in results if r[3] == 4)
    assert loser[2].strip() == (f"error: cache {cache_path} is in use by process {winner[0]}; "
                                "wait for it to finish"), loser[2]
    assert len(cache.load(cache_path)) == 241


WRITER = r"""
import sys, numpy as np
from pathlib import Path
from embedflow import cache
import json
path, fp, src = Path(sys.argv[1]), json.loads(sys.argv[2]), Path(sys.argv[3])
for n in range(int(sys.argv[4])):
    rows = 1500 if n % 2 else 3000
    vec = np.repeat(np.arange(rows, dtype=np.float32)[:, None] + n, 1280, axis=1) / 3000
    np.savez(src, hashes=np.array([f"{i:064x}" for i in range(rows)], dtype="S64"), vectors=vec)
    keys = [f"{'ab'[i % 2]}/{i:05d}-{n}.jpg" for i in range(rows)]
    r = [cache.Row(k, f"{i:064x}", i % 2, src, i) for i, k in enumerate(keys)]
    with cache.CacheLock(path):
        cache.write(path, r, ["a", "b"], fp, "/data", [], 1280)
    print(n, flush=True)
"""


def snapshot_is_whole(held) -> bool:
    """Every row of a writer snapshot has vector (row + n) / 3000 and key suffix -n, for one n."""
    n = int(held.keys[0].rsplit("-", 1)[1].split(".")[0])
    rows = np.array([int(k.split("/")[1].split("-")[0]) for k in held.keys])
    ok_keys = all(k.endswith(f"-{n}.jpg") for k in held.keys) and len(held) == (1500 if n % 2 else 3000)
    return ok_keys and np.allclose(held.embeddings[:, 0], (rows + n) / 3000)


@pytest.mark.slow
def test_readers_work_while_a_writer_process_rewrites(tmp_path, cli, tiny_spec):
    """info, fit, evaluate and plain loads, run again and again while another process replaces the
    cache: each sees one complete snapshot, never an error or a mix."""
    fp = backbones.fingerprint(tiny_spec)
    path = tmp_path / "c.h5"
    writer_cmd = [sys.executable, "-c", WRITER, str(path), json.dumps(fp), str(tmp_path / "src.npz")]
    subprocess.run(writer_cmd + ["1"], check=True)  # a first snapshot
    cli("fit", "--cache", path, "--head", "logreg", "--val-split", "0", "--out", tmp_path / "m")
    # many rewrites, stopped once every reader ran twice across 3+ snapshots: fit and evaluate also write
    # their report pages, so how many rewrites one loop spans depends on the machine
    writer = subprocess.Popen(writer_cmd + ["400"], stdout=subprocess.PIPE, text=True)
    reads = {"load": 0, "info": 0, "evaluate": 0, "fit": 0}
    seen = set()
    while writer.poll() is None and not (len(seen) >= 3 and min(reads.values()) >= 2):
        held = cache.load(path)
        assert snapshot_is_whole(held)
        seen.add(held.keys[0])
        reads["load"] += 1
        i = json.loads(cli("info", "--cache", path, "--json").stdout)
        assert i["count"] == sum(i["per_class"].values()) in (1500, 3000)
        reads["info"] += 1
        r = json.loads(cli("evaluate", tmp_path / "m", path, "--json", "--out", tmp_path / "ev").stdout)
        assert np.sum(r["confusion_matrix"]) in (1500, 3000)
        reads["evaluate"] += 1
        if reads["fit"] < 2:
            cli("fit", "--cache", path, "--head", "logreg", "--val-split", "0", "--out", tmp_path / "m2")
            reads["fit"] += 1
    finished = writer.poll() is not None
    writer.kill()  # a writer killed mid-rewrite leaves the last complete cache (test_cache_crash_safety's kills)
    writer.wait()
    assert not finished or writer.returncode == 0
    assert snapshot_is_whole(cache.load(path))
    assert len(seen) >= 3, f"the readers saw only {len(seen)} snapshots: the test did not overlap the writer"
    assert min(reads.values()) >= 2, reads


def test_journal_write_failure_is_one_clear_error_and_loses_nothing(cli, dataset, monkeypatch):
    """Disk full while committing a journal chunk: exit 4 with one line, the old cache and the chunks
    committed before are intact, and the next run resumes from them."""
    import embedflow.embedding.incremental as E

    cli("embed", dataset)
    before = cache.load("cache/embeddings.h5")
    for i in range(12):
        make_image(dataset / "limes" / f"new{i}.jpg", (1, 200, 1), 500 + i)
    real_savez, calls = np.savez, {"n": 0}

    def savez_then_full(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real_savez(*a, **k)

    monkeypatch.setattr(E, "COMMIT_ROWS", 4)
    monkeypatch.setattr(cache.journal.np, "savez", savez_then_full)
    r = cli("embed", dataset, "--batch-size", "4", "--workers", "1", expect=4)
    assert r.stderr.startswith("error: could not write to the journal") and "No space left on device" in r.stderr
    assert "the cache is intact and the 1 chunk(s) committed before are kept" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert cache.load("cache/embeddings.h5").keys == before.keys
    assert not list((dataset.parent / "cache" / "embeddings.h5.journal").glob("*.tmp*"))
    monkeypatch.setattr(cache.journal.np, "savez", real_savez)
    again = json.loads(cli("embed", dataset, "--json").stdout)
    assert (again["resumed"], again["embedded"], again["total"]) == (4, 8, 30)


def test_damaged_journal_chunk_is_only_lost_work(dataset, tiny_spec, tmp_path):
    path = tmp_path / "c.h5"
    journal = cache.Journal(path, backbones.fingerprint(tiny_spec)["id"])
    journal.open()
    (journal.dir / "00000007.npz").write_bytes(b"PK\x03\x04 half a zip file")
    summary = embed_folder(dataset, path, spec=tiny_spec)
    assert summary.embedded == 18 and not journal.dir.exists()


def test_half_written_journal_chunk_is_not_a_chunk(tmp_path):
    """A chunk being written (killed mid-write) is neither counted nor read as committed."""
    journal = cache.Journal(tmp_path / "c.h5", "fp")
    journal.open()
    journal.append(["a" * 64], np.ones((1, 4), np.float32))
    (journal.dir / "00000001.tmp.npz").write_bytes(b"PK\x03\x04 half")
    assert [c.name for c in journal.chunks()] == ["00000000.npz"]
    assert set(journal.vectors_by_hash()) == {"a" * 64}


def test_stale_temp_file_of_a_killed_writer_is_removed(dataset, tiny_spec, tmp_path):
    path = tmp_path / "c.h5"
    stale = tmp_path / ".c.h5.tmp999999"
    stale.write_bytes(b"\x89HDF half a cache")
    embed_folder(dataset, path, spec=tiny_spec)
    assert not stale.exists() and len(cache.load(path)) == 18


def test_lock_is_released_when_the_holder_is_killed(tmp_path):
    path = tmp_path / "c.h5"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from embedflow import cache; "
                               f"l = cache.CacheLock(__import__('pathlib').Path({str(path)!r})).__enter__(); "
                               "print('locked', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    assert cache.is_locked(path) == holder.pid
    holder.kill()
    holder.wait()
    assert cache.is_locked(path) is None
    with cache.CacheLock(path):
        pass
