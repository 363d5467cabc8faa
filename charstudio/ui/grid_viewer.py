"""The checkpoint grid viewer (workflow step 4): pick the "Goldilocks" step of a run.

Columns are the run's checkpoints (``NAME-40``), rows the seeds of the batch, optionally side by
side per base checkpoint (Z). The whole grid is one QGraphicsView, so zoom and pan are shared by
every cell by construction; the column labels, the identity plot above them and the seed labels
stay frozen at the edges (viewport margins) and follow the view. Cells arrive one by one while
the grid job runs (``add_cell``) or all at once from the catalog (``load_grid``), decoded off the
GUI thread. Scores, per-step statistics and the suggestion are the core's
(:mod:`charstudio.analysis.identity`); the viewer only draws them.

Keys: arrows move the focused cell, Shift+Left/Right select a range of columns (Refine), Enter or
E opens the focused cell (``openImage``), C chooses the focused column's step, Z toggles fit and
1:1, F fits, + and - zoom, R refines the selected range.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QObject, QPoint, QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QFontMetrics,
    QHelpEvent,
    QImage,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPaintEvent,
    QPen,
    QPixmap,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QGraphicsPixmapItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsSimpleTextItem,
    QGraphicsView,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QToolButton,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from charstudio.analysis.identity import (
    DEFAULT_IDENTITY_SIMILARITY,
    StepScore,
    Suggestion,
    step_scores,
    suggest_step,
)
from charstudio.atomic_files import copy_file_atomic
from charstudio.catalog import Project
from charstudio.engine.sweeps import model_display_name
from charstudio.training import records
from charstudio.training.checkpoint_grid import GridSpec
from charstudio.training.grid_records import (
    GridRecord,
    grid_job_state,
    read_cells,
    read_grid,
    set_chosen_step,
)
from charstudio.ui.image_canvas import ImageLoader, claims_shortcut
from charstudio.ui.loupe import LoupeItem

__all__ = ["GridCellView", "GridViewer"]

# -- looks -------------------------------------------------------------------------------------

VIEW_BG = QColor(38, 38, 38)  # the loupe's neutral grey: it does not tint colour judgement
HEADER_BG = QColor(50, 50, 50)
SLOT_BG = QColor(60, 60, 60)
TEXT = QColor(228, 228, 228)
MUTED = QColor(150, 150, 150)
FAILED = QColor(232, 110, 100)  # a cell that came out NaN
SUGGESTED = QColor(255, 190, 60)
CHOSEN = QColor(96, 204, 112)
SELECTED = QColor(80, 150, 255)
FOCUS = QColor(245, 245, 245)
MEAN_COLOR = QColor(90, 170, 255)
MIN_COLOR = QColor(255, 140, 60)
FACES_COLOR = QColor(170, 170, 170, 70)
THRESHOLD_COLOR = QColor(200, 200, 200, 140)

ROW_HEADER_W = 118
PLOT_H = 96
MODEL_BAND_H = 22
LABEL_BAND_H = 42
WHEEL_FACTOR = 1.25
MIN_SCALE, MAX_SCALE = 0.02, 16.0
HINT = (
    "←→↑↓ move · Enter/E open · C choose step · Shift+←/→ or Shift+click labels: range to "
    "refine (R) · wheel zoom · drag pan · F fit · Z 1:1 · Esc back"
)


def _pen(color: QColor, width: float = 1.0, style: Qt.PenStyle = Qt.PenStyle.SolidLine) -> QPen:
    pen = QPen(QBrush(color), width)
    pen.setStyle(style)
    pen.setCosmetic(True)  # widths in screen pixels, whatever the zoom
    return pen


def _tinted(color: QColor, alpha: int) -> QColor:
    tinted = QColor(color)
    tinted.setAlpha(alpha)
    return tinted


@dataclass
class GridCellView:
    """One cell as the viewer holds it. ``state``: "pending" (not made yet), "loading",
    "shown", "missing" (the file could not be read) or "failed" (it came out NaN: no file,
    ``error`` says why)."""

    z: int
    x: int
    y: int
    step: int
    seed: int
    path: str  # relative to the project, as recorded
    score: float | None = None
    faces: int | None = None
    state: str = "pending"
    error: str | None = None


@dataclass(frozen=True)
class _Layout:
    steps: tuple[int, ...]
    seeds: tuple[int, ...]
    models: tuple[str, ...]  # one entry per Z block ("" for the run's own model)
    cell_w: int
    cell_h: int

    @property
    def gap(self) -> int:
        return max(6, self.cell_w // 48)

    @property
    def z_gap(self) -> int:
        return self.gap * 8

    @property
    def column_count(self) -> int:
        return len(self.steps) * len(self.models)

    def column(self, index: int) -> tuple[int, int, int]:
        """(z, x, step) of a flat column index."""
        z, x = divmod(index, len(self.steps))
        return z, x, self.steps[x]

    def column_of(self, z: int, x: int) -> int:
        return z * len(self.steps) + x

    def column_rect(self, index: int) -> QRectF:
        z, x = divmod(index, len(self.steps))
        block = len(self.steps) * (self.cell_w + self.gap) - self.gap + self.z_gap
        left = z * block + x * (self.cell_w + self.gap)
        height = len(self.seeds) * (self.cell_h + self.gap) - self.gap
        return QRectF(left, 0, self.cell_w, height)

    def cell_rect(self, column: int, row: int) -> QRectF:
        rect = self.column_rect(column)
        return QRectF(rect.left(), row * (self.cell_h + self.gap), self.cell_w, self.cell_h)

    def block_rect(self, z: int) -> QRectF:
        first = self.column_rect(self.column_of(z, 0))
        last = self.column_rect(self.column_of(z, len(self.steps) - 1))
        return first.united(last)

    def scene_rect(self) -> QRectF:
        rect = QRectF()
        for z in range(len(self.models)):
            rect = rect.united(self.block_rect(z))
        margin = self.gap
        return rect.adjusted(-margin, -margin, margin, margin)

    def column_at(self, scene_x: float) -> int | None:
        half = self.gap / 2
        for index in range(self.column_count):
            rect = self.column_rect(index)
            if rect.left() - half <= scene_x <= rect.right() + half:
                return index
        return None

    def row_at(self, scene_y: float) -> int | None:
        half = self.gap / 2
        for row in range(len(self.seeds)):
            top = row * (self.cell_h + self.gap)
            if top - half <= scene_y <= top + self.cell_h + half:
                return row
        return None


@dataclass
class _Slot:
    """The scene items of one cell."""

    background: QGraphicsRectItem
    text: QGraphicsSimpleTextItem
    pixmap: QGraphicsPixmapItem


# -- the frozen headers ------------------------------------------------------------------------


class _ColumnHeader(QWidget):
    """Above the viewport: the identity plot, the model band (Z) and the step labels. Click a
    label to choose that step; Shift+click to select a range to refine."""

    def __init__(self, viewer: GridViewer, parent: QWidget) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self.setMouseTracking(True)
        self.setCursor(Qt.CursorShape.PointingHandCursor)

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QBrush(HEADER_BG))
        viewer = self._viewer
        if viewer.layout_info() is not None:
            viewer._paint_plot(painter, QRectF(0, 0, self.width(), PLOT_H))
            top = PLOT_H
            if viewer._has_z():
                viewer._paint_models(painter, QRectF(0, top, self.width(), MODEL_BAND_H))
                top += MODEL_BAND_H
            viewer._paint_labels(painter, QRectF(0, top, self.width(), LABEL_BAND_H))
        painter.end()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            return
        column = self._viewer._column_at_viewport_x(event.position().x())
        if column is not None:
            shift = bool(event.modifiers() & Qt.KeyboardModifier.ShiftModifier)
            self._viewer._header_clicked(column, shift)
        event.accept()

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ToolTip and isinstance(event, QHelpEvent):
            column = self._viewer._column_at_viewport_x(event.pos().x())
            text = self._viewer.column_tooltip(column) if column is not None else ""
            if text:
                QToolTip.showText(event.globalPos(), text, self)
            else:
                QToolTip.hideText()
            return True
        return super().event(event)


class _RowHeader(QWidget):
    """Left of the viewport: the seed of each row."""

    def __init__(self, viewer: GridViewer, parent: QWidget) -> None:
        super().__init__(parent)
        self._viewer = viewer

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QBrush(HEADER_BG))
        self._viewer._paint_rows(painter, self.width())
        painter.end()


class _Corner(QWidget):
    """Top left: the plot's legend and scale, and which way steps and seeds go."""

    def __init__(self, viewer: GridViewer, parent: QWidget) -> None:
        super().__init__(parent)
        self._viewer = viewer

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QBrush(HEADER_BG))
        self._viewer._paint_corner(painter, self.width(), self.height())
        painter.end()


class _GridView(QGraphicsView):
    """The scene of all cells, with the headers in its viewport margins."""

    KEYS = frozenset(
        {
            Qt.Key.Key_Left,
            Qt.Key.Key_Right,
            Qt.Key.Key_Up,
            Qt.Key.Key_Down,
            Qt.Key.Key_Return,
            Qt.Key.Key_Enter,
            Qt.Key.Key_E,
            Qt.Key.Key_C,
            Qt.Key.Key_Z,
            Qt.Key.Key_F,
            Qt.Key.Key_R,
            Qt.Key.Key_Plus,
            Qt.Key.Key_Equal,
            Qt.Key.Key_Minus,
            Qt.Key.Key_Escape,
        }
    )
    # The window's culling keys (P, X, U, 0-9, O, Q, L, B, also with Shift) and S/N would act
    # on the hidden library image: while the grid has the focus they do nothing.
    SWALLOWED = frozenset(
        {
            *(getattr(Qt.Key, f"Key_{c}") for c in "PXUOQLBSN"),
            *(getattr(Qt.Key, f"Key_{n}") for n in range(10)),
        }
    )

    def __init__(self, viewer: GridViewer, scene: QGraphicsScene) -> None:
        super().__init__(scene, viewer)
        self._viewer = viewer
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setBackgroundBrush(QBrush(VIEW_BG))
        self.setRenderHints(
            QPainter.RenderHint.Antialiasing | QPainter.RenderHint.SmoothPixmapTransform
        )
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.header = _ColumnHeader(viewer, self)
        self.rows = _RowHeader(viewer, self)
        self.corner = _Corner(viewer, self)
        self.viewport().installEventFilter(self)
        self.set_header_height(PLOT_H + LABEL_BAND_H)

    def set_header_height(self, height: int) -> None:
        self.setViewportMargins(ROW_HEADER_W, height, 0, 0)
        self.place_headers()

    def place_headers(self) -> None:
        area = self.viewport().geometry()
        self.header.setGeometry(area.x(), 0, area.width(), area.y())
        self.rows.setGeometry(0, area.y(), area.x(), area.height())
        self.corner.setGeometry(0, 0, area.x(), area.y())
        self.update_headers()

    def update_headers(self) -> None:
        self.header.update()
        self.rows.update()
        self.corner.update()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.viewport() and event.type() == QEvent.Type.Resize:
            self.place_headers()
            self._viewer._view_resized()
        return super().eventFilter(watched, event)

    def scrollContentsBy(self, dx: int, dy: int) -> None:
        super().scrollContentsBy(dx, dy)
        self.update_headers()

    def event(self, event: QEvent) -> bool:
        if (
            event.type() == QEvent.Type.ShortcutOverride
            and isinstance(event, QKeyEvent)
            and event.key() in self.SWALLOWED
            and not (
                event.modifiers()
                & ~(Qt.KeyboardModifier.KeypadModifier | Qt.KeyboardModifier.ShiftModifier)
            )
        ):
            event.accept()
            return True
        return claims_shortcut(event, self.KEYS) or super().event(event)

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120
        if steps:
            self._viewer.zoom_by(WHEEL_FACTOR**steps, under_mouse=True)
        event.accept()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self._viewer._clicked(self.mapToScene(event.position().toPoint()))
        super().mousePressEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self._viewer._clicked(self.mapToScene(event.position().toPoint()))
            self._viewer.open_focused()
            event.accept()
            return
        super().mouseDoubleClickEvent(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if not self._viewer._handle_key(event):
            super().keyPressEvent(event)


# -- the viewer --------------------------------------------------------------------------------


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
        self._project: Project | None = None
        self._record: GridRecord | None = None
        self._layout: _Layout | None = None
        self._names: dict[int, str] = {}
        self._cells: dict[tuple[int, int, int], GridCellView] = {}
        self._slots: dict[tuple[int, int], _Slot] = {}
        self._marks: list[QGraphicsRectItem] = []
        self._column_scores: list[StepScore | None] = []
        self._suggestion: Suggestion | None = None
        self._job_status: str | None = None
        self._focus = (0, 0)
        self._anchor: int | None = None  # the column a range selection starts from
        self._selection: tuple[int, int] | None = None  # first, last column (inclusive)
        self._fit = True
        self._loads: dict[int, tuple[int, int, str]] = {}  # loader key -> column, row, path
        self._next_key = 1

        self._scene = QGraphicsScene(self)
        self._focus_item = QGraphicsRectItem()
        self._focus_item.setPen(_pen(FOCUS, 3))
        self._focus_item.setBrush(QBrush(Qt.BrushStyle.NoBrush))
        self._focus_item.setZValue(10)
        self._focus_item.hide()
        self._scene.addItem(self._focus_item)
        self.loader = ImageLoader(capacity=8, parent=self)
        self.loader.loaded.connect(self._on_loaded)

        self.view = _GridView(self, self._scene)
        self.setFocusProxy(self.view)  # focusing the viewer gives the keys to the grid
        self.title_label = QLabel("No grid open")
        font = self.title_label.font()
        font.setBold(True)
        self.title_label.setFont(font)
        self.title_label.setTextFormat(Qt.TextFormat.PlainText)
        self.detail_label = QLabel()
        self.detail_label.setTextFormat(Qt.TextFormat.PlainText)
        self.detail_label.setStyleSheet("color: #888;")
        self.fit_button = self._button("Fit", "Fit the whole grid (F)", self.fit)
        self.one_button = self._button("1:1", "Zoom to 1:1 on the focused cell (Z)", self.zoom_1to1)
        self.choose_button = self._button(
            "Choose step", "Choose the focused column's step (C, or click its label)", self.choose
        )
        self.refine_button = self._button(
            "Refine…",
            "A new grid every 5 steps between the selected columns (Shift+←/→ or "
            "Shift+click two column labels; R)",
            self.refine,
        )
        self.save_button = self._button("Save grid PNG…", "Save the grid image", self.save_dialog)
        self.export_button = self._button(
            "Export chosen step…",
            "Write the chosen step as NAME.pt and NAME.safetensors (A1111, ComfyUI, diffusers)",
            self.request_export,
        )
        self.reason_label = QLabel()
        self.reason_label.setWordWrap(True)
        self.reason_label.setTextFormat(Qt.TextFormat.PlainText)
        self.reason_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.reason_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.note_label = QLabel()
        self.note_label.setWordWrap(True)
        self.note_label.setTextFormat(Qt.TextFormat.PlainText)
        self.note_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.note_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.note_label.hide()
        self.hint_label = QLabel(HINT)
        self.hint_label.setStyleSheet("color: #888;")
        self.hint_label.setWordWrap(True)
        # Long titles and hints wrap or clip instead of widening the main window past the
        # screen (the viewer shares it with two docks).
        for label in (self.title_label, self.detail_label, self.hint_label):
            label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            label.setMinimumWidth(1)

        top = QHBoxLayout()
        titles = QVBoxLayout()
        titles.setSpacing(0)
        titles.addWidget(self.title_label)
        titles.addWidget(self.detail_label)
        top.addLayout(titles, 1)
        for button in (
            self.fit_button,
            self.one_button,
            self.choose_button,
            self.refine_button,
            self.save_button,
            self.export_button,
        ):
            top.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(4)
        layout.addLayout(top)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.reason_label)
        layout.addWidget(self.note_label)
        layout.addWidget(self.hint_label)
        self.clear()

    def _button(self, text: str, tooltip: str, slot: Any) -> QToolButton:
        button = QToolButton(self)
        button.setText(text)
        button.setToolTip(tooltip)
        button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        button.clicked.connect(lambda _=False: slot())
        return button

    def sizeHint(self) -> QSize:
        return QSize(1100, 800)

    # -- loading ------------------------------------------------------------------------------

    def set_project(self, project: Project | None) -> None:
        """The project whose grids are shown; None (before a project closes) clears the view."""
        if project is not self._project:
            self.clear()
        self._project = project

    def clear(self) -> None:
        self._drop_items()
        self._record = self._layout = self._suggestion = None
        self._column_scores = []
        self._job_status = None
        self._focus, self._anchor, self._selection = (0, 0), None, None
        self._focus_item.hide()
        self.title_label.setText("No grid open")
        self.detail_label.setText("")
        self.reason_label.setText(
            "Make a grid of a training run's steps in the Compare panel, or open an earlier one "
            "from its list."
        )
        self.reason_label.setStyleSheet("")
        self.note_label.hide()
        self.view.set_header_height(PLOT_H + LABEL_BAND_H)
        self._update_actions()

    def load_grid(self, project: Project, grid_id: int) -> None:
        """Show grid ``grid_id`` from the catalog: its cells so far, scores, suggestion and
        chosen step. Loading the grid already shown refreshes it and keeps zoom and focus."""
        same = self._record is not None and self._record.id == grid_id
        if project is not self._project:
            self.clear()
            self._project = project
        record = read_grid(project.catalog, grid_id)
        status, result = grid_job_state(project.catalog, record.job_id)
        cells = [_cell_from(c) for c in read_cells(project.catalog, grid_id)]
        names, models = self._names_and_models(project, record, cells)
        layout = self._make_layout(record.spec, cells, models)
        keep_view = same and layout == self._layout
        if not keep_view:
            self._rebuild(layout)
        self._record = record
        self._names = names
        self._job_status = status
        for cell in cells:
            self._put_cell(cell)
        self._refresh_scores(result)
        self._update_title()
        self._update_marks()
        self._update_actions()
        if not keep_view:
            self.set_focus(0, 0)
            self.fit()
        self.view.update_headers()

    def add_cell(self, cell: dict[str, Any]) -> None:
        """A cell the running job just made (a progress event's ``detail["cell"]``)."""
        if self._layout is None:
            return
        self._put_cell(_cell_from(cell))
        self._refresh_scores({})
        self._update_title()
        self.view.update_headers()

    def _names_and_models(
        self, project: Project, record: GridRecord, cells: Iterable[GridCellView]
    ) -> tuple[dict[int, str], tuple[str, ...]]:
        """Column labels as the job names the checkpoints (NAME-STEP, the file stems), and the
        Z models (the run's own model when the grid names none)."""
        names: dict[int, str] = {}
        run_model = ""
        if record.run_id is not None:
            try:
                run = records.get_run(project.catalog, record.run_id)
            except KeyError:
                run = None
            if run is not None:
                run_model = str(run.params.get("model") or "")
                for checkpoint in records.run_checkpoints(project.catalog, run.id):
                    names[checkpoint.step] = Path(checkpoint.path).stem
                steps = record.spec.steps if record.spec else tuple(c.step for c in cells)
                for step in steps:
                    names.setdefault(step, f"{run.name}-{step}")
        models = record.spec.models if record.spec and record.spec.models else (run_model,)
        return names, tuple(models)

    @staticmethod
    def _make_layout(
        spec: GridSpec | None, cells: Sequence[GridCellView], models: tuple[str, ...]
    ) -> _Layout:
        if spec is not None:
            steps = spec.steps
            seeds = tuple(spec.seed + i for i in range(spec.batch))
            size = (spec.width, spec.height)
        else:  # unreadable params: the shape the cells have
            steps = tuple(sorted({c.step for c in cells}))
            seeds = tuple(sorted({c.seed for c in cells}))
            size = (512, 512)
        count = max([len(models), *(c.z + 1 for c in cells)])
        models = models + ("",) * (count - len(models))
        return _Layout(steps or (0,), seeds or (0,), models, max(8, size[0]), max(8, size[1]))

    def _drop_items(self) -> None:
        self.loader.clear()
        self._loads.clear()
        for slot in self._slots.values():
            for item in (slot.background, slot.text, slot.pixmap):
                self._scene.removeItem(item)
        for mark in self._marks:
            self._scene.removeItem(mark)
        self._slots.clear()
        self._marks.clear()
        self._cells.clear()

    def _rebuild(self, layout: _Layout) -> None:
        self._drop_items()
        self._layout = layout
        self._focus, self._anchor, self._selection = (0, 0), None, None
        font = QFont()
        font.setPixelSize(max(10, layout.cell_w // 16))
        for column in range(layout.column_count):
            mark = QGraphicsRectItem(layout.column_rect(column).adjusted(-2, -2, 2, 2))
            mark.setZValue(5)
            mark.hide()
            self._scene.addItem(mark)
            self._marks.append(mark)
            for row in range(len(layout.seeds)):
                rect = layout.cell_rect(column, row)
                background = QGraphicsRectItem(rect)
                background.setBrush(QBrush(SLOT_BG))
                background.setPen(QPen(Qt.PenStyle.NoPen))
                text = QGraphicsSimpleTextItem("waiting…")
                text.setFont(font)
                text.setBrush(QBrush(MUTED))
                box = text.boundingRect()
                text.setPos(rect.center() - QPointF(box.width() / 2, box.height() / 2))
                pixmap = QGraphicsPixmapItem()
                pixmap.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
                pixmap.setPos(rect.topLeft())
                pixmap.setZValue(1)
                for item in (background, text, pixmap):
                    self._scene.addItem(item)
                self._slots[(column, row)] = _Slot(background, text, pixmap)
        self._scene.setSceneRect(layout.scene_rect())
        height = PLOT_H + LABEL_BAND_H + (MODEL_BAND_H if len(layout.models) > 1 else 0)
        self.view.set_header_height(height)

    def _put_cell(self, cell: GridCellView) -> None:
        assert self._layout is not None
        key = (cell.z, cell.x, cell.y)
        old = self._cells.get(key)
        if old is not None and old.path == cell.path and old.state in ("loading", "shown"):
            old.score, old.faces = cell.score, cell.faces  # scores arrive after the image
            return
        layout = self._layout
        if (
            cell.z >= len(layout.models)
            or cell.x >= len(layout.steps)
            or cell.y >= len(layout.seeds)
        ):
            return  # outside the grid's shape (its params edited by hand)
        column = layout.column_of(cell.z, cell.x)
        slot = self._slots[(column, cell.y)]
        self._cells[key] = cell
        if cell.error is not None:
            cell.state = "failed"
            slot.text.setText("failed: NaN")
            slot.text.setBrush(QBrush(FAILED))
            slot.text.setToolTip(cell.error)
            slot.background.setToolTip(cell.error)
            slot.pixmap.setPixmap(QPixmap())
            self._center_text(slot, column, cell.y)
            return
        if self._project is None or not cell.path:
            return
        cell.state = "loading"
        slot.text.setText("loading…")
        self._center_text(slot, column, cell.y)
        load_key = self._next_key
        self._next_key += 1
        path = str(self._project.file_path(cell.path))
        self._loads[load_key] = (column, cell.y, path)
        image = self.loader.request(load_key, path)
        if image is not None:
            self._on_loaded(load_key, image)

    def _center_text(self, slot: _Slot, column: int, row: int) -> None:
        assert self._layout is not None
        rect = self._layout.cell_rect(column, row)
        box = slot.text.boundingRect()
        slot.text.setPos(rect.center() - QPointF(box.width() / 2, box.height() / 2))

    def _on_loaded(self, key: int, image: QImage) -> None:
        target = self._loads.pop(key, None)
        if target is None or self._layout is None or self._project is None:
            return
        column, row, path = target
        z, x, _step = self._layout.column(column)
        cell = self._cells.get((z, x, row))
        if cell is None or str(self._project.file_path(cell.path)) != path:
            return  # replaced since
        slot = self._slots[(column, row)]
        if image.isNull():
            cell.state = "missing"
            slot.text.setText("file missing")
            self._center_text(slot, column, row)
            slot.pixmap.setPixmap(QPixmap())
            return
        pixmap = QPixmap.fromImage(image)
        rect = self._layout.cell_rect(column, row)
        # Cells are the grid's size; anything else (a resized file) is fitted into the slot.
        scale = min(rect.width() / pixmap.width(), rect.height() / pixmap.height())
        slot.pixmap.setPixmap(pixmap)
        slot.pixmap.setScale(scale)
        offset = QPointF(
            (rect.width() - pixmap.width() * scale) / 2,
            (rect.height() - pixmap.height() * scale) / 2,
        )
        slot.pixmap.setPos(rect.topLeft() + offset)
        slot.text.setText("")
        cell.state = "shown"

    # -- scores and suggestion ---------------------------------------------------------------

    def _refresh_scores(self, result: dict[str, Any]) -> None:
        layout = self._layout
        if layout is None:
            return
        self._column_scores = []
        for column in range(layout.column_count):
            z, x, step = layout.column(column)
            cells = [
                c
                for (cz, cx, _y), c in self._cells.items()
                if (cz, cx) == (z, x) and c.error is None  # failed cells are not scored
            ]
            if any(c.score is not None for c in cells):
                self._column_scores.append(step_scores({step: [c.score for c in cells]})[0])
            else:
                self._column_scores.append(None)
        self._suggestion = self._make_suggestion(result)
        self.reason_label.setText(self.suggestion_text())
        self.reason_label.setStyleSheet(
            "color: #c8911a; font-weight: bold;" if self.suggested_step() is not None else ""
        )

    def _make_suggestion(self, result: dict[str, Any]) -> Suggestion | None:
        stored = result.get("suggestion")
        if isinstance(stored, dict) and stored.get("reason"):
            step = stored.get("step")
            return Suggestion(int(step) if isinstance(step, int) else None, str(stored["reason"]))
        cells = [c for c in self._cells.values() if c.error is None]
        if any(c.score is not None for c in cells):
            by_step: dict[int, list[float | None]] = {}
            for cell in cells:
                by_step.setdefault(cell.step, []).append(cell.score)
            return suggest_step(step_scores(by_step))
        if self._job_status in ("queued", "running"):
            return None  # scores come at the end of the job
        if self._job_status == "canceled" or result.get("canceled"):
            why = "the grid was canceled before its cells were scored"
        elif self._job_status == "failed":
            why = "the grid job failed before its cells were scored"
        elif cells and any(c.faces is not None for c in cells):
            why = "the face recognizer was not available when this grid was made"
        else:
            why = "this grid's cells were never scored"
        return Suggestion(None, f"no identity scores: {why}")

    def suggestion_text(self) -> str:
        """The line under the grid: the suggested step and why, or why there is none."""
        if self._layout is None:
            return ""
        suggestion = self._suggestion
        if suggestion is None:
            made = sum(1 for c in self._cells.values() if c.path or c.error is not None)
            total = self._layout.column_count * len(self._layout.seeds)
            return (
                f"Making the grid: {made} of {total} cells. Identity scores and the suggested "
                "step come when every cell is made."
            )
        reason = suggestion.reason
        if suggestion.step is not None:
            reason = reason.removeprefix(f"step {suggestion.step} is the ")
            return f"Suggested: step {suggestion.step} — {reason}"
        if reason.startswith("no identity scores"):
            return (
                f"No identity scores: {reason.partition(':')[2].strip().rstrip('.')}. The grid "
                "works without "
                "them: judge the faces by eye."
            )
        return f"No suggestion: {reason}"

    # -- the artist's actions -----------------------------------------------------------------

    def set_focus(self, column: int, row: int) -> None:
        layout = self._layout
        if layout is None:
            return
        column = min(max(column, 0), layout.column_count - 1)
        row = min(max(row, 0), len(layout.seeds) - 1)
        self._focus = (column, row)
        rect = layout.cell_rect(column, row)
        self._focus_item.setRect(rect.adjusted(-1, -1, 1, 1))
        self._focus_item.show()
        if not self._fit:
            self.view.ensureVisible(rect, 24, 24)
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
        self._update_marks()
        self._update_actions()

    def select_columns(self, first: int, last: int) -> None:
        """Select the columns ``first``..``last`` (the range Refine compares every 5 steps)."""
        if self._layout is None:
            return
        count = self._layout.column_count
        first, last = sorted((min(max(first, 0), count - 1), min(max(last, 0), count - 1)))
        self._anchor = first
        self._selection = (first, last)
        self._update_marks()
        self._update_actions()
        self.view.update_headers()

    def selected_steps(self) -> tuple[int, int] | None:
        """The first and last step of the selected columns (None unless two steps differ)."""
        if self._layout is None or self._selection is None:
            return None
        steps = [
            self._layout.column(c)[2] for c in range(self._selection[0], self._selection[1] + 1)
        ]
        low, high = min(steps), max(steps)
        return (low, high) if low != high else None

    def open_focused(self) -> None:
        cell = self.focused_cell()
        if cell is None or not cell.path or self._project is None:
            return
        self.openImage.emit(str(self._project.file_path(cell.path)))

    def choose(self, column: int | None = None, toggle: bool = True) -> None:
        """Choose a column's step (the focused one by default) as this grid's chosen step,
        stored in ``grids.chosen_step``; with ``toggle`` (C) choosing it again clears it."""
        if self._layout is None or self._record is None or self._project is None:
            return
        column = self._focus[0] if column is None else column
        step = self._layout.column(column)[2]
        if step == self._record.chosen_step and not toggle:
            return
        new = None if step == self._record.chosen_step else step
        set_chosen_step(self._project.catalog, self._record.id, new)
        self._record = read_grid(self._project.catalog, self._record.id)
        self._update_title()
        self._update_marks()
        self._update_actions()
        self.view.update_headers()
        self.chosenStepChanged.emit(self._record.id, -1 if new is None else new)
        label = self._names.get(step, f"step {step}")
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
        if step is None or self._record is None or self._record.run_id is None:
            self.message.emit("Choose a step first (C, or click a column label)")
            return
        self.exportRequested.emit(self._record.run_id, step)

    def show_note(self, text: str, tooltip: str = "") -> None:
        """A line under the grid (what an export wrote, where the PNG went)."""
        self.note_label.setText(text)
        self.note_label.setToolTip(tooltip)
        self.note_label.setVisible(bool(text))

    def save_dialog(self) -> Path | None:
        if self._record is None or self._project is None:
            return None
        default = self._project.root / f"{self._base_name()}-grid-{self._record.id}.png"
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
        """Copy the job's grid PNG to ``dest``; a grid without one (still running, canceled)
        is drawn from its cells with A1111-style legends, as the job draws it."""
        if self._record is None or self._project is None:
            raise ValueError("no grid is open")
        dest = Path(dest)
        if dest.suffix.lower() != ".png":
            dest = dest.with_name(dest.name + ".png")
        dest.parent.mkdir(parents=True, exist_ok=True)
        stored = self._project.file_path(self._record.path) if self._record.path else None
        if stored is not None and stored.is_file():
            copy_file_atomic(stored, dest)
        else:
            from charstudio.metadata.imagefile import write_png

            write_png(self.render_grid_image(), dest, None)
        return dest

    def render_grid_image(self) -> Any:
        """The grid as one PIL image (the job's legends: NAME-STEP with scores, Seed: N)."""
        from PIL import Image

        from charstudio.engine.grid_image import make_grid_image, make_zgrid

        layout = self._layout
        if layout is None or self._project is None:
            raise ValueError("no grid is open")
        grids = []
        for z in range(len(layout.models)):
            images: dict[tuple[int, int], Image.Image | None] = {}
            for (cz, x, y), cell in self._cells.items():
                path = self._project.file_path(cell.path) if cell.path else None
                if cz == z and path is not None and path.is_file():
                    with Image.open(path) as opened:
                        images[(x, y)] = opened.convert("RGB")
            labels = [self._legend(layout.column_of(z, x)) for x in range(len(layout.steps))]
            seeds = [f"Seed: {seed}" for seed in layout.seeds]
            grids.append(
                make_grid_image(images, labels, seeds, cell_size=(layout.cell_w, layout.cell_h))
            )
        if len(grids) == 1:
            return grids[0]
        return make_zgrid(grids, [self._model_label(m) for m in layout.models])

    def loupe_items(self) -> tuple[list[LoupeItem], int]:
        """The cells as loupe items (row by row, so ←/→ step through the checkpoints of one
        seed) and the focused cell's index; keys are negative (cells are not catalog images)."""
        items: list[LoupeItem] = []
        current = 0
        layout = self._layout
        if layout is None or self._project is None:
            return items, current
        for row in range(len(layout.seeds)):
            for column in range(layout.column_count):
                cell = self.cell(column, row)
                if cell is None or not cell.path:
                    continue
                if (column, row) == self._focus:
                    current = len(items)
                label = self._names.get(cell.step, f"step {cell.step}")
                info = {"name": f"{label} · seed {cell.seed}", "seed": str(cell.seed)}
                path = str(self._project.file_path(cell.path))
                items.append(LoupeItem(-(len(items) + 1), path, info))
        return items, current

    # -- zoom ---------------------------------------------------------------------------------

    def fit(self) -> None:
        self._fit = True
        if self._layout is not None:
            self.view.fitInView(self._layout.scene_rect(), Qt.AspectRatioMode.KeepAspectRatio)
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

    def zoom_1to1(self) -> None:
        """One image pixel per screen pixel, centred on the focused cell; again: fit."""
        if self._layout is None:
            return
        if not self._fit and abs(self.scale() - 1.0) < 1e-6:
            self.fit()
            return
        self.view.resetTransform()
        self._fit = False
        self.view.centerOn(self._layout.cell_rect(*self._focus).center())
        self.view.update_headers()

    def _view_resized(self) -> None:
        if self._fit and self._layout is not None:
            self.view.fitInView(self._layout.scene_rect(), Qt.AspectRatioMode.KeepAspectRatio)

    # -- queries (tests, the window) ----------------------------------------------------------

    def grid_id(self) -> int | None:
        return self._record.id if self._record else None

    def record(self) -> GridRecord | None:
        return self._record

    def spec(self) -> GridSpec | None:
        return self._record.spec if self._record else None

    def layout_info(self) -> _Layout | None:
        return self._layout

    def column_count(self) -> int:
        return self._layout.column_count if self._layout else 0

    def row_count(self) -> int:
        return len(self._layout.seeds) if self._layout else 0

    def column_labels(self) -> list[str]:
        if self._layout is None:
            return []
        return [
            self._names.get(step, f"step {step}")
            for _z, _x, step in map(self._layout.column, range(self._layout.column_count))
        ]

    def row_labels(self) -> list[str]:
        return [f"Seed {seed}" for seed in self._layout.seeds] if self._layout else []

    def column_step(self, column: int) -> int:
        assert self._layout is not None
        return self._layout.column(column)[2]

    def cell(self, column: int, row: int) -> GridCellView | None:
        if self._layout is None:
            return None
        z, x, _step = self._layout.column(column)
        return self._cells.get((z, x, row))

    def cell_rect(self, column: int, row: int) -> QRectF:
        assert self._layout is not None
        return self._layout.cell_rect(column, row)

    def focused(self) -> tuple[int, int]:
        return self._focus

    def focused_cell(self) -> GridCellView | None:
        return self.cell(*self._focus)

    def selection(self) -> tuple[int, int] | None:
        return self._selection

    def chosen_step(self) -> int | None:
        return self._record.chosen_step if self._record else None

    def suggested_step(self) -> int | None:
        return self._suggestion.step if self._suggestion else None

    def suggested_columns(self) -> list[int]:
        step = self.suggested_step()
        if step is None or self._layout is None:
            return []
        return [c for c in range(self._layout.column_count) if self._layout.column(c)[2] == step]

    def column_scores(self) -> list[StepScore | None]:
        return list(self._column_scores)

    def column_tooltip(self, column: int) -> str:
        if self._layout is None:
            return ""
        z, _x, step = self._layout.column(column)
        lines = [self._names.get(step, f"step {step}")]
        if self._has_z():
            lines.append(self._model_label(self._layout.models[z]))
        failed = [c for (cz, cx, _y), c in self._cells.items() if (cz, cx) == (z, _x) and c.error]
        if failed:
            lines.append(f"{len(failed)} cell(s) failed: {failed[0].error}")
        score = self._column_scores[column] if column < len(self._column_scores) else None
        if score is not None:
            faces = round(score.detection_rate * score.cells)
            low = "-" if score.minimum is None else f"{score.minimum:.2f}"
            mean = "-" if score.mean is None else f"{score.mean:.2f}"
            lines.append(f"identity mean {mean} · lowest {low} · faces {faces}/{score.cells}")
        if step == self.suggested_step():
            lines.append("★ suggested")
        if step == self.chosen_step():
            lines.append("✓ chosen")
        lines.append("Click: choose this step · Shift+click: select a range to refine")
        return "\n".join(lines)

    # -- internals: keys and mouse ------------------------------------------------------------

    def _handle_key(self, event: QKeyEvent) -> bool:
        if self._layout is None:
            return False
        modifiers = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
        shift = modifiers == Qt.KeyboardModifier.ShiftModifier
        if modifiers and not shift:
            return False
        key = event.key()
        moves = {
            Qt.Key.Key_Left: (-1, 0),
            Qt.Key.Key_Right: (1, 0),
            Qt.Key.Key_Up: (0, -1),
            Qt.Key.Key_Down: (0, 1),
        }
        if key in moves:
            dx, dy = moves[key]
            self.move_focus(dx, dy, extend=shift)
        elif key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.zoom_by(WHEEL_FACTOR)
        elif shift:
            return False
        elif key in (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_E):
            self.open_focused()
        elif key == Qt.Key.Key_C:
            self.choose()
        elif key == Qt.Key.Key_Z:
            self.zoom_1to1()
        elif key == Qt.Key.Key_F:
            self.fit()
        elif key == Qt.Key.Key_R:
            self.refine()
        elif key == Qt.Key.Key_Minus:
            self.zoom_by(1 / WHEEL_FACTOR)
        elif key == Qt.Key.Key_Escape:
            if self._selection is not None:
                self._selection = self._anchor = None
                self._update_marks()
                self._update_actions()
                self.view.update_headers()
            else:
                self.closeRequested.emit()
        else:
            return False
        event.accept()
        return True

    def _clicked(self, scene_pos: QPointF) -> None:
        if self._layout is None:
            return
        column = self._layout.column_at(scene_pos.x())
        row = self._layout.row_at(scene_pos.y())
        if column is not None and row is not None:
            self._selection = self._anchor = None
            self.set_focus(column, row)
            self._update_marks()

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
        if self._layout is None:
            return None
        scene_x = self.view.mapToScene(QPoint(round(x), 0)).x()
        return self._layout.column_at(scene_x)

    # -- internals: marks, title, actions -----------------------------------------------------

    def _update_marks(self) -> None:
        layout = self._layout
        if layout is None:
            return
        chosen, suggested = self.chosen_step(), self.suggested_step()
        selection = self._selection
        for column, mark in enumerate(self._marks):
            step = layout.column(column)[2]
            selected = selection is not None and selection[0] <= column <= selection[1]
            # Outlines only: a tint over the cells would change the colours being judged.
            if step == chosen:
                mark.setPen(_pen(CHOSEN, 3))
            elif step == suggested:
                mark.setPen(_pen(SUGGESTED, 2, Qt.PenStyle.DashLine))
            elif selected:
                mark.setPen(_pen(SELECTED, 2))
            mark.setBrush(QBrush(Qt.BrushStyle.NoBrush))
            mark.setVisible(selected or step in (chosen, suggested))

    def _update_title(self) -> None:
        record, layout = self._record, self._layout
        if record is None or layout is None:
            return
        run = self._base_name()
        steps = layout.steps
        if len(steps) > 2 and all(
            b - a == steps[1] - steps[0] for a, b in itertools.pairwise(steps)
        ):
            steps_text = f"steps {steps[0]}–{steps[-1]} every {steps[1] - steps[0]}"
        else:
            steps_text = "steps " + ", ".join(map(str, steps))
        title = f"Grid {record.id} · {run} · {steps_text} · {len(layout.seeds)} seeds"
        if len(layout.models) > 1:
            title += f" · {len(layout.models)} models"
        chosen = self.chosen_step()
        if chosen is not None:
            title += f" · chosen: {self._names.get(chosen, chosen)}"
        self.title_label.setText(title)
        spec = record.spec
        parts = []
        if spec is not None:
            sampler = f"{spec.sampler} {spec.schedule_type or ''}".strip()
            parts.append(
                f"{sampler}, {spec.sampling_steps} steps, CFG {spec.cfg_scale:g}, "
                f"{spec.width}×{spec.height}, seeds {spec.seed}–{spec.seed + spec.batch - 1}"
            )
        made = sum(1 for c in self._cells.values() if c.path or c.error is not None)
        total = layout.column_count * len(layout.seeds)
        if self._job_status in ("queued", "running"):
            parts.append(f"making: {made} of {total} cells")
        elif self._job_status in ("canceled", "failed"):
            parts.append(f"{self._job_status}: {made} of {total} cells")
        elif made < total:
            parts.append(f"incomplete: {made} of {total} cells")
        self.detail_label.setText(" · ".join(parts))
        if spec is not None:
            self.detail_label.setToolTip(f"Prompt: {spec.prompt}")

    def _update_actions(self) -> None:
        has_grid = self._layout is not None
        for button in (self.fit_button, self.one_button, self.choose_button, self.save_button):
            button.setEnabled(has_grid)
        self.refine_button.setEnabled(has_grid and self.selected_steps() is not None)
        chosen = self.chosen_step()
        self.export_button.setEnabled(chosen is not None)
        label = self._names.get(chosen, "") if chosen is not None else ""
        self.export_button.setText(f"Export {label}…" if label else "Export chosen step…")

    def _base_name(self) -> str:
        if self._project is not None and self._record is not None and self._record.run_id:
            try:
                return records.get_run(self._project.catalog, self._record.run_id).name
            except KeyError:
                pass
        return self._project.token if self._project is not None else "grid"

    def _has_z(self) -> bool:
        return self._layout is not None and len(self._layout.models) > 1

    @staticmethod
    def _model_label(model: str) -> str:
        return model_display_name(model) if model else "the run's model"

    def _legend(self, column: int) -> str:
        assert self._layout is not None
        step = self._layout.column(column)[2]
        name = self._names.get(step, f"step {step}")
        score = self._column_scores[column] if column < len(self._column_scores) else None
        if score is None or score.mean is None or score.minimum is None:
            return name
        return f"{name} ({score.mean:.2f} / min {score.minimum:.2f})"

    # -- internals: painting the headers ------------------------------------------------------

    def _x_span(self, column: int) -> tuple[float, float]:
        assert self._layout is not None
        rect = self._layout.column_rect(column)
        transform = self.view.viewportTransform()
        left = transform.map(QPointF(rect.left(), 0)).x()
        right = transform.map(QPointF(rect.right(), 0)).x()
        return left, right

    def _paint_plot(self, painter: QPainter, area: QRectF) -> None:
        layout = self._layout
        assert layout is not None
        top, bottom = area.top() + 10, area.bottom() - 8

        def y_of(value: float) -> float:
            return bottom - max(0.0, min(1.0, value)) * (bottom - top)

        scored = any(s is not None for s in self._column_scores)
        for column in self.suggested_columns():
            left, right = self._x_span(column)
            painter.fillRect(
                QRectF(left, area.top(), right - left, area.height()),
                QBrush(_tinted(SUGGESTED, 40)),
            )
        painter.setPen(_pen(QColor(80, 80, 80)))
        painter.drawLine(QPointF(area.left(), bottom), QPointF(area.right(), bottom))
        if not scored:
            painter.setPen(_pen(MUTED))
            if self._suggestion is not None:
                text = self.suggestion_text()
            else:
                text = "Identity scores come when every cell is made"
            text = text.split(". The grid works")[0]
            painter.drawText(
                area.adjusted(12, 4, -12, -4),
                Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                text,
            )
            return
        threshold = y_of(DEFAULT_IDENTITY_SIMILARITY)
        painter.setPen(_pen(THRESHOLD_COLOR, 1, Qt.PenStyle.DashLine))
        painter.drawLine(QPointF(area.left(), threshold), QPointF(area.right(), threshold))
        for column, score in enumerate(self._column_scores):
            if score is None:
                continue
            left, right = self._x_span(column)
            width = min(16.0, (right - left) * 0.2)
            centre = (left + right) / 2
            height = score.detection_rate * (bottom - top)
            painter.fillRect(
                QRectF(centre - width / 2, bottom - height, width, height), QBrush(FACES_COLOR)
            )
        for attribute, color in (("minimum", MIN_COLOR), ("mean", MEAN_COLOR)):
            for z in range(len(layout.models)):
                path = QPainterPath()
                points = []
                for x in range(len(layout.steps)):
                    column = layout.column_of(z, x)
                    score = self._column_scores[column]
                    value = getattr(score, attribute) if score is not None else None
                    if value is None:
                        continue
                    left, right = self._x_span(column)
                    point = QPointF((left + right) / 2, y_of(value))
                    if points:
                        path.lineTo(point)
                    else:
                        path.moveTo(point)
                    points.append(point)
                painter.setPen(_pen(color, 2))
                painter.setBrush(QBrush(Qt.BrushStyle.NoBrush))
                painter.drawPath(path)
                painter.setBrush(QBrush(color))
                for point in points:
                    painter.drawEllipse(point, 3.5, 3.5)
        painter.setBrush(QBrush(Qt.BrushStyle.NoBrush))

    def _paint_models(self, painter: QPainter, area: QRectF) -> None:
        layout = self._layout
        assert layout is not None
        transform = self.view.viewportTransform()
        painter.setPen(_pen(TEXT))
        for z, model in enumerate(layout.models):
            block = layout.block_rect(z)
            left = transform.map(QPointF(block.left(), 0)).x()
            right = transform.map(QPointF(block.right(), 0)).x()
            rect = QRectF(left, area.top(), right - left, area.height())
            text = QFontMetrics(painter.font()).elidedText(
                self._model_label(model), Qt.TextElideMode.ElideMiddle, int(rect.width()) - 8
            )
            painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)
            painter.setPen(_pen(MUTED))
            painter.drawLine(QPointF(left, area.bottom() - 2), QPointF(right, area.bottom() - 2))
            painter.setPen(_pen(TEXT))

    def _paint_labels(self, painter: QPainter, area: QRectF) -> None:
        layout = self._layout
        assert layout is not None
        chosen, suggested = self.chosen_step(), self.suggested_step()
        selection = self._selection
        bold = QFont(painter.font())
        bold.setBold(True)
        small = QFont(painter.font())
        small.setPointSizeF(max(7.0, small.pointSizeF() * 0.85))
        for column in range(layout.column_count):
            step = layout.column(column)[2]
            left, right = self._x_span(column)
            rect = QRectF(left, area.top() + 2, right - left, area.height() - 4)
            selected = selection is not None and selection[0] <= column <= selection[1]
            if step == chosen:
                painter.fillRect(rect, QBrush(_tinted(CHOSEN, 110)))
            elif step == suggested:
                painter.fillRect(rect, QBrush(_tinted(SUGGESTED, 90)))
            if selected:
                painter.fillRect(rect, QBrush(_tinted(SELECTED, 90)))
            if step == suggested:
                painter.setPen(_pen(SUGGESTED, 2))
                painter.drawRect(rect.adjusted(1, 1, -1, -1))
            if column == self._focus[0]:
                painter.fillRect(
                    QRectF(rect.left(), rect.bottom() - 3, rect.width(), 3), QBrush(FOCUS)
                )
            name = self._names.get(step, f"step {step}")
            if step == chosen:
                name = "✓ " + name
            width = int(rect.width()) - 6
            painter.setFont(bold)
            painter.setPen(_pen(TEXT))
            top_half = QRectF(rect.left(), rect.top(), rect.width(), rect.height() / 2 + 2)
            painter.drawText(
                top_half,
                Qt.AlignmentFlag.AlignCenter,
                QFontMetrics(bold).elidedText(name, Qt.TextElideMode.ElideLeft, width),
            )
            score = self._column_scores[column] if column < len(self._column_scores) else None
            if step == suggested:
                second = "★ suggested"
            elif step == chosen:
                second = "chosen"
            elif score is not None and score.mean is not None and score.minimum is not None:
                second = f"{score.mean:.2f} · min {score.minimum:.2f}"
            else:
                second = ""
            painter.setFont(small)
            painter.setPen(_pen(SUGGESTED if step == suggested else MUTED))
            bottom_half = QRectF(rect.left(), rect.center().y(), rect.width(), rect.height() / 2)
            painter.drawText(
                bottom_half,
                Qt.AlignmentFlag.AlignCenter,
                QFontMetrics(small).elidedText(second, Qt.TextElideMode.ElideRight, width),
            )

    def _paint_rows(self, painter: QPainter, width: int) -> None:
        layout = self._layout
        if layout is None:
            return
        transform = self.view.viewportTransform()
        painter.setPen(_pen(TEXT))
        metrics = QFontMetrics(painter.font())
        for row, seed in enumerate(layout.seeds):
            top = row * (layout.cell_h + layout.gap)
            y1 = transform.map(QPointF(0, top)).y()
            y2 = transform.map(QPointF(0, top + layout.cell_h)).y()
            rect = QRectF(4, y1, width - 10, y2 - y1)
            if row == self._focus[1]:
                painter.fillRect(QRectF(width - 4, y1, 3, y2 - y1), QBrush(FOCUS))
            text = "Seed\n" + str(seed) if rect.height() > metrics.height() * 2.2 else str(seed)
            painter.drawText(
                rect, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, text
            )

    def _paint_corner(self, painter: QPainter, width: int, height: int) -> None:
        if self._layout is None:
            return
        top, bottom = 10.0, PLOT_H - 8.0
        small = QFont(painter.font())
        small.setPointSizeF(max(7.0, small.pointSizeF() * 0.85))
        painter.setFont(small)
        metrics = QFontMetrics(small)
        if any(s is not None for s in self._column_scores):
            # The plot's scale at the right edge, its legend at the left.
            for value in (0.0, DEFAULT_IDENTITY_SIMILARITY, 1.0):
                y = bottom - value * (bottom - top)
                painter.setPen(_pen(MUTED))
                painter.drawText(
                    QRectF(width - 34, y - 8, 30, 16),
                    Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                    f"{value:.1f}",
                )
            legend = (("mean", MEAN_COLOR), ("lowest", MIN_COLOR), ("faces", FACES_COLOR))
            for index, (text, color) in enumerate(legend):
                y = top + index * (metrics.height() + 3) + metrics.height() / 2
                if text == "faces":
                    painter.fillRect(QRectF(6, y - 5, 16, 10), QBrush(_tinted(color, 200)))
                else:
                    painter.setPen(_pen(color, 2))
                    painter.drawLine(QPointF(6, y), QPointF(22, y))
                painter.setPen(_pen(TEXT))
                painter.drawText(QPointF(26, y + metrics.ascent() / 2 - 1), text)
            y = top + 3 * (metrics.height() + 3) + metrics.height() / 2
            painter.setPen(_pen(THRESHOLD_COLOR, 1, Qt.PenStyle.DashLine))
            painter.drawLine(QPointF(6, y), QPointF(22, y))
            painter.setPen(_pen(MUTED))
            painter.drawText(QPointF(26, y + metrics.ascent() / 2 - 1), "pass")
        else:
            painter.setPen(_pen(MUTED))
            painter.drawText(
                QRectF(6, top, width - 12, bottom - top),
                Qt.AlignmentFlag.AlignLeft
                | Qt.AlignmentFlag.AlignVCenter
                | Qt.TextFlag.TextWordWrap,
                "identity\nto the picks",
            )
        painter.setPen(_pen(MUTED))
        painter.drawText(
            QRectF(6, height - LABEL_BAND_H, width - 12, LABEL_BAND_H),
            Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
            "step →\nseed ↓",
        )


def _cell_from(data: dict[str, Any]) -> GridCellView:
    score = data.get("score")
    faces = data.get("faces")
    return GridCellView(
        z=int(data.get("z") or 0),
        x=int(data.get("x") or 0),
        y=int(data.get("y") or 0),
        step=int(data.get("step") or 0),
        seed=int(data.get("seed") or 0),
        path=str(data.get("path") or ""),
        score=float(score) if score is not None else None,
        faces=int(faces) if faces is not None else None,
        error=str(data["error"]) if data.get("error") else None,
    )
