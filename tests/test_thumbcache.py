"""The on-disk thumbnail cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from charstudio.metadata.thumbcache import THUMB_EDGE, ensure_thumbnail, thumbnail_path


def test_thumbnail_is_made_once_and_reused(make_png, tmp_path: Path) -> None:
    source = make_png(tmp_path / "a.png", seed=1, size=512)
    first = ensure_thumbnail(tmp_path, source, "ab" * 32)
    assert first == thumbnail_path(tmp_path, "ab" * 32)
    with Image.open(first) as thumb:
        assert thumb.size == (THUMB_EDGE, THUMB_EDGE)
        assert thumb.format == "JPEG"
    stamp = first.stat().st_mtime_ns
    source.unlink()  # the cache no longer needs the source
    assert ensure_thumbnail(tmp_path, source, "ab" * 32).stat().st_mtime_ns == stamp
    assert not list(first.parent.glob(".*part"))


def test_small_images_are_not_enlarged_and_aspect_is_kept(tmp_path: Path) -> None:
    Image.new("RGB", (512, 768), "gray").save(tmp_path / "tall.webp")
    Image.new("RGBA", (100, 50), (255, 0, 0, 128)).save(tmp_path / "small.png")
    with Image.open(ensure_thumbnail(tmp_path, tmp_path / "tall.webp", "c" * 64)) as thumb:
        assert thumb.size == (THUMB_EDGE * 512 // 768, THUMB_EDGE)
    with Image.open(ensure_thumbnail(tmp_path, tmp_path / "small.png", "d" * 64)) as thumb:
        assert thumb.size == (100, 50)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    Image.new("RGB", (400, 200), "white").save(tmp_path / "r.jpg", exif=exif)
    with Image.open(ensure_thumbnail(tmp_path, tmp_path / "r.jpg", "e" * 64)) as thumb:
        assert thumb.size == (160, 320)


def test_a_missing_source_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        ensure_thumbnail(tmp_path, tmp_path / "gone.png", "f" * 64)
