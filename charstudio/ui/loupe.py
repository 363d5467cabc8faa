"""The loupe: one image at a time, stepped with the arrow keys (Lightroom's E view).

The zoom survives stepping, so the same eye can be compared across images at 1:1. Images
decode off the GUI thread; the neighbours of the current image are decoded ahead so that
stepping shows the next one at once. Keys the loupe does not use (P, X, U, 0-9…) are left
to the parent window, which applies them to ``current_key()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QImage, QKeyEvent
from PySide6.QtWidgets import QVBoxLayout, QWidget

from charstudio.ui.image_canvas import ImageCanvas, ImageLoader, claims_shortcut

PRELOAD_PRIORITY, CURRENT_PRIORITY = 0, 1


@dataclass
class LoupeItem:
    """An image to show: its catalog key, file path and display strings (see ImageCanvas)."""

    key: int
    path: str
    info: dict[str, str] = field(default_factory=dict)


def is_plain(event: QKeyEvent) -> bool:
    """No modifier other than the keypad's: Ctrl+Z or Shift+arrows belong to the window."""
    return not (event.modifiers() & ~Qt.KeypadModifier)


class LoupeView(QWidget):
    """Left/Right step, Z toggles fit/1:1, I cycles the info overlay, Esc asks to close."""

    currentChanged = Signal(int)
    closeRequested = Signal()

    HANDLED_KEYS = frozenset({Qt.Key_Left, Qt.Key_Right, Qt.Key_Z, Qt.Key_I, Qt.Key_Escape})

    def __init__(self, loader: ImageLoader | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFocusPolicy(Qt.StrongFocus)
        self.loader = loader or ImageLoader(capacity=5, parent=self)
        self.loader.loaded.connect(self._on_loaded)
        self.canvas = ImageCanvas(self)
        self.canvas.setFocusPolicy(Qt.NoFocus)  # keys come here, whatever the mouse is over
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self._items: list[LoupeItem] = []
        self._index = -1

    # -- items -----------------------------------------------------------------------------

    def set_items(self, items: list[LoupeItem], current: int = 0) -> None:
        """Show ``items`` starting at index ``current`` (clamped); the zoom is kept."""
        self._items = list(items)
        self._index = min(max(current, 0), len(self._items) - 1) if self._items else -1
        self._show_current()

    def items(self) -> list[LoupeItem]:
        return list(self._items)

    def current_index(self) -> int:
        return self._index

    def current_key(self) -> int | None:
        return self._items[self._index].key if self._index >= 0 else None

    def current_item(self) -> LoupeItem | None:
        return self._items[self._index] if self._index >= 0 else None

    def set_current_key(self, key: int) -> bool:
        """Jump to ``key`` (emits ``currentChanged``); False when it is not in the items."""
        for i, item in enumerate(self._items):
            if item.key == key:
                return self.go(i - self._index) or i == self._index
        return False

    def go(self, delta: int) -> bool:
        """Step by ``delta`` images, stopping at the ends; True when the image changed."""
        if not self._items:
            return False
        index = min(max(self._index + delta, 0), len(self._items) - 1)
        if index == self._index:
            return False
        self._index = index
        self._show_current()
        self.currentChanged.emit(self._items[index].key)
        return True

    def update_info(self, key: int, info: dict[str, str]) -> None:
        """A decision (or metadata) changed: refresh the badges and overlay if shown."""
        for item in self._items:
            if item.key == key:
                item.info = dict(info)
        if key == self.current_key():
            self.canvas.set_info(info)

    # -- loading ---------------------------------------------------------------------------

    def _neighbours(self) -> list[LoupeItem]:
        return [
            self._items[i] for i in (self._index + 1, self._index - 1) if 0 <= i < len(self._items)
        ]

    def _show_current(self) -> None:
        item = self.current_item()
        if item is None:
            self.loader.retain(())
            self.canvas.set_image(None, None, None)
            return
        neighbours = self._neighbours()
        self.loader.retain([item.key] + [n.key for n in neighbours])
        image = self.loader.request(item.key, item.path, CURRENT_PRIORITY)
        self.canvas.set_image(item.key, image, item.info)
        for neighbour in neighbours:  # next first: stepping forward is the common case
            self.loader.request(neighbour.key, neighbour.path, PRELOAD_PRIORITY)

    def _on_loaded(self, key: int, image: QImage) -> None:
        item = self.current_item()
        if item is not None and item.key == key:
            self.canvas.set_image(key, image, item.info)

    # -- keys ------------------------------------------------------------------------------

    def event(self, event: QEvent) -> bool:
        return claims_shortcut(event, self.HANDLED_KEYS) or super().event(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        if key not in self.HANDLED_KEYS or not is_plain(event):
            event.ignore()  # P, X, U, 0-9, G… go on to the parent window
            return
        if key == Qt.Key_Right:
            self.go(1)
        elif key == Qt.Key_Left:
            self.go(-1)
        elif key == Qt.Key_Z:
            self.canvas.toggle_fit_1to1(self.canvas.hover_pos())
        elif key == Qt.Key_I:
            self.canvas.cycle_overlay()
        elif key == Qt.Key_Escape:
            self.closeRequested.emit()
        event.accept()
