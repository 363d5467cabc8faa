"""The main window: filters | grid (or loupe/survey) | info, with the culling keys."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QItemSelectionModel, QObject, QPoint, QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressDialog,
    QSlider,
    QStackedWidget,
    QWidget,
)

from charstudio import __version__
from charstudio.analysis import view
from charstudio.analysis.clustering import DEFAULT_IDENTITY_DISTANCE
from charstudio.analysis.view import AnalysisIndex
from charstudio.catalog import CatalogError, ImageRecord, Project
from charstudio.catalog.decisions import Step
from charstudio.catalog.queries import LOOKALIKE_SORT, ImageFilter
from charstudio.jobs import Progress
from charstudio.jobs.queue import JobQueue, QueuedJob, job_result
from charstudio.presenters import job_recovery
from charstudio.presenters.job_recovery import QuitChoice, RecoveryChoice
from charstudio.presenters.progress_text import job_dialog_text
from charstudio.presenters.send_to_generate import request_from_image
from charstudio.ui import job_recovery_dialog
from charstudio.ui.analysis_controller import AnalysisController
from charstudio.ui.compare_controller import CompareController
from charstudio.ui.compare_panel import ComparePanel
from charstudio.ui.culling import CULL_KEYS, cheat_sheet_html
from charstudio.ui.filter_panel import FilterPanel
from charstudio.ui.generate_controller import GenerateController
from charstudio.ui.generate_panel import GeneratePanel
from charstudio.ui.grid_viewer import GridViewer
from charstudio.ui.image_grid import MAX_CELL, MIN_CELL, ImageGridModel, ImageGridView
from charstudio.ui.image_menu import build_image_menu, reveal_in_file_manager
from charstudio.ui.info_panel import InfoPanel
from charstudio.ui.lora_controller import LoraController
from charstudio.ui.lora_panel import LoraPanel
from charstudio.ui.loupe import LoupeItem, LoupeView
from charstudio.ui.new_project_dialog import NewProjectDialog
from charstudio.ui.queue_worker import QueueWorker
from charstudio.ui.run_view import RunView
from charstudio.ui.survey import SurveyView
from charstudio.ui.train_controller import TrainController
from charstudio.ui.train_panel import TrainPanel
from charstudio.ui.widgets import FieldSpinBox

MAX_RECENT = 10
JOB_TITLES = {"import": "Import images", "export": "Export picks"}
GRID, LOUPE, SURVEY, CHECKPOINTS, CELL, RUN = 0, 1, 2, 3, 4, 5
FILTER_SETTING = "grid_filter"
GOAL_SETTING = "goal_picks"
COLLAPSE_SETTING = "collapse_stacks"
IDENTITY_SETTING = "identity_distance"
CELL_SIZE_SETTING = "grid/cell_size"  # per user, not per project: a habit, like Lightroom's


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # Worker threads (thumbnails, jobs) hold the GIL in turns of this length; the default
        # 5 ms per turn shows up as GUI stalls, 1 ms keeps key presses and scrolling prompt.
        sys.setswitchinterval(0.001)
        self.settings = settings or QSettings("charstudio", "charstudio")
        self.project: Project | None = None
        self.queue_worker: QueueWorker | None = None
        self._queue_dialog: QProgressDialog | None = None
        self._caps_lock = False
        self.setWindowTitle("charstudio")
        # 1440 × 900, or less on a smaller screen (a 1366 × 768 laptop): never wider than it.
        screen = QApplication.primaryScreen()
        room = screen.availableGeometry() if screen is not None else None
        width, height = 1440, 900
        if room is not None and room.width() > 0:
            width, height = min(width, room.width()), min(height, room.height())
        self.resize(width, height)

        self.model = ImageGridModel(self)
        self.grid = ImageGridView(self)
        self.grid.setModel(self.model)
        self.loupe = LoupeView(parent=self)
        self.survey = SurveyView(parent=self)
        self.grid_viewer = GridViewer(self)  # a training run's checkpoint grid
        self.cell_loupe = LoupeView(parent=self)  # one grid cell full size (not a catalog image)
        self.run_view = RunView(self)  # a training run: loss, previews, checkpoints
        self._cell_from = CHECKPOINTS  # the page Esc in the cell loupe goes back to
        self.stack = QStackedWidget(self)
        pages = (self.grid, self.loupe, self.survey, self.grid_viewer, self.cell_loupe)
        for page in (*pages, self.run_view):
            self.stack.addWidget(page)
        self.setCentralWidget(self.stack)

        self.filters = FilterPanel(self)
        self.info = InfoPanel(self)
        self.generate_panel = GeneratePanel(self)
        self.train_panel = TrainPanel(self)
        self.lora_panel = LoraPanel(self)
        self.compare_panel = ComparePanel(self)
        self.docks: dict[str, QDockWidget] = {}
        for title, widget, area in (
            ("Library", self.filters, Qt.LeftDockWidgetArea),
            ("Info", self.info, Qt.RightDockWidgetArea),
            ("Generate", self.generate_panel, Qt.RightDockWidgetArea),
            ("Train", self.train_panel, Qt.RightDockWidgetArea),
            ("LoRA", self.lora_panel, Qt.RightDockWidgetArea),
            ("Compare", self.compare_panel, Qt.RightDockWidgetArea),
        ):
            dock = QDockWidget(title, self)
            dock.setObjectName(title)
            dock.setWidget(widget)
            dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable)
            self.addDockWidget(area, dock)
            self.docks[title] = dock
        self.tabifyDockWidget(self.docks["Info"], self.docks["Generate"])
        self.tabifyDockWidget(self.docks["Generate"], self.docks["Train"])
        self.tabifyDockWidget(self.docks["Train"], self.docks["LoRA"])
        self.tabifyDockWidget(self.docks["LoRA"], self.docks["Compare"])
        self.docks["Info"].raise_()
        self.info.setMinimumWidth(300)
        self.filters.setMinimumWidth(220)
        self.generation = GenerateController(self.generate_panel, self)
        self.generation.imagesAdded.connect(self._images_added)
        self.generation.message.connect(lambda text: self.statusBar().showMessage(text, 15000))
        self.training = TrainController(self.train_panel, self.run_view, self)
        self.train_panel.runSelected.connect(
            lambda run_id: self._show_run_view(run_id) if run_id >= 0 else None
        )
        self.train_panel.trainRequested.connect(lambda _params: self._show_run_view(-1))
        self.run_view.closeRequested.connect(self.show_grid)
        self.lora = LoraController(self.lora_panel, self.run_view, self)
        self.lora.message.connect(lambda text: self.statusBar().showMessage(text, 15000))
        self.lora.runStarted.connect(lambda _run: self.stack.setCurrentIndex(RUN))
        self.lora.runFinished.connect(lambda run_id: self.comparing.refresh_runs(run_id))
        self.run_view.previewOpened.connect(self._open_preview)
        self.run_view.compareRequested.connect(self._compare_run)
        self.training.message.connect(lambda text: self.statusBar().showMessage(text, 15000))
        self.comparing = CompareController(self.compare_panel, self.grid_viewer, self)
        self.comparing.message.connect(lambda text: self.statusBar().showMessage(text, 15000))
        self.comparing.showViewer.connect(self.show_checkpoints)
        self.training.runFinished.connect(lambda run_id: self.comparing.refresh_runs(run_id))
        self.grid_viewer.openImage.connect(self._open_cell)
        self.grid_viewer.closeRequested.connect(self.show_grid)
        self.cell_loupe.closeRequested.connect(self._close_cell)
        self.analysis = AnalysisController(self)
        self.analysis.analysisChanged.connect(self._load_analysis)
        self.analysis.weightsChanged.connect(self._load_analysis)
        self.analysis.message.connect(lambda text: self.statusBar().showMessage(text, 10000))
        self.filters.weightsRequested.connect(self.show_face_weights)
        self.filters.identityDistanceChanged.connect(self._identity_distance_changed)
        self.info.weightsRequested.connect(self.show_face_weights)
        # "Look-alike" with no picks compares with the selection.
        self.model.selection = self.selected_ids

        self.summary = QLabel()
        self.statusBar().addPermanentWidget(self.analysis.status)
        self.statusBar().addPermanentWidget(self.summary)
        self._build_actions()
        self._build_toolbar()
        self._build_menus()

        self.grid.selectionModel().currentChanged.connect(lambda *_: self._show_info())
        self.grid.doubleClicked.connect(lambda *_: self.show_loupe())
        self.grid.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.grid.customContextMenuRequested.connect(self._show_image_menu)
        self.filters.filterChanged.connect(self.set_filter)
        self.loupe.currentChanged.connect(self._follow_key)
        self.survey.focusedChanged.connect(self._follow_key)
        self.loupe.closeRequested.connect(self.show_grid)
        self.survey.closeRequested.connect(self.show_grid)
        self.survey.candidateStepRequested.connect(self._step_candidate)
        app = QApplication.instance()
        if app is not None:
            app.installEventFilter(self)  # Caps Lock toggles auto-advance, as in Lightroom
        self._refresh()

    # -- actions, menus, toolbar -----------------------------------------------------------

    def _action(self, text: str, slot: Any, shortcut: Any = None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            shortcuts = shortcut if isinstance(shortcut, list) else [shortcut]
            action.setShortcuts([QKeySequence(s) for s in shortcuts])
            action.setShortcutContext(Qt.WindowShortcut)
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    def _build_actions(self) -> None:
        self.cull_actions: list[QAction] = []
        for cull in CULL_KEYS:
            for advance in (False, True):
                key = f"Shift+{cull.key}" if advance else cull.key
                label = cull.label + (" and advance" if advance else "")
                action = self._action(
                    label,
                    lambda _=False, c=cull, a=advance: self.decide(c.label, a, **c.fields),
                    key,
                )
                if not advance:
                    action.setData(cull.fields)  # the right-click menu groups by it
                    self.cull_actions.append(action)
        self.undo_action = self._action("Undo", self.undo, QKeySequence.Undo)
        self.redo_action = self._action("Redo", self.redo, ["Ctrl+Shift+Z", "Ctrl+Y"])
        self.loupe_action = self._action("Loupe", self.show_loupe, ["E", "Return", "Enter"])
        self.compare_action = self._action("Compare", lambda: self.show_survey(2), "C")
        self.survey_action = self._action("Survey", lambda: self.show_survey(8), "N")
        self.grid_action = self._action("Grid", self.show_grid, "G")
        self.help_action = self._action("Keyboard shortcuts", self.show_cheat_sheet, "?")
        self.auto_advance = QAction("Auto-advance", self)
        self.auto_advance.setCheckable(True)
        self.auto_advance.setToolTip("Move to the next image after each decision (Caps Lock)")
        self.use_picks_action = self._action("Use Picks as Training Set", self.use_picks)
        self.export_picks_action = self._action("Export Picks…", self.choose_export)
        self.generate_action = self._action("Generate…", self.show_generate, "Ctrl+G")
        self.generate_action.setToolTip("Open the Generate panel (Ctrl+G)")
        self.train_action = self._action("Train…", self.show_train, "Ctrl+T")
        self.train_action.setToolTip("Open the Train panel: an embedding from the picks (Ctrl+T)")
        self.compare_checkpoints_action = self._action(
            "Compare Checkpoints…", self.show_compare, "Ctrl+K"
        )
        self.compare_checkpoints_action.setToolTip(
            "Compare a training run's steps in a grid and export the best (Ctrl+K)"
        )
        self.model_folders_action = self._action("Model &Folders…", self.show_model_folders)
        self.model_folders_action.setToolTip(
            "The folders searched for checkpoints, LoRAs and embeddings (add an A1111 install's)"
        )
        self.refresh_models_action = self._action("&Refresh Models", self.refresh_models, "F5")
        self.refresh_models_action.setToolTip(
            "Look again for checkpoints, LoRAs and embeddings copied into the model folders (F5)"
        )
        self.new_action = self._action("&New Project…", self.new_project, QKeySequence.New)
        self.open_action = self._action("&Open Project…", self.choose_project, QKeySequence.Open)
        self.import_action = self._action("&Import Images…", self.choose_import, "Ctrl+I")
        self.import_folder_action = self._action(
            "Import &Folder…", self.choose_import_folder, "Ctrl+Shift+I"
        )
        # The face analysis.
        self.analyze_action = self._action("Analyze Faces", self.analyze_faces)
        self.analyze_action.setToolTip("Detect faces, flags and near-duplicates of new images")
        self.reject_flagged_action = self._action(
            "Reject Flagged as Off-prompt", self.reject_flagged
        )
        self.reject_flagged_action.setToolTip(
            "Reject every unflagged image with a face flag as off-prompt (one undo step)"
        )
        self.keep_best_action = self._action("Keep the Best of Each Stack", self.keep_best)
        self.keep_best_action.setToolTip(
            "Reject the other images of every near-duplicate stack as not best (one undo step)"
        )
        self.similar_action = self._action(
            "Sort by Similarity to Selection", self.sort_by_similarity, "Ctrl+Shift+S"
        )
        self.stack_action = self._action("Expand/Collapse Stack", self.toggle_stack, "S")
        self.collapse_action = QAction("Collapse Duplicate Stacks", self)
        self.collapse_action.setCheckable(True)
        self.collapse_action.setChecked(True)
        self.collapse_action.toggled.connect(self.set_collapse_stacks)
        self.weights_action = self._action("Face Recognition Weights…", self.show_face_weights)
        self.resume_held_action = self._action("Resume Interrupted Jobs…", self.resume_held_jobs)
        self.resume_held_action.setToolTip(
            "Resume, keep waiting or discard the jobs held when the project opened"
        )
        self.resume_held_action.setEnabled(False)

    def _build_toolbar(self) -> None:
        bar = self.addToolBar("Culling")
        bar.setObjectName("culling")
        views = QActionGroup(self)
        for action in (
            self.grid_action,
            self.loupe_action,
            self.compare_action,
            self.survey_action,
        ):
            bar.addAction(action)
            views.addAction(action)
        bar.addSeparator()
        bar.addAction(self.auto_advance)
        bar.addSeparator()
        bar.addWidget(QLabel(" Size "))
        self.size_slider = QSlider(Qt.Horizontal)
        self.size_slider.setRange(MIN_CELL, MAX_CELL)
        stored = self.settings.value(CELL_SIZE_SETTING)
        if stored is not None:
            # A hand-edited settings file keeps the default.
            with contextlib.suppress(TypeError, ValueError):
                self.grid.set_cell_size(int(stored))
        self.size_slider.setValue(self.grid.cell_size())
        self.size_slider.setMaximumWidth(160)
        self.size_slider.valueChanged.connect(self.grid.set_cell_size)
        self.grid.cellSizeChanged.connect(self.size_slider.setValue)
        self.grid.cellSizeChanged.connect(
            lambda size: self.settings.setValue(CELL_SIZE_SETTING, size)
        )
        bar.addWidget(self.size_slider)
        bar.addSeparator()
        bar.addWidget(QLabel(" Goal: picks "))
        self.goal = FieldSpinBox()
        self.goal.committed.connect(self.grid.setFocus)
        self.goal.setRange(0, 10000)
        self.goal.setSpecialValueText("none")
        self.goal.valueChanged.connect(self._goal_changed)
        bar.addWidget(self.goal)
        bar.addSeparator()
        bar.addAction(self.use_picks_action)
        bar.addAction(self.export_picks_action)
        bar.addSeparator()
        bar.addAction(self.generate_action)
        bar.addAction(self.train_action)
        bar.addAction(self.compare_checkpoints_action)

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction(self.new_action)
        file_menu.addAction(self.open_action)
        self.recent_menu = file_menu.addMenu("Open &Recent")
        file_menu.addSeparator()
        file_menu.addAction(self.import_action)
        file_menu.addAction(self.import_folder_action)
        file_menu.addAction(self.export_picks_action)
        file_menu.addSeparator()
        file_menu.addAction(self.model_folders_action)
        file_menu.addSeparator()
        file_menu.addAction(self._action("&Quit", self.close, QKeySequence.Quit))
        edit_menu = self.menuBar().addMenu("&Edit")
        edit_menu.addAction(self.undo_action)
        edit_menu.addAction(self.redo_action)
        photo_menu = self.menuBar().addMenu("&Photo")
        for action in self.cull_actions:
            photo_menu.addAction(action)
        photo_menu.addSeparator()
        photo_menu.addAction(self.auto_advance)
        photo_menu.addAction(self.use_picks_action)
        photo_menu.addSeparator()
        for action in (
            self.analyze_action,
            self.reject_flagged_action,
            self.keep_best_action,
            self.stack_action,
            self.similar_action,
        ):
            photo_menu.addAction(action)
        view_menu = self.menuBar().addMenu("&View")
        for action in (
            self.grid_action,
            self.loupe_action,
            self.compare_action,
            self.survey_action,
        ):
            view_menu.addAction(action)
        view_menu.addSeparator()
        view_menu.addAction(self.collapse_action)
        view_menu.addAction(self.refresh_models_action)
        view_menu.addSeparator()
        view_menu.addAction(self.generate_action)
        view_menu.addAction(self.train_action)
        view_menu.addAction(self.compare_checkpoints_action)
        jobs_menu = self.menuBar().addMenu("&Jobs")
        jobs_menu.addAction(self.resume_held_action)
        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction(self.help_action)
        help_menu.addAction(self.weights_action)
        help_menu.addAction(self._action("&About charstudio", self.about))
        self._fill_recent_menu()

    # -- recent projects -------------------------------------------------------------------

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
            action = QAction(path, self.recent_menu)
            action.triggered.connect(lambda _=False, p=path: self.open_project(Path(p)))
            self.recent_menu.addAction(action)
        self.recent_menu.setEnabled(bool(self.recent_projects()))

    # -- projects --------------------------------------------------------------------------

    def new_project(self) -> None:
        dialog = NewProjectDialog(Path(str(self.settings.value("projects_dir", Path.home()))), self)
        if dialog.exec() != NewProjectDialog.Accepted:
            return
        try:
            project = Project.create(
                dialog.project_folder(), dialog.name.text(), dialog.token_text()
            )
        except CatalogError as exc:
            QMessageBox.warning(self, "New project", str(exc))
            return
        self.settings.setValue("projects_dir", dialog.location.text())
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
            self.generation.set_project(None, None)  # saves the panel's settings first
            self.training.set_project(None, None)
            self.lora.set_project(None, None)
            self.comparing.set_project(None, None)
            self.analysis.set_project(None, None)
            self.project.close()
        self.project = project
        self._connect_queue(project.root)
        # Unfinished jobs wait for the artist's answer, asked once the window shows.
        interrupted = [job.id for job in JobQueue(project).jobs(job_recovery.INTERRUPTED)]
        assert self.queue_worker is not None
        if interrupted:
            self.queue_worker.keep_out(set(interrupted))
            QTimer.singleShot(0, self, lambda: self._ask_about_interrupted(project, interrupted))
        self._update_held_jobs()
        self.generation.set_project(project, self.queue_worker)
        self.training.set_project(project, self.queue_worker)
        self.lora.set_project(project, self.queue_worker)
        self._lora_model_choices()
        self.comparing.set_project(project, self.queue_worker)
        self.show_grid()
        catalog = project.catalog
        collapse = bool(catalog.get_setting(COLLAPSE_SETTING, True))
        self.collapse_action.blockSignals(True)
        self.collapse_action.setChecked(collapse)
        self.collapse_action.blockSignals(False)
        self.model.collapse_stacks = collapse
        distance = float(catalog.get_setting(IDENTITY_SETTING, DEFAULT_IDENTITY_DISTANCE))
        self.model.identity_distance = distance
        self.filters.set_identity_distance(distance)
        index = AnalysisIndex.from_catalog(catalog)
        image_filter = ImageFilter.from_json(catalog.get_setting(FILTER_SETTING))
        image_filter = self._show_identity_groups(index, image_filter)
        self.filters.set_axes(catalog.sweep_axes())
        self.filters.set_filter(image_filter)
        self.model.set_analysis(index, apply=False)
        self.model.set_project(project, image_filter)
        self._update_lookalike()
        self.analysis.set_project(project, self.queue_worker)
        self.goal.blockSignals(True)
        self.goal.setValue(int(project.catalog.get_setting(GOAL_SETTING, 0) or 0))
        self.goal.blockSignals(False)
        self._remember(project.root)
        self.settings.setValue("last_project", str(project.root))
        if self.model.rowCount():
            self._focus_row(0)
        if not project.catalog.image_count():
            self.docks["Generate"].raise_()  # a new character starts with generating
        self._refresh()

    # -- focus and selection ---------------------------------------------------------------

    def current_id(self) -> int | None:
        if self.stack.currentIndex() in (CHECKPOINTS, CELL, RUN):
            return None  # grid cells are not catalog images: culling keys do nothing there
        if self.stack.currentIndex() == LOUPE:
            return self.loupe.current_key()
        if self.stack.currentIndex() == SURVEY:
            return self.survey.focused_key()
        index = self.grid.currentIndex()
        return self.model.id_at(index.row()) if index.isValid() else None

    def selected_ids(self) -> list[int]:
        """What a decision applies to: the grid's selection (in grid order), else the focus."""
        if self.stack.currentIndex() != GRID:
            current = self.current_id()
            return [] if current is None else [current]
        rows = sorted(i.row() for i in self.grid.selectionModel().selectedIndexes())
        ids = [self.model.id_at(r) for r in rows]
        current = self.current_id()
        return ids or ([] if current is None else [current])

    def _focus_row(self, row: int) -> None:
        index = self.model.index(row)
        # In the survey the grid's selection is what is being compared: move only the focus.
        keep = self.stack.currentIndex() == SURVEY
        flags = QItemSelectionModel.NoUpdate if keep else QItemSelectionModel.ClearAndSelect
        self.grid.selectionModel().setCurrentIndex(index, flags)
        self.grid.scrollTo(index)

    def _focus_id(self, image_id: int | None) -> None:
        row = self.model.row_of(image_id) if image_id is not None else None
        if row is not None:
            self._focus_row(row)

    def _follow_key(self, image_id: int) -> None:
        """The loupe or survey moved: keep the grid's focus and the info panel in step."""
        self._focus_id(image_id)
        self._show_info()

    def set_filter(self, image_filter: ImageFilter) -> None:
        """Apply a filter, keep the focused image if it still shows (else the nearest row)."""
        focused = self.current_id()
        old_row = self.grid.currentIndex().row()
        self.model.set_filter(image_filter)
        if self.project is not None:
            self.project.catalog.set_setting(FILTER_SETTING, image_filter.to_json())
        row = self.model.row_of(focused) if focused is not None else None
        if row is None and self.model.rowCount():
            row = min(max(old_row, 0), self.model.rowCount() - 1)
        if row is not None:
            self._focus_row(row)
        self._show_info()
        self._refresh()

    # -- decisions -------------------------------------------------------------------------

    def decide(self, label: str, advance: bool = False, **fields: Any) -> None:
        if self.project is None:
            return
        ids = self.selected_ids()
        if not ids:
            return
        try:
            self.project.catalog.decide(ids, label, **fields)
        except (ValueError, KeyError) as exc:
            self.statusBar().showMessage(str(exc), 5000)
            return
        self._decisions_changed(ids)
        rejected = fields.get("flag") == "reject" or fields.get("reject_reason")
        if self.stack.currentIndex() == SURVEY and rejected:  # a reject leaves the survey
            for image_id in ids:
                self.survey.remove_key(image_id)
            if not self.survey.keys():
                self.show_grid()
            return
        if advance or self.auto_advance.isChecked():
            self.advance()

    def advance(self) -> None:
        page = self.stack.currentIndex()
        if page == LOUPE:
            self.loupe.go(1)
        elif page == SURVEY:
            self.survey.move_focus(1)
        else:
            row = self.grid.currentIndex().row()
            if row + 1 < self.model.rowCount():
                self._focus_row(row + 1)

    def undo(self) -> None:
        if self.project is not None:
            self._show_step(self.project.catalog.undo_step(), "Undone")

    def redo(self) -> None:
        if self.project is not None:
            self._show_step(self.project.catalog.redo_step(), "Redone")

    def _show_step(self, step: Step | None, verb: str) -> None:
        """An undone or redone action: its images redrawn, and a word when some kept a
        newer decision made in another window or by a command."""
        if step is None:
            action = "undo" if verb == "Undone" else "redo"
            self.statusBar().showMessage(f"Nothing to {action}", 3000)
            return
        self._decisions_changed(step.image_ids)
        self.statusBar().showMessage(step.message(verb), 8000 if step.kept else 3000)

    def _decisions_changed(self, ids: list[int]) -> None:
        self.model.refresh_decisions(ids)
        for image_id in ids:
            info = self._canvas_info(image_id)
            self.loupe.update_info(image_id, info)
            self.survey.update_info(image_id, info)
        self._show_info()
        self._refresh()

    # -- loupe and survey ------------------------------------------------------------------

    def _canvas_info(self, image_id: int) -> dict[str, str]:
        record = self.model.record(image_id)
        decision = self.model.decision(image_id)
        info = {
            "name": Path(record.path).name,
            "prompt": record.prompt or "",
            "negative_prompt": record.negative_prompt or "",
            "seed": "" if record.seed is None else str(record.seed),
            "sampler": record.sampler or "",
            "schedule": record.schedule_type or "",
            "steps": "" if record.steps is None else str(record.steps),
            "cfg": "" if record.cfg_scale is None else f"{record.cfg_scale:g}",
            "size": record.size or f"{record.width}x{record.height}",
            "model": record.model or "",
            "sweep": ", ".join(f"{k}: {v}" for k, v in record.sweep.items()),
            "flag": decision.flag,
            "stars": str(decision.stars),
            "color": decision.color or "",
            "reject_reason": decision.reject_reason or "",
        }
        return {k: v for k, v in info.items() if v != ""}

    def _items(self, ids: list[int]) -> list[LoupeItem]:
        assert self.project is not None
        return [
            LoupeItem(
                i, str(self.project.file_path(self.model.record(i).path)), self._canvas_info(i)
            )
            for i in ids
        ]

    def show_loupe(self) -> None:
        current = self.current_id()
        if self.project is None or current is None:
            return
        ids = [self.model.id_at(r) for r in range(self.model.rowCount())]
        self.loupe.set_items(self._items(ids), ids.index(current) if current in ids else 0)
        self.stack.setCurrentIndex(LOUPE)
        self.loupe.setFocus()

    def show_survey(self, limit: int) -> None:
        if self.project is None:
            return
        ids = self.selected_ids()
        if self.stack.currentIndex() != GRID:
            self.show_grid()
            ids = self.selected_ids()
        if len(ids) < 2:  # with one image selected, compare it with the next ones
            row = self.grid.currentIndex().row()
            ids = [
                self.model.id_at(r)
                for r in range(max(row, 0), min(row + limit, self.model.rowCount()))
            ]
        ids = ids[:limit]
        if not ids:
            return
        self.survey.set_items(self._items(ids), ids[0])
        self.stack.setCurrentIndex(SURVEY)
        self.survey.setFocus()
        self._show_info()

    def _step_candidate(self, delta: int) -> None:
        """Compare: the grid's next (or previous) image, other than the select, becomes the
        candidate; at either end of the grid nothing changes."""
        select, candidate = self.survey.keys()
        row = self.model.row_of(candidate)
        if row is None:
            return
        row += delta
        if 0 <= row < self.model.rowCount() and self.model.id_at(row) == select:
            row += delta
        if not 0 <= row < self.model.rowCount():
            return
        self.survey.replace_candidate(self._items([self.model.id_at(row)])[0])

    def show_grid(self) -> None:
        focused = self.current_id()
        self.stack.setCurrentIndex(GRID)
        self._focus_id(focused)
        self.grid.setFocus()

    # -- info and status -------------------------------------------------------------------

    def _show_info(self) -> None:
        image_id = self.current_id()
        if self.project is None or image_id is None or self.model.row_of(image_id) is None:
            self.info.show_image(None)
            return
        record: ImageRecord = self.model.record(image_id)
        self.generate_panel.set_last_seed(record.seed)  # the ♻ button reuses it
        path = self.project.file_path(record.path)
        index = self.model.analysis
        score, note = None, ""
        if index.has_embeddings:
            scores = index.lookalike_scores(self.model.picks())  # to the picks' centroid
            score = scores.get(image_id)
            if score is None:
                note = "no face to compare" if scores else "pick images to compare with"
        weights_link = not index.has_embeddings and not self.analysis.recognizer_available()
        if weights_link:
            note = "needs the face recognition weights"
        self.info.show_image(
            record,
            self.model.decision(image_id),
            self.project.catalog.decision_history(image_id),
            str(path),
            missing=not path.is_file(),
            face=view.face_summary(index, image_id, lookalike=score, lookalike_note=note),
            weights_link=weights_link,
        )

    def _goal_changed(self, value: int) -> None:
        if self.project is not None:
            self.project.catalog.set_setting(GOAL_SETTING, value)
        self._refresh()

    def _refresh(self) -> None:
        has_project = self.project is not None
        for action in (
            self.import_action,
            self.import_folder_action,
            self.export_picks_action,
            self.use_picks_action,
            self.analyze_action,
        ):
            action.setEnabled(has_project)
        index = self.model.analysis
        self.reject_flagged_action.setEnabled(has_project and bool(len(index)))
        self.keep_best_action.setEnabled(has_project and bool(index.stacks))
        if self.project is None:
            self.setWindowTitle("charstudio")
            self.summary.setText("No project open: File > New Project or Open Project")
            self.filters.set_counts({})
            self.grid.set_empty_text(
                "No project open\n\nFile > New Project… (Ctrl+N) to start a character\n"
                "File > Open Project… (Ctrl+O) to continue one"
            )
            return
        self.setWindowTitle(f"{self.project.name} — charstudio")
        stats = self.project.catalog.stats()
        self.filters.set_counts(stats)
        self.grid.set_empty_text(
            "No images match this filter"
            if stats["total"]
            else "No images yet\n\nGenerate (Ctrl+G) makes some, or File > Import Folder… "
            "(Ctrl+Shift+I) adds images made elsewhere"
        )
        text = (
            f"picked {stats['picked']} · rejected {stats['rejected']} · "
            f"unreviewed {stats['unreviewed']} · of {stats['total']}"
        )
        if self.goal.value():
            text += f"  (goal: {self.goal.value()} picks)"
        shown = self.model.rowCount()
        if shown != stats["total"]:
            text = f"showing {shown} · " + text
        self.summary.setText(text)

    def show_cheat_sheet(self) -> None:
        box = QMessageBox(self)
        box.setWindowTitle("Keyboard shortcuts")
        box.setTextFormat(Qt.RichText)
        box.setText(cheat_sheet_html())
        box.open()
        self.cheat_sheet = box

    def about(self) -> None:
        QMessageBox.about(
            self,
            "About charstudio",
            f"charstudio {__version__}\nA workstation for consistent Stable Diffusion 1.5 "
            "characters.",
        )

    # -- picks out -------------------------------------------------------------------------

    def _pick_ids(self) -> list[int]:
        assert self.project is not None
        return self.project.catalog.filtered_ids(ImageFilter(view="picked"))

    def use_picks(self) -> None:
        if self.project is None:
            return
        picks = self._pick_ids()
        if not picks:
            QMessageBox.information(self, "Training set", "There are no picked images yet.")
            return
        self.project.catalog.create_training_set(f"{len(picks)} picks", picks)
        self.train_panel.refresh_images()
        self.show_train()  # the next step of the workflow
        self.statusBar().showMessage(f"Training set: the {len(picks)} picked images", 8000)

    def choose_export(self) -> None:
        if self.project is None:
            return
        folder = QFileDialog.getExistingDirectory(self, "Export picks to")
        if folder:
            self.start_export(Path(folder))

    def start_export(self, dest: Path) -> int | None:
        """Queue copying the picks (with caption sidecars) to ``dest``; returns the job id."""
        if self.project is None or self.queue_worker is None:
            return None
        params = {"image_ids": self._pick_ids(), "dest": str(dest)}
        return self.queue_worker.submit(self.project, "export", params)

    def _export_done(self, report: dict[str, Any]) -> None:
        failed = report.get("failed", [])
        text = f"Exported {report.get('copied', 0)} picks ({report.get('captions', 0)} captions)"
        if failed:
            text += f", {len(failed)} failed: " + "; ".join(
                f"{f['path']}: {f['error']}" for f in failed[:3]
            )
        self.statusBar().showMessage(text, 15000)

    # -- generation ------------------------------------------------------------------------

    def _show_image_menu(self, pos: QPoint) -> None:
        menu = self.image_menu_at(pos)
        if menu is not None:
            menu.exec(self.grid.viewport().mapToGlobal(pos))

    def image_menu_at(self, pos: QPoint) -> QMenu | None:
        """The right-click menu for the image at ``pos`` in the grid's viewport."""
        index = self.grid.indexAt(pos)
        if self.project is None or not index.isValid():
            return None
        if not self.grid.selectionModel().isSelected(index):
            self.grid.setCurrentIndex(index)  # as in Lightroom: right-click selects the image
        record = self.model.record(self.model.id_at(index.row()))
        path = self.project.file_path(record.path)
        infotext = record.infotext

        def copy_parameters() -> None:
            QApplication.clipboard().setText(infotext or "")
            self.statusBar().showMessage(f"Copied the generation parameters of {path.name}", 5000)

        return build_image_menu(
            self,
            self.cull_actions,
            count=len(self.selected_ids()),
            reveal=lambda: reveal_in_file_manager(path),
            copy_parameters=copy_parameters if infotext else None,
            send_to_generate=(lambda: self.send_to_generate(record))
            if infotext or record.prompt is not None
            else None,
        )

    def send_to_generate(self, record: ImageRecord) -> None:
        """A1111's "Send to txt2img": the image's settings in the Generate form, one image."""
        from charstudio.engine.runner import find_checkpoints

        if self.project is None:
            return
        try:
            sent = request_from_image(
                record,
                checkpoints=find_checkpoints(self.project),
                current=self.generate_panel.request_or_default(),
            )
        except ValueError as error:
            self.statusBar().showMessage(str(error), 10000)
            return
        self.generate_panel.set_request(sent.request)
        self.show_generate()
        note = "; ".join(sent.notes)
        self.statusBar().showMessage(
            f"Sent {Path(record.path).name} to Generate" + (f" ({note})" if note else ""), 10000
        )

    def show_generate(self) -> None:
        dock = self.docks["Generate"]
        dock.show()
        dock.raise_()
        self.generate_panel.prompt_edit.setFocus()

    def show_checkpoints(self) -> None:
        """The checkpoint grid viewer in the centre (a grid started, reopened, or Esc from a
        cell)."""
        self.stack.setCurrentIndex(CHECKPOINTS)
        self.grid_viewer.setFocus()

    def _open_cell(self, path: str) -> None:
        self._cell_from = CHECKPOINTS
        items, current = self.grid_viewer.loupe_items()
        self.cell_loupe.set_items(items, current)
        self.stack.setCurrentIndex(CELL)
        self.cell_loupe.setFocus()

    def _show_run_view(self, run_id: int) -> None:
        """A run chosen in the Train panel (or one just started: -1) in the centre."""
        if self.project is None:
            return
        if run_id < 0:
            self.run_view.set_snapshot(None)
            self.run_view.title_label.setText("Starting training…")
        self.stack.setCurrentIndex(RUN)

    def _open_preview(self, path: str) -> None:
        self._cell_from = RUN
        self.cell_loupe.set_items([LoupeItem(-1, path, {"name": Path(path).name})], -1)
        self.stack.setCurrentIndex(CELL)
        self.cell_loupe.setFocus()

    def _close_cell(self) -> None:
        """Esc in the full-size cell or preview: back to where it was opened from."""
        if self._cell_from == RUN:
            self.stack.setCurrentIndex(RUN)
        else:
            self.show_checkpoints()
        self._cell_from = CHECKPOINTS

    def _compare_run(self, run_id: int) -> None:
        self.comparing.refresh_runs(run_id)
        self.show_compare()

    def _lora_model_choices(self) -> None:
        """The LoRA panel offers the checkpoints the Train panel found (one folder scan)."""
        combo = self.train_panel.model_combo
        self.lora_panel.set_model_choices(
            [str(combo.itemData(i)) for i in range(combo.count()) if combo.itemData(i)]
        )
        if not self.lora_panel.model_combo.path():
            self.lora_panel.model_combo.set_path(combo.path())

    def show_compare(self) -> None:
        dock = self.docks["Compare"]
        dock.show()
        dock.raise_()

    def show_train(self) -> None:
        dock = self.docks["Train"]
        dock.show()
        dock.raise_()

    def show_model_folders(self) -> None:
        """File > Model Folders…: the searched folders, with Add and Remove."""
        if self.project is None:
            return
        from charstudio.ui.model_folders_dialog import ModelFoldersDialog

        self.model_folders_dialog = ModelFoldersDialog(self.project, self.refresh_models, self)
        self.model_folders_dialog.open()

    def add_model_folder(self, setting: str, folder: Path) -> None:
        assert self.project is not None
        from charstudio.engine.model_folders import add_folder

        add_folder(self.project, setting, folder)
        self.refresh_models()
        self.statusBar().showMessage(f"Searching {folder} too", 8000)

    def refresh_models(self) -> None:
        """Look again for checkpoints, LoRAs and embeddings (F5), as A1111's refresh buttons."""
        if self.project is None:
            return
        self.generation.refresh_choices()
        count = len(self.training.refresh_choices())
        self._lora_model_choices()
        self.comparing.refresh()
        self.statusBar().showMessage(
            f"Model folders searched again: {count} checkpoint{'' if count == 1 else 's'}", 8000
        )

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

    def start_import(self, paths: list[Path], copy: bool = False) -> int | None:
        """Queue an import; it runs on the project's job worker. Returns the job id."""
        if self.project is None or self.queue_worker is None:
            return None
        params = {"paths": [str(p) for p in paths], "copy": copy}
        return self.queue_worker.submit(self.project, "import", params)

    # -- the job queue ---------------------------------------------------------------------

    def _connect_queue(self, root: Path) -> None:
        if self.queue_worker is not None:
            self.queue_worker.shutdown()
            self.queue_worker.deleteLater()
        worker = QueueWorker(root, self)
        worker.jobStarted.connect(self._queue_job_started)
        worker.jobProgress.connect(self._queue_job_progress)
        worker.jobFinished.connect(self._queue_job_finished)
        self.queue_worker = worker

    def _ask_about_interrupted(self, project: Project, job_ids: list[int]) -> None:
        """Resume now, later (held) or discard the jobs the last session left unfinished."""
        if self.project is not project or self.queue_worker is None:
            return  # another project was opened meanwhile
        facts = [f for f in job_recovery.interrupted_jobs(project) if f.job_id in job_ids]
        question = job_recovery.interrupted_question(facts)
        if question is not None:
            choice = job_recovery_dialog.ask_recovery(self, question)
            _, message = job_recovery.apply_recovery_choice(project, facts, choice)
            self.statusBar().showMessage(message, 15000)
        self.queue_worker.keep_out(set())
        self.queue_worker.wake()
        self._update_held_jobs()

    def resume_held_jobs(self) -> None:
        """Jobs ▸ Resume Interrupted Jobs: the same choices for the held jobs."""
        if self.project is None or self.queue_worker is None:
            return
        facts = job_recovery.held_jobs(self.project)
        question = job_recovery.held_question(facts)
        if question is not None:
            choice = job_recovery_dialog.ask_recovery(self, question)
            if choice is not RecoveryChoice.LATER:
                _, message = job_recovery.apply_recovery_choice(self.project, facts, choice)
                self.statusBar().showMessage(message, 15000)
                self.queue_worker.wake()
        self._update_held_jobs()

    def _update_held_jobs(self) -> None:
        held = JobQueue(self.project).held() if self.project is not None else []
        self.resume_held_action.setEnabled(bool(held))
        if held and not self.statusBar().currentMessage():
            self.statusBar().showMessage(job_recovery.held_message(len(held)), 15000)

    def _ask_before_quitting(self) -> QuitChoice:
        """Quit with a job running: say what happens to it and ask. A window the artist does
        not see (closed by the program) is not asked: the job resumes next time."""
        worker, project = self.queue_worker, self.project
        if worker is None or project is None or not worker.busy() or not self.isVisible():
            return QuitChoice.QUIT
        queue = JobQueue(project)
        running = queue.jobs(("running",))
        if not running:
            return QuitChoice.QUIT  # between two jobs
        facts = job_recovery.job_facts(project, running[-1])
        question = job_recovery.quit_question(facts, waiting=len(queue.pending()))
        return job_recovery_dialog.ask_quit(self, question)

    def _queue_job_started(self, job: QueuedJob) -> None:
        controllers = (self.generation, self.analysis, self.training, self.lora, self.comparing)
        if any(c.job_started(job) for c in controllers):
            return
        title = JOB_TITLES.get(job.kind, job.kind)
        dialog = QProgressDialog(f"{title}…", "Cancel", 0, 0, self)
        dialog.setWindowTitle(title)
        dialog.setWindowModality(Qt.WindowModal)
        dialog.setMinimumDuration(300)
        assert self.queue_worker is not None
        dialog.canceled.connect(self.queue_worker.cancel_current)
        self._queue_dialog = dialog

    def _queue_job_progress(self, job: QueuedJob, event: Progress) -> None:
        controllers = (self.generation, self.analysis, self.training, self.lora, self.comparing)
        if any(c.job_progress(job, event) for c in controllers):
            return
        if self._queue_dialog is not None:
            self._job_progress(self._queue_dialog, JOB_TITLES.get(job.kind, job.kind), event)

    def _queue_job_finished(self, job: QueuedJob) -> None:
        if self.generation.job_finished(job):
            self.analysis.schedule_check()  # the new images
            self._refresh()
            return
        if self.training.job_finished(job) or self.lora.job_finished(job):
            self.generation.refresh_choices()
            self._refresh()
            return
        if self.analysis.job_finished(job) or self.comparing.job_finished(job):
            return
        if self._queue_dialog is not None:
            self._queue_dialog.reset()
            self._queue_dialog.deleteLater()
            self._queue_dialog = None
        if job.status == "failed":
            QMessageBox.critical(self, JOB_TITLES.get(job.kind, job.kind), job.error or "")
        if self.project is not None and job.kind in ("import", "export"):
            result = job_result(self.project, job)
            if job.kind == "import":
                self._import_done(result)
                self.analysis.schedule_check()
            else:
                self._export_done(result)
        self._refresh()

    def _reload_images(self) -> None:
        """Catalog rows were added: reload the grid and the sweep filters, keep the focus."""
        focused = self.current_id()
        self.model.reload()
        if self.project is not None:
            self.filters.set_axes(self.project.catalog.sweep_axes())
            self.filters.set_filter(self.model.image_filter)
        if focused is not None:
            self._focus_id(focused)
        elif self.model.rowCount():
            self._focus_row(0)

    def _images_added(self, image_ids: list[int]) -> None:
        self._reload_images()
        self._refresh()

    def _import_done(self, report: dict[str, Any]) -> None:
        self._reload_images()
        failed = report.get("failed", [])
        text = (
            f"Imported {report.get('added', 0)} · duplicates {report.get('duplicates', 0)} · "
            f"relinked {report.get('relinked', 0)} · failed {len(failed)}"
        )
        if report.get("canceled"):
            text += " (canceled)"
        self.statusBar().showMessage(text, 15000)
        if failed:
            details = "\n".join(f"{f['path']}: {f['error']}" for f in failed[:200])
            box = QMessageBox(QMessageBox.Warning, "Import", text, parent=self)
            box.setDetailedText(details)
            box.open()
            self.import_report_box = box

    # -- background jobs -------------------------------------------------------------------

    def _job_progress(self, dialog: QProgressDialog, title: str, event: Progress) -> None:
        if event.total:
            dialog.setMaximum(event.total)
            dialog.setValue(event.done)
        dialog.setLabelText(job_dialog_text(title, event))

    # -- the face analysis -----------------------------------------------------------------

    def analyze_faces(self) -> None:
        self.analysis.analyze_now()

    def show_face_weights(self) -> None:
        self.analysis.show_weights_dialog()

    def _show_identity_groups(self, index: AnalysisIndex, image_filter: ImageFilter) -> ImageFilter:
        """List the identity groups in the library; returns ``image_filter`` without its
        identity group when that group is gone."""
        groups = index.identity_groups(self.model.identity_distance)
        self.filters.set_identity_groups(view.identity_labels(groups))
        identity = view.valid_identity(image_filter.identity, groups)
        return (
            image_filter
            if identity == image_filter.identity
            else replace(image_filter, identity=identity)
        )

    def _update_lookalike(self) -> None:
        """Look-alike tools on with embeddings; else off, saying why."""
        index = self.model.analysis
        recognizer = self.analysis.recognizer_available()
        message = view.lookalike_status(index, recognizer)
        self.filters.set_lookalike_available(
            index.has_embeddings, message, need_weights=bool(message) and not recognizer
        )
        self.similar_action.setEnabled(index.has_embeddings)
        self.similar_action.setStatusTip(message)

    def _load_analysis(self) -> None:
        """The analysis cache changed (a job finished, the weights arrived): reload it."""
        if self.project is None:
            return
        focused = self.current_id()
        index = AnalysisIndex.from_catalog(self.project.catalog)
        image_filter = self._show_identity_groups(index, self.model.image_filter)
        self.model.set_analysis(index, apply=False)
        self._apply_view(image_filter, focused)
        self._update_lookalike()

    def _apply_view(self, image_filter: ImageFilter, focused: int | None) -> None:
        """Show ``image_filter``'s images again (the arrangement changed), keeping the focus
        on ``focused`` or on the top of the stack it went into."""
        self.model.set_filter(image_filter)
        if self.project is not None:
            self.project.catalog.set_setting(FILTER_SETTING, image_filter.to_json())
        self.filters.set_filter(image_filter)
        if focused is not None and self.model.row_of(focused) is None:
            index = self.model.analysis
            stack = index.stack_of(focused) or ()
            focused = next((i for i in stack if self.model.row_of(i) is not None), None)
        if focused is not None:
            self._focus_id(focused)
        elif self.model.rowCount():
            self._focus_row(0)
        self._show_info()
        self._refresh()

    def _identity_distance_changed(self, distance: float) -> None:
        if self.project is None:
            return
        self.project.catalog.set_setting(IDENTITY_SETTING, distance)
        self.model.identity_distance = distance
        image_filter = self._show_identity_groups(self.model.analysis, self.model.image_filter)
        self._apply_view(image_filter, self.current_id())

    def set_collapse_stacks(self, collapse: bool) -> None:
        """View > Collapse Duplicate Stacks."""
        self.model.collapse_stacks = collapse
        if self.project is not None:
            self.project.catalog.set_setting(COLLAPSE_SETTING, collapse)
            self._apply_view(self.model.image_filter, self.current_id())

    def toggle_stack(self) -> None:
        """S: expand or collapse the focused image's stack (in the grid)."""
        if self.project is None or self.stack.currentIndex() != GRID:
            return
        current = self.current_id()
        focus = self.model.toggle_stack(current) if current is not None else None
        if focus is None:
            self.statusBar().showMessage("The focused image is in no stack of duplicates", 3000)
            return
        self._focus_id(focus)
        self._show_info()
        self._refresh()

    def sort_by_similarity(self) -> None:
        """Ctrl+Shift+S: order the grid by likeness to the selected images."""
        if self.project is None:
            return
        embedded = set(self.model.analysis.embeddings.ids)
        refs = [i for i in self.selected_ids() if i in embedded]
        if not refs:
            self.statusBar().showMessage(
                "None of the selected images has a face embedding to compare with", 6000
            )
            return
        focused = self.current_id()
        self.model.lookalike_refs = refs
        image_filter = replace(self.model.image_filter, sort=LOOKALIKE_SORT, descending=False)
        self._apply_view(image_filter, focused)
        count = f"{len(refs)} selected image{'s' if len(refs) != 1 else ''}"
        self.statusBar().showMessage(f"Sorted by similarity to {count}", 6000)

    def reject_flagged(self) -> None:
        """Photo > Reject Flagged as Off-prompt: one undoable step."""
        if self.project is None:
            return
        ids = view.reject_flagged_ids(self.model.analysis, self.project.catalog.decisions())
        self._bulk_reject(ids, "Reject flagged as off-prompt", "off-prompt")
        if ids:
            self.statusBar().showMessage(
                f"Rejected {len(ids)} flagged images as off-prompt (Ctrl+Z undoes)", 10000
            )
        else:
            self.statusBar().showMessage("No undecided image has a face flag", 6000)

    def keep_best(self) -> None:
        """Photo > Keep the Best of Each Stack: one undoable step."""
        if self.project is None:
            return
        index = self.model.analysis
        ids = view.keep_best_rejects(index, self.project.catalog.decisions())
        self._bulk_reject(ids, "Keep the best of each stack", "not-best")
        if ids:
            self.statusBar().showMessage(
                f"Kept the best of {len(index.stacks)} stacks: rejected {len(ids)} images as "
                "not best (Ctrl+Z undoes)",
                10000,
            )
        else:
            self.statusBar().showMessage("Nothing to reject: every stack is decided", 6000)

    def _bulk_reject(self, ids: list[int], label: str, reason: str) -> None:
        if not ids or self.project is None:
            return
        self.project.catalog.decide(ids, label, flag="reject", reject_reason=reason)
        self._decisions_changed(ids)

    # -- events ----------------------------------------------------------------------------

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """Auto-advance follows Caps Lock, as in Lightroom. Qt does not report the lock's
        state, so it is read from letters (upper case without Shift means Caps Lock is on)
        and from presses of the Caps Lock key itself."""
        # A key event visits the focus widget first, then its parents: act on the first visit.
        # Letters that are shortcuts arrive only as ShortcutOverride, before the shortcut runs.
        kinds = (QEvent.KeyPress, QEvent.ShortcutOverride)
        if event.type() not in kinds or watched is not self.focusWidget():
            return False
        key_event: QKeyEvent = event  # type: ignore[assignment]
        if key_event.key() == Qt.Key_CapsLock:
            if event.type() == QEvent.KeyPress:
                self.auto_advance.toggle()
            return False
        text = key_event.text()
        if len(text) == 1 and text.lower() != text.upper():
            shift = bool(key_event.modifiers() & Qt.ShiftModifier)
            caps_on = text.isupper() != shift
            if caps_on != self._caps_lock:
                self._caps_lock = caps_on
                self.auto_advance.setChecked(caps_on)
        return False

    def closeEvent(self, event: Any) -> None:
        choice = self._ask_before_quitting()
        if choice is QuitChoice.KEEP:
            event.ignore()
            return
        app = QApplication.instance()
        if app is not None:
            app.removeEventFilter(self)
        if self.queue_worker is not None:
            # A stopped job goes back in the queue (asked about next time) unless canceled.
            self.queue_worker.shutdown(requeue=choice is QuitChoice.QUIT)
        self.generation.set_project(None, None)  # saves the Generate panel's settings
        self.training.set_project(None, None)  # and the Train panel's
        self.lora.set_project(None, None)
        self.comparing.set_project(None, None)
        self.analysis.set_project(None, None)
        self.analysis.shutdown()
        self.model.shutdown()
        self.model.set_project(None)
        if self.project is not None:
            self.project.close()
            self.project = None
        super().closeEvent(event)
