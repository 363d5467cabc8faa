"""Serves the project's persistent job queue on one worker thread.

The worker opens its own catalog connection, claims queued jobs one after another and
reports their progress as signals; the GUI only submits jobs and listens.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QObject, QThread, Signal

from charstudio.catalog import Project
from charstudio.jobs import CancelToken, Progress
from charstudio.jobs.queue import JobQueue, QueuedJob

PROGRESS_INTERVAL_S = 0.05
KEEP_EVENTS_WITH = ("new_image_ids", "preview", "checkpoint_path", "cell")


class _QueueThread(QThread):
    started_job = Signal(object)  # QueuedJob
    progress = Signal(object, object)  # QueuedJob, Progress
    finished_job = Signal(object)  # QueuedJob with its final status

    def __init__(self, root: Path, parent: QObject) -> None:
        # Parented, so Qt (not Python's garbage collector) decides when the thread object
        # goes: deleting a QThread from inside its own finished signal aborts the process.
        super().__init__(parent)
        self.root = root
        self.token = CancelToken()
        self._stop = False

    def reset(self) -> None:
        self._stop = False
        self.token = CancelToken()

    def cancel_current(self) -> None:
        self.token.cancel()

    def stop(self) -> None:
        self._stop = True
        self.token.cancel()

    def run(self) -> None:
        with Project.open(self.root) as project:
            queue = JobQueue(project)
            queue.recover()
            while not self._stop and queue.pending():
                self.token = CancelToken()
                current = queue.pending()[0]
                self.started_job.emit(current)
                job = queue.run_next(self.token)
                last = 0.0
                while True:
                    try:
                        event: Progress = next(job)
                    except StopIteration as stop:
                        ended: QueuedJob | None = stop.value
                        if ended is not None and self._stop and ended.status == "canceled":
                            queue.requeue(ended.id)  # the app is closing: resume next time
                        elif ended is not None:
                            self.finished_job.emit(ended)
                        break
                    now = time.monotonic()
                    # Events that carry results (new images, a preview, a checkpoint, a grid
                    # cell) are never dropped: the panels show them.
                    carries = any(event.detail.get(key) for key in KEEP_EVENTS_WITH)
                    due = now - last >= PROGRESS_INTERVAL_S or event.done == event.total
                    if due or carries:
                        last = now
                        self.progress.emit(current, event)


class QueueWorker(QObject):
    """Submit jobs with ``submit``; the worker thread starts when there is work."""

    jobStarted = Signal(object)
    jobProgress = Signal(object, object)
    jobFinished = Signal(object)
    idle = Signal()

    def __init__(self, root: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.root = root
        # One thread object, restarted whenever work arrives and deleted with this worker.
        self._thread = _QueueThread(root, self)
        self._thread.started_job.connect(self.jobStarted)
        self._thread.progress.connect(self.jobProgress)
        self._thread.finished_job.connect(self.jobFinished)
        self._thread.finished.connect(self._thread_finished)
        self._closing = False

    def submit(self, project: Project, kind: str, params: dict) -> int:
        job_id = JobQueue(project).submit(kind, params)
        self.wake()
        return job_id

    def wake(self) -> None:
        """Start serving the queue unless already serving it."""
        if self._closing or self._thread.isRunning():
            return
        self._thread.reset()
        self._thread.start()

    def _thread_finished(self) -> None:
        if self._closing:
            return
        # A job submitted just as the thread was leaving is picked up by starting again.
        with Project.open(self.root) as project:
            more = bool(JobQueue(project).pending())
        if more:
            self.wake()
        else:
            self.idle.emit()

    def busy(self) -> bool:
        return self._thread.isRunning()

    def cancel_current(self) -> None:
        self._thread.cancel_current()

    def shutdown(self) -> None:
        self._closing = True
        self._thread.stop()
        self._thread.wait()
