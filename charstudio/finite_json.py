"""JSON that is JSON: NaN and infinity never reach ``--json`` output or stored job results.

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which strict parsers (JavaScript,
``jq``, most languages' libraries) refuse. Values that can go non-finite (a loss, a score) are
written as ``null`` here, and the top-level object says which ones were, under
:data:`NONFINITE_KEY`, so a script can tell "no value" from "a value that was NaN".
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["NONFINITE_KEY", "dumps", "finite_copy", "json_ready"]

NONFINITE_KEY = "nonfinite_error"


def finite_copy(value: Any, where: str = "", found: list[str] | None = None) -> Any:
    """``value`` with every non-finite float replaced by None; the JSON paths of the replaced
    ones are appended to ``found``."""
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        if found is not None:
            found.append(f"{where or '$'} was {value}")
        return None
    if isinstance(value, Mapping):
        return {
            key: finite_copy(item, f"{where}.{key}" if where else str(key), found)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [finite_copy(item, f"{where}[{i}]", found) for i, item in enumerate(value)]
    return value


def json_ready(value: Any) -> Any:
    """``value`` ready for a strict JSON writer: non-finite numbers become null and a
    top-level object gets :data:`NONFINITE_KEY` ("loss was nan, shown as null") naming them."""
    found: list[str] = []
    clean = finite_copy(value, "", found)
    if found and isinstance(clean, dict):
        clean.setdefault(NONFINITE_KEY, "not a finite number, shown as null: " + "; ".join(found))
    return clean


def dumps(value: Any, **options: Any) -> str:
    """``json.dumps`` of :func:`json_ready` ``(value)``, refusing anything non-finite left."""
    return json.dumps(json_ready(value), allow_nan=False, **options)
