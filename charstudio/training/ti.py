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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charstudio import __version__
from charstudio.jobs.protocol import CancelToken, Job, ProgressClock
from charstudio.training import records
from charstudio.training.dataset import TrainingImage, gather_images
from charstudio.training.run_files import (
    LOSS_CSV,
    PREVIEW_FOLDER,
    SavedCheckpoint,
    checkpoint_stem,
    read_loss_rows,
    save_checkpoint,
    save_state,
)
from charstudio.training.run_job import (
    RUN_FOLDER_NAME_LENGTH,
    TrainingError,
    open_run,
    run_folder_name,
    run_training,
    step_detail,
    train_steps,
    windows_path_problem,
)
from charstudio.training.run_plan import plan_problems, resumed_images, run_to_continue
from charstudio.training.settings import TrainTISettings

if TYPE_CHECKING:
    from collections.abc import Callable

    from charstudio.catalog.project import Project
    from charstudio.training.ti_trainer import StepStats, TextualInversionTrainer

__all__ = [
    "PARAM_KEYS",
    "RUN_FOLDER_NAME_LENGTH",
    "TrainPlan",
    "TrainResult",
    "TrainingError",
    "check_train_params",
    "plan_training",
    "run_path_problem",
    "train_ti_job",
]

PARAM_KEYS = ("settings", "model", "vae", "images", "resume_run_id", "max_steps", "device")
_STEP_SUFFIX = re.compile(r"-(\d+)$")


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
    images = resumed_images(project, run)
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
    run = run_to_continue(project, params, job_id, param_keys=PARAM_KEYS, what="training")
    return _resume_plan(project, params, run) if run else _new_plan(project, params)


def check_train_params(project: Project, params: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``(problems, warnings)`` for params, before a job is queued; loads no model."""
    return plan_problems(project, lambda: plan_training(project, params))


# -- the run folder and its rows -------------------------------------------------------------


def _run_folder(number: int, name: str) -> str:
    return run_folder_name("ti", number, name)


def run_path_problem(project_root: Path, folder: str, name: str, end_step: int) -> str | None:
    """Why the files of a run in ``folder`` (relative to the project) would not fit Windows'
    path limit, in words; None when they fit (always, off Windows or with long paths on)."""
    root = project_root / folder
    stem = checkpoint_stem(name, end_step)
    deepest = max(
        (root / PREVIEW_FOLDER / f"{stem}.png", root / f"{stem}.safetensors"),
        key=lambda p: len(str(p)),
    )
    return windows_path_problem(deepest, "embedding name")


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
    return open_run(
        project,
        job_id,
        kind="ti",
        name=plan.settings.name,
        run=plan.run,
        new_params=lambda: _run_params(project, plan),
        # max_steps may grow
        resumed_params=lambda stored: {**stored, "settings": plan.settings.to_json()},
        image_ids=(image.image_id for image in plan.images),
    )


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
    run_id, folder = _open_run(project, plan, job_id)
    clock = ProgressClock(plan.end_step)

    def train(trainer: TextualInversionTrainer, components: Any) -> Job[str]:
        writer = _RunWriter(project, run_id, folder, plan, components, trainer)
        step = trainer.step
        writer.saved_step = step if step > 0 or plan.run is not None else None
        return (yield from _train(trainer, writer, clock, cancel))

    return (
        yield from run_training(
            project,
            run_id,
            folder,
            model=plan.model,
            resumed=plan.run is not None,
            end_step=plan.end_step,
            clock=clock,
            cancel=cancel,
            load=lambda: _load_model(project, plan, loader),
            run_params=lambda components: _run_params(project, plan, components),
            make_trainer=lambda components: _make_trainer(plan, components),
            train=train,
            result=lambda status, step: _result(project, run_id, folder, plan, status, step),
            out_of_memory_message=lambda: _out_of_memory_message(plan),
        )
    )


def _make_trainer(plan: TrainPlan, components: Any) -> TextualInversionTrainer:
    from charstudio.training.ti_trainer import TextualInversionTrainer

    settings = plan.settings
    return TextualInversionTrainer(
        components,
        settings,
        plan.images,
        batch_size=settings.batch_size or 1,
        gradient_accumulation=settings.gradient_accumulation,
        device=plan.device,
        scheduler_config=components.scheduler_config,
    )


def _train(
    trainer: TextualInversionTrainer,
    writer: _RunWriter,
    clock: ProgressClock,
    cancel: CancelToken,
) -> Job[str]:
    """Train to the end (returns "done") or until a pause is requested (returns "paused")."""
    settings = writer.plan.settings
    end_step = trainer.end_step
    run_id = writer.run_id

    def pause() -> None:
        if writer.saved_step != trainer.step:
            writer.save(trainer.loss_history[-1][1] if trainer.loss_history else None)

    def kept() -> str:
        return (
            f"The last finite checkpoint, step {writer.saved_step}, is kept."
            if writer.saved_step
            else "No checkpoint had been saved yet."
        )

    def on_step(stats: StepStats, it_per_s: float) -> Job[None]:
        detail = step_detail(stats, it_per_s, run_id)
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

    opening = clock(
        trainer.step, f"Step {trainer.step}/{end_step}", run_id=run_id, step=trainer.step
    )
    return (
        yield from train_steps(
            trainer,
            writer.folder,
            cancel,
            opening=opening,
            on_pause=pause,
            kept=kept,
            on_step=on_step,
        )
    )
