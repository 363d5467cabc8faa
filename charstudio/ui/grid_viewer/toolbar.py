"""The strip above the grid: its title, the sampling details and the action buttons."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontMetrics, QResizeEvent
from PySide6.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

if TYPE_CHECKING:
    from charstudio.ui.grid_viewer.viewer import GridViewer

__all__ = ["GridToolbar", "text_label"]


def text_label(muted: bool = False, bold: bool = False) -> QLabel:
    """A plain-text label that wraps instead of widening the window (the viewer shares it with
    two docks) or running under the buttons."""
    label = QLabel()
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setWordWrap(True)
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    label.setMinimumWidth(1)
    if muted:
        label.setStyleSheet("color: #888;")
    if bold:
        font = label.font()
        font.setBold(True)
        label.setFont(font)
    return label


class GridToolbar(QWidget):
    """Title and details at the left, the buttons at the right while both fit on one line,
    else the buttons on a row of their own under them: the title is never cut off."""

    def __init__(self, viewer: GridViewer) -> None:
        super().__init__(viewer)
        self.title_label = text_label(bold=True)
        self.detail_label = text_label(muted=True)
        self.fit_button = self._button("Fit", "Fit the whole grid (F)", viewer.fit)
        self.one_button = self._button(
            "1:1", "Zoom to 1:1 on the focused cell (Z)", viewer.zoom_1to1
        )
        self.choose_button = self._button(
            "Choose step", "Choose the focused column's step (C, or click its label)", viewer.choose
        )
        self.refine_button = self._button(
            "Refine…",
            "A new grid every 5 steps between the selected columns (Shift+←/→ or "
            "Shift+click two column labels; R)",
            viewer.refine,
        )
        self.save_button = self._button("Save grid PNG…", "Save the grid image", viewer.save_dialog)
        self.export_button = self._button(
            "Export chosen step…",
            "Write the chosen step as NAME.pt and NAME.safetensors (A1111, ComfyUI, diffusers)",
            viewer.request_export,
        )
        titles = QVBoxLayout()
        titles.setSpacing(0)
        titles.addWidget(self.title_label)
        titles.addWidget(self.detail_label)
        self.buttons = QWidget(self)
        row = QHBoxLayout(self.buttons)
        row.setContentsMargins(0, 0, 0, 0)
        for button in self.all_buttons():
            row.addWidget(button)
        row.addStretch(1)
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.addLayout(titles, 0, 0)
        self._grid.setColumnStretch(0, 1)
        self._below: bool | None = None
        self.place()

    def _button(self, text: str, tooltip: str, slot: Callable[[], Any]) -> QToolButton:
        button = QToolButton(self)
        button.setText(text)
        button.setToolTip(tooltip)
        button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        button.clicked.connect(lambda _=False: slot())
        return button

    def all_buttons(self) -> tuple[QToolButton, ...]:
        return (
            self.fit_button,
            self.one_button,
            self.choose_button,
            self.refine_button,
            self.save_button,
            self.export_button,
        )

    def set_texts(self, title: str, detail: str, detail_tooltip: str = "") -> None:
        self.title_label.setText(title)
        self.title_label.setToolTip(title)
        self.detail_label.setText(detail)
        self.detail_label.setToolTip(detail_tooltip)
        self.place()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self.place()

    def place(self) -> None:
        """Buttons beside the texts when the longer text fits next to them, else below."""
        needed = max(
            QFontMetrics(label.font()).horizontalAdvance(label.text())
            for label in (self.title_label, self.detail_label)
        )
        below = needed + 12 + self.buttons.sizeHint().width() > self.width()
        if below == self._below:
            return
        self._below = below
        self._grid.removeWidget(self.buttons)
        if below:
            self._grid.addWidget(self.buttons, 1, 0, 1, 2)
        else:
            self._grid.addWidget(self.buttons, 0, 1, Qt.AlignmentFlag.AlignTop)
