"""Copying chosen images (with their caption sidecars) out of a project: "Export picks…"."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charstudio.atomic_files import copy_file_atomic
from charstudio.catalog.files import free_path
from charstudio.catalog.project import Project
from charstudio.jobs.protocol import CancelToken, Job, ProgressClock


@dataclass
class ExportReport:
    copied: int = 0
    captions: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    canceled: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "copied": self.copied,
            "captions": self.captions,
            "failed": self.failed,
            "canceled": self.canceled,
        }


def export_images(
    project: Project,
    image_ids: Sequence[int],
    dest: Path,
    *,
    cancel: CancelToken | None = None,
) -> Job[ExportReport]:
    """Copy the images to ``dest``; a caption ``.txt`` beside an image goes along with it.
    Existing files in ``dest`` are never overwritten: a copy gets a ``-1`` style suffix, and a
    name Windows refuses is changed into one it accepts."""
    report = ExportReport()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    clock = ProgressClock(len(image_ids))
    taken: set[str] = set()
    yield clock(0, f"Exporting {len(image_ids)} images")
    for done, image_id in enumerate(image_ids, 1):
        if cancel is not None and cancel.canceled:
            report.canceled = True
            break
        source = project.file_path(project.catalog.image(image_id).path)
        try:
            target = free_path(dest, source.name, taken)
            copy_file_atomic(source, target)
            report.copied += 1
            caption = source.with_suffix(".txt")
            if caption.is_file():
                copy_file_atomic(caption, target.with_suffix(".txt"))
                report.captions += 1
        except OSError as exc:
            report.failed.append({"path": str(source), "error": exc.strerror or str(exc)})
        yield clock(done, source.name)
    return report
