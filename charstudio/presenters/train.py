"""The Train panel's rules that are not widgets: saved settings and the runs list."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from charstudio.catalog import Project
from charstudio.presenters.saved_settings import apply_saved
from charstudio.training import records
from charstudio.training.run_files import newest_state_step
from charstudio.training.settings import TrainTISettings

__all__ = ["IMAGE_CHOICES", "RESUMABLE", "SETTING_KEY", "RunRow", "run_rows", "stored_state"]

SETTING_KEY = "train.ti"  # project setting: {"settings": TrainTISettings JSON, "model", ...}
IMAGE_CHOICES = (("Training set (picks)", "picks"), ("All images in the project", "all"))
RESUMABLE = ("paused", "canceled", "failed")  # runs the Resume button continues
RUNS_SHOWN = 20  # the newest runs; older ones stay in the catalog and the runs folder


@dataclass(frozen=True)
class RunRow:
    """One line of the runs list."""

    run_id: int
    name: str
    status: str  # running, paused, canceled, failed, done
    step: int  # the newest saved step
    end_step: int | None
    error: str | None = None
    created_at: str = ""


def stored_state(
    stored: object, project: Project
) -> tuple[TrainTISettings, dict[str, Any], list[str]]:
    """The settings saved in a project, the other saved choices (model, vae, images) and the
    names of saved values that were unreadable and fell back to their defaults."""
    settings = TrainTISettings.for_project(project)
    if stored is None:
        return settings, {}, []
    if not isinstance(stored, Mapping):
        return settings, {}, ["all settings"]
    raw = stored.get("settings")
    settings, dropped = apply_saved(settings, raw if isinstance(raw, Mapping) else {})
    if not isinstance(raw, Mapping):
        dropped = ["settings"]
    if not settings.name:
        settings = settings.replace(name=project.token)
    choices = {k: stored[k] for k in ("model", "vae") if isinstance(stored.get(k), str)}
    if stored.get("images") in {value for _label, value in IMAGE_CHOICES}:
        choices["images"] = stored["images"]
    return settings, choices, dropped


def _end_step(run: records.RunRecord) -> int | None:
    try:
        return TrainTISettings.from_json(run.params.get("settings")).end_step()
    except (ValueError, TypeError):  # a run written by another version: no total shown
        return None


def run_row(project: Project, run: records.RunRecord) -> RunRow:
    step = newest_state_step(project.root / run.folder)
    if not step:
        saved = records.run_checkpoints(project.catalog, run.id)
        step = saved[-1].step if saved else 0
    return RunRow(run.id, run.name, run.status, step, _end_step(run), run.error, run.created_at)


def run_rows(project: Project | None, kind: str = "ti") -> list[RunRow]:
    """The newest runs first, at most ``RUNS_SHOWN``."""
    if project is None:
        return []
    runs = records.list_runs(project.catalog, kind=kind)[::-1][:RUNS_SHOWN]
    return [run_row(project, run) for run in runs]
