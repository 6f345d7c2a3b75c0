"""Kill `embedflow embed` with SIGKILL at many moments, resume it, and prove nothing is lost or wrong.

    KERAS_HOME=/work/shared/keras python benchmarks/kill_resume.py --data /work/shared/data/flowers-dev --kills 20

1. An uninterrupted reference run embeds DATA into WORK/reference.h5 (timed).
2. Then, into WORK/crash.h5, `embedflow embed` is started again and again and killed with SIGKILL: at
   random moments while it embeds (after a random number of its own journal commits, or during start-up),
   when the first journal chunk appears, while the new cache file is being written and right after it is
   renamed into place. After every kill the cache (if there is one) must open and agree with
   the reference row by row (key, sha256 of the file, label, vector), every journal chunk must load and
   agree too, the lock must be free, and the set of committed vectors (cache + journal) may only grow.
3. A last run completes; its cache must equal the reference: same keys, hashes, labels, classes,
   failed table, vectors within float tolerance; no journal or temporary file left behind.

Exit 0 and a JSON report when every check held; exit 1 and the first failure otherwise.
The test suite runs this on a small synthetic folder (tests/cache/test_cache_crash_safety.py), as a
single-file cache and as a sharded one (EMBEDFLOW_SHARD_MIN_ROWS=1: the shard files are written, then the
index renamed in; a kill may leave shard temporaries in NAME.d/, which the next writer removes).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RTOL, ATOL = 1e-4, 1e-5


class CheckFailed(AssertionError):
    pass


def embed_cmd(data: Path, cache_path: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "embedflow.cli", "embed", str(data), "--cache", str(cache_path), "--quiet", *extra]


def child_env(commit_seconds: float, env: dict | None = None) -> dict:
    out = dict(env or os.environ)
    out["EMBEDFLOW_COMMIT_SECONDS"] = str(commit_seconds)
    out.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return out


def temp_files(cache_path: Path) -> list[str]:
    """A writer's temporary files: the cache's own (`.NAME.tmpPID`) and, for a sharded cache, those of its
    shard files in NAME.d/ (`.shard-NNNNN.h5.tmpPID`)."""
    found = [p.name for p in cache_path.parent.glob(f".{cache_path.name}.tmp*")]
    shard_dir = Path(str(cache_path) + ".d")
    if shard_dir.is_dir():
        found += [f"{shard_dir.name}/{p.name}" for p in shard_dir.glob(".shard-*.tmp*")]
    return sorted(found)


def stray_shards(cache_path: Path) -> list[str]:
    """Shard files in NAME.d/ that the cache's index does not name (none may be left by a finished run)."""
    import h5py

    shard_dir = Path(str(cache_path) + ".d")
    if not shard_dir.is_dir():
        return []
    named: set[str] = set()
    if cache_path.exists():
        with h5py.File(cache_path, "r", locking=False) as f:
            if "shards" in f:
                named = {s.decode() if isinstance(s, bytes) else str(s) for s in f["shards"][()]}
    return sorted(p.name for p in shard_dir.glob("shard-*.h5") if p.name not in named)


def committed_chunks(cache_path: Path) -> list[Path]:
    """The journal's committed chunks (not the temporary file of one being written)."""
    from embedflow import cache

    return cache.Journal(cache_path, "").chunks()


def run_reference(data: Path, ref_path: Path, extra: list[str], env: dict) -> dict:
    """Uninterrupted run; returns its timing: total seconds and when the first journal chunk appeared."""
    t0 = time.monotonic()
    proc = subprocess.Popen(embed_cmd(data, ref_path, extra), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    first_chunk = None
    while proc.poll() is None:
        if first_chunk is None and committed_chunks(ref_path):
            first_chunk = time.monotonic() - t0
        time.sleep(0.01)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise CheckFailed(f"reference run failed (exit {proc.returncode}): {err.strip()[-2000:]}")
    total = time.monotonic() - t0
    t1 = time.monotonic()  # a rerun with nothing to embed: how long a run lives once everything is committed
    subprocess.run(embed_cmd(data, ref_path, extra), env=env, check=True, capture_output=True)
    return {"seconds": total, "first_chunk": first_chunk or total * 0.5, "noop": time.monotonic() - t1}


class Reference:
    """What the uninterrupted run wrote, indexed for checking."""

    def __init__(self, path: Path):
        from embedflow import cache

        self.data = cache.load(path)
        self.by_key = {k: i for i, k in enumerate(self.data.keys)}
        self.by_hash = {h: i for i, h in enumerate(self.data.hashes)}
        self.hashes = set(self.data.hashes)

    def vector(self, h: str) -> np.ndarray:
        return self.data.embeddings[self.by_hash[h]]


def check_cache(path: Path, ref: Reference) -> set[str]:
    """The cache opens and every row agrees with the reference; returns its hashes."""
    from embedflow import cache

    got = cache.load(path)  # raises if it does not open
    if got.fingerprint["id"] != ref.data.fingerprint["id"]:
        raise CheckFailed(f"{path}: fingerprint {got.fingerprint['id']} != {ref.data.fingerprint['id']}")
    if got.classes != ref.data.classes:
        raise CheckFailed(f"{path}: classes {got.classes} != {ref.data.classes}")
    if got.keys != sorted(set(got.keys)) or not (len(got.keys) == len(got.hashes) == len(got.labels) == len(got.embeddings)):
        raise CheckFailed(f"{path}: keys not sorted/unique or columns of different lengths")
    for row, (key, h) in enumerate(zip(got.keys, got.hashes)):
        i = ref.by_key.get(key)
        if i is None or ref.data.hashes[i] != h or ref.data.labels[i] != got.labels[row]:
            raise CheckFailed(f"{path}: row {key} ({h[:8]}) disagrees with the reference")
    if len(got):
        want = np.stack([ref.vector(h) for h in got.hashes])
        if not np.allclose(got.embeddings, want, rtol=RTOL, atol=ATOL):
            raise CheckFailed(f"{path}: vectors differ from the reference (max {np.abs(got.embeddings - want).max():.2e})")
    if not set(got.failed) <= set(ref.data.failed):
        raise CheckFailed(f"{path}: failed table {sorted(set(got.failed) - set(ref.data.failed))} not in the reference")
    return set(got.hashes)


def check_journal(cache_path: Path, ref: Reference) -> set[str]:
    """Every committed chunk loads and holds reference vectors; returns their hashes."""
    found: set[str] = set()
    for chunk in committed_chunks(cache_path):
        with np.load(chunk) as z:
            hashes, vectors = [h.decode() for h in z["hashes"]], z["vectors"]
        for h, v in zip(hashes, vectors):
            if h not in ref.hashes:
                raise CheckFailed(f"{chunk}: hash {h[:8]} is not an image of the folder")
            if not np.allclose(v, ref.vector(h), rtol=RTOL, atol=ATOL):
                raise CheckFailed(f"{chunk}: vector of {h[:8]} differs from the reference")
        found.update(hashes)
    return found


def check_after_kill(cache_path: Path, ref: Reference, before: set[str]) -> tuple[dict, set[str]]:
    from embedflow import cache

    holder = cache.is_locked(cache_path)
    if holder is not None:
        raise CheckFailed(f"lock still held by {holder} after the writer was killed")
    in_cache = check_cache(cache_path, ref) if cache_path.exists() else set()
    in_journal = check_journal(cache_path, ref)
    committed = in_cache | in_journal
    lost = before - committed
    if lost:
        raise CheckFailed(f"{len(lost)} committed vector(s) were lost by the kill")
    temps = temp_files(cache_path)
    return {"cache_rows": len(in_cache), "journal_vectors": len(in_journal), "committed": len(committed),
            "temp_files": temps}, committed


def kill_when(proc: subprocess.Popen, cache_path: Path, trigger: str, delay: float, limit: float,
              chunks: int = 1) -> str:
    """Wait for the trigger, then SIGKILL. Returns what happened ("killed ..." or "finished").
    "progress": `chunks` new journal chunks committed by this run, then `delay` seconds."""
    t0 = time.monotonic()
    mtime0 = cache_path.stat().st_mtime_ns if cache_path.exists() else None
    chunks0 = set(committed_chunks(cache_path))
    while proc.poll() is None:
        elapsed = time.monotonic() - t0
        if trigger == "time" and elapsed >= delay:
            break
        if trigger == "first-chunk" and set(committed_chunks(cache_path)) - chunks0:
            time.sleep(delay)
            break
        if trigger == "progress" and len(set(committed_chunks(cache_path)) - chunks0) >= chunks:
            time.sleep(delay)
            break
        if trigger == "cache-write" and temp_files(cache_path):
            time.sleep(delay)
            break
        if trigger == "cache-renamed" and cache_path.exists() and cache_path.stat().st_mtime_ns != mtime0:
            break
        if elapsed > limit:
            break
        time.sleep(0.002)
    if proc.poll() is not None:
        return "finished"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return f"killed at {time.monotonic() - t0:.2f}s ({trigger})"


def next_trigger(n: int, kills: int, remaining: float, journal_vectors: int, pending: list[str]) -> str:
    """The first journal commit of the first run; then two kills while embedding, each right after one more
    of that run's own commits (so work is left whatever the machine's speed); then, while a run still has
    something to write (work left or a journal to merge), a kill during the cache write and one right after
    the rename; then random moments. (A run with nothing new does not rewrite the cache, so the write
    phases must come while there is something to write.)"""
    if n == 0:  # right after the first commit: a journal and no cache, whatever the machine's speed
        return "first-chunk"
    if n <= 2 and remaining > 0:
        return "progress-early"
    if pending and (remaining > 0 or journal_vectors > 0):
        return pending.pop(0)
    return "time"


def compare_final(cache_path: Path, ref: Reference) -> None:
    from embedflow import cache

    got = cache.load(cache_path)
    for field in ("keys", "hashes", "classes", "failed"):
        if getattr(got, field) != getattr(ref.data, field):
            raise CheckFailed(f"final cache: {field} differ from the uninterrupted run")
    if not np.array_equal(got.labels, ref.data.labels):
        raise CheckFailed("final cache: labels differ from the uninterrupted run")
    if not np.allclose(got.embeddings, ref.data.embeddings, rtol=RTOL, atol=ATOL):
        raise CheckFailed(f"final cache: vectors differ (max {np.abs(got.embeddings - ref.data.embeddings).max():.2e})")
    leftovers = temp_files(cache_path) + stray_shards(cache_path)
    if Path(str(cache_path) + ".journal").exists() or leftovers:
        raise CheckFailed(f"final run left a journal or temporary files behind: {leftovers}")


def kill_resume(data: Path, work: Path, *, kills: int = 8, seed: int = 0, extra: list[str] | None = None,
                commit_seconds: float = 0.3, env: dict | None = None, log=print) -> dict:
    """The whole experiment; raises CheckFailed at the first broken guarantee. Returns a report."""
    extra = list(extra or [])
    work.mkdir(parents=True, exist_ok=True)
    env = child_env(commit_seconds, env)
    rng = random.Random(seed)
    ref_path, cache_path = work / "reference.h5", work / "crash.h5"
    for p in (ref_path, cache_path):
        p.unlink(missing_ok=True)
    timing = run_reference(data, ref_path, extra, env)
    ref = Reference(ref_path)
    log(f"reference: {len(ref.data)} images, {len(ref.data.failed)} skipped, {timing['seconds']:.1f}s "
        f"(first journal chunk at {timing['first_chunk']:.1f}s)")
    committed: set[str] = set()
    events = []
    pending = ["cache-write", "cache-renamed"]
    for n in range(kills):
        remaining = 1 - len(committed) / max(1, len(ref.hashes))
        trigger = next_trigger(n, kills, remaining, events[-1]["journal_vectors"] if events else 0, pending)
        r_kind, r_delay, r_chunks = rng.random(), rng.random(), rng.random()  # the same draws each run: one plan per seed
        chunks = 1
        if trigger == "first-chunk":
            delay = 0.05 * r_delay
        elif trigger == "progress-early":  # one more of this run's commits, then the kill: work is left
            trigger, delay = "progress", 0.0
        elif trigger != "time":
            delay = 0.0
        elif remaining > 0 and r_kind < 0.75:  # while embedding: after some of this run's commits, never at its end
            left = remaining * (timing["seconds"] - timing["first_chunk"]) / commit_seconds  # chunks still to come
            trigger, chunks, delay = "progress", 1 + int(r_chunks * max(1, left // 3)), r_delay * commit_seconds
        elif remaining > 0:  # during start-up
            delay = 0.05 + r_delay * 0.8 * timing["first_chunk"]
        else:  # everything committed: a run hashes the files and writes the cache
            delay = 0.05 + r_delay * 0.9 * timing["noop"]
        proc = subprocess.Popen(embed_cmd(data, cache_path, extra), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        outcome = kill_when(proc, cache_path, trigger, delay, limit=timing["seconds"] * 3 + 10, chunks=chunks)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        proc.stderr.close()
        if outcome == "finished" and proc.returncode != 0:
            raise CheckFailed(f"run {n} failed by itself (exit {proc.returncode}): {err.strip()[-2000:]}")
        state, committed = check_after_kill(cache_path, ref, committed)
        events.append({"run": n, "trigger": trigger, "outcome": outcome, **state})
        log(f"run {n:2d}: {outcome:32s} cache {state['cache_rows']:5d} rows, journal {state['journal_vectors']:5d}, "
            f"committed {state['committed']:5d}/{len(ref.hashes)}{'  temp file left' if state['temp_files'] else ''}")
    t0 = time.monotonic()
    final = subprocess.run(embed_cmd(data, cache_path, extra), env=env, capture_output=True, text=True)
    if final.returncode != 0:
        raise CheckFailed(f"resumed run failed (exit {final.returncode}): {final.stderr.strip()[-2000:]}")
    compare_final(cache_path, ref)
    killed = sum(e["outcome"].startswith("killed") for e in events)
    log(f"final run {time.monotonic() - t0:.1f}s: cache equals the uninterrupted run "
        f"({len(ref.data)} vectors, {len(ref.data.failed)} skipped) after {killed} kills")
    return {"data": str(data), "images": len(ref.data), "skipped": len(ref.data.failed), "kills": killed,
            "reference_seconds": round(timing["seconds"], 2), "events": events, "ok": True}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="class-per-subfolder image folder")
    ap.add_argument("--work", type=Path, default=Path("/tmp/embedflow-kill-resume"), help="where the caches go")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--commit-seconds", type=float, default=1.0, help="EMBEDFLOW_COMMIT_SECONDS for the runs")
    ap.add_argument("--json", type=Path, help="write the report here")
    ap.add_argument("embed_args", nargs="*", help="extra `embedflow embed` options, after --")
    args = ap.parse_args(argv)
    try:
        report = kill_resume(args.data, args.work, kills=args.kills, seed=args.seed, extra=args.embed_args,
                             commit_seconds=args.commit_seconds, log=lambda line: print(line, flush=True))
    except CheckFailed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
