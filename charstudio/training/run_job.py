"""What every training job does around its own training loop: open or resume the run's folder
and ``runs`` row, load the model, build and prepare the trainer, and record how the run ended
(done, paused, canceled, failed, out of memory) while always giving the GPU memory back.

Textual inversion (:mod:`~charstudio.training.ti`) and LoRA (:mod:`~charstudio.training.lora`)
pass their own pieces (loader, trainer, loop, result) to :func:`run_training`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TypeVar

from charstudio.jobs.protocol import JobCanceled, JobError
from charstudio.portable_paths import WINDOWS_MAX_PATH, path_length_problem
from charstudio.training import records
from charstudio.training.pause import clear_pause, pause_requested
from charstudio.training.run_files import (
    LOSS_CSV,
    SETTINGS_JSON,
    append_loss_row,
    latest_state,
    newest_state_step,
    read_loss_rows,
    write_json,
    write_loss_rows,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from charstudio.catalog.project import Project
    from charstudio.jobs.protocol import CancelToken, Job, Progress, ProgressClock
    from charstudio.training.ti_trainer import StepStats

__all__ = [
    "RUNS_FOLDER",
    "RUN_FOLDER_NAME_LENGTH",
    "TrainingError",
    "new_run_folder",
    "open_run",
    "run_training",
    "step_detail",
    "train_steps",
    "windows_path_problem",
]

RUNS_FOLDER = "runs"
RUN_FOLDER_NAME_LENGTH = 24  # characters of the trained name in a run folder's name

R = TypeVar("R")


class TrainingError(JobError):
    """A run that cannot start or went wrong, with a message meant for the artist."""


# -- the run folder and its row ------------------------------------------------------------------


def run_folder_name(kind: str, number: int, name: str) -> str:
    """``runs/<kind>-<NNN>-<name>``, the name cut to :data:`RUN_FOLDER_NAME_LENGTH` characters
    (the files inside carry the whole name) to keep paths short for Windows."""
    return f"{RUNS_FOLDER}/{kind}-{number:03d}-{name[:RUN_FOLDER_NAME_LENGTH]}"


def new_run_folder(project: Project, kind: str, name: str) -> str:
    """The first ``runs/<kind>-<NNN>-<name>`` that no run row and no folder uses yet."""
    taken = {run.folder for run in records.list_runs(project.catalog, kind=None)}
    number = 1
    while True:
        folder = run_folder_name(kind, number, name)
        if folder not in taken and not (project.root / folder).exists():
            return folder
        number += 1


def windows_path_problem(deepest: Path, name_word: str) -> str | None:
    """Why a run whose longest file path is ``deepest`` would not fit Windows' path limit, in
    words advising a shorter ``name_word``; None when it fits (always, off Windows or with
    long paths on)."""
    if path_length_problem(deepest) is None:
        return None
    return (
        f"the run's files would have paths up to {len(str(deepest))} characters long (e.g. "
        f"{deepest}), but Windows allows only {WINDOWS_MAX_PATH} (long paths are not enabled "
        f"on this PC); use a shorter {name_word} or move the project nearer the top of the drive"
    )


def open_run(
    project: Project,
    job_id: int,
    *,
    kind: str,
    name: str,
    run: records.RunRecord | None,
    new_params: Callable[[], dict[str, Any]],
    resumed_params: Callable[[dict[str, Any]], dict[str, Any]],
    image_ids: Iterable[int],
) -> tuple[int, Path]:
    """Create the run's row and folder (``run`` None), or mark ``run`` running again with
    ``resumed_params(its stored params)`` saved to its row and settings file."""
    catalog = project.catalog
    if run is None:
        folder_name = new_run_folder(project, kind, name)
        extra = {} if kind == "ti" else {"kind": kind}  # the row's default kind is "ti"
        run_id = records.create_run(
            catalog,
            name=name,
            folder=folder_name,
            params=new_params(),
            job_id=job_id or None,
            **extra,
        )
        records.add_run_images(catalog, run_id, image_ids)
    else:
        run_id, folder_name = run.id, run.folder
        stored = resumed_params(run.params)
        records.set_run_status(catalog, run_id, "running", job_id=job_id or None, params=stored)
        write_json(project.root / folder_name / SETTINGS_JSON, stored)
    folder = project.root / folder_name
    folder.mkdir(parents=True, exist_ok=True)
    return run_id, folder


def restore_loss_log(folder: Path, step: int) -> None:
    """Keep the loss rows up to the resumed step (later ones are trained again)."""
    rows = [row for row in read_loss_rows(folder / LOSS_CSV) if int(row["step"]) <= step]
    write_loss_rows(folder / LOSS_CSV, rows)


# -- the job's life ------------------------------------------------------------------------------


def _prepare_trainer(
    trainer: Any,
    folder: Path,
    *,
    resumed: bool,
    clock: ProgressClock,
    run_id: int,
    cancel: CancelToken,
    shown_step: int,
) -> Job[Any]:
    """Encode the trainer's images and, for a resumed run, load its newest state."""
    try:
        for done, total in trainer.prepare():
            cancel.raise_if_canceled()
            message = f"Encoding images {done}/{total}"
            yield clock(shown_step, message, run_id=run_id, step=shown_step)
        state = latest_state(folder) if resumed else None
        if state is not None:
            trainer.load_state_dict(state)
    except BaseException:
        trainer.close()
        raise
    restore_loss_log(folder, trainer.step)
    return trainer


def run_training(
    project: Project,
    run_id: int,
    folder: Path,
    *,
    model: str,
    resumed: bool,
    end_step: int,
    clock: ProgressClock,
    cancel: CancelToken,
    load: Callable[[], Any],
    run_params: Callable[[Any], dict[str, Any]],
    make_trainer: Callable[[Any], Any],
    train: Callable[[Any, Any], Job[str]],
    result: Callable[[str, int], R],
    out_of_memory_message: Callable[[], str],
) -> Job[R]:
    """Run one training job from its opened run to its result.

    ``load()`` gives the model components; for a new run ``run_params(components)`` is stored
    as the run's params; ``make_trainer(components)`` builds the trainer, prepared here;
    ``train(trainer, components)`` trains and returns "done" or "paused";
    ``result(status, step)`` builds what the job returns. A run already at ``end_step`` is
    marked done without loading anything. Cancel records ``canceled``; an error records
    ``failed`` with its message (``out_of_memory_message()`` for an out-of-memory error, raised
    as a :class:`TrainingError`). The trainer is closed and GPU memory freed however it ends.
    """
    catalog = project.catalog
    trainer: Any = None
    components: Any = None
    step = newest_state_step(folder) if resumed else 0
    if resumed and step >= end_step:  # finished already: nothing to load
        clear_pause(folder)
        records.set_run_status(catalog, run_id, "done")
        return result("done", step)
    try:
        yield clock(step, f"Loading {model}", run_id=run_id, step=step)
        components = load()
        if not resumed:
            params = run_params(components)
            records.set_run_status(catalog, run_id, "running", params=params)
            write_json(folder / SETTINGS_JSON, params)
        trainer = yield from _prepare_trainer(
            make_trainer(components),
            folder,
            resumed=resumed,
            clock=clock,
            run_id=run_id,
            cancel=cancel,
            shown_step=step,
        )
        step = trainer.step
        status = yield from train(trainer, components)
        step = trainer.step
        clear_pause(folder)  # honoured now, or too late to matter
        records.set_run_status(catalog, run_id, status)
        return result(status, step)
    except JobCanceled:
        records.set_run_status(catalog, run_id, "canceled")
        step = trainer.step if trainer is not None else step
        return result("canceled", step)
    except GeneratorExit:
        # The consumer stopped iterating (the queue after a cancel, or the app closing): record
        # a cancel; otherwise leave the run "running" so the re-queued job resumes it.
        if cancel.canceled:
            records.set_run_status(catalog, run_id, "canceled")
        raise
    except Exception as error:
        from charstudio.engine.runtime import is_out_of_memory

        message = out_of_memory_message() if is_out_of_memory(error) else f"{error}"
        records.set_run_status(catalog, run_id, "failed", error=message)
        if is_out_of_memory(error):
            raise TrainingError(message) from None
        raise
    finally:
        if trainer is not None:
            trainer.close()
        del trainer, components
        from charstudio.engine.runtime import free_gpu_memory

        free_gpu_memory()


def train_steps(
    trainer: Any,
    folder: Path,
    cancel: CancelToken,
    *,
    opening: Progress,
    on_pause: Callable[[], None],
    kept: Callable[[], str],
    on_step: Callable[[Any, float], Job[None]],
) -> Job[str]:
    """Train to the trainer's end (returns "done") or until a pause is requested (calls
    ``on_pause()`` to save, returns "paused"); ``opening`` is yielded first. Each step's loss
    row is appended to the loss log, then ``on_step(stats, optimizer steps per second)`` saves
    and reports it. A non-finite step raises a :class:`TrainingError` ending with ``kept()``
    (what was saved before)."""
    from charstudio.training.ti_trainer import NonFiniteTraining

    started = time.perf_counter()
    steps_here = 0
    yield opening
    while trainer.step < trainer.end_step:
        cancel.raise_if_canceled()
        if pause_requested(folder):
            on_pause()
            return "paused"
        try:
            stats = trainer.train_step(cancel)
        except NonFiniteTraining as error:
            raise TrainingError(f"{error} {kept()}") from None
        steps_here += 1
        append_loss_row(
            folder / LOSS_CSV,
            stats.step,
            stats.loss,
            stats.learning_rate,
            stats.images_per_s,
        )
        yield from on_step(stats, steps_here / (time.perf_counter() - started))
    return "done"


def step_detail(stats: StepStats, it_per_s: float, run_id: int, **extra: Any) -> dict[str, Any]:
    """A step's progress detail; ``extra`` (e.g. the epoch) follows the step number."""
    return {
        "run_id": run_id,
        "step": stats.step,
        **extra,
        "loss": stats.loss,
        "learning_rate": stats.learning_rate,
        "it_per_s": it_per_s,
        "images_per_s": stats.images_per_s,
    }
