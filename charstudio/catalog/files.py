"""Copying files without ever leaving a half-written one, and without overwriting any."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def copy_atomic(source: Path, target: Path) -> None:
    """Copy to a hidden temporary name beside ``target``, then rename: a crash leaves either
    no file or the whole file at ``target``."""
    tmp = target.with_name(f".{target.name}.part")
    try:
        shutil.copy2(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def free_path(folder: Path, name: str, taken: set[str] | None = None) -> Path:
    """``folder/name``, or ``name-1``, ``name-2`` … when that exists (or is in ``taken``,
    names claimed earlier in the same batch, compared case-insensitively)."""
    taken = taken if taken is not None else set()
    stem, suffix = Path(name).stem, Path(name).suffix
    candidate, n = name, 1
    while candidate.lower() in taken or (folder / candidate).exists():
        candidate = f"{stem}-{n}{suffix}"
        n += 1
    taken.add(candidate.lower())
    return folder / candidate
