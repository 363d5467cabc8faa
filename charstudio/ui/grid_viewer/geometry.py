"""Where each column and cell of a grid sits in the scene (scene units are image pixels)."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QRectF

from charstudio.presenters.grid import GridShape


@dataclass(frozen=True)
class GridGeometry:
    """Cells at their image size with gaps between them; Z blocks side by side, further apart."""

    shape: GridShape

    @property
    def gap(self) -> int:
        return max(6, self.shape.cell_w // 48)

    @property
    def z_gap(self) -> int:
        return self.gap * 8

    def column_rect(self, index: int) -> QRectF:
        shape = self.shape
        z, x = divmod(index, len(shape.steps))
        block = len(shape.steps) * (shape.cell_w + self.gap) - self.gap + self.z_gap
        left = z * block + x * (shape.cell_w + self.gap)
        height = len(shape.seeds) * (shape.cell_h + self.gap) - self.gap
        return QRectF(left, 0, shape.cell_w, height)

    def row_top(self, row: int) -> float:
        return row * (self.shape.cell_h + self.gap)

    def cell_rect(self, column: int, row: int) -> QRectF:
        rect = self.column_rect(column)
        return QRectF(rect.left(), self.row_top(row), self.shape.cell_w, self.shape.cell_h)

    def block_rect(self, z: int) -> QRectF:
        first = self.column_rect(self.shape.column_of(z, 0))
        last = self.column_rect(self.shape.column_of(z, len(self.shape.steps) - 1))
        return first.united(last)

    def scene_rect(self) -> QRectF:
        rect = QRectF()
        for z in range(len(self.shape.z_labels)):
            rect = rect.united(self.block_rect(z))
        margin = self.gap
        return rect.adjusted(-margin, -margin, margin, margin)

    def column_at(self, scene_x: float) -> int | None:
        half = self.gap / 2
        for index in range(self.shape.column_count):
            rect = self.column_rect(index)
            if rect.left() - half <= scene_x <= rect.right() + half:
                return index
        return None

    def row_at(self, scene_y: float) -> int | None:
        half = self.gap / 2
        for row in range(len(self.shape.seeds)):
            top = self.row_top(row)
            if top - half <= scene_y <= top + self.shape.cell_h + half:
                return row
        return None
