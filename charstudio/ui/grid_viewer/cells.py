"""The grid's scene items: a slot per cell (background, its state in words, the image, decoded
off the GUI thread), an outline per column (chosen, suggested, selected) and the focus frame."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QObject, QPointF, Qt
from PySide6.QtGui import QBrush, QFont, QImage, QPen, QPixmap
from PySide6.QtWidgets import (
    QGraphicsPixmapItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsSimpleTextItem,
)

from charstudio.presenters.grid import GridCellView, GridPresenter
from charstudio.ui.grid_viewer.geometry import GridGeometry
from charstudio.ui.grid_viewer.looks import (
    CHOSEN,
    FAILED,
    FOCUS,
    MUTED,
    SELECTED,
    SLOT_BG,
    SUGGESTED,
    pen,
)
from charstudio.ui.image_canvas import ImageLoader

__all__ = ["CellScene"]


@dataclass
class _Slot:
    """The scene items of one cell."""

    background: QGraphicsRectItem
    text: QGraphicsSimpleTextItem
    pixmap: QGraphicsPixmapItem


class CellScene(QObject):
    """Builds the items of a grid's shape and shows each cell the presenter records."""

    def __init__(self, presenter: GridPresenter, parent: QObject) -> None:
        super().__init__(parent)
        self.presenter = presenter
        self.scene = QGraphicsScene(self)
        self.geometry: GridGeometry | None = None
        self._slots: dict[tuple[int, int], _Slot] = {}
        self._marks: list[QGraphicsRectItem] = []
        self._loads: dict[int, tuple[int, int, str]] = {}  # loader key -> column, row, path
        self._next_key = 1
        self.focus_item = QGraphicsRectItem()
        self.focus_item.setPen(pen(FOCUS, 3))
        self.focus_item.setBrush(QBrush(Qt.BrushStyle.NoBrush))
        self.focus_item.setZValue(10)
        self.focus_item.hide()
        self.scene.addItem(self.focus_item)
        self.loader = ImageLoader(capacity=8, parent=self)
        self.loader.loaded.connect(self._on_loaded)

    def clear(self) -> None:
        self.loader.clear()
        self._loads.clear()
        for slot in self._slots.values():
            for item in (slot.background, slot.text, slot.pixmap):
                self.scene.removeItem(item)
        for mark in self._marks:
            self.scene.removeItem(mark)
        self._slots.clear()
        self._marks.clear()
        self.focus_item.hide()
        self.geometry = None

    def rebuild(self, geometry: GridGeometry) -> None:
        """Empty slots ("waiting…") for every cell of the shape."""
        self.clear()
        self.geometry = geometry
        shape = geometry.shape
        font = QFont()
        font.setPixelSize(max(10, shape.cell_w // 16))
        for column in range(shape.column_count):
            mark = QGraphicsRectItem(geometry.column_rect(column).adjusted(-2, -2, 2, 2))
            mark.setZValue(5)
            mark.hide()
            self.scene.addItem(mark)
            self._marks.append(mark)
            for row in range(len(shape.seeds)):
                rect = geometry.cell_rect(column, row)
                background = QGraphicsRectItem(rect)
                background.setBrush(QBrush(SLOT_BG))
                background.setPen(QPen(Qt.PenStyle.NoPen))
                text = QGraphicsSimpleTextItem("waiting…")
                text.setFont(font)
                text.setBrush(QBrush(MUTED))
                pixmap = QGraphicsPixmapItem()
                pixmap.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
                pixmap.setPos(rect.topLeft())
                pixmap.setZValue(1)
                for item in (background, text, pixmap):
                    self.scene.addItem(item)
                slot = _Slot(background, text, pixmap)
                self._slots[(column, row)] = slot
                self._center_text(slot, column, row)
        self.scene.setSceneRect(geometry.scene_rect())

    def show_cell(self, cell: GridCellView) -> None:
        """Show a cell the presenter just recorded: why it failed, or its image once loaded."""
        presenter, geometry = self.presenter, self.geometry
        if geometry is None:
            return
        column = geometry.shape.column_of(cell.z, cell.x)
        slot = self._slots[(column, cell.y)]
        if cell.state == "failed":
            slot.text.setText("failed: NaN")
            slot.text.setBrush(QBrush(FAILED))
            slot.text.setToolTip(cell.error or "")
            slot.background.setToolTip(cell.error or "")
            slot.pixmap.setPixmap(QPixmap())
            self._center_text(slot, column, cell.y)
            return
        path = presenter.file_path(cell)
        if path is None:
            return
        cell.state = "loading"
        slot.text.setText("loading…")
        self._center_text(slot, column, cell.y)
        load_key = self._next_key
        self._next_key += 1
        self._loads[load_key] = (column, cell.y, str(path))
        image = self.loader.request(load_key, str(path))
        if image is not None:
            self._on_loaded(load_key, image)

    def show_marks(self, selection: tuple[int, int] | None) -> None:
        """Outlines only: a tint over the cells would change the colours being judged."""
        shape = self.presenter.shape
        if shape is None:
            return
        chosen, suggested = self.presenter.chosen_step(), self.presenter.suggested_step()
        for column, mark in enumerate(self._marks):
            step = shape.column(column)[2]
            selected = selection is not None and selection[0] <= column <= selection[1]
            if step == chosen:
                mark.setPen(pen(CHOSEN, 3))
            elif step == suggested:
                mark.setPen(pen(SUGGESTED, 2, Qt.PenStyle.DashLine))
            elif selected:
                mark.setPen(pen(SELECTED, 2))
            mark.setBrush(QBrush(Qt.BrushStyle.NoBrush))
            mark.setVisible(selected or step in (chosen, suggested))

    def show_focus(self, column: int, row: int) -> None:
        if self.geometry is not None:
            self.focus_item.setRect(self.geometry.cell_rect(column, row).adjusted(-1, -1, 1, 1))
            self.focus_item.show()

    def _center_text(self, slot: _Slot, column: int, row: int) -> None:
        assert self.geometry is not None
        rect = self.geometry.cell_rect(column, row)
        box = slot.text.boundingRect()
        slot.text.setPos(rect.center() - QPointF(box.width() / 2, box.height() / 2))

    def _on_loaded(self, key: int, image: QImage) -> None:
        target = self._loads.pop(key, None)
        geometry = self.geometry
        if target is None or geometry is None:
            return
        column, row, path = target
        cell = self.presenter.cell(column, row)
        found = self.presenter.file_path(cell) if cell is not None else None
        if cell is None or str(found) != path:
            return  # replaced since
        slot = self._slots[(column, row)]
        if image.isNull():
            cell.state = "missing"
            slot.text.setText("file missing")
            self._center_text(slot, column, row)
            slot.pixmap.setPixmap(QPixmap())
            return
        pixmap = QPixmap.fromImage(image)
        rect = geometry.cell_rect(column, row)
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
