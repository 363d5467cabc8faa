"""Paints one grid cell: the thumbnail and the artist's decision on it.

Rejected images are dimmed; a pick shows a white flag, a reject a red cross with its reason;
stars sit at the bottom and the colour label is a strip along the bottom edge, as in
Lightroom's grid. The face analysis adds rounded labels for its culling flags at the bottom
right ("2 faces", "cut off", …) and, at the top right, a near-duplicate stack's count (a
collapsed stack) or its member's place (an expanded one).
"""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QPointF, QRect, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPainter, QPainterPath, QPen, QPixmap
from PySide6.QtWidgets import QStyle, QStyledItemDelegate, QStyleOptionViewItem

from charstudio.analysis.view import StackCell
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
FaceFlagsRole = Qt.UserRole + 4  # tuple of flag names (charstudio.analysis.flags)
FaceBadgesRole = Qt.UserRole + 5  # list of short labels for those flags
StackRole = Qt.UserRole + 6  # StackCell, or None outside a shown stack
MARGIN = 6
FLAG_FILL = QColor(150, 30, 110, 215)
STACK_COLOR = QColor(235, 175, 60)


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


def _badge_font(painter: QPainter, rect: QRect) -> QFont:
    font = QFont(painter.font())
    # 10 px on a 96-px cell, 13 px from 200 px on: readable without covering the face.
    font.setPixelSize(int(max(10, min(13, rect.width() / 15))))
    return font


def draw_face_badges(painter: QPainter, rect: QRect, texts: list[str], bottom: float) -> None:
    """Rounded labels stacked upwards from the bottom right corner, the lowest at ``bottom``."""
    if not texts:
        return
    font = _badge_font(painter, rect)
    painter.setFont(font)
    metrics = QFontMetricsF(font)
    height = metrics.height() + 2
    y = bottom - height
    for text in reversed(texts):
        width = metrics.horizontalAdvance(text) + 10
        pill = QRectF(rect.right() - MARGIN - width, y, width, height)
        painter.setPen(Qt.NoPen)
        painter.setBrush(FLAG_FILL)
        painter.drawRoundedRect(pill, height / 2, height / 2)
        painter.setPen(QColor(255, 240, 250))
        painter.drawText(pill, Qt.AlignCenter, text)
        y -= height + 2


def _cards(painter: QPainter, at: QPointF, size: float, color: QColor) -> None:
    """Two offset cards: the stack symbol."""
    painter.setBrush(Qt.NoBrush)
    painter.setPen(QPen(color, 1.2))
    painter.drawRect(QRectF(at.x() + size * 0.3, at.y(), size * 0.7, size * 0.7))
    painter.setBrush(color)
    painter.drawRect(QRectF(at.x(), at.y() + size * 0.3, size * 0.7, size * 0.7))


def draw_stack_badge(painter: QPainter, rect: QRect, cell: StackCell, top: float) -> None:
    """A collapsed stack's top: a filled badge with the number of images in it. An expanded
    stack: the top's badge is outlined and says "1/N", the other members get a thin strip
    along the top edge and a small "k/N"."""
    font = _badge_font(painter, rect)
    if not cell.is_top:
        font.setPixelSize(max(9, font.pixelSize() - 2))
        painter.fillRect(QRectF(rect.left(), rect.top(), rect.width(), 3), STACK_COLOR)
    painter.setFont(font)
    metrics = QFontMetricsF(font)
    height = metrics.height() + 2
    text = str(cell.size) if not cell.expanded else f"{cell.position}/{cell.size}"
    icon = height * 0.6 if cell.is_top else 0.0
    width = metrics.horizontalAdvance(text) + 10 + (icon + 3 if icon else 0)
    badge = QRectF(rect.right() - MARGIN - width, top, width, height)
    filled = cell.is_top and not cell.expanded
    painter.setPen(QPen(STACK_COLOR, 1.5))
    painter.setBrush(STACK_COLOR if filled else QColor(0, 0, 0, 170))
    painter.drawRoundedRect(badge, 4, 4)
    ink = QColor(30, 25, 10) if filled else STACK_COLOR
    if icon:
        _cards(painter, QPointF(badge.left() + 5, badge.center().y() - icon / 2), icon, ink)
    painter.setPen(ink)
    text_rect = badge.adjusted(icon + 3 if icon else 0, 0, 0, 0)
    painter.drawText(text_rect, Qt.AlignCenter, text)


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
        self._paint_analysis(painter, rect, index, decision)
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

    def _paint_analysis(
        self,
        painter: QPainter,
        rect: QRect,
        index: QModelIndex | QPersistentModelIndex,
        decision: Decision,
    ) -> None:
        badge = max(14.0, min(26.0, rect.width() / 9))  # the decision badges' size
        texts: list[str] = index.data(FaceBadgesRole) or []
        bottom = rect.bottom() - MARGIN - 4  # above the colour label strip
        if decision.stars and rect.width() < 220:
            bottom -= badge  # a narrow cell: keep clear of the stars
        draw_face_badges(painter, rect, texts, bottom)
        cell: StackCell | None = index.data(StackRole)
        if cell is None:
            return
        top = rect.top() + MARGIN
        if decision.reject_reason:
            # The reason's text runs right from the reject badge: go below it when it would
            # reach the stack badge.
            font = QFont(painter.font())
            font.setPixelSize(int(badge * 0.7))
            reason = REASON_TEXT.get(decision.reject_reason, decision.reject_reason)
            end = rect.left() + MARGIN + badge + 4 + QFontMetricsF(font).horizontalAdvance(reason)
            if end > rect.right() - MARGIN - 3 * badge:
                top += badge + 2
        draw_stack_badge(painter, rect, cell, top)
