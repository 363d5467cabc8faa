"""The QGraphicsView of all cells: one zoom and pan for every cell, the frozen headers in its
viewport margins, and the keys the grid takes from the window."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QBrush, QKeyEvent, QMouseEvent, QPainter, QWheelEvent
from PySide6.QtWidgets import QFrame, QGraphicsScene, QGraphicsView

from charstudio.ui.grid_viewer.headers import ColumnHeader, Corner, RowHeader
from charstudio.ui.grid_viewer.looks import (
    LABEL_BAND_H,
    PLOT_H,
    ROW_HEADER_W,
    VIEW_BG,
    WHEEL_FACTOR,
)
from charstudio.ui.image_canvas import claims_shortcut

if TYPE_CHECKING:
    from charstudio.ui.grid_viewer.viewer import GridViewer

__all__ = ["GridView"]


class GridView(QGraphicsView):
    """The scene of all cells, with the headers in its viewport margins."""

    KEYS = frozenset(
        {
            Qt.Key.Key_Left,
            Qt.Key.Key_Right,
            Qt.Key.Key_Up,
            Qt.Key.Key_Down,
            Qt.Key.Key_Return,
            Qt.Key.Key_Enter,
            Qt.Key.Key_E,
            Qt.Key.Key_C,
            Qt.Key.Key_Z,
            Qt.Key.Key_F,
            Qt.Key.Key_R,
            Qt.Key.Key_Plus,
            Qt.Key.Key_Equal,
            Qt.Key.Key_Minus,
            Qt.Key.Key_Escape,
        }
    )
    # The window's culling keys (P, X, U, 0-9, O, Q, L, B, also with Shift) and S/N would act
    # on the hidden library image: while the grid has the focus they do nothing.
    SWALLOWED = frozenset(
        {
            *(getattr(Qt.Key, f"Key_{c}") for c in "PXUOQLBSN"),
            *(getattr(Qt.Key, f"Key_{n}") for n in range(10)),
        }
    )

    MOVES: ClassVar[dict[Qt.Key, tuple[int, int]]] = {
        Qt.Key.Key_Left: (-1, 0),
        Qt.Key.Key_Right: (1, 0),
        Qt.Key.Key_Up: (0, -1),
        Qt.Key.Key_Down: (0, 1),
    }
    ACTIONS: ClassVar[dict[Qt.Key, str]] = {  # key -> the viewer's method
        Qt.Key.Key_C: "choose",
        Qt.Key.Key_Z: "zoom_1to1",
        Qt.Key.Key_F: "fit",
        Qt.Key.Key_R: "refine",
        Qt.Key.Key_Minus: "zoom_out",
        Qt.Key.Key_Escape: "escape",
    }

    def __init__(self, viewer: GridViewer, scene: QGraphicsScene) -> None:
        super().__init__(scene, viewer)
        self._viewer = viewer
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setBackgroundBrush(QBrush(VIEW_BG))
        self.setRenderHints(
            QPainter.RenderHint.Antialiasing | QPainter.RenderHint.SmoothPixmapTransform
        )
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.header = ColumnHeader(viewer, self)
        self.rows = RowHeader(viewer, self)
        self.corner = Corner(viewer, self)
        self.viewport().installEventFilter(self)
        self.set_header_height(PLOT_H + LABEL_BAND_H)

    def set_header_height(self, height: int) -> None:
        self.setViewportMargins(ROW_HEADER_W, height, 0, 0)
        self.place_headers()

    def place_headers(self) -> None:
        area = self.viewport().geometry()
        self.header.setGeometry(area.x(), 0, area.width(), area.y())
        self.rows.setGeometry(0, area.y(), area.x(), area.height())
        self.corner.setGeometry(0, 0, area.x(), area.y())
        self.update_headers()

    def update_headers(self) -> None:
        self.header.update()
        self.rows.update()
        self.corner.update()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.viewport() and event.type() == QEvent.Type.Resize:
            self.place_headers()
            self._viewer._view_resized()
        return super().eventFilter(watched, event)

    def scrollContentsBy(self, dx: int, dy: int) -> None:
        super().scrollContentsBy(dx, dy)
        self.update_headers()

    def event(self, event: QEvent) -> bool:
        if (
            event.type() == QEvent.Type.ShortcutOverride
            and isinstance(event, QKeyEvent)
            and event.key() in self.SWALLOWED
            and not (
                event.modifiers()
                & ~(Qt.KeyboardModifier.KeypadModifier | Qt.KeyboardModifier.ShiftModifier)
            )
        ):
            event.accept()
            return True
        return claims_shortcut(event, self.KEYS) or super().event(event)

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120
        if steps:
            self._viewer.zoom_by(WHEEL_FACTOR**steps, under_mouse=True)
        event.accept()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self._viewer._clicked(self.mapToScene(event.position().toPoint()))
        super().mousePressEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self._viewer._clicked(self.mapToScene(event.position().toPoint()))
            self._viewer.open_focused()
            event.accept()
            return
        super().mouseDoubleClickEvent(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if not self._handle_key(event):
            super().keyPressEvent(event)

    def _handle_key(self, event: QKeyEvent) -> bool:
        viewer = self._viewer
        if viewer.presenter.shape is None:
            return False
        modifiers = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
        shift = modifiers == Qt.KeyboardModifier.ShiftModifier
        if modifiers and not shift:
            return False
        key = event.key()
        if key in self.MOVES:
            dx, dy = self.MOVES[key]
            viewer.move_focus(dx, dy, extend=shift)
        elif key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            viewer.zoom_by(WHEEL_FACTOR)
        elif shift:
            return False
        elif key in (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_E):
            viewer.open_focused()
        elif key in self.ACTIONS:
            getattr(viewer, self.ACTIONS[key])()
        else:
            return False
        event.accept()
        return True
