"""LoRA training settings: kohya's options that matter for one character, as one JSON-ready
dataclass a presenter can bind (every field has a default; :meth:`from_json` is lenient about
missing keys and strict about unknown ones).

Defaults are the community's for a character LoRA on SD 1.5: dim 16 / alpha 8, UNet rate 1e-4
and text-encoder rate 5e-5 with AdamW and a cosine schedule, min-SNR gamma 5, 512 px with aspect
buckets, the activation tag kept first while the other tags shuffle, latents cached. Repeats and
epochs left unset are chosen so that ``images × repeats × epochs`` is about 1,600 samples (10
epochs of about 160), which lands in the 1,500-3,000 steps the guides give for 8 images at batch 1.

A step is one optimizer step: ``batch_size × gradient_accumulation`` samples. An epoch is every
image ``repeats`` times.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from charstudio.training.settings import DEFAULT_SEED
from charstudio.training.settings_checks import (
    choice_problems,
    is_int,
    is_number,
    json_fields,
    minimum_problems,
    raise_problems,
    sampler_problems,
)
from charstudio.training.token_names import token_name_problems

__all__ = [
    "LORA_OPTIMIZERS",
    "LORA_PRECISIONS",
    "LORA_SCHEDULERS",
    "SAMPLES_PER_EPOCH",
    "TrainLoraSettings",
]

LORA_OPTIMIZERS = ("AdamW", "AdamW8bit", "Prodigy")
LORA_SCHEDULERS = ("constant", "constant_with_warmup", "cosine", "cosine_with_warmup")
LORA_PRECISIONS = ("auto", "fp16", "bf16", "fp32")
SAMPLES_PER_EPOCH = 160  # images × repeats wanted per epoch when repeats are left unset
DEFAULT_EPOCHS = 10
WARMUP_FRACTION = 0.05  # of all steps, for a *_with_warmup schedule without warmup steps


@dataclass(frozen=True)
class TrainLoraSettings:
    """What a LoRA run needs besides the model and the images."""

    name: str = ""  # output name (files NAME-000001.safetensors); "": the project's token
    token: str = ""  # activation tag, first in every caption; "": the project's token
    dim: int = 16  # network rank
    alpha: float = 8.0
    conv_dim: int = 0  # LoCon: rank of the 3×3 convolutions' LoRA; 0 = off
    conv_alpha: float = 1.0
    train_text_encoder: bool = True
    unet_lr: float = 1e-4
    te_lr: float = 5e-5
    optimizer: str = "AdamW"
    weight_decay: float = 0.01
    scheduler: str = "cosine"
    warmup_steps: int = 0  # for *_with_warmup; 0 = 5% of the steps
    min_snr_gamma: float = 5.0  # 0 = off
    noise_offset: float = 0.0
    max_grad_norm: float = 1.0  # 0 = no clipping
    epochs: int | None = None  # None: DEFAULT_EPOCHS
    repeats: int | None = None  # None: about SAMPLES_PER_EPOCH / images
    batch_size: int = 1
    gradient_accumulation: int = 1
    resolution: int = 512
    buckets: bool = True  # aspect-ratio buckets; off: every image centre-cropped square
    bucket_step: int = 64
    keep_tokens: int = 1
    shuffle_tags: bool = True
    caption_dropout: float = 0.0  # train this share of samples with an empty caption
    tag_dropout: float = 0.0  # drop each tag (past keep_tokens) with this probability
    cache_latents: bool = True  # off: every sample is encoded again (the same pixels here)
    gradient_checkpointing: bool = False
    precision: str = "auto"  # auto: fp16 weights with fp16 autocast on CUDA, fp32 on the CPU
    clip_skip: int = 1
    seed: int = DEFAULT_SEED  # -1: random, fixed when the run starts
    save_every_epochs: int | None = None  # None: 1 up to 20 epochs, else a tenth
    sample_every_epochs: int = 1  # 0: no samples
    sample_steps: int = 20
    sample_sampler: str = "DPM++ 2M"
    sample_schedule_type: str | None = "Karras"
    sample_cfg_scale: float = 7.0
    sample_negative_prompt: str = ""  # "": each sample prompt's own negative
    sample_prompts: tuple[str, ...] = ()  # (): the training images' own prompts and seeds
    sample_seeds: tuple[int, ...] = ()
    max_samples: int = 4  # prompts sampled per epoch when taken from the images

    # -- construction -------------------------------------------------------------------

    def replace(self, **changes: Any) -> TrainLoraSettings:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["sample_prompts"] = list(self.sample_prompts)
        data["sample_seeds"] = list(self.sample_seeds)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> TrainLoraSettings:
        """Settings from JSON; missing keys take the defaults, unknown keys are an error (a typo
        must not silently train with a default). Values are checked by :meth:`validate`."""
        floats = (
            "alpha",
            "conv_alpha",
            "unet_lr",
            "te_lr",
            "weight_decay",
            "min_snr_gamma",
            "noise_offset",
            "max_grad_norm",
            "caption_dropout",
            "tag_dropout",
            "sample_cfg_scale",
        )
        tuples = ("sample_prompts", "sample_seeds")
        return cls(**json_fields(cls, data, what="LoRA", floats=floats, tuples=tuples))

    def with_optimizer(self, optimizer: str) -> TrainLoraSettings:
        """Choose an optimizer with its usual rates: Prodigy finds its own step size (rates 1.0,
        constant schedule); going back to AdamW restores the AdamW defaults."""
        if optimizer == "Prodigy":
            return self.replace(optimizer=optimizer, unet_lr=1.0, te_lr=1.0, scheduler="constant")
        if self.optimizer == "Prodigy":
            defaults = TrainLoraSettings()
            return self.replace(
                optimizer=optimizer,
                unet_lr=defaults.unet_lr,
                te_lr=defaults.te_lr,
                scheduler=defaults.scheduler,
            )
        return self.replace(optimizer=optimizer)

    # -- derived values -----------------------------------------------------------------

    def resolved_epochs(self) -> int:
        return self.epochs if self.epochs else DEFAULT_EPOCHS

    def resolved_repeats(self, n_images: int) -> int:
        if self.repeats:
            return self.repeats
        return max(1, round(SAMPLES_PER_EPOCH / max(n_images, 1)))

    def resolved_save_every(self) -> int:
        if self.save_every_epochs:
            return self.save_every_epochs
        epochs = self.resolved_epochs()
        return 1 if epochs <= 20 else max(1, epochs // 10)

    def warmup_for(self, total_steps: int) -> int:
        if not self.scheduler.endswith("_with_warmup"):
            return 0
        if self.warmup_steps:
            return min(self.warmup_steps, total_steps)
        return max(1, round(total_steps * WARMUP_FRACTION))

    # -- checks -------------------------------------------------------------------------

    def problems(self) -> list[str]:
        """Every reason these settings cannot train, in words (empty when they can)."""
        out: list[str] = []
        for label, value in (("name", self.name), ("activation tag", self.token)):
            if value:
                out += [f"{label}: {p}" for p in token_name_problems(value)]
        minimums: dict[str, tuple[Any, int]] = {
            "network dim": (self.dim, 1),
            "conv dim": (self.conv_dim, 0),
            "warmup steps": (self.warmup_steps, 0),
            "batch size": (self.batch_size, 1),
            "gradient accumulation": (self.gradient_accumulation, 1),
            "resolution": (self.resolution, 8),
            "bucket step": (self.bucket_step, 8),
            "keep tokens": (self.keep_tokens, 0),
            "clip skip": (self.clip_skip, 1),
            "seed": (self.seed, -1),
            "sample every epochs": (self.sample_every_epochs, 0),
            "sample steps": (self.sample_steps, 1),
            "max samples": (self.max_samples, 1),
        }
        for label, value in (
            ("epochs", self.epochs),
            ("repeats", self.repeats),
            ("save every epochs", self.save_every_epochs),
        ):
            if value is not None:
                minimums[label] = (value, 1)
        out += minimum_problems(minimums)
        if is_int(self.resolution) and self.resolution % 8:
            out.append(f"resolution must be a multiple of 8, not {self.resolution}")
        if is_int(self.bucket_step) and self.bucket_step % 8:
            out.append(f"bucket step must be a multiple of 8, not {self.bucket_step}")
        for label, value in (
            ("network alpha", self.alpha),
            ("conv alpha", self.conv_alpha),
            ("weight decay", self.weight_decay),
            ("min-SNR gamma", self.min_snr_gamma),
            ("noise offset", self.noise_offset),
            ("max gradient norm", self.max_grad_norm),
            ("sample CFG scale", self.sample_cfg_scale),
        ):
            if not is_number(value) or value < 0:
                out.append(f"{label} must be a number ≥ 0, not {value!r}")
        for label, value in (
            ("UNet learning rate", self.unet_lr),
            ("text encoder rate", self.te_lr),
        ):
            if not is_number(value) or value <= 0:
                out.append(f"{label} must be a positive number, not {value!r}")
        for label, value in (
            ("caption dropout", self.caption_dropout),
            ("tag dropout", self.tag_dropout),
        ):
            if not is_number(value) or not 0 <= value <= 1:
                out.append(f"{label} must be between 0 and 1, not {value!r}")
        out += choice_problems(
            (
                ("optimizer", self.optimizer, LORA_OPTIMIZERS),
                ("scheduler", self.scheduler, LORA_SCHEDULERS),
                ("precision", self.precision, LORA_PRECISIONS),
            )
        )
        if not all(is_int(s) for s in self.sample_seeds):
            out.append("sample seeds must be whole numbers")
        if self.sample_every_epochs:
            out += sampler_problems(
                "sample sampler", self.sample_sampler, self.sample_schedule_type
            )
        return out

    def validate(self) -> None:
        """Raise :class:`~charstudio.training.settings_checks.TrainSettingsError` listing every
        problem."""
        raise_problems(self.problems())

    def warnings(self) -> list[str]:
        """What may be a mistake but still trains."""
        out = []
        if self.optimizer == "Prodigy" and (self.unet_lr != 1.0 or self.scheduler != "constant"):
            out.append(
                "Prodigy finds its own step size: its learning rates should be 1.0 with the "
                f"constant scheduler (now UNet {self.unet_lr:g}, {self.scheduler})"
            )
        if self.keep_tokens < 1 and self.shuffle_tags:
            out.append("keep tokens 0 with shuffled tags moves the activation tag around")
        return out
