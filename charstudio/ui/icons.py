"""Small icons drawn with QPainter instead of emoji glyphs.

Emoji such as the dice and the recycling sign depend on the system's fonts: where none has
them (many Linux desktops, older Windows fonts) the button shows an empty box. Drawn icons
look the same everywhere and follow the palette's text colour.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPainterPath, QPen, QPixmap
from PySide6.QtWidgets import QApplication

SIZE = 32  # drawn at 32 px; Qt scales it to the button's icon size


def _canvas() -> tuple[QPixmap, QPainter, QColor]:
    pixmap = QPixmap(SIZE, SIZE)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    app = QApplication.instance()
    color = app.palette().buttonText().color() if isinstance(app, QApplication) else QColor("#ddd")
    return pixmap, painter, color


def dice_icon() -> QIcon:
    """A die showing five: "random seed"."""
    pixmap, painter, color = _canvas()
    painter.setPen(QPen(color, 2.5))
    painter.setBrush(Qt.BrushStyle.NoBrush)
    painter.drawRoundedRect(QRectF(4, 4, 24, 24), 5, 5)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(color)
    for x, y in ((10.5, 10.5), (21.5, 10.5), (16, 16), (10.5, 21.5), (21.5, 21.5)):
        painter.drawEllipse(QPointF(x, y), 2.6, 2.6)
    painter.end()
    return QIcon(pixmap)


def reuse_icon() -> QIcon:
    """A circular arrow: "reuse the last seed"."""
    pixmap, painter, color = _canvas()
    painter.setPen(QPen(color, 2.5))
    path = QPainterPath()
    path.arcMoveTo(QRectF(6, 6, 20, 20), 60)
    path.arcTo(QRectF(6, 6, 20, 20), 60, 290)
    painter.drawPath(path)
    # The arrow head at the arc's start (60°), pointing along the direction of travel.
    head = QPainterPath()
    head.moveTo(QPointF(24.5, 3.5))
    head.lineTo(QPointF(21.5, 11.5))
    head.lineTo(QPointF(14.5, 6.5))
    head.closeSubpath()
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(color)
    painter.drawPath(head)
    painter.end()
    return QIcon(pixmap)
