"""Checks every training kind's settings share: reading them from JSON (unknown keys are an
error), whole numbers with a minimum, choices from a list, the sampler, and the error that lists
every problem in words for the artist."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "TrainSettingsError",
    "choice_problems",
    "is_int",
    "is_number",
    "json_fields",
    "minimum_problems",
    "raise_problems",
    "sampler_problems",
]


class TrainSettingsError(ValueError):
    """Settings that cannot train; ``problems`` lists every reason, each meant for the artist."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def json_fields(
    cls: type,
    data: Mapping[str, Any] | None,
    *,
    what: str,
    floats: Iterable[str],
    tuples: Iterable[str] = (),
) -> dict[str, Any]:
    """The keyword arguments of the settings dataclass ``cls`` from JSON: missing keys take the
    defaults, unknown keys are an error naming them as ``what`` settings (a typo must not
    silently train with a default); whole numbers of ``floats`` become floats, lists of
    ``tuples`` tuples. Values are checked later, by the settings' ``validate``."""
    data = dict(data or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise TrainSettingsError([f"unknown {what} setting(s): {', '.join(unknown)}"])
    for key in floats:
        if is_int(data.get(key)):
            data[key] = float(data[key])
    for key in tuples:
        if isinstance(data.get(key), list):
            data[key] = tuple(data[key])
    return data


def minimum_problems(minimums: Mapping[str, tuple[Any, int]]) -> list[str]:
    """For ``{label: (value, minimum)}``: each value that is no whole number, or is too small."""
    out = []
    for label, (value, minimum) in minimums.items():
        if not is_int(value):
            out.append(f"{label} must be a whole number, not {value!r}")
        elif value < minimum:
            out.append(f"{label} must be at least {minimum}, not {value}")
    return out


def choice_problems(choices: Iterable[tuple[str, Any, tuple[str, ...]]]) -> list[str]:
    """For ``(label, value, allowed)`` triples: each value not among its allowed ones."""
    return [
        f"{label} must be one of {', '.join(allowed)}, not {value!r}"
        for label, value, allowed in choices
        if value not in allowed
    ]


def sampler_problems(label: str, sampler: Any, schedule_type: Any) -> list[str]:
    """Why the sampler and schedule type cannot sample (empty when they can)."""
    from charstudio.engine.samplers import resolve_sampler

    try:
        resolve_sampler(sampler, schedule_type)
    except (ValueError, TypeError, AttributeError) as error:
        return [f"{label}: {error}"]
    return []


def raise_problems(problems: list[str]) -> None:
    """Raise :class:`TrainSettingsError` listing ``problems``, when there are any."""
    if problems:
        raise TrainSettingsError(problems)
