"""Serves the project's persistent job queue on one worker thread.

The worker opens its own catalog connection, claims queued jobs one after another and
reports their progress as signals; the GUI only submits jobs and listens. Jobs a crash or a
quit left unfinished start only once the artist has answered for them: the window keeps them
out (``keep_out``) until then (see :mod:`charstudio.presenters.job_recovery`).
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
        self.requeue = True  # a job stopped by ``stop`` goes back in the queue
        self.kept_out: frozenset[int] = frozenset()  # queued jobs not to start yet

    def reset(self) -> None:
        self._stop = False
        self.token = CancelToken()

    def cancel_current(self) -> None:
        self.token.cancel()

    def stop(self, requeue: bool = True) -> None:
        self.requeue = requeue
        self._stop = True
        self.token.cancel()

    def next_job(self, queue: JobQueue) -> QueuedJob | None:
        return next((j for j in queue.pending() if j.id not in self.kept_out), None)

    def run(self) -> None:
        with Project.open(self.root) as project:
            queue = JobQueue(project)
            while not self._stop and (current := self.next_job(queue)) is not None:
                self.token = CancelToken()
                self.started_job.emit(current)
                job = queue.run_next(self.token, job_id=current.id)
                last = 0.0
                while True:
                    try:
                        event: Progress = next(job)
                    except StopIteration as stop:
                        ended: QueuedJob | None = stop.value
                        if ended is not None and self._stop and ended.status == "canceled":
                            if self.requeue:  # the app is closing: asked about next time
                                queue.requeue(ended.id)
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
            more = self._thread.next_job(JobQueue(project)) is not None
        if more:
            self.wake()
        else:
            self.idle.emit()

    def keep_out(self, job_ids: set[int] | frozenset[int]) -> None:
        """Do not start these queued jobs (waiting for the artist's answer) until released."""
        self._thread.kept_out = frozenset(job_ids)

    def busy(self) -> bool:
        return self._thread.isRunning()

    def cancel_current(self) -> None:
        self._thread.cancel_current()

    def shutdown(self, requeue: bool = True) -> None:
        """Stop serving: a running job is stopped and (``requeue``) put back in the queue, to be
        offered the next time the project opens, or left canceled."""
        self._closing = True
        self._thread.stop(requeue)
        self._thread.wait()
