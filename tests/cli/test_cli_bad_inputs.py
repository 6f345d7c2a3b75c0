"""End to end: a folder of broken and odd files (tests/corpus.py) mixed with good images, through the real
`embedflow embed` and `embedflow info`: each file is embedded with the right pixels or skipped with its
path and reason, and the run goes on."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from embedflow import cache

from ..conftest import SIZE, make_dataset
from ..corpus import build_corpus, hooks

AS_ROOT = os.geteuid() == 0


@pytest.fixture
def corpus_run(tmp_path, cli, monkeypatch):
    root = tmp_path / "data"
    cases = build_corpus(root, unreadable=not AS_ROOT)
    hooks(root, monkeypatch)
    result = cli("embed", root)
    return root, cases, result, cache.load("cache/embeddings.h5")


def test_every_case_has_its_outcome(corpus_run):
    root, cases, result, held = corpus_run
    failed = {key: reason for key, reason, _ in held.failed}
    for case in cases:
        if case.expect == "embedded":
            assert case.key in held.keys, f"{case.key} ({case.note}) was not embedded: {failed.get(case.key)}"
        elif case.expect == "skipped":
            assert case.key in failed, f"{case.key} should have been skipped"
            assert re.search(case.reason, failed[case.key]), f"{case.key}: {failed[case.key]!r} !~ {case.reason!r}"
            assert f"warning: skipped {case.key}: {failed[case.key]}" in result.stderr
        else:
            assert case.key not in held.keys and case.key not in failed
    known = {c.key for c in cases}
    assert set(held.keys) | set(failed) <= known, f"unexpected files: {(set(held.keys) | set(failed)) - known}"
    n_skipped = sum(c.expect == "skipped" for c in cases)
    assert len(failed) == n_skipped
    assert held.classes == ["apples", "limes", "plums"]
    assert "class folder 'empty_class' holds no images: ignored" in result.stderr
    assert f"skipped {n_skipped} in" in result.stdout and f"{n_skipped} file(s) skipped" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_odd_images_give_the_vectors_of_their_pixels(corpus_run):
    """Same pixels in, same vector out: each odd file's vector equals its plain twin's."""
    _, cases, _, held = corpus_run
    vec = {k: held.embeddings[i] for i, k in enumerate(held.keys)}
    for case in cases:
        if case.twin and not case.key.endswith(".jpg"):  # lossless: the decoded pixels are the twin's exactly
            a, b = vec[case.key], vec[case.twin]
            assert np.abs(a - b).max() <= 1e-4 * (1 + np.abs(b).max()), f"{case.key} ({case.note}) != {case.twin}"
    # EXIF: the rotated file is (up to JPEG noise) its upright twin, far from the same pixels unrotated.
    rot, twin, ignored = (vec[f"plums/exif_{k}.jpg"] for k in ("rotated", "rotated_twin", "ignored"))
    assert np.linalg.norm(rot - twin) < 0.2 * np.linalg.norm(rot - ignored)
    # A different picture really gives a different vector (so the checks above can fail).
    assert np.abs(vec["limes/gray.png"] - vec["limes/palette_twin.png"]).max() > 1e-2
    assert np.isfinite(held.embeddings).all()


def test_info_lists_skips_rerun_keeps_them_and_strict_fails(corpus_run, cli):
    root, cases, _, held = corpus_run
    skipped = [c for c in cases if c.expect == "skipped"]
    out = cli("info").stdout
    assert f"skipped    {len(skipped)} file(s)" in out
    for key, reason, _ in held.failed:
        assert f"  {key}: {reason}" in out
    again = json.loads(cli("embed", root, "--json").stdout)
    assert again["embedded"] == 0  # remembered bad files are not retried until they change
    gone = sum("vanishes" in c.key for c in skipped)
    assert len(again["failed"]) == len(skipped) - gone
    r = cli("embed", root, "--strict", expect=7)  # the corpus has a class folder without images: left out
    assert "and --strict is set (e.g. empty_class: class folder 'empty_class' holds no images" in r.stderr
    import shutil

    shutil.rmtree(root / "empty_class")  # nothing left out: --strict then counts the skipped files
    r = cli("embed", root, "--strict", expect=7)
    assert f"{len(skipped) - gone} file(s) were skipped and --strict is set" in r.stderr


def test_unreadable_file_is_skipped_with_permission_denied(tmp_path, tiny_spec):
    """A real chmod-000 file, read by a real `embedflow embed` process: as root the process runs without
    CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (setpriv), so the kernel denies the read as it does to a user."""
    from embedflow import backbones

    backbones.tflite_backbone_path(tiny_spec, backbones.fingerprint(tiny_spec))  # converted once, here
    data = make_dataset(tmp_path / "data", per_class=3)
    locked = data / "plums" / "plums_001.png"
    locked.chmod(0)
    cmd = [sys.executable, "-m", "embedflow.cli", "embed", str(data), "--cache", str(tmp_path / "c.h5"),
           "--weights", str(tiny_spec.weights), "--image-size", str(SIZE), "--quiet"]
    if AS_ROOT:
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    assert "warning: skipped plums/plums_001.png: permission denied" in r.stderr
    held = cache.load(tmp_path / "c.h5")
    assert [(key, reason) for key, reason, _ in held.failed] == [("plums/plums_001.png", "permission denied")]
    assert len(held.keys) == 8 and "plums/plums_001.png" not in held.keys
