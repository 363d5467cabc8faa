"""Runs the face analysis in the background and shows it in the status bar.

New or changed images are analyzed by an ``analyze`` job on the project's queue: shortly after
an import or a generate job and after a project opens (a short pause lets the window and the
new thumbnails come first: the analysis loads torch and keeps every core busy; imports in a
row get one analysis), when the recognizer's weights arrive, and on demand (Photo > Analyze
Faces). The job only looks at stale images, so each
run is incremental. Its progress is a small permanent widget in the status bar with a Cancel
button, never a dialog: the artist keeps culling meanwhile.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QSizePolicy,
    QToolButton,
    QWidget,
)

from charstudio.analysis.view import progress_text
from charstudio.catalog import Project
from charstudio.jobs import Progress
from charstudio.jobs.queue import JobQueue, QueuedJob, job_result
from charstudio.ui.face_weights_dialog import DownloadFn, FaceWeightsDialog
from charstudio.ui.queue_worker import QueueWorker

KIND = "analyze"
DONE_VISIBLE_MS = 8000


class AnalysisStatus(QWidget):
    """The status bar's "Analyzing faces 120/288 · ETA 00:40", a progress bar and Cancel."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = QLabel()
        self.bar = QProgressBar()
        self.bar.setFixedWidth(140)  # an expanding bar would stretch the whole status widget
        self.bar.setMaximumHeight(14)
        self.bar.setTextVisible(False)
        self.cancel_button = QToolButton()
        self.cancel_button.setText("Cancel")
        self.cancel_button.setToolTip("Stop analyzing faces")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 6, 0)
        layout.addWidget(self.label)
        layout.addWidget(self.bar)
        layout.addWidget(self.cancel_button)
        # As wide as its text: the status bar would otherwise hand it the spare width.
        self.setSizePolicy(QSizePolicy.Maximum, QSizePolicy.Preferred)
        self._hide_timer = QTimer(self)
        self._hide_timer.setSingleShot(True)
        self._hide_timer.timeout.connect(self.hide)
        self.hide()

    def show_progress(self, text: str, done: int, total: int | None) -> None:
        self._hide_timer.stop()
        self.label.setText(text)
        self.bar.setRange(0, total or 0)  # 0..0: busy, until the total is known
        if total:
            self.bar.setValue(min(done, total))
        self.bar.show()
        self.cancel_button.show()
        self.show()

    def show_done(self, text: str) -> None:
        self.label.setText(text)
        self.bar.hide()
        self.cancel_button.hide()
        self.show()
        self._hide_timer.start(DONE_VISIBLE_MS)


class AnalysisController(QObject):
    analysisChanged = Signal()  # the cache changed: reload the analysis index
    weightsChanged = Signal()  # the recognizer's weights arrived
    message = Signal(str)  # one line for the status bar

    # Pauses before looking for stale images: after opening a project, after a job added some.
    open_delay_ms = 3000
    settle_ms = 1500

    def __init__(self, parent: QWidget, *, download: DownloadFn | None = None) -> None:
        super().__init__(parent)
        self._window = parent
        self.status = AnalysisStatus(parent)
        self.status.cancel_button.clicked.connect(self.cancel)
        self.project: Project | None = None
        self.worker: QueueWorker | None = None
        self.current_job: int | None = None
        self.download = download  # tests put a fake here; None: the real download
        self.dialog: FaceWeightsDialog | None = None
        self._recognizer_available: bool | None = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.queue_if_stale)

    def set_project(self, project: Project | None, worker: QueueWorker | None) -> None:
        self._timer.stop()
        self.project, self.worker, self.current_job = project, worker, None
        self._recognizer_available = None
        self.status.hide()
        if project is not None:
            self.schedule_check(self.open_delay_ms)

    def schedule_check(self, delay_ms: int | None = None) -> None:
        """Look for stale images after ``delay_ms`` (default :attr:`settle_ms`); a check
        already scheduled is pushed back, so jobs ending in a row get one analysis."""
        if self.project is not None:
            self._timer.start(self.settle_ms if delay_ms is None else delay_ms)

    def shutdown(self) -> None:
        self._timer.stop()
        if self.dialog is not None:
            self.dialog.shutdown()

    # -- what is there to do -----------------------------------------------------------------

    def recognizer_available(self) -> bool:
        """Whether the recognizer's weights are installed (remembered: the info panel asks on
        every focus change; the weights dialog clears it)."""
        if self._recognizer_available is None:
            from charstudio.analysis.recognition import Recognizer

            self._recognizer_available = Recognizer().available()
        return self._recognizer_available

    def stale_ids(self) -> list[int]:
        from charstudio.analysis.project import stale_image_ids

        if self.project is None:
            return []
        return stale_image_ids(self.project.catalog, want_embeddings=self.recognizer_available())

    def pending(self) -> bool:
        """An analyze job is running or waiting in the queue."""
        if self.project is None:
            return False
        return self.current_job is not None or any(
            job.kind == KIND for job in JobQueue(self.project).pending()
        )

    def queue_if_stale(self) -> int | None:
        """Queue an analysis when images need one and none is queued already; returns the
        job id. The job itself finds the stale images when it starts (so it sees the images
        of every job that ran before it)."""
        if self.project is None or self.worker is None or self.pending():
            return None
        if not self.stale_ids():
            return None
        return self.worker.submit(self.project, KIND, {})

    def analyze_now(self) -> int | None:
        """Photo > Analyze Faces."""
        if self.project is None or self.worker is None:
            return None
        if self.pending():
            self.message.emit("Faces are being analyzed already (see the status bar)")
            return None
        stale = self.stale_ids()
        if not stale:
            self.message.emit("Faces are up to date: every image is analyzed")
            return None
        job_id = self.worker.submit(self.project, KIND, {})
        self.message.emit(f"Analyzing the faces of {len(stale)} images in the background")
        return job_id

    def cancel(self) -> None:
        if self.worker is not None and self.current_job is not None:
            self.worker.cancel_current()

    # -- the weights -----------------------------------------------------------------------

    def show_weights_dialog(self) -> FaceWeightsDialog:
        """The weights dialog (one per window, not modal: a download may take minutes)."""
        if self.dialog is None:
            self.dialog = FaceWeightsDialog(self._window, download=self.download)
            self.dialog.weightsInstalled.connect(self._weights_installed)
        self.dialog.show()
        self.dialog.raise_()
        self.dialog.activateWindow()
        return self.dialog

    def _weights_installed(self, _path: str) -> None:
        self._recognizer_available = None
        self.weightsChanged.emit()
        self.queue_if_stale()  # analyzed faces lack embeddings: they are stale now

    # -- the worker's signals (the window forwards them; True = handled here) ---------------

    def job_started(self, job: QueuedJob) -> bool:
        if job.kind != KIND:
            return False
        self.current_job = job.id
        self.status.show_progress("Analyzing faces…", 0, None)
        return True

    def job_progress(self, job: QueuedJob, event: Progress) -> bool:
        if job.kind != KIND:
            return False
        self.status.show_progress(
            progress_text(event.done, event.total, event.eta_s), event.done, event.total
        )
        return True

    def job_finished(self, job: QueuedJob) -> bool:
        if job.kind != KIND:
            return False
        self.current_job = None
        result = job_result(self.project, job) if self.project is not None else {}
        if job.status == "failed":
            self.status.show_done("Face analysis failed")
            self.message.emit(f"Face analysis failed: {job.error}")
        elif job.status == "canceled":
            self.status.show_done("Face analysis canceled")
        else:
            failed = len(result.get("failed", []))
            text = f"Faces analyzed: {result.get('analyzed', 0)} images"
            self.status.show_done(text + (f" · {failed} unreadable" if failed else ""))
        self.analysisChanged.emit()
        return True
