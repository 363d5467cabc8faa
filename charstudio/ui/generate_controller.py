"""Connects the Generate panel to the project's job queue and the image grid.

The panel only collects settings; this controller checks a request (cheap checks only: the
GUI thread never loads a model or an embedding file), queues it on the project's GPU worker,
feeds the worker's progress into the panel and tells the window when new images were recorded
so the grid shows them while the job runs. Generate jobs never open a modal dialog: the artist
keeps culling while they run.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from charstudio.catalog import Project
from charstudio.engine.requests import GenerateRequest
from charstudio.jobs import Progress, readable_job_error
from charstudio.jobs.queue import JobQueue, QueuedJob, job_result
from charstudio.ui.generate_panel import GeneratePanel
from charstudio.ui.queue_worker import QueueWorker

KIND = "generate"


class GenerateController(QObject):
    imagesAdded = Signal(list)  # ids of images a running job just recorded
    message = Signal(str)  # one-line news for the status bar

    def __init__(self, panel: GeneratePanel, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.panel = panel
        self.project: Project | None = None
        self.worker: QueueWorker | None = None
        self.current_job: int | None = None
        panel.generateRequested.connect(self.submit)
        panel.cancelRequested.connect(self.cancel)

    def set_project(self, project: Project | None, worker: QueueWorker | None) -> None:
        self.panel.set_project(project)
        self.project, self.worker, self.current_job = project, worker, None
        if project is not None:
            self.refresh_choices()
            self._update_queue_length()

    def refresh_choices(self) -> None:
        """Checkpoints from the model folders; embeddings for the token counter."""
        from charstudio.engine.runner import find_checkpoints

        if self.project is None:
            return
        self.panel.set_model_choices([str(p) for p in find_checkpoints(self.project)])

    # -- submitting ------------------------------------------------------------------------

    def problems(self, request: GenerateRequest) -> list[str]:
        """The command line's own checks (one implementation), without opening LoRA or
        embedding files on the GUI thread: the job checks those before it generates."""
        from charstudio.engine.generate import check_request

        assert self.project is not None
        return check_request(self.project, request, read_files=False)

    def submit(self, request: GenerateRequest) -> int | None:
        if self.project is None or self.worker is None:
            return None
        problems = self.problems(request)
        if problems:
            self.panel.show_problems(problems)
            return None
        job_id = self.worker.submit(self.project, KIND, request.to_params())
        self._update_queue_length()
        return job_id

    def cancel(self, job_id: int) -> None:
        if self.worker is None or self.project is None:
            return
        if job_id == self.current_job or job_id < 0:
            self.worker.cancel_current()
        else:
            JobQueue(self.project).cancel_queued(job_id)
        self._update_queue_length()

    def _update_queue_length(self) -> None:
        if self.project is None:
            return
        waiting = [j for j in JobQueue(self.project).pending() if j.kind == KIND]
        self.panel.set_queue_length(len(waiting))

    # -- the worker's signals (the window forwards them; True = handled here) ---------------

    def job_started(self, job: QueuedJob) -> bool:
        if job.kind != KIND:
            return False
        self.current_job = job.id
        self.panel.job_started(job.id)
        self._update_queue_length()
        return True

    def job_progress(self, job: QueuedJob, event: Progress) -> bool:
        if job.kind != KIND:
            return False
        self.panel.show_progress(event)
        new_ids = event.detail.get("new_image_ids")
        if new_ids:
            self.imagesAdded.emit(list(new_ids))
        return True

    def job_finished(self, job: QueuedJob) -> bool:
        if job.kind != KIND:
            return False
        self.current_job = None
        result = job_result(self.project, job) if self.project is not None else {}
        count = len(result.get("image_ids") or [])
        error = readable_job_error(job.error)
        self.panel.job_finished(job.status, error)
        words = {"done": "finished", "canceled": "canceled", "failed": "failed"}
        images = f"{count} image{'' if count == 1 else 's'}"
        if job.status == "canceled":
            images += " kept"
        self.message.emit(
            f"Generate job {job.id} {words.get(job.status, job.status)}: {images}"
            + (f" — {error}" if error else "")
        )
        self._update_queue_length()
        return True
