"""A generated corpus of bad and odd input files, each with the outcome `embedflow embed` must give it.

build_corpus(root) writes the files into a class-per-subfolder tree (mixed with good images) and returns
the cases. A case is either
  * embedded: the file is in the cache under its key; with a `twin`, a plain RGB file holding the pixels
    the decoder must produce, whose vector must equal the case's vector (same pixels in, same vector out);
  * skipped: the file is in the cache's failed table with a reason matching `reason`;
  * absent: the file is neither (ignored by discovery, e.g. a folder that is a symlink loop).
Some cases need the run itself to do something (delete a file mid-run, deny a read): see `hooks`.
"""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .conftest import CLASS_COLOURS, make_image


@dataclass
class Case:
    key: str  # path relative to the root, as the cache names it
    expect: str  # "embedded" | "skipped" | "absent"
    reason: str = ""  # regex the skip reason must match
    twin: str | None = None  # key of a plain file whose vector must equal this one's
    note: str = ""


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit PNG declaring width x height pixels, all zero: about 100 KB for 30000x30000."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def blocks(h: int, w: int, colours, seed: int = 0) -> np.ndarray:
    """An RGB picture of large flat blocks (so JPEG and resizing barely blur it), 16-pixel aligned."""
    rng = np.random.default_rng(seed)
    arr = np.zeros((h, w, 3), np.uint8)
    for y in range(0, h, 32):
        for x in range(0, w, 32):
            arr[y:y + 32, x:x + 32] = colours[int(rng.integers(len(colours)))]
    return arr


def _save(path: Path, img: Image.Image, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)


def build_corpus(root: Path, unreadable: bool = True) -> list[Case]:
    """The corpus under root, with its expected outcomes. unreadable=False leaves out the chmod-000 file:
    root reads it anyway (tests/cli/test_cli_bad_inputs.py checks it with the capability dropped)."""
    cases: list[Case] = []
    add = cases.append
    a, l, p = root / "apples", root / "limes", root / "plums"
    for ci, c in enumerate(("apples", "limes", "plums")):  # good images around the bad ones
        for i in range(5):
            make_image(root / c / f"good_{i}.jpg", CLASS_COLOURS[c], 7000 + ci * 10 + i)
            add(Case(f"{c}/good_{i}.jpg", "embedded"))
    good_jpeg = make_image(root / "limes" / "source.jpg", CLASS_COLOURS["limes"], 99, size=(320, 240)).read_bytes()
    add(Case("limes/source.jpg", "embedded"))

    # --- files that cannot be images: skipped with a reason -----------------------------------
    n = len(good_jpeg)
    (a / "corrupt.jpg").write_bytes(good_jpeg[: n // 3] + bytes(np.random.default_rng(0).integers(0, 256, n // 3, np.uint8))
                                    + good_jpeg[2 * n // 3:])
    add(Case("apples/corrupt.jpg", "skipped", r"^corrupt image"))
    (a / "truncated.jpg").write_bytes(good_jpeg[: int(n * 0.6)])
    add(Case("apples/truncated.jpg", "skipped", r"^truncated image"))
    (a / "zero.jpg").write_bytes(b"")
    add(Case("apples/zero.jpg", "skipped", r"^empty file \(0 bytes\)$"))
    (a / "notes.jpg").write_text("shopping list: apples, limes, plums\n")
    add(Case("apples/notes.jpg", "skipped", r"^not an image file"))
    (p / "bomb.png").write_bytes(png_bomb(30000, 30000))
    add(Case("plums/bomb.png", "skipped", r"30000x30000 pixels: refused as a possible decompression bomb"))
    (l / "loop1.jpg").symlink_to("loop2.jpg")
    (l / "loop2.jpg").symlink_to("loop1.jpg")
    add(Case("limes/loop1.jpg", "skipped", r"cannot read: Too many levels of symbolic links"))
    add(Case("limes/loop2.jpg", "skipped", r"cannot read: Too many levels of symbolic links"))
    (l / "dangling.jpg").symlink_to("nowhere.jpg")
    add(Case("limes/dangling.jpg", "skipped", r"^broken symbolic link \(to nowhere.jpg\)$"))
    os.mkfifo(l / "pipe.jpg")  # would block a naive reader forever
    add(Case("limes/pipe.jpg", "skipped", r"^not a regular file$"))
    if unreadable:
        make_image(p / "unreadable.jpg", CLASS_COLOURS["plums"], 11)
        add(Case("plums/unreadable.jpg", "skipped", r"^permission denied$", note="chmod 000 (see hooks)"))
    make_image(p / "vanishes_before_hashing.jpg", CLASS_COLOURS["plums"], 12)
    add(Case("plums/vanishes_before_hashing.jpg", "skipped", r"^file vanished while the run was going$"))
    make_image(p / "vanishes_before_decoding.jpg", CLASS_COLOURS["plums"], 13)
    add(Case("plums/vanishes_before_decoding.jpg", "skipped", r"^file vanished while the run was going$"))

    # --- odd but valid images: embedded, with the pixels the decoder must produce ------------
    colours = [(250, 30, 30), (30, 30, 250), (30, 200, 30), (240, 240, 240)]
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = blocks(64, 64, colours, 1)
    rgba[..., 3] = 255
    rgba[:32, :, 3] = 0  # fully transparent top half: white
    rgba[32:, :32, 3] = 128  # half transparent quarter: halfway to white
    _save(a / "alpha.png", Image.fromarray(rgba, "RGBA"))
    over_white = Image.alpha_composite(Image.new("RGBA", (64, 64), (255, 255, 255, 255)), Image.fromarray(rgba, "RGBA"))
    _save(a / "alpha_twin.png", over_white.convert("RGB"))
    add(Case("apples/alpha.png", "embedded", twin="apples/alpha_twin.png", note="RGBA over white"))
    add(Case("apples/alpha_twin.png", "embedded"))

    levels8 = np.repeat(np.linspace(0, 255, 64).astype(np.uint16)[None, :], 48, axis=0)
    _save(a / "deep16.png", Image.fromarray((levels8 * 257).astype(np.uint16)))  # 16-bit grayscale
    _save(a / "deep16_twin.png", Image.fromarray(levels8.astype(np.uint8), "L").convert("RGB"))
    add(Case("apples/deep16.png", "embedded", twin="apples/deep16_twin.png", note="16-bit PNG scaled to 8 bits"))
    add(Case("apples/deep16_twin.png", "embedded"))

    gray = blocks(48, 64, [(0, 0, 0), (90, 90, 90), (200, 200, 200)], 2)[..., 0]
    _save(l / "gray.png", Image.fromarray(gray, "L"))
    _save(l / "gray_twin.png", Image.fromarray(np.repeat(gray[..., None], 3, axis=2), "RGB"))
    add(Case("limes/gray.png", "embedded", twin="limes/gray_twin.png", note="grayscale"))
    add(Case("limes/gray_twin.png", "embedded"))

    pal_rgb = blocks(48, 64, colours, 3)
    _save(l / "palette.gif", Image.fromarray(pal_rgb).quantize(colors=4, method=Image.Quantize.MEDIANCUT))
    _save(l / "palette_twin.png", Image.fromarray(pal_rgb))
    add(Case("limes/palette.gif", "embedded", twin="limes/palette_twin.png", note="palette GIF"))
    add(Case("limes/palette_twin.png", "embedded"))

    first, second = blocks(48, 64, colours, 4), blocks(48, 64, colours, 5)
    frames = [Image.fromarray(f).quantize(colors=4, method=Image.Quantize.MEDIANCUT) for f in (first, second)]
    frames[0].save(l / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    _save(l / "animated_twin.png", Image.fromarray(first))
    add(Case("limes/animated.gif", "embedded", twin="limes/animated_twin.png", note="animated GIF: first frame"))
    add(Case("limes/animated_twin.png", "embedded"))

    _save(p / "one_pixel.png", Image.new("RGB", (1, 1), (90, 50, 160)))
    _save(p / "one_pixel_twin.png", Image.new("RGB", (7, 5), (90, 50, 160)))
    add(Case("plums/one_pixel.png", "embedded", twin="plums/one_pixel_twin.png", note="1x1"))
    add(Case("plums/one_pixel_twin.png", "embedded"))

    landscape = blocks(64, 128, colours, 6)
    img = Image.fromarray(landscape)
    exif = img.getexif()
    exif[0x0112] = 6  # stored landscape, displayed rotated 90 degrees clockwise (portrait)
    _save(p / "exif_rotated.jpg", img, exif=exif.tobytes(), quality=100, subsampling=0)
    _save(p / "exif_rotated_twin.jpg", Image.fromarray(np.rot90(landscape, k=-1).copy()), quality=100, subsampling=0)
    _save(p / "exif_ignored.jpg", img, quality=100, subsampling=0)  # what ignoring the tag would give
    add(Case("plums/exif_rotated.jpg", "embedded", twin="plums/exif_rotated_twin.jpg", note="EXIF orientation 6"))
    add(Case("plums/exif_rotated_twin.jpg", "embedded"))
    add(Case("plums/exif_ignored.jpg", "embedded"))

    _save(p / "cmyk.jpg", Image.fromarray(blocks(48, 64, colours, 7)).convert("CMYK"), quality=95)
    add(Case("plums/cmyk.jpg", "embedded", note="CMYK JPEG"))
    _save(p / "big.jpg", Image.fromarray(blocks(2400, 3200, colours, 8)), quality=80)
    add(Case("plums/big.jpg", "embedded", note="3200x2400 JPEG, decoded at reduced scale"))
    shutil.copy(a / "good_0.jpg", a / "really_a_jpeg.png")
    add(Case("apples/really_a_jpeg.png", "embedded", twin="apples/good_0.jpg", note="wrong extension"))

    # --- names and folders -------------------------------------------------------------------
    make_image(a / "2023" / "summer" / "deep.jpg", CLASS_COLOURS["apples"], 21)
    add(Case("apples/2023/summer/deep.jpg", "embedded", note="nested subfolders belong to the class"))
    raw = os.fsencode(a) + b"/caf\xe9.jpg"  # Latin-1 name: not valid UTF-8
    with open(raw, "wb") as f:
        f.write((a / "good_1.jpg").read_bytes())
    add(Case("apples/caf\\xe9.jpg", "embedded", twin="apples/good_1.jpg", note="non-UTF-8 file name"))
    (a / "2023" / "again").symlink_to(a)  # a folder symlink loop: walked once, never forever
    (root / "empty_class").mkdir()
    (root / "empty_class" / "readme.txt").write_text("no pictures here")
    (root / "apples" / ".hidden.jpg").write_bytes(b"\xff\xd8 not looked at")
    add(Case("apples/.hidden.jpg", "absent"))
    return cases


def hooks(root: Path, monkeypatch) -> None:
    """What the run must meet on the way: files deleted mid-run, a read denied."""
    import embedflow.embedding.incremental as embed_mod
    import embedflow.embedding.mapper as mapper_mod

    gone_early = root / "plums" / "vanishes_before_hashing.jpg"
    gone_late = root / "plums" / "vanishes_before_decoding.jpg"
    real_hash, real_read = embed_mod.hash_file, mapper_mod.read_image

    def hash_and_delete(path):  # deleted after discovery, before it is hashed
        gone_early.unlink(missing_ok=True)
        return real_hash(path)

    def read_and_delete(path, *args, **kwargs):  # hashed fine, then deleted before it is read for decoding
        gone_late.unlink(missing_ok=True)
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(embed_mod, "hash_file", hash_and_delete)
    monkeypatch.setattr(mapper_mod, "read_image", read_and_delete)
    unreadable = root / "plums" / "unreadable.jpg"
    if unreadable.exists():
        unreadable.chmod(0)  # denied to anyone without CAP_DAC_OVERRIDE
