"""`python -m embedflow` runs the same entry point as the `embedflow` script."""

from __future__ import annotations

import subprocess
import sys


def _module(*args, cwd):
    return subprocess.run([sys.executable, "-m", "embedflow", *args], capture_output=True, text=True,
                          timeout=240, cwd=cwd)


def test_python_m_embedflow_shows_help(tmp_path):
    r = _module("--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "embed" in r.stdout and "fit" in r.stdout


def test_python_m_embedflow_keeps_exit_codes(tmp_path):
    """A missing folder is a usage error (exit 2, one line), as through the `embedflow` script."""
    r = _module("embed", str(tmp_path / "nowhere"), "--cache", str(tmp_path / "c.h5"), cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
