"""Discovery and decoding: which files count, how odd images are converted, why bad ones are skipped."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from embedflow.data import BadImage, discover_inputs, discover_labelled, load_image
from embedflow.errors import DatasetError, UsageError

from ..conftest import make_image


def test_discovery_rules(tmp_path):
    root = tmp_path / "d"
    for name in ["a.jpg", "b.JPG", "c.jpeg", "d.PNG", "e.bmp", "f.gif", "g.webp", "nested/deeper/h.jpg"]:
        make_image(root / "cats" / name, (10, 10, 10), 1, fmt="PNG" if name.lower().endswith("png") else None)
    make_image(root / "dogs" / "x.jpg", (200, 0, 0), 2)
    (root / "cats" / "notes.txt").write_text("not an image")
    (root / "cats" / ".hidden.jpg").write_bytes(b"x")
    (root / ".trash").mkdir()
    make_image(root / ".trash" / "y.jpg", (0, 0, 0), 3)
    (root / "empty_class").mkdir()
    make_image(root / "loose.jpg", (0, 0, 0), 4)

    images, classes, notes = discover_labelled(root)
    assert classes == ["cats", "dogs"]
    assert [r.key for r in images if r.label == "cats"] == [
        "cats/a.jpg", "cats/b.JPG", "cats/c.jpeg", "cats/d.PNG", "cats/e.bmp", "cats/f.gif", "cats/g.webp",
        "cats/nested/deeper/h.jpg"]
    assert any("empty_class" in n for n in notes)
    assert any("directly in" in n for n in notes)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DatasetError, match="folder not found"):
        discover_labelled(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images found"):
        discover_labelled(tmp_path / "empty")
    with pytest.raises(UsageError, match="no such file"):
        discover_inputs([tmp_path / "nope.jpg"])


def test_symlink_loop_does_not_hang(tmp_path):
    root = tmp_path / "d"
    make_image(root / "a" / "1.jpg", (0, 0, 0), 1)
    make_image(root / "b" / "2.jpg", (0, 0, 0), 2)
    (root / "a" / "loop").symlink_to(root / "a")
    images, classes, _ = discover_labelled(root)
    assert [r.key for r in images] == ["a/1.jpg", "b/2.jpg"]


def reference_rgb(rgb: np.ndarray, mode: str) -> np.ndarray:
    """What a file of `mode` made from these RGB pixels shows, as RGB, worked out without decoding a file:
    CMYK is the picture itself, L and LA its luma in every channel, P and 1 PIL's own palette / dithered
    bitmap of it; then resized as load_image documents (bilinear, no crop)."""
    if mode == "CMYK":
        shown = rgb
    elif mode in ("L", "LA"):
        rgb = rgb.astype(np.int64)
        luma = (rgb[..., 0] * 299 + rgb[..., 1] * 587 + rgb[..., 2] * 114 + 500) // 1000  # ITU-R 601-2
        shown = np.repeat(luma[..., None], 3, axis=2).astype(np.uint8)
    elif mode == "1":
        bits = np.asarray(Image.fromarray(rgb).convert("1"), dtype=bool)
        shown = np.repeat(np.where(bits, 255, 0)[..., None], 3, axis=2).astype(np.uint8)
    else:  # P, RGBA (opaque)
        shown = np.asarray(Image.fromarray(rgb).convert(mode).convert("RGB"))
    return np.asarray(Image.fromarray(shown).resize((32, 32), Image.BILINEAR, reducing_gap=None))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA", "1"])
def test_colour_modes_become_the_rgb_pixels_they_show(tmp_path, mode):
    """Each mode decodes to the pixels it stands for (lossless PNGs exactly, JPEGs up to compression noise),
    so an inverted CMYK, a dropped channel or an unconverted bitmap fails."""
    fmt = "JPEG" if mode in ("L", "CMYK") else "PNG"
    path = make_image(tmp_path / f"x.{fmt.lower()}", (120, 30, 200), 1, mode=mode, fmt=fmt)
    rgb = np.asarray(Image.open(make_image(tmp_path / "twin.png", (120, 30, 200), 1)).convert("RGB"))
    arr = load_image(path, 32)
    assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8
    diff = np.abs(arr.astype(int) - reference_rgb(rgb, mode).astype(int))
    if fmt == "PNG":
        assert diff.max() <= 1, f"{mode}: differs by up to {diff.max()} levels"
    else:
        assert diff.mean() < 4 and diff.max() < 48, f"{mode}: mean {diff.mean():.1f}, max {diff.max()} levels"
    if mode in ("L", "LA"):
        assert (arr == arr[..., :1]).all()  # grey stays grey


def test_transparent_pixels_become_white(tmp_path):
    img = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    img.save(tmp_path / "t.png")
    assert load_image(tmp_path / "t.png", 8).min() == 255


def test_sixteen_bit_png_keeps_its_range(tmp_path):
    arr16 = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    Image.fromarray(arr16).save(tmp_path / "deep.png")
    out = load_image(tmp_path / "deep.png", 64)
    assert out.min() <= 2 and out.max() >= 253  # scaled to 8 bits, not clipped to white


def test_exif_orientation_is_honoured(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white in a landscape picture
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    out = load_image(tmp_path / "r.jpg", 40)
    # displayed portrait: the white half is now on top
    assert out[:15].mean() > 200 and out[-15:].mean() < 50


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    out = load_image(tmp_path / "a.gif", 16)
    assert out[..., 0].mean() > 200 and out[..., 2].mean() < 50


def test_gigantic_jpeg_is_decoded_at_reduced_scale(tmp_path):
    Image.new("RGB", (6000, 4000), (10, 200, 30)).save(tmp_path / "big.jpg", quality=50)
    out = load_image(tmp_path / "big.jpg", 96)
    assert out.shape == (96, 96, 3) and abs(int(out[..., 1].mean()) - 200) < 10


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file"),
    (b"this is plain text, not a picture", "not an image"),
    ("corrupt", "corrupt"),
    ("truncated", "truncated"),
])
def test_bad_files_raise_with_reason(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    if content == "corrupt":
        good = make_image(tmp_path / "g.jpg", (1, 2, 3), 1, size=(200, 200)).read_bytes()
        path.write_bytes(good[:200] + b"\x00" * 500 + b"\xff\xd9")
    elif content == "truncated":
        good = make_image(tmp_path / "g.png", (1, 2, 3), 1, size=(200, 200), fmt="PNG").read_bytes()
        path = tmp_path / "bad.png"
        path.write_bytes(good[: len(good) // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(BadImage, match=reason):
        load_image(path, 32)


def test_a_non_utf8_name_never_takes_the_key_of_a_real_file(tmp_path):
    from embedflow.data import discover_labelled

    folder = tmp_path / "data" / "apples"
    make_image(folder / "a.jpg", (200, 30, 30), 1)
    make_image(folder / "caf\\xe9.jpg", (200, 30, 30), 2)  # a real name with a backslash in it
    raw = os.fsencode(folder) + b"/caf\xe9.jpg"  # Latin-1 bytes: escapes to the same printable key
    with open(raw, "wb") as f:
        f.write((folder / "a.jpg").read_bytes())
    images, classes, notes = discover_labelled(tmp_path / "data")
    keys = [r.key for r in images]
    assert keys == ["apples/a.jpg", "apples/caf\\xe9.jpg"] and len(set(keys)) == len(keys)
    assert os.fsencode(images[1].path) == os.fsencode(folder / "caf\\xe9.jpg")  # the real name kept its key
    assert len(notes) == 1 and "not valid UTF-8" in notes[0] and "rename it" in notes[0]
