"""One batch of images from settings: the single sampling path of generation, regeneration and
checkpoint grids, so what a grid shows is what the artist gets.

:class:`ModelRunner` knows the project's model, embedding and LoRA folders, keeps the loaded
model resident between jobs (one process-wide :class:`ModelCache`), applies the LoRAs a prompt
names, and writes A1111 infotext that says exactly how each image was made.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charstudio import __version__
from charstudio.engine.embeddings import SD1_WIDTH, EmbeddingLibrary
from charstudio.engine.loras import LoraLibrary, LoraPatcher, lora_hashes_infotext, loras_in_prompt
from charstudio.engine.model_loading import ModelCache, ModelNotFoundError
from charstudio.engine.runtime import (
    ENGINE_SETTING,
    EngineOptions,
    is_out_of_memory,
    prepare_for_inference,
)
from charstudio.engine.samplers import resolve_sampler
from charstudio.engine.sweeps import GenerationSettings, model_display_name
from charstudio.jobs.protocol import CancelToken, JobError
from charstudio.metadata.infotext import GenerationParams

if TYPE_CHECKING:
    from PIL import Image

    from charstudio.catalog.project import Project
    from charstudio.engine.model_loading import SD15Components

__all__ = [
    "ENGINE_SETTING",
    "MODEL_CACHE",
    "GenerationError",
    "ImagesFailed",
    "ModelRunner",
    "StepEvent",
    "find_checkpoints",
]

# Project settings (JSON lists of folders) for files kept outside the project, typically an
# A1111 install's models/Stable-diffusion, embeddings and models/Lora folders.
MODEL_FOLDERS_SETTING = "model_folders"
EMBEDDING_FOLDERS_SETTING = "embedding_folders"
LORA_FOLDERS_SETTING = "lora_folders"

CHECKPOINT_EXTENSIONS = (".safetensors", ".ckpt")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# One resident model for the whole process: the GPU worker serves jobs one after another and
# an SD 1.5 model takes seconds to load, so it stays loaded between jobs.
MODEL_CACHE = ModelCache()


log = logging.getLogger(__name__)

VAE_FP32_NOTE = (
    "The VAE produced NaN in half precision; it was switched to 32-bit floats (fp32) for the "
    'rest of this job, as A1111\'s "revert VAE to 32-bit floats" does.'
)


class GenerationError(JobError):
    """A job that cannot run or went wrong, with a message meant for the artist."""


class ImagesFailed(GenerationError):
    """Some images of a batch came out NaN or infinite. ``outputs`` holds every image of the
    batch in order, ``None`` for a failed one, whose reason is in ``reasons``; callers that
    keep the good images catch this, the others fail with the message."""

    def __init__(
        self,
        outputs: list[tuple[Image.Image | None, GenerationParams]],
        reasons: dict[int, str],
    ) -> None:
        self.outputs = outputs
        self.reasons = reasons
        first = reasons[min(reasons)]
        count = len(reasons)
        prefix = f"{count} of {len(outputs)} images failed: " if len(outputs) > 1 else ""
        super().__init__(prefix + first[:1].upper() + first[1:])


@dataclass(frozen=True)
class StepEvent:
    step: int
    total: int
    latents: Any


def _folders(project: Project, setting: str, own: str) -> list[Path]:
    extra = project.catalog.get_setting(setting, []) or []
    return [project.root / own, *(Path(f) for f in extra if isinstance(f, str))]


def model_folders(project: Project) -> list[Path]:
    return [p for p in _folders(project, MODEL_FOLDERS_SETTING, "models") if p.is_dir()]


def find_checkpoints(project: Project) -> list[Path]:
    """Checkpoint files and diffusers folders in the project's model folders, by name."""
    found: list[Path] = []
    for folder in model_folders(project):
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            if "model_index.json" in files:
                found.append(Path(root))
                dirs[:] = []
                continue
            found.extend(
                Path(root, f)
                for f in files
                if f.lower().endswith(CHECKPOINT_EXTENSIONS) and not f.startswith(".")
            )
    return sorted(found, key=lambda p: (p.name.lower(), str(p)))


def resolve_model(project: Project, name: str, *, near: str | None = None) -> Path | str:
    """The checkpoint ``name`` refers to: a path (absolute or relative to the project), else a
    checkpoint of that file name or stem in the model folders or beside ``near`` (the job's
    base model, so a Checkpoint name axis can list siblings by name), else a Hub id."""
    if not name or not name.strip():
        raise ModelNotFoundError("no checkpoint chosen")
    name = name.strip()
    direct = Path(name).expanduser()
    for candidate in (direct, project.root / direct):
        if candidate.exists():
            return candidate
    folders = model_folders(project)
    if near:
        near_path = Path(near) if Path(near).is_absolute() else project.root / near
        folders.insert(0, near_path.parent)
    wanted = model_display_name(name).casefold()
    for folder in folders:
        for candidate in sorted(folder.iterdir()) if folder.is_dir() else ():
            if candidate.name.startswith("."):
                continue
            is_model = candidate.suffix.lower() in CHECKPOINT_EXTENSIONS or (
                candidate.is_dir() and (candidate / "model_index.json").is_file()
            )
            if is_model and model_display_name(candidate.name).casefold() == wanted:
                return candidate
    if _HUB_ID.match(name) and not Path(name).suffix:
        return name
    where = ", ".join(str(f) for f in folders) or "no model folders are set"
    raise ModelNotFoundError(f"checkpoint not found: {name} (looked in {where})")


def _variation_seeds(
    settings: GenerationSettings, seeds: Sequence[int], subseeds: Sequence[int] | None
) -> list[int] | None:
    """Each image's variation seed, or None when ``settings`` has no variation strength."""
    if not settings.varied:
        return None
    if subseeds is None:
        if settings.subseed < 0:
            raise ValueError("resolve the variation seed -1 before generating")
        return [settings.subseed + i for i in range(len(seeds))]
    if len(subseeds) != len(seeds):
        raise ValueError(f"{len(subseeds)} variation seeds for {len(seeds)} seeds")
    return list(subseeds)


class ModelRunner:
    """Generates batches for one project with its folders and engine options."""

    def __init__(
        self,
        project: Project,
        *,
        options: EngineOptions | None = None,
        cache: ModelCache | None = None,
    ) -> None:
        self.project = project
        self.options = options or EngineOptions.from_json(
            project.catalog.get_setting(ENGINE_SETTING)
        )
        self.cache = cache or MODEL_CACHE
        # SD 1.x embeddings are 768 wide; files for other models are reported, not used.
        self.embeddings = EmbeddingLibrary(
            _folders(project, EMBEDDING_FOLDERS_SETTING, "embeddings"), width=SD1_WIDTH
        )
        self.loras = LoraLibrary(_folders(project, LORA_FOLDERS_SETTING, "loras"))
        # The job's base checkpoint: a Checkpoint name axis may name its siblings by name.
        self.base_model: str | None = None
        # Set when the half-precision VAE produced NaN: it stays fp32 for the rest of the job.
        self.vae_fp32 = False
        self.notes: list[str] = []  # what the job should tell the artist (the fp32 switch)

    # -- checks before a job ---------------------------------------------------------------

    def _match_embedding_width(self, model: Path | str) -> None:
        """Judge embedding files by the text width of the model they will meet: 768 for SD 1.x
        files; a diffusers folder says its own (the test suite's tiny models are 32 wide)."""
        width = SD1_WIDTH
        config = Path(model) / "text_encoder" / "config.json"
        if config.is_file():
            try:
                width = int(json.loads(config.read_text(encoding="utf-8"))["hidden_size"])
            except (OSError, ValueError, KeyError, TypeError):
                width = SD1_WIDTH
        if self.embeddings.width is not None and self.embeddings.width != width:
            self.embeddings = EmbeddingLibrary(self.embeddings.folders, width=width)

    def problems(self, settings: GenerationSettings, *, read_files: bool = True) -> list[str]:
        """What would stop these settings from generating, in words, before anything runs.

        ``read_files=False`` leaves out the checks that open LoRA and embedding files, for the
        GUI thread; the job makes them before it generates."""
        from charstudio.engine.conditioning import check_prompt_embeddings

        problems: list[str] = []
        try:
            self._match_embedding_width(self.model_path(settings))
        except ModelNotFoundError as error:
            problems.append(str(error))
        if settings.vae and not Path(settings.vae).exists():
            problems.append(f"VAE file not found: {settings.vae}")
        try:  # e.g. a Schedule type axis value the cell's sampler does not offer
            resolve_sampler(settings.sampler, settings.schedule_type)
        except ValueError as error:
            problems.append(str(error))
        for prompt in (settings.prompt, settings.negative_prompt):
            for name, _weights in loras_in_prompt(prompt):
                if self.loras.resolve(name) is None:
                    folders = ", ".join(str(f) for f in self.loras.folders)
                    problems.append(f"unknown LoRA <lora:{name}>: no such file in {folders}")
                elif read_files:
                    try:
                        self.loras.get(name)
                    except Exception as error:  # a broken file: its message names it
                        problems.append(str(error))
            if read_files:
                problems.extend(check_prompt_embeddings(prompt, self.embeddings))
        return list(dict.fromkeys(problems))

    def model_path(self, settings: GenerationSettings) -> Path | str:
        if settings.model is None:
            raise ModelNotFoundError("no checkpoint chosen")
        return resolve_model(self.project, settings.model, near=self.base_model)

    # -- running ---------------------------------------------------------------------------

    def load(self, settings: GenerationSettings) -> SD15Components:
        """The model for ``settings``, loading it (and freeing the previous one) if needed."""
        device = self.options.resolved_device()
        path = self.model_path(settings)
        self._match_embedding_width(path)
        components = self.cache.get(
            path,
            vae=settings.vae,
            device=device,
            dtype=self.options.resolved_dtype(device),
        )
        prepare_for_inference(components, self.options)
        self._set_vae_precision(components)
        return components

    def _set_vae_precision(self, components: Any) -> None:
        """fp32 VAE while this job needs it; a resident model upcast by an earlier job gets its
        own precision back."""
        import torch

        original = getattr(components, "vae_upcast_from", None)
        if self.vae_fp32 and components.vae.dtype != torch.float32:
            components.vae_upcast_from = original or components.vae.dtype
            components.vae.to(dtype=torch.float32)
        elif not self.vae_fp32 and original is not None:
            components.vae.to(dtype=original)
            components.vae_upcast_from = None

    def _apply_loras(self, components: SD15Components, settings: GenerationSettings) -> list[Any]:
        # The patcher lives with the resident model, not with this runner: the next job's
        # runner must know what an earlier job merged into the shared weights.
        patcher = getattr(components, "lora_patcher", None)
        if patcher is None:
            unet = getattr(components.unet, "_orig_mod", components.unet)  # under torch.compile
            patcher = LoraPatcher(unet, components.text_encoder)
            components.lora_patcher = patcher
        tags = loras_in_prompt(settings.prompt)
        chosen = [(self.loras.get(name), weights) for name, weights in tags]
        patcher.set(chosen)
        return [lora for lora, _ in chosen]

    def batch(
        self,
        settings: GenerationSettings,
        seeds: Sequence[int],
        *,
        cancel: CancelToken | None = None,
        decode_mode: str = "batch",
        subseeds: Sequence[int] | None = None,
    ) -> Generator[StepEvent, None, list[tuple[Image.Image, GenerationParams]]]:
        """Sample and decode one batch; yields after every step, returns each image with its
        infotext. ``subseeds`` are the images' variation seeds when ``settings`` has a variation
        strength (default: ``settings.subseed + i`` for image i, as A1111 numbers them). A GPU
        out-of-memory error becomes a :class:`GenerationError` that says what to change; the
        VAE decode first retries image by image, then tiled."""
        from charstudio.engine.conditioning import PromptEncoder
        from charstudio.engine.sampling import iter_sample_latents

        subseeds = _variation_seeds(settings, seeds, subseeds)
        components = self.load(settings)
        loras = self._apply_loras(components, settings)
        device = self.options.resolved_device()
        encoder = PromptEncoder(
            components.text_encoder,
            embeddings=self.embeddings,
            clip_skip=settings.clip_skip,
            emphasis=settings.emphasis,
            device=device,
            dtype=components.unet.dtype,
        )
        loop = iter_sample_latents(
            unet=components.unet,
            vae=components.vae,
            encoder=encoder,
            prompt=settings.prompt,
            negative_prompt=settings.negative_prompt,
            seeds=seeds,
            steps=settings.steps,
            cfg_scale=settings.cfg_scale,
            width=settings.width,
            height=settings.height,
            sampler=settings.sampler,
            schedule_type=settings.schedule_type,
            scheduler_config=components.scheduler_config,
            device=device,
            cancel=cancel,
            rng=settings.rng,
            subseeds=subseeds,
            subseed_strength=settings.subseed_strength,
        )
        from charstudio.engine.nonfinite import bad_rows, latents_message

        reasons: dict[int, str] = {}  # image index -> why it failed (NaN latents)
        sampler = " ".join(filter(None, (settings.sampler, settings.schedule_type)))
        while True:
            try:
                step, total, current = next(loop)
            except StopIteration as done:
                latents = done.value
                break
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                raise self._out_of_memory(settings, len(seeds)) from None
            for index in bad_rows(current):
                reasons.setdefault(index, latents_message(step, total, sampler))
            if len(reasons) == len(seeds):  # nothing left to save: stop sampling now
                loop.close()
                params = self._params(components, settings, encoder, loras, seeds, subseeds)
                raise ImagesFailed([(None, p) for p in params], reasons)
            yield StepEvent(step, total, current)
        good = [i for i in range(len(seeds)) if i not in reasons]
        decoded = self._decode(components, latents[good], settings, len(good), decode_mode)
        images: list[Image.Image | None] = [None] * len(seeds)
        for index, image in zip(good, decoded, strict=True):
            if isinstance(image, str):
                reasons[index] = image
            else:
                images[index] = image
        params = self._params(components, settings, encoder, loras, seeds, subseeds)
        outputs = list(zip(images, params, strict=True))
        if reasons:
            raise ImagesFailed(outputs, reasons)
        return outputs  # type: ignore[return-value]  # no None left

    def _params(
        self,
        components: Any,
        settings: GenerationSettings,
        encoder: Any,
        loras: Any,
        seeds: Any,
        subseeds: Sequence[int] | None = None,
    ) -> list[GenerationParams]:
        extras = self._infotext_extras(components, settings, encoder, loras)
        model_hash = components.model_hash
        return [
            settings.to_params(
                seed,
                subseed=None if subseeds is None else subseeds[i],
                model_hash=model_hash,
                extras=extras,
            )
            for i, seed in enumerate(seeds)
        ]

    def _decode(
        self, components: Any, latents: Any, settings: GenerationSettings, count: int, mode: str
    ) -> list[Image.Image | str]:
        """The decoded images; a string (the reason) for an image the VAE turned into NaN even
        in fp32. NaN from a half-precision VAE switches it to fp32 and decodes again."""
        from charstudio.engine.nonfinite import NonFiniteDecode, is_half
        from charstudio.engine.runtime import free_gpu_memory
        from charstudio.engine.sampling import DECODE_MODES, decode_latents

        if count == 0:
            return []
        modes = list(DECODE_MODES[DECODE_MODES.index(mode) :])
        while True:
            try:
                return list(decode_latents(components.vae, latents, mode=modes[0]))
            except NonFiniteDecode as error:
                if is_half(error.dtype) and not self.vae_fp32:
                    self.vae_fp32 = True
                    self._set_vae_precision(components)
                    self.notes.append(VAE_FP32_NOTE)
                    log.warning(VAE_FP32_NOTE)
                    continue
                return [
                    str(error) if i in error.indices else image
                    for i, image in enumerate(error.images)
                ]
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                free_gpu_memory()
                modes.pop(0)
                if not modes:
                    raise self._out_of_memory(settings, count) from None

    @staticmethod
    def _out_of_memory(settings: GenerationSettings, count: int) -> GenerationError:
        from charstudio.engine.runtime import free_gpu_memory

        free_gpu_memory()
        advice = (
            f"try a smaller batch size (e.g. {max(1, count // 2)})"
            if count > 1
            else "try a smaller image size, or close other programs using the GPU"
        )
        return GenerationError(
            f"The GPU ran out of memory generating {count} image{'s' if count != 1 else ''} of "
            f"{settings.width}×{settings.height} at once; {advice}. "
            "Images finished before this were kept."
        )

    def _infotext_extras(
        self, components: Any, settings: GenerationSettings, encoder: Any, loras: list[Any]
    ) -> dict[str, object]:
        extras: dict[str, object] = {}
        if components.vae_hash:
            extras["VAE hash"] = components.vae_hash
        used = {}
        for prompt in (settings.prompt, settings.negative_prompt):
            used.update(encoder.used_embeddings(prompt))
        ti = [f"{name}: {emb.shorthash}" for name, emb in used.items() if emb and emb.shorthash]
        if ti:
            extras["TI hashes"] = ", ".join(ti)
        if loras:
            extras["Lora hashes"] = lora_hashes_infotext(loras)
        extras["Version"] = f"charstudio {__version__}"
        return extras
