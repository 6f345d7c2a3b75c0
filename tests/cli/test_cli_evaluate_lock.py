"""`embedflow evaluate` embeds a folder through a cache of its own, under that cache's writer lock: while
another process holds the lock, evaluate stops with one line naming that process (exit 4) and writes
nothing; once it is released, the same command runs."""

from __future__ import annotations

import json
import subprocess
import sys

from ..conftest import embed_and_fit, make_dataset

HOLD = ("import sys; from embedflow.cache import CacheLock; lock = CacheLock(sys.argv[1]).__enter__(); "
        "print('held', flush=True); sys.stdin.read()")


def test_evaluate_waits_for_no_one_and_names_the_lock_holder(cli, tmp_path, weights_file):
    embed_and_fit(tmp_path, weights_file)
    test_data = make_dataset(tmp_path / "test", per_class=3, seed=5)
    eval_cache = tmp_path / "cache" / "test-eval.h5"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(eval_cache)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = cli("evaluate", "models/logreg", test_data, "--cache", eval_cache, "--out", "ev", expect=4)
        assert refused.stderr.strip().splitlines() == [
            f"error: cache {eval_cache} is in use by process {holder.pid}; wait for it to finish"]
        assert not eval_cache.exists()
        assert not (tmp_path / "ev").exists()  # no report, and no empty --out folder left behind
        refused = cli("evaluate", "models/logreg", test_data, "--cache", eval_cache, "--out", "new/deep/ev", expect=4)
        assert "is in use by process" in refused.stderr and not (tmp_path / "new").exists()
    finally:
        holder.communicate("")  # closing stdin ends the holder, which releases the lock
    report = json.loads(cli("evaluate", "models/logreg", test_data, "--cache", eval_cache, "--out", "ev",
                            "--json").stdout)
    assert report["n"] == 9 and eval_cache.is_file() and (tmp_path / "ev" / "eval-report.json").is_file()


def test_evaluate_of_a_read_only_model_folder_shows_the_score_and_says_where_to_save_it(tmp_path, weights_file):
    """A model folder the user cannot write (a shared, read-only models/ mount): without --out, evaluate
    still scores and prints the report, and one warning says it was not saved and how to keep it. Run as a
    real process without CAP_DAC_OVERRIDE (setpriv) when the tests run as root, so the kernel refuses."""
    import os

    embed_and_fit(tmp_path, weights_file)
    test_data = make_dataset(tmp_path / "test", per_class=3, seed=5)
    model = tmp_path / "models" / "logreg"
    before = sorted(p.name for p in model.iterdir())
    model.chmod(0o555)
    cmd = [sys.executable, "-m", "embedflow.cli", "evaluate", str(model), str(test_data), "--cache",
           str(tmp_path / "cache" / "test.h5")]
    if os.geteuid() == 0:
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *cmd]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    finally:
        model.chmod(0o755)
    assert r.returncode == 0, r.stderr
    assert "accuracy" in r.stdout.lower() and "wrote" not in r.stdout
    warning = [line for line in r.stderr.splitlines() if "cannot be written" in line]
    assert len(warning) == 1 and str(model) in warning[0] and "pass --out DIR" in warning[0], r.stderr
    assert sorted(p.name for p in model.iterdir()) == before  # nothing written, nothing left behind
