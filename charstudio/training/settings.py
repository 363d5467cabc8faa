"""Textual-inversion training settings: A1111's Train tab as one JSON-ready dataclass.

The defaults are the community workflow's (DESIGN.md, step 3): the project's token as the name,
init text ``woman``, 2 vectors, a fixed learning rate of 0.002, batch size = the number of
images up to 8 with no gradient accumulation, 150 steps, an embedding saved every step, a
preview every 5 steps, the template ``a closeup photo of [name], neutral gray background``,
512×512 and latent sampling "once". Every option of A1111's Train tab for embeddings is here
too (learning-rate schedules, gradient clipping, templates with ``[filewords]``, tag shuffling
and dropout, latent sampling methods, alpha-channel loss weights, preview settings), plus a fixed
seed so that a run can be repeated and resumed exactly.

A step is one optimizer step: ``batch_size × gradient_accumulation`` images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from charstudio.training.lr_schedule import RateSchedule, ScheduleError, parse_rate_schedule
from charstudio.training.settings_checks import (
    TrainSettingsError,
    choice_problems,
    is_int,
    is_number,
    json_fields,
    minimum_problems,
    raise_problems,
    sampler_problems,
)
from charstudio.training.templates import (
    DEFAULT_TEMPLATE,
    FILEWORDS,
    NAME,
    render_template,
    template_lines,
)
from charstudio.training.token_names import token_name_problems, token_name_warnings

if TYPE_CHECKING:
    from charstudio.catalog.project import Project

__all__ = [
    "CLIP_GRAD_MODES",
    "DEFAULT_BATCH_SIZE",
    "LATENT_SAMPLING_METHODS",
    "TRAIN_PRECISIONS",
    "TrainSettingsError",
    "TrainTISettings",
]

LATENT_SAMPLING_METHODS = ("once", "deterministic", "random")
CLIP_GRAD_MODES = ("disabled", "value", "norm")
# "auto": float16 weights with fp16 autocast on CUDA (A1111's default), float32 on the CPU.
TRAIN_PRECISIONS = ("auto", "fp16", "bf16", "fp32")
DEFAULT_BATCH_SIZE = 8
DEFAULT_SEED = 12345678
MAX_VECTORS = 75  # one prompt chunk


@dataclass(frozen=True)
class TrainTISettings:
    """What a textual-inversion run needs besides the model and the images."""

    name: str = ""  # the embedding's name and prompt token; "" means the project's token
    init_text: str = "woman"
    vectors: int = 2
    learning_rate: str = "0.002"  # a rate or an A1111 schedule "0.005:100, 1e-3:1000, 1e-5"
    batch_size: int | None = None  # None: the number of images, at most 8
    gradient_accumulation: int = 1
    max_steps: int = 150
    save_every: int = 1  # 0: only the last step
    preview_every: int = 5  # 0: no previews
    template: str = DEFAULT_TEMPLATE  # lines with [name] and [filewords]
    width: int = 512
    height: int = 512
    latent_sampling: str = "once"
    seed: int = DEFAULT_SEED  # -1: random, fixed when the run starts
    shuffle_tags: bool = False
    tag_dropout: float = 0.0
    clip_grad_mode: str = "disabled"
    clip_grad_value: str = "0.1"  # a value or a schedule, like the learning rate
    use_alpha_weight: bool = False  # A1111 "Use PNG alpha channel as loss weight"
    clip_skip: int = 1
    precision: str = "auto"
    gradient_checkpointing: bool = False
    preview_prompt: str = ""  # "": the template's first line ([filewords]: the first caption)
    preview_negative_prompt: str = ""
    preview_seed: int = DEFAULT_SEED
    preview_sampler: str = "DPM++ 2M"
    preview_schedule_type: str | None = "Karras"
    preview_steps: int = 20
    preview_cfg_scale: float = 7.0

    # -- construction -------------------------------------------------------------------

    @classmethod
    def for_project(cls, project: Project, **changes: Any) -> TrainTISettings:
        """The defaults with the project's token as the name."""
        return cls(**{"name": project.token, **changes})

    def replace(self, **changes: Any) -> TrainTISettings:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> TrainTISettings:
        """Settings from JSON; missing keys take the defaults, unknown keys are an error (a typo
        must not silently train with a default). Values are checked by :meth:`validate`."""
        return cls(
            **json_fields(cls, data, what="training", floats=("tag_dropout", "preview_cfg_scale"))
        )

    # -- derived values -----------------------------------------------------------------

    @property
    def lines(self) -> list[str]:
        return template_lines(self.template)

    def schedule(self) -> RateSchedule:
        return parse_rate_schedule(self.learning_rate, what="learning rate")

    def clip_schedule(self) -> RateSchedule | None:
        if self.clip_grad_mode == "disabled":
            return None
        return parse_rate_schedule(self.clip_grad_value, what="gradient clipping value")

    def end_step(self) -> int:
        """The step training ends at: max steps, or the end of a schedule that ends earlier."""
        return self.schedule().end_step(self.max_steps)

    def batch_plan(self, n_images: int) -> tuple[int, int, list[str]]:
        """``(batch size, gradient accumulation, notes)`` for ``n_images`` images.

        As A1111: the batch is at most the number of images, and accumulation at most what
        fits, so that one step never uses an image twice.
        """
        if n_images < 1:
            raise TrainSettingsError(["there are no images to train on"])
        wanted = self.batch_size or DEFAULT_BATCH_SIZE
        batch = min(wanted, n_images)
        accumulation = max(1, min(self.gradient_accumulation, n_images // batch))
        notes = []
        if self.batch_size and batch < self.batch_size:
            notes.append(f"batch size {self.batch_size} lowered to {batch}: only {n_images} images")
        if accumulation < self.gradient_accumulation:
            notes.append(
                f"gradient accumulation {self.gradient_accumulation} lowered to {accumulation}: "
                f"batch {batch} × {accumulation} must not exceed the {n_images} images"
            )
        return batch, accumulation, notes

    def preview_text(self, name: str, first_caption: str = "") -> str:
        """The preview prompt with ``[name]`` (and ``[filewords]``) filled in."""
        text = self.preview_prompt or (self.lines[0] if self.lines else NAME)
        return render_template(text, name=name, caption=first_caption)

    # -- checks -------------------------------------------------------------------------

    def problems(self) -> list[str]:
        """Every reason these settings cannot train, in words (empty when they can)."""
        out: list[str] = []
        if self.name:
            out += token_name_problems(self.name)
        if not isinstance(self.init_text, str):
            out.append("init text must be text")
        out += self._int_problems()
        for schedule_text, what, needed in (
            (self.learning_rate, "learning rate", True),
            (self.clip_grad_value, "gradient clipping value", self.clip_grad_mode != "disabled"),
        ):
            if needed:
                try:
                    parse_rate_schedule(schedule_text, what=what)
                except ScheduleError as error:
                    out.append(str(error))
        lines = template_lines(self.template) if isinstance(self.template, str) else []
        if not lines:
            out.append("the prompt template is empty; it needs at least one line with [name]")
        elif not any(NAME in line for line in lines):
            out.append(
                "no line of the prompt template contains [name], so the embedding would never "
                "be trained; e.g. 'a closeup photo of [name], neutral gray background'"
            )
        for size_name, value in (("width", self.width), ("height", self.height)):
            if is_int(value) and value % 8:
                out.append(f"training {size_name} must be a multiple of 8, not {value}")
        out += self._choice_problems()
        if not is_number(self.tag_dropout) or not 0 <= self.tag_dropout <= 1:
            out.append(f"tag dropout must be between 0 and 1, not {self.tag_dropout!r}")
        out += self._preview_problems()
        return out

    def _int_problems(self) -> list[str]:
        minimums = {
            "vectors per token": (self.vectors, 1),
            "gradient accumulation": (self.gradient_accumulation, 1),
            "max steps": (self.max_steps, 1),
            "save every": (self.save_every, 0),
            "preview every": (self.preview_every, 0),
            "width": (self.width, 8),
            "height": (self.height, 8),
            "seed": (self.seed, -1),
            "clip skip": (self.clip_skip, 1),
            "preview steps": (self.preview_steps, 1),
            "preview seed": (self.preview_seed, -1),
        }
        if self.batch_size is not None:
            minimums["batch size"] = (self.batch_size, 1)
        out = minimum_problems(minimums)
        if is_int(self.vectors) and self.vectors > MAX_VECTORS:
            out.append(f"vectors per token must be at most {MAX_VECTORS}, not {self.vectors}")
        return out

    def _choice_problems(self) -> list[str]:
        return choice_problems(
            (
                ("latent sampling", self.latent_sampling, LATENT_SAMPLING_METHODS),
                ("gradient clipping", self.clip_grad_mode, CLIP_GRAD_MODES),
                ("precision", self.precision, TRAIN_PRECISIONS),
            )
        )

    def _preview_problems(self) -> list[str]:
        out = []
        if not is_number(self.preview_cfg_scale):
            out.append(f"preview CFG scale must be a number, not {self.preview_cfg_scale!r}")
        if self.preview_every:
            out += sampler_problems(
                "preview sampler", self.preview_sampler, self.preview_schedule_type
            )
        return out

    def validate(self) -> None:
        """Raise :class:`TrainSettingsError` listing every problem."""
        raise_problems(self.problems())

    def warnings(self) -> list[str]:
        """What may be a mistake but still trains."""
        out: list[str] = []
        if self.name:
            out += token_name_warnings(self.name)
        lines = self.lines
        missing = [line for line in lines if NAME not in line]
        if missing and len(missing) < len(lines):
            out.append(
                f"{len(missing)} template line(s) lack [name] and train nothing: {missing[0]!r}"
            )
        if (self.shuffle_tags or self.tag_dropout) and not any(FILEWORDS in ln for ln in lines):
            out.append("tag shuffling/dropout only changes [filewords], which no line contains")
        if self.init_text and self.init_text.strip():
            from charstudio.prompts import get_clip_tokenizer

            n_tokens = len(get_clip_tokenizer().encode(self.init_text))
            if is_int(self.vectors) and n_tokens > self.vectors:
                out.append(
                    f"init text {self.init_text!r} has {n_tokens} tokens; only the first "
                    f"{self.vectors} are used (one per vector)"
                )
        return out
