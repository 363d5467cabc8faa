"""The LoRA training job: ``train_lora_job(project, params, cancel, job_id)``, a generator of
:class:`~charstudio.jobs.protocol.Progress` returning a :class:`LoraTrainResult`.

Params (JSON, what the queue stores)::

    {
      "settings": {...},        # TrainLoraSettings.to_json(); missing keys take the defaults,
                                # "name"/"token": "" mean the project's token
      "model": "v1-5-pruned-emaonly",  # checkpoint file, diffusers folder or name (new runs)
      "vae": null,              # optional separate VAE file
      "images": "picks",        # "picks" | "all" | [image ids, image paths, folders]
      "resume_run_id": null,    # continue that run from its newest saved state
      "epochs": null,           # with resume_run_id: train on to this many epochs
      "device": null            # "cuda", "cpu"...; default: the project's engine setting
    }

A new run gets a folder ``runs/lora-<NNN>-<name>``, a ``runs`` row (kind ``lora``), ``run_images``
rows and, for each saved epoch, ``NAME-<epoch, 6 digits>.safetensors`` in kohya's format (see
:mod:`~charstudio.training.lora_metadata`) and a ``checkpoints`` row whose step is the optimizer
steps done at that epoch's end. Each saved epoch also writes the resume state (LoRA weights,
optimizer, random streams, data order), so every saved epoch is both a usable LoRA and a point to
resume from. Samples: before the first step (epoch 0) and every ``sample_every_epochs`` epochs,
``previews/NAME-<epoch>-<n>.png`` made through the engine's sampling path with the LoRA active,
from the training images' own prompts (their captions: the activation tag and what varied) and
seeds, with A1111 infotext naming the epoch's file (``<lora:NAME-000003:1>``).

Pause (:func:`charstudio.training.pause.request_pause`): the current step's state is saved (no
LoRA file mid-epoch), the run is ``paused``; a job with ``resume_run_id`` continues exactly as if
it had not stopped. A job re-run after a crash resumes its run from the newest saved state.
A NaN or infinite loss, gradient or weight stops the run with a plain message; nothing
non-finite is ever written.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charstudio import __version__
from charstudio.jobs.protocol import CancelToken, Job, ProgressClock
from charstudio.training import records
from charstudio.training.dataset import ImageSelectionError, TrainingImage, gather_images
from charstudio.training.lora_settings import TrainLoraSettings
from charstudio.training.run_files import (
    LOSS_CSV,
    PREVIEW_FOLDER,
    read_loss_rows,
    save_state,
)
from charstudio.training.run_job import (
    TrainingError,
    open_run,
    run_folder_name,
    run_training,
    step_detail,
    train_steps,
    windows_path_problem,
)
from charstudio.training.run_plan import plan_problems, resumed_images, run_to_continue
from charstudio.training.ti import (
    TrainResult,
    _device,
    _finite_float,
    _resolved_seed,
    _vae_path,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from PIL import Image

    from charstudio.catalog.project import Project
    from charstudio.training.lora_trainer import LoraStepStats, LoraTrainer

__all__ = [
    "PARAM_KEYS",
    "LoraPlan",
    "LoraTrainResult",
    "SamplePrompt",
    "check_lora_params",
    "epoch_stem",
    "plan_lora",
    "train_lora_job",
]

PARAM_KEYS = ("settings", "model", "vae", "images", "resume_run_id", "epochs", "device")
_EPOCH_SUFFIX = re.compile(r"-(\d+)-(\d+)$")


def epoch_stem(name: str, epoch: int) -> str:
    """``NAME-000003``: kohya's name for the file saved after epoch 3."""
    return f"{name}-{epoch:06d}"


@dataclass
class LoraTrainResult(TrainResult):
    epoch: int = 0  # epochs done
    epochs: int = 0  # the run's last epoch
    steps_per_epoch: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            **super().to_json(),
            "kind": "lora",
            "epoch": self.epoch,
            "epochs": self.epochs,
            "steps_per_epoch": self.steps_per_epoch,
        }


@dataclass(frozen=True)
class SamplePrompt:
    prompt: str
    negative_prompt: str
    seed: int
    width: int
    height: int

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "seed": self.seed,
            "width": self.width,
            "height": self.height,
        }


@dataclass
class LoraPlan:
    """Everything a run needs, resolved and checked before any model is loaded."""

    settings: TrainLoraSettings
    images: list[TrainingImage]
    buckets: list[tuple[int, int]]
    repeats: int
    epochs: int
    batches_per_epoch: int
    steps_per_epoch: int
    model: str
    vae: str | None
    device: str | None
    warnings: list[str]
    samples: list[SamplePrompt] = field(default_factory=list)
    run: records.RunRecord | None = None
    model_hash: str | None = None
    started_at: float = field(default_factory=time.time)

    @property
    def end_step(self) -> int:
        return self.steps_per_epoch * self.epochs


# -- planning ------------------------------------------------------------------------------


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.size
    except OSError as error:
        raise ImageSelectionError(f"{path}: cannot be read as an image ({error})") from None


def _buckets(settings: TrainLoraSettings, images: list[TrainingImage]) -> list[tuple[int, int]]:
    from charstudio.training.lora_trainer import bucket_for, bucket_sizes

    size = settings.resolution
    if not settings.buckets:
        return [(size, size)] * len(images)
    sizes = bucket_sizes(size, settings.bucket_step)
    return [bucket_for(*_image_size(image.path), sizes) for image in images]


def _with_captions(
    project: Project, images: list[TrainingImage], token: str
) -> list[TrainingImage]:
    """The images with their training captions (see :mod:`~charstudio.training.captions`)."""
    from charstudio.training.captions import caption_text, class_word, project_captions
    from charstudio.training.templates import read_sidecar_caption

    ids = [image.image_id for image in images if image.image_id is not None]
    known = {c.image_id: c.text for c in project_captions(project, ids, token=token)}
    word = class_word(project)
    out = []
    for image in images:
        if image.image_id is not None:
            caption = known[image.image_id]
        else:
            caption = read_sidecar_caption(image.path) or caption_text(token, [word])
        out.append(TrainingImage(image.path, image.image_id, caption))
    return out


def _samples(
    project: Project, settings: TrainLoraSettings, images: list[TrainingImage]
) -> list[SamplePrompt]:
    """The prompts sampled each epoch: the settings' own, else the training images' captions with
    their own seeds and negative prompts (one per seed)."""
    size = settings.resolution
    negative = settings.sample_negative_prompt
    if settings.sample_prompts:
        seeds = list(settings.sample_seeds) or [settings.seed]
        return [
            SamplePrompt(p, negative, seeds[i % len(seeds)], size, size)
            for i, p in enumerate(settings.sample_prompts)
        ]
    out: list[SamplePrompt] = []
    seen: set[int] = set()
    for image in images:
        if len(out) >= settings.max_samples:
            break
        record = project.catalog.image(image.image_id) if image.image_id is not None else None
        seed = record.seed if record is not None and record.seed is not None else None
        if seed is None:
            seed = settings.seed + len(out)
        if seed in seen:
            continue
        seen.add(seed)
        width, height = size, size
        if record is not None and record.width % 8 == 0 and record.height % 8 == 0:
            width, height = record.width, record.height
        own_negative = (record.negative_prompt or "") if record is not None else ""
        out.append(SamplePrompt(image.caption, negative or own_negative, seed, width, height))
    return out


def _new_plan(project: Project, params: dict[str, Any]) -> LoraPlan:
    from charstudio.training.lora_trainer import epoch_plan

    settings = TrainLoraSettings.from_json(params.get("settings"))
    settings = settings.replace(
        name=settings.name or project.token, token=settings.token or project.token
    )
    settings.validate()
    model = params.get("model")
    if not model:
        raise TrainingError("choose a checkpoint to train on")
    images = gather_images(project, params.get("images", "picks"))
    images = _with_captions(project, images, settings.token)
    settings = settings.replace(
        seed=_resolved_seed(settings.seed),
        epochs=settings.resolved_epochs(),
        repeats=settings.resolved_repeats(len(images)),
        save_every_epochs=settings.resolved_save_every(),
    )
    buckets = _buckets(settings, images)
    batches, steps = epoch_plan(
        buckets, settings.repeats or 1, settings.batch_size, settings.gradient_accumulation
    )
    too_long = _path_problem(project.root, _run_folder(999, settings.name), settings.name)
    if too_long:
        raise TrainingError(too_long)
    return LoraPlan(
        settings,
        images,
        buckets,
        settings.repeats or 1,
        settings.epochs or 1,
        batches,
        steps,
        str(model),
        _vae_path(project, params.get("vae")),
        params.get("device") or None,  # resolved when the job runs: checks need no torch
        settings.warnings(),
        _samples(project, settings, images),
    )


def _resume_plan(project: Project, params: dict[str, Any], run: records.RunRecord) -> LoraPlan:
    stored = run.params
    settings = TrainLoraSettings.from_json(stored.get("settings"))
    if params.get("epochs") is not None:
        settings = settings.replace(epochs=int(params["epochs"]))
    settings.validate()
    images = resumed_images(project, run)
    return LoraPlan(
        settings,
        images,
        [(int(w), int(h)) for w, h in stored["buckets"]],
        int(stored["repeats"]),
        settings.epochs or 1,
        int(stored["batches_per_epoch"]),
        int(stored["steps_per_epoch"]),
        str(stored["model"]),
        stored.get("vae"),
        params.get("device") or None,  # resolved when the job runs: checks need no torch
        [],
        [SamplePrompt(**s) for s in stored.get("samples", [])],
        run=run,
        model_hash=stored.get("model_hash"),
        started_at=float(stored.get("started_at") or time.time()),
    )


def plan_lora(project: Project, params: dict[str, Any], job_id: int = 0) -> LoraPlan:
    """Resolve the params into a plan; raises :class:`TrainingError` (or a ValueError subclass
    with the artist-facing message) when the run cannot start."""
    run = run_to_continue(
        project,
        params,
        job_id,
        param_keys=PARAM_KEYS,
        what="LoRA training",
        kind="lora",
        kind_name="LoRA",
    )
    return _resume_plan(project, params, run) if run else _new_plan(project, params)


def check_lora_params(project: Project, params: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``(problems, warnings)`` for params, before a job is queued; loads no model."""
    return plan_problems(project, lambda: plan_lora(project, params))


# -- the run folder and its rows -------------------------------------------------------------


def _run_folder(number: int, name: str) -> str:
    return run_folder_name("lora", number, name)


def _path_problem(project_root: Path, folder: str, name: str) -> str | None:
    deepest = project_root / folder / PREVIEW_FOLDER / f"{epoch_stem(name, 999999)}-99.png"
    return windows_path_problem(deepest, "name")


def _run_params(project: Project, plan: LoraPlan, components: Any = None) -> dict[str, Any]:
    settings = plan.settings
    return {
        "kind": "lora",
        "settings": settings.to_json(),
        "model": plan.model,
        "vae": plan.vae,
        "model_name": getattr(components, "name", None),
        "model_hash": getattr(components, "model_hash", None) or plan.model_hash,
        "images": [image.to_json(project) for image in plan.images],
        "buckets": [list(b) for b in plan.buckets],
        "repeats": plan.repeats,
        "epochs": plan.epochs,
        "batches_per_epoch": plan.batches_per_epoch,
        "steps_per_epoch": plan.steps_per_epoch,
        "dim": settings.dim,
        "alpha": settings.alpha,
        "token": settings.token,
        "clip_skip": settings.clip_skip,
        "resolution": settings.resolution,
        "samples": [s.to_json() for s in plan.samples],
        "sample_prompts": [s.prompt for s in plan.samples],
        "seeds": [s.seed for s in plan.samples],
        "started_at": plan.started_at,
        "warnings": plan.warnings,
        "charstudio": __version__,
    }


def _open_run(project: Project, plan: LoraPlan, job_id: int) -> tuple[int, Path]:
    return open_run(
        project,
        job_id,
        kind="lora",
        name=plan.settings.name,
        run=plan.run,
        new_params=lambda: _run_params(project, plan),
        resumed_params=lambda stored: {
            **stored,
            "settings": plan.settings.to_json(),
            "epochs": plan.epochs,
        },
        image_ids=(image.image_id for image in plan.images),
    )


def _sample_paths(folder: Path) -> list[Path]:
    preview_dir = folder / PREVIEW_FOLDER
    found = list(preview_dir.glob("*.png")) if preview_dir.is_dir() else []

    def order(path: Path) -> tuple[int, int]:
        match = _EPOCH_SUFFIX.search(path.stem)
        return (int(match[1]), int(match[2])) if match else (-1, -1)

    return sorted(found, key=order)


def _result(
    project: Project, run_id: int, folder: Path, plan: LoraPlan, status: str, step: int
) -> LoraTrainResult:
    rows = records.run_checkpoints(project.catalog, run_id)
    spe = max(plan.steps_per_epoch, 1)
    checkpoints = [
        {
            "epoch": row.step // spe,
            "step": row.step,
            "path": row.path,
            "safetensors": row.path,
            "loss": row.loss,
            "sha256": row.sha256,
        }
        for row in rows
        if row.step >= 0  # averages of top epochs are recorded with negative steps
    ]
    losses = read_loss_rows(folder / LOSS_CSV)
    return LoraTrainResult(
        run_id=run_id,
        folder=project.catalog_path_for(folder),
        name=plan.settings.name,
        status=status,
        step=step,
        end_step=plan.end_step,
        checkpoints=checkpoints,
        previews=[project.catalog_path_for(p) for p in _sample_paths(folder)],
        loss_csv=project.catalog_path_for(folder / LOSS_CSV),
        loss=_finite_float(losses[-1]["loss"]) if losses else None,
        warnings=plan.warnings,
        epoch=step // spe,
        epochs=plan.epochs,
        steps_per_epoch=plan.steps_per_epoch,
    )


# -- loading -----------------------------------------------------------------------------------


def _load_model(project: Project, plan: LoraPlan, loader: Callable[..., Any] | None) -> Any:
    from charstudio.training.ti import _load_model as load_for_training

    return load_for_training(project, plan, loader)  # type: ignore[arg-type]


def _model_sha256(project: Project, model: str) -> str | None:
    """The base checkpoint's full sha256 when the hash cache has it (never computed here)."""
    from charstudio.engine.model_hash import hash_cache
    from charstudio.engine.runner import resolve_model

    try:
        path = Path(resolve_model(project, model))
        return hash_cache(None).get(path, "sha256", path.stat()) if path.is_file() else None
    except Exception:  # only metadata: a missing hash is written as None
        return None


def _out_of_memory_message(plan: LoraPlan) -> str:
    batch = plan.settings.batch_size
    advice = (
        f"use batch size {batch // 2} with gradient accumulation "
        f"{plan.settings.gradient_accumulation * 2}"
        if batch > 1
        else "use a smaller resolution"
    )
    return (
        f"The GPU ran out of memory training the LoRA with batch size {batch} at "
        f"{plan.settings.resolution} px; {advice}, or turn on gradient checkpointing. The epochs "
        "saved so far are kept."
    )


# -- writing -----------------------------------------------------------------------------------


class _RunWriter:
    """Writes one run's epoch files, state, loss rows and samples, in that safe order."""

    def __init__(
        self,
        project: Project,
        run_id: int,
        folder: Path,
        plan: LoraPlan,
        components: Any,
        trainer: LoraTrainer,
    ) -> None:
        from charstudio.training.captions import tag_frequency
        from charstudio.training.lora_metadata import LoraRunInfo

        self.project = project
        self.run_id = run_id
        self.folder = folder
        self.plan = plan
        self.components = components
        self.trainer = trainer
        self.saved_step: int | None = None
        settings = plan.settings
        counts: dict[str, int] = {}
        for width, height in plan.buckets:
            counts[f"{width}x{height}"] = counts.get(f"{width}x{height}", 0) + 1
        precision = {"float16": "fp16", "bfloat16": "bf16"}.get(
            str(trainer.autocast_dtype).removeprefix("torch."), "no"
        )
        self.info = LoraRunInfo(
            output_name=settings.name,
            session_id=random.Random(f"{settings.seed}:session").getrandbits(31),
            started_at=plan.started_at,
            model_name=components.name,
            model_hash=components.model_hash,
            model_sha256=_model_sha256(project, plan.model),
            n_images=len(plan.images),
            repeats=plan.repeats,
            batches_per_epoch=plan.batches_per_epoch,
            steps_per_epoch=plan.steps_per_epoch,
            epochs=plan.epochs,
            total_steps=plan.end_step,
            dataset_dir=f"{plan.repeats}_{settings.token}",
            tag_frequency=tag_frequency(image.caption for image in plan.images),
            bucket_info={"buckets": counts},
            mixed_precision=precision,
            warmup_steps=trainer.warmup,
        )
        self.hashes: dict[int, str] = {}  # epoch -> A1111 short hash of its file

    def save_epoch(self, epoch: int, loss: float | None) -> Path:
        """The epoch's LoRA file, then the resume state, then the catalog row. Weights that are
        not all finite are never written."""
        import math

        from charstudio.training.lora_metadata import kohya_metadata, save_lora_file, sshs_hashes

        trainer = self.trainer
        step = trainer.step
        if not trainer.network.all_finite():
            raise TrainingError(
                f"Training stopped at epoch {epoch}: the LoRA weights became NaN, so they were "
                f"not saved. {trainer.nonfinite_cause(trainer.base_rates[0])}"
            )
        if loss is not None and not math.isfinite(loss):
            loss = None
        settings = self.plan.settings
        metadata = kohya_metadata(settings, self.info, epoch=epoch, step=step)
        tensors = trainer.lora_tensors()
        path = self.folder / f"{epoch_stem(settings.name, epoch)}.safetensors"
        sha256 = save_lora_file(
            path, tensors, metadata, resolution=settings.resolution, trigger=settings.token
        )
        import torch

        half = {k: v.to(torch.float16) for k, v in tensors.items()}
        self.hashes[epoch] = sshs_hashes(half, metadata)[0][:12]
        save_state(self.folder, step, trainer.state_dict())
        records.record_checkpoint(
            self.project.catalog,
            self.run_id,
            step,
            self.project.catalog_path_for(path),
            loss,
            sha256,
        )
        self.saved_step = step
        return path

    def save_state_only(self) -> None:
        """The current step's resume state (a pause mid-epoch: no LoRA file)."""
        if not self.trainer.network.all_finite():
            return  # never save NaN; the last saved state stays the resume point
        save_state(self.folder, self.trainer.step, self.trainer.state_dict())
        self.saved_step = self.trainer.step

    def samples(self, epoch: int) -> tuple[list[Image.Image], list[Path], list[str]]:
        """The epoch's sample images, their files, and why any came out NaN (no file)."""
        from charstudio.metadata.imagefile import write_png
        from charstudio.training.previews import PreviewFailed

        images, paths, errors = [], [], []
        stem = epoch_stem(self.plan.settings.name, epoch)
        for number, sample in enumerate(self.plan.samples):
            try:
                image, infotext = render_sample(
                    self.components,
                    self.plan.settings,
                    sample,
                    device=self.plan.device,
                    lora=(stem, self.hashes.get(epoch)) if epoch in self.hashes else None,
                )
            except PreviewFailed as error:
                errors.append(f"Sample {number} of epoch {epoch} not saved: {error}")
                continue
            path = self.folder / PREVIEW_FOLDER / f"{stem}-{number}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_png(image, path, infotext)
            images.append(image)
            paths.append(path)
        return images, paths, errors


def render_sample(
    components: Any,
    settings: TrainLoraSettings,
    sample: SamplePrompt,
    *,
    device: Any,
    lora: tuple[str, str | None] | None,
) -> tuple[Image.Image, str]:
    """One sample with the LoRA as it is now (its layers are on the model), and its infotext:
    the prompt with ``<lora:NAME-EPOCH:1>`` when the epoch's file exists, so the same image can
    be made again from the file."""
    from charstudio.engine.conditioning import PromptEncoder
    from charstudio.engine.sweeps import GenerationSettings
    from charstudio.metadata.infotext import format_infotext
    from charstudio.training.previews import sample_finite

    prompt = sample.prompt
    extras: dict[str, object] = {}
    if lora is not None:
        prompt = f"{prompt} <lora:{lora[0]}:1>"
        if lora[1]:
            extras["Lora hashes"] = f"{lora[0]}: {lora[1]}"
    extras["Version"] = f"charstudio {__version__}"
    generation = GenerationSettings(
        prompt=prompt,
        negative_prompt=sample.negative_prompt,
        seed=sample.seed,
        steps=settings.sample_steps,
        sampler=settings.sample_sampler,
        schedule_type=settings.sample_schedule_type,
        cfg_scale=settings.sample_cfg_scale,
        width=sample.width,
        height=sample.height,
        model=components.name,
        clip_skip=settings.clip_skip,
    )
    encoder = PromptEncoder(
        components.text_encoder,
        clip_skip=settings.clip_skip,
        device=device,
        dtype=components.unet.dtype,
    )
    training = components.unet.training
    components.unet.eval()
    try:
        image = sample_finite(
            components,
            encoder,
            device=device,
            sampler_label=generation.sampler,
            prompt=sample.prompt,
            negative_prompt=sample.negative_prompt,
            seeds=[sample.seed],
            steps=settings.sample_steps,
            cfg_scale=settings.sample_cfg_scale,
            width=sample.width,
            height=sample.height,
            sampler=settings.sample_sampler,
            schedule_type=settings.sample_schedule_type,
        )
    finally:
        components.unet.train(training)
    params = generation.to_params(sample.seed, model_hash=components.model_hash, extras=extras)
    return image, format_infotext(params)


# -- the job ---------------------------------------------------------------------------------


def train_lora_job(
    project: Project,
    params: dict[str, Any],
    cancel: CancelToken | None = None,
    job_id: int = 0,
    *,
    loader: Callable[..., Any] | None = None,
) -> Job[LoraTrainResult]:
    """Train (or resume) a LoRA; see the module docstring for params.

    Progress: ``done`` = optimizer steps, ``total`` = the run's last step; ``detail`` has
    ``run_id``, ``step``, ``epoch``, and after each step ``loss``, ``learning_rate``,
    ``it_per_s`` and ``images_per_s``; ``checkpoint_path`` when an epoch was saved;
    ``samples`` (PIL images) and ``sample_paths`` when samples were made, ``sample_errors``
    when some came out NaN. ``loader`` replaces the model loader (tests).
    """
    cancel = cancel or CancelToken()
    plan = plan_lora(project, params, job_id)
    plan.device = plan.device or _device(project, params)
    run_id, folder = _open_run(project, plan, job_id)
    clock = ProgressClock(plan.end_step)

    def train(trainer: LoraTrainer, components: Any) -> Job[str]:
        writer = _RunWriter(project, run_id, folder, plan, components, trainer)
        step = trainer.step
        writer.saved_step = step if plan.run is not None else None
        if step == 0 and plan.settings.sample_every_epochs and plan.samples:
            yield from _emit_samples(writer, clock, 0, {"run_id": run_id, "step": 0, "epoch": 0})
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


def _make_trainer(plan: LoraPlan, components: Any) -> LoraTrainer:
    from charstudio.training.lora_trainer import LoraTrainer, OptimizerUnavailable

    try:
        return LoraTrainer(
            components,
            plan.settings,
            plan.images,
            buckets=plan.buckets,
            repeats=plan.repeats,
            epochs=plan.epochs,
            device=plan.device,
            scheduler_config=components.scheduler_config,
        )
    except OptimizerUnavailable as error:
        raise TrainingError(str(error)) from None


def _emit_samples(
    writer: _RunWriter, clock: ProgressClock, epoch: int, detail: dict[str, Any]
) -> Job[None]:
    images, paths, errors = writer.samples(epoch)
    detail = {**detail, "samples": images, "sample_paths": [str(p) for p in paths]}
    if errors:
        detail["sample_errors"] = errors
        if not any(w.startswith("Sample") for w in writer.plan.warnings):
            writer.plan.warnings.append(errors[0])
    step = writer.trainer.step
    yield clock(step, f"Samples of epoch {epoch}", **detail)


def _train(
    trainer: LoraTrainer, writer: _RunWriter, clock: ProgressClock, cancel: CancelToken
) -> Job[str]:
    """Train to the end (returns "done") or until a pause is requested (returns "paused")."""
    plan = writer.plan
    settings = plan.settings
    end_step = trainer.end_step
    spe = trainer.steps_per_epoch
    save_every = settings.save_every_epochs or 1
    run_id = writer.run_id

    def pause() -> None:
        if writer.saved_step != trainer.step:
            writer.save_state_only()

    def kept() -> str:
        return (
            f"The last finite epoch saved, at step {writer.saved_step}, is kept."
            if writer.saved_step
            else "No epoch had been saved yet."
        )

    def on_step(stats: LoraStepStats, it_per_s: float) -> Job[None]:
        detail = step_detail(stats, it_per_s, run_id, epoch=stats.epoch)
        running = (stats.step - 1) // spe + 1  # the epoch this step belongs to, from 1
        message = (
            f"Epoch {running}/{plan.epochs}, step {stats.step}/{end_step} · loss {stats.loss:.4f}"
        )
        if stats.step % spe == 0:
            epoch = stats.step // spe
            last = stats.step == end_step
            if last or epoch % save_every == 0:
                detail["checkpoint_path"] = str(writer.save_epoch(epoch, stats.loss))
            sample_every = settings.sample_every_epochs
            if plan.samples and sample_every and (epoch % sample_every == 0 or last):
                yield clock(stats.step, message, **detail)
                yield from _emit_samples(
                    writer, clock, epoch, {"run_id": run_id, "step": stats.step, "epoch": epoch}
                )
                return
        yield clock(stats.step, message, **detail)

    current = min(trainer.epochs_done + 1, plan.epochs)
    opening = clock(
        trainer.step,
        f"Epoch {current}/{plan.epochs}, step {trainer.step}/{end_step}",
        run_id=run_id,
        step=trainer.step,
        epoch=trainer.epochs_done,
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
