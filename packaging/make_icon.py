"""Draw packaging/windows/charstudio.ico (a portrait bust in a viewfinder, with a spark) and
wizard.bmp (the installer's welcome/finish-page picture, in the same colours).

Needs Pillow (the project's virtual environment has it). Both files are committed; run this
only to change the design:  .venv/bin/python packaging/make_icon.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parent / "windows" / "charstudio.ico"
WIZARD_OUT = OUT.with_name("wizard.bmp")
WIZARD_SIZE = (164, 314)  # what NSIS's Modern UI expects
SIZES = (16, 20, 24, 32, 40, 48, 64, 96, 128, 256)
CANVAS = 1024  # every size is drawn here, then scaled down (smooth edges without antialiasing)

TOP = (58, 44, 112)  # indigo
BOTTOM = (150, 62, 104)  # plum
INK = (250, 236, 222)  # warm cream
SPARK = (255, 201, 120)  # amber


def _background() -> Image.Image:
    gradient = Image.new("RGB", (1, CANVAS))
    for y in range(CANVAS):
        t = y / (CANVAS - 1)
        gradient.putpixel(
            (0, y), tuple(round(a + (b - a) * t) for a, b in zip(TOP, BOTTOM, strict=True))
        )
    gradient = gradient.resize((CANVAS, CANVAS))
    mask = Image.new("L", (CANVAS, CANVAS), 0)
    margin = CANVAS // 32
    ImageDraw.Draw(mask).rounded_rectangle(
        (margin, margin, CANVAS - margin, CANVAS - margin), radius=CANVAS // 5, fill=255
    )
    image = Image.new("RGBA", (CANVAS, CANVAS), (0, 0, 0, 0))
    image.paste(gradient, (0, 0), mask)
    return image


def _spark(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    waist = r * 0.22
    points = [
        (cx, cy - r), (cx + waist, cy - waist), (cx + r, cy), (cx + waist, cy + waist),
        (cx, cy + r), (cx - waist, cy + waist), (cx - r, cy), (cx - waist, cy - waist),
    ]  # fmt: skip
    draw.polygon(points, fill=SPARK)


def draw(detailed: bool, background: bool = True) -> Image.Image:
    """The icon at CANVAS size; small sizes leave out the viewfinder and the spark."""
    image = _background() if background else Image.new("RGBA", (CANVAS, CANVAS), (0, 0, 0, 0))
    d = ImageDraw.Draw(image)
    c = CANVAS
    # The bust: shoulders (a clipped ellipse) and a head, sitting on the bottom edge of the frame.
    shoulders_top = 0.60 * c if detailed else 0.58 * c
    body = Image.new("L", (c, c), 0)
    ImageDraw.Draw(body).ellipse((0.21 * c, shoulders_top, 0.79 * c, 1.18 * c), fill=255)
    clip = Image.new("L", (c, c), 0)
    bottom = 0.80 * c if detailed else 0.86 * c
    ImageDraw.Draw(clip).rectangle((0, 0, c, bottom), fill=255)
    body = Image.composite(body, Image.new("L", (c, c), 0), clip)
    image.paste(INK, (0, 0), body)
    head_r = 0.15 * c if detailed else 0.17 * c
    head_cy = 0.43 * c if detailed else 0.40 * c
    d.ellipse((c / 2 - head_r, head_cy - head_r, c / 2 + head_r, head_cy + head_r), fill=INK)
    if detailed:
        # Viewfinder corners around the bust.
        w = round(0.045 * c)
        lo, hi, arm = 0.17 * c, 0.83 * c, 0.15 * c
        for x, dx in ((lo, 1), (hi, -1)):
            for y, dy in ((lo, 1), (hi, -1)):
                d.line((x, y, x + dx * arm, y), fill=INK, width=w)
                d.line((x, y, x, y + dy * arm), fill=INK, width=w)
                d.ellipse((x - w / 2, y - w / 2, x + w / 2, y + w / 2), fill=INK)
        _spark(d, 0.71 * c, 0.30 * c, 0.08 * c)
    return image


def wizard() -> Image.Image:
    """The tall welcome-page picture: the gradient, the icon's motif near the top."""
    width, height = WIZARD_SIZE
    picture = Image.new("RGB", WIZARD_SIZE)
    for y in range(height):
        t = y / (height - 1)
        colour = tuple(round(a + (b - a) * t) for a, b in zip(TOP, BOTTOM, strict=True))
        ImageDraw.Draw(picture).line((0, y, width, y), fill=colour)
    motif = draw(detailed=True, background=False).resize((136, 136), Image.Resampling.LANCZOS)
    picture.paste(motif, ((width - 136) // 2, 36), motif)
    return picture


def main() -> None:
    detailed, simple = draw(detailed=True), draw(detailed=False)
    frames = [
        (detailed if size >= 40 else simple).resize((size, size), Image.Resampling.LANCZOS)
        for size in SIZES
    ]
    largest = frames[-1]
    largest.save(OUT, format="ICO", sizes=[f.size for f in frames], append_images=frames[:-1])
    wizard().save(WIZARD_OUT, format="BMP")
    print(OUT, WIZARD_OUT)


if __name__ == "__main__":
    main()
