"""Contact sheets: one row per query, the query image then its neighbours, each captioned."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from .write import write_atomically

CELL = 160  # thumbnail side in pixels
CAPTION = 34  # caption height under each thumbnail
PAD = 6
FONT_SIZE = 12
# TrueType fonts with Latin, Greek and Cyrillic glyphs (Pillow's own default font has ASCII only: `café`
# would show as `caf` and a box), by file name as Pillow finds it in the system's font folders.
SYSTEM_FONTS = ("DejaVuSans.ttf", "NotoSans-Regular.ttf", "LiberationSans-Regular.ttf", "Arial.ttf", "arial.ttf")


def _bundled_dejavu() -> Path | None:
    """matplotlib's copy of DejaVu Sans (matplotlib is a dependency), found without importing matplotlib."""
    spec = importlib.util.find_spec("matplotlib")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.is_file():
            return path
    return None


@functools.lru_cache(maxsize=1)
def caption_font():
    """The captions' font: DejaVu Sans (matplotlib's copy, else the system's), another system font with
    accented Latin glyphs, else Pillow's default (ASCII glyphs only)."""
    from PIL import ImageFont

    for name in (_bundled_dejavu(), *SYSTEM_FONTS):
        if name is None:
            continue
        try:
            return ImageFont.truetype(str(name), FONT_SIZE)
        except OSError:  # not there, or not a font file Pillow reads
            continue
    return ImageFont.load_default(size=FONT_SIZE)


def source(root, key: str):
    """The file of cache key `key` under `root` (None without a root), or the BadImage saying why a key that
    would leave the dataset folder (`../x`, an absolute path) is not read."""
    from ..data import BadImage, key_path

    if not root:
        return None
    try:
        return key_path(root, key)
    except BadImage as e:
        return e


def openable(path):
    """What PIL opens: the path, or the bytes of an object (data.RemotePath) read once."""
    import io

    from ..data import RemotePath

    return io.BytesIO(path.read()) if isinstance(path, RemotePath) else path


def _thumbnail(path):
    """The image fitted in a CELL square on white, or a grey square saying why there is none (path None:
    a vector query; an exception: the reason it is not read)."""
    from PIL import Image, ImageDraw, ImageOps

    cell = Image.new("RGB", (CELL, CELL), "white")
    try:
        if isinstance(path, Exception):
            raise OSError("refused key")
        if path is None:
            raise OSError("vector query")
        with Image.open(openable(path)) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
            img.thumbnail((CELL, CELL))
            cell.paste(img, ((CELL - img.width) // 2, (CELL - img.height) // 2))
    except Exception as e:  # a missing or unreadable file must not stop the sheet
        cell.paste((200, 200, 200), (0, 0, CELL, CELL))
        text = "refused: outside the data" if isinstance(path, Exception) else "no image" if path else str(e)
        ImageDraw.Draw(cell).text((8, CELL // 2 - 6), text, fill="black", font=caption_font())
    return cell


def _fit(text: str, draw, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength("..." + text, font=font) > width:
        text = text[1:]
    return "..." + text


def render(rows: list[dict], out: str | Path, title: str = "") -> Path:
    """rows: [{"image": Path|None|Exception (the reason it is not shown), "title": str, "detail": str, "neighbors": [{"image", "title", "detail",
    "mismatch"}]}]; each cell is captioned with its title and detail line. Writes a PNG; neighbours whose
    label differs from the query's (mismatch=True; on a row: the first cell) are outlined and captioned in red."""
    from PIL import Image, ImageDraw

    font = caption_font()
    columns = 1 + max((len(r["neighbors"]) for r in rows), default=0)
    top = 24 if title else 0
    width = PAD + columns * (CELL + PAD) + PAD
    height = top + PAD + len(rows) * (CELL + CAPTION + PAD)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((PAD, 6), _fit(title, draw, font, width - 2 * PAD), fill="black", font=font)
    for r, row in enumerate(rows):
        y = top + PAD + r * (CELL + CAPTION + PAD)
        cells = [(cell, "red" if cell.get("mismatch") else "black") for cell in [row, *row["neighbors"]]]
        for c, (cell, colour) in enumerate(cells):
            x = PAD + c * (CELL + PAD) + (PAD if c else 0)
            sheet.paste(_thumbnail(cell["image"]), (x, y))
            if c == 0 or colour == "red":
                draw.rectangle((x - 2, y - 2, x + CELL + 1, y + CELL + 1), outline=colour, width=2)
            draw.text((x, y + CELL + 3), _fit(cell["title"], draw, font, CELL), fill=colour, font=font)
            draw.text((x, y + CELL + 17), _fit(cell["detail"], draw, font, CELL), fill=colour, font=font)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(out, lambda tmp: sheet.save(tmp, format="PNG"))  # never half a PNG


def neighbors_sheet(result, columns, out: str | Path) -> Path:
    """The contact sheet of a search.NeighborsResult: one row per query, its neighbours captioned with
    score and label, those of another label than the query's outlined in red. Source images are found
    under the cache's root (columns: the cache.CacheColumns the search used). Returns the PNG's path."""
    root = Path(columns.root) if columns.root else None
    label_of = dict(zip(columns.keys, columns.label_names()))
    rows = []
    for r in result.results:
        if r.kind == "key":
            image = source(root, r.query)
        else:
            image = None if r.kind == "vector" else Path(r.query)
        own_label = label_of.get(r.own_key) if r.own_key else None
        rows.append({"image": image, "title": "query" + (f": {own_label}" if own_label else ""),
                     "detail": Path(r.query).name, "neighbors": [
            {"image": source(root, n.key), "title": f"{round(n.score, 6):.3f}  {n.label or ''}",
             "detail": Path(n.key).name, "mismatch": bool(own_label) and n.label != own_label}
            for n in r.neighbors]})
    return render(rows, out, f"{result.cache}: {len(columns)} vectors, {result.method} search, k={result.k}")
