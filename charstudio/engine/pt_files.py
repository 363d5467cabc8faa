"""``.pt`` files (torch.save's zip) that A1111's safe unpickler, ComfyUI and diffusers all read.

A1111 (``modules/safe.py``) opens a ``.pt`` as a zip and refuses it ("bad file inside ...")
unless every entry is ``<top>/data.pkl``, ``<top>/version`` or ``<top>/data/<n>``; newer
versions also allow ``<top>/byteorder`` and ``<top>/.data/serialization_id``. Recent torch
also writes ``.format_version`` and ``.storage_alignment``, which no A1111 version allows. So
torch writes the zip into memory and :func:`torch_save_bytes` copies it entry by entry, keeping
only what every A1111 version accepts:

* ``<top>/data.pkl``, ``<top>/data/<n>`` (in number order) and ``<top>/version``; the records
  left out only say what torch assumes without them (format 1, 64-byte alignment, a
  little-endian file) or are a random id, which would make the same data give other bytes.
* ``<top>`` is the name given (what ``torch.save`` to ``NAME.pt`` writes, as A1111's own
  embeddings have), not torch's ``archive``; characters a zip folder cannot hold are replaced.
* Each entry is stored uncompressed with its data at a 64-byte boundary (torch's own layout,
  which memory-mapped loading relies on), with fixed times and attributes: the same object and
  name always give the same bytes.

The pickle itself is torch's; for plain dicts of strings, numbers and float/half tensors it
needs only ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and
``torch.FloatStorage`` / ``torch.HalfStorage``, which A1111's unpickler allows.
"""

from __future__ import annotations

import io
import re
import struct
import unicodedata
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "A1111_ZIP_ENTRY",
    "blocked_global",
    "misnamed_safetensors",
    "rewrite_torch_zip",
    "torch_save_bytes",
    "zip_folder_name",
]

# The entries every A1111 version accepts (after the top folder).
A1111_ZIP_ENTRY = re.compile(r"data\.pkl|version|data/\d+")
# Records torch writes that A1111 refuses and that hold only torch's defaults or a random id.
_DEFAULT_RECORDS = {
    ".format_version": {b"1"},
    ".storage_alignment": {b"64"},
    "byteorder": {b"little"},
    ".data/serialization_id": None,  # any value: a per-save id nothing reads back
}
_ALIGNMENT = 64
_PAD_FIELD_ID = 0x4246  # "FB": the extra field torch pads its local headers with
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_FOLDER_LIMIT = 100  # characters


def zip_folder_name(name: str) -> str:
    """``name`` as the zip's top folder: no ``/`` or ``\\`` (a Windows reader turns it into
    ``/``), no control characters, not empty or dots only; at most 100 characters."""
    cleaned = "".join(
        "_" if ch in "/\\" or unicodedata.category(ch).startswith("C") else ch
        for ch in name.strip()
    )[:_FOLDER_LIMIT]
    return cleaned if cleaned.strip(". ") else "archive"


def _pad_extra(offset: int, name: bytes) -> bytes:
    """An extra field that puts an entry's data, whose local header starts at ``offset``, on a
    64-byte boundary."""
    end = offset + 30 + len(name) + 4  # local header, name, the field's own id and size
    padding = -end % _ALIGNMENT
    return struct.pack("<HH", _PAD_FIELD_ID, padding) + b"Z" * padding


def rewrite_torch_zip(data: bytes, folder: str) -> bytes:
    """The zip ``torch.save`` wrote, with only the entries A1111 accepts, under ``folder``.

    ValueError for a record that is neither A1111's nor one of torch's defaults (a newer torch
    writing something that matters, a big-endian file): better no file than a wrong one.
    """
    top = zip_folder_name(folder)
    entries: dict[str, bytes] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as source:
        names = source.namelist()
        prefix = names[0].split("/", 1)[0] + "/" if names else ""
        for name in names:
            if not name.startswith(prefix):
                raise ValueError(f"torch wrote an entry outside its folder: {name}")
            record = name[len(prefix) :]
            value = source.read(name)
            if A1111_ZIP_ENTRY.fullmatch(record):
                entries[record] = value
            elif record in _DEFAULT_RECORDS:
                allowed = _DEFAULT_RECORDS[record]
                if allowed is not None and value not in allowed:
                    raise ValueError(f"torch wrote {record} = {value!r}; A1111 cannot read that")
            else:
                raise ValueError(f"torch wrote a record A1111 refuses: {record}")
    if "data.pkl" not in entries:
        raise ValueError("torch wrote no data.pkl")

    def order(record: str) -> tuple[int, int]:
        if record == "data.pkl":
            return (0, 0)
        if record.startswith("data/"):
            return (1, int(record[5:]))
        return (2, 0)

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for record in sorted(entries, key=order):
            info = zipfile.ZipInfo(f"{top}/{record}", date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 0  # the same bytes whichever system writes the file
            info.external_attr = 0
            encoded = info.filename.encode("ascii" if info.filename.isascii() else "utf-8")
            info.extra = _pad_extra(out.tell(), encoded)
            target.writestr(info, entries[record])
    return out.getvalue()


def torch_save_bytes(obj: Any, folder: str) -> bytes:
    """``torch.save(obj)`` as bytes A1111's safe loader accepts (see the module's notes), with
    ``folder`` (sanitised by :func:`zip_folder_name`) as the zip's top folder."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return rewrite_torch_zip(buffer.getvalue(), folder)


# How torch's weights_only unpickler has named what it refused, across versions:
# "Unsupported global: GLOBAL m.f was not an allowed global by default" (2.4 on),
# "Trying to load unsupported GLOBAL m.f whose module m is blocked" (2.6 on, os/posix/nt...),
# "Trying to call reduce for unrecognized function <function f at ...>" and
# "Can only build Tensor, ... but got <class 'm.C'>".
_REFUSED_FORMS = (
    re.compile(r"GLOBAL ([\w.]+)"),
    re.compile(r"unrecognized function <(?:built-in )?(?:function|method) ([\w.]+)"),
    re.compile(r"but got <class '([\w.]+)'>"),
)


def blocked_global(message: str) -> str | None:
    """The class or function a refused pickle asked for, from torch's weights_only error
    message (any of its forms), or None when the message names none. ``os.system`` is pickled
    under its platform module's name, so ``posix.system`` is also named as ``os.system``."""
    for form in _REFUSED_FORMS:
        found = form.search(message)
        if found:
            name = found.group(1).rstrip(".")
            module, _, attr = name.rpartition(".")
            if module in ("posix", "nt"):
                return f"{name}, i.e. os.{attr}"
            return name
    return None


class RefusedPickle(Exception):
    """torch's weights_only unpickler refused the file: loading it could run code.
    ``found`` is the global it asked for, when torch's message names one."""

    def __init__(self, message: str, found: str | None) -> None:
        super().__init__(message)
        self.found = found


class UnreadableTorchFile(Exception):
    """Not a readable PyTorch file: truncated, damaged or something else entirely."""


def load_weights_only(source: Path | bytes, *, allowed: Sequence[Any] = ()) -> Any:
    """``torch.load(weights_only=True)`` of a file or its bytes, on the CPU: the one safe
    loader every reader of ``.pt``/``.ckpt``/``.bin`` files goes through. ``allowed`` are
    extra (class, name) pairs for torch's safe globals. Raises :class:`RefusedPickle` or
    :class:`UnreadableTorchFile`; callers word these for their kind of file."""
    import pickle

    import torch

    target: Any = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(target, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = blocked_global(str(exc))
        if found or "Weights only load failed" in str(exc):
            raise RefusedPickle(str(exc), found) from exc
        raise UnreadableTorchFile(str(exc)) from exc
    except Exception as exc:  # garbage bytes fail in many ways (KeyError, IndexError…)
        raise UnreadableTorchFile(f"{type(exc).__name__}: {exc}") from exc


def misnamed_safetensors(path: Path, head: bytes, label: str | None = None) -> str | None:
    """For a file named ``.safetensors`` whose first bytes (``head``) are those of a PyTorch
    pickle (torch.save's zip or a legacy pickle), the message that says so; None otherwise.
    ``label`` names the file in the message (its name by default)."""
    if Path(path).suffix.lower() != ".safetensors":
        return None
    if head[8:9] == b"{" or not (head[:2] == b"PK" or head[:1] == b"\x80"):
        return None  # a safetensors header (its length may start with 0x80), or no pickle
    return (
        f"{label or Path(path).name} is not a safetensors file (it looks like a PyTorch "
        f"pickle, .ckpt/.pt, that was renamed): give it its .ckpt or .pt name back, or get "
        "the real .safetensors file"
    )
