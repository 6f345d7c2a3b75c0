"""Contact-sheet captions (neighbors --sheet, audit) draw accented names with real glyphs, not boxes."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from embedflow.reports import sheets

BOX = "\uffff"  # not a character: every font draws its .notdef box for it


def glyph(font, ch: str) -> bytes:
    im = Image.new("L", (32, 32), 0)
    ImageDraw.Draw(im).text((6, 4), ch, fill=255, font=font)
    return im.tobytes()


def test_caption_font_has_accented_latin_glyphs():
    font = sheets.caption_font()
    box = glyph(font, BOX)
    for ch in "Ångström café Ł Č ß":
        if ch != " ":
            assert glyph(font, ch) != box, f"{ch!r} is drawn as the .notdef box"


def caption(png, row_y: int) -> np.ndarray:
    """The caption strip under the first cell of a sheet's first row."""
    y = row_y + sheets.CELL
    return np.asarray(Image.open(png).convert("L"))[y:y + sheets.CAPTION, :sheets.CELL + 2 * sheets.PAD]


def render_caption(tmp_path, text: str) -> np.ndarray:
    out = sheets.render([{"image": None, "title": text, "detail": "", "neighbors": []}], tmp_path / f"{len(text)}.png")
    return caption(out, sheets.PAD)


def test_sheet_caption_draws_ångström_café_with_glyphs(tmp_path):
    """The caption as rendered differs from the same text with boxes where the accented letters are."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    real = render_caption(tmp_path / "a", "Ångström café")
    boxed = render_caption(tmp_path / "b", f"{BOX}ngstr{BOX}m caf{BOX}")
    assert real.min() < 128  # something is drawn
    assert not np.array_equal(real, boxed)


def test_without_any_truetype_font_the_sheet_falls_back_to_pillows_default(tmp_path, monkeypatch):
    monkeypatch.setattr(sheets, "_bundled_dejavu", lambda: None)
    monkeypatch.setattr(sheets, "SYSTEM_FONTS", ("no-such-font.ttf",))
    sheets.caption_font.cache_clear()
    try:
        assert glyph(sheets.caption_font(), "a") != glyph(sheets.caption_font(), BOX)
        assert render_caption(tmp_path, "café").min() < 128
    finally:
        sheets.caption_font.cache_clear()
