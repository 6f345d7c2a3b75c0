"""The libjpeg-turbo fast path (simplejpeg) decodes plain RGB and grey JPEGs to exactly the pixels of PIL's
path, at the same DCT scale; everything it cannot do faithfully falls back to PIL. The decode-fidelity
tests (test_data_decode_fidelity.py) run through it unchanged."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from embedflow.data import BadImage, decode_bytes
from embedflow.data import decode as decode_mod
from tests.conftest import FLOWERS
from tests.data.test_data_decode_fidelity import adobe_rgb_like_profile


def _jpeg(arr: np.ndarray, mode: str = "RGB", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], -1)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def _pil_only(monkeypatch):
    monkeypatch.setattr(decode_mod, "_turbo_jpeg", lambda *args: None)


@pytest.fixture
def turbo_calls(monkeypatch):
    """Counts the JPEGs the fast path decoded (returned pixels for), to show which path ran."""
    calls = []
    real = decode_mod._turbo_jpeg

    def counting(*args):
        out = real(*args)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(decode_mod, "_turbo_jpeg", counting)
    return calls


@pytest.mark.parametrize("h, w, size, progressive, mode", [
    (48, 64, 32, False, "RGB"),  # no DCT scaling (smaller than 2x the target)
    (301, 457, 64, False, "RGB"),  # scale 1/2, odd sides (ceil division)
    (600, 1001, 64, True, "RGB"),  # scale 1/4, progressive
    (1200, 1300, 64, False, "RGB"),  # scale 1/8
    (200, 150, 48, False, "L"),  # greyscale JPEG
])
def test_the_fast_path_gives_the_pixels_of_pils_path(h, w, size, progressive, mode, turbo_calls, monkeypatch):
    data = _jpeg(_photo(h, w), mode, progressive=progressive)
    fast = decode_bytes(data, size)
    assert turbo_calls == [True]
    _pil_only(monkeypatch)
    np.testing.assert_array_equal(fast, decode_bytes(data, size))


def test_exif_orientation_and_an_icc_profile_are_applied_after_the_fast_decode(turbo_calls, monkeypatch):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    xyz = adobe_rgb_like_profile()  # wider than sRGB: a real conversion
    arr = _photo(120, 80)
    for kw in ({"exif": exif.tobytes()}, {"icc_profile": xyz}, {"exif": exif.tobytes(), "icc_profile": xyz}):
        data = _jpeg(arr, **kw)
        fast = decode_bytes(data, 48)
        with monkeypatch.context() as m:
            _pil_only(m)
            np.testing.assert_array_equal(fast, decode_bytes(data, 48))
    assert turbo_calls == [True, True, True]
    upright = decode_bytes(_jpeg(arr), 48)
    assert not np.array_equal(decode_bytes(_jpeg(arr, exif=exif.tobytes()), 48), upright)  # rotated
    assert not np.array_equal(decode_bytes(_jpeg(arr, icc_profile=xyz), 48), upright)  # converted


def test_cmyk_and_broken_jpegs_go_through_pil_with_its_reasons(turbo_calls):
    arr = _photo(64, 64)
    cmyk = _jpeg(arr, "CMYK")
    assert decode_bytes(cmyk, 32).shape == (32, 32, 3)
    full = _jpeg(_photo(300, 300), progressive=True)
    with pytest.raises(BadImage, match="truncated"):
        decode_bytes(full[:len(full) // 2], 32)
    assert True not in turbo_calls  # neither was decoded by the fast path


def test_colour_transforms_are_built_once_per_profile():
    """An ICC profile's transform to sRGB costs 10-40 ms to build: it is cached, and gives PIL's pixels."""
    decode_mod._srgb_transform.cache_clear()
    xyz = adobe_rgb_like_profile()
    img = Image.fromarray(_photo(16, 16))
    for _ in range(3):
        out = decode_mod._to_srgb(img, xyz, notes=[])
    assert decode_mod._srgb_transform.cache_info().misses == 1
    want = ImageCms.profileToProfile(img, ImageCms.ImageCmsProfile(io.BytesIO(xyz)), ImageCms.createProfile("sRGB"),
                                     outputMode="RGB")
    np.testing.assert_array_equal(np.asarray(out), np.asarray(want))


@pytest.mark.realdata
@pytest.mark.skipif(not FLOWERS.is_dir(), reason="needs flowers-dev")
def test_real_photos_decode_to_pils_pixels(monkeypatch):
    """Every 25th flowers-dev photo (about 58; a sixth carry ICC profiles) decodes to PIL's pixels."""
    files = sorted(FLOWERS.rglob("*.jpg"))[::25]
    datas = [f.read_bytes() for f in files]
    fast = np.stack([decode_bytes(d, 224) for d in datas])
    _pil_only(monkeypatch)
    slow = np.stack([decode_bytes(d, 224) for d in datas])
    assert np.abs(fast.astype(int) - slow.astype(int)).mean() <= 0.01
