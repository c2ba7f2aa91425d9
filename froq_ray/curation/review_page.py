"""The review's rendering: tiles -> one self-contained static HTML page and PNG contact sheets (Pillow).

No I/O: the caller (:mod:`froq_ray.pipeline.review`) gives each tile its thumbnail (a PIL RGB image, or None
for an image that could not be read or decoded: a grey placeholder tile saying so is drawn instead).

The page embeds every thumbnail as a ``data:image/jpeg;base64`` URI (no file beside it is needed to show the
images; the contact sheets it links sit in ``sheets/``). Structure, for readers and tests::

    <section class="review" id="<key>" data-count="<count>" data-shown="<groups shown>">
      <div class="group"> <figure class="tile <role>" data-path="..."> <img ...> <figcaption>...

``role`` is ``subject`` (a lowest/highest/band image, a flagged image, an image of a duplicate pair),
``own`` / ``nearest`` (samples beside a flagged image), ``a`` / ``b`` (samples of a merge pair's identities);
``unreadable`` is added to a placeholder tile. The output is a pure function of its input (no clock, no
randomness), so the same run writes the same bytes.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFont

PLACEHOLDER_RGB = (128, 128, 128)
JPEG_QUALITY = 85
CAPTION_LINES = 3
"""Caption lines under each tile of a contact sheet (the page shows every line)."""
_LINE_PX = 11
_GAP = 4
_GROUP_GAP = 16


@dataclass(frozen=True)
class Tile:
    """One image of the review: its ``path``, caption ``lines`` (on the page), ``role`` (module doc), ``image``
    (PIL RGB thumbnail, None: unreadable), the ``error`` when unreadable and the ``short`` caption lines of the
    contact sheet (at most :data:`CAPTION_LINES`; default: the first page lines)."""

    path: str
    lines: tuple[str, ...]
    role: str
    image: Image.Image | None
    error: str | None = None
    short: tuple[str, ...] | None = None


@dataclass
class Section:
    """One part of the page: ``key`` (HTML id, sheet file prefix), ``title``, ``note`` (a sentence under the
    title), ``groups`` (each a list of tiles shown together), ``count`` (what the filter / the data holds for
    this section: images, flags or pairs) and ``absent`` (why the section has nothing to show, when its
    source is not there); ``shown``: the items of ``count`` shown (default: the groups). ``sheets``: the
    contact sheet file names, relative to the page."""

    key: str
    title: str
    note: str
    groups: list[list[Tile]]
    count: int
    absent: str | None = None
    shown: int | None = None
    sheets: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.shown is None:
            self.shown = len(self.groups)


def placeholder(size: int, text: str = "unreadable") -> Image.Image:
    """A grey ``size`` x ``size`` RGB tile with ``text`` in its middle."""
    image = Image.new("RGB", (size, size), PLACEHOLDER_RGB)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    box = draw.textbbox((0, 0), text, font=font)
    draw.text(((size - box[2]) / 2, (size - box[3]) / 2), text, fill=(255, 255, 255), font=font)
    draw.rectangle((0, 0, size - 1, size - 1), outline=(200, 0, 0), width=2)
    return image


def tile_image(tile: Tile, size: int) -> Image.Image:
    """The tile's thumbnail, or the placeholder when it has none."""
    return tile.image if tile.image is not None else placeholder(size)


def data_uri(image: Image.Image) -> str:
    """``data:image/jpeg;base64,...`` of an RGB image (quality :data:`JPEG_QUALITY`)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# ------------------------------------------------------------------------------------------------ sheets
def contact_sheets(section: Section, size: int, columns: int, max_rows: int) -> list[bytes]:
    """PNG bytes of the section's contact sheets: groups packed left to right into rows of at most
    ``columns`` tiles (a group longer than that wraps), at most ``max_rows`` rows per sheet; each tile is
    ``size`` px with :data:`CAPTION_LINES` caption lines under it. Empty for a section without tiles."""
    rows = _pack(section.groups, columns)
    cell_w, cell_h = size + _GAP, size + _GAP + CAPTION_LINES * _LINE_PX
    width = columns * cell_w + _GROUP_GAP * max(columns - 1, 0) + _GAP
    sheets = []
    font = ImageFont.load_default()
    for start in range(0, len(rows), max_rows):
        chunk = rows[start : start + max_rows]
        sheet = Image.new("RGB", (width, len(chunk) * cell_h + _GAP), (255, 255, 255))
        draw = ImageDraw.Draw(sheet)
        for r, row in enumerate(chunk):
            x, y = _GAP, _GAP + r * cell_h
            previous = None
            for group_index, tile in row:
                if previous is not None and group_index != previous:
                    x += _GROUP_GAP
                previous = group_index
                sheet.paste(tile_image(tile, size).resize((size, size)), (x, y))
                if tile.role != "subject":
                    draw.rectangle(
                        (x, y, x + size - 1, y + size - 1), outline=_ROLE_RGB.get(tile.role, (0, 0, 0))
                    )
                for k, line in enumerate((tile.short or tile.lines)[:CAPTION_LINES]):
                    draw.text(
                        (x, y + size + 1 + k * _LINE_PX),
                        _fit(draw, line, size, font),
                        fill=(0, 0, 0),
                        font=font,
                    )
                x += cell_w
        buffer = io.BytesIO()
        sheet.save(buffer, format="PNG")
        sheets.append(buffer.getvalue())
    return sheets


_ROLE_RGB = {"own": (0, 120, 0), "nearest": (200, 90, 0), "a": (0, 70, 200), "b": (150, 0, 150)}


def _pack(groups: Sequence[Sequence[Tile]], columns: int) -> list[list[tuple[int, Tile]]]:
    """Rows of (group index, tile): a group starts a new row when it does not fit in what is left."""
    rows: list[list[tuple[int, Tile]]] = []
    current: list[tuple[int, Tile]] = []
    for g, group in enumerate(groups):
        if current and len(current) + len(group) > columns:
            rows.append(current)
            current = []
        for tile in group:
            if len(current) == columns:
                rows.append(current)
                current = []
            current.append((g, tile))
    if current:
        rows.append(current)
    return rows


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, font) -> str:
    """``text`` cut from the left (``...`` first) so it fits ``width`` px: the end of a path says most."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength("..." + text, font=font) > width:
        text = text[1:]
    return "..." + text


# ------------------------------------------------------------------------------------------------ page
_CSS = """
body{font-family:sans-serif;margin:16px;color:#222}
h1{font-size:20px}h2{font-size:16px;margin-top:28px;border-bottom:1px solid #ccc}
.summary td,.summary th{padding:2px 10px;text-align:left;font-size:13px}
.note{font-size:13px;color:#444}.absent{color:#a00;font-size:13px}
.group{display:flex;flex-wrap:wrap;gap:6px;margin:8px 0;padding:6px;border:1px solid #eee}
.tile{margin:0;width:SIZEpx;font-size:10px;line-height:1.2}
.tile img{width:SIZEpx;height:SIZEpx;display:block}
.tile figcaption{word-break:break-all}
.own img{outline:2px solid #007800}.nearest img{outline:2px solid #c85a00}
.a img{outline:2px solid #0046c8}.b img{outline:2px solid #960096}
.unreadable figcaption{color:#a00}
#label_noise .subject img{outline:3px solid #c00}
.sep{width:8px}
"""


def html_page(title: str, summary: Sequence[tuple[str, str]], sections: Sequence[Section], size: int) -> str:
    """The review page as text: ``title``, a ``summary`` table of (label, value) rows, then each section (its
    note, the link to each contact sheet, its groups of tiles with captions, or why it is absent)."""
    esc = html.escape
    uris: dict[str, str] = {}  # one encoding per image, however many tiles show it
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        f"<style>{_CSS.replace('SIZE', str(size))}</style>",
        "</head><body>",
        f"<h1>{esc(title)}</h1>",
        '<table class="summary">',
        *(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in summary),
        "</table>",
        "<nav><ul>",
        *(f'<li><a href="#{esc(s.key)}">{esc(s.title)}</a> ({s.count})</li>' for s in sections),
        "</ul></nav>",
    ]
    for section in sections:
        out.append(
            f'<section class="review" id="{esc(section.key)}" data-count="{section.count}" '
            f'data-shown="{section.shown}">'
        )
        out.append(f"<h2>{esc(section.title)}</h2>")
        out.append(f'<p class="note">{esc(section.note)}</p>')
        if section.absent:
            out.append(f'<p class="absent">{esc(section.absent)}</p>')
        if section.sheets:
            links = ", ".join(f'<a href="{esc(s)}">{esc(s)}</a>' for s in section.sheets)
            out.append(f'<p class="note">Contact sheets: {links}</p>')
        for group in section.groups:
            out.append('<div class="group">')
            previous_role = None
            for tile in group:
                if previous_role is not None and tile.role != previous_role:
                    out.append('<div class="sep"></div>')
                previous_role = tile.role
                out.append(_figure(tile, size, uris))
            out.append("</div>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _figure(tile: Tile, size: int, uris: dict[str, str]) -> str:
    esc = html.escape
    key = tile.path if tile.image is not None else ""
    if key not in uris:
        uris[key] = data_uri(tile_image(tile, size))
    role = f"{tile.role} unreadable" if tile.image is None else tile.role
    lines = [*tile.lines, *([f"unreadable: {tile.error}"] if tile.image is None and tile.error else [])]
    caption = "<br>".join(esc(line) for line in lines)
    return (
        f'<figure class="tile {role}" data-path="{esc(tile.path)}">'
        f'<img src="{uris[key]}" alt="{esc(tile.path)}" title="{esc(tile.path)}" '
        f'width="{size}" height="{size}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )
