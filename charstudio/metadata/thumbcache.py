"""The project's on-disk thumbnail cache.

Thumbnails are keyed by the image's sha256, so renaming or moving a file keeps its
thumbnail, and stored as JPEG files under ``<project>/cache/thumbnails`` — small and quick
to decode. Made with Pillow, which releases the GIL while decoding and resizing, so several
worker threads make thumbnails in parallel.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps

from charstudio.atomic_files import atomic_write

THUMB_EDGE = 320  # the longest edge; the grid's largest thumbnail size
CACHE_DIR = Path("cache") / "thumbnails"


def thumbnail_path(project_root: Path, sha256: str, edge: int = THUMB_EDGE) -> Path:
    return project_root / CACHE_DIR / sha256[:2] / f"{sha256}-{edge}.jpg"


def make_thumbnail(source: Path, target: Path, edge: int = THUMB_EDGE) -> Path:
    """Write a JPEG thumbnail of ``source`` to ``target`` atomically; returns ``target``."""
    with Image.open(source) as image:
        image.draft("RGB", (edge, edge))  # JPEG: decode at a reduced scale directly
        image = ImageOps.exif_transpose(image)
        image.thumbnail((edge, edge), Image.Resampling.BILINEAR, reducing_gap=2.0)
        if image.mode != "RGB":
            image = image.convert("RGB")
        target.parent.mkdir(parents=True, exist_ok=True)
        # A cache: no fsync, and a thumbnail that another thread made and the grid holds open
        # (Windows cannot replace an open file) is kept: it is the same picture.
        atomic_write(
            target,
            lambda fh: image.save(fh, "JPEG", quality=88),
            durable=False,
            keep_existing=True,
        )
    return target


def ensure_thumbnail(project_root: Path, source: Path, sha256: str, edge: int = THUMB_EDGE) -> Path:
    """The cached thumbnail of an image, made first if needed. Raises OSError when the source
    is missing or unreadable, or (Windows) when the cache path is too long."""
    target = thumbnail_path(project_root, sha256, edge)
    if target.is_file():
        return target
    return make_thumbnail(source, target, edge)
