"""Choosing file names in a folder without overwriting any file already there.

Copies themselves are made with :func:`charstudio.atomic_files.copy_file_atomic`, so a crash
leaves either no file or the whole file at the target.
"""

from __future__ import annotations

from pathlib import Path

from charstudio.portable_paths import portable_name


def free_path(folder: Path, name: str, taken: set[str] | None = None) -> Path:
    """``folder/name``, or ``name-1``, ``name-2`` … when that exists (or is in ``taken``,
    names claimed earlier in the same batch, compared case-insensitively). ``name`` is first
    made one that Windows accepts (see :func:`~charstudio.portable_paths.portable_name`)."""
    taken = taken if taken is not None else set()
    name = portable_name(name, fallback="image")
    stem, suffix = Path(name).stem, Path(name).suffix
    candidate, n = name, 1
    while candidate.lower() in taken or (folder / candidate).exists():
        candidate = f"{stem}-{n}{suffix}"
        n += 1
    taken.add(candidate.lower())
    return folder / candidate
