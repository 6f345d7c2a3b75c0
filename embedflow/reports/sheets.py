"""Contact sheets: one row per query, the query image then its neighbours, each captioned."""

from __future__ import annotations

from pathlib import Path

CELL = 160  # thumbnail side in pixels
CAPTION = 34  # caption height under each thumbnail
PAD = 6


def _thumbnail(path: Path | None):
    """The image fitted in a CELL square on white, or a grey square saying why there is none."""
    from PIL import Image, ImageDraw, ImageOps

    cell = Image.new("RGB", (CELL, CELL), "white")
    try:
        if path is None:
            raise OSError("vector query")
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
            img.thumbnail((CELL, CELL))
            cell.paste(img, ((CELL - img.width) // 2, (CELL - img.height) // 2))
    except Exception as e:  # a missing or unreadable file must not stop the sheet
        cell.paste((200, 200, 200), (0, 0, CELL, CELL))
        ImageDraw.Draw(cell).text((8, CELL // 2 - 6), "no image" if path else str(e), fill="black")
    return cell


def _fit(text: str, draw, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength("..." + text, font=font) > width:
        text = text[1:]
    return "..." + text


def render(rows: list[dict], out: str | Path, title: str = "") -> Path:
    """rows: [{"image": Path|None, "title": str, "detail": str, "neighbors": [{"image", "title", "detail",
    "mismatch"}]}]; each cell is captioned with its title and detail line. Writes a PNG; neighbours whose
    label differs from the query's (mismatch=True) are outlined and captioned in red."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=12)
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
        cells = [(row, "black")] + [(n, "red" if n.get("mismatch") else "black") for n in row["neighbors"]]
        for c, (cell, colour) in enumerate(cells):
            x = PAD + c * (CELL + PAD) + (PAD if c else 0)
            sheet.paste(_thumbnail(cell["image"]), (x, y))
            if c == 0 or colour == "red":
                draw.rectangle((x - 2, y - 2, x + CELL + 1, y + CELL + 1), outline=colour, width=2)
            draw.text((x, y + CELL + 3), _fit(cell["title"], draw, font, CELL), fill=colour, font=font)
            draw.text((x, y + CELL + 17), _fit(cell["detail"], draw, font, CELL), fill=colour, font=font)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, format="PNG")
    return out
