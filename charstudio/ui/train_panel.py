"""The Train panel: A1111's "Train an embedding" settings, the run's progress and the past runs.

The panel edits one :class:`~charstudio.training.settings.TrainTISettings` plus the model and the
images to train on, and shows what the core says about them: the problems that block training
(red), the warnings (amber) and the batch plan. It never runs anything: it emits
``trainRequested(params)``, ``pauseRequested``, ``cancelRequested`` and ``resumeRequested(run_id)``
and the :class:`~charstudio.ui.train_controller.TrainController` queues the jobs and reports back
through ``job_started`` / ``show_progress`` / ``job_finished``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QImage
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from charstudio.catalog import Project
from charstudio.jobs import Progress
from charstudio.presenters.progress_text import train_progress_text
from charstudio.presenters.train import (
    RESUMABLE,
    SETTING_KEY,
    RunRow,
    stored_state,
)
from charstudio.training.settings import (
    TrainTISettings,
)
from charstudio.ui.loss_plot import LossPlot
from charstudio.ui.train_form import TrainForm
from charstudio.ui.widgets import (
    ERROR_STYLE,
    MUTED_STYLE,
    Preview,
    dock_panel_layout,
    error_label,
    pil_to_qimage,
)

__all__ = ["TrainPanel"]

WARNING_STYLE = "color: #c98a00;"
PRECISION_CHOICES = (("Automatic", "auto"), ("fp16", "fp16"), ("bf16", "bf16"), ("fp32", "fp32"))
PAUSING = "Pausing after this step…"
CHECK_DELAY_MS = 250  # live checks read the catalog and image files: not on every keystroke
_SEED_PATTERN = r"-1|\d{1,19}"


class TrainPanel(TrainForm, QWidget):
    """Train a textual-inversion embedding on the training set: settings, checks, progress."""

    trainRequested = Signal(object)  # params for a new "train-ti" job, checked
    pauseRequested = Signal()
    cancelRequested = Signal()
    resumeRequested = Signal(int)  # the run id selected in the runs list
    runSelected = Signal(int)  # the run id selected in the runs list, -1 for none
    refreshRequested = Signal()  # the ⟳ button: checkpoints, training set and runs again

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._project: Project | None = None
        self._loading = False  # filling widgets: no "changed" side effects
        self._busy = False  # a train job is queued or running
        self._pausing = False  # a pause was requested; the run stops after its current step
        self._image_count: int | None = None
        self._image_error = ""
        self._problems: list[str] = []
        self._warnings: list[str] = []
        self._runs: list[RunRow] = []
        self._stored_note = ""  # saved settings that could not be read, until the next change
        self._check_timer = QTimer(self)
        self._check_timer.setSingleShot(True)
        self._check_timer.setInterval(CHECK_DELAY_MS)
        self._check_timer.timeout.connect(self.check_now)

        sections = [  # built before the actions, which read some of them
            self._build_source_box(),
            self._build_embedding_box(),
            self._build_advanced(),
            self._build_runs_box(),
        ]
        self._actions = self._build_actions()
        self.form = self._build_form()
        self.hint_label, self.scroll, self.splitter = dock_panel_layout(
            self,
            "Open or create a project to train an embedding.",
            sections,
            self._actions,
            stretch=(1, 1),
        )

        self._connect_changes()
        self.set_project(None)

    # -- building ----------------------------------------------------------------------------

    def _build_runs_box(self) -> QGroupBox:
        self.runs_tree = QTreeWidget()
        self.runs_tree.setHeaderLabels(["Run", "Status", "Steps"])
        self.runs_tree.setRootIsDecorated(False)
        self.runs_tree.setUniformRowHeights(True)
        self.runs_tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.runs_tree.setFixedHeight(self.runs_tree.fontMetrics().height() * 7 + 12)
        header = self.runs_tree.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip(
            "Continue the selected paused, canceled or failed run from its last saved step"
        )
        self.resume_button.setEnabled(False)
        self.refresh_button = QToolButton()
        self.refresh_button.setText("⟳")
        self.refresh_button.setToolTip("Look for checkpoints, the training set and runs again")
        self.run_detail_label = QLabel()
        self.run_detail_label.setWordWrap(True)
        self.run_detail_label.setTextFormat(Qt.TextFormat.PlainText)
        self.run_detail_label.setStyleSheet(MUTED_STYLE)
        self.run_detail_label.setSizePolicy(
            QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred
        )
        self.run_detail_label.setMinimumWidth(1)

        box = QGroupBox("Runs")
        layout = QVBoxLayout(box)
        layout.addWidget(self.runs_tree)
        layout.addWidget(self.run_detail_label)
        row = QHBoxLayout()
        row.addWidget(self.refresh_button)
        row.addStretch(1)
        row.addWidget(self.resume_button)
        layout.addLayout(row)
        self.runs_tree.itemSelectionChanged.connect(self._run_selection_changed)
        self.resume_button.clicked.connect(self._resume_clicked)
        self.refresh_button.clicked.connect(self.refreshRequested)
        return box

    def _build_actions(self) -> QWidget:
        self.problem_label = error_label()
        self.warning_label = error_label()
        self.warning_label.setStyleSheet(WARNING_STYLE)
        self.train_button = QPushButton("Train embedding")
        self.train_button.setDefault(True)
        self.train_button.setMinimumHeight(32)
        self.pause_button = QPushButton("Pause")
        self.pause_button.setToolTip(
            "Save the current step and stop; Resume in the runs list continues exactly there"
        )
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the run; the steps saved so far are kept")
        self.progress_bar = QProgressBar()
        self.progress_bar.setFormat("%v/%m")
        self.status_label = QLabel()
        self.status_label.setTextFormat(Qt.TextFormat.PlainText)
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.status_label.setMinimumWidth(1)
        self.loss_plot = LossPlot()
        self.loss_plot.setMaximumHeight(200)  # the rest of the height goes to the preview
        self.preview = Preview()
        self.preview.setMinimumSize(96, 96)
        self.preview_label = QLabel()
        self.preview_label.setStyleSheet(MUTED_STYLE)
        self.preview_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.checkpoint_label = QLabel()
        self.checkpoint_label.setTextFormat(Qt.TextFormat.PlainText)
        self.checkpoint_label.setWordWrap(True)
        self.checkpoint_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.checkpoint_label.setSizePolicy(
            QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred
        )
        self.checkpoint_label.setMinimumWidth(1)
        self.checkpoint_label.setStyleSheet(MUTED_STYLE)

        actions = QWidget()
        layout = QVBoxLayout(actions)
        layout.setContentsMargins(6, 2, 6, 6)
        layout.addWidget(self.problem_label)
        layout.addWidget(self.warning_label)
        buttons = QHBoxLayout()
        buttons.addWidget(self.train_button, 1)
        buttons.addWidget(self.pause_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addWidget(self.loss_plot, 1)
        layout.addWidget(self.preview, 2)
        layout.addWidget(self.preview_label)
        layout.addWidget(self.checkpoint_label)
        layout.addStretch(0)

        self.train_button.clicked.connect(self.train)
        self.pause_button.clicked.connect(self._pause_clicked)
        self.cancel_button.clicked.connect(self.cancelRequested)
        self._update_buttons()
        return actions

    def _connect_changes(self) -> None:
        self.form.on_change(self._changed)
        self.model_combo.currentTextChanged.connect(self._changed)
        self.vae_combo.currentTextChanged.connect(self._changed)
        self.images_combo.currentIndexChanged.connect(self._images_changed)

    # -- the project and its settings -----------------------------------------------------------

    def set_project(self, project: Project | None) -> None:
        """Show ``project``'s saved settings; the previous project's are saved first.

        Call with None before closing a project's catalog.
        """
        if self._project is not None and project is not self._project:
            self.save_settings()
        self._project = project
        self._busy = False
        self.scroll.setEnabled(project is not None)
        self._actions.setEnabled(project is not None)
        self.hint_label.setVisible(project is None)
        self.set_runs([])
        self.reset_progress()
        if project is None:
            self._check_timer.stop()
            self._image_count, self._image_error, self._stored_note = None, "", ""
            self._show_checks([], [])
            self._update_buttons()
            return
        try:
            stored = project.catalog.get_setting(SETTING_KEY)
        except ValueError:  # not even JSON (a hand-edited catalog)
            stored = "unreadable"
        settings, choices, dropped = stored_state(stored, project)
        self._loading = True
        try:
            self.remembered_model = choices.get("model")
            self.model_combo.set_path(self.remembered_model)
            self.model_combo.lineEdit().setCursorPosition(0)
            self.vae_combo.set_path(choices.get("vae"))
            index = self.images_combo.findData(choices.get("images", "picks"))
            self.images_combo.setCurrentIndex(max(0, index))
        finally:
            self._loading = False
        self.set_settings(settings)
        self.refresh_images()
        self._stored_note = (
            f"Saved training settings reset to their defaults (unreadable): {', '.join(dropped)}"
            if dropped
            else ""
        )
        self.check_now()

    def project(self) -> Project | None:
        return self._project

    def save_settings(self) -> None:
        """Remember the current settings in the project (also ones with problems, to fix later)."""
        if self._project is None:
            return
        try:
            settings = self.settings()
        except ValueError:
            return
        self._project.catalog.set_setting(
            SETTING_KEY,
            {
                "settings": settings.to_json(),
                "model": self.model_combo.path(),
                "vae": self.vae_combo.path(),
                "images": self.images_choice(),
            },
        )

    def set_settings(self, settings: TrainTISettings) -> None:
        """Fill the widgets from ``settings``."""
        self._loading = True
        try:
            if not settings.name and self._project is not None:
                settings = settings.replace(name=self._project.token)
            self.form.fill(settings)
            self.clip_grad_value_edit.setEnabled(settings.clip_grad_mode != "disabled")
        finally:
            self._loading = False
        self._changed()

    def settings(self) -> TrainTISettings:
        """The settings the widgets show (checked by the core, not here)."""
        return TrainTISettings(**self.form.values())

    def images_choice(self) -> str:
        return str(self.images_combo.currentData())

    def current_params(self) -> dict[str, Any]:
        """The params of a new "train-ti" job (see :mod:`charstudio.training.ti`)."""
        return {
            "settings": self.settings().to_json(),
            "model": self.model_combo.path(),
            "vae": self.vae_combo.path(),
            "images": self.images_choice(),
        }

    def set_model_choices(self, paths: Sequence[str]) -> None:
        self.model_combo.set_choices(paths)
        self.model_combo.lineEdit().setCursorPosition(0)  # the start of a long file name

    # -- images and checks ------------------------------------------------------------------

    def refresh_images(self) -> None:
        """Count the images to train on again (after "Use Picks as Training Set", an import…)."""
        from charstudio.training.dataset import gather_images

        if self._project is None:
            return
        try:
            self._image_count = len(gather_images(self._project, self.images_choice()))
            self._image_error = ""
        except ValueError as error:  # ImageSelectionError: no picks, missing files
            self._image_count, self._image_error = None, str(error)
        self._update_images_label()
        self._changed()

    def image_count(self) -> int | None:
        return self._image_count

    def _update_images_label(self) -> None:
        if self._project is None:
            self.images_label.clear()
            return
        if self._image_count is None:
            self.images_label.setStyleSheet(ERROR_STYLE)
            self.images_label.setText(self._image_error or "No images to train on")
            return
        n = self._image_count
        images = f"{n} image{'s' if n != 1 else ''}"
        if self.images_choice() == "all":
            source = f"All images: {images}"
        elif self._project.catalog.training_set() is not None:
            source = f"Training set: {n} picked image{'s' if n != 1 else ''}"
        else:
            source = f"Picks: {images} (no training set made yet)"
        try:
            batch, accumulation, _notes = self.settings().batch_plan(n)
        except (ValueError, TypeError):
            self.images_label.setStyleSheet(MUTED_STYLE)
            self.images_label.setText(source)
            return
        self.images_label.setStyleSheet("")
        self.images_label.setText(f"{source} → batch {batch} × {accumulation}")
        self.images_label.setToolTip(
            f"{batch * accumulation} images per step: batch size {batch} × gradient "
            f"accumulation {accumulation}"
        )

    def check_now(self) -> tuple[list[str], list[str]]:
        """Ask the core what is wrong (problems) and what may be a mistake (warnings) with the
        current params; shows and returns them."""
        self._check_timer.stop()
        if self._project is None:
            return [], []
        from charstudio.training.ti import check_train_params

        try:
            settings = self.settings()
        except ValueError as error:
            self._show_checks([str(error)], [])
            return self._problems, self._warnings
        params = self.current_params()
        # The device only decides where a run trains; naming one keeps torch from being imported
        # on the GUI thread just to check settings.
        problems, warnings = check_train_params(self._project, {**params, "device": "cpu"})
        if not settings.problems():
            warnings = [*settings.warnings(), *warnings]  # the name's, also without images
        if self._stored_note:
            problems = [self._stored_note, *problems]
        self._show_checks(list(dict.fromkeys(problems)), list(dict.fromkeys(warnings)))
        return self._problems, self._warnings

    def problems(self) -> list[str]:
        return list(self._problems)

    def warnings(self) -> list[str]:
        return list(self._warnings)

    def show_problems(self, problems: Sequence[str]) -> None:
        """Problems found elsewhere (the controller's checks before a resume)."""
        self._show_checks(list(problems), self._warnings)

    def _show_checks(self, problems: list[str], warnings: list[str]) -> None:
        self._problems, self._warnings = problems, warnings
        for label, lines in ((self.problem_label, problems), (self.warning_label, warnings)):
            text = "\n".join(f"• {line}" if len(lines) > 1 else line for line in lines)
            label.setText(text)
            label.setVisible(bool(text))
        self._update_buttons()

    def _changed(self) -> None:
        if self._loading or self._project is None:
            return
        self._update_images_label()
        self._stored_note = ""
        self._check_timer.start()  # Train checks again at once, so it stays enabled meanwhile

    def _images_changed(self) -> None:
        if not self._loading:
            self.refresh_images()

    # -- runs -------------------------------------------------------------------------------

    def set_runs(self, runs: Sequence[RunRow]) -> None:
        """The runs list, newest first; the selection is kept by run id."""
        selected = self.selected_run_id()
        self._runs = list(runs)
        blocked = self.runs_tree.blockSignals(True)
        try:
            self.runs_tree.clear()
            for run in self._runs:
                steps = f"{run.step}/{run.end_step}" if run.end_step else str(run.step)
                item = QTreeWidgetItem([f"#{run.run_id} {run.name}", run.status, steps])
                item.setData(0, Qt.ItemDataRole.UserRole, run.run_id)
                item.setTextAlignment(
                    2, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                )
                tip = f"Started {run.created_at}" if run.created_at else ""
                if run.error:
                    tip = f"{tip}\n{run.error}".strip()
                for column in range(3):
                    item.setToolTip(column, tip)
                self.runs_tree.addTopLevelItem(item)
                if run.run_id == selected:
                    item.setSelected(True)
                    self.runs_tree.setCurrentItem(item)
        finally:
            self.runs_tree.blockSignals(blocked)
        self._update_run_detail()
        self._update_buttons()

    def runs(self) -> list[RunRow]:
        return list(self._runs)

    def select_run(self, run_id: int, *, quiet: bool = False) -> None:
        """Select a run in the list; ``quiet``: without emitting ``runSelected``."""
        for index in range(self.runs_tree.topLevelItemCount()):
            item = self.runs_tree.topLevelItem(index)
            if item.data(0, Qt.ItemDataRole.UserRole) == run_id:
                blocked = self.runs_tree.blockSignals(quiet)
                try:
                    self.runs_tree.setCurrentItem(item)
                finally:
                    self.runs_tree.blockSignals(blocked)
                self._update_run_detail()
                self._update_buttons()
                return

    def selected_run(self) -> RunRow | None:
        items = self.runs_tree.selectedItems()
        if not items:
            return None
        run_id = items[0].data(0, Qt.ItemDataRole.UserRole)
        return next((run for run in self._runs if run.run_id == run_id), None)

    def selected_run_id(self) -> int | None:
        run = self.selected_run()
        return run.run_id if run is not None else None

    def _run_selection_changed(self) -> None:
        self._update_run_detail()
        self._update_buttons()
        run_id = self.selected_run_id()
        self.runSelected.emit(-1 if run_id is None else run_id)

    def _update_run_detail(self) -> None:
        run = self.selected_run()
        if run is None:
            self.run_detail_label.hide()
            return
        text = f"{run.name}: {run.status} at step {run.step}"
        if run.error:
            text += f" — {run.error}"
        self.run_detail_label.setStyleSheet(ERROR_STYLE if run.status == "failed" else MUTED_STYLE)
        self.run_detail_label.setText(text)
        self.run_detail_label.show()

    def _resume_clicked(self) -> None:
        run = self.selected_run()
        if run is not None and run.status in RESUMABLE and not self._busy:
            self.resumeRequested.emit(run.run_id)

    # -- running ----------------------------------------------------------------------------

    def train(self) -> None:
        """Check the params and emit them (no signal when something is wrong)."""
        if self._project is None or self._busy:
            return
        problems, _warnings = self.check_now()
        if problems:
            return
        self.save_settings()
        self.trainRequested.emit(self.current_params())

    def _pause_clicked(self) -> None:
        # One button: Pause while a run trains, Resume for a stopped run selected in the list
        # (the runs list may be scrolled out of sight; the action row never is).
        if not self._busy:
            self._resume_clicked()
            return
        self.pause_button.setEnabled(False)  # one request is enough; the run stops at a step
        self.pauseRequested.emit()

    def set_pausing(self, pausing: bool) -> None:
        """A pause was requested (True), or could not be (False: Pause works again)."""
        self._pausing = pausing
        self.pause_button.setEnabled(self._busy and not pausing)
        if pausing:
            self.status_label.setText(f"{self.status_label.text()}\n{PAUSING}".strip())

    def is_busy(self) -> bool:
        return self._busy

    def _update_buttons(self) -> None:
        has_project = self._project is not None
        self.train_button.setEnabled(has_project and not self._busy and not self._problems)
        self.cancel_button.setEnabled(self._busy)
        run = self.selected_run()
        resumable = has_project and not self._busy and run is not None and run.status in RESUMABLE
        self.resume_button.setEnabled(resumable)
        if not self._busy:
            self.pause_button.setText("Resume")
            self.pause_button.setEnabled(resumable)
        else:
            self.pause_button.setText("Pause")

    def reset_progress(self) -> None:
        """An empty progress area: before a new run, or for another project."""
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.hide()
        self.status_label.clear()
        self.status_label.setStyleSheet("")
        self.status_label.hide()
        self.loss_plot.clear()
        self.loss_plot.set_total(None)
        self.loss_plot.hide()
        self.preview.set_image(None)
        self.preview_label.clear()
        self.preview_label.hide()
        self.checkpoint_label.clear()
        self.checkpoint_label.hide()
        self._fit_progress(False)

    def _fit_progress(self, showing: bool) -> None:
        """Give the progress area room while it shows a run (the plot and preview), and the
        settings all of it otherwise; the artist can still drag the splitter."""
        total = sum(self.splitter.sizes()) or 1000
        low = self._actions.minimumSizeHint().height()
        wanted = max(low, int(total * 0.5)) if showing else low
        current = self.splitter.sizes()[1]
        if (showing and current < wanted) or (not showing and current > wanted):
            self.splitter.setSizes([max(1, total - wanted), wanted])

    def job_queued(self, job_id: int) -> None:
        """A train job waits in the queue (behind other jobs, or about to start)."""
        self._busy = True
        self._pausing = False
        self.progress_bar.setRange(0, 0)
        self.progress_bar.show()
        self.status_label.setStyleSheet("")
        self.status_label.setText(f"Job {job_id}: queued…")
        self.status_label.show()
        self._fit_progress(True)
        self._update_buttons()

    def job_started(self, job_id: int) -> None:
        self.job_queued(job_id)
        self.status_label.setText(f"Job {job_id}: starting…")
        self.pause_button.setEnabled(True)

    def show_progress(self, progress: Progress) -> None:
        detail = progress.detail
        if progress.total:
            self.progress_bar.setRange(0, progress.total)
            self.progress_bar.setValue(min(progress.done, progress.total))
            self.loss_plot.set_total(progress.total)
        loss = detail.get("loss")
        step = detail.get("step", progress.done)
        if isinstance(loss, int | float) and isinstance(step, int):
            self.loss_plot.add_point(step, float(loss))
            self.loss_plot.show()
        text = train_progress_text(progress)
        self.status_label.setText(f"{text}\n{PAUSING}" if self._pausing else text)
        self.status_label.show()
        preview = detail.get("preview")
        if preview is not None:
            self.show_preview(pil_to_qimage(preview), step, detail.get("preview_path"))
        checkpoint = detail.get("checkpoint_path")
        if checkpoint:
            self.show_checkpoint(str(checkpoint))

    def show_preview(self, image: QImage | None, step: int | None, path: str | None = None) -> None:
        self.preview.set_image(image)
        self.preview_label.setText(f"Preview · step {step}" if step is not None else "Preview")
        self.preview_label.setToolTip(path or "")
        self.preview_label.setVisible(image is not None)

    def show_checkpoint(self, path: str | None) -> None:
        if not path:
            self.checkpoint_label.clear()
            self.checkpoint_label.hide()
            return
        self.checkpoint_label.setText(f"Last checkpoint: {path}")
        self.checkpoint_label.setToolTip(path)
        self.checkpoint_label.show()

    def show_history(
        self, points: Sequence[tuple[int, float]], total: int | None, step: int | None = None
    ) -> None:
        """A run's loss log (a run selected in the list, or the run a job resumes)."""
        self.loss_plot.set_points(points)
        self.loss_plot.set_total(total)
        self.loss_plot.setVisible(bool(points))
        self._fit_progress(True)
        if total:
            self.progress_bar.setRange(0, total)
            self.progress_bar.setValue(min(step or 0, total))
            self.progress_bar.show()

    def job_finished(self, status: str, message: str = "") -> None:
        """status: "done", "paused", "canceled" or "failed" (``message`` says more)."""
        self._busy = self._pausing = False
        titles = {"done": "Done", "paused": "Paused", "canceled": "Canceled", "failed": "Failed"}
        title = titles.get(status, status.capitalize())
        if self.progress_bar.maximum() == 0:
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(1 if status == "done" else 0)
        elif status == "done":
            self.progress_bar.setValue(self.progress_bar.maximum())
        self.status_label.setStyleSheet(ERROR_STYLE if status == "failed" else "")
        self.status_label.setText(f"{title}: {message}" if message else f"{title}.")
        self.status_label.show()
        self._update_buttons()

    def status_text(self) -> str:
        return self.status_label.text()

    # -- small internals ----------------------------------------------------------------------

    def preview_image(self) -> QImage | None:
        return self.preview.image()
