"""Image probing, infotext reading (PNG text chunks, EXIF UserComment) and PNG writing."""

from __future__ import annotations

import io
import os
import random
import struct
import warnings
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from charstudio.metadata import (
    MAX_PIXELS,
    ImageFileError,
    ImageProbe,
    decode_exif_usercomment,
    encode_exif_usercomment,
    make_exif_bytes,
    parse_infotext,
    probe_image,
    probe_image_bytes,
    read_infotext,
    read_infotext_bytes,
    write_png,
)

INFOTEXT = (
    "an extreme closeup front shot photo of a 25yo French woman, chin length straight black "
    "hair in a bob cut with bangs,\n(neutral gray background:1.3), neutral face expression\n"
    "Negative prompt: jewellery, clothes, (blurry:1.2)\n"
    "Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 4240233169, "
    "Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, "
    'Lora hashes: "fr3nch: 1a2b3c4d5e6f", Version: v1.10.1'
)
UNICODE_INFOTEXT = INFOTEXT.replace("French woman", "Française 日本人 woman 👩")


# --- builders -----------------------------------------------------------------------------------


def noise(size: int = 64, seed: int = 1, mode: str = "RGB") -> Image.Image:
    rng = random.Random(seed)
    return Image.frombytes(mode, (size, size), rng.randbytes(size * size * len(mode)))


def png_bytes(image: Image.Image, info: PngImagePlugin.PngInfo | None = None) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def a1111_png(size: int = 512, text: str | None = INFOTEXT) -> bytes:
    info = PngImagePlugin.PngInfo()
    if text is not None:
        info.add_text("parameters", text)
    return png_bytes(noise(size), info)


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def handmade_png(width: int, height: int, rows: bytes | None = None) -> bytes:
    """A grayscale 8-bit PNG built byte by byte; ``rows`` defaults to one black row."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(rows if rows is not None else b"\0" * (width + 1))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png_chunk_offsets(data: bytes) -> dict[bytes, tuple[int, int]]:
    """Chunk type -> (offset of its length field, data length), first occurrence."""
    found: dict[bytes, tuple[int, int]] = {}
    pos = 8
    while pos < len(data):
        length, ctype = struct.unpack_from(">I4s", data, pos)
        found.setdefault(ctype, (pos, length))
        pos += 12 + length
    return found


def little_endian_exif(comment: bytes) -> bytes:
    """An EXIF block in Intel byte order with the UserComment as given (written by hand)."""
    tiff = b"".join(
        (
            b"II*\0",
            struct.pack("<I", 8),
            struct.pack("<HHHII", 1, 0x8769, 4, 1, 26),
            struct.pack("<I", 0),
            struct.pack("<HHHII", 1, 0x9286, 7, len(comment), 44),
            struct.pack("<I", 0),
            comment,
        )
    )
    return b"Exif\0\0" + tiff


# --- valid files --------------------------------------------------------------------------------


def test_a1111_png() -> None:
    probe = probe_image_bytes(a1111_png())
    assert probe == ImageProbe(width=512, height=512, format="PNG", infotext=INFOTEXT)
    assert parse_infotext(probe.infotext or "").seed == 4240233169


def test_png_without_infotext() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "Krita")
    assert probe_image_bytes(png_bytes(noise(), info)).infotext is None
    assert probe_image_bytes(a1111_png(text=None)).infotext is None


@pytest.mark.parametrize("kind", ["zTXt", "iTXt", "iTXt-compressed"])
def test_png_text_chunk_kinds(kind: str) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "charstudio")
    if kind == "zTXt":
        info.add_text("parameters", INFOTEXT, zip=True)
    else:
        info.add_itxt("parameters", INFOTEXT, zip=kind == "iTXt-compressed")
    data = png_bytes(noise(), info)
    assert kind[:4].encode() in png_chunk_offsets(data)
    assert probe_image_bytes(data).infotext == INFOTEXT


def test_png_itxt_keeps_unicode() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_itxt("parameters", UNICODE_INFOTEXT, lang="fr", tkey="paramètres", zip=True)
    assert probe_image_bytes(png_bytes(noise(), info)).infotext == UNICODE_INFOTEXT


def test_png_modes_and_sizes() -> None:
    for mode in ("RGB", "RGBA", "L"):
        image = noise(size=37, mode=mode)
        assert probe_image_bytes(png_bytes(image)) == ImageProbe(37, 37, "PNG", None)
    assert probe_image_bytes(handmade_png(3, 1)) == ImageProbe(3, 1, "PNG", None)


@pytest.mark.parametrize(
    ("fmt", "options"),
    [("JPEG", {"quality": 95}), ("WEBP", {"quality": 90}), ("WEBP", {"lossless": True})],
    ids=["jpeg", "webp-lossy", "webp-lossless"],
)
def test_exif_usercomment_big_endian(fmt: str, options: dict[str, object]) -> None:
    # The way A1111 stores it: piexif's "unicode" UserComment (UTF-16BE) in the Exif IFD.
    data = encoded(noise(96), fmt, exif=make_exif_bytes(UNICODE_INFOTEXT), **options)
    probe = probe_image_bytes(data)
    assert probe == ImageProbe(96, 96, fmt, UNICODE_INFOTEXT)
    # Pillow reads the same tag back, with the type A1111's piexif expects (7, UNDEFINED).
    with Image.open(io.BytesIO(data)) as image:
        exif_ifd = image.getexif().get_ifd(0x8769)
        assert exif_ifd[0x9286] == encode_exif_usercomment(UNICODE_INFOTEXT)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_exif_usercomment_little_endian_without_bom(fmt: str) -> None:
    comment = b"UNICODE\0" + INFOTEXT.encode("utf-16-le")
    data = encoded(noise(64), fmt, exif=little_endian_exif(comment))
    assert probe_image_bytes(data).infotext == INFOTEXT


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_exif_written_through_pillow_exif_api(fmt: str) -> None:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = encode_exif_usercomment(INFOTEXT)
    data = encoded(noise(64), fmt, exif=exif)
    assert probe_image_bytes(data).infotext == INFOTEXT


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_jpeg_webp_without_exif(fmt: str) -> None:
    assert probe_image_bytes(encoded(noise(40), fmt)) == ImageProbe(40, 40, fmt, None)


def test_jpeg_with_other_exif_only() -> None:
    exif = Image.Exif()
    exif[0x0131] = "Photoshop"  # Software
    data = encoded(noise(40), "JPEG", exif=exif)
    assert probe_image_bytes(data).infotext is None


def test_jpeg_trailing_bytes_after_eoi_are_allowed() -> None:
    data = encoded(noise(40), "JPEG") + b"\0\0trailer"
    assert probe_image_bytes(data).width == 40


def test_broken_exif_does_not_reject_the_image() -> None:
    exif = make_exif_bytes(INFOTEXT)
    broken = exif[:24] + b"\xff\xff\xff\xf0" + exif[28:]  # Exif IFD pointer out of range
    data = encoded(noise(40), "JPEG", exif=broken)
    assert probe_image_bytes(data) == ImageProbe(40, 40, "JPEG", None)


def test_probe_and_read_from_files(tmp_path: Path) -> None:
    png = tmp_path / "a.png"
    png.write_bytes(a1111_png(64))
    jpeg = tmp_path / "a.jpg"
    jpeg.write_bytes(encoded(noise(64), "JPEG", exif=make_exif_bytes(INFOTEXT)))
    assert probe_image(png).infotext == INFOTEXT
    assert read_infotext(png) == INFOTEXT
    assert read_infotext(str(jpeg)) == INFOTEXT
    assert read_infotext_bytes(png.read_bytes()) == INFOTEXT
    with pytest.raises(FileNotFoundError):
        probe_image(tmp_path / "missing.png")


# --- EXIF UserComment decoding ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"UNICODE\0" + "a cat, 猫".encode("utf-16-be"), "a cat, 猫"),
        (b"UNICODE\0" + "a cat, 猫".encode("utf-16-le"), "a cat, 猫"),
        (b"UNICODE\0\xfe\xff" + "a cat".encode("utf-16-be"), "a cat"),
        (b"UNICODE\0\xff\xfe" + "a cat".encode("utf-16-le"), "a cat"),
        (b"UNICODE\0" + "ĀĀĀ".encode("utf-16-be"), "ĀĀĀ"),  # zero low bytes, still big-endian
        (b"UNICODE\0" + "ĀĀĀ".encode("utf-16-le"), "ĀĀĀ"),
        (b"UNICODE\0" + "日本語".encode("utf-16-be"), "日本語"),  # no zeros: big-endian
        (b"UNICODE\0" + "a cat".encode("utf-16-be") + b"\0\0", "a cat"),  # NUL padding
        (b"ASCII\0\0\0a cat   ", "a cat"),
        (b"ASCII\0\0\0caf\xc3\xa9\0", "café"),  # UTF-8 under an ASCII header
        (b"\0" * 8 + b"a cat", "a cat"),
        (b"\0" * 8 + "a cat".encode("utf-16-le"), "a cat"),
        (b"JIS\0\0\0\0\0" + "猫".encode("shift_jis"), "猫"),
        (b"a cat", "a cat"),  # no header at all
        (b"", ""),
    ],
)
def test_decode_usercomment_variants(raw: bytes, text: str) -> None:
    assert decode_exif_usercomment(raw) == text


def test_encode_usercomment_is_piexif_style() -> None:
    assert encode_exif_usercomment("ab") == b"UNICODE\0\0a\0b"


# Real infotext always ends with an ASCII settings line, which settles the byte order.
SETTINGS_LINE = "\nSteps: 30, Sampler: DPM++ 2M, CFG scale: 7, Seed: 1, Size: 512x512"
prompts = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\ufffd")
    | st.sampled_from("\n\t"),
    max_size=60,
)


@hypothesis_settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompt=prompts)
def test_usercomment_round_trip(prompt: str) -> None:
    text = prompt + SETTINGS_LINE
    assert decode_exif_usercomment(encode_exif_usercomment(text)) == text
    assert decode_exif_usercomment(b"UNICODE\0" + text.encode("utf-16-le")) == text


# --- the bad-file zoo ---------------------------------------------------------------------------


def _truncated_in_idat() -> bytes:
    data = a1111_png(64)
    pos, length = png_chunk_offsets(data)[b"IDAT"]
    return data[: pos + 8 + length // 2]


def _flipped_idat_byte() -> bytes:
    data = bytearray(a1111_png(64))
    pos, length = png_chunk_offsets(bytes(data))[b"IDAT"]
    data[pos + 8 + length // 2] ^= 0x01
    return bytes(data)


def _without_iend() -> bytes:
    data = a1111_png(64)
    pos, _length = png_chunk_offsets(data)[b"IEND"]
    return data[:pos]


def _without_idat() -> bytes:
    ihdr = struct.pack(">IIBBBBB", 4, 4, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _jpeg_with_size(width: int, height: int) -> bytes:
    data = bytearray(encoded(noise(64), "JPEG"))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def _webp_with_size(width: int, height: int) -> bytes:
    data = bytearray(encoded(noise(64), "WEBP", exif=make_exif_bytes("x")))  # VP8X header
    vp8x = data.index(b"VP8X")
    data[vp8x + 12 : vp8x + 15] = (width - 1).to_bytes(3, "little")
    data[vp8x + 15 : vp8x + 18] = (height - 1).to_bytes(3, "little")
    return bytes(data)


def _jpeg() -> bytes:
    return encoded(noise(64), "JPEG", quality=95)


def _webp() -> bytes:
    return encoded(noise(64), "WEBP", quality=90)


BAD_FILES = {
    "zero bytes": (lambda: b"", "empty file (0 bytes)"),
    "text renamed .png": (
        lambda: b"Steps: 30, Sampler: Euler\nthis is a caption file\n",
        "not a PNG, JPEG or WebP image (it looks like a text file)",
    ),
    "random bytes": (
        lambda: random.Random(7).randbytes(4096),
        "not a PNG, JPEG or WebP image",
    ),
    "gif": (
        lambda: encoded(noise(16), "GIF"),
        "not a PNG, JPEG or WebP image (it looks like a GIF",
    ),
    "bmp": (
        lambda: encoded(noise(16), "BMP"),
        "not a PNG, JPEG or WebP image (it looks like a BMP",
    ),
    "tiff": (lambda: encoded(noise(16), "TIFF"), "(it looks like a TIFF image)"),
    "png damaged signature": (
        lambda: b"\x89PNG\n\x1a\n" + a1111_png(16)[8:],  # CR lost in a text-mode transfer
        "it starts like a PNG but its signature is damaged",
    ),
    "png signature only": (lambda: b"\x89PNG\r\n\x1a\n", "truncated PNG"),
    "png cut in IDAT": (_truncated_in_idat, "truncated PNG: data ends before the image end"),
    "png without IEND": (_without_iend, "truncated PNG"),
    "png without IDAT": (_without_idat, "no IDAT"),
    "png flipped byte in IDAT": (_flipped_idat_byte, "corrupt PNG: bad checksum in chunk IDAT"),
    "png zero width": (lambda: handmade_png(0, 5), "corrupt PNG"),
    "png bomb 30000x30000": (
        lambda: handmade_png(30000, 30000, rows=b"\0"),
        "image too large: 30000×30000 pixels (limit 89,478,485) — refused as a possible "
        "decompression bomb",
    ),
    "jpeg soi only": (lambda: b"\xff\xd8", "truncated JPEG"),
    "jpeg cut in half": (lambda: _jpeg()[: len(_jpeg()) // 2], "truncated JPEG"),
    "jpeg cut in header": (lambda: _jpeg()[:30], "truncated JPEG"),
    "jpeg without eoi": (lambda: _jpeg()[:-2], "truncated JPEG"),
    "jpeg bomb": (lambda: _jpeg_with_size(30000, 30000), "image too large: 30000×30000"),
    "webp cut in half": (lambda: _webp()[: len(_webp()) // 2], "truncated WebP"),
    "webp cut by one byte": (lambda: _webp()[:-1], "truncated WebP"),
    "webp bomb": (lambda: _webp_with_size(16000, 16000), "image too large: 16000×16000"),
    "riff but not webp": (lambda: b"RIFF\x04\0\0\0WAVE", "not WebP"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_files_are_refused_with_a_clear_message(name: str) -> None:
    make, phrase = BAD_FILES[name]
    with pytest.raises(ImageFileError) as excinfo:
        probe_image_bytes(make())
    assert phrase in str(excinfo.value)


def test_bad_file_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("not an image\n")
    with pytest.raises(ImageFileError, match="text file"):
        probe_image(path)
    with pytest.raises(ImageFileError, match="text file"):
        read_infotext(path)


def test_image_file_error_is_a_value_error() -> None:
    assert issubclass(ImageFileError, ValueError)


def test_bomb_is_refused_quietly() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning would fail the test
        with pytest.raises(ImageFileError, match="decompression bomb"):
            probe_image_bytes(handmade_png(30000, 30000, rows=b"\0"))


def test_max_pixels_is_adjustable() -> None:
    data = a1111_png(64)
    assert probe_image_bytes(data, max_pixels=64 * 64).width == 64
    with pytest.raises(ImageFileError, match=r"64×64 pixels \(limit 4,095\)"):
        probe_image_bytes(data, max_pixels=64 * 64 - 1)
    assert MAX_PIXELS == Image.MAX_IMAGE_PIXELS


# --- writing ------------------------------------------------------------------------------------


def test_write_png_reads_back(tmp_path: Path) -> None:
    image = noise(64)
    path = tmp_path / "out.png"
    write_png(image, path, INFOTEXT, extra_text={"charstudio": '{"job": 1}'})
    assert os.listdir(tmp_path) == ["out.png"]  # no temporary file left behind
    assert probe_image(path) == ImageProbe(64, 64, "PNG", INFOTEXT, charstudio='{"job": 1}')
    with Image.open(path) as reread:
        assert reread.info["parameters"] == INFOTEXT  # what A1111 reads
        assert reread.info["charstudio"] == '{"job": 1}'
        assert reread.tobytes() == image.tobytes()
    assert png_chunk_offsets(path.read_bytes()).keys() >= {b"tEXt"}


def test_write_png_unicode_uses_itxt(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    write_png(noise(32), path, UNICODE_INFOTEXT)
    chunks = png_chunk_offsets(path.read_bytes())
    assert b"iTXt" in chunks
    assert b"tEXt" not in chunks
    assert read_infotext(path) == UNICODE_INFOTEXT
    with Image.open(path) as reread:
        assert reread.info["parameters"] == UNICODE_INFOTEXT


def test_write_png_without_infotext(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    write_png(noise(32), path, None)
    assert read_infotext(path) is None


def test_write_png_replaces_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    path.write_bytes(b"old contents")
    write_png(noise(32), path, "new")
    assert read_infotext(path) == "new"
    assert os.listdir(tmp_path) == ["out.png"]


def test_write_png_failure_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    path.write_bytes(a1111_png(16))
    before = path.read_bytes()
    with pytest.raises(OSError):
        write_png(Image.new("CMYK", (8, 8)), path, INFOTEXT)  # PNG cannot hold CMYK
    assert path.read_bytes() == before  # the old file is untouched
    assert os.listdir(tmp_path) == ["out.png"]


def test_write_png_rejects_duplicate_parameters(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="parameters"):
        write_png(noise(8), tmp_path / "x.png", "a", extra_text={"parameters": "b"})
    assert os.listdir(tmp_path) == []


# --- fuzzing: damaged files never raise anything but ImageFileError -----------------------------


def _ztxt_png() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_itxt("parameters", UNICODE_INFOTEXT, zip=True)
    info.add_text("comment", INFOTEXT, zip=True)
    return png_bytes(noise(24), info)


SAMPLES = {
    "png": a1111_png(24),
    "png-compressed-text": _ztxt_png(),
    "jpeg": encoded(noise(24), "JPEG", exif=make_exif_bytes(INFOTEXT)),
    "webp": encoded(noise(24), "WEBP", exif=make_exif_bytes(INFOTEXT)),
    "webp-lossless": encoded(noise(24), "WEBP", lossless=True),
}


@hypothesis_settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.sampled_from(sorted(SAMPLES)),
    cut=st.none() | st.integers(min_value=0),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(1, 255)), max_size=4),
)
def test_damaged_files_raise_only_image_file_error(
    sample: str, cut: int | None, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(SAMPLES[sample])
    for position, mask in flips:
        data[position % len(data)] ^= mask
    if cut is not None:
        del data[cut % len(data) :]
    try:
        probe = probe_image_bytes(bytes(data))
    except ImageFileError as exc:
        assert str(exc)
    else:
        assert probe.width > 0
        assert probe.height > 0
