"""The left panel: what the grid shows (view, stars, label, sweep axes, text) and its order."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QVBoxLayout,
    QWidget,
)

from charstudio.catalog import COLORS, REJECT_REASONS
from charstudio.catalog.queries import SORTS, ImageFilter
from charstudio.ui.grid_delegate import REASON_TEXT

ANY = "any"


class FilterPanel(QWidget):
    filterChanged = Signal(object)  # ImageFilter

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._updating = False
        self.views = QListWidget()
        entries = [
            ("All photos", "all", None),
            ("Unreviewed", "unreviewed", None),
            ("Picked", "picked", None),
            ("Rejected", "rejected", None),
        ]
        entries += [(f"    {REASON_TEXT[r]}", "rejected", r) for r in REJECT_REASONS]
        entries += [("Training set (collection)", "training", None)]
        for label, view, reason in entries:
            item = QListWidgetItem(label)
            item.setData(256, (view, reason))
            self.views.addItem(item)
        self.views.setMaximumHeight(200)
        self.stars = QComboBox()
        self.stars.addItems(
            ["any", "★ or more", "★★ or more", "★★★ or more", "★★★★ or more", "★★★★★"]
        )
        self.color = QComboBox()
        self.color.addItems([ANY, *COLORS])
        self.search = QLineEdit()
        self.search.setPlaceholderText("Prompt text…")
        self.search.setClearButtonEnabled(True)
        self.sort = QComboBox()
        self.sort.addItems(list(SORTS))
        self.descending = QCheckBox("Descending")
        self.axes_form = QFormLayout()
        self.axis_boxes: dict[str, QComboBox] = {}

        form = QFormLayout()
        form.addRow("Stars", self.stars)
        form.addRow("Label", self.color)
        form.addRow("Search", self.search)
        form.addRow("Sort by", self.sort)
        form.addRow("", self.descending)
        layout = QVBoxLayout(self)
        layout.addWidget(self.views)
        layout.addLayout(form)
        layout.addLayout(self.axes_form)
        layout.addStretch(1)

        self.views.currentRowChanged.connect(self._emit)
        for box in (self.stars, self.color, self.sort):
            box.currentIndexChanged.connect(self._emit)
        self.search.textChanged.connect(self._emit)
        self.descending.toggled.connect(self._emit)

    def set_axes(self, axes: dict[str, list[str]]) -> None:
        """One combo box per sweep axis (e.g. X: an extreme closeup, a closeup, …)."""
        while self.axes_form.rowCount():
            self.axes_form.removeRow(0)
        self.axis_boxes.clear()
        for axis, values in axes.items():
            box = QComboBox()
            box.addItems([ANY, *values])
            box.currentIndexChanged.connect(self._emit)
            self.axis_boxes[axis] = box
            self.axes_form.addRow(f"Sweep {axis}", box)

    def current_filter(self) -> ImageFilter:
        item = self.views.currentItem()
        view, reason = item.data(256) if item is not None else ("all", None)
        return ImageFilter(
            view=view,
            reject_reason=reason,
            min_stars=self.stars.currentIndex(),
            color=None if self.color.currentText() == ANY else self.color.currentText(),
            sweep={
                a: b.currentText() for a, b in self.axis_boxes.items() if b.currentText() != ANY
            },
            text=self.search.text().strip(),
            sort=self.sort.currentText(),
            descending=self.descending.isChecked(),
        )

    def set_filter(self, image_filter: ImageFilter) -> None:
        """Show a filter (restored from the project) without emitting changes."""
        self._updating = True
        try:
            for row in range(self.views.count()):
                if self.views.item(row).data(256) == (
                    image_filter.view,
                    image_filter.reject_reason,
                ):
                    self.views.setCurrentRow(row)
            self.stars.setCurrentIndex(image_filter.min_stars)
            self.color.setCurrentText(image_filter.color or ANY)
            self.search.setText(image_filter.text)
            self.sort.setCurrentText(image_filter.sort)
            self.descending.setChecked(image_filter.descending)
            for axis, box in self.axis_boxes.items():
                box.setCurrentText(image_filter.sweep.get(axis, ANY))
        finally:
            self._updating = False

    def _emit(self) -> None:
        if not self._updating:
            self.filterChanged.emit(self.current_filter())
