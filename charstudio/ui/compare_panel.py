"""The Compare panel (a dock): set up a checkpoint grid of a training run (workflow step 4).

X = the run's saved steps (``NAME-20`` … ``NAME-140``), Y = a batch of seeds from one fixed
seed, optionally Z = other base checkpoints (at 512×768, as the workflow checks a step across
models). The panel shows the fields and lists the run's earlier grids; the rules (the checks,
the saved settings, the words) are :mod:`charstudio.presenters.compare`'s, and the controller
queues the "grid" job and opens grids in the viewer.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QRegularExpression, Qt, Signal
from PySide6.QtGui import QRegularExpressionValidator
from PySide6.QtWidgets import (
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from charstudio.catalog import Project
from charstudio.engine.sweeps import SAMPLER_NAMES, model_display_name
from charstudio.jobs import Progress
from charstudio.presenters.compare import (
    CROSS_MODEL_SIZE,
    SETTING_KEY,
    GridForm,
    RunChoice,
    axes_text,
    dropped_note,
    grid_line,
    grid_spec,
    grid_tooltip,
    models_text,
    run_text,
    settings_to_store,
    status_title,
    steps_preset,
    steps_text,
    stored_spec,
)
from charstudio.presenters.progress_text import grid_progress_text
from charstudio.training.checkpoint_grid import GridSpec
from charstudio.training.grid_records import GridRecord
from charstudio.ui.widgets import (
    AUTOMATIC,
    MUTED_STYLE,
    ComboBox,
    DoubleSpinBox,
    SizeSpinBox,
    SpinBox,
    dock_panel_layout,
    error_label,
    fill_schedule_choices,
    hrow,
)

__all__ = ["ComparePanel"]


class ComparePanel(QWidget):
    """Run, steps, seeds, prompt, sampling and base checkpoints of a grid; its progress; the
    run's earlier grids."""

    gridRequested = Signal(object)  # GridSpec, checked
    cancelRequested = Signal()
    runChanged = Signal(int)  # the selected run's id, -1 for none
    openGridRequested = Signal(int)  # a grid id from the list of earlier grids
    refreshRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._project: Project | None = None
        self._runs: list[RunChoice] = []
        self._loading = False
        self._job_id = -1
        self._size_for_models = False  # the size was switched to 512×768 for the Z models
        self._stored_note = ""  # saved settings that were unreadable, until they are saved again

        sections = [  # built before the actions, which read some of them
            self._build_run_box(),
            self._build_axes_box(),
            self._build_prompt_box(),
            self._build_sampling_box(),
            self._build_models_box(),
        ]
        self._actions = self._build_actions()
        self.hint_label, self.scroll, self.splitter = dock_panel_layout(
            self,
            "Open a project with a training run to compare its steps.",
            sections,
            self._actions,
            stretch=(4, 1),
        )
        self.setMinimumWidth(300)
        self._connect_changes()
        self.set_values(GridSpec(run_id=0, steps=()))
        self.set_project(None)

    # -- building ---------------------------------------------------------------------------

    def _build_run_box(self) -> QGroupBox:
        self.run_combo = ComboBox()
        self.run_combo.setToolTip("The training run whose saved steps are compared")
        self.refresh_button = QToolButton()
        self.refresh_button.setText("⟳")
        self.refresh_button.setToolTip("Look for new runs, saved steps and checkpoints")
        self.run_label = QLabel()
        self.run_label.setWordWrap(True)
        self.run_label.setStyleSheet(MUTED_STYLE)
        self.run_label.setTextFormat(Qt.TextFormat.PlainText)
        box = QGroupBox("Training run")
        layout = QVBoxLayout(box)
        row = QHBoxLayout()
        row.addWidget(self.run_combo, 1)
        row.addWidget(self.refresh_button)
        layout.addLayout(row)
        layout.addWidget(self.run_label)
        self.run_combo.currentIndexChanged.connect(self._run_changed)
        self.refresh_button.clicked.connect(self.refreshRequested)
        return box

    def _build_axes_box(self) -> QGroupBox:
        self.steps_edit = QLineEdit()
        self.steps_edit.setPlaceholderText("20:140:20")
        self.steps_edit.setToolTip(
            "Steps to compare (columns): START:END:EVERY such as 20:140:20, or a list 40, 45, 50"
        )
        self.steps_edit.setClearButtonEnabled(True)
        self.preset_button = QToolButton()
        self.preset_button.setText("Presets")
        self.preset_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.preset_button)
        for every in (20, 10, 5):
            menu.addAction(
                f"Every {every} steps", lambda _=False, n=every: self.apply_steps_preset(n)
            )
        menu.addAction("All saved steps", lambda: self.apply_steps_preset(1))
        self.preset_button.setMenu(menu)
        self.seed_edit = QLineEdit()
        self.seed_edit.setValidator(
            QRegularExpressionValidator(QRegularExpression(r"\d{1,19}"), self.seed_edit)
        )
        self.seed_edit.setToolTip("The first seed; the rows use seed, seed+1, … (a fixed seed)")
        self.batch_spin = SpinBox()
        self.batch_spin.setRange(1, 16)
        self.batch_spin.setToolTip("Images per step (rows), made as one batch")
        self.axes_label = QLabel()
        self.axes_label.setWordWrap(True)
        self.axes_label.setTextFormat(Qt.TextFormat.PlainText)
        self.axes_label.setStyleSheet(MUTED_STYLE)
        self.axes_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        box = QGroupBox("Grid")
        form = QFormLayout(box)
        row = QHBoxLayout()
        row.addWidget(self.steps_edit, 1)
        row.addWidget(self.preset_button)
        form.addRow("Steps (X)", row)
        row = QHBoxLayout()
        row.addWidget(self.seed_edit, 1)
        row.addWidget(QLabel("×"))
        row.addWidget(self.batch_spin)
        form.addRow("Seed (Y)", row)
        form.addRow(self.axes_label)
        return box

    def _prompt_edit(self, lines: int, placeholder: str) -> QPlainTextEdit:
        edit = QPlainTextEdit()
        edit.setPlaceholderText(placeholder)
        edit.setTabChangesFocus(True)
        edit.setFixedHeight(edit.fontMetrics().lineSpacing() * lines + 12)
        return edit

    def _build_prompt_box(self) -> QGroupBox:
        self.prompt_edit = self._prompt_edit(3, "Prompt with [name]")
        self.prompt_edit.setToolTip("[name] becomes NAME-STEP in each column")
        self.negative_edit = self._prompt_edit(2, "Negative prompt (the workflow uses none)")
        box = QGroupBox("Prompt")
        layout = QVBoxLayout(box)
        note = QLabel("[name] becomes each column's NAME-STEP")
        note.setStyleSheet(MUTED_STYLE)
        layout.addWidget(self.prompt_edit)
        layout.addWidget(note)
        layout.addWidget(self.negative_edit)
        return box

    def _build_sampling_box(self) -> QGroupBox:
        self.sampler_combo = ComboBox()
        self.sampler_combo.addItems(SAMPLER_NAMES)
        self.schedule_combo = ComboBox()
        self.schedule_combo.setToolTip("Schedule type (Automatic: the sampler's default)")
        self.steps_spin = SpinBox()
        self.steps_spin.setRange(1, 150)
        self.steps_spin.setToolTip("Sampling steps")
        self.cfg_spin = DoubleSpinBox()
        self.cfg_spin.setRange(1.0, 30.0)
        self.cfg_spin.setSingleStep(0.5)
        self.cfg_spin.setDecimals(1)
        self.width_spin = SizeSpinBox()
        self.height_spin = SizeSpinBox()
        box = QGroupBox("Sampling")
        form = QFormLayout(box)
        form.addRow("Sampler", hrow((self.sampler_combo, 3), (self.schedule_combo, 2)))
        form.addRow("Steps", hrow((self.steps_spin, 1), "CFG", (self.cfg_spin, 1)))
        row = hrow((self.width_spin, 1), "×", (self.height_spin, 1))
        form.addRow("Size", row)
        self.sampler_combo.currentTextChanged.connect(self._update_schedule_choices)
        return box

    def _build_models_box(self) -> QGroupBox:
        self.run_model_label = QLabel()
        self.run_model_label.setWordWrap(True)
        self.run_model_label.setTextFormat(Qt.TextFormat.PlainText)
        self.run_model_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.models_list = QListWidget()
        self.models_list.setToolTip(
            "Check other checkpoints to see each step on them too (Z: one grid per model)"
        )
        self.models_list.setMaximumHeight(110)
        self.no_models_label = QLabel(
            "No other checkpoints in the model folders (File > Model Folders adds some)."
        )
        self.no_models_label.setWordWrap(True)
        self.no_models_label.setStyleSheet(MUTED_STYLE)
        note = QLabel("Checking other models switches the size to 512×768, as the workflow does.")
        note.setWordWrap(True)
        note.setStyleSheet(MUTED_STYLE)
        box = QGroupBox("Base checkpoints (Z)")
        layout = QVBoxLayout(box)
        layout.addWidget(self.run_model_label)
        layout.addWidget(self.models_list)
        layout.addWidget(self.no_models_label)
        layout.addWidget(note)
        self.models_list.itemChanged.connect(self._models_changed)
        return box

    def _build_actions(self) -> QWidget:
        self.problem_label = error_label()
        self.make_button = QPushButton("Make grid")
        self.make_button.setDefault(True)
        self.make_button.setMinimumHeight(32)
        self.make_button.setToolTip("Queue the grid job; cells appear in the viewer as they come")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.progress_bar.setFormat("%p%")
        self.progress_bar.hide()
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setTextFormat(Qt.TextFormat.PlainText)
        self.status_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.status_label.setMinimumWidth(1)
        self.status_label.hide()
        self.grids_list = QListWidget()
        self.grids_list.setToolTip("Earlier grids of this run: double-click to open")
        self.grids_list.setMinimumHeight(60)
        self.grids_list.setWordWrap(True)
        self.grids_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.open_button = QPushButton("Open grid")
        self.open_button.setEnabled(False)

        actions = QWidget()
        layout = QVBoxLayout(actions)
        layout.setContentsMargins(6, 2, 6, 6)
        layout.addWidget(self.problem_label)
        row = QHBoxLayout()
        row.addWidget(self.make_button, 1)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        title = QHBoxLayout()
        title.addWidget(QLabel("Grids of this run"))
        title.addStretch(1)
        title.addWidget(self.open_button)
        layout.addLayout(title)
        layout.addWidget(self.grids_list, 1)

        self.make_button.clicked.connect(self.make_grid)
        self.cancel_button.clicked.connect(self.cancelRequested)
        self.open_button.clicked.connect(self._open_selected)
        # Activation is a double-click (or Enter) on most platforms.
        self.grids_list.itemActivated.connect(lambda _item: self._open_selected())
        self.grids_list.currentRowChanged.connect(lambda row: self.open_button.setEnabled(row >= 0))
        return actions

    def _connect_changes(self) -> None:
        for line in (self.steps_edit, self.seed_edit):
            line.textChanged.connect(self._changed)
        for edit in (self.prompt_edit, self.negative_edit):
            edit.textChanged.connect(self._changed)
        for spin in (self.batch_spin, self.steps_spin, self.cfg_spin):
            spin.valueChanged.connect(self._changed)
        for spin in (self.width_spin, self.height_spin):
            spin.valueChanged.connect(self._size_edited)

    # -- the controller's API ----------------------------------------------------------------

    def set_project(self, project: Project | None) -> None:
        """Show ``project``'s last grid settings; None before a project closes."""
        self._project = project
        self._stored_note = ""
        self.scroll.setEnabled(project is not None)
        self._actions.setEnabled(project is not None)
        self.hint_label.setVisible(project is None)
        if project is None:
            self.set_runs([])
            self.set_grids([])
            return
        try:
            stored = project.catalog.get_setting(SETTING_KEY)
        except ValueError:  # not even JSON (a hand-edited catalog)
            stored = "unreadable"
        spec, dropped = stored_spec(stored)
        self._stored_note = dropped_note(dropped)
        self.set_values(spec)

    def set_runs(self, runs: Sequence[RunChoice], select: int | None = None) -> None:
        """The project's training runs (newest first); keeps the selected run if it is still
        there, else selects ``select`` or the newest."""
        current = self.selected_run()
        wanted = select if select is not None else (current.id if current else None)
        self._runs = list(runs)
        blocked = self.run_combo.blockSignals(True)
        try:
            self.run_combo.clear()
            for run in self._runs:
                self.run_combo.addItem(run.label(), run.id)
            index = self.run_combo.findData(wanted) if wanted is not None else -1
            self.run_combo.setCurrentIndex(index if index >= 0 else (0 if self._runs else -1))
        finally:
            self.run_combo.blockSignals(blocked)
        if not self._runs:
            self.run_combo.setPlaceholderText("No training runs yet")
        changed = (current.id if current else None) != (
            self.selected_run().id if self.selected_run() else None
        )
        self._show_run(reset_steps=changed or not self.steps_edit.text().strip())
        if changed:
            run = self.selected_run()
            self.runChanged.emit(run.id if run else -1)

    def runs(self) -> list[RunChoice]:
        return list(self._runs)

    def select_run(self, run_id: int) -> None:
        index = self.run_combo.findData(run_id)
        if index >= 0:
            self.run_combo.setCurrentIndex(index)

    def selected_run(self) -> RunChoice | None:
        run_id = self.run_combo.currentData()
        return next((r for r in self._runs if r.id == run_id), None)

    def set_model_choices(self, paths: Sequence[str]) -> None:
        """Checkpoints for the Z axis (other than the run's own model, always the first)."""
        checked = set(self.extra_models())
        blocked = self.models_list.blockSignals(True)
        try:
            self.models_list.clear()
            for path in paths:
                item = QListWidgetItem(model_display_name(path))
                item.setData(Qt.ItemDataRole.UserRole, path)
                item.setToolTip(path)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(
                    Qt.CheckState.Checked if path in checked else Qt.CheckState.Unchecked
                )
                self.models_list.addItem(item)
        finally:
            self.models_list.blockSignals(blocked)
        self._show_models()

    def set_extra_models(self, paths: Sequence[str]) -> None:
        wanted = set(paths)
        for index in range(self.models_list.count()):
            item = self.models_list.item(index)
            state = item.data(Qt.ItemDataRole.UserRole) in wanted
            item.setCheckState(Qt.CheckState.Checked if state else Qt.CheckState.Unchecked)

    def extra_models(self) -> list[str]:
        found = []
        for index in range(self.models_list.count()):
            item = self.models_list.item(index)
            if item.checkState() == Qt.CheckState.Checked:
                found.append(str(item.data(Qt.ItemDataRole.UserRole)))
        return found

    def set_grids(self, grids: Sequence[GridRecord]) -> None:
        """The selected run's earlier grids (newest first)."""
        self.grids_list.clear()
        for grid in grids:
            item = QListWidgetItem(grid_line(grid))
            item.setData(Qt.ItemDataRole.UserRole, grid.id)
            item.setToolTip(grid_tooltip(grid))
            self.grids_list.addItem(item)
        self.open_button.setEnabled(False)

    def grid_ids(self) -> list[int]:
        return [
            int(self.grids_list.item(i).data(Qt.ItemDataRole.UserRole))
            for i in range(self.grids_list.count())
        ]

    def set_values(self, spec: GridSpec) -> None:
        """Fill the widgets from ``spec`` (its run and steps only when it names them)."""
        self._loading = True
        try:
            if spec.steps:
                self.steps_edit.setText(steps_text(spec.steps))
            self.seed_edit.setText(str(spec.seed))
            self.batch_spin.setValue(spec.batch)
            self.prompt_edit.setPlainText(spec.prompt)
            self.negative_edit.setPlainText(spec.negative_prompt)
            self.sampler_combo.setCurrentText(spec.sampler)
            self._update_schedule_choices()
            index = self.schedule_combo.findText(spec.schedule_type or AUTOMATIC)
            self.schedule_combo.setCurrentIndex(max(index, 0))
            self.steps_spin.setValue(spec.sampling_steps)
            self.cfg_spin.setValue(spec.cfg_scale)
            self.width_spin.setValue(spec.width)
            self.height_spin.setValue(spec.height)
            if spec.models:
                self.set_extra_models(spec.models[1:])
        finally:
            self._loading = False
        self._changed()

    def form(self) -> GridForm:
        """The fields as they stand (spin boxes take what is typed in them)."""
        for spin in (self.steps_spin, self.cfg_spin, self.width_spin, self.height_spin):
            spin.interpretText()
        run = self.selected_run()
        return GridForm(
            run_id=run.id if run else None,
            steps=self.steps_edit.text(),
            seed=self.seed_edit.text(),
            batch=self.batch_spin.value(),
            prompt=self.prompt_edit.toPlainText(),
            negative_prompt=self.negative_edit.toPlainText(),
            sampler=self.sampler_combo.currentText(),
            schedule_type=self._schedule_type(),
            sampling_steps=self.steps_spin.value(),
            cfg_scale=self.cfg_spin.value(),
            width=self.width_spin.value(),
            height=self.height_spin.value(),
            extra_models=tuple(self.extra_models()),
        )

    def current_spec(self) -> GridSpec:
        """The grid the widgets describe; ValueError saying what to fix."""
        return grid_spec(self.form(), self._runs)

    def apply_steps_preset(self, every: int) -> None:
        run = self.selected_run()
        if run is None or not run.steps:
            return
        self.steps_edit.setText(steps_text(steps_preset(run.steps, every)))

    def show_problems(self, problems: Sequence[str]) -> None:
        text = "\n".join(p for p in problems if p)
        self.problem_label.setText(text)
        self.problem_label.setVisible(bool(text))

    def job_queued(self, job_id: int) -> None:
        self._job_id = job_id
        self.cancel_button.setEnabled(True)
        self.progress_bar.setRange(0, 0)
        self.progress_bar.show()
        self._status(f"Grid job {job_id} queued…")

    def job_started(self, job_id: int) -> None:
        self._job_id = job_id
        self.cancel_button.setEnabled(True)
        self.progress_bar.setRange(0, 0)
        self.progress_bar.show()
        self._status(f"Grid job {job_id}: loading the model…")

    def show_progress(self, progress: Progress) -> None:
        if progress.total:
            self.progress_bar.setRange(0, progress.total)
            self.progress_bar.setValue(min(progress.done, progress.total))
        self._status(grid_progress_text(progress))

    def job_finished(self, status: str, message: str = "") -> None:
        self._job_id = -1
        self.cancel_button.setEnabled(False)
        if status == "done":
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(1)
        else:
            self.progress_bar.hide()
        self._status(status_title(status, message), error=status == "failed")

    def is_busy(self) -> bool:
        return self._job_id >= 0

    def status_text(self) -> str:
        return self.status_label.text()

    def save_settings(self) -> None:
        if self._project is None:
            return
        try:
            spec = self.current_spec()
        except ValueError:
            return
        self._project.catalog.set_setting(SETTING_KEY, settings_to_store(spec))
        self._stored_note = ""

    # -- the artist's actions ----------------------------------------------------------------

    def make_grid(self) -> None:
        """Check the settings and ask for the grid (no signal when something is wrong)."""
        if self._project is None:
            return
        try:
            spec = self.current_spec()
        except ValueError as error:
            self.show_problems([str(error)])
            return
        self.show_problems([])
        self.save_settings()
        self.gridRequested.emit(spec)

    # -- internals ---------------------------------------------------------------------------

    def _status(self, text: str, error: bool = False) -> None:
        self.status_label.setText(text)
        self.status_label.setStyleSheet("color: #d9534f;" if error else "")
        self.status_label.setVisible(bool(text))

    def _open_selected(self) -> None:
        item = self.grids_list.currentItem()
        if item is not None:
            self.openGridRequested.emit(int(item.data(Qt.ItemDataRole.UserRole)))

    def _run_changed(self) -> None:
        self._show_run(reset_steps=True)
        run = self.selected_run()
        self.runChanged.emit(run.id if run else -1)

    def _show_run(self, reset_steps: bool) -> None:
        run = self.selected_run()
        self.run_label.setText(run_text(run))
        if reset_steps and run is not None and run.steps:
            self.steps_edit.setText(steps_text(steps_preset(run.steps)))
        self._show_models()
        self._changed()

    def _show_models(self) -> None:
        run = self.selected_run()
        self.run_model_label.setText(models_text(run, len(self.extra_models())))
        # The run's own model is always the first Z value: never offered twice.
        offered = 0
        for index in range(self.models_list.count()):
            item = self.models_list.item(index)
            hidden = run is not None and item.data(Qt.ItemDataRole.UserRole) == run.model
            item.setHidden(hidden)
            offered += not hidden
        self.models_list.setVisible(offered > 0)
        self.no_models_label.setVisible(offered == 0)

    def _models_changed(self) -> None:
        if self._loading:
            return
        extra = self.extra_models()
        if extra and not self._size_for_models:
            self._size_for_models = True
            self._loading = True
            try:
                self.width_spin.setValue(CROSS_MODEL_SIZE[0])
                self.height_spin.setValue(CROSS_MODEL_SIZE[1])
            finally:
                self._loading = False
        elif not extra:
            self._size_for_models = False
        self._show_models()
        self._changed()

    def _size_edited(self) -> None:
        if not self._loading:
            self._size_for_models = bool(self.extra_models())  # the artist's size stays
        self._changed()

    def _schedule_type(self) -> str | None:
        text = self.schedule_combo.currentText()
        return None if text in ("", AUTOMATIC) else text

    def _update_schedule_choices(self) -> None:
        fill_schedule_choices(self.sampler_combo, self.schedule_combo)

    def _changed(self) -> None:
        if self._loading:
            return
        self.show_problems([self._stored_note])
        self.make_button.setEnabled(self.selected_run() is not None)
        try:
            spec = self.current_spec()
        except ValueError as error:
            self.axes_label.setStyleSheet("color: #d9534f;")
            self.axes_label.setText(str(error))
            return
        self.axes_label.setStyleSheet(MUTED_STYLE)
        self.axes_label.setText(axes_text(spec))
