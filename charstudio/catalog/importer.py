"""Importing image files into a project: the ``import`` job.

Reading, hashing and validating files runs on a small thread pool (hashlib and file reads
release the GIL); catalog writes happen on the job's thread, one committed transaction per
file, so an import killed half-way leaves only whole rows behind and can simply be re-run.

One file never stops an import: links that loop or lead nowhere, named pipes and other
special files (never opened), names the catalog cannot store and folders that cannot be read
are each listed in the report's ``failed``; parameters over the size cap are left out with a
``warnings`` entry. What a killed ``--copy`` import leaves in ``images/`` is recognised by the
next import: stale temporary files are removed, and a copy the catalog never learnt of is
reused (same sha256) instead of being copied again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charstudio.atomic_files import copy_file_atomic, remove_file
from charstudio.catalog.files import free_path
from charstudio.catalog.project import Project
from charstudio.catalog.records import ImageRecord
from charstudio.jobs.protocol import CancelToken, Job, ProgressClock
from charstudio.metadata.imagefile import (
    ImageFileError,
    ImageProbe,
    probe_image_bytes,
    read_image_file,
)
from charstudio.metadata.infotext import parse_infotext
from charstudio.portable_paths import portable_name

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
# Hidden temporary files a killed copy leaves in images/: the atomic writer's
# ``.NAME.<8 hex>.tmp`` (or ``.<8 hex>.tmp``) and ``.NAME.part``.
_TEMP_NAME = re.compile(r"\.(?:.+\.)?[0-9a-f]{8}\.tmp|\..+\.part", re.IGNORECASE | re.DOTALL)
# A temporary file untouched this long belongs to no running writer (another process may be
# importing into the same project right now: its files are left alone).
STALE_TEMP_SECONDS = 60.0
UNSTORABLE_NAME = (
    "the file name (or a folder name in its path) is not valid text (UTF-8), so the catalog "
    "cannot store it; rename it and import again, or import with --copy"
)


@dataclass
class ImportReport:
    added: int = 0
    duplicates: int = 0
    relinked: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    canceled: bool = False
    image_ids: list[int] = field(default_factory=list)

    def fail(self, path: Path | str, error: str) -> None:
        self.failed.append({"path": printable_path(path), "error": error})

    def warn(self, path: Path | str, warning: str) -> None:
        self.warnings.append({"path": printable_path(path), "warning": warning})

    def to_json(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "duplicates": self.duplicates,
            "relinked": self.relinked,
            "failed": self.failed,
            "warnings": self.warnings,
            "canceled": self.canceled,
        }


@dataclass
class _Examined:
    path: Path
    sha256: str = ""
    size: int = 0
    mtime: float = 0.0
    probe: ImageProbe | None = None
    error: str | None = None


def printable_path(path: Path | str) -> str:
    """``path`` as text that can be printed, stored and shown: bytes of a name that are not
    valid UTF-8 appear as ``\\xff``."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _storable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def collect_files(paths: Iterable[Path | str], report: ImportReport) -> list[Path]:
    """The image files named by ``paths``: files as given, folders searched recursively for
    PNG/JPEG/WebP files (caption sidecars and other files in folders are passed over).
    Folders that cannot be read are listed in ``report.failed``; whether each file is a
    readable regular file is checked when it is read."""
    files: list[Path] = []

    def unreadable(error: OSError) -> None:
        report.fail(
            error.filename or "?",
            f"cannot read this folder ({error.strerror or error}); the images in it were not "
            "imported",
        )

    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path, onerror=unreadable):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                files.extend(
                    Path(dirpath, name)
                    for name in sorted(filenames)
                    if Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith(".")
                )
        elif path.is_file() or os.path.lexists(path):
            files.append(path)  # links that loop or dangle are reported when read
        else:
            report.fail(path, "no such file or folder")
    return list(dict.fromkeys(_resolved(p) for p in files))


def _resolved(path: Path) -> Path:
    """``path`` resolved; a link that loops or leads nowhere keeps its own name, for the
    report."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # a symbolic link loop (RuntimeError before Python 3.13)
        return Path(os.path.abspath(path))
    return resolved if os.path.exists(resolved) else Path(os.path.abspath(path))


def _examine(path: Path) -> _Examined:
    result = _Examined(path)
    try:
        data, stat = read_image_file(path)
        result.size, result.mtime = len(data), stat.st_mtime
        result.probe = probe_image_bytes(data)
        result.sha256 = hashlib.sha256(data).hexdigest()
    except ImageFileError as exc:
        result.error = str(exc)
    except OSError as exc:
        result.error = f"cannot read the file ({exc.strerror or exc})"
    return result


def _record(catalog_path: str, item: _Examined, job_id: int | None) -> ImageRecord:
    assert item.probe is not None
    return image_record(
        catalog_path,
        probe=item.probe,
        sha256=item.sha256,
        file_size=item.size,
        file_mtime=item.mtime,
        job_id=job_id,
    )


def image_record(
    catalog_path: str,
    *,
    probe: ImageProbe,
    sha256: str,
    file_size: int,
    file_mtime: float,
    job_id: int | None = None,
    sweep: dict[str, str] | None = None,
) -> ImageRecord:
    """The catalog row of an image file: its probe plus what its infotext says.

    Imported and generated images both go through here, so a generated image's row is exactly
    what importing its file would give.
    """
    record = ImageRecord(
        path=catalog_path,
        sha256=sha256,
        file_size=file_size,
        file_mtime=file_mtime,
        width=probe.width,
        height=probe.height,
        format=probe.format,
        job_id=job_id,
        sweep=dict(sweep or _stored_sweep(probe)),
    )
    if probe.infotext:
        params = parse_infotext(probe.infotext)
        record.infotext = probe.infotext
        record.prompt = params.prompt
        record.negative_prompt = params.negative_prompt
        record.seed = params.seed
        record.steps = params.steps
        record.sampler = params.sampler
        record.schedule_type = params.schedule_type
        record.cfg_scale = params.cfg_scale
        record.size = params.settings.get("Size")
        record.model = params.model
        record.model_hash = params.model_hash
        record.clip_skip = params.clip_skip
        record.extras = dict(params.extras)
    return record


def _stored_sweep(probe: ImageProbe) -> dict[str, str]:
    """The sweep coordinates a charstudio PNG carries, so an image imported into another
    project (or a rebuilt catalog) keeps them; nothing for anything unreadable."""
    if not probe.charstudio:
        return {}
    try:
        sweep = json.loads(probe.charstudio).get("sweep") or {}
    except (ValueError, AttributeError):
        return {}
    if not isinstance(sweep, dict):
        return {}
    return {str(k): str(v) for k, v in sweep.items()}


def _copy_name(source: Path) -> str:
    """The name a copy of ``source`` gets: bytes of the name that are not valid UTF-8 become
    ``_``, so the catalog can store it."""
    return "".join("_" if 0xD800 <= ord(c) <= 0xDFFF else c for c in source.name)


def _copy_into(project: Project, source: Path, sha256: str = "", size: int = -1) -> Path:
    """Copy ``source`` into the project's images/ under a free name, atomically.

    A file already there under the name a copy of ``source`` would get (``NAME``,
    ``NAME-1`` …) that the catalog does not know and that has the same content is reused:
    the copy an import killed before its catalog row was written.
    """
    if sha256:
        leftover = _leftover_copy(project, source, sha256, size)
        if leftover is not None:
            return leftover
    dest = free_path(project.images_dir, _copy_name(source))
    copy_file_atomic(source, dest)
    return dest


def _leftover_copy(project: Project, source: Path, sha256: str, size: int) -> Path | None:
    first = project.images_dir / portable_name(_copy_name(source), fallback="image")
    stem, suffix = first.stem, first.suffix
    candidate, n = first, 1
    while os.path.lexists(candidate):
        if _same_orphan(project, candidate, sha256, size):
            return candidate
        candidate = first.with_name(f"{stem}-{n}{suffix}")
        n += 1
    return None


def _same_orphan(project: Project, path: Path, sha256: str, size: int) -> bool:
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size != size:
            return False
        if project.catalog.image_by_path(project.catalog_path_for(path)) is not None:
            return False
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return False
    return digest.hexdigest() == sha256


def remove_stale_temp_files(folder: Path, *, older_than: float | None = None) -> int:
    """Delete the hidden temporary files a killed copy or write left in ``folder`` (and its
    sub-folders) and that nothing has touched for ``older_than`` seconds (default
    :data:`STALE_TEMP_SECONDS`). Returns how many."""
    older_than = STALE_TEMP_SECONDS if older_than is None else older_than
    removed = 0
    now = time.time()
    for dirpath, _dirnames, filenames in os.walk(folder):
        for name in filenames:
            if not _TEMP_NAME.fullmatch(name):
                continue
            path = Path(dirpath, name)
            try:
                info = path.lstat()
                # ctime too: copying the source's times onto a finished copy backdates mtime.
                if now - max(info.st_mtime, info.st_ctime) < older_than:
                    continue
                if remove_file(path):
                    removed += 1
            except OSError:
                continue  # open elsewhere or gone already: a later import tries again
    return removed


def _remove_copy(copied: Path | None) -> None:
    """Take back a copy whose catalog row could not be added. One that stays open elsewhere
    (antivirus scanning it) is left behind rather than hiding the real failure."""
    if copied is not None:
        with contextlib.suppress(OSError):
            remove_file(copied)


def _is_inside(path: Path, folder: Path) -> bool:
    return path.is_relative_to(folder)


def import_images(
    project: Project,
    paths: Iterable[Path | str],
    *,
    copy: bool = False,
    cancel: CancelToken | None = None,
    job_id: int | None = None,
    workers: int = 2,
) -> Job[ImportReport]:
    """Add image files to the project. Yields progress; returns an ``ImportReport``.

    Without ``copy`` files outside the project are catalogued in place by absolute path;
    with it they are copied into ``images/``. A file already in the catalog (same sha256)
    is a duplicate, unless the catalogued copy went missing: then the catalog is pointed at
    the new location ("relinked") and the artist's decisions are kept.
    """
    report = ImportReport()
    remove_stale_temp_files(project.images_dir)
    files = collect_files(paths, report)
    clock = ProgressClock(len(files))
    catalog = project.catalog
    yield clock(0, f"Importing {len(files)} files")

    known = catalog.known_sha256()
    ahead = max(4, workers * 4)  # bounded read-ahead keeps memory flat and cancel prompt
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="import") as pool:
        pending: deque[Future[_Examined]] = deque()
        queue = iter(files)
        for path in queue:
            pending.append(pool.submit(_examine, path))
            if len(pending) >= ahead:
                break
        done = 0
        while pending:
            if cancel is not None and cancel.canceled:
                report.canceled = True
                for future in pending:
                    future.cancel()
                break
            item = pending.popleft().result()
            next_path = next(queue, None)
            if next_path is not None:
                pending.append(pool.submit(_examine, next_path))
            _add_one(project, item, report, known, copy=copy, job_id=job_id)
            done += 1
            yield clock(done, printable_path(item.path.name))
    return report


def _add_one(
    project: Project,
    item: _Examined,
    report: ImportReport,
    known: set[str],
    *,
    copy: bool,
    job_id: int | None,
) -> None:
    if item.error is not None:
        report.fail(item.path, item.error)
        return
    catalog = project.catalog
    inside = _is_inside(item.path, project.root)
    in_place = inside or not copy
    if in_place and not _storable(project.catalog_path_for(item.path)):
        if item.sha256 in known:
            report.duplicates += 1
        else:
            report.fail(item.path, UNSTORABLE_NAME)
        return
    if item.sha256 in known:
        existing = catalog.image_by_sha256(item.sha256)
        if existing is None or project.file_path(existing.path).is_file():
            report.duplicates += 1
            return
        target = item.path if in_place else _copy_into(project, item.path, item.sha256, item.size)
        catalog.relink_image(existing.id or 0, project.catalog_path_for(target), item.mtime)
        report.relinked += 1
        return

    copied: Path | None = None
    try:
        if not in_place:
            copied = _copy_into(project, item.path, item.sha256, item.size)
        target = copied or item.path
        image_id = catalog.add_image(_record(project.catalog_path_for(target), item, job_id))
    except UnicodeEncodeError:
        _remove_copy(copied)
        report.fail(item.path, UNSTORABLE_NAME)
        return
    except sqlite3.IntegrityError:
        _remove_copy(copied)
        report.fail(
            item.path,
            "this path is already in the catalog with other content (the file changed since "
            "it was imported)",
        )
        return
    except OSError as exc:
        _remove_copy(copied)
        report.fail(item.path, f"cannot copy into the project ({exc.strerror or exc})")
        return
    known.add(item.sha256)
    report.added += 1
    report.image_ids.append(image_id)
    for warning in item.probe.warnings if item.probe else ():
        report.warn(item.path, f"{warning}; it was imported without them")
