"""The thumbnail grid: a list model over the filtered images and its icon-mode view."""

from __future__ import annotations

import gc
from collections.abc import Iterable
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QPersistentModelIndex,
    QSize,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor, QImage, QPainter, QPaintEvent, QPixmap, QWheelEvent
from PySide6.QtWidgets import QListView, QWidget

from charstudio.catalog import Decision, ImageRecord, Project
from charstudio.catalog.queries import ImageFilter
from charstudio.ui.grid_delegate import DecisionRole, GridDelegate
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

    def set_project(self, project: Project | None, image_filter: ImageFilter | None = None) -> None:
        self._loader.clear()
        self._project = project
        self._pixmaps.clear()
        self._filter = image_filter or ImageFilter()
        self.reload()

    def set_filter(self, image_filter: ImageFilter) -> None:
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

    def _apply_filter(self) -> None:
        self.beginResetModel()
        project = self._project
        self._ids = project.catalog.filtered_ids(self._filter) if project else []
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
        if role == Qt.ToolTipRole:
            record = self._records[image_id]
            lines = [record.path]
            if record.prompt:
                lines.append(record.prompt[:300])
            if record.seed is not None:
                lines.append(f"Seed: {record.seed}")
            return "\n".join(lines)
        return None

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
        self.setStyleSheet("QListView { background: #1e1e22; }")
        self._delegate = GridDelegate(DEFAULT_CELL, self)
        self.setItemDelegate(self._delegate)
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
            painter.drawText(self.viewport().rect(), Qt.AlignCenter, self.empty_text)
            painter.end()

    def cell_size(self) -> int:
        return self._delegate.cell

    def set_cell_size(self, size: int) -> None:
        size = max(MIN_CELL, min(MAX_CELL, int(size)))
        self._delegate.cell = size
        self._delegate.clear_cache()
        self.setIconSize(QSize(size, size))
        self.setGridSize(QSize(size, size))
        self.cellSizeChanged.emit(size)

    def wheelEvent(self, event: QWheelEvent) -> None:
        if event.modifiers() & Qt.ControlModifier:
            steps = event.angleDelta().y() / 120
            self.set_cell_size(self.cell_size() + int(steps * 20))
            event.accept()
            return
        super().wheelEvent(event)
