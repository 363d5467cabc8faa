"""The one place that words a job's progress for the artist.

Every panel shows the same pieces the same way: a counter, the speed as A1111 writes it
(it/s, or s/it when slower than one step a second), the loss and learning rate while
training, and the ETA. Each kind of job has one function here; they share the pieces.
"""

from __future__ import annotations

import math

from charstudio.jobs.protocol import Progress, format_eta

__all__ = [
    "generate_progress_text",
    "grid_progress_text",
    "job_dialog_text",
    "speed_text",
    "train_progress_text",
]


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def speed_text(it_per_s: object) -> str | None:
    """``1.8 it/s``, or ``4.0 s/it`` below one iteration a second (A1111's switch)."""
    speed = _number(it_per_s)
    if speed is None or speed <= 0:
        return None
    return f"{speed:.1f} it/s" if speed >= 1 else f"{1 / speed:.1f} s/it"


def generate_progress_text(progress: Progress) -> str:
    """``Image 12/288 · 5.3 it/s · ETA 07:40``, the job's message on a second line."""
    detail = progress.detail
    parts: list[str] = []
    if "images_done" in detail and "images_total" in detail:
        parts.append(f"Image {detail['images_done']}/{detail['images_total']}")
    elif progress.total:
        parts.append(f"{progress.done}/{progress.total}")
    speed = speed_text(detail.get("it_per_s"))
    if speed:
        parts.append(speed)
    if progress.total:
        parts.append(f"ETA {format_eta(progress.eta_s)}")
    line = " · ".join(parts)
    if progress.message:
        return f"{line}\n{progress.message}" if line else progress.message
    return line


def train_progress_text(progress: Progress) -> str:
    """``Step 40/150 · loss 0.1234 · lr 0.002 · 1.8 it/s · ETA 01:05``; before the first step,
    the job's message (loading the model, encoding the images)."""
    detail = progress.detail
    loss = _number(detail.get("loss"))
    if loss is None:
        return progress.message or (f"{progress.done}/{progress.total}" if progress.total else "")
    total = progress.total
    parts = [f"Step {progress.done}/{total}" if total else f"Step {progress.done}"]
    parts.append(f"loss {loss:.4f}" if math.isfinite(loss) else f"loss {loss}")
    rate = _number(detail.get("learning_rate"))
    if rate is not None:
        parts.append(f"lr {rate:.3g}")
    eta = progress.eta_s
    speed = _number(detail.get("it_per_s"))
    if speed is not None and speed > 0:
        parts.append(speed_text(speed) or "")
        if total:
            # The job's own speed: elapsed time includes loading the model, and a resumed
            # run starts at its saved step.
            eta = max(0, total - progress.done) / speed
    if total:
        parts.append(f"ETA {format_eta(eta)}")
    return " · ".join(parts)


def grid_progress_text(progress: Progress) -> str:
    """A comparison grid: the job's message (which cell) and the ETA."""
    parts = [progress.message] if progress.message else []
    if progress.total:
        parts.append(f"ETA {format_eta(progress.eta_s)}")
    return " · ".join(parts)


def job_dialog_text(title: str, progress: Progress) -> str:
    """Import and export dialogs: ``Import images: 120 of 600`` and ``310/s · ETA 00:02``."""
    rate = f"{progress.rate:.0f}/s · " if progress.rate else ""
    return (
        f"{title}: {progress.done} of {progress.total or '?'}\n"
        f"{rate}ETA {format_eta(progress.eta_s)}"
    )
