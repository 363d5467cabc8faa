"""The frozen edges of the grid viewer: the identity plot, the model band (Z) and the step
labels above the cells, the seeds left of them and the plot's legend in the corner.

They sit in the view's margins and follow its zoom and pan: every x or y is the scene's,
mapped through the view's transform. What they say comes from the viewer's presenter.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, QPointF, QRectF, Qt
from PySide6.QtGui import (
    QBrush,
    QFont,
    QFontMetrics,
    QHelpEvent,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPaintEvent,
)
from PySide6.QtWidgets import QToolTip, QWidget

from charstudio.analysis.identity import DEFAULT_IDENTITY_SIMILARITY
from charstudio.presenters.grid import compact_label
from charstudio.ui.grid_viewer.geometry import GridGeometry
from charstudio.ui.grid_viewer.looks import (
    AXIS_COLOR,
    CHOSEN,
    FACES_COLOR,
    FOCUS,
    HEADER_BG,
    LABEL_BAND_H,
    MEAN_COLOR,
    MIN_COLOR,
    MODEL_BAND_H,
    MUTED,
    PLOT_H,
    SELECTED,
    SUGGESTED,
    TEXT,
    THRESHOLD_COLOR,
    pen,
    tinted,
)

if TYPE_CHECKING:
    from charstudio.ui.grid_viewer.viewer import GridViewer

__all__ = ["ColumnHeader", "Corner", "RowHeader"]

LABEL_PADDING = 6  # pixels kept free between neighbouring labels


def _small(font: QFont) -> QFont:
    small = QFont(font)
    small.setPointSizeF(max(7.0, small.pointSizeF() * 0.85))
    return small


class ColumnHeader(QWidget):
    """Above the viewport: the identity plot, the Z band (models, weights) and the column
    labels. Click a label to choose that step; Shift+click to select a range to refine."""

    def __init__(self, viewer: GridViewer, parent: QWidget) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self.setMouseTracking(True)
        self.setCursor(Qt.CursorShape.PointingHandCursor)

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QBrush(HEADER_BG))
        if self._viewer.grid_geometry() is not None:
            self._paint_plot(painter, QRectF(0, 0, self.width(), PLOT_H))
            top = PLOT_H
            if self._viewer.presenter.has_z():
                self._paint_z_band(painter, QRectF(0, top, self.width(), MODEL_BAND_H))
                top += MODEL_BAND_H
            self._paint_labels(painter, QRectF(0, top, self.width(), LABEL_BAND_H))
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

    # -- painting -------------------------------------------------------------------------------

    def _paint_plot(self, painter: QPainter, area: QRectF) -> None:
        viewer, presenter = self._viewer, self._viewer.presenter
        shape = presenter.shape
        assert shape is not None
        top, bottom = area.top() + 10, area.bottom() - 8

        def y_of(value: float) -> float:
            return bottom - max(0.0, min(1.0, value)) * (bottom - top)

        for column in presenter.suggested_columns():
            left, right = viewer._x_span(column)
            painter.fillRect(
                QRectF(left, area.top(), right - left, area.height()),
                QBrush(tinted(SUGGESTED, 40)),
            )
        painter.setPen(pen(AXIS_COLOR))
        painter.drawLine(QPointF(area.left(), bottom), QPointF(area.right(), bottom))
        if not presenter.is_scored():
            painter.setPen(pen(MUTED))
            painter.drawText(
                area.adjusted(12, 4, -12, -4),
                Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                presenter.plot_note(),
            )
            return
        threshold = y_of(DEFAULT_IDENTITY_SIMILARITY)
        painter.setPen(pen(THRESHOLD_COLOR, 1, Qt.PenStyle.DashLine))
        painter.drawLine(QPointF(area.left(), threshold), QPointF(area.right(), threshold))
        for column, score in enumerate(presenter.column_scores):
            if score is None:
                continue
            left, right = viewer._x_span(column)
            width = min(16.0, (right - left) * 0.2)
            centre = (left + right) / 2
            height = score.detection_rate * (bottom - top)
            painter.fillRect(
                QRectF(centre - width / 2, bottom - height, width, height), QBrush(FACES_COLOR)
            )
        for attribute, color in (("minimum", MIN_COLOR), ("mean", MEAN_COLOR)):
            for z in range(len(shape.z_labels)):
                path = QPainterPath()
                points = []
                for x in range(len(shape.steps)):
                    column = shape.column_of(z, x)
                    score = presenter.score(column)
                    value = getattr(score, attribute) if score is not None else None
                    if value is None:
                        continue
                    left, right = viewer._x_span(column)
                    point = QPointF((left + right) / 2, y_of(value))
                    if points:
                        path.lineTo(point)
                    else:
                        path.moveTo(point)
                    points.append(point)
                painter.setPen(pen(color, 2))
                painter.setBrush(QBrush(Qt.BrushStyle.NoBrush))
                painter.drawPath(path)
                painter.setBrush(QBrush(color))
                for point in points:
                    painter.drawEllipse(point, 3.5, 3.5)
        painter.setBrush(QBrush(Qt.BrushStyle.NoBrush))

    def _paint_z_band(self, painter: QPainter, area: QRectF) -> None:
        viewer = self._viewer
        geometry, shape = viewer.grid_geometry(), viewer.presenter.shape
        assert geometry is not None and shape is not None
        transform = viewer.view.viewportTransform()
        for z, label in enumerate(shape.z_labels):
            block = geometry.block_rect(z)
            left = transform.map(QPointF(block.left(), 0)).x()
            right = transform.map(QPointF(block.right(), 0)).x()
            rect = QRectF(left, area.top(), right - left, area.height())
            text = QFontMetrics(painter.font()).elidedText(
                label, Qt.TextElideMode.ElideMiddle, max(0, int(rect.width()) - 8)
            )
            painter.setPen(pen(TEXT))
            painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)
            painter.setPen(pen(MUTED))
            painter.drawLine(QPointF(left, area.bottom() - 2), QPointF(right, area.bottom() - 2))

    def _paint_labels(self, painter: QPainter, area: QRectF) -> None:
        """Each column's name and its note (scores, suggested, chosen). A name too wide for
        its column shortens to the step; when even the steps do not fit, every n-th column
        is labelled, across the width of n columns, so labels never run into each other."""
        viewer, presenter = self._viewer, self._viewer.presenter
        shape = presenter.shape
        assert shape is not None
        chosen, suggested = presenter.chosen_step(), presenter.suggested_step()
        selection, focus = viewer.selection(), viewer.focused()
        bold = QFont(painter.font())
        bold.setBold(True)
        small = _small(painter.font())
        bold_metrics, small_metrics = QFontMetrics(bold), QFontMetrics(small)
        spans = [viewer._x_span(c) for c in range(shape.column_count)]
        names = presenter.column_labels()
        shorts = [compact_label(n, shape.column(c)[2]) for c, n in enumerate(names)]
        pitch = spans[1][0] - spans[0][0] if len(spans) > 1 else spans[0][1] - spans[0][0]
        # One style for every column: full names when they all fit, else the steps.
        if max(bold_metrics.horizontalAdvance(n) for n in names) + LABEL_PADDING > pitch:
            names = shorts
        widest = max(bold_metrics.horizontalAdvance(s) for s in names) + LABEL_PADDING
        stride = max(1, math.ceil(widest / max(pitch, 1.0)))
        for column, (left, right) in enumerate(spans):
            step = shape.column(column)[2]
            rect = QRectF(left, area.top() + 2, right - left, area.height() - 4)
            selected = selection is not None and selection[0] <= column <= selection[1]
            if step == chosen:
                painter.fillRect(rect, QBrush(tinted(CHOSEN, 110)))
            elif step == suggested:
                painter.fillRect(rect, QBrush(tinted(SUGGESTED, 90)))
            if selected:
                painter.fillRect(rect, QBrush(tinted(SELECTED, 90)))
            if step == suggested:
                painter.setPen(pen(SUGGESTED, 2))
                painter.drawRect(rect.adjusted(1, 1, -1, -1))
            if column == focus[0]:
                painter.fillRect(
                    QRectF(rect.left(), rect.bottom() - 3, rect.width(), 3), QBrush(FOCUS)
                )
            x = shape.column(column)[1]
            if x % stride:
                continue  # a neighbour's label covers this column
            # The label may use the columns it stands for (stride > 1), centred on its own.
            room = stride * pitch
            text_rect = QRectF(rect.center().x() - room / 2, rect.top(), room, rect.height())
            width = int(room) - LABEL_PADDING
            name = names[column]
            if step == chosen and bold_metrics.horizontalAdvance("✓ " + name) <= width:
                name = "✓ " + name  # else the green band and the note say it
            painter.setFont(bold)
            painter.setPen(pen(TEXT))
            top_half = QRectF(text_rect.left(), rect.top(), room, rect.height() / 2 + 2)
            painter.drawText(
                top_half,
                Qt.AlignmentFlag.AlignCenter,
                bold_metrics.elidedText(name, Qt.TextElideMode.ElideLeft, max(0, width)),
            )
            # The note stays inside the column's own band (its outline when suggested).
            note_width = int(rect.width()) - 4 if stride == 1 else width
            note = presenter.column_note(column)
            if small_metrics.horizontalAdvance(note) > note_width:
                note = presenter.column_note(column, compact=True)
            painter.setFont(small)
            painter.setPen(pen(SUGGESTED if step == suggested else MUTED))
            bottom_half = QRectF(text_rect.left(), rect.center().y(), room, rect.height() / 2)
            painter.drawText(
                bottom_half,
                Qt.AlignmentFlag.AlignCenter,
                small_metrics.elidedText(note, Qt.TextElideMode.ElideRight, max(0, note_width)),
            )


class RowHeader(QWidget):
    """Left of the viewport: the seed of each row."""

    def __init__(self, viewer: GridViewer, parent: QWidget) -> None:
        super().__init__(parent)
        self._viewer = viewer

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QBrush(HEADER_BG))
        geometry = self._viewer.grid_geometry()
        if geometry is not None:
            self._paint_rows(painter, geometry)
        painter.end()

    def _paint_rows(self, painter: QPainter, geometry: GridGeometry) -> None:
        width = self.width()
        transform = self._viewer.view.viewportTransform()
        painter.setPen(pen(TEXT))
        metrics = QFontMetrics(painter.font())
        focus_row = self._viewer.focused()[1]
        for row, seed in enumerate(geometry.shape.seeds):
            top = geometry.row_top(row)
            y1 = transform.map(QPointF(0, top)).y()
            y2 = transform.map(QPointF(0, top + geometry.shape.cell_h)).y()
            rect = QRectF(4, y1, width - 10, y2 - y1)
            if row == focus_row:
                painter.fillRect(QRectF(width - 4, y1, 3, y2 - y1), QBrush(FOCUS))
            text = "Seed\n" + str(seed) if rect.height() > metrics.height() * 2.2 else str(seed)
            painter.drawText(
                rect, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, text
            )


class Corner(QWidget):
    """Top left: the plot's legend and scale, and which way steps and seeds go."""

    def __init__(self, viewer: GridViewer, parent: QWidget) -> None:
        super().__init__(parent)
        self._viewer = viewer

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QBrush(HEADER_BG))
        if self._viewer.grid_geometry() is not None:
            self._paint(painter, self.width(), self.height())
        painter.end()

    def _paint(self, painter: QPainter, width: int, height: int) -> None:
        top, bottom = 10.0, PLOT_H - 8.0
        small = _small(painter.font())
        painter.setFont(small)
        metrics = QFontMetrics(small)
        if self._viewer.presenter.is_scored():
            # The plot's scale at the right edge, its legend at the left.
            for value in (0.0, DEFAULT_IDENTITY_SIMILARITY, 1.0):
                y = bottom - value * (bottom - top)
                painter.setPen(pen(MUTED))
                painter.drawText(
                    QRectF(width - 34, y - 8, 30, 16),
                    Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                    f"{value:.1f}",
                )
            legend = (("mean", MEAN_COLOR), ("lowest", MIN_COLOR), ("faces", FACES_COLOR))
            for index, (text, color) in enumerate(legend):
                y = top + index * (metrics.height() + 3) + metrics.height() / 2
                if text == "faces":
                    painter.fillRect(QRectF(6, y - 5, 16, 10), QBrush(tinted(color, 200)))
                else:
                    painter.setPen(pen(color, 2))
                    painter.drawLine(QPointF(6, y), QPointF(22, y))
                painter.setPen(pen(TEXT))
                painter.drawText(QPointF(26, y + metrics.ascent() / 2 - 1), text)
            y = top + 3 * (metrics.height() + 3) + metrics.height() / 2
            painter.setPen(pen(THRESHOLD_COLOR, 1, Qt.PenStyle.DashLine))
            painter.drawLine(QPointF(6, y), QPointF(22, y))
            painter.setPen(pen(MUTED))
            painter.drawText(QPointF(26, y + metrics.ascent() / 2 - 1), "pass")
        else:
            painter.setPen(pen(MUTED))
            painter.drawText(
                QRectF(6, top, width - 12, bottom - top),
                Qt.AlignmentFlag.AlignLeft
                | Qt.AlignmentFlag.AlignVCenter
                | Qt.TextFlag.TextWordWrap,
                "identity\nto the picks",
            )
        painter.setPen(pen(MUTED))
        painter.drawText(
            QRectF(6, height - LABEL_BAND_H, width - 12, LABEL_BAND_H),
            Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
            f"{self._viewer.presenter.unit} →\nseed ↓",
        )
