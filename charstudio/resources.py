"""Locate files shipped under the repository's ``resources/`` folder.

The folder sits next to the package in a source checkout (and in the Windows install's
``app`` folder, which is laid out the same way) and is copied into the wheel as
``charstudio/_resources``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path


@cache
def resources_dir() -> Path:
    here = Path(__file__).resolve().parent
    candidates = [here.parent / "resources", here / "_resources"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        "charstudio's resources folder is missing; looked in: "
        + ", ".join(str(c) for c in candidates)
    )


def resource_path(*parts: str) -> Path:
    """Path of a shipped resource, e.g. ``resource_path("clip", "merges.txt.gz")``."""
    return resources_dir().joinpath(*parts)
