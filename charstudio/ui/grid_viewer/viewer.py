"""The checkpoint grid viewer widget: the toolbar, the grid view and the lines under it.

What it shows comes from :class:`~charstudio.presenters.grid.GridPresenter`; this widget keeps
the view state (focus, selected columns, zoom) and turns keys and clicks into the presenter's
actions and its own signals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QPoint, QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtWidgets import QFileDialog, QGraphicsView, QVBoxLayout, QWidget

from charstudio.analysis.identity import StepScore
from charstudio.catalog import Project
from charstudio.presenters.grid import GridCellView, GridPresenter, cell_from
from charstudio.training.checkpoint_grid import GridSpec
from charstudio.training.grid_records import GridRecord
from charstudio.ui.grid_viewer.cells import CellScene
from charstudio.ui.grid_viewer.geometry import GridGeometry
from charstudio.ui.grid_viewer.looks import (
    LABEL_BAND_H,
    MAX_SCALE,
    MIN_SCALE,
    MODEL_BAND_H,
    PLOT_H,
    WHEEL_FACTOR,
)
from charstudio.ui.grid_viewer.toolbar import GridToolbar, text_label
from charstudio.ui.grid_viewer.view import GridView
from charstudio.ui.loupe import LoupeItem

__all__ = ["GridViewer"]

HINT = (
    "←→↑↓ move · Enter/E open · C choose step · Shift+←/→ or Shift+click labels: range to "
    "refine (R) · wheel zoom · drag pan · F fit · Z 1:1 · Esc back"
)
EMPTY_TEXT = (
    "Make a grid of a training run's steps in the Compare panel, or open an earlier one from "
    "its list."
)


class GridViewer(QWidget):
    """One checkpoint grid: cells, frozen headers with the identity plot, and the actions."""

    openImage = Signal(str)  # absolute path of the focused cell's image (Enter, E, double-click)
    chosenStepChanged = Signal(int, int)  # grid id, step (-1: no step chosen)
    refineRequested = Signal(int, int)  # first and last step of the selected columns
    exportRequested = Signal(int, int)  # run id, the chosen step
    message = Signal(str)  # one-line news for the status bar
    closeRequested = Signal()  # Esc (with no column range selected)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.presenter = GridPresenter()
        self._focus = (0, 0)
        self._anchor: int | None = None  # the column a range selection starts from
        self._selection: tuple[int, int] | None = None  # first, last column (inclusive)
        self._fit = True
        self.cells = CellScene(self.presenter, self)
        self.loader = self.cells.loader

        self.view = GridView(self, self.cells.scene)
        self.setFocusProxy(self.view)  # focusing the viewer gives the keys to the grid
        self.toolbar = GridToolbar(self)
        bar = self.toolbar
        self.title_label, self.detail_label = bar.title_label, bar.detail_label
        self.fit_button, self.one_button = bar.fit_button, bar.one_button
        self.choose_button, self.refine_button = bar.choose_button, bar.refine_button
        self.save_button, self.export_button = bar.save_button, bar.export_button
        self.reason_label = text_label()
        self.reason_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.note_label = text_label()
        self.note_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.note_label.hide()
        self.hint_label = text_label(muted=True)
        self.hint_label.setText(HINT)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(4)
        layout.addWidget(self.toolbar)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.reason_label)
        layout.addWidget(self.note_label)
        layout.addWidget(self.hint_label)
        self.clear()

    def sizeHint(self) -> QSize:
        return QSize(1100, 800)

    # -- loading ------------------------------------------------------------------------------

    def set_project(self, project: Project | None) -> None:
        """The project whose grids are shown; None (before a project closes) clears the view."""
        if project is not self.presenter.project:
            self.clear()
        self.presenter.project = project

    def clear(self) -> None:
        self.cells.clear()
        self.presenter.clear()
        self._focus, self._anchor, self._selection = (0, 0), None, None
        self.toolbar.set_texts("No grid open", "")
        self.reason_label.setText(EMPTY_TEXT)
        self.reason_label.setStyleSheet("")
        self.note_label.hide()
        self.view.set_header_height(PLOT_H + LABEL_BAND_H)
        self._update_actions()

    def load_grid(self, project: Project, grid_id: int) -> None:
        """Show grid ``grid_id`` from the catalog: its cells so far, scores, suggestion and
        chosen step. Loading the grid already shown refreshes it and keeps zoom and focus."""
        if project is not self.presenter.project:
            self.clear()
        cells, keep_view = self.presenter.load(project, grid_id)
        if not keep_view:
            self._rebuild()
        for cell in cells:
            self._put_cell(cell)
        self._refresh()
        if not keep_view:
            self.set_focus(0, 0)
            self.fit()

    def add_cell(self, cell: dict[str, Any]) -> None:
        """A cell the running job just made (a progress event's ``detail["cell"]``)."""
        if self.presenter.shape is None:
            return
        self._put_cell(cell_from(cell))
        self.presenter.refresh_scores()
        self._show_texts()
        self.view.update_headers()

    def _rebuild(self) -> None:
        shape = self.presenter.shape
        assert shape is not None
        self._focus, self._anchor, self._selection = (0, 0), None, None
        self.cells.rebuild(GridGeometry(shape))
        height = PLOT_H + LABEL_BAND_H + (MODEL_BAND_H if len(shape.z_labels) > 1 else 0)
        self.view.set_header_height(height)

    def _put_cell(self, cell: GridCellView) -> None:
        shown = self.presenter.put_cell(cell)
        if shown is not None:
            self.cells.show_cell(shown)

    def _refresh(self) -> None:
        """Scores, texts, marks and buttons after the presenter changed."""
        self.presenter.refresh_scores()
        self._show_texts()
        self.cells.show_marks(self._selection)
        self._update_actions()
        self.view.update_headers()

    def _show_texts(self) -> None:
        presenter = self.presenter
        prompt = presenter.prompt()
        self.toolbar.set_texts(
            presenter.title(), presenter.detail(), f"Prompt: {prompt}" if prompt else ""
        )
        self.reason_label.setText(presenter.suggestion_text())
        self.reason_label.setStyleSheet(
            "color: #c8911a; font-weight: bold;" if self.suggested_step() is not None else ""
        )

    # -- the artist's actions -----------------------------------------------------------------

    def set_focus(self, column: int, row: int) -> None:
        shape = self.presenter.shape
        if shape is None:
            return
        column = min(max(column, 0), shape.column_count - 1)
        row = min(max(row, 0), len(shape.seeds) - 1)
        self._focus = (column, row)
        self.cells.show_focus(column, row)
        if not self._fit:
            self.view.ensureVisible(self.cell_rect(column, row), 24, 24)
        self._update_actions()
        self.view.update_headers()

    def move_focus(self, dx: int, dy: int, extend: bool = False) -> None:
        column, row = self._focus
        if dx and extend:
            if self._anchor is None or self._selection is None:
                self._anchor = column
            self.set_focus(column + dx, row)
            assert self._anchor is not None
            self._selection = (
                min(self._anchor, self._focus[0]),
                max(self._anchor, self._focus[0]),
            )
        else:
            if dx:
                self._selection, self._anchor = None, None
            self.set_focus(column + dx, row + dy)
        self.cells.show_marks(self._selection)
        self._update_actions()

    def select_columns(self, first: int, last: int) -> None:
        """Select the columns ``first``..``last`` (the range Refine compares every 5 steps)."""
        count = self.column_count()
        if not count:
            return
        first, last = sorted((min(max(first, 0), count - 1), min(max(last, 0), count - 1)))
        self._anchor = first
        self._selection = (first, last)
        self.cells.show_marks(self._selection)
        self._update_actions()
        self.view.update_headers()

    def selected_steps(self) -> tuple[int, int] | None:
        """The first and last step of the selected columns (None unless two steps differ)."""
        if self._selection is None:
            return None
        return self.presenter.selected_steps(*self._selection)

    def open_focused(self) -> None:
        cell = self.focused_cell()
        path = self.presenter.file_path(cell) if cell is not None else None
        if path is not None:
            self.openImage.emit(str(path))

    def choose(self, column: int | None = None, toggle: bool = True) -> None:
        """Choose a column's step (the focused one by default) as this grid's chosen step,
        stored in the catalog; with ``toggle`` (C) choosing it again clears it."""
        presenter = self.presenter
        column = self._focus[0] if column is None else column
        changed, new = presenter.choose(column, toggle)
        if not changed or presenter.record is None:
            return
        self._show_texts()
        self.cells.show_marks(self._selection)
        self._update_actions()
        self.view.update_headers()
        self.chosenStepChanged.emit(presenter.record.id, -1 if new is None else new)
        step = self.column_step(column)
        label = presenter.step_name(step)
        self.message.emit(f"Chosen: {label}" if new is not None else "No step chosen")

    def refine(self) -> None:
        steps = self.selected_steps()
        if steps is None:
            self.message.emit(
                "Select two columns first: Shift+←/→, or click one label and Shift+click another"
            )
            return
        self.refineRequested.emit(*steps)

    def request_export(self) -> None:
        step = self.chosen_step()
        record = self.presenter.record
        if step is None or record is None or record.run_id is None:
            self.message.emit("Choose a step first (C, or click a column label)")
            return
        self.exportRequested.emit(record.run_id, step)

    def show_note(self, text: str, tooltip: str = "") -> None:
        """A line under the grid (what an export wrote, where the PNG went)."""
        self.note_label.setText(text)
        self.note_label.setToolTip(tooltip)
        self.note_label.setVisible(bool(text))

    def save_dialog(self) -> Path | None:
        project = self.presenter.project
        if self.presenter.record is None or project is None:
            return None
        default = project.root / self.presenter.default_png_name()
        path, _ = QFileDialog.getSaveFileName(
            self, "Save grid PNG", str(default), "PNG images (*.png)"
        )
        if not path:
            return None
        try:
            saved = self.save_grid_png(Path(path))
        except OSError as error:  # held open by a viewer, a path too long for Windows …
            self.show_note(f"Could not save the grid: {error}")
            self.message.emit(f"Could not save the grid: {error}")
            return None
        self.show_note(f"Saved the grid to {saved}")
        self.message.emit(f"Grid saved to {saved}")
        return saved

    def save_grid_png(self, dest: Path) -> Path:
        """Copy the job's grid PNG to ``dest``; a grid without one is drawn from its cells."""
        return self.presenter.save_png(dest)

    def loupe_items(self) -> tuple[list[LoupeItem], int]:
        """The cells as loupe items (row by row, so ←/→ step through the checkpoints of one
        seed) and the focused cell's index; keys are negative (cells are not catalog images)."""
        entries, current = self.presenter.loupe_entries(self._focus)
        items = [
            LoupeItem(-(index + 1), str(entry.path), {"name": entry.name, "seed": str(entry.seed)})
            for index, entry in enumerate(entries)
        ]
        return items, current

    # -- zoom ---------------------------------------------------------------------------------

    def fit(self) -> None:
        self._fit = True
        geometry = self.grid_geometry()
        if geometry is not None:
            self.view.fitInView(geometry.scene_rect(), Qt.AspectRatioMode.KeepAspectRatio)
        self.view.update_headers()

    def is_fit(self) -> bool:
        return self._fit

    def scale(self) -> float:
        return self.view.transform().m11()

    def zoom_by(self, factor: float, under_mouse: bool = False) -> None:
        current = self.scale()
        wanted = min(max(current * factor, MIN_SCALE), MAX_SCALE)
        if wanted == current:
            return
        anchor = (
            QGraphicsView.ViewportAnchor.AnchorUnderMouse
            if under_mouse
            else QGraphicsView.ViewportAnchor.AnchorViewCenter
        )
        self.view.setTransformationAnchor(anchor)
        self.view.scale(wanted / current, wanted / current)
        self._fit = False
        self.view.update_headers()

    def zoom_out(self) -> None:
        self.zoom_by(1 / WHEEL_FACTOR)

    def zoom_1to1(self) -> None:
        """One image pixel per screen pixel, centred on the focused cell; again: fit."""
        if self.grid_geometry() is None:
            return
        if not self._fit and abs(self.scale() - 1.0) < 1e-6:
            self.fit()
            return
        self.view.resetTransform()
        self._fit = False
        self.view.centerOn(self.cell_rect(*self._focus).center())
        self.view.update_headers()

    def _view_resized(self) -> None:
        geometry = self.grid_geometry()
        if self._fit and geometry is not None:
            self.view.fitInView(geometry.scene_rect(), Qt.AspectRatioMode.KeepAspectRatio)

    # -- queries (tests, the window) ----------------------------------------------------------

    def grid_id(self) -> int | None:
        return self.presenter.record.id if self.presenter.record else None

    def record(self) -> GridRecord | None:
        return self.presenter.record

    def spec(self) -> GridSpec | None:
        return self.presenter.record.spec if self.presenter.record else None

    def grid_geometry(self) -> GridGeometry | None:
        """Where the cells sit in the scene (None with no grid open)."""
        return self.cells.geometry

    def column_count(self) -> int:
        shape = self.presenter.shape
        return shape.column_count if shape else 0

    def row_count(self) -> int:
        shape = self.presenter.shape
        return len(shape.seeds) if shape else 0

    def column_labels(self) -> list[str]:
        return self.presenter.column_labels()

    def row_labels(self) -> list[str]:
        return self.presenter.row_labels()

    def column_step(self, column: int) -> int:
        assert self.presenter.shape is not None
        return self.presenter.shape.column(column)[2]

    def cell(self, column: int, row: int) -> GridCellView | None:
        return self.presenter.cell(column, row)

    def cell_rect(self, column: int, row: int) -> QRectF:
        geometry = self.grid_geometry()
        assert geometry is not None
        return geometry.cell_rect(column, row)

    def focused(self) -> tuple[int, int]:
        return self._focus

    def focused_cell(self) -> GridCellView | None:
        return self.cell(*self._focus)

    def selection(self) -> tuple[int, int] | None:
        return self._selection

    def chosen_step(self) -> int | None:
        return self.presenter.chosen_step()

    def suggested_step(self) -> int | None:
        return self.presenter.suggested_step()

    def suggested_columns(self) -> list[int]:
        return self.presenter.suggested_columns()

    def column_scores(self) -> list[StepScore | None]:
        return list(self.presenter.column_scores)

    def column_tooltip(self, column: int) -> str:
        return self.presenter.column_tooltip(column)

    def suggestion_text(self) -> str:
        return self.presenter.suggestion_text()

    # -- internals: mouse ------------------------------------------------------------

    def escape(self) -> None:
        """Esc: drop the selected column range, else ask to leave the grid."""
        if self._selection is not None:
            self._selection = self._anchor = None
            self.cells.show_marks(None)
            self._update_actions()
            self.view.update_headers()
        else:
            self.closeRequested.emit()

    def _clicked(self, scene_pos: QPointF) -> None:
        geometry = self.grid_geometry()
        if geometry is None:
            return
        column = geometry.column_at(scene_pos.x())
        row = geometry.row_at(scene_pos.y())
        if column is not None and row is not None:
            self._selection = self._anchor = None
            self.set_focus(column, row)
            self.cells.show_marks(None)

    def _header_clicked(self, column: int, shift: bool) -> None:
        self.view.setFocus()
        if shift:
            anchor = self._anchor if self._anchor is not None else self._focus[0]
            self.set_focus(column, self._focus[1])
            self.select_columns(anchor, column)
            self._anchor = anchor
            return
        self._selection = None
        self._anchor = column
        self.set_focus(column, self._focus[1])
        self.choose(column, toggle=False)  # a click never undoes a choice; C does

    def _column_at_viewport_x(self, x: float) -> int | None:
        geometry = self.grid_geometry()
        if geometry is None:
            return None
        scene_x = self.view.mapToScene(QPoint(round(x), 0)).x()
        return geometry.column_at(scene_x)

    def _x_span(self, column: int) -> tuple[float, float]:
        """A column's left and right edge in the viewport (where the headers draw it)."""
        geometry = self.grid_geometry()
        assert geometry is not None
        rect = geometry.column_rect(column)
        transform = self.view.viewportTransform()
        left = transform.map(QPointF(rect.left(), 0)).x()
        right = transform.map(QPointF(rect.right(), 0)).x()
        return left, right

    def _update_actions(self) -> None:
        has_grid = self.presenter.shape is not None
        for button in (self.fit_button, self.one_button, self.choose_button, self.save_button):
            button.setEnabled(has_grid)
        self.refine_button.setEnabled(has_grid and self.selected_steps() is not None)
        self.export_button.setEnabled(self.chosen_step() is not None)
        self.export_button.setText(self.presenter.export_label())
        self.toolbar.place()
