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
from PIL import Image

from embedflow import cache

from .corpus import build_corpus, hooks, png_bomb

AS_ROOT = os.geteuid() == 0


@pytest.fixture
def corpus_run(tmp_path, cli, monkeypatch):
    root = tmp_path / "data"
    cases = build_corpus(root)
    hooks(root, monkeypatch, as_root=AS_ROOT)
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
    r = cli("embed", root, "--strict", expect=7)
    assert f"{len(skipped) - gone} file(s) were skipped and --strict is set" in r.stderr


@pytest.mark.skipif(not AS_ROOT, reason="only meaningful as root")
def test_chmod_000_is_simulated_as_root(tmp_path):
    """As root, chmod 000 does not stop reads, so the corpus simulates the PermissionError (hooks)."""
    path = tmp_path / "x.jpg"
    path.write_bytes(b"x")
    path.chmod(0)
    assert path.read_bytes() == b"x"


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



def _viewer_corpus(root) -> list[tuple[str, str, float]]:
    """Two classes of plain photos, and in apples odd files each beside a lossless PNG (or, for the MPO, the
    plain JPEG) of what a viewer shows: (key, twin key, least cosine of their vectors)."""
    from .conftest import CLASS_COLOURS, make_image
    from .test_decode_fidelity import encode, in_adobe_rgb, picture

    for c in ("apples", "limes"):
        for i in range(3):
            make_image(root / c / f"good_{i}.jpg", CLASS_COLOURS[c], 50 + i)
    a = root / "apples"
    arr = picture(1, 96)
    key = (30, 160, 40)
    (a / "keyed.png").write_bytes(encode(Image.fromarray(arr), transparency=key))
    shown = arr.copy()
    shown[(arr == key).all(axis=2)] = 255
    (a / "keyed_twin.png").write_bytes(encode(Image.fromarray(shown)))
    (a / "keyed_as_stored.png").write_bytes(encode(Image.fromarray(arr)))  # what ignoring the key gives
    (a / "phone.jpg").write_bytes(encode(Image.fromarray(picture(2, 96)), "MPO", save_all=True,
                                         append_images=[Image.new("RGB", (32, 32))], quality=95))
    (a / "phone_twin.jpg").write_bytes(encode(Image.fromarray(picture(2, 96)), "JPEG", quality=95))
    adobe, icc = in_adobe_rgb(picture(3, 96))
    (a / "adobe.png").write_bytes(encode(adobe, icc_profile=icc))
    (a / "adobe_twin.png").write_bytes(encode(Image.fromarray(picture(3, 96))))
    pairs = [("apples/keyed.png", "apples/keyed_twin.png", 0.9999), ("apples/phone.jpg", "apples/phone_twin.jpg", 0.9999),
             ("apples/adobe.png", "apples/adobe_twin.png", 0.997)]
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        (a / "iphone.jpg").write_bytes(encode(Image.fromarray(picture(4, 96)), "HEIF", quality=95))
        (a / "iphone_twin.png").write_bytes(encode(Image.fromarray(picture(4, 96))))
        pairs.append(("apples/iphone.jpg", "apples/iphone_twin.png", 0.997))
    except ImportError:
        pass
    (a / "notes.txt").write_text("not a picture")
    return pairs


def _cosine(vec, a: str, b: str) -> float:
    return float(vec[a] @ vec[b] / np.linalg.norm(vec[a]) / np.linalg.norm(vec[b]))


def test_same_pixels_as_a_viewer_shows_give_the_same_vector(tmp_path, cli):
    """Through the real `embed` (tiny random backbone): a colour-keyed PNG and an MPO decode to exactly the
    pixels of their twins, so their vectors agree (cosine >= 0.9999), and the keyed PNG's is not the vector
    of its stored pixels. (Colour conversions are checked on pixels in test_decode_fidelity, on vectors with
    the real weights below: the random backbone magnifies 1-level differences.)"""
    pairs = _viewer_corpus(tmp_path / "data")
    result = cli("embed", tmp_path / "data")
    held = cache.load("cache/embeddings.h5")
    assert not held.failed, held.failed
    vec = {k: held.embeddings[i] for i, k in enumerate(held.keys)}
    for key, twin, _ in pairs[:2]:
        assert _cosine(vec, key, twin) >= 0.9999, f"{key}: cosine {_cosine(vec, key, twin):.5f}"
    assert _cosine(vec, "apples/keyed.png", "apples/keyed_as_stored.png") < 0.9999  # the check can fail
    assert "1 file(s) that are not images by extension ignored: .txt 1" in result.stderr


@pytest.mark.realdata
def test_viewer_pictures_give_the_vectors_of_their_twins_with_the_real_weights(tmp_path, cli, monkeypatch):
    """With the ImageNet weights: every odd file's vector is its twin's (cosine >= 0.9999 for the same pixels,
    >= 0.997 across a colour conversion or the HEIC codec)."""
    from .test_realdata import _keras_home

    home = _keras_home()
    if home is None:
        pytest.skip("needs the ImageNet weights")
    monkeypatch.setenv("KERAS_HOME", str(home))
    pairs = _viewer_corpus(tmp_path / "data")
    cli("embed", tmp_path / "data", tiny=False)
    held = cache.load("cache/embeddings.h5")
    vec = {k: held.embeddings[i] for i, k in enumerate(held.keys)}
    for key, twin, at_least in pairs:
        assert _cosine(vec, key, twin) >= at_least, f"{key}: cosine {_cosine(vec, key, twin):.5f} < {at_least}"
    assert _cosine(vec, "apples/keyed.png", "apples/keyed_as_stored.png") < 0.9999
