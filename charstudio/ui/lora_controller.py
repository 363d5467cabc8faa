"""Connects the LoRA panel to the project's job queue and the centre run view: queues
"train-lora" jobs, pauses and cancels them, and follows the running run's loss, samples and
saved epochs. It never loads a model: that happens on the worker thread."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from charstudio.catalog import Project
from charstudio.jobs import Progress, readable_job_error
from charstudio.jobs.queue import JobQueue, QueuedJob
from charstudio.presenters import lora as presenter
from charstudio.presenters.run_view import SavedFile, run_snapshot
from charstudio.training import records
from charstudio.training.pause import request_pause, request_pause_job
from charstudio.ui.lora_panel import LoraPanel
from charstudio.ui.queue_worker import QueueWorker
from charstudio.ui.run_view import RunView

__all__ = ["LoraController"]


class LoraController(QObject):
    message = Signal(str)
    runStarted = Signal(int)  # the run a job just created or resumed
    runFinished = Signal(int)

    def __init__(self, panel: LoraPanel, run_view: RunView, parent: QObject | None = None):
        super().__init__(parent)
        self.panel, self.run_view = panel, run_view
        self.project: Project | None = None
        self.worker: QueueWorker | None = None
        self.current_job: int | None = None
        self.current_run: int | None = None
        panel.trainRequested.connect(self.submit)
        panel.pauseRequested.connect(self.pause)
        panel.cancelRequested.connect(self.cancel)

    def set_project(self, project: Project | None, worker: QueueWorker | None) -> None:
        self.panel.set_project(project)
        self.project, self.worker = project, worker
        self.current_job = self.current_run = None

    def submit(self, params: dict[str, Any]) -> int | None:
        if self.project is None or self.worker is None:
            return None
        if self.current_job is not None:
            self.message.emit("A LoRA run is already queued or running")
            return None
        self.current_job = self.worker.submit(self.project, presenter.KIND, params)
        self.message.emit(f"LoRA training queued (job {self.current_job})")
        return self.current_job

    def pause(self) -> None:
        if self.project is None or self.current_job is None:
            return
        if self.current_run is not None:
            request_pause(self.project, self.current_run)
        elif request_pause_job(self.project, self.current_job) is None:
            self.message.emit("The run has not started yet; cancel it instead")
            return
        self.message.emit("Pausing LoRA training after the current step")

    def cancel(self) -> None:
        if self.project is None or self.worker is None or self.current_job is None:
            return
        if JobQueue(self.project).cancel_queued(self.current_job):
            self.panel.job_finished("canceled", "Canceled before it started")
            self.current_job = None
        else:
            self.worker.cancel_current()

    # -- the worker's signals (True = handled here) ------------------------------------------

    def job_started(self, job: QueuedJob) -> bool:
        if job.kind != presenter.KIND:
            return False
        self.current_job, self.current_run = job.id, None
        resumed = job.params.get("resume_run_id")
        if isinstance(resumed, int):
            self._show_run(resumed)
        self.panel.job_started(job.id)
        return True

    def job_progress(self, job: QueuedJob, event: Progress) -> bool:
        if job.kind != presenter.KIND:
            return False
        detail = event.detail
        run_id = detail.get("run_id")
        if isinstance(run_id, int) and run_id != self.current_run:
            self._show_run(run_id)
        self.panel.show_progress(event)
        self._follow(event)
        return True

    def job_finished(self, job: QueuedJob) -> bool:
        if job.kind != presenter.KIND:
            return False
        result: dict[str, Any] = {}
        run_id = self.current_run
        if self.project is not None:
            run = records.run_for_job(self.project.catalog, job.id)
            run_id = run.id if run is not None else run_id
            if run is not None:
                result = {"name": run.name, **self._result(run.id)}
        status = str(result.get("status") or job.status)
        text = presenter.finish_text(status, result, readable_job_error(job.error))
        self.panel.job_finished(status, text)
        self.message.emit(f"LoRA job {job.id}: {text}")
        self.current_job = self.current_run = None
        if run_id is not None and self.project is not None:
            self.run_view.set_snapshot(run_snapshot(self.project, run_id))
            self.runFinished.emit(run_id)
        return True

    # -- the centre run view ---------------------------------------------------------------

    def _show_run(self, run_id: int) -> None:
        self.current_run = run_id
        if self.project is not None:
            self.run_view.set_snapshot(run_snapshot(self.project, run_id))
            self.runStarted.emit(run_id)

    def _follow(self, event: Progress) -> None:
        if self.run_view.run_id() != self.current_run or self.current_run is None:
            return
        detail = event.detail
        loss = detail.get("loss")
        if isinstance(loss, int | float):
            self.run_view.add_loss_point(event.done, float(loss))
        for path in detail.get("sample_paths") or ():
            self.run_view.add_preview(SavedFile(event.done, Path(path), label=_epoch_label(path)))
        checkpoint = detail.get("checkpoint_path")
        if isinstance(checkpoint, str):
            value = float(loss) if isinstance(loss, int | float) else None
            self.run_view.add_checkpoint(SavedFile(event.done, Path(checkpoint), value))

    def _result(self, run_id: int) -> dict[str, Any]:
        assert self.project is not None
        run = records.get_run(self.project.catalog, run_id)
        spe = max(int(run.params.get("steps_per_epoch") or 1), 1)
        saved = [r for r in records.run_checkpoints(self.project.catalog, run_id) if r.step >= 0]
        step = saved[-1].step if saved else 0
        return {
            "status": run.status,
            "step": step,
            "checkpoints": [{"epoch": r.step // spe, "step": r.step} for r in saved],
        }


def _epoch_label(path: str) -> str:
    from charstudio.presenters.run_view import sample_label

    return sample_label(Path(path))
