"""Runs core jobs on a worker thread and turns their progress events into Qt signals.

The job generator runs entirely on the worker; the signals are delivered to the GUI thread
by Qt's queued connections, so widgets are only ever touched there.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal

from charstudio.jobs import CancelToken, Job, JobCanceled, Progress

# A job factory gets the cancel token and returns the generator to run.
JobFactory = Callable[[CancelToken], Job[Any]]

PROGRESS_INTERVAL_S = 0.05  # at most 20 progress signals a second


class _Worker(QThread):
    progress = Signal(object)  # Progress
    succeeded = Signal(object)  # the job's result
    failed = Signal(str)
    canceled = Signal()

    def __init__(self, factory: JobFactory, token: CancelToken, parent: QObject) -> None:
        # Parented: a QThread must not be deleted by the garbage collector mid-signal.
        super().__init__(parent)
        self._factory = factory
        self._token = token

    def run(self) -> None:
        last = 0.0
        try:
            job = self._factory(self._token)
            while True:
                try:
                    event: Progress = next(job)
                except StopIteration as stop:
                    result = stop.value
                    break
                now = time.monotonic()
                if now - last >= PROGRESS_INTERVAL_S or event.done == event.total:
                    last = now
                    self.progress.emit(event)
        except JobCanceled:
            self.canceled.emit()
            return
        except Exception as exc:  # a job's failure must never take the app down
            traceback.print_exc()
            self.failed.emit(f"{type(exc).__name__}: {exc}")
            return
        self.succeeded.emit(result)


class JobHandle(QObject):
    """One running job: connect to its signals, call ``cancel()`` to stop it."""

    progress = Signal(object)
    succeeded = Signal(object)
    failed = Signal(str)
    canceled = Signal()
    finished = Signal()

    def __init__(self, factory: JobFactory, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.token = CancelToken()
        self._worker = _Worker(factory, self.token, self)
        self._worker.progress.connect(self.progress)
        self._worker.succeeded.connect(self.succeeded)
        self._worker.failed.connect(self.failed)
        self._worker.canceled.connect(self.canceled)
        self._worker.finished.connect(self.finished)

    def start(self) -> None:
        self._worker.start()

    def cancel(self) -> None:
        self.token.cancel()

    def is_running(self) -> bool:
        return self._worker.isRunning()

    def wait(self, msecs: int = -1) -> bool:
        return self._worker.wait(msecs) if msecs >= 0 else self._worker.wait()
