"""What a file is, by its first bytes (magic numbers), for files whose extension does not say it.

Discovery takes a file with an image extension (discover.IMAGE_EXTENSIONS) as an image and lets the decoder
judge its content. Any other file (no extension, `.dat`, `.psd`, `.cr2`, ...) is identified here by its first
bytes: a picture in a format embedflow decodes is embedded; a picture or document in a format it does not
decode is left out with the format named; anything else is not an image.
"""

from __future__ import annotations

import os

HEAD_BYTES = 64

# Formats the decoder reads (through Pillow, or pillow-heif for HEIC/HEIF: decode says so when it is missing).
DECODED = "decoded"
UNSUPPORTED = "unsupported"

_HEIF_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"heim": "HEIC", b"heis": "HEIC", b"hevc": "HEIC",
                b"hevx": "HEIC", b"mif1": "HEIF", b"msf1": "HEIF", b"heif": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}

# Extensions of pictures and documents embedflow does not decode -> the format's name.
_RAW = ("raw", "dng", "cr2", "cr3", "crw", "nef", "nrw", "arw", "srf", "sr2", "orf", "rw2", "raf", "pef", "srw",
        "x3f", "3fr", "erf", "kdc", "mos", "mrw", "iiq")
UNSUPPORTED_EXTENSIONS: dict[str, str] = {
    **{f".{e}": f"camera RAW ({e.upper()})" for e in _RAW},
    ".psd": "Photoshop PSD", ".psb": "Photoshop PSB", ".xcf": "GIMP XCF", ".ai": "Illustrator document",
    ".svg": "SVG drawing", ".svgz": "SVG drawing", ".pdf": "PDF document", ".eps": "EPS document",
    ".jxl": "JPEG XL", ".jp2": "JPEG 2000", ".j2k": "JPEG 2000", ".jpx": "JPEG 2000",
    ".ico": "Windows icon", ".tga": "Targa", ".exr": "OpenEXR", ".hdr": "Radiance HDR", ".pcx": "PCX",
    ".ppm": "Netpbm", ".pgm": "Netpbm", ".pbm": "Netpbm", ".pnm": "Netpbm",
}


def sniff_format(head: bytes) -> str | None:
    """The name of a format Pillow may not know, from a file's first bytes (64 are enough): "HEIC",
    "HEIF", "AVIF" (ISO-BMFF ftyp brands; other brands are "MP4" or "QuickTime" videos, Canon's "crx" is
    "camera RAW (CR3)"), "JPEG XL", "PDF", "SVG"; None for anything else."""
    if head[4:8] == b"ftyp":
        if head[8:12] == b"crx ":
            return "camera RAW (CR3)"
        brands = [head[8:12]] + [head[i:i + 4] for i in range(16, min(len(head), int.from_bytes(head[:4], "big")), 4)]
        names = {_HEIF_BRANDS[b] for b in brands if b in _HEIF_BRANDS}
        for name in ("AVIF", "HEIC", "HEIF"):  # mif1 is generic: a more precise brand wins
            if name in names:
                return name
        return "QuickTime" if head[8:12] == b"qt  " else "MP4"  # isom, mp41, mp42, M4V ...: a video
    if head.startswith(b"\xff\x0a") or head[4:12] == b"JXL \r\n\x87\n":
        return "JPEG XL"
    if head.startswith(b"%PDF"):
        return "PDF"
    if head.lstrip().startswith(b"<svg") or (head.lstrip().startswith(b"<?xml") and b"<svg" in head):
        return "SVG"
    return None


def identify(head: bytes) -> tuple[str, str] | None:
    """(DECODED or UNSUPPORTED, format name) from a file's first bytes (HEAD_BYTES), or None when they are
    not those of a picture (text, archives, videos, empty files...).

    DECODED: JPEG, PNG, GIF, BMP, WebP, TIFF, HEIC/HEIF/AVIF. UNSUPPORTED: Photoshop PSD/PSB, GIMP XCF, camera
    RAW files with a signature of their own (CR2, CR3, ORF, RW2, RAF; DNG, NEF and ARW are TIFF inside and
    are named by their extension only), JPEG XL, JPEG 2000, PDF, EPS, SVG."""
    if head.startswith(b"\xff\xd8\xff"):
        return DECODED, "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return DECODED, "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return DECODED, "GIF"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return DECODED, "WebP"
    if head.startswith(b"II*\x00") and head[8:10] == b"CR":
        return UNSUPPORTED, "camera RAW (CR2)"
    if head[:4] in (b"IIRO", b"IIRS", b"MMOR"):
        return UNSUPPORTED, "camera RAW (ORF)"
    if head.startswith(b"IIU\x00"):
        return UNSUPPORTED, "camera RAW (RW2)"
    if head.startswith(b"FUJIFILMCCD-RAW"):
        return UNSUPPORTED, "camera RAW (RAF)"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return DECODED, "TIFF"
    if head.startswith(b"BM") and len(head) >= 18 and int.from_bytes(head[14:18], "little") in (12, 40, 52, 56,
                                                                                                 64, 108, 124):
        return DECODED, "BMP"
    if head.startswith(b"8BPS"):
        return UNSUPPORTED, "Photoshop PSB" if head[4:6] == b"\x00\x02" else "Photoshop PSD"
    if head.startswith(b"gimp xcf"):
        return UNSUPPORTED, "GIMP XCF"
    if head.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or head.startswith(b"\xff\x4f\xff\x51"):
        return UNSUPPORTED, "JPEG 2000"
    if head.startswith(b"%!PS-Adobe") or head.startswith(b"\xc5\xd0\xd3\xc6"):
        return UNSUPPORTED, "EPS document"
    name = sniff_format(head)
    if name in ("HEIC", "HEIF", "AVIF"):
        return DECODED, name
    if name in ("PDF", "SVG"):
        return UNSUPPORTED, {"PDF": "PDF document", "SVG": "SVG drawing"}[name]
    if name in ("JPEG XL", "camera RAW (CR3)"):
        return UNSUPPORTED, name
    return None


def identify_file(path: str | os.PathLike, ext: str) -> tuple[str, str] | None:
    """What a file whose extension (lower case, with its dot; "" for none) is not an image's holds:
    (DECODED, format) for a picture embedflow decodes, (UNSUPPORTED, format) for a picture or document it
    does not (named by its content, else by its extension: `.dng` is "camera RAW (DNG)" even though it is
    TIFF inside), None for anything else. An unreadable file with an unsupported extension is named by the
    extension; one with another extension is None (never raises)."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError:
        head = b""
    found = identify(head)
    by_ext = UNSUPPORTED_EXTENSIONS.get(ext)
    if by_ext and (found is None or found[1] == "TIFF" and by_ext.startswith("camera RAW")):
        return UNSUPPORTED, by_ext  # a RAW file is TIFF inside: the extension is the better name
    return found
