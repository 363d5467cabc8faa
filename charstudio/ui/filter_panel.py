"""The left panel: what the grid shows (view, stars, label, sweep axes, text, faces) and its
order. Identity groups from the face analysis are listed with the collections; the look-alike
tools say what they need when they are off."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PySide6.QtCore import QModelIndex, Qt, Signal
from PySide6.QtGui import QPainter, QStandardItemModel
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSlider,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from charstudio.analysis.clustering import DEFAULT_IDENTITY_DISTANCE
from charstudio.analysis.view import FACE_FILTER_LABELS
from charstudio.catalog import COLORS, REJECT_REASONS
from charstudio.catalog.queries import FACE_FILTERS, LOOKALIKE_SORT, SORT_KEYS, ImageFilter
from charstudio.ui.grid_delegate import REASON_TEXT

ANY = "any"
ViewRole = 256  # (view, reject reason, identity group) of an entry of the view list
CountRole = 257  # how many images the entry holds, drawn at the right as in Lightroom
DISTANCE_STEPS = 100  # the identity slider moves in steps of 0.01 cosine distance


class CountDelegate(QStyledItemDelegate):
    """Draws an entry's count right-aligned in the muted colour."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        super().paint(painter, option, index)
        count = index.data(CountRole)
        if count is None:
            return
        painter.save()
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        role = (
            option.palette.ColorRole.HighlightedText
            if selected
            else option.palette.ColorRole.PlaceholderText
        )
        painter.setPen(option.palette.color(role))
        rect = option.rect.adjusted(0, 0, -6, 0)
        painter.drawText(
            rect, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, f"{count:,}"
        )
        painter.restore()


class FilterPanel(QWidget):
    filterChanged = Signal(object)  # ImageFilter
    identityDistanceChanged = Signal(float)
    weightsRequested = Signal()

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
            item.setData(ViewRole, (view, reason, None))
            self.views.addItem(item)
        self._fixed_views = self.views.count()  # identity groups follow these
        self.views.setMaximumHeight(260)
        self.views.setItemDelegate(CountDelegate(self.views))
        self.stars = QComboBox()
        self.stars.addItems(
            ["any", "★ or more", "★★ or more", "★★★ or more", "★★★★ or more", "★★★★★"]
        )
        self.color = QComboBox()
        self.color.addItems([ANY, *COLORS])
        self.search = QLineEdit()
        self.search.setPlaceholderText("Prompt text…")
        self.search.setClearButtonEnabled(True)
        self.face = QComboBox()
        for key in FACE_FILTERS:
            self.face.addItem(FACE_FILTER_LABELS[key], key)
        self.face.setToolTip("Culling flags from the face analysis (Photo > Analyze Faces)")
        self.sort = QComboBox()
        self.sort.addItems(list(SORT_KEYS))
        self.sort.setItemData(
            SORT_KEYS.index(LOOKALIKE_SORT),
            "Most like the picks first (no picks: like the selection); Descending reverses",
            Qt.ToolTipRole,
        )
        self.descending = QCheckBox("Descending")
        # Identity groups: the clustering threshold (average cosine distance).
        self.identity_slider = QSlider(Qt.Horizontal)
        self.identity_slider.setRange(20, 90)
        self.identity_slider.setValue(round(DEFAULT_IDENTITY_DISTANCE * DISTANCE_STEPS))
        self.identity_slider.setToolTip(
            "How different two faces may be and still count as one identity "
            "(lower: stricter, more and smaller groups)"
        )
        self.identity_value = QLabel()
        self._show_distance(self.identity_slider.value())
        # What the look-alike tools need, shown while they are off.
        self.lookalike_note = QLabel()
        self.lookalike_note.setWordWrap(True)
        self.lookalike_note.setStyleSheet("color: #c9a25a")
        self.weights_button = QPushButton("Get Face Recognition Weights…")
        self.weights_button.clicked.connect(self.weightsRequested)
        self.axes_form = QFormLayout()
        self.axis_boxes: dict[str, QComboBox] = {}

        form = QFormLayout()
        form.addRow("Stars", self.stars)
        form.addRow("Label", self.color)
        form.addRow("Search", self.search)
        form.addRow("Face", self.face)
        form.addRow("Sort by", self.sort)
        form.addRow("", self.descending)
        identity_row = QHBoxLayout()
        identity_row.addWidget(self.identity_slider, 1)
        identity_row.addWidget(self.identity_value)
        form.addRow("Identity", identity_row)
        layout = QVBoxLayout(self)
        layout.addWidget(self.views)
        layout.addLayout(form)
        layout.addWidget(self.lookalike_note)
        layout.addWidget(self.weights_button)
        layout.addLayout(self.axes_form)
        layout.addStretch(1)

        self.views.currentRowChanged.connect(self._emit)
        for box in (self.stars, self.color, self.face, self.sort):
            box.currentIndexChanged.connect(self._emit)
        self.identity_slider.valueChanged.connect(self._distance_moved)
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

    def set_counts(self, stats: Mapping[str, Any]) -> None:
        """Counts beside the views (the catalog's ``stats()``), updated after each decision
        so the four culling passes show what is left."""
        by_reason = stats.get("rejected_by_reason", {})
        counts = {
            "all": stats.get("total"),
            "unreviewed": stats.get("unreviewed"),
            "picked": stats.get("picked"),
            "training": stats.get("training_set"),
        }
        for row in range(self._fixed_views):
            item = self.views.item(row)
            view, reason, _identity = item.data(ViewRole)
            if view == "rejected":
                count = by_reason.get(reason) if reason else stats.get("rejected")
            else:
                count = counts.get(view)
            item.setData(CountRole, count)

    # -- the face analysis -----------------------------------------------------------------

    def set_identity_groups(self, labels: list[str]) -> None:
        """List identity groups ("Identity 1 (34)", …) after the fixed views, keeping the
        selected one when it still exists (else "All photos"), without emitting."""
        item = self.views.currentItem()
        current = item.data(ViewRole) if item is not None else None
        self._updating = True
        try:
            while self.views.count() > self._fixed_views:
                self.views.takeItem(self._fixed_views)
            for number, label in enumerate(labels, start=1):
                entry = QListWidgetItem(f"    {label}")
                entry.setData(ViewRole, ("all", None, number))
                self.views.addItem(entry)
            if current is not None and not self._select_view(current):
                self.views.setCurrentRow(0)
        finally:
            self._updating = False

    def set_lookalike_available(
        self, available: bool, message: str = "", *, need_weights: bool = False
    ) -> None:
        """Turn the look-alike sort and identity threshold on or off; ``message`` says why
        they are off; ``need_weights`` offers the button that gets the weights."""
        item = self.sort.model()
        assert isinstance(item, QStandardItemModel)
        entry = item.item(SORT_KEYS.index(LOOKALIKE_SORT))
        entry.setEnabled(available)
        entry.setToolTip("" if available else message)
        self.identity_slider.setEnabled(available)
        self.lookalike_note.setText(message)
        self.lookalike_note.setVisible(bool(message))
        self.weights_button.setVisible(need_weights)

    def identity_distance(self) -> float:
        return self.identity_slider.value() / DISTANCE_STEPS

    def set_identity_distance(self, distance: float) -> None:
        self.identity_slider.blockSignals(True)
        self.identity_slider.setValue(round(distance * DISTANCE_STEPS))
        self.identity_slider.blockSignals(False)
        self._show_distance(self.identity_slider.value())

    def _show_distance(self, value: int) -> None:
        self.identity_value.setText(f"{value / DISTANCE_STEPS:.2f}")

    def _distance_moved(self, value: int) -> None:
        self._show_distance(value)
        self.identityDistanceChanged.emit(value / DISTANCE_STEPS)

    def _select_view(self, key: tuple) -> bool:
        for row in range(self.views.count()):
            if tuple(self.views.item(row).data(ViewRole)) == tuple(key):
                self.views.setCurrentRow(row)
                return True
        return False

    # -- the filter ------------------------------------------------------------------------

    def current_filter(self) -> ImageFilter:
        item = self.views.currentItem()
        view, reason, identity = item.data(ViewRole) if item is not None else ("all", None, None)
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
            face=self.face.currentData() or ANY,
            identity=identity,
        )

    def set_filter(self, image_filter: ImageFilter) -> None:
        """Show a filter (restored from the project) without emitting changes."""
        self._updating = True
        try:
            self._select_view(
                (image_filter.view, image_filter.reject_reason, image_filter.identity)
            )
            self.stars.setCurrentIndex(image_filter.min_stars)
            self.color.setCurrentText(image_filter.color or ANY)
            self.search.setText(image_filter.text)
            self.sort.setCurrentText(image_filter.sort)
            self.face.setCurrentIndex(max(0, self.face.findData(image_filter.face)))
            self.descending.setChecked(image_filter.descending)
            for axis, box in self.axis_boxes.items():
                box.setCurrentText(image_filter.sweep.get(axis, ANY))
        finally:
            self._updating = False

    def _emit(self) -> None:
        if not self._updating:
            self.filterChanged.emit(self.current_filter())
