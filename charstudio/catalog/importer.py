"""Importing image files into a project: the ``import`` job.

Reading, hashing and validating files runs on a small thread pool (hashlib and file reads
release the GIL); catalog writes happen on the job's thread, one committed transaction per
file, so an import killed half-way leaves only whole rows behind and can simply be re-run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
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
from charstudio.metadata.imagefile import ImageFileError, ImageProbe, probe_image_bytes
from charstudio.metadata.infotext import parse_infotext

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})


@dataclass
class ImportReport:
    added: int = 0
    duplicates: int = 0
    relinked: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    canceled: bool = False
    image_ids: list[int] = field(default_factory=list)

    def fail(self, path: Path | str, error: str) -> None:
        self.failed.append({"path": str(path), "error": error})

    def to_json(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "duplicates": self.duplicates,
            "relinked": self.relinked,
            "failed": self.failed,
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


def collect_files(paths: Iterable[Path | str], report: ImportReport) -> list[Path]:
    """The image files named by ``paths``: files as given, folders searched recursively for
    PNG/JPEG/WebP files (caption sidecars and other files in folders are passed over)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                files.extend(
                    Path(dirpath, name)
                    for name in sorted(filenames)
                    if Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith(".")
                )
        elif path.is_file():
            files.append(path)
        else:
            report.fail(path, "no such file or folder")
    return list(dict.fromkeys(p.resolve() for p in files))


def _examine(path: Path) -> _Examined:
    result = _Examined(path)
    try:
        stat = path.stat()
        with path.open("rb") as fh:
            data = fh.read()
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


def _copy_into(project: Project, source: Path) -> Path:
    """Copy ``source`` into the project's images/ under a free name, atomically."""
    dest = free_path(project.images_dir, source.name)
    copy_file_atomic(source, dest)
    return dest


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
            yield clock(done, item.path.name)
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
    if item.sha256 in known:
        existing = catalog.image_by_sha256(item.sha256)
        if existing is None or project.file_path(existing.path).is_file():
            report.duplicates += 1
            return
        target = item.path if (inside or not copy) else _copy_into(project, item.path)
        catalog.relink_image(existing.id or 0, project.catalog_path_for(target), item.mtime)
        report.relinked += 1
        return

    copied: Path | None = None
    try:
        if copy and not inside:
            copied = _copy_into(project, item.path)
        target = copied or item.path
        image_id = catalog.add_image(_record(project.catalog_path_for(target), item, job_id))
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
