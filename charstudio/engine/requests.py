"""What the artist asks the engine for: a generation request, stored as a queued job's params.

A :class:`GenerateRequest` is the Generate panel's and ``charstudio generate``'s settings: the
base :class:`GenerationSettings`, up to three sweep axes in their ``TYPE:VALUES`` form, "keep -1
for seeds", and ``plan_seed``, the seed of the random draws that resolve -1 seeds. Keeping
``plan_seed`` in the job makes its plan reproducible: a job re-run after a crash plans exactly
the same images and skips the ones it already made.

Qt-free and torch-free.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from charstudio.engine.sweeps import Axis, GenerationSettings, SweepPlan, parse_axis, plan_sweep

__all__ = ["GenerateRequest", "new_plan_seed"]

# The GenerationSettings fields a request stores (everything but the derived infotext extras).
_SETTING_FIELDS = tuple(f.name for f in dataclasses.fields(GenerationSettings))


def new_plan_seed() -> int:
    return random.SystemRandom().randrange(2**63)


@dataclass(frozen=True)
class GenerateRequest:
    """One generation job: base settings, optional X/Y/Z axes, seed rules."""

    settings: GenerationSettings
    x: str | None = None  # "Prompt S/R:a, b, c" (A1111 axis name, CSV values)
    y: str | None = None
    z: str | None = None
    keep_random_seeds: bool = False
    plan_seed: int = field(default_factory=new_plan_seed)
    save_grid: bool = True  # an A1111-style grid image when there is at least one axis

    def axes(self) -> tuple[Axis | None, Axis | None, Axis | None]:
        """The parsed axes; ValueError naming the axis letter if one cannot be parsed."""
        parsed: list[Axis | None] = []
        for letter, spec in zip("XYZ", (self.x, self.y, self.z), strict=True):
            if spec is None or not spec.strip():
                parsed.append(None)
                continue
            try:
                parsed.append(parse_axis(spec))
            except ValueError as error:
                raise ValueError(f"{letter} axis: {error}") from None
        return parsed[0], parsed[1], parsed[2]

    def plan(self) -> SweepPlan:
        """Every image of the job with resolved seeds; the same plan every time it is called."""
        x, y, z = self.axes()
        return plan_sweep(
            self.settings,
            x,
            y,
            z,
            keep_random_seeds=self.keep_random_seeds,
            rng=random.Random(self.plan_seed),
        )

    @property
    def has_axes(self) -> bool:
        return any(spec and spec.strip() for spec in (self.x, self.y, self.z))

    def replace(self, **changes: Any) -> GenerateRequest:
        return dataclasses.replace(self, **changes)

    def to_params(self) -> dict[str, Any]:
        """JSON-ready job parameters."""
        settings = {name: getattr(self.settings, name) for name in _SETTING_FIELDS}
        settings["extra_params"] = [list(pair) for pair in self.settings.extra_params]
        return {
            "settings": settings,
            "x": self.x,
            "y": self.y,
            "z": self.z,
            "keep_random_seeds": self.keep_random_seeds,
            "plan_seed": self.plan_seed,
            "save_grid": self.save_grid,
        }

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> GenerateRequest:
        """The request stored by :meth:`to_params`; ValueError on bad or unknown values."""
        raw = dict(params.get("settings") or {})
        unknown = set(raw) - set(_SETTING_FIELDS)
        if unknown:
            raise ValueError(f"unknown generation settings: {', '.join(sorted(unknown))}")
        raw["extra_params"] = tuple(tuple(pair) for pair in raw.get("extra_params") or ())
        # Requests stored before the RNG setting existed were drawn with torch's CPU generator.
        raw.setdefault("rng", "CPU")
        try:
            settings = GenerationSettings(**raw)
        except TypeError as error:  # a required field (the prompt) is missing
            raise ValueError(f"incomplete generation settings: {error}") from None
        return cls(
            settings=settings,
            x=params.get("x"),
            y=params.get("y"),
            z=params.get("z"),
            keep_random_seeds=bool(params.get("keep_random_seeds", False)),
            plan_seed=int(params.get("plan_seed", new_plan_seed())),
            save_grid=bool(params.get("save_grid", True)),
        )
