"""The thumbnail grid: a list model over the catalog's images and its icon-mode view."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QAbstractListModel, QModelIndex, QPersistentModelIndex, QSize, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPixmap
from PySide6.QtWidgets import QListView, QWidget

from charstudio.catalog import ImageRecord, Project
from charstudio.ui.thumbnails import ThumbnailLoader

THUMB_SIZE = 192
RecordRole = Qt.UserRole + 1
AnyIndex = QModelIndex | QPersistentModelIndex


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
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._project: Project | None = None
        self._records: list[ImageRecord] = []
        self._row_of: dict[int, int] = {}
        self._pixmaps: dict[int, QPixmap] = {}
        self._loader = ThumbnailLoader(self)
        self._loader.loaded.connect(self._on_loaded)
        self._placeholder = _placeholder(THUMB_SIZE)
        self._missing = _placeholder(THUMB_SIZE, "missing file")

    def set_project(self, project: Project | None) -> None:
        self.beginResetModel()
        self._loader.clear()
        self._project = project
        self._records = project.catalog.images() if project else []
        self._row_of = {r.id or 0: i for i, r in enumerate(self._records)}
        self._pixmaps.clear()
        self.endResetModel()

    def reload(self) -> None:
        self.set_project(self._project)

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._records)

    def data(self, index: AnyIndex, role: int = Qt.DisplayRole) -> Any:
        if not index.isValid() or self._project is None:
            return None
        record = self._records[index.row()]
        key = record.id or 0
        if role == Qt.DecorationRole:
            pixmap = self._pixmaps.get(key)
            if pixmap is None:
                path = self._project.file_path(record.path)
                self._loader.request(key, self._project.root, path, record.sha256)
                return self._placeholder
            return pixmap
        if role == Qt.ToolTipRole:
            lines = [record.path]
            if record.prompt:
                lines.append(record.prompt[:300])
            if record.seed is not None:
                lines.append(f"Seed: {record.seed}")
            return "\n".join(lines)
        if role == RecordRole:
            return record
        return None

    def _on_loaded(self, key: int, image: QImage) -> None:
        row = self._row_of.get(key)
        if row is None:
            return
        self._pixmaps[key] = QPixmap.fromImage(image) if not image.isNull() else self._missing
        index = self.index(row)
        self.dataChanged.emit(index, index, [Qt.DecorationRole])


class ImageGridView(QListView):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setViewMode(QListView.IconMode)
        self.setResizeMode(QListView.Adjust)
        self.setMovement(QListView.Static)
        self.setUniformItemSizes(True)
        self.setIconSize(QSize(THUMB_SIZE, THUMB_SIZE))
        self.setGridSize(QSize(THUMB_SIZE + 12, THUMB_SIZE + 12))
        self.setSelectionMode(QListView.ExtendedSelection)
        self.setSpacing(0)
        self.setLayoutMode(QListView.Batched)
        self.setBatchSize(200)
