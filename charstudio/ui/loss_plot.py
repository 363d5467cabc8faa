"""A live training-loss plot: the loss of every step, a smoothed line on top, and light axes.

Diffusion losses are noisy (each step draws new noise and timesteps), so the raw line alone hides
the trend; the smoothed line is an exponential moving average with TensorBoard's bias correction,
which makes its first points meaningful too. Points arrive one per step while a run trains, and
a run can have tens of thousands of them: painting reduces the data to at most a few points per
pixel column, so a repaint costs the same whatever the run's length.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPaintEvent, QPalette, QPen, QPolygonF
from PySide6.QtWidgets import QSizePolicy, QWidget

__all__ = ["LossPlot", "nice_ticks"]

RAW_COLOR = QColor(70, 130, 230, 120)
SMOOTH_COLOR = QColor(235, 130, 30)
DEFAULT_SMOOTHING = 0.9


def nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """About ``count`` round values (1, 2 or 5 × 10^k apart) from ``low`` to ``high``."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else []
    raw = (high - low) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9)
    ticks = []
    value = first * step
    while value <= high + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        first += 1
        value = first * step
    return ticks


def _tick_text(value: float, step: float) -> str:
    if step >= 1 and float(value).is_integer():
        return f"{int(value)}"
    return f"{value:.3g}"


class LossPlot(QWidget):
    """Loss per step; ``add_point`` while training, ``set_points`` for a whole run's log."""

    def __init__(self, parent: QWidget | None = None, smoothing: float = DEFAULT_SMOOTHING) -> None:
        super().__init__(parent)
        self._smoothing = smoothing
        self._steps: list[int] = []
        self._losses: list[float] = []
        self._ema: list[float] = []  # biased averages; kept so a resume can cut them back
        self._low = math.inf
        self._high = -math.inf
        self._total: int | None = None
        self._cache: tuple[tuple[object, ...], QPolygonF, QPolygonF] | None = None
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip("Loss per step (blue) and its moving average (orange)")

    # -- data ------------------------------------------------------------------------------

    def clear(self) -> None:
        self._steps.clear()
        self._losses.clear()
        self._ema.clear()
        self._low, self._high = math.inf, -math.inf
        self._changed()

    def set_total(self, total: int | None) -> None:
        """The run's last step, so the x axis shows how far training has to go."""
        if total != self._total:
            self._total = total
            self._changed()

    def total(self) -> int | None:
        return self._total

    def add_point(self, step: int, loss: float) -> None:
        """The loss after ``step``. A step at or before the last one replaces the points from
        there on: a resumed run trains again from its last saved state."""
        if not math.isfinite(loss):
            return  # a NaN step is reported in the status text; it has no place on an axis
        if self._steps and step <= self._steps[-1]:
            self._truncate(step)
        self._append(step, loss)
        self._changed()

    def set_points(self, points: Iterable[tuple[int, float]]) -> None:
        self._steps.clear()
        self._losses.clear()
        self._ema.clear()
        self._low, self._high = math.inf, -math.inf
        for step, loss in sorted(points):
            if math.isfinite(loss):
                if self._steps and step == self._steps[-1]:
                    self._truncate(step)
                self._append(step, loss)
        self._changed()

    def points(self) -> list[tuple[int, float]]:
        return list(zip(self._steps, self._losses, strict=True))

    def point_count(self) -> int:
        return len(self._steps)

    def smoothed(self) -> list[float]:
        """The moving average at each point, bias-corrected."""
        s = self._smoothing
        return [ema / (1 - s ** (i + 1)) if s else ema for i, ema in enumerate(self._ema)]

    def _append(self, step: int, loss: float) -> None:
        previous = self._ema[-1] if self._ema else 0.0
        self._steps.append(step)
        self._losses.append(loss)
        self._ema.append(self._smoothing * previous + (1 - self._smoothing) * loss)
        self._low = min(self._low, loss)
        self._high = max(self._high, loss)

    def _truncate(self, step: int) -> None:
        keep = next((i for i, s in enumerate(self._steps) if s >= step), len(self._steps))
        del self._steps[keep:], self._losses[keep:], self._ema[keep:]
        self._low = min(self._losses, default=math.inf)
        self._high = max(self._losses, default=-math.inf)

    def _changed(self) -> None:
        self._cache = None
        self.update()

    # -- painting --------------------------------------------------------------------------

    def sizeHint(self) -> QSize:
        return QSize(360, 150)

    def minimumSizeHint(self) -> QSize:
        return QSize(120, 90)

    def _x_range(self) -> tuple[float, float]:
        last = self._steps[-1] if self._steps else 0
        return 0.0, float(max(last, self._total or 0, 1))

    def _y_range(self) -> tuple[float, float]:
        if not self._steps:
            return 0.0, 1.0
        low, high = self._low, self._high
        pad = (high - low) * 0.05 or max(abs(high) * 0.05, 1e-3)
        return max(0.0, low - pad) if low >= 0 else low - pad, high + pad

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = self.palette()
        text_color = palette.color(QPalette.ColorRole.WindowText)
        muted = QColor(text_color)
        muted.setAlpha(140)
        grid_color = QColor(text_color)
        grid_color.setAlpha(35)
        metrics = self.fontMetrics()

        x_low, x_high = self._x_range()
        y_low, y_high = self._y_range()
        y_ticks = nice_ticks(y_low, y_high, 3) if self._steps else []
        x_ticks = nice_ticks(x_low, x_high, 4)
        y_step = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else 1.0
        x_step = x_ticks[1] - x_ticks[0] if len(x_ticks) > 1 else 1.0
        y_texts = [_tick_text(v, y_step) for v in y_ticks]
        left = max((metrics.horizontalAdvance(t) for t in y_texts), default=0) + 8
        line = metrics.height()
        plot = QRectF(self.rect()).adjusted(left, line / 2 + 2, -8, -(line + 4))
        if plot.width() < 10 or plot.height() < 10:
            painter.end()
            return

        def to_x(step: float) -> float:
            return plot.left() + (step - x_low) / (x_high - x_low) * plot.width()

        def to_y(loss: float) -> float:
            return plot.bottom() - (loss - y_low) / (y_high - y_low) * plot.height()

        # Grid and tick labels.
        painter.setPen(QPen(grid_color, 1))
        for value in y_ticks:
            painter.drawLine(QPointF(plot.left(), to_y(value)), QPointF(plot.right(), to_y(value)))
        painter.setPen(QPen(muted, 1))
        painter.drawLine(plot.bottomLeft(), plot.bottomRight())
        painter.drawLine(plot.bottomLeft(), plot.topLeft())
        for value, text in zip(y_ticks, y_texts, strict=True):
            box = QRectF(0, to_y(value) - line / 2, left - 5, line)
            painter.drawText(box, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, text)
        for value in x_ticks:
            x = to_x(value)
            painter.drawLine(QPointF(x, plot.bottom()), QPointF(x, plot.bottom() + 3))
            text = _tick_text(value, x_step)
            width = metrics.horizontalAdvance(text)
            # Keep the outermost labels inside the widget.
            x_text = min(max(x - width / 2, 0.0), self.width() - width - 1.0)
            painter.drawText(QPointF(x_text, plot.bottom() + 3 + metrics.ascent()), text)

        if not self._steps:
            painter.drawText(plot, Qt.AlignmentFlag.AlignCenter, "The loss appears here per step")
            painter.end()
            return

        raw, smooth = self._polylines(plot, (x_low, x_high, y_low, y_high))
        painter.setClipRect(plot.adjusted(-1, -1, 1, 1))
        painter.setPen(QPen(RAW_COLOR, 1))
        painter.drawPolyline(raw)
        painter.setPen(QPen(SMOOTH_COLOR, 2))
        painter.drawPolyline(smooth)
        painter.end()

    def _polylines(
        self, plot: QRectF, ranges: tuple[float, float, float, float]
    ) -> tuple[QPolygonF, QPolygonF]:
        """The raw and smoothed lines in widget coordinates, at most 4 points per pixel column."""
        key = (plot.getRect(), ranges, len(self._steps))
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1], self._cache[2]
        x_low, x_high, y_low, y_high = ranges
        x_scale = plot.width() / (x_high - x_low)
        y_scale = plot.height() / (y_high - y_low)
        left, bottom = plot.left(), plot.bottom()
        raw, smooth = QPolygonF(), QPolygonF()
        smoothed = self.smoothed()
        start = 0
        count = len(self._steps)
        while start < count:
            column = int(left + (self._steps[start] - x_low) * x_scale)
            end = start + 1
            while end < count and int(left + (self._steps[end] - x_low) * x_scale) == column:
                end += 1
            x = left + (self._steps[start] - x_low) * x_scale
            bucket = self._losses[start:end]
            # First, extremes in the order they happened, last: the column's envelope is drawn
            # exactly as a full drawing would show it.
            low_at = min(range(len(bucket)), key=bucket.__getitem__)
            high_at = max(range(len(bucket)), key=bucket.__getitem__)
            for at in sorted({0, low_at, high_at, len(bucket) - 1}):
                raw.append(QPointF(x, bottom - (bucket[at] - y_low) * y_scale))
            smooth.append(QPointF(x, bottom - (smoothed[end - 1] - y_low) * y_scale))
            start = end
        self._cache = (key, raw, smooth)
        return raw, smooth
