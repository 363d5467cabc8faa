"""The thumbnail grid: a list model over the filtered images and its icon-mode view.

The rows are the catalog's answer to the filter's SQL part, arranged by
:func:`charstudio.analysis.view.arrange` (face filter, identity group, look-alike order,
near-duplicate stacks collapsed to their best image)."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QPersistentModelIndex,
    QSize,
    Qt,
    Signal,
)
from PySide6.QtGui import (
    QColor,
    QImage,
    QPainter,
    QPaintEvent,
    QPixmap,
    QResizeEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import QAbstractItemView, QListView, QWidget

from charstudio.analysis import view
from charstudio.analysis.clustering import DEFAULT_IDENTITY_DISTANCE
from charstudio.analysis.view import AnalysisIndex, GridArrangement
from charstudio.catalog import Decision, ImageRecord, Project
from charstudio.catalog.queries import LOOKALIKE_SORT, ImageFilter
from charstudio.ui.grid_delegate import (
    DecisionRole,
    FaceBadgesRole,
    FaceFlagsRole,
    GridDelegate,
    StackRole,
)
from charstudio.ui.theme import BASE
from charstudio.ui.thumbnails import ThumbnailLoader

RecordRole = Qt.UserRole + 1
IdRole = Qt.UserRole + 3
AnyIndex = QModelIndex | QPersistentModelIndex
MIN_CELL, MAX_CELL, DEFAULT_CELL = 96, 360, 200


def _placeholder(size: int, text: str = "") -> QPixmap:
    pixmap = QPixmap(size, size)
    pixmap.fill(QColor(48, 48, 48))
    if text:
        painter = QPainter(pixmap)
        painter.setPen(QColor(200, 120, 120))
        painter.drawText(pixmap.rect(), Qt.AlignCenter, text)
        painter.end()
    return pixmap


class ImageGridModel(QAbstractListModel):
    """Rows are the image ids that pass the current filter. Records and decisions are read
    in bulk and kept in memory; decisions are re-read for the rows a key press touched."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._project: Project | None = None
        self._filter = ImageFilter()
        self._ids: list[int] = []
        self._row_of: dict[int, int] = {}
        self._records: dict[int, ImageRecord] = {}
        self._decisions: dict[int, Decision] = {}
        self._pixmaps: dict[int, QPixmap] = {}
        # The face analysis and how the grid uses it (see charstudio.analysis.view).
        self._analysis = AnalysisIndex.empty()
        self._arrangement = GridArrangement([])
        self._expanded: set[int] = set()  # keys of the expanded stacks
        self.collapse_stacks = True
        self.identity_distance = DEFAULT_IDENTITY_DISTANCE
        # Look-alike references chosen with "Sort by Similarity to Selection"; None: the
        # picks, else whatever ``selection`` returns when the filter is applied.
        self.lookalike_refs: list[int] | None = None
        self.selection: Callable[[], list[int]] = list
        self._loader = ThumbnailLoader(self)
        self._loader.loaded.connect(self._on_loaded)
        self._placeholder = _placeholder(64)
        self._missing = _placeholder(256, "missing file")

    # -- content ---------------------------------------------------------------------------

    @property
    def project(self) -> Project | None:
        return self._project

    @property
    def image_filter(self) -> ImageFilter:
        return self._filter

    def shutdown(self) -> None:
        """Stop thumbnail work before the window goes away."""
        self._loader.clear()
        self._loader.wait()

    @property
    def analysis(self) -> AnalysisIndex:
        return self._analysis

    def set_project(self, project: Project | None, image_filter: ImageFilter | None = None) -> None:
        self._loader.clear()
        self._project = project
        self._pixmaps.clear()
        self._expanded.clear()
        self.lookalike_refs = None
        if project is None:
            self._analysis = AnalysisIndex.empty()
        self._filter = image_filter or ImageFilter()
        self.reload()

    def set_analysis(self, index: AnalysisIndex, *, apply: bool = True) -> None:
        """Use a freshly loaded analysis (``apply``: re-arrange the rows now)."""
        self._analysis = index
        if apply:
            self._apply_filter()

    def set_collapse_stacks(self, collapse: bool) -> None:
        self.collapse_stacks = collapse
        self._apply_filter()

    def set_identity_distance(self, distance: float) -> None:
        self.identity_distance = distance
        if self._filter.identity is not None:
            self._apply_filter()

    def sort_by_similarity(self, reference_ids: list[int], image_filter: ImageFilter) -> None:
        """Order by likeness to ``reference_ids`` (kept until the sort changes)."""
        self.lookalike_refs = list(reference_ids)
        self.set_filter(image_filter)

    def toggle_stack(self, image_id: int) -> int | None:
        """Expand or collapse the stack shown at ``image_id``; returns the image to focus
        (None: it is in no stack)."""
        expanded, focus = self._arrangement.toggle(image_id, self._expanded)
        if focus is None:
            return None
        self._expanded = expanded
        self._apply_filter()
        return focus

    def stack_cell(self, image_id: int) -> view.StackCell | None:
        return self._arrangement.cells.get(image_id)

    def picks(self) -> list[int]:
        return [i for i, d in self._decisions.items() if d.flag == "pick"]

    def set_filter(self, image_filter: ImageFilter) -> None:
        if image_filter.sort != LOOKALIKE_SORT:
            self.lookalike_refs = None
        self._filter = image_filter
        self._apply_filter()

    def reload(self) -> None:
        """Re-read every record (after an import)."""
        project = self._project
        self._records = {r.id or 0: r for r in project.catalog.images()} if project else {}
        self._decisions = project.catalog.decisions() if project else {}
        # Tens of thousands of long-lived records make every full garbage collection slow,
        # which shows as a GUI stall; they live as long as the project, so exempt them.
        gc.collect()
        gc.freeze()
        self._apply_filter()

    def _lookalike_references(self) -> list[int] | None:
        if self._filter.sort != LOOKALIKE_SORT:
            return None
        if self.lookalike_refs is not None:
            return self.lookalike_refs
        return view.lookalike_references(self._analysis, self.picks(), self.selection())

    def _apply_filter(self) -> None:
        project = self._project
        refs = self._lookalike_references() if project else None  # reads the old selection
        self.beginResetModel()
        if project is None:
            self._arrangement = GridArrangement([])
        else:
            f = self._filter
            self._arrangement = view.arrange(
                project.catalog.filtered_ids(f),
                self._analysis,
                self._decisions,
                face=f.face,
                identity=f.identity,
                identity_distance=self.identity_distance,
                lookalike_refs=refs,
                descending=f.descending,
                collapse=self.collapse_stacks,
                expanded=self._expanded,
            )
        self._ids = self._arrangement.ids
        self._row_of = {image_id: row for row, image_id in enumerate(self._ids)}
        self.endResetModel()

    def refresh_decisions(self, image_ids: Iterable[int]) -> None:
        """Re-read the decisions of these images and repaint their cells. Rows stay where
        they are until the filter is applied again, so the grid does not jump while culling."""
        if self._project is None:
            return
        fresh = self._project.catalog.decisions(image_ids)
        self._decisions.update(fresh)
        for image_id in fresh:
            row = self._row_of.get(image_id)
            if row is not None:
                index = self.index(row)
                self.dataChanged.emit(index, index, [DecisionRole])

    def id_at(self, row: int) -> int:
        return self._ids[row]

    def row_of(self, image_id: int) -> int | None:
        return self._row_of.get(image_id)

    def record(self, image_id: int) -> ImageRecord:
        return self._records[image_id]

    def decision(self, image_id: int) -> Decision:
        return self._decisions.get(image_id, Decision())

    # -- Qt model interface ----------------------------------------------------------------

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._ids)

    def data(self, index: AnyIndex, role: int = Qt.DisplayRole) -> Any:
        if not index.isValid() or self._project is None or index.row() >= len(self._ids):
            return None
        image_id = self._ids[index.row()]
        if role == Qt.DecorationRole:
            pixmap = self._pixmaps.get(image_id)
            if pixmap is None:
                record = self._records[image_id]
                source = self._project.file_path(record.path)
                self._loader.request(image_id, self._project.root, source, record.sha256)
                return self._placeholder
            return pixmap
        if role == DecisionRole:
            return self._decisions.get(image_id, Decision())
        if role == IdRole:
            return image_id
        if role == RecordRole:
            return self._records[image_id]
        if role == FaceFlagsRole:
            return self._analysis.flags.get(image_id, ())
        if role == FaceBadgesRole:
            flags = self._analysis.flags.get(image_id, ())
            return view.badge_texts(flags, self._analysis.faces.get(image_id, 0))
        if role == StackRole:
            return self._arrangement.cells.get(image_id)
        if role == Qt.ToolTipRole:
            return self._tooltip(image_id)
        return None

    def _tooltip(self, image_id: int) -> str:
        record = self._records[image_id]
        lines = [record.path]
        if record.prompt:
            lines.append(record.prompt[:300])
        if record.seed is not None:
            lines.append(f"Seed: {record.seed}")
        flags = self._analysis.flags.get(image_id)
        if flags:
            lines.append("Face: " + ", ".join(view.FACE_FILTER_LABELS[f] for f in flags))
        cell = self._arrangement.cells.get(image_id)
        if cell is not None:
            state = "S collapses" if cell.expanded else "S expands"
            lines.append(f"Stack of {cell.size} near-duplicates ({state})")
        return "\n".join(lines)

    def _on_loaded(self, image_id: int, image: QImage) -> None:
        self._pixmaps[image_id] = QPixmap.fromImage(image) if not image.isNull() else self._missing
        row = self._row_of.get(image_id)
        if row is not None:
            index = self.index(row)
            self.dataChanged.emit(index, index, [Qt.DecorationRole])


class ImageGridView(QListView):
    """Icon-mode grid with uniform cells; Ctrl + wheel changes the thumbnail size."""

    cellSizeChanged = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setViewMode(QListView.IconMode)
        self.setResizeMode(QListView.Adjust)
        self.setMovement(QListView.Static)
        self.setUniformItemSizes(True)
        self.setSelectionMode(QListView.ExtendedSelection)
        self.setSpacing(0)
        self.setLayoutMode(QListView.Batched)
        self.setBatchSize(500)
        # Always there: a scroll bar that comes and goes would change the width the cells
        # are fitted to, and refitting could make it come and go again.
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOn)
        self.setStyleSheet(f"QListView {{ background: {BASE}; }}")
        self._delegate = GridDelegate(DEFAULT_CELL, self)
        self.setItemDelegate(self._delegate)
        self._requested = DEFAULT_CELL
        self.set_cell_size(DEFAULT_CELL)

    empty_text = ""

    def set_empty_text(self, text: str) -> None:
        """What the grid says when it shows nothing (no project, no images, filter too tight)."""
        self.empty_text = text
        self.viewport().update()

    def paintEvent(self, event: QPaintEvent) -> None:
        super().paintEvent(event)
        if self.model() is not None and self.model().rowCount() == 0 and self.empty_text:
            painter = QPainter(self.viewport())
            painter.setPen(QColor(170, 170, 175))
            font = painter.font()
            font.setPointSizeF(font.pointSizeF() * 1.2)
            painter.setFont(font)
            # Wrapped within a margin: a narrow grid (docks open) never cuts the hint off.
            area = self.viewport().rect().adjusted(24, 0, -24, 0)
            painter.drawText(area, Qt.AlignCenter | Qt.TextWordWrap, self.empty_text)
            painter.end()

    def cell_size(self) -> int:
        """The size the artist asked for (the slider's); cells stretch a little beyond it."""
        return self._requested

    def set_cell_size(self, size: int) -> None:
        self._requested = max(MIN_CELL, min(MAX_CELL, int(size)))
        self._fit_cells()
        self.cellSizeChanged.emit(self._requested)

    def _fit_cells(self) -> None:
        """As many columns as the requested size allows, then square cells widened to fill
        the row, as Lightroom does: no unused strip at the right. The focused image stays
        in view when the size changes."""
        # QListView wraps a row that fills the viewport exactly: keep a pixel of slack.
        width = self.viewport().width() - 1
        columns = max(1, width // self._requested) if width > 0 else 1
        cell = max(self._requested, width // columns) if width > 0 else self._requested
        if cell == self._delegate.cell and self.gridSize().width() == cell:
            return
        self._delegate.cell = cell
        self._delegate.clear_cache()
        self.setIconSize(QSize(cell, cell))
        self.setGridSize(QSize(cell, cell))
        current = self.currentIndex()
        if current.isValid():
            self.scrollTo(current, QAbstractItemView.ScrollHint.PositionAtCenter)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._fit_cells()

    def wheelEvent(self, event: QWheelEvent) -> None:
        if event.modifiers() & Qt.ControlModifier:
            steps = event.angleDelta().y() / 120
            self.set_cell_size(self.cell_size() + int(steps * 20))
            event.accept()
            return
        super().wheelEvent(event)
