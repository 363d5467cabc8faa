"""What the loupe, compare and survey panes draw over an image: the decision badges, the
pane's caption, and the parameters or prompt overlay (I cycles them). A mixin of
:class:`~charstudio.ui.image_canvas.ImageCanvas`; it reads the canvas's info strings."""

from __future__ import annotations

import math

from PySide6.QtCore import (
    QPointF,
    QRect,
    QRectF,
    Qt,
)
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontMetrics,
    QPainter,
    QPainterPath,
    QPen,
    QPolygonF,
)

LABEL_COLORS = {
    "red": QColor(214, 64, 64),
    "yellow": QColor(226, 196, 60),
    "green": QColor(84, 178, 92),
    "blue": QColor(70, 130, 222),
    "purple": QColor(160, 92, 204),
}

# Info keys the parameters overlay shows first, in this order, with their A1111 labels.
PARAMETER_LABELS = (
    ("seed", "Seed"),
    ("sampler", "Sampler"),
    ("steps", "Steps"),
    ("cfg", "CFG scale"),
    ("size", "Size"),
    ("model", "Model"),
    ("sweep", "Sweep"),
)

# Keys that are shown elsewhere (title, badges, prompt overlay) or folded into another line.
_NOT_PARAMETERS = {
    "name",
    "summary",
    "prompt",
    "negative_prompt",
    "flag",
    "stars",
    "color",
    "reject_reason",
    "schedule",
}


def _star(centre: QPointF, radius: float) -> QPolygonF:
    points = []
    for i in range(10):
        r = radius if i % 2 == 0 else radius * 0.45
        a = -math.pi / 2 + i * math.pi / 5
        points.append(QPointF(centre.x() + r * math.cos(a), centre.y() + r * math.sin(a)))
    return QPolygonF(points)


def _pick_flag(rect: QRectF) -> QPainterPath:
    """A white flag on a pole, like Lightroom's pick flag."""
    x, y, w, h = rect.x(), rect.y(), rect.width(), rect.height()
    path = QPainterPath()
    path.addRect(QRectF(x + w * 0.18, y + h * 0.08, w * 0.1, h * 0.86))
    cloth = QPainterPath(QPointF(x + w * 0.28, y + h * 0.1))
    cloth.cubicTo(
        QPointF(x + w * 0.5, y),
        QPointF(x + w * 0.65, y + h * 0.22),
        QPointF(x + w * 0.9, y + h * 0.1),
    )
    cloth.lineTo(QPointF(x + w * 0.9, y + h * 0.55))
    cloth.cubicTo(
        QPointF(x + w * 0.65, y + h * 0.67),
        QPointF(x + w * 0.5, y + h * 0.45),
        QPointF(x + w * 0.28, y + h * 0.55),
    )
    cloth.closeSubpath()
    return path.united(cloth)


def parameter_lines(info: dict[str, str]) -> list[str]:
    """The compact parameters block: the title, then ``summary`` if the caller made one, else
    the known A1111 settings in their usual order and any other keys after them."""
    lines = [info["name"]] if info.get("name") else []
    if info.get("summary"):
        return lines + info["summary"].splitlines()
    for key, label in PARAMETER_LABELS:
        value = info.get(key)
        if not value:
            continue
        schedule = info.get("schedule", "")
        if key == "sampler" and schedule and schedule.lower() not in value.lower():
            value = f"{value} {schedule}"
        lines.append(f"{label}: {value}")
    known = {key for key, _ in PARAMETER_LABELS} | _NOT_PARAMETERS
    for key in sorted(set(info) - known):
        if info[key]:
            lines.append(f"{key.replace('_', ' ').capitalize()}: {info[key]}")
    return lines


# -- the canvas ----------------------------------------------------------------------------


class CanvasOverlays:
    """Painting of the overlays; expects the ImageCanvas attributes it reads."""

    _info: dict[str, str]
    _caption: str

    def _paint_caption(self, painter: QPainter) -> None:
        painter.save()
        painter.setRenderHint(QPainter.Antialiasing)
        metrics = QFontMetrics(self.font())
        pad = 6.0
        text = metrics.elidedText(self._caption, Qt.ElideMiddle, max(40, self.width() - 40))
        width = metrics.horizontalAdvance(text) + pad * 2
        height = metrics.height() + pad
        box = QRectF(10, self.height() - height - 10, width, height)
        painter.setPen(Qt.NoPen)
        painter.setBrush(QColor(0, 0, 0, 165))
        painter.drawRoundedRect(box, 4, 4)
        painter.setPen(QColor(235, 235, 235))
        painter.drawText(box, Qt.AlignCenter, text)
        painter.restore()

    def _paint_badges(self, painter: QPainter) -> QRectF | None:
        """The decision in the top-right corner; returns where it went."""
        flag = self._info.get("flag", "none")
        try:
            stars = max(0, min(5, int(self._info.get("stars") or 0)))
        except ValueError:
            stars = 0
        color = LABEL_COLORS.get(self._info.get("color") or "")
        reason = (self._info.get("reject_reason") or "") if flag == "reject" else ""
        if flag not in ("pick", "reject") and not stars and color is None:
            return None
        painter.save()
        painter.setRenderHint(QPainter.Antialiasing)
        font = QFont(self.font())
        font.setPointSizeF(font.pointSizeF() * 0.95)
        metrics = QFontMetrics(font)
        icon, gap, pad = 18.0, 6.0, 8.0
        width = pad * 2 - gap
        if flag in ("pick", "reject"):
            width += icon + gap
        width += stars * (icon * 0.8) + (gap if stars else 0)
        if color is not None:
            width += icon * 0.7 + gap
        if reason:
            width += metrics.horizontalAdvance(reason) + gap
        height = icon + pad
        box = QRectF(self.width() - width - 10, 10, width, height)
        painter.setPen(Qt.NoPen)
        painter.setBrush(QColor(0, 0, 0, 165))
        painter.drawRoundedRect(box, height / 2, height / 2)

        x, mid = box.left() + pad, box.center().y()
        if color is not None:
            side = icon * 0.7
            painter.setBrush(color)
            painter.drawRoundedRect(QRectF(x, mid - side / 2, side, side), 3, 3)
            x += side + gap
        painter.setBrush(QColor(240, 240, 240))
        for _ in range(stars):
            painter.drawPolygon(_star(QPointF(x + icon * 0.4, mid), icon * 0.42))
            x += icon * 0.8
        if stars:
            x += gap
        if reason:
            painter.setFont(font)
            painter.setPen(QColor(240, 200, 200))
            advance = metrics.horizontalAdvance(reason)
            painter.drawText(QRectF(x, box.top(), advance, height), Qt.AlignVCenter, reason)
            painter.setPen(Qt.NoPen)
            x += advance + gap
        symbol = QRectF(x, mid - icon / 2, icon, icon)
        if flag == "pick":
            painter.setBrush(QColor(250, 250, 250))
            painter.drawPath(_pick_flag(symbol))
        elif flag == "reject":
            painter.setBrush(QColor(214, 72, 64))
            painter.drawEllipse(symbol)
            painter.setPen(QPen(QColor(0, 0, 0), 2.4, Qt.SolidLine, Qt.RoundCap))
            inner = symbol.adjusted(icon * 0.3, icon * 0.3, -icon * 0.3, -icon * 0.3)
            painter.drawLine(inner.topLeft(), inner.bottomRight())
            painter.drawLine(inner.topRight(), inner.bottomLeft())
        painter.restore()
        return box

    def _overlay_box(self, painter: QPainter, rect: QRectF) -> None:
        painter.setPen(Qt.NoPen)
        painter.setBrush(QColor(0, 0, 0, 175))
        painter.setRenderHint(QPainter.Antialiasing)
        painter.drawRoundedRect(rect, 6, 6)

    def _paint_parameters(self, painter: QPainter, badges: QRectF | None) -> None:
        lines = parameter_lines(self._info)
        if not lines:
            return
        painter.save()
        metrics = QFontMetrics(self.font())
        pad, margin = 10, 10
        room = self.width() - 2 * margin - 2 * pad
        lines = [metrics.elidedText(line, Qt.ElideRight, room) for line in lines]
        width = max(metrics.horizontalAdvance(line) for line in lines)
        top = margin
        if badges is not None and margin + width + 2 * pad + 6 > badges.left():
            top = round(badges.bottom()) + 6  # a narrow pane: go below the badges, not over
        # Drop the lines that do not fit in the pane.
        max_lines = max(1, (self.height() - top - margin - 2 * pad) // metrics.lineSpacing())
        lines = lines[:max_lines]
        box = QRectF(margin, top, width + 2 * pad, len(lines) * metrics.lineSpacing() + 2 * pad)
        self._overlay_box(painter, box)
        y = box.top() + pad
        for i, line in enumerate(lines):
            painter.setPen(QColor(250, 250, 250) if i == 0 else QColor(220, 220, 220))
            painter.drawText(
                QRectF(box.left() + pad, y, width + 1, metrics.lineSpacing()), Qt.AlignLeft, line
            )
            y += metrics.lineSpacing()
        painter.restore()

    def _paint_prompt(self, painter: QPainter) -> None:
        sections = [
            (title, self._info[key].strip())
            for key, title in (("prompt", "Prompt"), ("negative_prompt", "Negative prompt"))
            if self._info.get(key, "").strip()
        ]
        if not sections:
            sections = [("Prompt", "(no prompt recorded)")]
        painter.save()
        pad, margin = 12, 10
        width = min(self.width() - 2 * margin, 900) - 2 * pad
        if width <= 20:
            painter.restore()
            return
        bold = QFont(self.font())
        bold.setBold(True)
        body, heading = QFontMetrics(self.font()), QFontMetrics(bold)
        blocks: list[tuple[str, str, int]] = []
        height = 0
        for title, text in sections:
            text_height = body.boundingRect(
                QRect(0, 0, width, 100000), Qt.TextWordWrap, text
            ).height()
            blocks.append((title, text, text_height))
            height += heading.lineSpacing() + text_height + pad // 2
        height = min(height - pad // 2, self.height() - 2 * margin - 2 * pad)
        # Bottom-aligned, where it covers chin and neck rather than the eyes.
        box = QRectF(
            (self.width() - width) / 2 - pad,
            self.height() - margin - height - 2 * pad,
            width + 2 * pad,
            height + 2 * pad,
        )
        self._overlay_box(painter, box)
        painter.setClipRect(box.adjusted(pad, pad, -pad, -pad))
        y = box.top() + pad
        for title, text, text_height in blocks:
            painter.setFont(bold)
            painter.setPen(QColor(170, 190, 215))
            painter.drawText(QRectF(box.left() + pad, y, width, heading.lineSpacing()), title)
            y += heading.lineSpacing()
            painter.setFont(self.font())
            painter.setPen(QColor(235, 235, 235))
            painter.drawText(QRectF(box.left() + pad, y, width, text_height), Qt.TextWordWrap, text)
            y += text_height + pad // 2
        painter.restore()
