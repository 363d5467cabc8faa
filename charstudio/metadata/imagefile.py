"""Probing, reading and writing the image files artists bring in (PNG, JPEG, WebP).

Probing is on the import hot path, so it never decodes pixels. It reads the dimensions from the
header (refusing decompression bombs before anything else), checks the file's structure cheaply
(PNG chunk CRCs up to IEND, JPEG SOI/EOI, WebP RIFF sizes) and picks up A1111's infotext:
the PNG text chunk ``parameters`` or, for JPEG and WebP, the EXIF UserComment.

Error messages are written for artists; callers add the file path.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from charstudio.atomic_files import atomic_write

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "MAX_INFOTEXT_BYTES",
    "MAX_PIXELS",
    "ImageFileError",
    "ImageProbe",
    "decode_exif_usercomment",
    "encode_exif_usercomment",
    "make_exif_bytes",
    "probe_image",
    "probe_image_bytes",
    "read_image_file",
    "read_infotext",
    "read_infotext_bytes",
    "write_png",
]

MAX_PIXELS = 89_478_485  # Pillow's Image.MAX_IMAGE_PIXELS
INFOTEXT_KEY = "parameters"
CHARSTUDIO_KEY = "charstudio"  # our own PNG text chunk: JSON such as {"sweep": {...}}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Generation parameters (and charstudio's own chunk) larger than this are not read: A1111
# writes a few KB at most, so anything bigger is junk or an attack, and keeping it would put
# megabytes into every catalog row and screen that shows it. The image itself stays usable.
MAX_INFOTEXT_BYTES = 64 * 1024
_EXIF_IFD_TAG = 0x8769
_USER_COMMENT_TAG = 0x9286
_UNICODE_HEADER = b"UNICODE\0"
_ASCII_HEADER = b"ASCII\0\0\0"
_JIS_HEADER = b"JIS\0\0\0\0\0"
_UNDEFINED_HEADER = b"\0" * 8
# Characters a wrong UTF-16 byte-order guess tends to produce: controls (bar tab and newlines)
# and U+FFFD from broken surrogates.
_IMPLAUSIBLE = frozenset(
    [chr(c) for c in range(0x20) if chr(c) not in "\t\n\r"]
    + [chr(c) for c in range(0x7F, 0xA0)]
    + ["\ufffd"]
)


class ImageFileError(ValueError):
    """The file is not a usable PNG/JPEG/WebP image; the message says why, in plain words."""


@dataclass(frozen=True)
class ImageProbe:
    width: int
    height: int
    format: str  # "PNG" | "JPEG" | "WEBP"
    infotext: str | None
    # charstudio's own PNG text chunk (JSON: the image's sweep coordinates), when present.
    charstudio: str | None = None
    # Plain sentences about what was left out (e.g. parameters over MAX_INFOTEXT_BYTES).
    warnings: tuple[str, ...] = ()


class _TextTooLarge(ValueError):
    """A text field over MAX_INFOTEXT_BYTES: left out, with a warning."""


_TOO_LARGE_WARNING = (
    "its generation parameters were not read: the text is over the "
    f"{MAX_INFOTEXT_BYTES // 1024} KB limit (A1111 writes a few KB at most)"
)


# --- probing ------------------------------------------------------------------------------------


def probe_image(path: str | os.PathLike[str]) -> ImageProbe:
    """Probe an image file; raises ImageFileError (bad image or not a regular file) or OSError
    (cannot read)."""
    return probe_image_bytes(read_image_file(path)[0])


def read_image_file(path: str | os.PathLike[str]) -> tuple[bytes, os.stat_result]:
    """The bytes and stat of a regular file, never opening anything else.

    Named pipes, sockets and devices are refused before they are opened (reading a pipe would
    wait forever), as are symbolic links that loop or point nowhere: ImageFileError with a plain
    message. Other failures to read raise OSError.
    """
    try:
        info = os.stat(path)
    except OSError as exc:
        raise _stat_problem(path, exc) from exc
    if not stat.S_ISREG(info.st_mode):
        raise ImageFileError(_not_regular(info.st_mode))
    # O_NONBLOCK: should the file be swapped for a pipe after the check, opening it still
    # returns at once, and the fstat below refuses it.
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)
    flags |= getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ImageFileError(_not_regular(info.st_mode))
        return fh.read(), info


def _stat_problem(path: str | os.PathLike[str], exc: OSError) -> Exception:
    """A plain ImageFileError for a link that loops or dangles; ``exc`` itself otherwise."""
    # ELOOP; Windows says ERROR_CANT_RESOLVE_FILENAME (1921) for a link loop.
    if exc.errno == errno.ELOOP or getattr(exc, "winerror", None) == 1921:
        return ImageFileError("a symbolic link that loops back on itself (it leads to no file)")
    if isinstance(exc, FileNotFoundError):
        try:
            is_link = stat.S_ISLNK(os.lstat(path).st_mode)
        except OSError:
            is_link = False
        if is_link:
            return ImageFileError("a symbolic link whose target does not exist")
    return exc


def _not_regular(mode: int) -> str:
    if stat.S_ISDIR(mode):
        what = "a folder"
    elif stat.S_ISFIFO(mode):
        what = "a named pipe (FIFO)"
    elif stat.S_ISSOCK(mode):
        what = "a socket"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        what = "a device"
    else:
        what = "a special file"
    return f"not an image file: it is {what}, not a regular file (it was not opened)"


def probe_image_bytes(data: bytes, *, max_pixels: int = MAX_PIXELS) -> ImageProbe:
    """Size, format and infotext of an image in memory, after cheap structural checks."""
    if not data:
        raise ImageFileError("empty file (0 bytes)")
    if data.startswith(_PNG_SIGNATURE):
        return _probe_png(data, max_pixels)
    if data.startswith(b"\xff\xd8"):
        return _probe_jpeg(data, max_pixels)
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return _probe_webp(data, max_pixels)
    raise ImageFileError(_not_an_image(data))


def read_infotext(path: str | os.PathLike[str]) -> str | None:
    """A1111 infotext of an image file, None when it has none. Raises like probe_image."""
    return probe_image(path).infotext


def read_infotext_bytes(data: bytes) -> str | None:
    return probe_image_bytes(data).infotext


def _not_an_image(data: bytes) -> str:
    message = "not a PNG, JPEG or WebP image"
    known = (
        (b"GIF87a", "a GIF image"),
        (b"GIF89a", "a GIF image"),
        (b"BM", "a BMP image"),
        (b"II*\0", "a TIFF image"),
        (b"MM\0*", "a TIFF image"),
        (b"\0\0\0\x0cjP  ", "a JPEG 2000 image"),
        (b"8BPS", "a Photoshop document"),
        (b"%PDF", "a PDF document"),
        (b"PK\x03\x04", "a ZIP archive"),
    )
    for magic, what in known:
        if data.startswith(magic):
            return f"{message} (it looks like {what})"
    if data[4:12] in (b"ftypavif", b"ftypheic", b"ftypmif1"):
        return f"{message} (it looks like an AVIF/HEIF image)"
    if data.startswith(b"RIFF"):
        return f"{message} (a RIFF file, but not WebP)"
    if data.startswith(_PNG_SIGNATURE[:4]):
        return f"{message} (it starts like a PNG but its signature is damaged)"
    if _looks_like_text(data[:1024]):
        return f"{message} (it looks like a text file)"
    return message


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # The sample may end in the middle of a multi-byte character.
        if exc.start < len(head) - 3:
            return False
        text = head[: exc.start].decode("utf-8")
    return all(c.isprintable() or c in "\t\r\n\f" for c in text)


def _check_size(width: int, height: int, kind: str, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageFileError(f"corrupt {kind}: the header gives a size of {width}×{height} pixels")
    if width * height > max_pixels:
        raise ImageFileError(
            f"image too large: {width}×{height} pixels (limit {max_pixels:,}) — "
            "refused as a possible decompression bomb"
        )


# --- PNG ----------------------------------------------------------------------------------------


def _probe_png(data: bytes, max_pixels: int) -> ImageProbe:
    size = len(data)
    # IHDR must come first: 8-byte signature, then length 13, type, 13 bytes of data, CRC.
    if size < 33:
        raise ImageFileError("truncated PNG: data ends before the image end")
    length, ctype = struct.unpack_from(">I4s", data, 8)
    if ctype != b"IHDR" or length != 13:
        raise ImageFileError("corrupt PNG: the IHDR header chunk is missing")
    width, height = struct.unpack_from(">II", data, 16)
    _check_size(width, height, "PNG", max_pixels)

    view = memoryview(data)
    crc32 = zlib.crc32
    unpack_from = struct.unpack_from
    infotext: str | None = None
    ours: str | None = None
    warnings: list[str] = []
    seen_idat = False
    pos = 8
    while True:
        if pos + 12 > size:
            raise ImageFileError("truncated PNG: data ends before the image end")
        length, ctype = unpack_from(">I4s", data, pos)
        data_end = pos + 8 + length
        if length > 0x7FFFFFFF:
            raise ImageFileError(f"corrupt PNG: impossible length in chunk {_chunk_name(ctype)}")
        if data_end + 4 > size:
            raise ImageFileError("truncated PNG: data ends before the image end")
        (stored_crc,) = unpack_from(">I", data, data_end)
        # The CRC covers the chunk type and data; memoryview avoids copying big IDATs.
        if crc32(view[pos + 4 : data_end]) != stored_crc:
            raise ImageFileError(f"corrupt PNG: bad checksum in chunk {_chunk_name(ctype)}")
        if ctype == b"IDAT":
            seen_idat = True
        elif ctype == b"IEND":
            break
        elif ctype in (b"tEXt", b"zTXt", b"iTXt"):
            body = view[pos + 8 : data_end]
            try:
                if infotext is None:
                    infotext = _png_text(ctype, body)
                if ours is None:
                    ours = _png_text(ctype, body, CHARSTUDIO_KEY)
            except _TextTooLarge:
                if _TOO_LARGE_WARNING not in warnings:
                    warnings.append(_TOO_LARGE_WARNING)
        pos = data_end + 4
    if not seen_idat:
        raise ImageFileError("corrupt PNG: it holds no image data (no IDAT chunk)")
    return ImageProbe(width, height, "PNG", infotext, ours, tuple(warnings))


def _chunk_name(ctype: bytes) -> str:
    name = ctype.decode("latin-1")
    return name if name.isascii() and name.isalpha() else repr(ctype)


def _png_text(ctype: bytes, chunk: memoryview, key: str = INFOTEXT_KEY) -> str | None:
    """Text of a ``key`` chunk (A1111's ``parameters``), None for other keys or unreadable
    chunks; raises _TextTooLarge for text over MAX_INFOTEXT_BYTES."""
    prefix = bytes(chunk[: len(key) + 1])
    if prefix != key.encode() + b"\0":
        return None  # checked before copying the chunk: it may be huge
    rest = chunk[len(prefix) :]
    try:
        if ctype == b"tEXt":
            return _capped(rest).decode("latin-1")
        if ctype == b"zTXt":
            # rest[0] is the compression method; 0 (zlib) is the only one defined.
            return _inflate(rest[1:]).decode("latin-1")
        # iTXt: compression flag, method, language tag\0, translated keyword\0, UTF-8 text.
        # Room for the tags; deflated data is never much larger than what it inflates to.
        if len(rest) > MAX_INFOTEXT_BYTES + 4096:
            raise _TextTooLarge
        body = bytes(rest)
        compressed = body[:1] == b"\x01"
        _language, _, body = body[2:].partition(b"\0")
        _translated, _, text = body.partition(b"\0")
        if compressed:
            text = _inflate(memoryview(text))
        return _capped(memoryview(text)).decode("utf-8", errors="replace")
    except _TextTooLarge:
        raise
    except (zlib.error, ValueError):
        # The pixels may be fine; an unreadable text chunk just means no infotext.
        return None


def _capped(text: memoryview) -> bytes:
    if len(text) > MAX_INFOTEXT_BYTES:
        raise _TextTooLarge
    return bytes(text)


def _inflate(data: memoryview) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, MAX_INFOTEXT_BYTES + 1)
    if len(out) > MAX_INFOTEXT_BYTES:
        raise _TextTooLarge
    return out


# --- JPEG ---------------------------------------------------------------------------------------

# Start-of-frame markers (baseline, progressive, lossless, ...); DHT, JPG and DAC share the range.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE_MARKERS = frozenset(range(0xD0, 0xD8)) | {0x01}  # RSTn and TEM carry no length


def _probe_jpeg(data: bytes, max_pixels: int) -> ImageProbe:
    size = len(data)
    truncated = "truncated JPEG: data ends before the image end"
    width: int | None = None
    height: int | None = None
    exif: bytes | None = None
    pos = 2
    while True:
        if pos + 2 > size:
            raise ImageFileError(truncated)
        if data[pos] != 0xFF:
            raise ImageFileError("corrupt JPEG: expected a marker and found other data")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _STANDALONE_MARKERS:
            pos += 2
            continue
        if marker == 0xD9:
            raise ImageFileError("corrupt JPEG: the image ends before any image data")
        if pos + 4 > size:
            raise ImageFileError(truncated)
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2:
            raise ImageFileError("corrupt JPEG: impossible segment length")
        body_start, body_end = pos + 4, pos + 2 + length
        if body_end > size:
            raise ImageFileError(truncated)
        if marker in _SOF_MARKERS and width is None:
            if length < 7:
                raise ImageFileError("corrupt JPEG: frame header too short")
            height, width = struct.unpack_from(">HH", data, body_start + 1)
            _check_size(width, height, "JPEG", max_pixels)
        elif marker == 0xE1 and exif is None and data.startswith(b"Exif\0\0", body_start):
            exif = data[body_start + 6 : body_end]
        elif marker == 0xDA:  # start of scan: entropy-coded data follows up to EOI
            if width is None or height is None:
                raise ImageFileError("corrupt JPEG: image data comes before the frame header")
            # FF D9 cannot occur inside entropy-coded data (FF is stuffed), so an EOI after
            # the first scan means the file is complete; trailing bytes after it are allowed.
            if not data.endswith(b"\xff\xd9") and data.rfind(b"\xff\xd9", body_end) < 0:
                raise ImageFileError(truncated)
            break
        pos = body_end
    assert width is not None and height is not None  # checked at the start of scan
    infotext, warnings = _exif_infotext(exif) if exif else (None, ())
    return ImageProbe(width, height, "JPEG", infotext, warnings=warnings)


# --- WebP ---------------------------------------------------------------------------------------


def _probe_webp(data: bytes, max_pixels: int) -> ImageProbe:
    size = len(data)
    truncated = "truncated WebP: data ends before the image end"
    (riff_size,) = struct.unpack_from("<I", data, 4)
    riff_end = riff_size + 8
    # Trailing bytes after the RIFF container are tolerated; missing bytes are not.
    if riff_end > size:
        raise ImageFileError(truncated)
    width: int | None = None
    height: int | None = None
    exif: bytes | None = None
    pos = 12
    while pos < riff_end:
        if pos + 8 > riff_end:
            raise ImageFileError("corrupt WebP: chunk header runs past the end of the file")
        ctype, length = struct.unpack_from("<4sI", data, pos)
        body_start = pos + 8
        body_end = body_start + length
        if body_end > riff_end:
            raise ImageFileError(truncated)
        body = data[body_start : min(body_end, body_start + 30)]
        if width is None:
            width, height = _webp_size(ctype, body)
            _check_size(width, height, "WebP", max_pixels)
        if ctype == b"EXIF" and exif is None:
            exif = data[body_start:body_end]
            exif = exif.removeprefix(b"Exif\0\0")  # some writers keep the JPEG APP1 prefix
        pos = body_end + (length & 1)  # chunks are padded to even sizes
    if width is None or height is None:
        raise ImageFileError("corrupt WebP: it holds no image data")
    infotext, warnings = _exif_infotext(exif) if exif else (None, ())
    return ImageProbe(width, height, "WEBP", infotext, warnings=warnings)


def _webp_size(ctype: bytes, body: bytes) -> tuple[int, int]:
    """Canvas size from the first chunk (VP8X extended, VP8 lossy or VP8L lossless)."""
    if ctype == b"VP8X" and len(body) >= 10:
        width = int.from_bytes(body[4:7], "little") + 1
        height = int.from_bytes(body[7:10], "little") + 1
        return width, height
    if ctype == b"VP8 " and len(body) >= 10 and body[3:6] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", body, 6)
        return width & 0x3FFF, height & 0x3FFF
    if ctype == b"VP8L" and len(body) >= 5 and body[0] == 0x2F:
        bits = int.from_bytes(body[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    raise ImageFileError("corrupt WebP: the image header is missing or damaged")


# --- EXIF UserComment ---------------------------------------------------------------------------


def _exif_infotext(tiff: bytes) -> tuple[str | None, tuple[str, ...]]:
    """UserComment from a TIFF-structured EXIF block (None if absent, unreadable or over
    MAX_INFOTEXT_BYTES) and warnings.

    A broken EXIF block never rejects the image: the pixels may be perfectly fine.
    """
    try:
        raw = _find_user_comment(tiff)
    except (struct.error, IndexError, ValueError):
        return None, ()
    if raw is None:
        return None, ()
    if len(raw) > MAX_INFOTEXT_BYTES + 8:  # the 8-byte character-code header
        return None, (_TOO_LARGE_WARNING,)
    text = decode_exif_usercomment(raw)
    return (text if text else None), ()


def _find_user_comment(tiff: bytes) -> bytes | None:
    if tiff[:4] == b"II*\0":
        order = "<"
    elif tiff[:4] == b"MM\0*":
        order = ">"
    else:
        return None
    (ifd0,) = struct.unpack_from(order + "I", tiff, 4)
    entries = _ifd_entries(tiff, order, ifd0)
    # A1111/piexif put it in the Exif sub-IFD; tolerate writers that put it in IFD0.
    if _USER_COMMENT_TAG in entries:
        return _entry_bytes(tiff, order, entries[_USER_COMMENT_TAG])
    if _EXIF_IFD_TAG not in entries:
        return None
    _type, _count, value_pos = entries[_EXIF_IFD_TAG]
    (exif_ifd,) = struct.unpack_from(order + "I", tiff, value_pos)
    entry = _ifd_entries(tiff, order, exif_ifd).get(_USER_COMMENT_TAG)
    return None if entry is None else _entry_bytes(tiff, order, entry)


def _ifd_entries(tiff: bytes, order: str, offset: int) -> dict[int, tuple[int, int, int]]:
    """tag -> (type, count, position of the 4-byte value/offset field)."""
    (count,) = struct.unpack_from(order + "H", tiff, offset)
    entries: dict[int, tuple[int, int, int]] = {}
    for i in range(count):
        entry = offset + 2 + 12 * i
        tag, typ, n = struct.unpack_from(order + "HHI", tiff, entry)
        entries.setdefault(tag, (typ, n, entry + 8))
    return entries


def _entry_bytes(tiff: bytes, order: str, entry: tuple[int, int, int]) -> bytes | None:
    typ, count, value_pos = entry
    if typ not in (1, 2, 7):  # BYTE, ASCII, UNDEFINED: one byte per item
        return None
    if count <= 4:
        return tiff[value_pos : value_pos + count]
    (offset,) = struct.unpack_from(order + "I", tiff, value_pos)
    if offset + count > len(tiff):
        raise ValueError("UserComment runs past the EXIF block")
    return tiff[offset : offset + count]


def encode_exif_usercomment(text: str) -> bytes:
    """EXIF UserComment value as A1111 writes it (piexif's "unicode"): header + UTF-16BE."""
    return _UNICODE_HEADER + text.encode("utf-16-be")


def decode_exif_usercomment(raw: bytes) -> str:
    """Decode an EXIF UserComment value, tolerating the variants found in the wild."""
    header, body = raw[:8], raw[8:]
    if header == _UNICODE_HEADER:
        text = _decode_utf16(body)
    elif header == _ASCII_HEADER:
        # Declared ASCII, but tools commonly put UTF-8 there.
        text = body.decode("utf-8", errors="replace")
    elif header == _JIS_HEADER:
        text = body.decode("shift_jis", errors="replace")
    elif header == _UNDEFINED_HEADER:
        text = _decode_utf16(body) if _looks_utf16(body) else body.decode("utf-8", "replace")
    else:
        text = raw.decode("utf-8", errors="replace")
    # Fixed-size fields are often padded with NULs (or spaces, for ASCII).
    return text.rstrip("\0").rstrip(" ") if header == _ASCII_HEADER else text.rstrip("\0")


def _looks_utf16(body: bytes) -> bool:
    if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
        return True
    return len(body) >= 2 and body.count(0) * 3 >= len(body)


def _decode_utf16(body: bytes) -> str:
    if body[:2] == b"\xfe\xff":
        return body[2:].decode("utf-16-be", errors="replace")
    if body[:2] == b"\xff\xfe":
        return body[2:].decode("utf-16-le", errors="replace")
    # No BOM, so guess the byte order. A wrong guess usually yields control characters or
    # broken surrogates; when both readings look clean, ASCII-range characters decide: their
    # zero byte comes first in big-endian. Ties go to big-endian, what piexif and A1111 write.
    big = body.decode("utf-16-be", errors="replace")
    little = body.decode("utf-16-le", errors="replace")
    # ASCII read in the wrong byte order turns into U+2000..U+7E00 (its zero byte on the wrong
    # side): a reading made mostly of those is wrong, even when the other one holds a broken
    # character (one stray surrogate must not garble a whole infotext).
    big_swapped, little_swapped = _mostly_swapped_ascii(big), _mostly_swapped_ascii(little)
    if big_swapped != little_swapped:
        return little if big_swapped else big
    big_bad, little_bad = _implausible_chars(big), _implausible_chars(little)
    if big_bad != little_bad:
        return big if big_bad < little_bad else little
    return little if body[1::2].count(0) > body[0::2].count(0) else big


def _implausible_chars(text: str) -> int:
    return sum(1 for c in text if c in _IMPLAUSIBLE)


def _mostly_swapped_ascii(text: str) -> bool:
    swapped = sum(1 for c in text if ord(c) & 0xFF == 0 and 0x20 <= ord(c) >> 8 <= 0x7E)
    return swapped * 2 > len(text)


def make_exif_bytes(infotext: str) -> bytes:
    """A complete EXIF block carrying ``infotext`` the way A1111 (piexif) stores it.

    Pass it as ``exif=`` to Pillow's JPEG or WebP save. Built by hand because Pillow's Exif
    writes an untyped tag as BYTE, which piexif (hence A1111) does not read as a comment.
    """
    comment = encode_exif_usercomment(infotext)
    # Big-endian TIFF: header, IFD0 with one entry (Exif IFD pointer), Exif IFD with one
    # entry (UserComment, type 7 UNDEFINED), then the comment bytes.
    ifd0_offset = 8
    exif_ifd_offset = ifd0_offset + 2 + 12 + 4
    comment_offset = exif_ifd_offset + 2 + 12 + 4
    tiff = b"".join(
        (
            b"MM\0*",
            struct.pack(">I", ifd0_offset),
            struct.pack(">HHHII", 1, _EXIF_IFD_TAG, 4, 1, exif_ifd_offset),
            struct.pack(">I", 0),
            struct.pack(">HHHII", 1, _USER_COMMENT_TAG, 7, len(comment), comment_offset),
            struct.pack(">I", 0),
            comment,
        )
    )
    return b"Exif\0\0" + tiff


# --- writing ------------------------------------------------------------------------------------


def write_png(
    image: Image.Image,
    path: str | os.PathLike[str],
    infotext: str | None,
    extra_text: dict[str, str] | None = None,
) -> None:
    """Save ``image`` as PNG with A1111's ``parameters`` text chunk, atomically.

    The file is written under a hidden temporary name in the same folder, flushed to disk and
    renamed over ``path`` (see :mod:`charstudio.atomic_files`), so a crash never leaves a
    half-written image there (the importer skips dot-files).
    """
    from PIL import PngImagePlugin  # Pillow is only needed for writing

    info = PngImagePlugin.PngInfo()
    texts: dict[str, str] = {}
    if infotext is not None:
        texts[INFOTEXT_KEY] = infotext
    for key, value in (extra_text or {}).items():
        if key in texts:
            raise ValueError(f"extra_text must not contain {key!r}")
        texts[key] = value
    for key, value in texts.items():
        if _is_latin1(value):
            info.add_text(key, value)
        else:
            # tEXt is Latin-1 only; iTXt holds UTF-8 (what Pillow and A1111 do too).
            info.add_itxt(key, value)

    atomic_write(path, lambda fh: image.save(fh, format="PNG", pnginfo=info))


def _is_latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True
