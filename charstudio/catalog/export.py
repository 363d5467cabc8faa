"""Copying chosen images (with their training captions) out of a project: "Export picks…"."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charstudio.atomic_files import copy_file_atomic, write_bytes_atomic
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
    """Copy the images to ``dest``, each with its training caption as a ``.txt`` of the same
    name (the artist's edit, else the ``.txt`` beside the image, else the caption derived from
    its prompt: see :mod:`charstudio.training.captions`). Existing files in ``dest`` are never
    overwritten: an image whose name, or whose ``.txt``'s, is taken gets a ``-1`` style suffix,
    and a name Windows refuses is changed into one it accepts."""
    from charstudio.training.captions import project_captions

    report = ExportReport()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    clock = ProgressClock(len(image_ids))
    taken: set[str] = set()
    yield clock(0, f"Exporting {len(image_ids)} images")
    captions = {c.image_id: c.text for c in project_captions(project, list(image_ids))}
    for done, image_id in enumerate(image_ids, 1):
        if cancel is not None and cancel.canceled:
            report.canceled = True
            break
        source = project.file_path(project.catalog.image(image_id).path)
        try:
            target = free_path(dest, source.name, taken)
            while target.with_suffix(".txt").exists():  # an unrelated caption: keep it
                target = free_path(dest, source.name, taken)
            copy_file_atomic(source, target)
            report.copied += 1
            text = captions.get(image_id)
            if text:
                write_bytes_atomic(target.with_suffix(".txt"), text.encode("utf-8"))
                report.captions += 1
        except OSError as exc:
            report.failed.append({"path": str(source), "error": exc.strerror or str(exc)})
        yield clock(done, source.name)
    return report
