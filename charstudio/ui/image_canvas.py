"""One zoomable, pannable image with its decision badges and info overlay, and the
off-thread decoder the loupe and the survey share.

The canvas knows nothing about the catalog: it shows an image identified by an integer key,
with an info dict of display strings. Its zoom model is either ``fit`` (the whole image in
view) or an explicit scale (1.0 = one image pixel per screen pixel) around a view centre
given in normalised image coordinates, so several panes can show the same region of
different images (the Lightroom habit of comparing the same eye at 1:1).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from PySide6.QtCore import (
    QEvent,
    QObject,
    QPointF,
    QRectF,
    QRunnable,
    QSize,
    Qt,
    QThreadPool,
    Signal,
)
from PySide6.QtGui import (
    QColor,
    QImage,
    QImageReader,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
    QPixmap,
    QResizeEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import QSizePolicy, QWidget

from charstudio.ui.canvas_overlays import CanvasOverlays

WHEEL_FACTOR = 1.25  # zoom per wheel notch (120 units of angle delta)
MAX_SCALE = 16.0
BACKGROUND = QColor(38, 38, 38)  # neutral dark grey, so it does not tint judgement of colour
FOCUS_COLOR = QColor(235, 235, 235)


class Overlay(IntEnum):
    NONE = 0
    PARAMETERS = 1
    PROMPT = 2


@dataclass(frozen=True)
class ViewState:
    """How an image sits in its pane: ``fit`` or ``scale`` around the centre ``cx, cy``
    (normalised image coordinates, 0..1). In fit mode ``scale`` reports the fit scale."""

    fit: bool = True
    scale: float = 1.0
    cx: float = 0.5
    cy: float = 0.5


# -- decoding ------------------------------------------------------------------------------


class _Wanted:
    """Keys whose queued decodes are still worth doing; read from worker threads."""

    def __init__(self) -> None:
        self.keys: frozenset[int] | None = None  # None: everything requested is wanted

    def __contains__(self, key: int) -> bool:
        keys = self.keys  # one read: the GUI thread replaces the set, never mutates it
        return keys is None or key in keys


class _LoaderSignals(QObject):
    decoded = Signal(int, str, QImage)
    skipped = Signal(int, str)


class _DecodeTask(QRunnable):
    def __init__(self, key: int, path: str, signals: _LoaderSignals, wanted: _Wanted) -> None:
        super().__init__()
        self.key, self.path, self.signals, self.wanted = key, path, signals, wanted

    def run(self) -> None:
        if self.key not in self.wanted:  # the user stepped past it while it was queued
            self.signals.skipped.emit(self.key, self.path)
            return
        reader = QImageReader(self.path)
        reader.setAutoTransform(True)
        image = reader.read()  # a null image when the file is missing or unreadable
        if not image.isNull():
            # Converting here keeps QPixmap.fromImage on the GUI thread a cheap copy.
            fmt = (
                QImage.Format_ARGB32_Premultiplied
                if image.hasAlphaChannel()
                else QImage.Format_RGB32
            )
            image = image.convertToFormat(fmt)
            image.setDevicePixelRatio(1.0)  # ignore an "@2x" file name: scales are ours
        self.signals.decoded.emit(self.key, self.path, image)


class ImageLoader(QObject):
    """Decodes full-size images on a thread pool into a small LRU of QImages.

    Workers only build QImages; views turn them into pixmaps on the GUI thread. A missing
    or unreadable file is delivered (and cached) as a null QImage.
    """

    loaded = Signal(int, QImage)

    def __init__(self, capacity: int = 5, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.capacity = max(1, capacity)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max(1, min(3, QThreadPool.globalInstance().maxThreadCount())))
        self._signals = _LoaderSignals()
        self._signals.decoded.connect(self._on_decoded)
        self._signals.skipped.connect(self._on_skipped)
        self._wanted = _Wanted()
        self._cache: OrderedDict[int, tuple[str, QImage]] = OrderedDict()
        self._pending: dict[int, str] = {}

    def cached(self, key: int) -> QImage | None:
        entry = self._cache.get(key)
        return None if entry is None else entry[1]

    def is_cached(self, key: int) -> bool:
        return key in self._cache

    def cached_keys(self) -> list[int]:
        """Least recently used first."""
        return list(self._cache)

    def is_pending(self, key: int) -> bool:
        return key in self._pending

    def request(self, key: int, path: str, priority: int = 0) -> QImage | None:
        """The cached image for ``key``, or None after queueing its decode (``loaded``
        follows). Higher ``priority`` decodes first: the image on screen before preloads."""
        entry = self._cache.get(key)
        if entry is not None and entry[0] == path:
            self._cache.move_to_end(key)
            return entry[1]
        if self._pending.get(key) != path:
            self._pending[key] = path
            self._pool.start(_DecodeTask(key, path, self._signals, self._wanted), priority)
        return None

    def retain(self, keys: Iterable[int] | None) -> None:
        """Queued decodes of keys outside ``keys`` are skipped (None: keep all). Holding an
        arrow key down would otherwise queue hundreds of decodes ahead of the current one."""
        self._wanted.keys = None if keys is None else frozenset(keys)

    def clear(self) -> None:
        self._pool.clear()
        self._pending.clear()
        self._cache.clear()

    def wait(self, msecs: int = -1) -> bool:
        return self._pool.waitForDone(msecs)

    def _done(self, key: int, path: str) -> None:
        if self._pending.get(key) == path:
            del self._pending[key]

    def _on_skipped(self, key: int, path: str) -> None:
        self._done(key, path)
        if key in self._wanted:  # wanted again since it was skipped
            self.request(key, path)

    def _on_decoded(self, key: int, path: str, image: QImage) -> None:
        self._done(key, path)
        self._cache[key] = (path, image)
        self._cache.move_to_end(key)
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        self.loaded.emit(key, image)


# -- painting helpers ----------------------------------------------------------------------


def _clamp_centre(c: float, extent: float, view: float) -> float:
    """Keep the image covering the view on an axis where it is larger than the view, and
    centred where it is smaller (no panning into empty space)."""
    if extent <= view:
        return 0.5
    half = view / (2 * extent)
    return min(max(c, half), 1 - half)


class ImageCanvas(CanvasOverlays, QWidget):
    """One image, fit or zoomed, with badges, an optional info overlay and a focus frame.

    Emits ``viewChanged(ViewState)`` when the user zooms or pans (and from
    ``set_view_state(..., emit=True)``); ``last_change_unlinked()`` tells whether that change
    was made with Shift held, which the survey uses to move one pane alone.
    """

    viewChanged = Signal(object)
    pressed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setMinimumSize(64, 64)
        self.setMouseTracking(True)  # the hover position anchors the Z key
        self.setAttribute(Qt.WA_OpaquePaintEvent)
        self._key: int | None = None
        self._image: QImage | None = None
        self._info: dict[str, str] = {}
        self._pixmap: QPixmap | None = None
        self._scaled: tuple[QSize, QPixmap] | None = None  # area-averaged copy for scale < 1
        self._state = ViewState()
        self._overlay = Overlay.NONE
        self._focused = False
        self._hover: QPointF | None = None
        self._drag_from: QPointF | None = None
        self._unlinked = False
        self._caption = ""  # e.g. "Select · img00.png": who this pane is, in compare/survey

    # -- content ---------------------------------------------------------------------------

    def set_image(self, key: int | None, image: QImage | None, info: dict[str, str] | None) -> None:
        """Show ``image`` for ``key``: None while it loads, a null QImage for a missing file.
        The view state is kept, so stepping through images stays at the same zoom."""
        same = (
            key == self._key
            and image is not None
            and self._image is not None
            and image.cacheKey() == self._image.cacheKey()
        )
        if not same:
            self._pixmap = None
            self._scaled = None
        self._key, self._image = key, image
        self._info = dict(info or {})
        self._update_cursor()
        self.update()

    def set_info(self, info: dict[str, str] | None) -> None:
        self._info = dict(info or {})
        self.update()

    def set_caption(self, caption: str) -> None:
        """A line at the pane's bottom-left (its role and file name), always shown."""
        self._caption = caption
        self.update()

    def caption(self) -> str:
        return self._caption

    def key(self) -> int | None:
        return self._key

    def image(self) -> QImage | None:
        return self._image

    def info(self) -> dict[str, str]:
        return dict(self._info)

    def has_image(self) -> bool:
        return self._image is not None and not self._image.isNull()

    def is_loading(self) -> bool:
        return self._key is not None and self._image is None

    def is_missing(self) -> bool:
        return self._image is not None and self._image.isNull()

    # -- geometry --------------------------------------------------------------------------

    def _image_size(self) -> tuple[int, int]:
        if not self.has_image():
            return 0, 0
        assert self._image is not None
        return self._image.width(), self._image.height()

    def _dpr(self) -> float:
        return self.devicePixelRatioF() or 1.0

    def fit_scale(self) -> float:
        w, h = self._image_size()
        if w <= 0 or h <= 0 or self.width() <= 0 or self.height() <= 0:
            return 1.0
        return min(self.width() / w, self.height() / h) * self._dpr()

    def scale(self) -> float:
        """Screen pixels per image pixel, whether fit or explicit. Scales count device pixels,
        so 1:1 stays one image pixel per screen pixel under Windows display scaling."""
        return self.fit_scale() if self._state.fit else self._state.scale

    def _logical_scale(self, scale: float | None = None) -> float:
        """Widget (logical) pixels per image pixel."""
        return (self.scale() if scale is None else scale) / self._dpr()

    def _centre(self) -> tuple[float, float]:
        w, h = self._image_size()
        s = self._logical_scale()
        return (
            _clamp_centre(self._state.cx, w * s, self.width()),
            _clamp_centre(self._state.cy, h * s, self.height()),
        )

    def image_rect(self) -> QRectF:
        """Where the whole image lies, in widget coordinates."""
        w, h = self._image_size()
        s = self._logical_scale()
        cx, cy = self._centre()
        return QRectF(self.width() / 2 - cx * w * s, self.height() / 2 - cy * h * s, w * s, h * s)

    def map_to_image(self, pos: QPointF) -> QPointF:
        """The image pixel coordinates under a widget position."""
        rect, s = self.image_rect(), self._logical_scale()
        return QPointF((pos.x() - rect.x()) / s, (pos.y() - rect.y()) / s)

    def map_from_image(self, point: QPointF) -> QPointF:
        rect, s = self.image_rect(), self._logical_scale()
        return QPointF(rect.x() + point.x() * s, rect.y() + point.y() * s)

    def hover_pos(self) -> QPointF | None:
        return self._hover

    # -- view state ------------------------------------------------------------------------

    def view_state(self) -> ViewState:
        if self._state.fit:
            return ViewState(True, self.fit_scale(), 0.5, 0.5)
        return self._state

    def set_view_state(self, state: ViewState, emit: bool = False) -> None:
        """Apply a state as given (another pane's, say); it is clamped only when painted."""
        self._state = ViewState(True, 1.0, 0.5, 0.5) if state.fit else state
        self._update_cursor()
        self.update()
        if emit:
            self._unlinked = False
            self.viewChanged.emit(self.view_state())

    def last_change_unlinked(self) -> bool:
        """Whether the change being announced by ``viewChanged`` was made with Shift held."""
        return self._unlinked

    def _user_change(self, state: ViewState, unlinked: bool = False) -> None:
        if not state.fit and self.has_image():
            # Store the clamped centre so panning past an edge leaves no dead travel behind.
            w, h = self._image_size()
            s = self._logical_scale(state.scale)
            cx = _clamp_centre(state.cx, w * s, self.width())
            cy = _clamp_centre(state.cy, h * s, self.height())
            state = ViewState(False, state.scale, cx, cy)
        self._state = ViewState(True, 1.0, 0.5, 0.5) if state.fit else state
        if self._drag_from is None:
            self._update_cursor()
        self.update()
        self._unlinked = unlinked
        self.viewChanged.emit(self.view_state())
        self._unlinked = False

    def _anchor(self, anchor: QPointF | None) -> QPointF:
        return anchor if anchor is not None else QPointF(self.width() / 2, self.height() / 2)

    def _zoomed_state(self, scale: float, anchor: QPointF) -> ViewState:
        """The state at ``scale`` that keeps the image point under ``anchor`` in place."""
        w, h = self._image_size()
        point = self.map_to_image(anchor)
        s = self._logical_scale(scale)
        cx = (point.x() - (anchor.x() - self.width() / 2) / s) / w
        cy = (point.y() - (anchor.y() - self.height() / 2) / s) / h
        return ViewState(False, scale, cx, cy)

    def toggle_fit_1to1(self, anchor: QPointF | None = None) -> None:
        """Z / double-click: from fit to 1:1 keeping the point under ``anchor`` (default: the
        centre) where it is, and from any zoom back to fit."""
        if not self.has_image():
            return
        if self._state.fit:
            self._user_change(self._zoomed_state(1.0, self._anchor(anchor)))
        else:
            self._user_change(ViewState())

    def zoom_about(
        self, factor: float, anchor: QPointF | None = None, unlinked: bool = False
    ) -> None:
        """Multiply the scale, keeping the point under ``anchor`` fixed; clamped to between
        half the fit scale and 16:1."""
        if not self.has_image():
            return
        low = self.fit_scale() / 2
        scale = min(max(self.scale() * factor, low), max(MAX_SCALE, low))
        self._user_change(self._zoomed_state(scale, self._anchor(anchor)), unlinked)

    def pan_by(self, dx: float, dy: float, unlinked: bool = False) -> None:
        """Move the image by (dx, dy) screen pixels; fit mode has nothing to pan."""
        if not self.has_image() or self._state.fit:
            return
        w, h = self._image_size()
        s = self._logical_scale()
        cx, cy = self._centre()
        state = ViewState(False, self._state.scale, cx - dx / (w * s), cy - dy / (h * s))
        self._user_change(state, unlinked)

    # -- overlay and focus -----------------------------------------------------------------

    def overlay_mode(self) -> Overlay:
        return self._overlay

    def set_overlay_mode(self, mode: Overlay | int) -> None:
        self._overlay = Overlay(mode)
        self.update()

    def cycle_overlay(self) -> Overlay:
        self.set_overlay_mode((self._overlay + 1) % len(Overlay))
        return self._overlay

    def set_focused(self, focused: bool) -> None:
        if focused != self._focused:
            self._focused = focused
            self.update()

    def is_focused(self) -> bool:
        return self._focused

    # -- events ----------------------------------------------------------------------------

    def wheelEvent(self, event: QWheelEvent) -> None:
        delta = event.angleDelta()
        # Some platforms turn Shift+wheel into a horizontal scroll.
        notches = (delta.y() or delta.x()) / 120
        if not notches or not self.has_image():
            event.ignore()
            return
        unlinked = bool(event.modifiers() & Qt.ShiftModifier)
        self.zoom_about(WHEEL_FACTOR**notches, event.position(), unlinked)
        event.accept()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.pressed.emit()
        if event.button() == Qt.LeftButton and not self._state.fit and self.has_image():
            self._drag_from = event.position()
            self.setCursor(Qt.ClosedHandCursor)
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        self._hover = event.position()
        if self._drag_from is not None and event.buttons() & Qt.LeftButton:
            delta = event.position() - self._drag_from
            self._drag_from = event.position()
            self.pan_by(delta.x(), delta.y(), bool(event.modifiers() & Qt.ShiftModifier))
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.LeftButton and self._drag_from is not None:
            self._drag_from = None
            self._update_cursor()
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.LeftButton and self.has_image():
            self._drag_from = None
            self.toggle_fit_1to1(event.position())
            event.accept()
            return
        super().mouseDoubleClickEvent(event)

    def leaveEvent(self, event: QEvent) -> None:
        self._hover = None
        super().leaveEvent(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        # Only reached when used on its own; the loupe and survey handle keys themselves.
        if event.key() == Qt.Key_Z and not event.modifiers():
            self.toggle_fit_1to1(self._hover)
        elif event.key() == Qt.Key_I and not event.modifiers():
            self.cycle_overlay()
        else:
            event.ignore()

    def resizeEvent(self, event: QResizeEvent) -> None:
        self._scaled = None
        super().resizeEvent(event)

    def _update_cursor(self) -> None:
        if self.has_image() and not self._state.fit:
            self.setCursor(Qt.OpenHandCursor)
        else:
            self.unsetCursor()

    # -- painting --------------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), BACKGROUND)
        if self.has_image():
            self._paint_image(painter)
            if self._info.get("flag") == "reject":
                painter.fillRect(self.image_rect(), QColor(0, 0, 0, 135))
        elif self._key is not None:
            missing = self.is_missing()
            painter.setPen(QColor(220, 120, 120) if missing else QColor(150, 150, 150))
            painter.drawText(self.rect(), Qt.AlignCenter, "missing file" if missing else "loading…")
        if self._key is not None:
            if self._caption:
                self._paint_caption(painter)
            badges = self._paint_badges(painter)
            if self._overlay == Overlay.PARAMETERS:
                self._paint_parameters(painter, badges)
            elif self._overlay == Overlay.PROMPT:
                self._paint_prompt(painter)
        if self._focused:
            painter.setPen(QPen(FOCUS_COLOR, 3))
            painter.setBrush(Qt.NoBrush)
            painter.drawRect(QRectF(self.rect()).adjusted(1.5, 1.5, -1.5, -1.5))
        painter.end()

    def _paint_image(self, painter: QPainter) -> None:
        assert self._image is not None
        rect, s, dpr = self.image_rect(), self.scale(), self._dpr()
        if s < 1:
            # Bilinear sampling aliases when shrinking; an area-averaged copy does not.
            size = QSize(max(1, round(rect.width() * dpr)), max(1, round(rect.height() * dpr)))
            if self._scaled is None or self._scaled[0] != size:
                scaled = self._image.scaled(size, Qt.IgnoreAspectRatio, Qt.SmoothTransformation)
                pixmap = QPixmap.fromImage(scaled)
                pixmap.setDevicePixelRatio(dpr)
                self._scaled = (size, pixmap)
            painter.drawPixmap(rect.topLeft(), self._scaled[1])
            return
        if self._pixmap is None:
            self._pixmap = QPixmap.fromImage(self._image)
        # Nearest neighbour from 2:1 up shows the real pixels, as Lightroom does.
        painter.setRenderHint(QPainter.SmoothPixmapTransform, s < 2)
        visible = rect.intersected(QRectF(self.rect()))
        if visible.isEmpty():
            return
        # Draw only the visible source pixels (whole ones, so the grid stays aligned).
        ls = s / dpr
        left = max(0, math.floor((visible.left() - rect.x()) / ls))
        top = max(0, math.floor((visible.top() - rect.y()) / ls))
        right = min(self._image.width(), math.ceil((visible.right() - rect.x()) / ls))
        bottom = min(self._image.height(), math.ceil((visible.bottom() - rect.y()) / ls))
        source = QRectF(left, top, right - left, bottom - top)
        painter.save()
        painter.translate(rect.topLeft())
        painter.scale(ls, ls)
        painter.drawPixmap(source, self._pixmap, source)
        painter.restore()


def claims_shortcut(event: QEvent, handled: frozenset[int]) -> bool:
    """Accept a ShortcutOverride for one of a view's own plain keys, so window-level
    shortcuts (an Esc or Z action elsewhere) cannot take it while the view has focus."""
    if (
        event.type() == QEvent.ShortcutOverride
        and isinstance(event, QKeyEvent)
        and event.key() in handled
        and not (event.modifiers() & ~Qt.KeypadModifier)
    ):
        event.accept()
        return True
    return False
