"""Connects the Compare panel and the grid viewer to the job queue and the catalog.

The panel describes a grid; this controller queues the "grid" job on the project's GPU worker,
opens the grid in the viewer as soon as the job has recorded it and feeds it each finished cell,
then reloads it with its scores and suggestion when the job ends. It reopens earlier grids,
queues the viewer's "Refine" grids (every 5 steps inside the selected range, same seed and
prompt) and exports the chosen step with :func:`charstudio.training.export.export_embedding`,
remembering the artist's A1111/ComfyUI folders in the project. It never loads a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QObject, QRegularExpression, Qt, Signal
from PySide6.QtGui import QRegularExpressionValidator
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from charstudio.catalog import Project
from charstudio.jobs import Progress
from charstudio.jobs.queue import QueuedJob
from charstudio.presenters.compare import (
    KIND,
    cancel_queued_grids,
    finish_text,
    finished_grid,
    queued_text,
    refine_plan,
    run_choices,
)
from charstudio.training import records
from charstudio.training.checkpoint_grid import GridSpec
from charstudio.training.export import EXPORT_FOLDERS_SETTING, ExportResult
from charstudio.training.grid_records import grid_for_job, list_grids
from charstudio.ui.compare_panel import ComparePanel
from charstudio.ui.dialog_folders import start_folder
from charstudio.ui.grid_viewer import GridViewer
from charstudio.ui.queue_worker import QueueWorker
from charstudio.ui.widgets import MUTED_STYLE

__all__ = ["KIND", "CompareController", "ExportDialog", "embeddings_folder"]


def embeddings_folder(picked: Path, tool: str) -> Path:
    """The embeddings folder of an install the artist picked: A1111 reads ``embeddings/``,
    ComfyUI ``models/embeddings/``. A folder named ``embeddings`` is taken as it is."""
    if picked.name.lower() == "embeddings":
        return picked
    if tool == "comfyui":
        return picked / "models" / "embeddings" if (picked / "models").is_dir() else picked
    return picked / "embeddings" if (picked / "embeddings").is_dir() else picked


class ExportDialog(QDialog):
    """Name and folders of an export: the project's embeddings/ always, plus the checked
    A1111/ComfyUI folders (remembered for next time unless unticked)."""

    def __init__(
        self,
        label: str,
        name: str,
        remembered: Sequence[str],
        project_folder: Path,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Export {label}")
        self.name_edit = QLineEdit(name)
        self.name_edit.setValidator(
            QRegularExpressionValidator(QRegularExpression(r"[A-Za-z0-9_\-.]+"), self.name_edit)
        )
        self.name_edit.setToolTip("The file name, and the word prompts use for the embedding")
        self.files_label = QLabel()
        self.files_label.setStyleSheet(MUTED_STYLE)
        self.files_label.setWordWrap(True)
        project_label = QLabel(f"Always into the project's embeddings folder: {project_folder}")
        project_label.setStyleSheet(MUTED_STYLE)
        project_label.setWordWrap(True)
        project_label.setTextFormat(Qt.TextFormat.PlainText)
        self.folders_list = QListWidget()
        self.folders_list.setToolTip("Checked folders get the files too")
        for folder in remembered:
            self.add_folder(folder)
        self.add_a1111_button = QPushButton("Add A1111 folder…")
        self.add_a1111_button.setToolTip(
            "An AUTOMATIC1111 install (its embeddings folder is used) or its embeddings folder"
        )
        self.add_comfy_button = QPushButton("Add ComfyUI folder…")
        self.add_comfy_button.setToolTip(
            "A ComfyUI install (its models/embeddings folder is used) or that folder itself"
        )
        self.remember_check = QCheckBox("Remember the checked folders for the next export")
        self.remember_check.setChecked(True)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Export")

        layout = QVBoxLayout(self)
        form = QFormLayout()
        form.addRow("Name", self.name_edit)
        layout.addLayout(form)
        layout.addWidget(self.files_label)
        layout.addWidget(project_label)
        layout.addWidget(QLabel("Also into:"))
        layout.addWidget(self.folders_list)
        row = QHBoxLayout()
        row.addWidget(self.add_a1111_button)
        row.addWidget(self.add_comfy_button)
        row.addStretch(1)
        layout.addLayout(row)
        layout.addWidget(self.remember_check)
        layout.addWidget(self.buttons)
        self.resize(520, 360)

        self.name_edit.textChanged.connect(self._name_changed)
        self.add_a1111_button.clicked.connect(lambda: self._pick("a1111"))
        self.add_comfy_button.clicked.connect(lambda: self._pick("comfyui"))
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self._name_changed()

    def add_folder(self, folder: str | Path, checked: bool = True) -> None:
        text = str(folder)
        for index in range(self.folders_list.count()):
            if self.folders_list.item(index).text() == text:
                self.folders_list.item(index).setCheckState(Qt.CheckState.Checked)
                return
        item = QListWidgetItem(text)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
        self.folders_list.addItem(item)

    def folders(self) -> list[str]:
        """The checked folders."""
        items = (self.folders_list.item(i) for i in range(self.folders_list.count()))
        return [item.text() for item in items if item.checkState() == Qt.CheckState.Checked]

    def name(self) -> str:
        return self.name_edit.text().strip()

    def remember(self) -> bool:
        return self.remember_check.isChecked()

    def _name_changed(self) -> None:
        name = self.name()
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(bool(name))
        self.files_label.setText(
            f"Writes {name}.pt (A1111) and {name}.safetensors (ComfyUI, diffusers); prompts "
            f"then use {name}. A file of that name is replaced."
            if name
            else "Give the embedding a name."
        )

    def _pick(self, tool: str) -> None:
        title = "A1111 install or embeddings folder" if tool == "a1111" else "ComfyUI folder"
        picked = QFileDialog.getExistingDirectory(self, title, start_folder())
        if picked:
            self.add_folder(embeddings_folder(Path(picked), tool))


class CompareController(QObject):
    message = Signal(str)  # one-line news for the status bar
    showViewer = Signal()  # a grid started or was reopened: bring the viewer to the front
    exported = Signal(object)  # ExportResult

    def __init__(
        self, panel: ComparePanel, viewer: GridViewer, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.panel = panel
        self.viewer = viewer
        self.project: Project | None = None
        self.worker: QueueWorker | None = None
        self.current_job: int | None = None  # the grid job running now
        self._live_grid: int | None = None  # its grid, once the job recorded it
        panel.gridRequested.connect(self.submit)
        panel.cancelRequested.connect(self.cancel)
        panel.runChanged.connect(lambda _run_id: self.refresh_grids())
        panel.openGridRequested.connect(self.open_grid)
        panel.refreshRequested.connect(self.refresh)
        viewer.refineRequested.connect(self.refine)
        viewer.exportRequested.connect(self.ask_export)
        viewer.chosenStepChanged.connect(lambda _grid, _step: self.refresh_grids())
        viewer.message.connect(self.message)

    def set_project(self, project: Project | None, worker: QueueWorker | None) -> None:
        self.panel.set_project(project)
        self.viewer.set_project(project)
        self.project, self.worker = project, worker
        self.current_job = self._live_grid = None
        if project is not None:
            self.refresh()

    # -- what the panel lists ----------------------------------------------------------------

    def refresh(self) -> None:
        from charstudio.engine.runner import find_checkpoints

        if self.project is None:
            return
        self.panel.set_model_choices([str(p) for p in find_checkpoints(self.project)])
        self.refresh_runs()
        self.refresh_grids()

    def refresh_runs(self, select: int | None = None) -> None:
        if self.project is None:
            return
        self.panel.set_runs(run_choices(self.project), select=select)

    def refresh_grids(self) -> None:
        run = self.panel.selected_run()
        if self.project is None or run is None:
            self.panel.set_grids([])
            return
        self.panel.set_grids(list_grids(self.project.catalog, run.id))

    # -- grids -------------------------------------------------------------------------------

    def submit(self, spec: GridSpec) -> int | None:
        """Queue a grid job; the viewer shows the grid once the job starts it."""
        if self.project is None or self.worker is None:
            return None
        job_id = self.worker.submit(self.project, KIND, spec.to_json())
        if self.current_job is None:
            self.panel.job_queued(job_id)
        self.message.emit(queued_text(job_id, spec))
        return job_id

    def refine(self, start: int, end: int) -> int | None:
        """A grid of the open grid's settings every 5 steps from ``start`` to ``end`` (the
        steps the run saved)."""
        spec = self.viewer.spec()
        if self.project is None or spec is None:
            return None
        plan = refine_plan(self.project, spec, start, end)
        if plan.spec is None:
            self.message.emit(plan.problem)
            return None
        job_id = self.submit(plan.spec)
        note = plan.note(start, end, job_id) if job_id is not None else ""
        if note:
            self.message.emit(note)
        return job_id

    def open_grid(self, grid_id: int) -> None:
        if self.project is None:
            return
        try:
            self.viewer.load_grid(self.project, grid_id)
        except KeyError as error:
            self.message.emit(str(error).strip("'\""))
            return
        self.showViewer.emit()

    def cancel(self) -> None:
        """Stop the running grid job (its cells so far are kept), else the queued ones."""
        if self.project is None or self.worker is None:
            return
        if self.current_job is not None:
            self.worker.cancel_current()
            return
        canceled = cancel_queued_grids(self.project)
        if canceled:
            self.panel.job_finished("canceled", f"removed from the queue: job {canceled[0]}")
            self.message.emit(f"Grid job {', '.join(map(str, canceled))} canceled")

    # -- export ------------------------------------------------------------------------------

    def ask_export(self, run_id: int, step: int) -> ExportResult | None:
        """The export dialog for ``step`` of ``run_id``, then the export."""
        if self.project is None:
            return None
        try:
            run = records.get_run(self.project.catalog, run_id)
        except KeyError as error:
            self.message.emit(str(error).strip("'\""))
            return None
        remembered = self.project.catalog.get_setting(EXPORT_FOLDERS_SETTING, []) or []
        dialog = ExportDialog(
            f"{run.name}-{step}",
            run.name,
            [str(f) for f in remembered],
            self.project.root / "embeddings",
            self.viewer,
        )
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return None
        return self.export(
            run_id, step, dialog.folders(), name=dialog.name(), remember=dialog.remember()
        )

    def export(
        self,
        run_id: int,
        step: int,
        folders: Sequence[str | Path],
        *,
        name: str | None = None,
        remember: bool = False,
    ) -> ExportResult | None:
        """Write NAME.pt and NAME.safetensors into the project's embeddings/ and ``folders``;
        with ``remember``, ``folders`` become the project's export folders."""
        from charstudio.engine.embeddings import EmbeddingError
        from charstudio.presenters.compare import lora_folders, run_kind
        from charstudio.training.export import export_embedding
        from charstudio.training.lora_export import export_lora

        if self.project is None:
            return None
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)  # torch loads on first use
        try:
            if run_kind(self.project, run_id) == "lora":
                result = export_lora(
                    self.project, run_id, step=step, folders=lora_folders(folders), name=name
                )
            else:
                result = export_embedding(self.project, run_id, step, folders=folders, name=name)
        except (ValueError, KeyError, OSError, EmbeddingError) as error:
            text = f"Export failed: {str(error).strip(chr(39) + chr(34))}"
            self.viewer.show_note(text)
            self.message.emit(text)
            return None
        finally:
            QApplication.restoreOverrideCursor()
        if remember:
            self.project.catalog.set_setting(EXPORT_FOLDERS_SETTING, [str(f) for f in folders])
        grid_id = self.viewer.grid_id()
        if grid_id is not None:
            self.viewer.load_grid(self.project, grid_id)  # the export marks the step chosen
        places = 1 + len(folders)
        written = ", ".join(sorted({Path(f).name for f in result.files if Path(f).suffix}))
        self.viewer.show_note(
            f"Exported step {step} as {written} into "
            f"{places} folder{'s' if places != 1 else ''}:\n" + "\n".join(result.files),
        )
        self.message.emit(f"Exported {result.name} (step {step}): {len(result.files)} files")
        self.refresh_grids()
        self.exported.emit(result)
        return result

    # -- the worker's signals (the window forwards them; True = handled here) ----------------

    def job_started(self, job: QueuedJob) -> bool:
        if job.kind != KIND:
            return False
        self.current_job, self._live_grid = job.id, None
        self.panel.job_started(job.id)
        return True

    def job_progress(self, job: QueuedJob, event: Progress) -> bool:
        if job.kind != KIND:
            return False
        self.panel.show_progress(event)
        if self.project is None:
            return True
        if self._live_grid is None:
            grid_id = event.detail.get("grid_id")
            if not isinstance(grid_id, int):
                grid_id = grid_for_job(self.project.catalog, job.id)
            if grid_id is not None:
                self._live_grid = grid_id
                self.viewer.load_grid(self.project, grid_id)  # the cells recorded so far
                self.refresh_grids()
                self.showViewer.emit()
                return True
        cell = event.detail.get("cell")
        if isinstance(cell, dict) and self.viewer.grid_id() == self._live_grid:
            self.viewer.add_cell(cell)
        return True

    def job_finished(self, job: QueuedJob) -> bool:
        if job.kind != KIND:
            return False
        result, grid_id = finished_grid(self.project, job.id, self._live_grid)
        if job.id == self.current_job:
            self.current_job = None
        self._live_grid = None
        if self.project is not None and grid_id is not None:
            shown = self.viewer.grid_id()
            if shown in (None, grid_id):
                self.viewer.load_grid(self.project, int(grid_id))  # scores and suggestion
                if shown is None:
                    self.showViewer.emit()
        text = finish_text(job.status, job.error, result, grid_id)
        self.panel.job_finished(job.status, text)
        self.message.emit(f"Grid job {job.id}: {text}" if text else f"Grid job {job.id} ended")
        self.refresh_grids()
        return True
