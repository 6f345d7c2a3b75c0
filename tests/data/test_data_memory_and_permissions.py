"""Decoding under hostile files: decompression bombs, huge JPEGs, unreadable files."""

from __future__ import annotations

import os
import subprocess
import sys

from PIL import Image

from ..corpus import png_bomb

AS_ROOT = os.geteuid() == 0


PERMISSION_PROBE = r"""
import sys
from pathlib import Path
from embedflow.data import BadImage, hash_file, load_image
for step in (hash_file, lambda p: load_image(p, 32)):
    try:
        step(Path(sys.argv[1]))
        print("read")
    except BadImage as e:
        print("refused:", e)
"""


def test_unreadable_file_is_refused_with_permission_denied(tmp_path):
    """Hashing and decoding a chmod-000 file give "permission denied" from the kernel itself: as root the
    probe runs without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (setpriv), like any other user."""
    path = tmp_path / "locked.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(path)
    path.chmod(0)
    cmd = [sys.executable, "-c", PERMISSION_PROBE, str(path)]
    if AS_ROOT:
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    assert out.splitlines() == ["refused: permission denied", "refused: permission denied"]
    path.chmod(0o644)  # the same file, readable: the probe reads it (so the check above can fail)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    assert out.splitlines() == ["read", "read"]


MEMORY_PROBE = r"""
import resource, sys
from pathlib import Path
from embedflow.data import load_image, BadImage
load_image(Path(sys.argv[3]), 96)  # warm up: imports, PIL plugins
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_image(Path(sys.argv[1]), 96)
    print("bomb decoded")
except BadImage as e:
    print("bomb refused:", e)
arr = load_image(Path(sys.argv[2]), 96)
print("huge", arr.shape, int(arr.mean()))
print("grew_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_bombs_and_huge_jpegs_do_not_exhaust_memory(tmp_path):
    """A PNG declaring 30000x30000 pixels is refused before decoding; an 8000x6000 JPEG (144 MB as RGB) is
    decoded at 1/8 scale: the process grows by far less than either would need."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb(30000, 30000))
    huge = tmp_path / "huge.jpg"
    Image.new("RGB", (8000, 6000), (20, 180, 60)).save(huge, quality=50)
    small = tmp_path / "small.jpg"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(small)
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(bomb), str(huge), str(small)],
                         capture_output=True, text=True, check=True).stdout
    assert "bomb refused: 30000x30000 pixels" in out
    assert "huge (96, 96, 3)" in out
    grew_mb = int(out.split("grew_kb")[1]) / 1024
    assert grew_mb < 40, f"decoding grew the process by {grew_mb:.0f} MB"
