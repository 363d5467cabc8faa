"""Planning steps every training kind shares: which run a job continues, the images a resumed
run still has, and the problems a queued job would meet (loading no model)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from charstudio.training import records
from charstudio.training.dataset import ImageSelectionError, TrainingImage
from charstudio.training.run_job import TrainingError
from charstudio.training.settings import TrainSettingsError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from charstudio.catalog.project import Project

__all__ = ["plan_problems", "resumed_images", "run_to_continue"]


def run_to_continue(
    project: Project,
    params: dict[str, Any],
    job_id: int,
    *,
    param_keys: Iterable[str],
    what: str,
    kind: str | None = None,
    kind_name: str = "",
) -> records.RunRecord | None:
    """The run a job continues: ``resume_run_id``'s, else the one this job started before a
    crash; None for a new run. Unknown params are refused, naming them as ``what`` parameters;
    with ``kind``, a ``resume_run_id`` of another kind is refused as not a ``kind_name`` run."""
    unknown = sorted(set(params) - set(param_keys))
    if unknown:
        raise TrainingError(f"unknown {what} parameter(s): {', '.join(unknown)}")
    if params.get("resume_run_id") is not None:
        try:
            run = records.get_run(project.catalog, int(params["resume_run_id"]))
        except KeyError as error:
            raise TrainingError(str(error.args[0])) from None
        if kind is not None and run.kind != kind:
            raise TrainingError(f"run {run.id} is a {run.kind} run, not a {kind_name} run")
        return run
    if job_id:
        return records.run_for_job(project.catalog, job_id)  # this job, re-run after a crash
    return None


def resumed_images(project: Project, run: records.RunRecord) -> list[TrainingImage]:
    """The images a run trained on; refuses to resume when any file is gone."""
    images = [TrainingImage.from_json(project, item) for item in run.params.get("images", [])]
    missing = [str(image.path) for image in images if not image.path.is_file()]
    if missing:
        raise ImageSelectionError(
            f"run {run.id} cannot resume: {len(missing)} of its images are missing, e.g. "
            f"{missing[0]}"
        )
    return images


def plan_problems(project: Project, plan: Callable[[], Any]) -> tuple[list[str], list[str]]:
    """``(problems, warnings)`` of ``plan()`` (a plan with ``model`` and ``warnings``), before a
    job is queued; loads no model."""
    from charstudio.engine.model_loading import ModelLoadError
    from charstudio.engine.runner import resolve_model

    try:
        made = plan()
    except TrainSettingsError as error:
        return error.problems, []
    except (TrainingError, ValueError) as error:
        return [str(error)], []
    try:
        resolve_model(project, made.model)
    except ModelLoadError as error:
        return [str(error)], made.warnings
    return [], made.warnings
