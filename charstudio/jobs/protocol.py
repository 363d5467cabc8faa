"""The job protocol shared by the command line, the GUI adapter and the tests.

A job is a generator: it yields ``Progress`` events, checks a ``CancelToken`` between units of
work and returns its result (``StopIteration.value``). It never touches the GUI; the Qt
adapter runs it on a worker thread and turns the events into signals.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


class JobCanceled(Exception):
    """Raised inside a job when its cancel token is set."""


class JobError(Exception):
    """A job could not do its work, for a reason the artist can act on; the message says it."""


def job_error_message(error: BaseException) -> str:
    """What the queue records for a failed job: the message alone for errors written for the
    artist (``JobError``, ``ValueError``, ``OSError``, ``KeyError``), else the class name too,
    which helps a bug report."""
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    if isinstance(error, JobError | ValueError | OSError):
        return str(error)
    return f"{type(error).__name__}: {error}"


# Records written before job_error_message named the class of every error.
_CLASS_PREFIX = re.compile(r"^[A-Z]\w*(?:Error|Exception): ")


def readable_job_error(stored: str | None) -> str:
    """A stored job error for display, without the class name older records carry."""
    return _CLASS_PREFIX.sub("", stored or "")


class CancelToken:
    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def canceled(self) -> bool:
        return self._event.is_set()

    def raise_if_canceled(self) -> None:
        if self._event.is_set():
            raise JobCanceled()


@dataclass(frozen=True)
class Progress:
    done: int
    total: int | None
    message: str = ""
    elapsed_s: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float | None:
        return None if not self.total else min(1.0, self.done / self.total)

    @property
    def rate(self) -> float | None:
        """Units per second so far."""
        return self.done / self.elapsed_s if self.elapsed_s > 0 and self.done else None

    @property
    def eta_s(self) -> float | None:
        rate = self.rate
        if rate is None or self.total is None:
            return None
        return max(0.0, (self.total - self.done) / rate)


class ProgressClock:
    """Makes ``Progress`` events stamped with the time since the job started."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self._start = time.perf_counter()

    def __call__(self, done: int, message: str = "", **detail: Any) -> Progress:
        return Progress(done, self.total, message, time.perf_counter() - self._start, detail)


Job = Generator[Progress, None, T]


def run_job(job: Job[T], on_progress: Callable[[Progress], None] | None = None) -> T:
    """Drive a job to the end on the current thread; returns its result."""
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(event)


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
