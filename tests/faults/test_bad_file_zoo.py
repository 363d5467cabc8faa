"""The bad-file zoo: every file an import can meet that is not a good image is reported by
name with a plain message and skipped; the good files around it are imported; nothing hangs
and no traceback reaches the artist. Links, FIFOs, names and huge chunks: test_import_faults.py.
Byte-level damage of each format (fuzzed): tests/test_imagefile.py."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from charstudio.catalog import Project
from charstudio.metadata.imagefile import make_exif_bytes
from tests.test_importer import _import

from .conftest import assert_no_traceback, charstudio, posix_only
from .test_import_faults import _errors, _png_with_text

SETTINGS = "Steps: 30, Sampler: Euler a, CFG scale: 7, Seed: 3, Size: 64x64"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb_png(path: Path) -> Path:
    """A tiny PNG whose header claims 30000×30000 pixels."""
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )
    return path


def _encoded(fmt: str, exif: bytes | None = None, **kwargs) -> bytes:
    out = io.BytesIO()
    image = Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3))
    image.save(out, fmt, **({"exif": exif} if exif else {}), **kwargs)
    return out.getvalue()


def _with_size(data: bytes, fmt: str, width: int, height: int) -> bytes:
    """``data`` with its header claiming ``width``×``height`` pixels (a decompression bomb)."""
    data = bytearray(data)
    if fmt == "JPEG":
        sof = data.index(b"\xff\xc0")
        struct.pack_into(">HH", data, sof + 5, height, width)
    else:  # WebP with a VP8X header
        vp8x = data.index(b"VP8X")
        data[vp8x + 12 : vp8x + 15] = (width - 1).to_bytes(3, "little")
        data[vp8x + 15 : vp8x + 18] = (height - 1).to_bytes(3, "little")
    return bytes(data)


def _exif_with_raw_comment(comment: bytes) -> bytes:
    """An EXIF block whose UserComment holds exactly ``comment`` (its last bytes)."""
    placeholder = make_exif_bytes("x" * ((len(comment) - 8) // 2))
    assert len(comment) % 2 == 0
    return placeholder[: -len(comment)] + comment


def test_the_bad_file_zoo_is_reported_and_skipped(project: Project, make_png, tmp_path) -> None:
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    good = make_png(zoo / "good.png", seed=1)
    (zoo / "empty.png").write_bytes(b"")
    (zoo / "empty.jpg").write_bytes(b"")
    (zoo / "notes.png").write_text("not an image at all")
    (zoo / "noise.jpg").write_bytes(os.urandom(3000))
    data = make_png(tmp_path / "t.png", seed=2).read_bytes()
    (zoo / "truncated.png").write_bytes(data[: len(data) // 2])
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2] ^= 0xFF
    (zoo / "corrupt.png").write_bytes(bytes(corrupt))
    _bomb_png(zoo / "bomb.png")
    jpeg = _encoded("JPEG", quality=90)
    (zoo / "truncated.jpg").write_bytes(jpeg[: len(jpeg) - 200])
    (zoo / "bomb.jpg").write_bytes(_with_size(jpeg, "JPEG", 30000, 30000))
    webp = _encoded("WEBP", quality=90)
    (zoo / "truncated.webp").write_bytes(webp[: len(webp) // 2])
    vp8x = _encoded("WEBP", exif=make_exif_bytes("x"))
    (zoo / "bomb.webp").write_bytes(_with_size(vp8x, "WEBP", 16000, 16000))

    report = _import(project, zoo, tmp_path / "does-not-exist.png")
    assert report.added == 1
    failed = _errors(report)
    assert set(failed) == {
        "empty.png",
        "empty.jpg",
        "notes.png",
        "noise.jpg",
        "truncated.png",
        "corrupt.png",
        "bomb.png",
        "truncated.jpg",
        "bomb.jpg",
        "truncated.webp",
        "bomb.webp",
        "does-not-exist.png",
    }
    assert "empty" in failed["empty.png"]
    assert "text file" in failed["notes.png"]
    assert "too large: 30000×30000" in failed["bomb.png"]
    assert "too large: 30000×30000" in failed["bomb.jpg"]
    assert "too large: 16000×16000" in failed["bomb.webp"]
    assert "truncated" in failed["truncated.png"]
    assert "truncated JPEG" in failed["truncated.jpg"]
    assert "truncated WebP" in failed["truncated.webp"]
    assert "no such file" in failed["does-not-exist.png"]
    assert all(message for message in failed.values())
    assert project.catalog.images()[0].path == good.resolve().as_posix()


def test_the_zoo_from_the_command_line_is_plain_text(make_png, tmp_path) -> None:
    zoo = tmp_path / "zoo"
    make_png(zoo / "good.png", seed=1)
    (zoo / "notes.png").write_text("not an image at all")
    _bomb_png(zoo / "bomb.png")
    webp = _encoded("WEBP")
    (zoo / "cut.webp").write_bytes(webp[:-1])
    root = tmp_path / "p"
    assert charstudio("new", str(root), "--name", "Anna").returncode == 0
    result = charstudio("import", str(root), str(zoo), "--json")
    assert_no_traceback(result)
    report = json.loads(result.stdout)
    assert report["added"] == 1 and len(report["failed"]) == 3
    result = charstudio("info", *(str(p) for p in sorted(zoo.iterdir())))
    assert_no_traceback(result)
    assert result.returncode == 1  # some files are bad; each is named with its problem
    for name in ("notes.png", "bomb.png", "cut.webp"):
        assert name in result.stdout


# --- text that is not valid UTF-8 ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "make"),
    [
        (
            "itxt.png",  # iTXt must be UTF-8; this one has stray bytes in the prompt
            lambda make_png, path: _png_with_text(
                path, make_png, b"iTXt", b"a photo \xff\xc0 of a woman\n" + SETTINGS.encode()
            ),
        ),
        (
            "exif-unicode.jpg",  # UTF-16 with a lone surrogate
            lambda make_png, path: path.write_bytes(
                _encoded(
                    "JPEG",
                    exif=_exif_with_raw_comment(
                        b"UNICODE\0"
                        + "a photo ".encode("utf-16-be")
                        + b"\xdc\x00"
                        + f" of a woman\n{SETTINGS}".encode("utf-16-be")
                    ),
                )
            ),
        ),
        (
            "exif-ascii.webp",  # declared ASCII, holding bytes that are not UTF-8 either
            lambda make_png, path: path.write_bytes(
                _encoded(
                    "WEBP",
                    exif=_exif_with_raw_comment(
                        b"ASCII\0\0\0a photo \xff\xfe of a woman\n" + SETTINGS.encode() + b" "
                    ),
                )
            ),
        ),
    ],
)
def test_text_that_is_not_valid_utf8_is_imported_with_replacements(
    project: Project, make_png, tmp_path: Path, name: str, make
) -> None:
    path = tmp_path / name
    make(make_png, path)
    report = _import(project, path)
    assert report.failed == []
    assert report.added == 1
    (record,) = project.catalog.images()
    assert record.seed == 3 and record.steps == 30  # the settings line is still read
    assert record.prompt is not None
    assert record.prompt.startswith("a photo ") and record.prompt.endswith(" of a woman")
    assert "\ufffd" in record.prompt  # the bad bytes show as replacement characters
    project.close()
    result = charstudio("info", str(path), "--json")
    assert_no_traceback(result)
    assert result.returncode == 0
    assert json.loads(result.stdout)[0]["seed"] == 3
    result = charstudio("list", str(project.root), "--json")
    assert_no_traceback(result)
    assert result.returncode == 0


# --- a file that cannot be read -----------------------------------------------------------------


def test_unreadable_file_is_reported_and_the_import_goes_on(
    project: Project, make_png, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "in"
    make_png(folder / "good.png", seed=1)
    locked = make_png(folder / "locked.png", seed=2)
    # Simulated: the tests run as root, who reads any file; the next test does it for real
    # where it can.
    real_open = os.open

    def refusing_open(path, *args, **kwargs) -> int:
        if Path(os.fsdecode(path)) == locked:
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    report = _import(project, folder)
    assert report.added == 1
    errors = _errors(report)
    assert list(errors) == ["locked.png"]
    assert "Permission denied" in errors["locked.png"]
    assert "Traceback" not in errors["locked.png"]


@posix_only
@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file_really_chmod_000(project: Project, make_png, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    make_png(folder / "good.png", seed=1)
    locked = make_png(folder / "locked.png", seed=2)
    locked.chmod(0)
    try:
        report = _import(project, folder)
    finally:
        locked.chmod(0o644)
    assert report.added == 1
    assert list(_errors(report)) == ["locked.png"]
