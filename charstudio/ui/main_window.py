"""The main window: project menus, the thumbnail grid and the import job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressDialog,
    QWidget,
)

from charstudio import __version__
from charstudio.catalog import CatalogError, Project
from charstudio.catalog.importer import ImportReport, import_images
from charstudio.jobs import CancelToken, Progress, format_eta
from charstudio.ui.image_grid import ImageGridModel, ImageGridView
from charstudio.ui.jobs import JobHandle

MAX_RECENT = 10


def import_job(root: Path, paths: list[Path], copy: bool, token: CancelToken) -> Any:
    """The import job with its own catalog connection, opened on the worker thread."""
    with Project.open(root) as project:
        job_id = project.catalog.create_job(
            "import", {"paths": [str(p) for p in paths], "copy": copy}, status="running"
        )
        report: ImportReport = yield from import_images(
            project, paths, copy=copy, cancel=token, job_id=job_id
        )
        project.catalog.update_job(
            job_id, status="canceled" if report.canceled else "done", result=report.to_json()
        )
        return report


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings or QSettings("charstudio", "charstudio")
        self.project: Project | None = None
        self.import_handle: JobHandle | None = None
        self.setWindowTitle("charstudio")
        self.resize(1280, 820)

        self.model = ImageGridModel(self)
        self.grid = ImageGridView(self)
        self.grid.setModel(self.model)
        self.setCentralWidget(self.grid)
        self.summary = QLabel()
        self.statusBar().addPermanentWidget(self.summary)
        self._build_menus()
        self._refresh()

    # -- menus -----------------------------------------------------------------------------

    def _action(self, text: str, slot: Any, shortcut: QKeySequence | str | None = None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(slot)
        return action

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction(self._action("&New Project…", self.new_project, QKeySequence.New))
        file_menu.addAction(self._action("&Open Project…", self.choose_project, QKeySequence.Open))
        self.recent_menu = file_menu.addMenu("Open &Recent")
        file_menu.addSeparator()
        self.import_action = self._action("&Import Images…", self.choose_import, "Ctrl+I")
        self.import_folder_action = self._action(
            "Import &Folder…", self.choose_import_folder, "Ctrl+Shift+I"
        )
        file_menu.addAction(self.import_action)
        file_menu.addAction(self.import_folder_action)
        file_menu.addSeparator()
        file_menu.addAction(self._action("&Quit", self.close, QKeySequence.Quit))
        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction(self._action("&About charstudio", self.about))
        self._fill_recent_menu()

    def recent_projects(self) -> list[str]:
        value = self.settings.value("recent_projects", [])
        items = [value] if isinstance(value, str) else list(value or [])
        return [p for p in items if p]

    def _remember(self, root: Path) -> None:
        recent = [str(root)] + [p for p in self.recent_projects() if p != str(root)]
        self.settings.setValue("recent_projects", recent[:MAX_RECENT])
        self._fill_recent_menu()

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        for path in self.recent_projects():
            self.recent_menu.addAction(
                self._action(path, lambda _=False, p=path: self.open_project(Path(p)))
            )
        self.recent_menu.setEnabled(bool(self.recent_projects()))

    # -- projects --------------------------------------------------------------------------

    def new_project(self) -> None:
        folder = QFileDialog.getSaveFileName(self, "New character project folder")[0]
        if not folder:
            return
        name, ok = QInputDialog.getText(self, "New project", "Character name:")
        if not ok or not name.strip():
            return
        try:
            project = Project.create(Path(folder), name)
        except CatalogError as exc:
            QMessageBox.warning(self, "New project", str(exc))
            return
        self._set_project(project)

    def choose_project(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open character project")
        if folder:
            self.open_project(Path(folder))

    def open_project(self, root: Path) -> bool:
        try:
            project = Project.open(root)
        except CatalogError as exc:
            QMessageBox.warning(self, "Open project", str(exc))
            return False
        self._set_project(project)
        return True

    def _set_project(self, project: Project) -> None:
        if self.project is not None:
            self.project.close()
        self.project = project
        self.model.set_project(project)
        self._remember(project.root)
        self.settings.setValue("last_project", str(project.root))
        self._refresh()

    # -- import ----------------------------------------------------------------------------

    def choose_import(self) -> None:
        files = QFileDialog.getOpenFileNames(
            self, "Import images", "", "Images (*.png *.jpg *.jpeg *.webp)"
        )[0]
        if files:
            self.start_import([Path(f) for f in files])

    def choose_import_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Import a folder of images")
        if folder:
            self.start_import([Path(folder)])

    def start_import(self, paths: list[Path], copy: bool = False) -> JobHandle | None:
        if self.project is None or self.import_handle is not None:
            return None
        root = self.project.root
        handle = JobHandle(lambda token: import_job(root, paths, copy, token), self)
        dialog = QProgressDialog("Importing…", "Cancel", 0, 0, self)
        dialog.setWindowTitle("Import images")
        dialog.setWindowModality(Qt.WindowModal)
        dialog.setMinimumDuration(300)
        dialog.canceled.connect(handle.cancel)
        handle.progress.connect(lambda event: self._import_progress(dialog, event))
        handle.succeeded.connect(self._import_done)
        handle.failed.connect(lambda message: QMessageBox.critical(self, "Import", message))
        handle.finished.connect(lambda: self._import_finished(dialog))
        self.import_handle = handle
        self._refresh()
        handle.start()
        return handle

    def _import_progress(self, dialog: QProgressDialog, event: Progress) -> None:
        if event.total:
            dialog.setMaximum(event.total)
            dialog.setValue(event.done)
        rate = f"{event.rate:.0f} images/s · " if event.rate else ""
        dialog.setLabelText(
            f"Importing {event.done} of {event.total or '?'}\n{rate}ETA {format_eta(event.eta_s)}"
        )

    def _import_done(self, report: ImportReport) -> None:
        self.model.reload()
        text = (
            f"Imported {report.added} · duplicates {report.duplicates} · "
            f"relinked {report.relinked} · failed {len(report.failed)}"
        )
        if report.canceled:
            text += " (canceled)"
        self.statusBar().showMessage(text, 15000)
        if report.failed:
            details = "\n".join(f"{f['path']}: {f['error']}" for f in report.failed[:50])
            box = QMessageBox(QMessageBox.Warning, "Import", text, parent=self)
            box.setDetailedText(details)
            box.open()

    def _import_finished(self, dialog: QProgressDialog) -> None:
        dialog.reset()
        dialog.deleteLater()
        self.import_handle = None
        self._refresh()

    # -- misc ------------------------------------------------------------------------------

    def _refresh(self) -> None:
        has_project = self.project is not None
        busy = self.import_handle is not None
        self.import_action.setEnabled(has_project and not busy)
        self.import_folder_action.setEnabled(has_project and not busy)
        if self.project is None:
            self.setWindowTitle("charstudio")
            self.summary.setText("No project open: File > New Project or Open Project")
            return
        self.setWindowTitle(f"{self.project.name} — charstudio")
        counts = self.project.catalog.decision_counts()
        total = sum(counts.values())
        self.summary.setText(
            f"picked {counts['pick']} · rejected {counts['reject']} · "
            f"unreviewed {counts['none']} · of {total}"
        )

    def about(self) -> None:
        QMessageBox.about(
            self,
            "About charstudio",
            f"charstudio {__version__}\nA workstation for consistent Stable Diffusion 1.5 "
            "characters.",
        )

    def closeEvent(self, event: Any) -> None:
        if self.import_handle is not None:
            self.import_handle.cancel()
            self.import_handle.wait()
        self.model.set_project(None)
        if self.project is not None:
            self.project.close()
            self.project = None
        super().closeEvent(event)
