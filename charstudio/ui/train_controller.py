"""Connects the Train panel to the project's job queue and the catalog's training runs.

The panel collects and checks the settings; this controller queues "train-ti" jobs on the
project's GPU worker, asks a running run to pause (a flag file the training loop looks for after
every step, see :mod:`charstudio.training.pause`), cancels, resumes a stopped run with a new job
naming ``resume_run_id``, and feeds the worker's progress into the panel. It also lists the
project's runs and, while nothing trains, shows a selected run's loss log, newest preview and
newest checkpoint. It never loads a model: that happens on the worker thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage

from charstudio.catalog import Project
from charstudio.jobs import Progress, readable_job_error
from charstudio.jobs.queue import JobQueue, QueuedJob, job_result
from charstudio.presenters.run_view import SavedFile, run_snapshot
from charstudio.presenters.train import run_rows
from charstudio.training import records
from charstudio.training.pause import request_pause, request_pause_job
from charstudio.ui.queue_worker import QueueWorker
from charstudio.ui.run_view import RunView
from charstudio.ui.train_panel import TrainPanel
from charstudio.ui.widgets import pil_to_qimage

__all__ = ["KIND", "TrainController"]

KIND = "train-ti"
# Errors whose message is written for the artist: the exception's type name adds nothing.


class TrainController(QObject):
    message = Signal(str)  # one-line news for the status bar
    runFinished = Signal(int)  # a run's job ended (done, paused, canceled or failed)

    def __init__(
        self, panel: TrainPanel, run_view: RunView | None = None, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.panel = panel
        self.run_view = run_view
        self.project: Project | None = None
        self.worker: QueueWorker | None = None
        self.current_job: int | None = None  # the train job queued or running
        self.current_run: int | None = None  # its run, once the job reported it
        panel.trainRequested.connect(self.submit)
        panel.pauseRequested.connect(self.pause)
        panel.cancelRequested.connect(self.cancel)
        panel.resumeRequested.connect(self.resume)
        panel.runSelected.connect(self._run_selected)
        panel.refreshRequested.connect(self.refresh)

    def set_project(self, project: Project | None, worker: QueueWorker | None) -> None:
        self.panel.set_project(project)
        self.project, self.worker = project, worker
        self.current_job = self.current_run = None
        if project is not None:
            self._suggest_model(self.refresh_choices())
            self.refresh_runs()
            self._adopt_queued_job()

    # -- what the panel lists ------------------------------------------------------------------

    def refresh(self) -> None:
        self.refresh_choices()
        self.panel.refresh_images()
        self.refresh_runs()

    def refresh_choices(self) -> list[Path]:
        """Checkpoints from the project's model folders; returns them."""
        from charstudio.engine.runner import find_checkpoints

        if self.project is None:
            return []
        checkpoints = find_checkpoints(self.project)
        self.panel.set_model_choices([str(p) for p in checkpoints])
        return checkpoints

    def _suggest_model(self, checkpoints: list[Path]) -> None:
        """A project whose Train panel remembers no checkpoint starts on the suggested one."""
        from charstudio.training.base_model import training_model_for

        assert self.project is not None
        if self.panel.remembered_model is not None:
            return
        model, why = training_model_for(self.project, checkpoints)
        if model is not None:
            self.panel.model_combo.set_path(model)
            self.panel.model_combo.setToolTip(f"Suggested: {why}")

    def refresh_runs(self) -> None:
        self.panel.set_runs(run_rows(self.project))

    # -- submitting ----------------------------------------------------------------------------

    def submit(self, params: dict[str, Any]) -> int | None:
        """Queue a new run (params as the panel's ``current_params``)."""
        if self.project is None or self.worker is None:
            return None
        if self.current_job is not None:
            self.message.emit("A training run is already queued or running")
            return None
        job_id = self.worker.submit(self.project, KIND, params)
        self.current_job, self.current_run = job_id, None
        self.panel.reset_progress()
        self.panel.job_queued(job_id)
        name = params.get("settings", {}).get("name") or self.project.token
        self.message.emit(f"Training {name} queued (job {job_id})")
        return job_id

    def resume(self, run_id: int) -> int | None:
        """Continue a paused, canceled or failed run from its newest saved step."""
        from charstudio.training.ti import check_train_params

        if self.project is None or self.worker is None or self.current_job is not None:
            return None
        params: dict[str, Any] = {"resume_run_id": run_id}
        # The device is only needed to train; naming one keeps torch off the GUI thread.
        problems, _warnings = check_train_params(self.project, {**params, "device": "cpu"})
        if problems:
            self.panel.show_problems(problems)
            return None
        job_id = self.worker.submit(self.project, KIND, params)
        self.current_job, self.current_run = job_id, run_id
        self.show_run(run_id)
        self.panel.job_queued(job_id)
        self.message.emit(f"Resuming training run {run_id} (job {job_id})")
        return job_id

    def pause(self) -> None:
        """Ask the run to save its current step and stop; Resume continues it exactly."""
        if self.project is None or self.current_job is None:
            return
        if self.current_run is not None:
            request_pause(self.project, self.current_run)
        elif request_pause_job(self.project, self.current_job) is None:
            # Queued, or its run not created yet: the flag needs the run's folder.
            self.message.emit("The run has not started yet; cancel it instead")
            self.panel.set_pausing(False)
            return
        self.panel.set_pausing(True)
        self.message.emit("Pausing training after the current step")

    def cancel(self) -> None:
        if self.project is None or self.worker is None or self.current_job is None:
            return
        job_id = self.current_job
        if JobQueue(self.project).cancel_queued(job_id):
            # It never started, so the worker reports nothing: end it here.
            self.current_job = self.current_run = None
            self.panel.job_finished("canceled", f"job {job_id} removed from the queue")
            self.message.emit(f"Training job {job_id} canceled")
        else:
            self.worker.cancel_current()  # it is running: it stops at its next step

    def _adopt_queued_job(self) -> None:
        """A train job left queued (or interrupted) when the project was last open runs again
        as soon as the worker starts: show it as this panel's run."""
        assert self.project is not None
        waiting = [job for job in JobQueue(self.project).pending() if job.kind == KIND]
        if waiting:
            job = waiting[0]
            self.current_job = job.id
            resumed = job.params.get("resume_run_id")
            if resumed is not None:
                self.current_run = int(resumed)
                self.show_run(int(resumed))
            self.panel.job_queued(job.id)

    # -- a run's files, for the progress area ----------------------------------------------------

    def show_run(self, run_id: int) -> None:
        """Show a run's loss log, newest preview and newest checkpoint."""
        if self.project is None:
            return
        snapshot = run_snapshot(self.project, run_id)
        if snapshot is None:
            return
        self.panel.reset_progress()
        self.panel.show_history(snapshot.loss, snapshot.end_step, snapshot.step)
        preview = snapshot.newest_preview
        if preview is not None:
            self.panel.show_preview(QImage(str(preview.path)), preview.step, str(preview.path))
        checkpoint = snapshot.newest_checkpoint
        self.panel.show_checkpoint(self._relative(str(checkpoint.path)) if checkpoint else None)
        if self.run_view is not None:
            self.run_view.set_snapshot(snapshot)

    def _run_selected(self, run_id: int) -> None:
        # While a run trains, the progress area is its; a selection only shows when idle.
        if run_id >= 0 and self.current_job is None:
            self.show_run(run_id)

    def _relative(self, path: str) -> str:
        assert self.project is not None
        return self.project.catalog_path_for(Path(path))

    # -- the worker's signals (the window forwards them; True = handled here) -------------------

    def job_started(self, job: QueuedJob) -> bool:
        if job.kind != KIND:
            return False
        resumed = job.params.get("resume_run_id")
        if job.id != self.current_job:  # queued elsewhere (the command line, a recovered job)
            self.current_job, self.current_run = job.id, None
            if resumed is not None:
                self.show_run(int(resumed))
            else:
                self.panel.reset_progress()
        if resumed is not None:
            self.current_run = int(resumed)
        self.panel.job_started(job.id)
        self.refresh_runs()
        return True

    def job_progress(self, job: QueuedJob, event: Progress) -> bool:
        if job.kind != KIND:
            return False
        detail = event.detail
        run_id = detail.get("run_id")
        if isinstance(run_id, int) and run_id != self.current_run:
            self.current_run = run_id
            self.refresh_runs()  # the new run's row
            if self.run_view is not None and self.project is not None:
                self.run_view.set_snapshot(run_snapshot(self.project, run_id))
        self._follow_in_run_view(event)
        checkpoint = detail.get("checkpoint_path")
        if checkpoint and self.project is not None:
            detail = {**detail, "checkpoint_path": self._relative(str(checkpoint))}
            event = Progress(event.done, event.total, event.message, event.elapsed_s, detail)
        self.panel.show_progress(event)
        return True

    def _follow_in_run_view(self, event: Progress) -> None:
        """The running run's loss, previews and checkpoints as they come."""
        view = self.run_view
        if view is None or view.run_id() != self.current_run or self.current_run is None:
            return
        detail = event.detail
        loss = detail.get("loss")
        if isinstance(loss, int | float):
            view.add_loss_point(event.done, float(loss))
        preview = detail.get("preview_path")
        if isinstance(preview, str):
            image = detail.get("preview")
            view.add_preview(
                SavedFile(event.done, Path(preview)),
                pil_to_qimage(image) if image is not None else None,
            )
        checkpoint = detail.get("checkpoint_path")
        if isinstance(checkpoint, str):
            loss_value = float(loss) if isinstance(loss, int | float) else None
            view.add_checkpoint(SavedFile(event.done, Path(checkpoint), loss_value))

    def job_finished(self, job: QueuedJob) -> bool:
        if job.kind != KIND:
            return False
        result = self._result(job)
        run_id = result.get("run_id", self.current_run)
        if run_id is None and self.project is not None:
            run = records.run_for_job(self.project.catalog, job.id)
            run_id = run.id if run is not None else None
        status = job.status
        if status == "done" and result.get("status") == "paused":
            status = "paused"
        step = result.get("step")
        end_step = result.get("end_step")
        at = f" at step {step}/{end_step}" if step is not None and end_step else ""
        name = result.get("name") or (self.project.token if self.project else "")
        if status == "failed":
            text = readable_job_error(job.error)
        elif status == "paused":
            text = f"{name} paused{at}; Resume continues from there"
        elif status == "canceled":
            text = f"{name} canceled{at}; the saved steps are kept"
        else:
            text = f"{name} trained to step {step}" if step is not None else ""
        self.current_job = self.current_run = None
        self.refresh_runs()
        if run_id is not None:
            # Its whole loss log and newest files: the worker drops progress events that come
            # faster than it forwards them, and a preview may have been among them.
            self.panel.select_run(int(run_id), quiet=True)
            self.show_run(int(run_id))
        self.panel.job_finished(status, text)
        words = {"done": "finished", "paused": "paused", "canceled": "canceled", "failed": "failed"}
        self.message.emit(
            f"Training job {job.id} {words.get(status, status)}" + (f" — {text}" if text else "")
        )
        if run_id is not None:
            self.runFinished.emit(int(run_id))
        return True

    def _result(self, job: QueuedJob) -> dict[str, Any]:
        return job_result(self.project, job) if self.project is not None else {}
