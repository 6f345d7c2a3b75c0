"""Decoding gives the picture a viewer shows. Each test makes an odd file and, beside it, a lossless picture
of what a viewer displays for it, and compares the decoded pixels: equal, or within a stated tolerance
where a colour conversion (or JPEG) is on the way. Every file is generated here."""

from __future__ import annotations

import hashlib
import io
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms, features

from embedflow.data import BadImage, decode_bytes, load_image, read_image, sniff_format
from embedflow.data import decode as decode_mod

S = 32  # decoded at the native size: no resizing, so pixels compare one to one


def picture(seed: int = 0, size: int = S) -> np.ndarray:
    """An RGB picture of 8x8 blocks of saturated and mid colours (JPEG keeps flat aligned blocks nearly intact)."""
    colours = np.array([(220, 30, 30), (30, 160, 40), (40, 60, 210), (250, 220, 40), (128, 128, 128),
                        (20, 20, 20), (240, 240, 240), (190, 90, 160)], np.uint8)
    rng = np.random.default_rng(seed)
    idx = rng.integers(len(colours), size=(size // 8, size // 8))
    return np.kron(colours[idx], np.ones((8, 8, 1), np.uint8)).astype(np.uint8)


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


# --- transparency: alpha, palette and colour keys, all composited over white ---------------------------------

def test_rgb_colour_key_is_transparent_white():
    arr = picture(1)
    key = (30, 160, 40)
    data = encode(Image.fromarray(arr), transparency=key)  # a tRNS chunk, as optipng/oxipng write
    want = arr.copy()
    want[(arr == key).all(axis=2)] = 255
    assert (arr == key).all(axis=2).any()
    assert np.array_equal(decode_bytes(data, S), want)


def test_grey_colour_key_is_transparent_white():
    grey = picture(2)[..., 0]
    data = encode(Image.fromarray(grey, "L"), transparency=30)
    want = np.repeat(np.where(grey == 30, 255, grey)[..., None], 3, axis=2).astype(np.uint8)
    assert (grey == 30).any()
    assert np.array_equal(decode_bytes(data, S), want)


def test_sixteen_bit_grey_colour_key_is_transparent_white():
    grey = picture(3)[..., 0]
    data = encode(Image.fromarray(grey.astype(np.uint16) * 257), transparency=30 * 257)
    want = np.repeat(np.where(grey == 30, 255, grey)[..., None], 3, axis=2).astype(np.uint8)
    assert np.array_equal(decode_bytes(data, S), want)


def test_sixteen_bit_rgb_colour_key_is_transparent_white():
    """Pillow cannot write 16-bit RGB: the PNG is written chunk by chunk."""
    arr = picture(12)
    key = (30, 160, 40)
    key16 = tuple(v * 256 + 100 for v in key)  # its high bytes are the 8-bit key, its low bytes are not
    keyed = (arr == key).all(axis=2)
    deep = arr.astype(np.uint16) * 257
    deep[keyed] = key16
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in deep)
    data = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", S, S, 16, 2, 0, 0, 0))
            + png_chunk(b"tRNS", struct.pack(">HHH", *key16))
            + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))
    want = arr.copy()
    want[keyed] = 255
    assert np.array_equal(decode_bytes(data, S), want)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@pytest.mark.parametrize("kind", ["RGBA", "LA", "P"])
def test_alpha_and_palette_transparency_are_composited_the_same_way(kind):
    rgba = np.dstack([picture(4), np.tile(np.linspace(0, 255, S).astype(np.uint8), (S, 1))])
    img = Image.fromarray(rgba, "RGBA")
    if kind == "LA":
        img = img.convert("LA")
    elif kind == "P":
        img = Image.fromarray(picture(4)).quantize(8)
        img.info["transparency"] = bytes(range(0, 256, 32))  # per-index alpha
    data = encode(img, transparency=img.info["transparency"]) if kind == "P" else encode(img)
    shown = Image.open(io.BytesIO(data)).convert("RGBA")
    want = Image.alpha_composite(Image.new("RGBA", shown.size, (255, 255, 255, 255)), shown).convert("RGB")
    assert np.array_equal(decode_bytes(data, S), np.asarray(want))


# --- ICC profiles: converted to sRGB --------------------------------------------------------------------------

def adobe_rgb_like_profile() -> bytes:
    """An ICC v2 matrix/TRC display profile with Adobe RGB (1998) primaries (D50-adapted) and gamma 563/256."""
    return matrix_trc_profile(b"Adobe RGB (1998)-like test profile",
                              ((0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609), (0.1492, 0.0632, 0.7446)), 563)


SRGB_D50 = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))


def matrix_trc_profile(name: bytes, colorants, gamma_u8f8: int) -> bytes:
    """An ICC v2 matrix/TRC display profile: D50-adapted colorants (rXYZ, gXYZ, bXYZ), one gamma curve (u8.8)."""

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(x, y, z) -> bytes:
        return b"XYZ " + bytes(4) + s15(x) + s15(y) + s15(z)

    text = name + b"\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(8) + bytes(3) + bytes(67)
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, gamma_u8f8) + bytes(2)
    r, g, b = colorants
    tags = [(b"desc", desc), (b"wtpt", xyz(0.9642, 1.0, 0.8249)), (b"rXYZ", xyz(*r)),
            (b"gXYZ", xyz(*g)), (b"bXYZ", xyz(*b)),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve), (b"cprt", b"text" + bytes(4) + b"none\0\0\0\0")]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        data += bytes(-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (struct.pack(">I", size) + bytes(4) + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ " + bytes(12) + b"acsp"
              + bytes(24) + bytes(4) + s15(0.9642) + s15(1.0) + s15(0.8249) + bytes(4) + bytes(16) + bytes(28))
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def in_adobe_rgb(arr: np.ndarray) -> tuple[Image.Image, bytes]:
    """The sRGB picture arr, its pixels converted to the Adobe-RGB-like space, and that profile."""
    icc = adobe_rgb_like_profile()
    adobe = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    return ImageCms.profileToProfile(Image.fromarray(arr), ImageCms.createProfile("sRGB"), adobe), icc


def test_adobe_rgb_png_is_converted_to_srgb():
    want = picture(5)
    img, icc = in_adobe_rgb(want)
    raw = np.asarray(img).astype(int)
    assert np.abs(raw - want).max() > 20  # without the conversion the colours are visibly off
    got = decode_bytes(encode(img, icc_profile=icc), S).astype(int)
    assert np.abs(got - want).max() <= 3 and np.abs(got - want).mean() <= 1.0


def test_jpeg_with_an_embedded_profile_is_converted_to_srgb():
    want = picture(6)
    img, icc = in_adobe_rgb(want)
    got = decode_bytes(encode(img, "JPEG", icc_profile=icc, quality=100, subsampling=0), S).astype(int)
    assert np.abs(got - want).mean() <= 2.0 and np.abs(got - want).max() <= 12


def test_rgba_with_a_profile_is_converted_then_composited():
    arr = picture(7)
    img, icc = in_adobe_rgb(arr)
    alpha = np.zeros((S, S), np.uint8)
    alpha[:, S // 2:] = 255
    rgba = Image.fromarray(np.dstack([np.asarray(img), alpha]), "RGBA")
    got = decode_bytes(encode(rgba, icc_profile=icc), S).astype(int)
    assert (got[:, : S // 2] == 255).all()
    assert np.abs(got[:, S // 2:] - arr[:, S // 2:]).max() <= 3


def test_an_unreadable_profile_falls_back_with_a_note():
    arr = picture(8)
    notes: list[str] = []
    got = decode_bytes(encode(Image.fromarray(arr), icc_profile=b"not a colour profile at all"), S, notes=notes)
    assert np.array_equal(got, arr)
    assert len(notes) == 1 and notes[0].startswith("colour profile unreadable")


def test_an_srgb_profile_changes_nothing():
    arr = picture(9)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    assert np.array_equal(decode_bytes(encode(Image.fromarray(arr), icc_profile=srgb), S), arr)


@pytest.mark.parametrize("name", [b"sRGB-elle-V2-g10.icc", b"GIMP built-in Linear sRGB"])
def test_a_linear_profile_named_srgb_is_converted(name):
    """Issue 16 (tester): a profile was skipped when its description contained "sRGB", so linear-gamma sRGB
    pictures (GIMP, Elle Stone's profiles) were read as if gamma-encoded (cosine 0.92). Decided by content."""
    want = picture(22)
    icc = matrix_trc_profile(name, SRGB_D50, 256)  # gamma 1.0
    linear = ImageCms.profileToProfile(Image.fromarray(want), ImageCms.createProfile("sRGB"),
                                       ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    assert name.decode() in ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    assert np.abs(np.asarray(linear).astype(int) - want).max() > 40  # unconverted, the picture is far off
    got = decode_bytes(encode(linear, icc_profile=icc), S).astype(int)
    assert np.abs(got - want).mean() <= 2.0  # linear 8-bit loses shadows: a few levels in the darkest blocks


def test_an_srgb_profile_under_another_name_changes_nothing():
    """By content both ways: a gamma-encoded sRGB-like profile (sRGB colorants, the sRGB curve) whose name says
    nothing of sRGB is taken as sRGB, its pixels kept exactly."""
    arr = picture(23)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    data = srgb.tobytes()
    data = data.replace(b"sRGB", b"abcd").replace("sRGB".encode("utf-16-be"), "abcd".encode("utf-16-be"))  # the description no longer names sRGB; the content is unchanged
    renamed = ImageCms.ImageCmsProfile(io.BytesIO(data))
    assert "srgb" not in (ImageCms.getProfileDescription(renamed) or "").lower()
    assert np.array_equal(decode_bytes(encode(Image.fromarray(arr), icc_profile=data), S), arr)


# --- EXIF orientation, as browsers apply it -------------------------------------------------------------------

UNDO = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_270}  # the inverse of what orientation N asks a viewer to do


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_displayed_upright(orientation):
    want = picture(10 + orientation)
    upright = Image.fromarray(want)
    stored = upright.transpose(UNDO[orientation]) if orientation in UNDO else upright
    exif = stored.getexif()
    exif[0x0112] = orientation
    assert np.array_equal(decode_bytes(encode(stored, exif=exif.tobytes()), S), want)  # PNG eXIf: lossless
    got = decode_bytes(encode(stored, "JPEG", exif=exif.tobytes(), quality=100, subsampling=0), S).astype(int)
    assert np.abs(got - want).mean() <= 2.0


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt, kw", [("TIFF", {}), ("TIFF", {"compression": "tiff_lzw"}), ("WEBP", {"lossless": True})],
                         ids=["tiff", "tiff-lzw", "webp"])
def test_orientation_is_applied_exactly_once_in_every_format(orientation, fmt, kw):
    """Issue 16 (tester): Pillow already turns a TIFF upright when it loads it (and drops the tag); embedflow
    turned it again (cosine 0.708). Whoever applies the orientation, the picture is shown upright once. A
    non-square picture, so a rotation applied twice cannot land on the same pixels."""
    want = np.concatenate([picture(30 + orientation), picture(40 + orientation)], axis=1)  # 32 x 64
    upright = Image.fromarray(want)
    stored = upright.transpose(UNDO[orientation]) if orientation in UNDO else upright
    exif = stored.getexif()
    exif[0x0112] = orientation
    data = encode(stored, fmt, exif=exif.tobytes(), **kw)
    expected = np.asarray(upright.resize((S, S), Image.BILINEAR, reducing_gap=None))
    assert np.array_equal(decode_bytes(data, S), expected)
    # the Python API: the opened file, before and after the user's own ImageOps.exif_transpose
    from PIL import ImageOps

    from embedflow.data.pixels import to_pixels

    assert np.array_equal(to_pixels([Image.open(io.BytesIO(data))], S)[0], expected)
    assert np.array_equal(to_pixels([ImageOps.exif_transpose(Image.open(io.BytesIO(data)))], S)[0], expected)


# --- MPO: a phone JPEG with an MPF segment is a JPEG ----------------------------------------------------------

def mpo_bytes(first: Image.Image, second: Image.Image) -> bytes:
    try:
        return encode(first, "MPO", save_all=True, append_images=[second], quality=95)
    except KeyError:
        pytest.skip("this Pillow cannot write MPO")


def test_mpo_decodes_like_the_plain_jpeg_of_its_first_image():
    first, second = Image.fromarray(picture(20, 64)), Image.fromarray(picture(21, 64))
    data = mpo_bytes(first, second)
    assert Image.open(io.BytesIO(data)).format == "MPO"
    plain = encode(first, "JPEG", quality=95)
    assert np.array_equal(decode_bytes(data, 64), decode_bytes(plain, 64))


def test_large_mpo_gets_reduced_scale_decoding_not_a_bomb_refusal(monkeypatch):
    """As a 12000x9000 phone MPO over the 100 MP limit: here the limit is lowered to keep the test small."""
    monkeypatch.setattr(decode_mod, "MAX_PIXELS", 1_000_000)
    big = Image.fromarray(np.kron(picture(22, 16), np.ones((100, 100, 1), np.uint8)))  # 1600x1600
    data = mpo_bytes(big, Image.new("RGB", (64, 64)))
    plain = encode(big, "JPEG", quality=95)
    got = decode_bytes(data, 32)
    assert np.array_equal(got, decode_bytes(plain, 32))
    png = encode(big)  # the same picture as PNG is still refused over the (lowered) limit
    with pytest.raises(BadImage, match="1600x1600 pixels: refused as a possible decompression bomb"):
        decode_bytes(png, 32)


# --- formats by content ----------------------------------------------------------------------------------------

def heic_bytes(img: Image.Image) -> bytes:
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    try:
        return encode(img, "HEIF", quality=95)
    except (KeyError, OSError, ValueError) as e:
        pytest.skip(f"cannot encode HEIC here: {e}")


def test_heic_named_jpg_is_decoded(tmp_path):
    want = picture(30, 64)
    data = heic_bytes(Image.fromarray(want))
    assert sniff_format(data[:64]) == "HEIC"
    path = tmp_path / "IMG_0001.jpg"
    path.write_bytes(data)
    got = load_image(path, 64).astype(int)
    assert np.abs(got - want).mean() <= 4.0


def test_heic_without_pillow_heif_is_skipped_naming_the_format(monkeypatch):
    data = heic_bytes(Image.fromarray(picture(31)))
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # as if not installed
    with pytest.raises(BadImage, match=r"^HEIC image: not supported"):
        decode_bytes(data, S)


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF codec")
def test_avif_is_decoded():
    want = picture(32, 64)
    data = encode(Image.fromarray(want), "AVIF", quality=95, subsampling="4:4:4")
    assert sniff_format(data[:64]) == "AVIF"
    assert np.abs(decode_bytes(data, 64).astype(int) - want).mean() <= 4.0


@pytest.mark.parametrize("head,name", [
    (b"\x00\x00\x00\x1cftypheic\x00\x00\x00\x00mif1heic" + bytes(100), "HEIC"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n" + bytes(100), "JPEG XL"),
    (b"\xff\x0a" + bytes(100), "JPEG XL"),
    (b"%PDF-1.7\n" + bytes(100), "PDF"),
    (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00isommp42" + bytes(100), "MP4"),
    (b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00qt  " + bytes(100), "QuickTime"),
])
def test_unsupported_formats_are_named(head, name, monkeypatch):
    monkeypatch.setitem(sys.modules, "pillow_heif", None)
    with pytest.raises(BadImage, match=f"^{name} (image|document|video): not supported"):
        decode_bytes(head, S)


def test_read_image_hashes_the_bytes_it_decodes(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(encode(Image.fromarray(picture(40))))
    digest, pixels = read_image(path, S)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert np.array_equal(pixels, picture(40))
    with pytest.raises(BadImage, match="file vanished"):
        read_image(tmp_path / "gone.png", S)


# --- bounded memory ---------------------------------------------------------------------------------------------

def grey16_png(width: int, height: int) -> bytes:
    """A 16-bit greyscale PNG, each row a left-to-right ramp 0..65535, written row by row (never whole in memory)."""
    chunk = png_chunk

    row = b"\x00" + (np.arange(width, dtype=np.float64) * 65535 / (width - 1)).round().astype(">u2").tobytes()
    z = zlib.compressobj(1)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


MEMORY_PROBE = r"""
import resource, sys
from pathlib import Path
import numpy as np
from embedflow.data import load_image
load_image(Path(sys.argv[2]), 96)  # warm up: imports, PIL plugins
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
arr = load_image(Path(sys.argv[1]), 96)
grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
ramp = np.linspace(0, 255, 96)
print("shape", arr.shape, "ramp_err", int(np.abs(arr[..., 0].astype(float) - ramp[None, :]).max()))
print("grew_kb", grew)
"""


def test_a_9999_square_16_bit_png_decodes_in_bounded_memory(tmp_path):
    """Its decoded pixels are 200 MB; the decoder must not add full-size copies (float64 ones took 2.6 GB)."""
    big, small = tmp_path / "deep.png", tmp_path / "small.png"
    big.write_bytes(grey16_png(9999, 9999))
    small.write_bytes(grey16_png(64, 64))
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(big), str(small)],
                         capture_output=True, text=True, check=True).stdout
    assert "shape (96, 96, 3)" in out
    assert int(out.split("ramp_err")[1].split()[0]) <= 3  # a ramp stays a ramp: scaled, not clipped
    grew_mb = int(out.split("grew_kb")[1]) / 1024
    assert grew_mb < 300, f"decoding grew the process by {grew_mb:.0f} MB"


@pytest.mark.parametrize("kind", ["RGBA", "P", "I;16 keyed"])
def test_large_images_reduced_in_strips_show_the_same_picture(monkeypatch, kind):
    """The strip-by-strip box reduction of large images (forced here on a small one, in many strips) gives the
    picture of reducing what a viewer shows: transparency composited, then averaged."""
    monkeypatch.setattr(decode_mod, "REDUCE_ABOVE_PIXELS", 0)
    monkeypatch.setattr(decode_mod, "_STRIP_PIXELS", 256 * 8)
    rgb = np.kron(picture(50, 64), np.ones((4, 4, 1), np.uint8))  # 256x256
    if kind == "RGBA":
        alpha = np.tile(np.linspace(0, 255, 256).astype(np.uint8), (256, 1))
        img = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
        shown = Image.alpha_composite(Image.new("RGBA", img.size, (255,) * 4), img).convert("RGB")
        data = encode(img)
    elif kind == "P":
        img = Image.fromarray(rgb).quantize(8)
        data = encode(img, transparency=0)
        shown = Image.open(io.BytesIO(data)).convert("RGBA")
        shown = Image.alpha_composite(Image.new("RGBA", shown.size, (255,) * 4), shown).convert("RGB")
    else:
        grey = rgb[..., 0]
        data = encode(Image.fromarray(grey.astype(np.uint16) * 257), transparency=30 * 257)
        shown = Image.fromarray(np.where(grey == 30, 255, grey).astype(np.uint8)).convert("RGB")
    want = np.asarray(shown.reduce(4).resize((32, 32), Image.BILINEAR, reducing_gap=None)).astype(int)
    got = decode_bytes(data, 32).astype(int)  # factor 256 // (2 * 32) = 4: 32 strips of 8 rows
    assert np.abs(got - want).max() <= 2


# --- in-memory PIL images (the Python API): the same steps as the file ----------------------------------------

@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("how", ["copy", "resize", "fromarray"])
def test_an_in_memory_image_with_a_colour_key_decodes_like_its_file(mode, how):
    """Issue 16 (tester): an RGB or L image with info['transparency'] handed to predict raised AttributeError
    ('Image' object has no attribute 'tile'). Its pixels must be the file's: the key composited over white."""
    from embedflow.data.pixels import to_pixels

    arr = picture(21) if mode == "RGB" else picture(21)[..., 0]
    key = (30, 160, 40) if mode == "RGB" else 30
    data = encode(Image.fromarray(arr, mode), transparency=key)
    from_file = decode_bytes(data, S)
    keyed = (arr == key).all(axis=2) if mode == "RGB" else arr == key
    assert keyed.any() and (from_file[keyed] == 255).all()
    opened = Image.open(io.BytesIO(data))
    if how == "copy":
        img = opened.copy()
    elif how == "resize":
        img = opened.resize((S, S))
    else:
        img = Image.fromarray(arr, mode)
        img.info["transparency"] = key
    assert img.info.get("transparency") == key
    assert np.array_equal(to_pixels([img], S)[0], from_file)
    assert not np.array_equal(to_pixels([Image.fromarray(arr, mode)], S)[0], from_file)  # the key matters
