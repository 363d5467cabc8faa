"""A1111's schedule syntax for learning rates (and gradient-clipping values).

``0.005:100, 1e-3:1000, 1e-5`` means: 0.005 until the optimizer has made 100 steps, then 1e-3
until 1000 steps, then 1e-5 to the end of training. A plain number (``0.002``) is a fixed rate.
What A1111 does, and this module with it:

* entries are separated by commas; empty entries (a trailing comma) are skipped;
* ``rate:step`` applies ``rate`` to the updates that bring the step count up to ``step``; an
  entry without a step, or with step ``-1``, runs to the end of training;
* steps beyond max steps are cut to max steps, and what comes after such an entry is unused;
* when the last entry has a step below max steps, training stops there.

Steps count optimizer steps (one step = batch size × gradient accumulation images). A1111
silently accepts some schedules that cannot mean what was written (steps that do not increase,
entries after an open-ended one); those are refused here with a message saying why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["RateSchedule", "ScheduleError", "parse_rate_schedule"]

_EXAMPLE = '"0.002" or a schedule such as "0.005:100, 1e-3:1000, 1e-5"'


class ScheduleError(ValueError):
    """A schedule that cannot be parsed; the message says what to write instead."""


@dataclass(frozen=True)
class RateSchedule:
    """Parsed schedule: ``(rate, end_step)`` pairs, ``end_step`` None for "to the end"."""

    text: str
    entries: tuple[tuple[float, int | None], ...]

    def rate_at(self, step: int) -> float:
        """The rate of the update made when ``step`` optimizer steps are done (0-based)."""
        for rate, end in self.entries:
            if end is None or step < end:
                return rate
        return self.entries[-1][0]  # past the schedule's end: training has stopped

    def end_step(self, max_steps: int) -> int:
        """Where training stops: ``max_steps``, or earlier when the schedule ends earlier."""
        last_end = self.entries[-1][1]
        return max_steps if last_end is None else min(max_steps, last_end)

    @property
    def is_constant(self) -> bool:
        return len(self.entries) == 1


def _parse_rate(text: str, entry: str, what: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise ScheduleError(
            f"{what}: {entry.strip()!r} is not a number; write {_EXAMPLE}"
        ) from None
    if not math.isfinite(rate) or rate <= 0:
        raise ScheduleError(f"{what}: {entry.strip()!r}: rates must be positive numbers")
    return rate


def _parse_step(text: str, entry: str, what: str) -> int | None:
    try:
        step = int(text.strip())
    except ValueError:
        raise ScheduleError(
            f"{what}: {entry.strip()!r}: the step after ':' must be a whole number of steps"
        ) from None
    if step == -1:
        return None
    if step < 1:
        raise ScheduleError(
            f"{what}: {entry.strip()!r}: the step must be at least 1 (or -1 for 'to the end')"
        )
    return step


def parse_rate_schedule(text: str, *, what: str = "learning rate") -> RateSchedule:
    """Parse an A1111 rate schedule; raises :class:`ScheduleError` naming the bad entry."""
    if not isinstance(text, str):
        text = str(text)
    entries: list[tuple[float, int | None]] = []
    for entry in text.split(","):
        if not entry.strip():
            continue
        if entries and entries[-1][1] is None:
            raise ScheduleError(
                f"{what}: {entry.strip()!r} follows a rate without a step, which already runs "
                "to the end of training; give that rate a step (rate:step) or remove the rest"
            )
        parts = entry.split(":")
        if len(parts) > 2:
            raise ScheduleError(f"{what}: {entry.strip()!r} has more than one ':'")
        rate = _parse_rate(parts[0], entry, what)
        step = _parse_step(parts[1], entry, what) if len(parts) == 2 else None
        previous = entries[-1][1] if entries else None
        if step is not None and previous is not None and step <= previous:
            raise ScheduleError(
                f"{what}: steps must increase, but {entry.strip()!r} comes after step {previous}"
            )
        entries.append((rate, step))
    if not entries:
        raise ScheduleError(f"{what} is empty; write {_EXAMPLE}")
    return RateSchedule(text.strip(), tuple(entries))
