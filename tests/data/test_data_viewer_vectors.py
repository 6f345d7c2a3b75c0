"""Odd files give the vector of the picture a viewer shows: each beside a lossless twin, embedded for real."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from embedflow import cache

from ..conftest import imagenet_keras_home as _keras_home


def _viewer_corpus(root) -> list[tuple[str, str, float]]:
    """Two classes of plain photos, and in apples odd files each beside a lossless PNG (or, for the MPO, the
    plain JPEG) of what a viewer shows: (key, twin key, least cosine of their vectors)."""
    from ..conftest import CLASS_COLOURS, make_image
    from .test_data_decode_fidelity import encode, in_adobe_rgb, picture

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
    assert "1 file(s) not embedded, by extension: .txt 1 (not an image)" in result.stderr


@pytest.mark.realdata
def test_viewer_pictures_give_the_vectors_of_their_twins_with_the_real_weights(tmp_path, cli, monkeypatch):
    """With the ImageNet weights: every odd file's vector is its twin's (cosine >= 0.9999 for the same pixels,
    >= 0.997 across a colour conversion or the HEIC codec)."""

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
