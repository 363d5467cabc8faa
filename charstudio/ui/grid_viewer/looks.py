"""The grid viewer's colours, sizes and pens (one place, so the headers and cells agree)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor, QPen

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
AXIS_COLOR = QColor(80, 80, 80)

ROW_HEADER_W = 118
PLOT_H = 96
MODEL_BAND_H = 22
LABEL_BAND_H = 42
WHEEL_FACTOR = 1.25
MIN_SCALE, MAX_SCALE = 0.02, 16.0


def pen(color: QColor, width: float = 1.0, style: Qt.PenStyle = Qt.PenStyle.SolidLine) -> QPen:
    result = QPen(QBrush(color), width)
    result.setStyle(style)
    result.setCosmetic(True)  # widths in screen pixels, whatever the zoom
    return result


def tinted(color: QColor, alpha: int) -> QColor:
    result = QColor(color)
    result.setAlpha(alpha)
    return result
