"""Compare (C, two-up) and Survey (N, up to eight) side by side, Lightroom style.

Compare has Lightroom's roles: the left pane is the Select, the right one the Candidate.
Left/Right arrows bring the previous/next image of the grid in as the candidate, Up makes
the candidate the select (and brings the next one in), Down swaps the two.

Panes zoom and pan together so the same region can be judged across images. A Shift+wheel
or Shift+drag moves one pane alone; what it remembers is that pane's offset from the others,
so faces that sit in different places can be aligned once and then panned together.
Rejected images leave the survey through ``remove_key`` and the grid reflows.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, QRect, Qt, Signal
from PySide6.QtGui import QImage, QKeyEvent, QPainter, QPaintEvent, QResizeEvent
from PySide6.QtWidgets import QWidget

from charstudio.ui.image_canvas import (
    BACKGROUND,
    ImageCanvas,
    ImageLoader,
    Overlay,
    ViewState,
    claims_shortcut,
)
from charstudio.ui.loupe import LoupeItem, is_plain

MAX_ITEMS = 8
SPACING = 6


def grid_shape(count: int) -> tuple[int, int]:
    """Rows and columns for ``count`` panes: 1×2, 2×2, 2×3 or 2×4 (1×1 for a single one)."""
    if count <= 2:
        return 1, max(count, 1)
    return 2, (min(count, MAX_ITEMS) + 1) // 2


class SurveyView(QWidget):
    """Arrows or a click move the focus, Z toggles fit/1:1 on all linked panes, I cycles the
    overlays, Esc asks to close. Other keys go to the parent window, for ``focused_key()``."""

    focusedChanged = Signal(int)
    closeRequested = Signal()
    # Compare: the candidate should become the image ``delta`` places on in the grid.
    candidateStepRequested = Signal(int)

    HANDLED_KEYS = frozenset(
        {Qt.Key_Left, Qt.Key_Right, Qt.Key_Up, Qt.Key_Down, Qt.Key_Z, Qt.Key_I, Qt.Key_Escape}
    )

    def __init__(self, loader: ImageLoader | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFocusPolicy(Qt.StrongFocus)
        self.setAttribute(Qt.WA_OpaquePaintEvent)
        self.loader = loader or ImageLoader(capacity=MAX_ITEMS, parent=self)
        self.loader.loaded.connect(self._on_loaded)
        self._items: list[LoupeItem] = []
        self._canvases: dict[int, ImageCanvas] = {}
        self._focused: int | None = None
        self._overlay = Overlay.NONE
        # The shared view, and each pane's offset from it (normalised image coordinates).
        self._master = ViewState()
        self._offsets: dict[int, tuple[float, float]] = {}
        self._syncing = False

    # -- items -----------------------------------------------------------------------------

    def set_items(self, items: list[LoupeItem], focused_key: int | None = None) -> None:
        """Show up to eight items (extra ones are ignored), fit, focus on ``focused_key`` or
        the first."""
        for canvas in self._canvases.values():
            canvas.hide()
            canvas.deleteLater()
        self._canvases.clear()
        self._offsets.clear()
        self._master = ViewState()
        seen: set[int] = set()
        self._items = []
        for item in items:
            if item.key not in seen and len(self._items) < MAX_ITEMS:
                seen.add(item.key)
                self._items.append(item)
        self.loader.retain(seen)
        for item in self._items:
            canvas = ImageCanvas(self)
            canvas.setFocusPolicy(Qt.NoFocus)
            canvas.set_overlay_mode(self._overlay)
            canvas.set_image(item.key, self.loader.request(item.key, item.path), item.info)
            canvas.viewChanged.connect(lambda state, c=canvas: self._on_view_changed(c, state))
            canvas.pressed.connect(lambda k=item.key: self.set_focused_key(k, emit=True))
            self._canvases[item.key] = canvas
            canvas.show()
        keys = self.keys()
        self._focused = focused_key if focused_key in seen else (keys[0] if keys else None)
        self._update_captions()
        self._update_focus_frames()
        self._relayout()

    def is_compare(self) -> bool:
        return len(self._items) == 2

    def _update_captions(self) -> None:
        roles = ("Select", "Candidate") if self.is_compare() else ("",) * len(self._items)
        for role, item in zip(roles, self._items, strict=False):
            name = item.info.get("name") or Path(item.path).name
            canvas = self._canvases[item.key]
            canvas.set_caption(f"{role} · {name}" if role else name)

    def replace_candidate(self, item: LoupeItem) -> None:
        """Compare: show ``item`` as the candidate, at the linked zoom, and focus it."""
        if not self.is_compare() or item.key == self._items[0].key:
            return
        old = self._items[1]
        canvas = self._canvases.pop(old.key)
        self._offsets.pop(old.key, None)
        self._items[1] = item
        self._canvases[item.key] = canvas
        self.loader.retain(self.keys())
        canvas.set_image(item.key, self.loader.request(item.key, item.path), item.info)
        canvas.pressed.disconnect()
        canvas.pressed.connect(lambda k=item.key: self.set_focused_key(k, emit=True))
        self._focused = item.key
        self._update_captions()
        self._update_focus_frames()
        self.focusedChanged.emit(item.key)

    def make_select(self) -> None:
        """Compare: the candidate becomes the select (Lightroom's "Make Select")."""
        if self.is_compare():
            self._items.reverse()
            self._update_captions()
            self._relayout()

    def swap(self) -> None:
        """Compare: select and candidate change places; the focus stays on its image."""
        self.make_select()

    def items(self) -> list[LoupeItem]:
        return list(self._items)

    def keys(self) -> list[int]:
        return [item.key for item in self._items]

    def canvas(self, key: int) -> ImageCanvas | None:
        return self._canvases.get(key)

    def canvases(self) -> list[ImageCanvas]:
        """The panes in reading order."""
        return [self._canvases[key] for key in self.keys()]

    def grid_shape(self) -> tuple[int, int]:
        return grid_shape(len(self._items))

    def remove_key(self, key: int) -> None:
        """Take an image out (it was rejected): the grid reflows and, if it had the focus,
        the focus moves to the image that takes its place (or the one before, at the end)."""
        keys = self.keys()
        if key not in keys:
            return
        index = keys.index(key)
        del self._items[index]
        canvas = self._canvases.pop(key)
        canvas.hide()
        canvas.deleteLater()
        self._offsets.pop(key, None)
        self.loader.retain(self.keys())
        if self._focused == key:
            keys = self.keys()
            self._focused = keys[min(index, len(keys) - 1)] if keys else None
            self._update_focus_frames()
            if self._focused is not None:
                self.focusedChanged.emit(self._focused)
        self._relayout()

    def update_info(self, key: int, info: dict[str, str]) -> None:
        for item in self._items:
            if item.key == key:
                item.info = dict(info)
        canvas = self._canvases.get(key)
        if canvas is not None:
            canvas.set_info(info)

    # -- focus -----------------------------------------------------------------------------

    def focused_key(self) -> int | None:
        return self._focused

    def set_focused_key(self, key: int, emit: bool = False) -> None:
        if key not in self._canvases or key == self._focused:
            return
        self._focused = key
        self._update_focus_frames()
        if emit:
            self.focusedChanged.emit(key)

    def move_focus(self, delta: int) -> bool:
        """Move the focus by ``delta`` panes in reading order (a row is ``columns`` panes);
        True when it moved."""
        keys = self.keys()
        if self._focused is None or not keys:
            return False
        index = keys.index(self._focused) + delta
        if not 0 <= index < len(keys):
            return False
        self.set_focused_key(keys[index], emit=True)
        return True

    def _update_focus_frames(self) -> None:
        for key, canvas in self._canvases.items():
            canvas.set_focused(key == self._focused)

    # -- linked views ----------------------------------------------------------------------

    def _state_for(self, key: int) -> ViewState:
        if self._master.fit:
            return ViewState()
        dx, dy = self._offsets.get(key, (0.0, 0.0))
        return ViewState(False, self._master.scale, self._master.cx + dx, self._master.cy + dy)

    def _on_view_changed(self, canvas: ImageCanvas, state: ViewState) -> None:
        key = canvas.key()
        if self._syncing or key is None:
            return
        if canvas.last_change_unlinked():
            # Only this pane moves; remember where it sits relative to the others.
            if not state.fit:
                self._offsets[key] = (state.cx - self._master.cx, state.cy - self._master.cy)
            return
        if state.fit:
            self._master = ViewState()
        else:
            dx, dy = self._offsets.get(key, (0.0, 0.0))
            self._master = ViewState(False, state.scale, state.cx - dx, state.cy - dy)
        self._syncing = True
        try:
            for other_key, other in self._canvases.items():
                if other is not canvas:
                    other.set_view_state(self._state_for(other_key))
        finally:
            self._syncing = False

    def toggle_fit_1to1(self) -> None:
        """Z: the pane under the mouse (about the mouse) or else the focused one (about its
        centre) toggles, and the linked panes follow."""
        hovered = [c for c in self._canvases.values() if c.hover_pos() is not None]
        if hovered:
            hovered[0].toggle_fit_1to1(hovered[0].hover_pos())
        elif self._focused is not None:
            self._canvases[self._focused].toggle_fit_1to1()

    def overlay_mode(self) -> Overlay:
        return self._overlay

    def cycle_overlay(self) -> Overlay:
        self._overlay = Overlay((self._overlay + 1) % len(Overlay))
        for canvas in self._canvases.values():
            canvas.set_overlay_mode(self._overlay)
        return self._overlay

    # -- loading and layout ----------------------------------------------------------------

    def _on_loaded(self, key: int, image: QImage) -> None:
        canvas = self._canvases.get(key)
        if canvas is not None:
            canvas.set_image(key, image, canvas.info())

    def _relayout(self) -> None:
        keys = self.keys()
        if not keys:
            self.update()
            return
        rows, columns = grid_shape(len(keys))
        area = self.rect().adjusted(SPACING, SPACING, -SPACING, -SPACING)
        width = (area.width() - SPACING * (columns - 1)) / columns
        height = (area.height() - SPACING * (rows - 1)) / rows
        for i, key in enumerate(keys):
            row, column = divmod(i, columns)
            x = area.x() + column * (width + SPACING)
            y = area.y() + row * (height + SPACING)
            self._canvases[key].setGeometry(
                QRect(round(x), round(y), round(x + width) - round(x), round(y + height) - round(y))
            )
        self.update()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._relayout()

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), BACKGROUND.darker(130))
        if not self._items:
            painter.setPen(Qt.gray)
            painter.drawText(self.rect(), Qt.AlignCenter, "nothing to compare")
        painter.end()

    # -- keys ------------------------------------------------------------------------------

    def event(self, event: QEvent) -> bool:
        return claims_shortcut(event, self.HANDLED_KEYS) or super().event(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        if key not in self.HANDLED_KEYS or not is_plain(event):
            event.ignore()  # culling keys go on to the parent window
            return
        columns = self.grid_shape()[1]
        if self.is_compare() and key in (Qt.Key_Right, Qt.Key_Left, Qt.Key_Up, Qt.Key_Down):
            if key == Qt.Key_Up:
                self.make_select()
                self.candidateStepRequested.emit(1)
            elif key == Qt.Key_Down:
                self.swap()
                self._focused = self._items[1].key
                self._update_focus_frames()
                self.focusedChanged.emit(self._focused)
            else:
                self.candidateStepRequested.emit(1 if key == Qt.Key_Right else -1)
        elif key == Qt.Key_Right:
            self.move_focus(1)
        elif key == Qt.Key_Left:
            self.move_focus(-1)
        elif key == Qt.Key_Down:
            self.move_focus(columns)
        elif key == Qt.Key_Up:
            self.move_focus(-columns)
        elif key == Qt.Key_Z:
            self.toggle_fit_1to1()
        elif key == Qt.Key_I:
            self.cycle_overlay()
        elif key == Qt.Key_Escape:
            self.closeRequested.emit()
        event.accept()
