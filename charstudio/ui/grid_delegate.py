"""Paints one grid cell: the thumbnail and the artist's decision on it.

Rejected images are dimmed; a pick shows a white flag, a reject a red cross with its reason;
stars sit at the bottom and the colour label is a strip along the bottom edge, as in
Lightroom's grid.
"""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QPointF, QRect, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPainterPath, QPen, QPixmap
from PySide6.QtWidgets import QStyle, QStyledItemDelegate, QStyleOptionViewItem

from charstudio.catalog import Decision

LABEL_COLORS = {
    "red": QColor(220, 60, 60),
    "yellow": QColor(230, 200, 50),
    "green": QColor(70, 180, 80),
    "blue": QColor(70, 120, 220),
    "purple": QColor(160, 90, 200),
}
REASON_TEXT = {
    "off-prompt": "off-prompt",
    "poor-quality": "poor quality",
    "off-look": "off-look",
    "not-best": "not best",
}
DecisionRole = Qt.UserRole + 2
MARGIN = 6


def draw_flag(painter: QPainter, at: QPointF, size: float) -> None:
    """A white pennant on a pole: Lightroom's pick flag."""
    path = QPainterPath()
    path.moveTo(at.x() + size * 0.25, at.y() + size * 0.1)
    path.lineTo(at.x() + size * 0.9, at.y() + size * 0.3)
    path.lineTo(at.x() + size * 0.25, at.y() + size * 0.5)
    painter.setPen(QPen(QColor(30, 30, 30), 1.5))
    painter.setBrush(QColor(250, 250, 250))
    painter.drawPath(path)
    painter.setPen(QPen(QColor(250, 250, 250), 2.0))
    painter.drawLine(
        QPointF(at.x() + size * 0.25, at.y() + size * 0.1),
        QPointF(at.x() + size * 0.25, at.y() + size * 0.95),
    )


def draw_reject(painter: QPainter, at: QPointF, size: float) -> None:
    """A cross in a red disc: Lightroom's reject flag."""
    painter.setPen(Qt.NoPen)
    painter.setBrush(QColor(200, 40, 40))
    painter.drawEllipse(QRectF(at.x(), at.y(), size, size))
    painter.setPen(QPen(QColor(255, 255, 255), max(1.5, size / 8)))
    inset = size * 0.3
    painter.drawLine(
        QPointF(at.x() + inset, at.y() + inset),
        QPointF(at.x() + size - inset, at.y() + size - inset),
    )
    painter.drawLine(
        QPointF(at.x() + size - inset, at.y() + inset),
        QPointF(at.x() + inset, at.y() + size - inset),
    )


def draw_decision(painter: QPainter, rect: QRect, decision: Decision) -> None:
    """Badges for a decision inside ``rect`` (shared by the grid, loupe and survey)."""
    badge = max(14.0, min(26.0, rect.width() / 9))
    corner = QPointF(rect.left() + MARGIN, rect.top() + MARGIN)
    if decision.flag == "pick":
        draw_flag(painter, corner, badge)
    elif decision.flag == "reject":
        draw_reject(painter, corner, badge)
    font = QFont(painter.font())
    font.setPixelSize(int(badge * 0.7))
    painter.setFont(font)
    if decision.reject_reason:
        text = REASON_TEXT.get(decision.reject_reason, decision.reject_reason)
        text_rect = QRectF(corner.x() + badge + 4, corner.y(), rect.width(), badge)
        painter.setPen(QColor(0, 0, 0, 200))
        painter.drawText(text_rect.translated(1, 1), Qt.AlignVCenter | Qt.AlignLeft, text)
        painter.setPen(QColor(255, 220, 220))
        painter.drawText(text_rect, Qt.AlignVCenter | Qt.AlignLeft, text)
    if decision.stars:
        stars_rect = QRectF(
            rect.left() + MARGIN, rect.bottom() - badge - MARGIN - 4, rect.width(), badge
        )
        text = "★" * decision.stars
        painter.setPen(QColor(0, 0, 0, 200))
        painter.drawText(stars_rect.translated(1, 1), Qt.AlignVCenter | Qt.AlignLeft, text)
        painter.setPen(QColor(255, 210, 60))
        painter.drawText(stars_rect, Qt.AlignVCenter | Qt.AlignLeft, text)
    if decision.color:
        strip = QRect(rect.left(), rect.bottom() - 4, rect.width(), 5)
        painter.fillRect(strip, LABEL_COLORS[decision.color])


class GridDelegate(QStyledItemDelegate):
    def __init__(self, cell: int, parent: object = None) -> None:
        super().__init__(parent)
        self.cell = cell
        # Thumbnails scaled to the current cell size: smooth scaling on every paint would
        # cost more than the rest of the cell's painting together.
        self._scaled: dict[tuple[int, int, int], QPixmap] = {}

    def clear_cache(self) -> None:
        self._scaled.clear()

    def scaled(self, pixmap: QPixmap, width: int, height: int) -> QPixmap:
        key = (pixmap.cacheKey(), width, height)
        found = self._scaled.get(key)
        if found is None:
            if len(self._scaled) > 2000:
                self._scaled.clear()
            found = pixmap.scaled(width, height, Qt.KeepAspectRatio, Qt.SmoothTransformation)
            self._scaled[key] = found
        return found

    def sizeHint(
        self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> QSize:
        return QSize(self.cell, self.cell)

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionViewItem,
        index: QModelIndex | QPersistentModelIndex,
    ) -> None:
        rect = option.rect.adjusted(2, 2, -2, -2)
        selected = bool(option.state & QStyle.State_Selected)
        painter.save()
        painter.setRenderHint(QPainter.Antialiasing)
        painter.setRenderHint(QPainter.SmoothPixmapTransform)
        painter.fillRect(rect, QColor(70, 70, 78) if selected else QColor(38, 38, 42))
        pixmap: QPixmap | None = index.data(Qt.DecorationRole)
        decision: Decision = index.data(DecisionRole) or Decision()
        if pixmap is not None and not pixmap.isNull():
            inner = rect.adjusted(MARGIN, MARGIN, -MARGIN, -MARGIN)
            scaled = self.scaled(pixmap, inner.width(), inner.height())
            target = QRect(0, 0, scaled.width(), scaled.height())
            target.moveCenter(inner.center())
            painter.drawPixmap(target.topLeft(), scaled)
            if decision.flag == "reject":  # dim rejects, as Lightroom does
                painter.fillRect(target, QColor(0, 0, 0, 150))
        draw_decision(painter, rect, decision)
        if option.state & QStyle.State_HasFocus or selected:
            pen = QPen(
                QColor(240, 240, 240)
                if option.state & QStyle.State_HasFocus
                else QColor(140, 160, 200),
                2,
            )
            painter.setPen(pen)
            painter.setBrush(Qt.NoBrush)
            painter.drawRect(rect.adjusted(1, 1, -1, -1))
        painter.restore()
