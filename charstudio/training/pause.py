"""Pausing a training run from anywhere: a ``PAUSE`` file in the run's folder.

The training loop looks for the file after every optimizer step (one ``stat`` call). When it is
there, the loop saves the step's checkpoint and resume state, marks the run ``paused``, removes
the file and ends the job normally. A file rather than an in-memory flag, because the one who
asks may be another thread (the GUI), another process (``charstudio`` in a terminal) or a
person who cannot reach either; and a request made while the run is between jobs (queued, or
not yet started after a crash) is still honoured when it starts. A run resumes with a new job
whose params name ``resume_run_id``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from charstudio.atomic_files import remove_file

if TYPE_CHECKING:
    from charstudio.catalog.project import Project

__all__ = ["PAUSE_FILE", "clear_pause", "pause_requested", "request_pause", "request_pause_job"]

PAUSE_FILE = "PAUSE"


def request_pause(project: Project, run_id: int) -> Path:
    """Ask the run to pause after its current step; returns the flag file written."""
    from charstudio.training.records import get_run

    run = get_run(project.catalog, run_id)
    flag = project.root / run.folder / PAUSE_FILE
    flag.parent.mkdir(parents=True, exist_ok=True)
    flag.write_text("pause requested\n", encoding="utf-8")
    return flag


def request_pause_job(project: Project, job_id: int) -> Path | None:
    """Pause the run a queued job trains; None when the job has not created its run yet."""
    from charstudio.training.records import run_for_job

    run = run_for_job(project.catalog, job_id)
    return request_pause(project, run.id) if run is not None else None


def pause_requested(folder: Path) -> bool:
    return (folder / PAUSE_FILE).exists()


def clear_pause(folder: Path) -> None:
    """Remove the flag; retried while another program holds it open (Windows), then
    :class:`~charstudio.atomic_files.FileInUseError` names it."""
    remove_file(folder / PAUSE_FILE)
