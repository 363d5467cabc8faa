"""The textual-inversion training job, A1111-compatible: ``train_ti_job(project, params, cancel,
job_id)``, a generator of :class:`~charstudio.jobs.protocol.Progress` returning a
:class:`TrainResult`.

Params (JSON, what the queue stores)::

    {
      "settings": {...},        # TrainTISettings.to_json(); missing keys take the defaults,
                                # "name": "" means the project's token
      "model": "v1-5-pruned-emaonly",  # checkpoint file, diffusers folder or name (new runs)
      "vae": null,              # optional separate VAE file
      "images": "picks",        # "picks" | "all" | [image ids, image paths, folders]
      "resume_run_id": null,    # continue that run from its newest saved state
      "max_steps": null,        # with resume_run_id: train on to this many steps
      "device": null            # "cuda", "cpu"...; default: the project's engine setting
    }

A new run gets a folder ``runs/ti-<NNN>-<name>`` (see :mod:`~charstudio.training.run_files`),
a ``runs`` row (kind ``ti``), ``run_images`` rows and a ``checkpoints`` row per saved step.
Step numbers count optimizer steps: ``NAME-40`` is the embedding after 40 steps of
``batch × accumulation`` images.

Pause: :func:`charstudio.training.pause.request_pause` (from any thread or process); the job
then saves the current step, marks the run ``paused`` and returns a result with status
``paused``. Resume: a new job with ``resume_run_id``; it continues from the run's newest state
file, exactly as if it had not stopped (same seed, same data order, same noise). A job re-run
after a crash (the queue re-queues it with the same job id) finds its run and resumes it too.
Cancel leaves every file whole and the catalog matching the files; the run is ``canceled``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charstudio import __version__
from charstudio.jobs.protocol import CancelToken, Job, JobCanceled, JobError, ProgressClock
from charstudio.portable_paths import WINDOWS_MAX_PATH, path_length_problem
from charstudio.training import records
from charstudio.training.dataset import ImageSelectionError, TrainingImage, gather_images
from charstudio.training.pause import clear_pause, pause_requested
from charstudio.training.run_files import (
    LOSS_CSV,
    PREVIEW_FOLDER,
    SETTINGS_JSON,
    SavedCheckpoint,
    append_loss_row,
    checkpoint_stem,
    latest_state,
    newest_state_step,
    read_loss_rows,
    save_checkpoint,
    save_state,
    write_json,
    write_loss_rows,
)
from charstudio.training.settings import TrainSettingsError, TrainTISettings

if TYPE_CHECKING:
    from collections.abc import Callable

    from charstudio.catalog.project import Project
    from charstudio.training.ti_trainer import StepStats, TextualInversionTrainer

__all__ = [
    "PARAM_KEYS",
    "TrainPlan",
    "TrainResult",
    "TrainingError",
    "check_train_params",
    "plan_training",
    "run_path_problem",
    "train_ti_job",
]

PARAM_KEYS = ("settings", "model", "vae", "images", "resume_run_id", "max_steps", "device")
RUNS_FOLDER = "runs"
RUN_FOLDER_NAME_LENGTH = 24  # characters of the embedding name in a run folder's name
_STEP_SUFFIX = re.compile(r"-(\d+)$")


class TrainingError(JobError):
    """A run that cannot start or went wrong, with a message meant for the artist."""


@dataclass
class TrainResult:
    run_id: int
    folder: str  # relative to the project
    name: str
    status: str  # "done", "paused" or "canceled"
    step: int  # optimizer steps done
    end_step: int
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    previews: list[str] = field(default_factory=list)
    loss_csv: str = ""
    loss: float | None = None  # of the last step
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "folder": self.folder,
            "name": self.name,
            "status": self.status,
            "step": self.step,
            "end_step": self.end_step,
            "checkpoints": self.checkpoints,
            "previews": self.previews,
            "loss_csv": self.loss_csv,
            "loss": self.loss,
            "warnings": self.warnings,
        }


@dataclass
class TrainPlan:
    """Everything a run needs, resolved and checked before any model is loaded."""

    settings: TrainTISettings
    images: list[TrainingImage]
    model: str
    vae: str | None
    device: str
    warnings: list[str]
    run: records.RunRecord | None = None  # the run to resume
    model_hash: str | None = None  # the resumed run's, to check the model is the same

    @property
    def end_step(self) -> int:
        return self.settings.end_step()


# -- planning ------------------------------------------------------------------------------


def _resolved_seed(seed: int) -> int:
    from charstudio.engine.seeds import resolve_seed

    return resolve_seed(seed)


def _device(project: Project, params: dict[str, Any]) -> str:
    if params.get("device"):
        return str(params["device"])
    from charstudio.engine.runner import ENGINE_SETTING
    from charstudio.engine.runtime import EngineOptions

    return EngineOptions.from_json(project.catalog.get_setting(ENGINE_SETTING)).resolved_device()


def _vae_path(project: Project, vae: str | None) -> str | None:
    """A separate VAE file or folder (relative paths: the project's, else the working
    directory's); None when none is chosen."""
    if not vae:
        return None
    path = Path(vae).expanduser()
    for candidate in (project.root / path, path):
        if candidate.exists():
            return str(candidate.resolve())
    raise TrainingError(f"VAE file not found: {vae}")


def _new_plan(project: Project, params: dict[str, Any]) -> TrainPlan:
    settings = TrainTISettings.from_json(params.get("settings"))
    if not settings.name:
        settings = settings.replace(name=project.token)
    settings.validate()
    model = params.get("model")
    if not model:
        raise TrainingError("choose a checkpoint to train on")
    images = gather_images(project, params.get("images", "picks"))
    batch, accumulation, notes = settings.batch_plan(len(images))
    settings = settings.replace(
        batch_size=batch,
        gradient_accumulation=accumulation,
        seed=_resolved_seed(settings.seed),
        preview_seed=_resolved_seed(settings.preview_seed),
    )
    too_long = run_path_problem(
        project.root, _run_folder(999, settings.name), settings.name, settings.end_step()
    )
    if too_long:
        raise TrainingError(too_long)
    return TrainPlan(
        settings,
        images,
        str(model),
        _vae_path(project, params.get("vae")),
        _device(project, params),
        [*settings.warnings(), *notes],
    )


def _resume_plan(project: Project, params: dict[str, Any], run: records.RunRecord) -> TrainPlan:
    stored = run.params
    settings = TrainTISettings.from_json(stored.get("settings"))
    if params.get("max_steps") is not None:
        settings = settings.replace(max_steps=params["max_steps"])
    settings.validate()
    images = [TrainingImage.from_json(project, item) for item in stored.get("images", [])]
    missing = [str(image.path) for image in images if not image.path.is_file()]
    if missing:
        raise ImageSelectionError(
            f"run {run.id} cannot resume: {len(missing)} of its images are missing, e.g. "
            f"{missing[0]}"
        )
    too_long = run_path_problem(project.root, run.folder, settings.name, settings.end_step())
    if too_long:
        raise TrainingError(f"run {run.id} cannot resume: {too_long}")
    return TrainPlan(
        settings,
        images,
        str(stored["model"]),
        stored.get("vae"),
        _device(project, params),
        [],
        run=run,
        model_hash=stored.get("model_hash"),
    )


def plan_training(project: Project, params: dict[str, Any], job_id: int = 0) -> TrainPlan:
    """Resolve the params into a plan; raises :class:`TrainingError` (or a ValueError subclass
    with the artist-facing message) when the run cannot start."""
    unknown = sorted(set(params) - set(PARAM_KEYS))
    if unknown:
        raise TrainingError(f"unknown training parameter(s): {', '.join(unknown)}")
    run = None
    if params.get("resume_run_id") is not None:
        try:
            run = records.get_run(project.catalog, int(params["resume_run_id"]))
        except KeyError as error:
            raise TrainingError(str(error.args[0])) from None
    elif job_id:
        run = records.run_for_job(project.catalog, job_id)  # this job, re-run after a crash
    return _resume_plan(project, params, run) if run else _new_plan(project, params)


def check_train_params(project: Project, params: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``(problems, warnings)`` for params, before a job is queued; loads no model."""
    from charstudio.engine.model_loading import ModelLoadError
    from charstudio.engine.runner import resolve_model

    try:
        plan = plan_training(project, params)
    except TrainSettingsError as error:
        return error.problems, []
    except (TrainingError, ValueError) as error:
        return [str(error)], []
    try:
        resolve_model(project, plan.model)
    except ModelLoadError as error:
        return [str(error)], plan.warnings
    return [], plan.warnings


# -- the run folder and its rows -------------------------------------------------------------


def _run_folder(number: int, name: str) -> str:
    """``runs/ti-<NNN>-<name>``, the name cut to :data:`RUN_FOLDER_NAME_LENGTH` characters
    (the files inside carry the whole name) to keep paths short for Windows."""
    return f"{RUNS_FOLDER}/ti-{number:03d}-{name[:RUN_FOLDER_NAME_LENGTH]}"


def _new_run_folder(project: Project, name: str) -> str:
    taken = {run.folder for run in records.list_runs(project.catalog, kind=None)}
    number = 1
    while True:
        folder = _run_folder(number, name)
        if folder not in taken and not (project.root / folder).exists():
            return folder
        number += 1


def run_path_problem(project_root: Path, folder: str, name: str, end_step: int) -> str | None:
    """Why the files of a run in ``folder`` (relative to the project) would not fit Windows'
    path limit, in words; None when they fit (always, off Windows or with long paths on)."""
    root = project_root / folder
    stem = checkpoint_stem(name, end_step)
    deepest = max(
        (root / PREVIEW_FOLDER / f"{stem}.png", root / f"{stem}.safetensors"),
        key=lambda p: len(str(p)),
    )
    if path_length_problem(deepest) is None:
        return None
    return (
        f"the run's files would have paths up to {len(str(deepest))} characters long (e.g. "
        f"{deepest}), but Windows allows only {WINDOWS_MAX_PATH} (long paths are not enabled "
        "on this PC); use a shorter embedding name or move the project nearer the top of the "
        "drive"
    )


def _run_params(project: Project, plan: TrainPlan, components: Any = None) -> dict[str, Any]:
    return {
        "settings": plan.settings.to_json(),
        "model": plan.model,
        "vae": plan.vae,
        "model_name": getattr(components, "name", None),
        "model_hash": getattr(components, "model_hash", None),
        "images": [image.to_json(project) for image in plan.images],
        "warnings": plan.warnings,
        "charstudio": __version__,
    }


def _result(
    project: Project, run_id: int, folder: Path, plan: TrainPlan, status: str, step: int
) -> TrainResult:
    rows = records.run_checkpoints(project.catalog, run_id)
    checkpoints = [
        {
            "step": row.step,
            "path": row.path,
            "safetensors": str(Path(row.path).with_suffix(".safetensors").as_posix()),
            "loss": row.loss,
            "sha256": row.sha256,
        }
        for row in rows
    ]
    preview_dir = folder / PREVIEW_FOLDER
    previews = sorted(
        preview_dir.glob("*.png") if preview_dir.is_dir() else [],
        key=lambda p: int(m[1]) if (m := _STEP_SUFFIX.search(p.stem)) else -1,
    )
    losses = read_loss_rows(folder / LOSS_CSV)
    return TrainResult(
        run_id=run_id,
        folder=project.catalog_path_for(folder),
        name=plan.settings.name,
        status=status,
        step=step,
        end_step=plan.end_step,
        checkpoints=checkpoints,
        previews=[project.catalog_path_for(p) for p in previews],
        loss_csv=project.catalog_path_for(folder / LOSS_CSV),
        loss=_finite_float(losses[-1]["loss"]) if losses else None,
        warnings=plan.warnings,
    )


def _finite_float(text: Any) -> float | None:
    import math

    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


# -- loading ---------------------------------------------------------------------------------


def _weight_dtype(precision: str, device: str) -> str:
    if not device.startswith("cuda"):
        return "fp32"  # CPUs lack fast half-precision kernels; training there is a test anyway
    return {"auto": "fp16", "fp16": "fp16", "bf16": "bf16", "fp32": "fp32"}[precision]


def _load_model(project: Project, plan: TrainPlan, loader: Callable[..., Any] | None) -> Any:
    from charstudio.engine.model_loading import load_sd15
    from charstudio.engine.runner import MODEL_CACHE, resolve_model

    path = resolve_model(project, plan.model)
    # Free the model generation keeps resident: training loads a private copy, so LoRAs merged
    # for generation never reach the trained model and the GPU holds one model, not two.
    MODEL_CACHE.clear()
    components = (loader or load_sd15)(
        path,
        vae=plan.vae,
        device=plan.device,
        dtype=_weight_dtype(plan.settings.precision, plan.device),
    )
    if plan.model_hash and components.model_hash and plan.model_hash != components.model_hash:
        raise TrainingError(
            f"the model {plan.model} changed since this run started (hash {plan.model_hash}, now "
            f"{components.model_hash}); resuming would train on another model"
        )
    return components


def _out_of_memory_message(plan: TrainPlan) -> str:
    batch = plan.settings.batch_size or 1
    accumulation = plan.settings.gradient_accumulation
    advice = (
        f"use batch size {batch // 2} with gradient accumulation {accumulation * 2} (the same "
        "images per step)"
        if batch > 1
        else "use a smaller training size"
    )
    return (
        f"The GPU ran out of memory training with batch size {batch} at "
        f"{plan.settings.width}×{plan.settings.height}; {advice}, or turn on gradient "
        "checkpointing. The steps saved so far are kept; resume the run after changing nothing, "
        "or start a new one with the new settings."
    )


# -- the job ---------------------------------------------------------------------------------


class _RunWriter:
    """Writes one run's checkpoints, state, loss rows and previews, in that safe order."""

    def __init__(
        self,
        project: Project,
        run_id: int,
        folder: Path,
        plan: TrainPlan,
        components: Any,
        trainer: TextualInversionTrainer,
    ) -> None:
        self.project = project
        self.run_id = run_id
        self.folder = folder
        self.plan = plan
        self.components = components
        self.trainer = trainer
        self.saved_step: int | None = None

    def warn(self, message: str) -> None:
        """The first preview that came out NaN, as a warning in the run's result."""
        if not any(w.startswith("Preview at step") for w in self.plan.warnings):
            self.plan.warnings.append(message)

    def save(self, loss: float | None) -> SavedCheckpoint | None:
        """The current step's embedding files, then its resume state, then its catalog row.
        Vectors that are not all finite are never written (the last finite files stay)."""
        import math

        import torch

        trainer = self.trainer
        step = trainer.step
        if not bool(torch.isfinite(trainer.vectors.detach()).all()):
            raise TrainingError(
                f"Training stopped at step {step}: the embedding became NaN, so it was not "
                f"saved. {trainer.nonfinite_cause(trainer.schedule.rate_at(max(step - 1, 0)))}"
            )
        if loss is not None and not math.isfinite(loss):
            loss = None
        saved = None
        if step > 0:
            saved = save_checkpoint(
                self.folder,
                trainer.name,
                step,
                trainer.current_vectors(),
                model_hash=self.components.model_hash,
                model_name=self.components.name,
            )
        save_state(self.folder, step, trainer.state_dict())
        if saved is not None:
            records.record_checkpoint(
                self.project.catalog,
                self.run_id,
                step,
                self.project.catalog_path_for(saved.pt),
                loss,
                saved.sha256,
            )
        self.saved_step = step
        return saved

    def preview(self, saved: SavedCheckpoint | None) -> tuple[Any, Path] | str:
        """The step's preview image and its file; or, when it came out NaN, why (no file)."""
        from charstudio.metadata.imagefile import write_png
        from charstudio.training.previews import PreviewFailed, render_preview

        trainer = self.trainer
        try:
            preview = render_preview(
                self.components,
                self.plan.settings,
                name=trainer.name,
                step=trainer.step,
                vectors=trainer.vectors,
                first_caption=self.plan.images[0].caption,
                device=self.plan.device,
                ti_hash=saved.shorthash if saved is not None else None,
            )
        except PreviewFailed as error:
            return f"Preview at step {trainer.step} not saved: {error}"
        path = self.folder / PREVIEW_FOLDER / f"{trainer.name}-{trainer.step}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_png(preview.image, path, preview.infotext)
        return preview.image, path


def _open_run(project: Project, plan: TrainPlan, job_id: int) -> tuple[int, Path]:
    """Create the run's row and folder, or mark the run to resume running again."""
    catalog = project.catalog
    if plan.run is None:
        folder_name = _new_run_folder(project, plan.settings.name)
        run_id = records.create_run(
            catalog,
            name=plan.settings.name,
            folder=folder_name,
            params=_run_params(project, plan),
            job_id=job_id or None,
        )
        records.add_run_images(catalog, run_id, (image.image_id for image in plan.images))
    else:
        run_id, folder_name = plan.run.id, plan.run.folder
        stored = {**plan.run.params, "settings": plan.settings.to_json()}  # max_steps may grow
        records.set_run_status(catalog, run_id, "running", job_id=job_id or None, params=stored)
        write_json(project.root / folder_name / SETTINGS_JSON, stored)
    folder = project.root / folder_name
    folder.mkdir(parents=True, exist_ok=True)
    return run_id, folder


def _restore_loss_log(folder: Path, step: int) -> None:
    """Keep the loss rows up to the resumed step (later ones are trained again)."""
    rows = [row for row in read_loss_rows(folder / LOSS_CSV) if int(row["step"]) <= step]
    write_loss_rows(folder / LOSS_CSV, rows)


def train_ti_job(
    project: Project,
    params: dict[str, Any],
    cancel: CancelToken | None = None,
    job_id: int = 0,
    *,
    loader: Callable[..., Any] | None = None,
) -> Job[TrainResult]:
    """Train (or resume) a textual-inversion embedding; see the module docstring for params.

    Progress: ``done`` = optimizer steps, ``total`` = the run's last step; ``detail`` has
    ``run_id``, ``step``, and after each step ``loss``, ``learning_rate``, ``it_per_s``
    (optimizer steps per second) and ``images_per_s``; ``checkpoint_path`` when the step was
    saved; ``preview`` (a PIL image) and ``preview_path`` when a preview was made,
    ``preview_error`` when it came out NaN (no file). A NaN or infinite loss, gradient or
    embedding stops the run at that step: it is recorded ``failed`` with the reason and a
    :class:`TrainingError` says it; the checkpoints saved before stay, nothing NaN is written.
    ``loader`` replaces :func:`~charstudio.engine.model_loading.load_sd15` (tests).
    """
    cancel = cancel or CancelToken()
    plan = plan_training(project, params, job_id)
    catalog = project.catalog
    run_id, folder = _open_run(project, plan, job_id)
    clock = ProgressClock(plan.end_step)
    trainer: TextualInversionTrainer | None = None
    components: Any = None
    step = newest_state_step(folder) if plan.run is not None else 0
    if plan.run is not None and step >= plan.end_step:  # finished already: nothing to load
        clear_pause(folder)
        records.set_run_status(catalog, run_id, "done")
        return _result(project, run_id, folder, plan, "done", step)
    try:
        yield clock(step, f"Loading {plan.model}", run_id=run_id, step=step)
        components = _load_model(project, plan, loader)
        if plan.run is None:
            run_params = _run_params(project, plan, components)
            records.set_run_status(catalog, run_id, "running", params=run_params)
            write_json(folder / SETTINGS_JSON, run_params)
        trainer = yield from _start_trainer(plan, components, folder, clock, run_id, cancel, step)
        step = trainer.step
        writer = _RunWriter(project, run_id, folder, plan, components, trainer)
        writer.saved_step = step if step > 0 or plan.run is not None else None
        status = yield from _train(trainer, writer, clock, cancel)
        step = trainer.step
        clear_pause(folder)  # honoured now, or too late to matter
        records.set_run_status(catalog, run_id, status)
        return _result(project, run_id, folder, plan, status, step)
    except JobCanceled:
        records.set_run_status(catalog, run_id, "canceled")
        step = trainer.step if trainer is not None else step
        return _result(project, run_id, folder, plan, "canceled", step)
    except GeneratorExit:
        # The consumer stopped iterating (the queue after a cancel, or the app closing): record
        # a cancel; otherwise leave the run "running" so the re-queued job resumes it.
        if cancel.canceled:
            records.set_run_status(catalog, run_id, "canceled")
        raise
    except Exception as error:
        from charstudio.engine.runtime import is_out_of_memory

        message = _out_of_memory_message(plan) if is_out_of_memory(error) else f"{error}"
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


def _start_trainer(
    plan: TrainPlan,
    components: Any,
    folder: Path,
    clock: ProgressClock,
    run_id: int,
    cancel: CancelToken,
    shown_step: int,
) -> Job[TextualInversionTrainer]:
    """Build the trainer, encode the images and, for a resumed run, load its newest state."""
    from charstudio.training.ti_trainer import TextualInversionTrainer

    settings = plan.settings
    trainer = TextualInversionTrainer(
        components,
        settings,
        plan.images,
        batch_size=settings.batch_size or 1,
        gradient_accumulation=settings.gradient_accumulation,
        device=plan.device,
        scheduler_config=components.scheduler_config,
    )
    try:
        for done, total in trainer.prepare():
            cancel.raise_if_canceled()
            message = f"Encoding images {done}/{total}"
            yield clock(shown_step, message, run_id=run_id, step=shown_step)
        state = latest_state(folder) if plan.run is not None else None
        if state is not None:
            trainer.load_state_dict(state)
    except BaseException:
        trainer.close()
        raise
    _restore_loss_log(folder, trainer.step)
    return trainer


def _train(
    trainer: TextualInversionTrainer,
    writer: _RunWriter,
    clock: ProgressClock,
    cancel: CancelToken,
) -> Job[str]:
    """Train to the end (returns "done") or until a pause is requested (returns "paused")."""
    from charstudio.training.ti_trainer import NonFiniteTraining

    settings = writer.plan.settings
    end_step = trainer.end_step
    run_id = writer.run_id
    started = time.perf_counter()
    steps_here = 0
    yield clock(trainer.step, f"Step {trainer.step}/{end_step}", run_id=run_id, step=trainer.step)
    while trainer.step < end_step:
        cancel.raise_if_canceled()
        if pause_requested(writer.folder):
            if writer.saved_step != trainer.step:
                writer.save(trainer.loss_history[-1][1] if trainer.loss_history else None)
            return "paused"
        try:
            stats = trainer.train_step(cancel)
        except NonFiniteTraining as error:
            kept = (
                f"The last finite checkpoint, step {writer.saved_step}, is kept."
                if writer.saved_step
                else "No checkpoint had been saved yet."
            )
            raise TrainingError(f"{error} {kept}") from None
        steps_here += 1
        append_loss_row(
            writer.folder / LOSS_CSV,
            stats.step,
            stats.loss,
            stats.learning_rate,
            stats.images_per_s,
        )
        detail = _step_detail(stats, steps_here / (time.perf_counter() - started), run_id)
        saved = None
        last = stats.step == end_step
        if last or (settings.save_every and stats.step % settings.save_every == 0):
            saved = writer.save(stats.loss)
            if saved is not None:
                detail["checkpoint_path"] = str(saved.pt)
        message = f"Step {stats.step}/{end_step} · loss {stats.loss:.4f}"
        if settings.preview_every and stats.step % settings.preview_every == 0:
            made = writer.preview(saved)
            if isinstance(made, str):
                detail["preview_error"] = made
                writer.warn(made)
                message += f" · {made}"
            else:
                detail["preview"], path = made
                detail["preview_path"] = str(path)
        yield clock(stats.step, message, **detail)
    return "done"


def _step_detail(stats: StepStats, it_per_s: float, run_id: int) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "step": stats.step,
        "loss": stats.loss,
        "learning_rate": stats.learning_rate,
        "it_per_s": it_per_s,
        "images_per_s": stats.images_per_s,
    }
