"""A1111's X/Y/Z plot as data: generation settings, sweep axes and the plan of every image.

Nothing here touches a model: :func:`plan_sweep` expands a base :class:`GenerationSettings` and up
to three :class:`Axis` objects into cells and image jobs, with every seed resolved, so the plan can
be validated (Prompt S/R errors, bad values) before a job starts and every image can be
regenerated alone from its own settings.

Axes, by their A1111 names (matched case-insensitively; the CLI form is ``TYPE:VALUES``):

* ``Prompt S/R``: the first value is searched in the prompt and negative prompt (it must occur
  in one of them); each value replaces every occurrence in both. The first value is itself the
  first column.
* ``Seed``, ``Steps`` (ints), ``CFG Scale`` (floats): single values or A1111 ranges, ``1-5``,
  ``1-5 (+2)``, ``1-10 [5]``.
* ``Sampler``: A1111 sampler names, also old-style names with a schedule (``DPM++ 2M Karras``),
  which then set the schedule type too; a bare name keeps the base schedule type, as in A1111 1.9+.
* ``Checkpoint name``: a checkpoint name or file, resolved by the engine.
* ``Size``: ``WIDTHxHEIGHT`` such as ``512x768``.
* ``Embedding``: embedding file names (the extension is dropped). It works like Prompt S/R on the
  embedding's name, but matches whole names only, so ``fr3nch-40`` does not match inside
  ``fr3nch-400``.
* ``LoRA weight``: floats or ranges; rewrites the weight of the *first* ``<lora:name:w>`` tag of
  the prompt (the tag artists put first is the one being tuned; further tags keep their weights).
* ``Clip skip`` (ints); ``Schedule type`` (``Karras``, ``Exponential``…; the sampler must offer
  it, checked before the job).
* ``VAE``: a VAE file's path, or ``None`` for the checkpoint's own VAE.
* ``Prompt order``: prompt parts; the cells are every ordering of them (3 parts, 6 cells), each
  written where the parts stand in the prompt, as A1111 does.

Values are CSV (quotes protect commas) and stripped, as in A1111. Cells are processed with the
costliest axes (Checkpoint name, VAE) outermost, so models switch as rarely as possible; otherwise
Z is outermost and X innermost, like A1111.

Each image carries its sweep coordinates as a flat ``dict[str, str]`` for the catalog: the value
under the axis letter and the axis type under ``"<letter> axis"``, e.g.
``{"X axis": "Prompt S/R", "X": "a medium closeup", "Y axis": "Prompt S/R", "Y": "side angle"}``.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import math
import random
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from io import StringIO
from pathlib import PureWindowsPath
from typing import Any

from charstudio.engine.samplers import (
    SAMPLER_NAMES,
    SCHEDULE_TYPES,
    schedule_label,
    split_sampler_name,
)
from charstudio.engine.seeds import DEFAULT_RNG, normalize_rng
from charstudio.metadata.infotext import GenerationParams
from charstudio.prompts.attention import EMPHASIS_MODES
from charstudio.prompts.extra_networks import ExtraNetwork, split_extra_networks

__all__ = [
    "AXIS_TYPES",
    "CHARACTER_SHEET_X",
    "CHARACTER_SHEET_Y",
    "SAMPLER_NAMES",
    "SCHEDULE_TYPES",
    "Axis",
    "AxisValue",
    "GenerationSettings",
    "ImageJob",
    "SweepCell",
    "SweepPlan",
    "character_sheet_preset",
    "make_axis",
    "model_display_name",
    "parse_axis",
    "plan_character_sheet",
    "plan_sweep",
    "random_seed",
    "split_sampler_name",
]

# A size is (width, height); a Prompt order value is one ordering of the axis's prompt parts.
AxisValue = str | int | float | tuple[int, int] | tuple[str, ...]

# A1111 draws random seeds with random.randrange(4294967294).
_SEED_LIMIT = 4294967294
# A1111 rounds float axis values to 8 decimals in its labels; doing it to the values themselves
# also hides float noise from ranges (0.1 + 0.2).
_FLOAT_DECIMALS = 8

_MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".bin", ".pth")
_EMBEDDING_EXTENSIONS = (".safetensors", ".pt", ".bin")


def random_seed(rng: random.Random | None = None) -> int:
    """A random seed from A1111's range."""
    return (rng or random).randrange(_SEED_LIMIT)


def model_display_name(model: str) -> str:
    """The name A1111 writes as ``Model:``: the file name without folders or extension."""
    name = PureWindowsPath(model.strip()).name or model.strip()  # handles / and \ alike
    lowered = name.lower()
    for extension in _MODEL_EXTENSIONS:
        if lowered.endswith(extension) and len(name) > len(extension):
            return name[: -len(extension)]
    return name


# --- settings -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationSettings:
    """Everything A1111's txt2img needs for one job (a cell of a sweep, or a plain generation).

    ``seed`` -1 means random. Embeddings and LoRAs are chosen in the prompt, as in A1111: an
    embedding by its file name, a LoRA by a ``<lora:name:weight>`` tag (see ``extra_networks``).
    ``extra_params`` are further infotext items (e.g. ``("Lora hashes", ...)``), in order.
    """

    prompt: str
    negative_prompt: str = ""
    seed: int = -1
    steps: int = 30
    sampler: str = "DPM++ 2M"
    schedule_type: str | None = "Karras"
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    model: str | None = None
    model_hash: str | None = None
    vae: str | None = None
    clip_skip: int = 1
    # A1111's "Emphasis mode": "Original", "No norm", or "None" (brackets are plain text).
    emphasis: str = "Original"
    # A1111's "Random number generator source": "NV" (CUDA's noise on any machine, charstudio's
    # default), "CPU" or "GPU" (A1111's default); written as ``RNG`` in every image's infotext.
    rng: str = DEFAULT_RNG
    # A1111's variation seed ("subseed", -1 random) and its strength (0: no variation). With a
    # strength every image of the job keeps ``seed`` and image k varies toward ``subseed + k``.
    subseed: int = -1
    subseed_strength: float = 0.0
    batch_size: int = 1
    batch_count: int = 1
    extra_params: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        _check_int("Seed", self.seed, minimum=-1)
        _check_int("Steps", self.steps, minimum=1)
        _check_int("Clip skip", self.clip_skip, minimum=1)
        object.__setattr__(self, "rng", normalize_rng(self.rng))
        _check_int("Variation seed", self.subseed, minimum=-1)
        strength = self.subseed_strength
        if isinstance(strength, bool) or not isinstance(strength, int | float):
            raise ValueError(f"Variation seed strength must be a number, not {strength!r}")
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"Variation seed strength must be in [0, 1], not {strength!r}")
        object.__setattr__(self, "subseed_strength", float(strength))
        if self.emphasis not in EMPHASIS_MODES:
            modes = ", ".join(EMPHASIS_MODES)
            raise ValueError(f"Emphasis must be one of {modes}, not {self.emphasis!r}")
        _check_int("Batch size", self.batch_size, minimum=1)
        _check_int("Batch count", self.batch_count, minimum=1)
        _check_size(self.width, self.height)
        if isinstance(self.cfg_scale, bool) or not isinstance(self.cfg_scale, int | float):
            raise ValueError(f"CFG scale must be a number, not {self.cfg_scale!r}")
        if not math.isfinite(self.cfg_scale):
            raise ValueError(f"CFG scale must be a finite number, not {self.cfg_scale!r}")
        object.__setattr__(self, "cfg_scale", float(self.cfg_scale))
        # An old-style sampler name carries its schedule ("DPM++ 2M Karras"); split it so
        # settings compare equal however the sampler was written.
        for suffix in ("Karras", "Exponential"):
            if self.sampler.endswith(" " + suffix) and self.sampler not in SAMPLER_NAMES:
                object.__setattr__(self, "sampler", self.sampler[: -len(suffix) - 1])
                object.__setattr__(self, "schedule_type", suffix)

    @property
    def images_per_job(self) -> int:
        return self.batch_size * self.batch_count

    @property
    def extra_networks(self) -> list[ExtraNetwork]:
        """The prompt's extra-network tags (``<lora:name:w>`` ...), in order."""
        return split_extra_networks(self.prompt)[1]

    @property
    def varied(self) -> bool:
        """Whether a variation seed blends into the noise (A1111: strength not 0)."""
        return self.subseed_strength != 0

    def replace(self, **changes: Any) -> GenerationSettings:
        return dataclasses.replace(self, **changes)

    def to_params(
        self,
        seed: int | None = None,
        *,
        subseed: int | None = None,
        model_hash: str | None = None,
        extras: Mapping[str, object] | None = None,
    ) -> GenerationParams:
        """The A1111 infotext of one image made with these settings.

        ``seed`` is that image's seed (default: ``self.seed``) and must not be -1. ``model_hash``
        overrides ``self.model_hash`` (the engine knows it once the checkpoint is hashed).
        ``subseed`` is the image's variation seed (default: ``self.subseed``), written with its
        strength only when the strength is not 0, as A1111 does.
        Like A1111, ``Clip skip`` is written only above 1 and ``Model``/``VAE`` as file names
        without extension.
        """
        seed = self.seed if seed is None else seed
        if seed < 0:
            raise ValueError("an image's infotext needs its actual seed, not -1 (random)")
        more: dict[str, object] = {**dict(self.extra_params), **(extras or {})}
        # A1111 omits RNG for its default (GPU); charstudio always writes it, so nobody has to
        # know whose default applies (A1111 reads "RNG: GPU" as its option value too).
        more = {"RNG": self.rng, **{k: v for k, v in more.items() if k != "RNG"}}
        if self.varied:
            subseed = self.subseed if subseed is None else subseed
            if subseed < 0:
                raise ValueError("an image's infotext needs its actual variation seed, not -1")
            more["Variation seed"] = subseed
            more["Variation seed strength"] = self.subseed_strength
        if self.vae:
            more["VAE"] = model_display_name(self.vae)
        # A1111 notes a non-default emphasis mode when a prompt has brackets it affects.
        if self.emphasis != "Original" and any(
            "(" in text or "[" in text for text in (self.prompt, self.negative_prompt)
        ):
            more["Emphasis"] = self.emphasis
        params = GenerationParams.from_values(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            steps=self.steps,
            sampler=self.sampler,
            schedule_type=self.schedule_type,
            cfg_scale=self.cfg_scale,
            seed=seed,
            width=self.width,
            height=self.height,
            model_hash=model_hash or self.model_hash,
            model=model_display_name(self.model) if self.model else None,
            clip_skip=self.clip_skip if self.clip_skip > 1 else None,
            extras=more,
        )
        # A1111 writes "VAE hash"/"VAE" right after "Model", not after "Clip skip".
        params.settings = _move_after(
            params.settings, ["VAE hash", "VAE"], after=["Size", "Model hash", "Model"]
        )
        params.settings = _move_after(
            params.settings,
            ["Variation seed", "Variation seed strength"],
            after=["Size", "Model hash", "Model", "VAE hash", "VAE"],
        )
        return params


def _move_after(
    settings: dict[str, str], keys: Sequence[str], *, after: Sequence[str]
) -> dict[str, str]:
    """``settings`` with ``keys`` moved behind the last present key of ``after``."""
    moved = {k: settings[k] for k in keys if k in settings}
    if not moved:
        return settings
    rest = [(k, v) for k, v in settings.items() if k not in moved]
    anchors = [i + 1 for i, (k, _) in enumerate(rest) if k in after]
    position = max(anchors, default=len(rest))
    return dict(rest[:position] + list(moved.items()) + rest[position:])


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, not {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")


def _check_size(width: object, height: object) -> None:
    for name, value in (("Width", width), ("Height", height)):
        _check_int(name, value, minimum=8)
        assert isinstance(value, int)
        if value % 8:
            raise ValueError(
                f"{name} must be a multiple of 8 (Stable Diffusion latents), not {value}"
            )


# --- axes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _AxisType:
    name: str
    aliases: tuple[str, ...]
    kind: str  # "text", "int", "float", "sampler", "size"
    labelled: bool  # A1111 labels numbers "Steps: 20"; text values stand alone
    cost: int = 0  # how expensive a change of value is: costlier axes change least often


_TYPES = (
    _AxisType("Prompt S/R", ("prompt sr", "prompt s/r", "prompt search/replace"), "text", False),
    _AxisType("Seed", ("seed", "seeds"), "int", True),
    _AxisType("Steps", ("steps",), "int", True),
    _AxisType("CFG Scale", ("cfg scale", "cfg", "cfg_scale"), "float", True),
    _AxisType("Sampler", ("sampler",), "sampler", False),
    _AxisType("Checkpoint name", ("checkpoint name", "checkpoint", "model"), "text", False, 1),
    _AxisType("Size", ("size",), "size", True),
    _AxisType("Embedding", ("embedding", "embeddings", "textual inversion"), "text", False),
    _AxisType("LoRA weight", ("lora weight", "lora weights", "lora"), "float", True),
    _AxisType("Clip skip", ("clip skip", "clip_skip", "clipskip"), "int", True),
    _AxisType("Schedule type", ("schedule type", "schedule", "scheduler"), "schedule", True),
    _AxisType("VAE", ("vae", "sd vae"), "text", True, 1),
    _AxisType("Prompt order", ("prompt order",), "order", False),
)
_TYPES_BY_KEY = {alias: t for t in _TYPES for alias in (t.name.casefold(), *t.aliases)}
AXIS_TYPES: tuple[str, ...] = tuple(t.name for t in _TYPES)
NO_VAE = "None"  # a VAE axis value: the checkpoint's own VAE


def _axis_type(name: str) -> _AxisType:
    key = " ".join(name.split()).casefold()
    try:
        return _TYPES_BY_KEY[key]
    except KeyError:
        raise ValueError(f"unknown axis type {name!r}; known: {', '.join(AXIS_TYPES)}") from None


@dataclass(frozen=True)
class Axis:
    """One sweep axis: an A1111 axis type and its values, already expanded and validated.

    Build it with :func:`parse_axis` (CLI text) or :func:`make_axis` (values from the GUI).
    """

    type: str
    values: tuple[AxisValue, ...]

    def __post_init__(self) -> None:
        kind = _axis_type(self.type)
        object.__setattr__(self, "type", kind.name)
        # Normalise and validate whatever was given (numbers, range strings, names).
        if kind.kind == "order":
            values = _orderings(self.values)
        else:
            values = tuple(value for raw in self.values for value in _convert(kind, raw))
        if not values:
            raise ValueError(f"{kind.name} axis has no values")
        if kind.name == "Prompt S/R" and not values[0]:
            # Searching for "" would match between every two characters.
            raise ValueError("Prompt S/R axis: the first value (the text to search for) is empty")
        object.__setattr__(self, "values", values)

    def __len__(self) -> int:
        return len(self.values)

    def value_text(self, index: int) -> str:
        """The value as plain text, as in the sweep coordinates (``"7.5"``, ``"512x768"``)."""
        return _value_text(self.values[index])

    @property
    def labels(self) -> tuple[str, ...]:
        """Grid legend texts as A1111 writes them: ``"Steps: 20"``, or the bare text value."""
        labelled = _axis_type(self.type).labelled
        texts = (_value_text(v) for v in self.values)
        return tuple(f"{self.type}: {text}" if labelled else text for text in texts)

    def apply(self, settings: GenerationSettings, index: int) -> GenerationSettings:
        """``settings`` with this axis at value ``index``; ValueError if it cannot apply."""
        value = self.values[index]
        match self.type:
            case "Prompt S/R":
                return _search_replace(settings, str(self.values[0]), str(value), self.type)
            case "Embedding":
                return _replace_embedding(settings, str(self.values[0]), str(value))
            case "Seed":
                return settings.replace(seed=value)
            case "Steps":
                return settings.replace(steps=value)
            case "CFG Scale":
                return settings.replace(cfg_scale=value)
            case "Sampler":
                sampler, schedule = split_sampler_name(str(value))
                return settings.replace(
                    sampler=sampler, schedule_type=schedule or settings.schedule_type
                )
            case "Checkpoint name":
                # The hash belonged to the previous checkpoint; the engine fills in the new one.
                return settings.replace(model=value, model_hash=None)
            case "Size":
                assert isinstance(value, tuple)
                return settings.replace(width=value[0], height=value[1])
            case "LoRA weight":
                assert isinstance(value, float)
                return settings.replace(prompt=_set_first_lora_weight(settings.prompt, value))
            case "Clip skip":
                return settings.replace(clip_skip=value)
            case "Schedule type":
                return settings.replace(schedule_type=value)
            case "VAE":
                return settings.replace(vae=None if value == NO_VAE else value)
            case "Prompt order":
                assert isinstance(value, tuple)
                return settings.replace(prompt=_reorder(settings.prompt, value))
        raise AssertionError(self.type)


def parse_axis(spec: str) -> Axis:
    """Parse the CLI form ``TYPE:VALUES``, e.g. ``"Steps:20-40 (+10)"``."""
    name, colon, values = spec.partition(":")
    if not colon:
        raise ValueError(
            f"axis {spec!r} must be written TYPE:VALUES, e.g. 'Prompt S/R:a cat, a dog'"
        )
    axis_type = _axis_type(name)
    return make_axis(axis_type.name, _csv_values(values))


def make_axis(axis_type: str, values: Iterable[object]) -> Axis:
    """An axis from Python values: numbers, or strings in the CLI syntax (ranges allowed).

    String values are taken one per value (no CSV splitting here).
    """
    return Axis(axis_type, tuple(values))  # type: ignore[arg-type]  # Axis converts them


def _csv_values(text: str) -> list[str]:
    # A1111: csv.reader(skipinitialspace=True) over every line, each value stripped.
    rows = csv.reader(StringIO(text.strip()), skipinitialspace=True)
    return [value.strip() for row in rows for value in row]


def _convert(kind: _AxisType, raw: object) -> list[AxisValue]:
    name = kind.name
    if kind.kind == "int":
        if isinstance(raw, int) and not isinstance(raw, bool):
            values = [raw]
        else:
            values = _expand_range(name, str(raw), integer=True)
        minimum = -1 if name == "Seed" else 1
        for value in values:
            if value < minimum:
                raise ValueError(f"{name} axis: {value} is below the minimum {minimum}")
        return values
    if kind.kind == "float":
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            values = [float(raw)]
        else:
            values = _expand_range(name, str(raw), integer=False)
        for value in values:
            if not math.isfinite(value):
                raise ValueError(f"{name} axis: {value!r} is not a finite number")
        return [round(float(v), _FLOAT_DECIMALS) for v in values]
    if kind.kind == "size":
        if isinstance(raw, tuple):
            return [_size_value(name, raw)]
        return [_parse_size(name, str(raw).strip())]
    text = str(raw).strip()
    if kind.kind == "schedule":
        try:
            return [schedule_label(text)]
        except ValueError as error:
            raise ValueError(f"Schedule type axis: {error}") from None
    if name == "VAE" and text.casefold() in {"none", "automatic", ""}:
        return [NO_VAE]  # the checkpoint's own VAE, as A1111's "None"/"Automatic"
    if kind.kind == "sampler":
        try:
            sampler, schedule = split_sampler_name(text)
        except ValueError as error:
            raise ValueError(f"Sampler axis: {error}") from None
        return [f"{sampler} {schedule}" if schedule else sampler]
    if name == "Embedding":
        lowered = text.lower()
        for extension in _EMBEDDING_EXTENSIONS:
            if lowered.endswith(extension):
                text = text[: -len(extension)]
                break
    if not text and name != "Prompt S/R":
        raise ValueError(f"{name} axis: empty value")
    return [text]


def _size_value(name: str, value: tuple[Any, ...]) -> tuple[int, int]:
    if len(value) != 2:
        raise ValueError(f"{name} axis: {value!r} is not a (width, height) pair")
    try:
        _check_size(value[0], value[1])
    except ValueError as error:
        raise ValueError(f"{name} axis: {error}") from None
    return int(value[0]), int(value[1])


_SIZE = re.compile(r"(\d+)\s*[x×*]\s*(\d+)", re.IGNORECASE)


def _parse_size(name: str, text: str) -> tuple[int, int]:
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"{name} axis: {text!r} is not a size like 512x768")
    return _size_value(name, (int(match[1]), int(match[2])))


# A1111's range syntax: "1-5", "1-5 (+2)", "1-10 [5]"; the first "-" after a number separates.
_INT = r"[+-]?\s*\d+"
_FLOAT = r"[+-]?\s*(?:\d+(?:\.\d*)?|\.\d+)"
_RANGE_TEMPLATE = r"({n})\s*-\s*({n})(?:\s*\(\s*({n})\s*\)|\s*\[\s*(\d+)\s*\])?"
_INT_RANGE = re.compile(_RANGE_TEMPLATE.format(n=_INT))
_FLOAT_RANGE = re.compile(_RANGE_TEMPLATE.format(n=_FLOAT))


def _number(text: str, integer: bool) -> int | float:
    text = text.replace(" ", "")
    return int(text) if integer else float(text)


def _expand_range(name: str, text: str, *, integer: bool) -> list[Any]:
    text = text.strip()
    match = (_INT_RANGE if integer else _FLOAT_RANGE).fullmatch(text)
    if match is None:
        try:
            return [_number(text, integer)]
        except ValueError:
            expected = "an integer" if integer else "a number"
            raise ValueError(
                f"{name} axis: {text!r} is not {expected} or a range like 1-5, 1-5 (+2), 1-10 [5]"
            ) from None
    start, end = _number(match[1], integer), _number(match[2], integer)
    if match[4] is not None:
        return _count_range(name, text, start, end, int(match[4]), integer)
    # Default step follows the direction (A1111 always uses +1, so "5-1" comes out empty there).
    step = _number(match[3], integer) if match[3] is not None else (1 if end >= start else -1)
    if step == 0 or (end - start) * step < 0:
        raise ValueError(f"{name} axis: range {text!r} is empty (step {step} never reaches {end})")
    # Inclusive end as in A1111 (range(start, end + 1) / arange(start, end + step)), but counted
    # so float noise never adds or drops the last value.
    count = math.floor((end - start) / step + 1e-9) + 1
    values = [start + i * step for i in range(count)]
    return values if integer else [round(v, _FLOAT_DECIMALS) for v in values]


def _count_range(
    name: str, text: str, start: float, end: float, count: int, integer: bool
) -> list[Any]:
    if count < 1:
        raise ValueError(f"{name} axis: range {text!r} needs a count of at least 1")
    if count == 1:
        return [start]
    # numpy.linspace, which A1111 uses; ints are truncated as A1111's int() does.
    step = (end - start) / (count - 1)
    values = [start + i * step for i in range(count - 1)] + [end]
    if integer:
        return [int(v) for v in values]
    return [round(float(v), _FLOAT_DECIMALS) for v in values]


def _value_text(value: AxisValue) -> str:
    if isinstance(value, tuple) and all(isinstance(part, str) for part in value):
        return ", ".join(value)  # type: ignore[arg-type]
    if isinstance(value, tuple):
        return f"{value[0]}x{value[1]}"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _orderings(raw: tuple[object, ...]) -> tuple[tuple[str, ...], ...]:
    """A1111's Prompt order values: every ordering of the given prompt parts (3 parts give 6
    cells). Orderings given as tuples (an axis rebuilt from its own values) are kept."""
    if raw and all(isinstance(value, tuple) for value in raw):
        return tuple(tuple(str(part) for part in value) for value in raw)  # type: ignore[union-attr]
    parts = [str(value).strip() for value in raw]
    if any(not part for part in parts):
        raise ValueError("Prompt order axis: empty value")
    if len(set(parts)) != len(parts):
        raise ValueError("Prompt order axis: each part may be listed only once")
    if len(parts) > 6:
        raise ValueError(f"Prompt order axis: {len(parts)} parts make too many orderings (max 6)")
    return tuple(itertools.permutations(parts))


# --- applying text axes -------------------------------------------------------------------------


def _reorder(prompt: str, order: tuple[str, ...]) -> str:
    """The prompt with the axis's parts put in ``order`` at the places where the parts stand
    (A1111's Prompt order: the first place gets the first part of the ordering, and so on)."""
    found = sorted((prompt.find(part), part) for part in order)
    missing = [part for position, part in found if position < 0]
    if missing:
        raise ValueError(f"Prompt order did not find {', '.join(map(repr, missing))} in the prompt")
    pieces: list[str] = []
    rest = prompt
    for _position, part in found:
        at = rest.find(part)
        pieces.append(rest[:at])
        rest = rest[at + len(part) :]
    return "".join(gap + part for gap, part in zip(pieces, order, strict=True)) + rest


def _search_replace(
    settings: GenerationSettings, search: str, replacement: str, axis_name: str
) -> GenerationSettings:
    if not search:
        raise ValueError(f"{axis_name}: the first value (the text to search for) is empty")
    if search not in settings.prompt and search not in settings.negative_prompt:
        raise ValueError(f"{axis_name} did not find '{search}' in prompt or negative prompt")
    return settings.replace(
        prompt=settings.prompt.replace(search, replacement),
        negative_prompt=settings.negative_prompt.replace(search, replacement),
    )


def _replace_embedding(settings: GenerationSettings, search: str, name: str) -> GenerationSettings:
    # Embedding names contain "-" and digits ("fr3nch-40"): only whole names match.
    pattern = re.compile(rf"(?<![\w-]){re.escape(search)}(?![\w-])")
    if not pattern.search(settings.prompt) and not pattern.search(settings.negative_prompt):
        raise ValueError(
            f"Embedding did not find the embedding name '{search}' in prompt or negative prompt"
        )
    return settings.replace(
        prompt=pattern.sub(lambda _: name, settings.prompt),
        negative_prompt=pattern.sub(lambda _: name, settings.negative_prompt),
    )


# Same tag syntax as charstudio.prompts.extra_networks; "lyco" is A1111's old alias for lora.
_LORA_TAG = re.compile(r"<(lora|lyco):([^>:]+)((?::[^>]*)?)>", re.IGNORECASE)


def _set_first_lora_weight(prompt: str, weight: float) -> str:
    match = _LORA_TAG.search(prompt)
    if match is None:
        raise ValueError("LoRA weight axis: the prompt has no <lora:name:weight> tag")
    args = match[3][1:].split(":") if match[3] else []
    args[:1] = [_value_text(weight)]  # keep further arguments (e.g. a text-encoder weight)
    tag = f"<{match[1]}:{match[2]}:{':'.join(args)}>"
    return prompt[: match.start()] + tag + prompt[match.end() :]


# --- the plan -----------------------------------------------------------------------------------

_LETTERS = ("X", "Y", "Z")


@dataclass(frozen=True)
class SweepCell:
    """One cell of the plot: its indices (0 on a missing axis) and its settings.

    ``settings.seed`` is resolved (never -1): the cell's images use ``seed + i``.
    """

    x_index: int
    y_index: int
    z_index: int
    settings: GenerationSettings
    coordinates: Mapping[str, str]

    @property
    def seeds(self) -> tuple[int, ...]:
        """Each image's seed: image ``b * batch_size + i`` (batch b, position i) gets seed + it;
        with a variation strength every image keeps the seed (A1111)."""
        first, step = self.settings.seed, 0 if self.settings.varied else 1
        return tuple(first + k * step for k in range(self.settings.images_per_job))

    @property
    def subseeds(self) -> tuple[int | None, ...]:
        """Each image's variation seed (``subseed + k``), or None without a variation strength."""
        settings = self.settings
        if not settings.varied:
            return (None,) * settings.images_per_job
        return tuple(settings.subseed + k for k in range(settings.images_per_job))

    def batches(self) -> list[tuple[int, ...]]:
        """The seeds of each batch, in batch-count order."""
        size, seeds = self.settings.batch_size, self.seeds
        return [seeds[i : i + size] for i in range(0, len(seeds), size)]

    def subseed_batches(self) -> list[tuple[int | None, ...]]:
        """The variation seeds of each batch, parallel to :meth:`batches`."""
        size, subseeds = self.settings.batch_size, self.subseeds
        return [subseeds[i : i + size] for i in range(0, len(subseeds), size)]


@dataclass(frozen=True)
class ImageJob:
    """One image to generate: its cell, its place in the cell's batches and its seed."""

    cell: SweepCell
    batch_index: int
    batch_position: int
    seed: int
    subseed: int | None = None  # its variation seed, with a variation strength

    @property
    def coordinates(self) -> dict[str, str]:
        return dict(self.cell.coordinates)

    @property
    def settings(self) -> GenerationSettings:
        """Settings that regenerate this image alone."""
        settings = self.cell.settings.replace(seed=self.seed, batch_size=1, batch_count=1)
        return settings if self.subseed is None else settings.replace(subseed=self.subseed)

    def params(
        self, *, model_hash: str | None = None, extras: Mapping[str, object] | None = None
    ) -> GenerationParams:
        """This image's A1111 infotext (the sweep coordinates are not part of it)."""
        return self.cell.settings.to_params(
            self.seed, subseed=self.subseed, model_hash=model_hash, extras=extras
        )


@dataclass(frozen=True)
class SweepPlan:
    """Every cell and image of a sweep, in the order they should be generated."""

    base: GenerationSettings
    x: Axis | None
    y: Axis | None
    z: Axis | None
    keep_random_seeds: bool
    cells: tuple[SweepCell, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(columns, rows, grids): the lengths of X, Y and Z, 1 for a missing axis."""
        nx, ny, nz = (len(a) if a is not None else 1 for a in (self.x, self.y, self.z))
        return nx, ny, nz

    @property
    def image_count(self) -> int:
        return sum(cell.settings.images_per_job for cell in self.cells)

    @property
    def images(self) -> list[ImageJob]:
        return list(self.iter_images())

    def iter_images(self) -> Iterator[ImageJob]:
        for cell in self.cells:
            for b, (batch, subseeds) in enumerate(
                zip(cell.batches(), cell.subseed_batches(), strict=True)
            ):
                for i, (seed, subseed) in enumerate(zip(batch, subseeds, strict=True)):
                    yield ImageJob(cell, b, i, seed, subseed)

    def cell_at(self, x: int = 0, y: int = 0, z: int = 0) -> SweepCell:
        for cell in self.cells:
            if (cell.x_index, cell.y_index, cell.z_index) == (x, y, z):
                return cell
        raise IndexError(f"no cell at x={x}, y={y}, z={z}")

    def labels(self, letter: str) -> tuple[str, ...]:
        """Grid legend texts of axis ``"X"``, ``"Y"`` or ``"Z"`` (empty for a missing axis)."""
        axis = {"X": self.x, "Y": self.y, "Z": self.z}[letter.upper()]
        return axis.labels if axis is not None else ()


def plan_sweep(
    base: GenerationSettings,
    x: Axis | None,
    y: Axis | None,
    z: Axis | None,
    *,
    keep_random_seeds: bool,
    rng: random.Random | None = None,
) -> SweepPlan:
    """Expand a sweep into cells with resolved seeds, following A1111's X/Y/Z plot.

    Seeds (-1 = random): without ``keep_random_seeds`` a random base seed, and a random value for
    each -1 on a Seed axis, are drawn once for the whole plot, so the cells share seeds; with it
    ("Keep -1 for seeds") every cell draws its own. Within a cell, image ``k`` uses seed + k.
    Axes apply in the order X, Y, Z to each cell (so a Y Prompt S/R sees X's replacement).
    Raises ValueError (e.g. Prompt S/R text not found) before anything is generated.
    """
    rng = rng or random.Random()
    axes = {letter: axis for letter, axis in zip(_LETTERS, (x, y, z), strict=True)}
    if not keep_random_seeds:
        if base.seed == -1:
            base = base.replace(seed=random_seed(rng))
        if base.varied and base.subseed == -1:
            base = base.replace(subseed=random_seed(rng))
        for letter, axis in axes.items():
            if axis is not None and axis.type == "Seed":
                values = tuple(random_seed(rng) if v == -1 else v for v in axis.values)
                axes[letter] = Axis(axis.type, values)
    x, y, z = axes["X"], axes["Y"], axes["Z"]

    cells = [_make_cell(base, axes, (ix, iy, iz), rng) for ix, iy, iz in _processing_order(x, y, z)]
    return SweepPlan(base, x, y, z, keep_random_seeds, tuple(cells))


def _processing_order(x: Axis | None, y: Axis | None, z: Axis | None) -> list[tuple[int, int, int]]:
    # A1111 nests the loops with the costliest axis outermost; ties keep Z, Y, X (X innermost).
    lengths = {"X": len(x) if x else 1, "Y": len(y) if y else 1, "Z": len(z) if z else 1}
    costs = {
        letter: _axis_type(axis.type).cost if axis is not None else -1
        for letter, axis in zip(_LETTERS, (x, y, z), strict=True)
    }
    nesting = sorted(("Z", "Y", "X"), key=lambda letter: -costs[letter])  # stable: ties keep order
    order: list[tuple[int, int, int]] = []

    def walk(depth: int, index: dict[str, int]) -> None:
        if depth == len(nesting):
            order.append((index["X"], index["Y"], index["Z"]))
            return
        letter = nesting[depth]
        for i in range(lengths[letter]):
            walk(depth + 1, {**index, letter: i})

    walk(0, {})
    return order


def _make_cell(
    base: GenerationSettings,
    axes: Mapping[str, Axis | None],
    indices: tuple[int, int, int],
    rng: random.Random,
) -> SweepCell:
    settings = base
    coordinates: dict[str, str] = {}
    for (letter, axis), index in zip(axes.items(), indices, strict=True):
        if axis is None:
            continue
        try:
            settings = axis.apply(settings, index)
        except ValueError as error:
            raise ValueError(f"{letter} axis: {error}") from None
        coordinates[f"{letter} axis"] = axis.type
        coordinates[letter] = axis.value_text(index)
    if settings.seed == -1:  # only with keep_random_seeds: this cell's own random seed
        settings = settings.replace(seed=random_seed(rng))
    if settings.varied and settings.subseed == -1:
        settings = settings.replace(subseed=random_seed(rng))
    return SweepCell(*indices, settings=settings, coordinates=coordinates)


# --- the character sheet ------------------------------------------------------------------------

CHARACTER_SHEET_X = "Prompt S/R:an extreme closeup, a medium closeup, a closeup"
CHARACTER_SHEET_Y = "Prompt S/R:front shot, side angle, low angle shot"


def character_sheet_preset(
    prompt: str, negative_prompt: str = ""
) -> tuple[GenerationSettings, Axis, Axis]:
    """Workflow step 1 of DESIGN.md: 3 framings × 3 angles × (8 batches of 4) = 288 images.

    DPM++ 2M Karras, 30 steps, CFG 7, 512×512, seed -1. Plan it with
    ``keep_random_seeds=True`` (A1111's "Keep -1 for seeds" is on), or use
    :func:`plan_character_sheet`. The prompt must contain "an extreme closeup" and "front shot".
    """
    settings = GenerationSettings(
        prompt=prompt,
        negative_prompt=negative_prompt,
        seed=-1,
        steps=30,
        sampler="DPM++ 2M",
        schedule_type="Karras",
        cfg_scale=7.0,
        width=512,
        height=512,
        batch_size=4,
        batch_count=8,
    )
    return settings, parse_axis(CHARACTER_SHEET_X), parse_axis(CHARACTER_SHEET_Y)


def plan_character_sheet(
    prompt: str, negative_prompt: str = "", *, rng: random.Random | None = None
) -> SweepPlan:
    """The character sheet's plan, with "Keep -1 for seeds" on as in the tutorial."""
    settings, x, y = character_sheet_preset(prompt, negative_prompt)
    return plan_sweep(settings, x, y, None, keep_random_seeds=True, rng=rng)
