"""A1111-style sweep grids: cells in rows (Y) and columns (X) with axis legends (Pillow only).

The layout follows A1111's ``draw_grid_annotations``: white background, black text, X labels in a
band above the columns, Y labels in a band left of the rows (``cell width * 3 / 4`` wide), font
size ``(cell width + cell height) / 25`` and line spacing half the font size. Two departures keep
every label readable and inside its own column or row: the font never goes below
``MIN_FONT_SIZE`` (A1111's formula gives 5 px on thumbnails), and a label too long for its space
is cut with "..." instead of spilling over its neighbours. Several grids (a Z axis) sit side by
side with their Z label above each, as in A1111 (:func:`make_zgrid`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Literal

from PIL import Image, ImageDraw, ImageFont, ImageOps

__all__ = [
    "BACKGROUND",
    "MIN_FONT_SIZE",
    "PLACEHOLDER",
    "TEXT_COLOR",
    "grid_font",
    "grid_font_size",
    "make_grid_image",
    "make_zgrid",
]

BACKGROUND = (255, 255, 255)
TEXT_COLOR = (0, 0, 0)
PLACEHOLDER = (200, 200, 200)  # a cell whose image is missing (failed, canceled, not yet made)
MIN_FONT_SIZE = 12
_ELLIPSIS = "..."  # plain dots: the fallback bitmap font has no "…"

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
Cells = Mapping[tuple[int, int], Image.Image | None] | Sequence[Sequence[Image.Image | None]]


@lru_cache(maxsize=32)
def grid_font(size: int) -> Font:
    """Pillow's bundled TrueType font at ``size`` px; its bitmap font where FreeType is missing."""
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):  # no FreeType, or Pillow < 10.1
        return ImageFont.load_default()


def grid_font_size(cell_width: int, cell_height: int) -> int:
    """A1111's legend font size for a cell size, with a floor for small cells."""
    return max(MIN_FONT_SIZE, (cell_width + cell_height) // 25)


def make_grid_image(
    cells: Cells,
    x_labels: Sequence[str],
    y_labels: Sequence[str],
    title: str | None = None,
    *,
    cell_size: tuple[int, int] | None = None,
    margin: int = 0,
    font_size: int | None = None,
) -> Image.Image:
    """Lay ``cells`` out in a grid with the X labels above the columns and Y labels on the left.

    ``cells`` maps ``(x, y)`` to an image, or is a list of rows (``cells[y][x]``); a missing or
    None cell becomes a neutral gray placeholder. Images are converted to RGB (transparency over
    white) and letterboxed to ``cell_size``, by default the first image's size. ``margin`` is the
    gap between cells (A1111's "grid margins"). Empty label lists leave out their band.
    """
    table = _cell_table(cells)
    columns = max([len(x_labels), *(x + 1 for x, _ in table)], default=0)
    rows = max([len(y_labels), *(y + 1 for _, y in table)], default=0)
    if columns == 0 or rows == 0:
        raise ValueError("a grid needs at least one cell or one label on each axis")
    if cell_size is None:
        first = next((image for image in table.values() if image is not None), None)
        if first is None:
            raise ValueError("cell_size is needed when every cell is missing")
        cell_size = first.size
    width, height = cell_size

    size = font_size or grid_font_size(width, height)
    font = grid_font(size)
    spacing = size // 2
    line_height = _line_height(font)
    x_texts = [x_labels[i] if i < len(x_labels) else "" for i in range(columns)]
    y_texts = [y_labels[i] if i < len(y_labels) else "" for i in range(rows)]

    # X labels wrap to the column (less a little air each side) and may not grow taller than a
    # cell; Y labels wrap to the left band and may not grow taller than their row.
    column_lines = [
        _wrap(text, font, width - spacing, _max_lines(height, line_height, spacing))
        for text in x_texts
    ]
    pad_left = max(width * 3 // 4, 4 * size) if any(t.strip() for t in y_texts) else 0
    row_lines = [
        _wrap(text, font, pad_left - spacing, _max_lines(height, line_height, spacing))
        for text in y_texts
    ]
    tallest = max((len(lines) for lines in column_lines), default=0)
    pad_top = _block_height(tallest, line_height, spacing) + 2 * spacing if tallest else 0

    grid_width = pad_left + columns * width + (columns - 1) * margin
    title_lines = _wrap(title or "", font, grid_width - 2 * spacing, 3)
    title_height = _block_height(len(title_lines), line_height, spacing) + 2 * spacing
    title_height = title_height if title_lines else 0
    grid_height = title_height + pad_top + rows * height + (rows - 1) * margin

    result = Image.new("RGB", (grid_width, grid_height), BACKGROUND)
    draw = ImageDraw.Draw(result)
    if title_lines:
        _draw_block(draw, title_lines, font, grid_width / 2, title_height / 2, line_height, spacing)

    top = title_height + pad_top
    for x, lines in enumerate(column_lines):
        center_x = pad_left + x * (width + margin) + width / 2
        _draw_block(draw, lines, font, center_x, title_height + pad_top / 2, line_height, spacing)
    for y, lines in enumerate(row_lines):
        center_y = top + y * (height + margin) + height / 2
        _draw_block(draw, lines, font, pad_left / 2, center_y, line_height, spacing)

    for y in range(rows):
        for x in range(columns):
            box = (pad_left + x * (width + margin), top + y * (height + margin))
            image = table.get((x, y))
            if image is None:
                draw.rectangle((*box, box[0] + width - 1, box[1] + height - 1), fill=PLACEHOLDER)
            else:
                result.paste(_fit(image, (width, height)), box)
    return result


def make_zgrid(
    grids: Sequence[Image.Image],
    z_labels: Sequence[str],
    *,
    direction: Literal["horizontal", "vertical"] = "horizontal",
    font_size: int | None = None,
) -> Image.Image:
    """Put the grids of a Z axis together, each under its Z label.

    A1111 puts them side by side (``"horizontal"``); ``"vertical"`` stacks them, handier for wide
    grids. Grids may differ in size; they are aligned to the top (or left).
    """
    if not grids:
        raise ValueError("make_zgrid needs at least one grid")
    if len(z_labels) > len(grids):
        raise ValueError(f"{len(z_labels)} Z labels for {len(grids)} grids")
    if font_size is None:
        first = grids[0]
        font_size = max(MIN_FONT_SIZE, (first.width + first.height) // 50)
    font = grid_font(font_size)
    spacing = font_size // 2
    line_height = _line_height(font)
    labels = [z_labels[i] if i < len(z_labels) else "" for i in range(len(grids))]
    wrapped = [
        _wrap(text, font, grid.width - 2 * spacing, 3)
        for text, grid in zip(labels, grids, strict=True)
    ]
    tallest = max(len(lines) for lines in wrapped)
    band = _block_height(tallest, line_height, spacing) + 2 * spacing if tallest else 0

    gap = spacing
    if direction == "horizontal":
        size = (
            sum(g.width for g in grids) + gap * (len(grids) - 1),
            band + max(g.height for g in grids),
        )
    elif direction == "vertical":
        size = (
            max(g.width for g in grids),
            sum(band + g.height for g in grids) + gap * (len(grids) - 1),
        )
    else:
        raise ValueError(f"direction must be 'horizontal' or 'vertical', not {direction!r}")

    result = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(result)
    left = top = 0
    for grid, lines in zip(grids, wrapped, strict=True):
        _draw_block(draw, lines, font, left + grid.width / 2, top + band / 2, line_height, spacing)
        result.paste(_fit(grid, grid.size), (left, top + band))
        if direction == "horizontal":
            left += grid.width + gap
        else:
            top += band + grid.height + gap
    return result


# --- helpers ------------------------------------------------------------------------------------


def _cell_table(cells: Cells) -> dict[tuple[int, int], Image.Image | None]:
    if isinstance(cells, Mapping):
        table = dict(cells)
        for x, y in table:
            if x < 0 or y < 0:
                raise ValueError(f"cell coordinates must not be negative: {(x, y)}")
        return table
    return {(x, y): image for y, row in enumerate(cells) for x, image in enumerate(row)}


def _fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image = flat
    else:
        image = image.convert("RGB")
    if image.size != size:
        image = ImageOps.pad(image, size, color=BACKGROUND)
    return image


def _line_height(font: Font) -> int:
    if isinstance(font, ImageFont.FreeTypeFont):
        ascent, descent = font.getmetrics()
        return ascent + descent
    return int(font.getbbox("Ag")[3])


def _block_height(lines: int, line_height: int, spacing: int) -> int:
    return lines * line_height + max(0, lines - 1) * spacing


def _max_lines(height: int, line_height: int, spacing: int) -> int:
    return max(1, (height + spacing) // (line_height + spacing))


def _text_width(font: Font, text: str) -> float:
    return font.getlength(text)


def _wrap(text: str, font: Font, max_width: float, max_lines: int) -> list[str]:
    """Greedy word wrap to ``max_width`` px; words too long are broken; extra lines cut with ...."""
    max_width = max(max_width, 1)
    lines: list[str] = []
    for paragraph in text.splitlines():
        current = ""
        for word in paragraph.split():
            candidate = f"{current} {word}" if current else word
            if _text_width(font, candidate) <= max_width:
                current = candidate
                continue
            if current:
                lines.append(current)
            current = ""
            # A word wider than the space is broken between characters.
            for char in word:
                if current and _text_width(font, current + char) > max_width:
                    lines.append(current)
                    current = ""
                current += char
        if current:
            lines.append(current)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and _text_width(font, last + _ELLIPSIS) > max_width:
            last = last[:-1]
        if last:  # else the space is too narrow even for "..."; the cut line stays as it is
            lines[-1] = last.rstrip() + _ELLIPSIS
    return lines


def _draw_block(
    draw: ImageDraw.ImageDraw,
    lines: Sequence[str],
    font: Font,
    center_x: float,
    center_y: float,
    line_height: int,
    spacing: int,
) -> None:
    """Draw lines centred horizontally on ``center_x``, the block centred on ``center_y``."""
    y = center_y - _block_height(len(lines), line_height, spacing) / 2
    for line in lines:
        x = center_x - _text_width(font, line) / 2
        draw.text((round(x), round(y)), line, font=font, fill=TEXT_COLOR)
        y += line_height + spacing
