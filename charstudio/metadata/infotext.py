"""AUTOMATIC1111 "infotext": the generation parameters A1111 stores in its images.

The text looks like::

    <prompt, may span lines>
    Negative prompt: <negative prompt, may span lines>
    Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x512

The last line holds ``key: value`` items separated by ``, ``; values containing ``,``, ``:`` or a
newline are JSON-quoted. It counts as the settings line only if it has at least three
``key: value`` items, as in A1111; otherwise it belongs to the prompt.

Reading keeps every settings key in its original order (extensions add many), and keeps the
prompt text verbatim, whereas A1111 strips every prompt line: the catalog should show exactly
what was written. Writing reproduces A1111's own output byte for byte.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "KNOWN_KEYS",
    "NEGATIVE_PROMPT_PREFIX",
    "GenerationParams",
    "format_infotext",
    "format_settings_line",
    "parse_infotext",
    "parse_settings_line",
]

NEGATIVE_PROMPT_PREFIX = "Negative prompt:"

# Settings keys with typed accessors; every other key is an "extra".
KNOWN_KEYS = frozenset(
    {
        "Steps",
        "Sampler",
        "Schedule type",
        "CFG scale",
        "Seed",
        "Size",
        "Model",
        "Model hash",
        "Clip skip",
    }
)
# Schedules that old A1111 versions (before 1.9) folded into the sampler name.
_OLD_SCHEDULE_SUFFIXES = ("Karras", "Exponential")
_SIZE_RE = re.compile(r"(\d+)x(\d+)")
_JSON = json.JSONDecoder()
_MIN_SETTINGS_PAIRS = 3


@dataclass
class GenerationParams:
    """Prompt, negative prompt and the raw settings line (key -> unquoted value, in order)."""

    prompt: str = ""
    negative_prompt: str = ""
    settings: dict[str, str] = field(default_factory=dict)

    # --- typed accessors: never raise, None when absent or unreadable -------------------------

    @property
    def steps(self) -> int | None:
        return _to_int(self.settings.get("Steps"))

    @property
    def sampler(self) -> str | None:
        """Sampler without an old-style schedule suffix: "DPM++ 2M Karras" -> "DPM++ 2M"."""
        return _split_sampler(self.settings.get("Sampler"))[0]

    @property
    def schedule_type(self) -> str | None:
        """The ``Schedule type`` key, else the suffix of an old-style sampler name, else None."""
        explicit = self.settings.get("Schedule type")
        if explicit is not None:
            return explicit
        return _split_sampler(self.settings.get("Sampler"))[1]

    @property
    def sampler_label(self) -> str | None:
        """A1111's combined old-style name ("DPM++ 2M Karras"), handy for display and grouping."""
        sampler, schedule = self.sampler, self.schedule_type
        if sampler is None:
            return None
        if not schedule or schedule == "Automatic":
            return sampler
        return f"{sampler} {schedule}"

    @property
    def cfg_scale(self) -> float | None:
        return _to_float(self.settings.get("CFG scale"))

    @property
    def seed(self) -> int | None:
        return _to_int(self.settings.get("Seed"))

    @property
    def width(self) -> int | None:
        return self._size()[0]

    @property
    def height(self) -> int | None:
        return self._size()[1]

    @property
    def model(self) -> str | None:
        return self.settings.get("Model")

    @property
    def model_hash(self) -> str | None:
        return self.settings.get("Model hash")

    @property
    def clip_skip(self) -> int | None:
        return _to_int(self.settings.get("Clip skip"))

    @property
    def extras(self) -> dict[str, str]:
        """Settings without a typed accessor (LoRA hashes, hires fix, Version, ...), in order."""
        return {k: v for k, v in self.settings.items() if k not in KNOWN_KEYS}

    def _size(self) -> tuple[int | None, int | None]:
        match = _SIZE_RE.fullmatch(self.settings.get("Size", "").strip())
        if match is None:
            return None, None
        return int(match[1]), int(match[2])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary with typed values."""
        return {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "steps": self.steps,
            "sampler": self.sampler,
            "schedule_type": self.schedule_type,
            "cfg_scale": self.cfg_scale,
            "seed": self.seed,
            "width": self.width,
            "height": self.height,
            "model": self.model,
            "model_hash": self.model_hash,
            "clip_skip": self.clip_skip,
            "extras": self.extras,
        }

    @classmethod
    def from_values(
        cls,
        *,
        prompt: str = "",
        negative_prompt: str = "",
        steps: int | None = None,
        sampler: str | None = None,
        schedule_type: str | None = None,
        cfg_scale: float | None = None,
        seed: int | None = None,
        width: int | None = None,
        height: int | None = None,
        model: str | None = None,
        model_hash: str | None = None,
        clip_skip: int | None = None,
        extras: Mapping[str, object] | None = None,
    ) -> GenerationParams:
        """Build params with settings in A1111's order; None values are left out, as A1111 does.

        The sampler is written new-style (``Sampler`` plus ``Schedule type``) like A1111 1.9+.
        """
        values: dict[str, object | None] = {
            "Steps": steps,
            "Sampler": sampler,
            "Schedule type": schedule_type,
            "CFG scale": _format_number(cfg_scale),
            "Seed": seed,
            "Size": f"{width}x{height}" if width is not None and height is not None else None,
            "Model hash": model_hash,
            "Model": model,
            "Clip skip": clip_skip,
        }
        for key, value in (extras or {}).items():
            if key in KNOWN_KEYS:
                raise ValueError(f"extras must not contain the known key {key!r}")
            values[key] = value
        settings = {k: str(v) for k, v in values.items() if v is not None}
        return cls(prompt=prompt, negative_prompt=negative_prompt, settings=settings)


# --- parsing ------------------------------------------------------------------------------------


def parse_infotext(text: str) -> GenerationParams:
    """Parse A1111 infotext. Never raises: anything unrecognised ends up in the prompt."""
    text = text.replace("\r\n", "\n").strip()
    if not text:
        return GenerationParams()
    lines = text.split("\n")
    settings = parse_settings_line(lines[-1])
    if settings is None:
        settings = {}
    else:
        lines.pop()

    prompt_lines, negative_lines = lines, []
    for i, line in enumerate(lines):
        # Only the first marker starts the negative prompt; later ones stay part of it verbatim.
        if line.startswith(NEGATIVE_PROMPT_PREFIX):
            first = line[len(NEGATIVE_PROMPT_PREFIX) :]
            # A1111 writes "Negative prompt: " with one space; drop just that one.
            first = first.removeprefix(" ")
            prompt_lines, negative_lines = lines[:i], [first, *lines[i + 1 :]]
            break
    return GenerationParams(
        prompt="\n".join(prompt_lines),
        negative_prompt="\n".join(negative_lines),
        settings=settings,
    )


def parse_settings_line(line: str) -> dict[str, str] | None:
    """Parse a settings line into an ordered key -> value mapping.

    Returns None when the line is not a settings line, i.e. has fewer than three ``key: value``
    items (the rule A1111 applies), so prompts that merely contain colons are not mistaken for one.
    Items without a colon are A1111's bare flags (it writes ``key`` alone when value == key).
    """
    settings: dict[str, str] = {}
    pairs = 0
    pos, end = 0, len(line)
    last_key: str | None = None
    while pos < end:
        item_start = pos
        # Skip the separator's whitespace (A1111 reads ``\s*`` there).
        while pos < end and line[pos].isspace():
            pos += 1
        if pos >= end:
            break
        comma = line.find(",", pos)
        if comma < 0:
            comma = end
        colon = line.find(": ", pos, comma)
        key = line[pos:colon].strip() if colon >= 0 else ""
        if not key:
            item = line[pos:comma].strip()
            pos = comma + 1
            if not item:
                continue  # ", ," or a trailing comma
            if ":" not in item:
                settings[item] = item
                last_key = item
            elif last_key is not None:
                # Malformed item such as "b:c": take it for an unquoted comma in the last value.
                settings[last_key] += "," + line[item_start:comma]
            else:
                return None
            continue

        value, pos = _read_value(line, colon + 2)
        settings[key] = value
        last_key = key
        pairs += 1
    return settings if pairs >= _MIN_SETTINGS_PAIRS else None


def _read_value(line: str, start: int) -> tuple[str, int]:
    """Read one value starting at ``start``; return it and the position after its comma."""
    if line.startswith('"', start):
        try:
            value, stop = _JSON.raw_decode(line, start)
        except ValueError:
            pass
        else:
            if isinstance(value, str):
                rest = stop
                while rest < len(line) and line[rest] in " \t":
                    rest += 1
                if rest >= len(line):
                    return value, rest
                if line[rest] == ",":
                    return value, rest + 1
    comma = line.find(",", start)
    if comma < 0:
        return line[start:], len(line)
    return line[start:comma], comma + 1


# --- formatting ---------------------------------------------------------------------------------


def format_infotext(params: GenerationParams) -> str:
    """Write infotext exactly as A1111 does (empty negative prompt and settings left out)."""
    parts: list[str] = []
    if params.prompt:
        parts.append(params.prompt)
    if params.negative_prompt:
        parts.append(f"{NEGATIVE_PROMPT_PREFIX} {params.negative_prompt}")
    if params.settings:
        parts.append(format_settings_line(params.settings))
    return "\n".join(parts)


def format_settings_line(settings: Mapping[str, str]) -> str:
    return ", ".join(
        key if key == value else f"{key}: {_quote(value)}" for key, value in settings.items()
    )


def _quote(value: str) -> str:
    # A1111 quotes values containing "," ":" or a newline. Beyond that, quote what would not read
    # back unchanged: \r (line-ending normalisation), surrounding whitespace (stripped by
    # readers), a leading quote (would be taken for a quoted value) and the empty string.
    if (
        not value
        or value != value.strip()
        or value.startswith('"')
        or any(c in value for c in ",:\n\r")
    ):
        return json.dumps(value, ensure_ascii=False)
    return value


# --- conversions --------------------------------------------------------------------------------


def _to_int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        number = _to_float(value)
        # "30.0" is a whole number written by some tools; accept it, reject 30.5.
        if number is not None and number.is_integer():
            return int(number)
        return None


def _to_float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    # NaN/inf are not useful settings and cannot go into JSON.
    return number if math.isfinite(number) else None


def _format_number(value: float | None) -> str | None:
    """A1111 writes whole CFG scales without ".0" (7, not 7.0)."""
    if value is None:
        return None
    number = float(value)
    if number.is_integer():
        return str(int(number))
    return repr(number)


def _split_sampler(name: str | None) -> tuple[str | None, str | None]:
    if name is None:
        return None, None
    for schedule in _OLD_SCHEDULE_SUFFIXES:
        suffix = " " + schedule
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], schedule
    return name, None
