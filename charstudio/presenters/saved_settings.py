"""One lenient reader for the settings a panel saves in the project.

Saved settings come from older versions and hand edits. A value that does not have its
field's type, or that the settings class refuses, falls back to its default *one value at a
time*, so one bad value never loses the prompt or the rest of the form; the names of the
dropped values are returned for a one-line note.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

__all__ = ["apply_saved", "has_type"]

T = TypeVar("T")


def has_type(value: object, annotation: Any) -> bool:
    """Whether a JSON value fits a field annotation (bool is not an int, an int is a float)."""
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(has_type(value, arg) for arg in typing.get_args(annotation))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    return False  # tuples, nested objects: not read from saved settings


def apply_saved(
    base: T,
    raw: object,
    *,
    skip: frozenset[str] = frozenset(),
    accept: Callable[[str, object], bool] | None = None,
) -> tuple[T, list[str]]:
    """``base`` (a dataclass with a ``replace``-able form) with ``raw``'s readable values.

    ``skip``: names ignored without a note (values the program derives). ``accept``: an
    extra per-field check (e.g. a sampler name that must exist). Returns the settings and
    the names dropped, in ``raw``'s order; ``raw`` that is not a mapping drops everything.
    """
    if raw is None:
        return base, []
    if not isinstance(raw, Mapping):
        return base, ["all settings"]
    hints = typing.get_type_hints(type(base))
    known = {f.name for f in dataclasses.fields(base)}  # type: ignore[arg-type]
    result, dropped = base, []
    for key, value in raw.items():
        name = str(key)
        if name in skip:
            continue
        if (
            name not in known
            or not has_type(value, hints.get(name))
            or (accept is not None and not accept(name, value))
        ):
            dropped.append(name)
            continue
        try:
            result = dataclasses.replace(result, **{name: value})  # type: ignore[type-var]
        except (ValueError, TypeError):  # the class's own checks refuse it
            dropped.append(name)
    return result, dropped
