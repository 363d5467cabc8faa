"""Sweep grid images: A1111-style layout, legends that stay in their band, placeholders, Z."""

from __future__ import annotations

import pytest
from PIL import Image, ImageFont

from charstudio.engine.grid_image import (
    BACKGROUND,
    PLACEHOLDER,
    grid_font,
    grid_font_size,
    make_grid_image,
    make_zgrid,
)

CELL = 64
COLORS = [(200, 30, 30), (30, 160, 30), (30, 30, 200)]


def cell(x: int, y: int, size: tuple[int, int] = (CELL, CELL)) -> Image.Image:
    r, g, b = COLORS[x]
    return Image.new("RGB", size, (r, g, min(255, b + 20 * y)))


def cells_3x3() -> dict[tuple[int, int], Image.Image]:
    return {(x, y): cell(x, y) for x in range(3) for y in range(3)}


def line_height(size: int) -> int:
    font = grid_font(size)
    assert isinstance(font, ImageFont.FreeTypeFont)
    ascent, descent = font.getmetrics()
    return ascent + descent


def is_blank(image: Image.Image, box: tuple[int, int, int, int]) -> bool:
    return image.crop(box).convert("L").getextrema() == (255, 255)


def has_ink(image: Image.Image, box: tuple[int, int, int, int]) -> bool:
    low, _ = image.crop(box).convert("L").getextrema()
    return low < 128


def test_font_size_follows_a1111_with_a_floor() -> None:
    assert grid_font_size(512, 512) == 40  # A1111: (width + height) // 25
    assert grid_font_size(64, 64) == 12  # 5 px would be unreadable
    assert isinstance(grid_font(20), ImageFont.FreeTypeFont)


def test_grid_size_for_3x3_cells_with_labels() -> None:
    grid = make_grid_image(cells_3x3(), ["A", "B", "C"], ["1", "2", "3"])
    font_size = 12
    spacing = font_size // 2
    pad_left = CELL * 3 // 4  # A1111's left band: three quarters of a cell
    pad_top = line_height(font_size) + 2 * spacing
    assert grid.size == (pad_left + 3 * CELL, pad_top + 3 * CELL)
    assert grid.mode == "RGB"
    # Every cell lands in its place.
    for (x, y), image in cells_3x3().items():
        left, top = pad_left + x * CELL, pad_top + y * CELL
        assert grid.getpixel((left + CELL // 2, top + CELL // 2)) == image.getpixel((0, 0))


def test_grid_without_labels_is_just_the_cells_and_margins() -> None:
    assert make_grid_image(cells_3x3(), [], []).size == (3 * CELL, 3 * CELL)
    assert make_grid_image(cells_3x3(), ["", "", ""], []).size == (3 * CELL, 3 * CELL)
    with_margin = make_grid_image(cells_3x3(), [], [], margin=4)
    assert with_margin.size == (3 * CELL + 8, 3 * CELL + 8)
    assert with_margin.getpixel((CELL + 1, 10)) == BACKGROUND


def test_labels_render_in_their_bands() -> None:
    grid = make_grid_image(cells_3x3(), ["A", "B", "C"], ["1", "2", "3"])
    pad_left = grid.width - 3 * CELL
    pad_top = grid.height - 3 * CELL
    for x in range(3):
        assert has_ink(grid, (pad_left + x * CELL, 0, pad_left + (x + 1) * CELL, pad_top))
    for y in range(3):
        assert has_ink(grid, (0, pad_top + y * CELL, pad_left, pad_top + (y + 1) * CELL))
    assert is_blank(grid, (0, 0, pad_left, pad_top))  # the corner stays empty


def test_long_x_label_wraps_inside_its_column() -> None:
    long = "an extreme closeup of a face with supercalifragilisticexpialidocious detail"
    grid = make_grid_image(cells_3x3(), ["", long, ""], ["1", "2", "3"])
    pad_left = grid.width - 3 * CELL
    pad_top = grid.height - 3 * CELL
    assert pad_top > 3 * line_height(12)  # several lines
    assert pad_top <= CELL + 2 * 6  # but never taller than a cell plus its air
    assert has_ink(grid, (pad_left + CELL, 0, pad_left + 2 * CELL, pad_top))
    assert is_blank(grid, (pad_left, 0, pad_left + CELL, pad_top))
    assert is_blank(grid, (pad_left + 2 * CELL, 0, grid.width, pad_top))


def test_long_y_label_wraps_inside_its_row() -> None:
    long = "a low angle shot from below with a very long description that cannot fit"
    grid = make_grid_image(cells_3x3(), ["A", "B", "C"], ["", long, ""])
    pad_left = grid.width - 3 * CELL
    pad_top = grid.height - 3 * CELL
    assert pad_left == CELL * 3 // 4  # the band does not grow; the label is cut with "..."
    assert has_ink(grid, (0, pad_top + CELL, pad_left, pad_top + 2 * CELL))
    assert is_blank(grid, (0, 0, pad_left, pad_top + CELL))
    assert is_blank(grid, (0, pad_top + 2 * CELL, pad_left, grid.height))


def test_missing_cells_are_placeholders() -> None:
    cells = cells_3x3()
    del cells[(1, 1)]
    grid = make_grid_image(cells, [], [])
    missing = grid.crop((CELL, CELL, 2 * CELL, 2 * CELL))
    assert missing.getcolors() == [(CELL * CELL, PLACEHOLDER)]
    rows: list[list[Image.Image | None]] = [[cell(0, 0), None], [None, cell(1, 1)]]
    from_rows = make_grid_image(rows, ["a", "b"], ["c", "d"])
    pad_left, pad_top = from_rows.width - 2 * CELL, from_rows.height - 2 * CELL
    assert from_rows.getpixel((pad_left + CELL + 5, pad_top + 5)) == PLACEHOLDER
    assert from_rows.getpixel((pad_left + 5, pad_top + CELL + 5)) == PLACEHOLDER
    last = cell(1, 1).getpixel((0, 0))
    assert from_rows.getpixel((pad_left + CELL + 5, pad_top + CELL + 5)) == last


def test_labels_beyond_the_cells_and_all_missing() -> None:
    grid = make_grid_image({}, ["a", "b"], ["c"], cell_size=(32, 32))
    pad_left, pad_top = grid.width - 64, grid.height - 32
    assert grid.getpixel((pad_left + 40, pad_top + 10)) == PLACEHOLDER
    with pytest.raises(ValueError, match="cell_size"):
        make_grid_image({(0, 0): None}, ["a"], ["b"])
    with pytest.raises(ValueError, match="at least one"):
        make_grid_image({}, [], [], cell_size=(8, 8))


def test_cells_are_flattened_and_fitted() -> None:
    transparent = Image.new("RGBA", (CELL, CELL), (0, 0, 0, 0))
    small = Image.new("RGB", (CELL, CELL // 2), (10, 10, 10))
    grid = make_grid_image({(0, 0): cell(0, 0), (1, 0): transparent, (2, 0): small}, [], [])
    assert grid.size == (3 * CELL, CELL)
    assert grid.getpixel((CELL + 5, 5)) == BACKGROUND
    assert grid.getpixel((2 * CELL + 5, CELL // 2)) == (10, 10, 10)  # letterboxed, centred
    assert grid.getpixel((2 * CELL + 5, 2)) == BACKGROUND


def test_title_band_on_top() -> None:
    plain = make_grid_image(cells_3x3(), ["A", "B", "C"], ["1", "2", "3"])
    titled = make_grid_image(cells_3x3(), ["A", "B", "C"], ["1", "2", "3"], title="Steps: 30")
    band = titled.height - plain.height
    assert band == line_height(12) + 2 * 6
    assert titled.width == plain.width
    assert has_ink(titled, (0, 0, titled.width, band))


def test_z_grids_sit_side_by_side_under_their_labels() -> None:
    first = make_grid_image(cells_3x3(), ["A", "B", "C"], ["1", "2", "3"])
    second = Image.new("RGB", (100, 50), (1, 2, 3))
    z = make_zgrid([first, second], ["Steps: 20", "Steps: 30"], font_size=14)
    spacing = 7
    band = line_height(14) + 2 * spacing
    assert z.size == (first.width + spacing + 100, band + first.height)
    assert z.getpixel((first.width + spacing + 50, band + 25)) == (1, 2, 3)
    assert z.crop((0, band, first.width, band + first.height)).tobytes() == first.tobytes()
    assert has_ink(z, (0, 0, first.width, band))
    assert has_ink(z, (first.width + spacing, 0, z.width, band))
    assert is_blank(z, (first.width, 0, first.width + spacing, z.height))  # the gap


def test_z_grids_stack_vertically_on_request() -> None:
    grids = [Image.new("RGB", (80, 40), (9, 9, 9)), Image.new("RGB", (60, 40), (7, 7, 7))]
    z = make_zgrid(grids, ["one", "two"], direction="vertical", font_size=12)
    band = line_height(12) + 2 * 6
    assert z.size == (80, 2 * (band + 40) + 6)
    assert z.getpixel((10, band + 10)) == (9, 9, 9)
    assert z.getpixel((10, 2 * band + 40 + 6 + 10)) == (7, 7, 7)
    assert has_ink(z, (0, band + 40 + 6, 80, 2 * band + 40 + 6))
    with pytest.raises(ValueError, match="3 Z labels for 2 grids"):
        make_zgrid(grids, ["a", "b", "c"])
