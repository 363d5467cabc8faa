"""Small widgets the dock panels share (Generate, Train, Compare): spin boxes that leave
the mouse wheel to the scroll area, checkpoint path combos with a browse button, the
live preview, error labels, and the panels' common layout."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PureWindowsPath
from typing import Any

from PySide6.QtCore import QEvent, QPoint, QRect, QSize, Qt, Signal
from PySide6.QtGui import (
    QIcon,
    QImage,
    QKeyEvent,
    QPainter,
    QPaintEvent,
    QValidator,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMenu,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from charstudio.ui.dialog_folders import start_folder

AUTOMATIC = "Automatic"  # schedule type shown for None (the sampler's own default)
PRECISION_CHOICES = (("Automatic", "auto"), ("fp16", "fp16"), ("bf16", "bf16"), ("fp32", "fp32"))
ERROR_STYLE = "color: #d9534f;"
MUTED_STYLE = "color: #888;"
PREVIEW_SIZE = 256  # preferred size of the live preview; it shrinks with the dock


class SpinBox(QSpinBox):
    """A spin box that lets the wheel scroll the panel unless it has the focus."""

    def wheelEvent(self, event: QWheelEvent) -> None:
        if self.hasFocus():
            super().wheelEvent(event)
        else:
            event.ignore()


class FieldSpinBox(QSpinBox):
    """A number field in a toolbar: Enter commits it and hands the keyboard back (the
    ``committed`` signal) instead of reaching the window's Enter shortcut (the loupe)."""

    committed = Signal()

    def event(self, event: QEvent) -> bool:
        if (
            event.type() == QEvent.Type.ShortcutOverride
            and isinstance(event, QKeyEvent)
            and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        ):
            event.accept()  # ours, not a window shortcut's
            return True
        return super().event(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        super().keyPressEvent(event)
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.interpretText()
            self.committed.emit()


class DoubleSpinBox(QDoubleSpinBox):
    def wheelEvent(self, event: QWheelEvent) -> None:
        if self.hasFocus():
            super().wheelEvent(event)
        else:
            event.ignore()


class ComboBox(QComboBox):
    def wheelEvent(self, event: QWheelEvent) -> None:
        if self.hasFocus():
            super().wheelEvent(event)
        else:
            event.ignore()


class SizeSpinBox(SpinBox):
    """Width/height: SD latents need multiples of 8, so other values are snapped when typed."""

    def __init__(self) -> None:
        super().__init__()
        self.setRange(64, 2048)
        self.setSingleStep(8)

    def validate(self, text: str, pos: int) -> object:
        result = super().validate(text, pos)
        state = result[0] if isinstance(result, tuple) else result
        if state == QValidator.State.Acceptable and int(text) % 8:
            return QValidator.State.Intermediate, text, pos
        return result

    def fixup(self, text: str) -> str:
        try:
            value = round(int(text) / 8) * 8
        except ValueError:
            return text
        return str(min(self.maximum(), max(self.minimum(), value)))


def file_label(path: str) -> str:
    # PureWindowsPath splits on both / and \, so Windows paths read well everywhere.
    return PureWindowsPath(path.rstrip("\\/")).name or path


class PathCombo(ComboBox):
    """An editable list of model files: file names shown, full paths as item data.

    A path typed or pasted into the box is used as it is. ``none_label`` ("Automatic") is an
    extra first entry standing for None.
    """

    def __init__(self, none_label: str | None, placeholder: str) -> None:
        super().__init__()
        self._none_label = none_label
        self.setEditable(True)
        self.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(12)
        self.lineEdit().setPlaceholderText(placeholder)
        self.currentTextChanged.connect(lambda _text: self.setToolTip(self.path() or ""))
        self.set_choices([])

    def set_choices(self, paths: Iterable[str]) -> None:
        paths_list = [str(path) for path in paths]
        current = self.path()
        blocked = self.blockSignals(True)
        try:
            self.clear()
            if self._none_label is not None:
                self.addItem(self._none_label, None)
            for path in paths_list:
                self._add(path)
        finally:
            self.blockSignals(blocked)
        self.set_path(current)

    def _add(self, path: str) -> int:
        self.addItem(file_label(path), path)
        index = self.count() - 1
        self.setItemData(index, path, Qt.ItemDataRole.ToolTipRole)
        return index

    def path(self) -> str | None:
        text = self.currentText().strip()
        if not text:
            return None
        # Prefer the selected entry: two folders may hold files of the same name.
        index = self.currentIndex()
        if index < 0 or self.itemText(index) != text:
            index = self.findText(text, Qt.MatchFlag.MatchExactly)
        return self.itemData(index) if index >= 0 else text

    def set_path(self, path: str | None) -> None:
        if not path:
            # "Automatic"; for checkpoints, like A1111, the first one when there are any.
            self.setCurrentIndex(0 if self.count() else -1)
            if not self.count():
                self.setEditText("")
            return
        index = self.findData(path)
        if index < 0:
            index = self._add(path)
        self.setCurrentIndex(index)
        self.setEditText(self.itemText(index))


def browse_button(parent: QWidget, combo: PathCombo, title: str, file_filter: str) -> QToolButton:
    """The "…" button: a model file on click, a diffusers folder from its menu."""

    def pick_file() -> None:
        path, _ = QFileDialog.getOpenFileName(
            parent, title, start_folder(combo.path()), file_filter
        )
        if path:
            combo.set_path(path)

    def pick_folder() -> None:
        path = QFileDialog.getExistingDirectory(
            parent, f"{title} (diffusers folder)", start_folder(combo.path())
        )
        if path:
            combo.set_path(path)

    button = QToolButton(parent)
    button.setText("…")
    button.setToolTip(f"{title}: a .safetensors/.ckpt file, or a diffusers folder from the menu")
    menu = QMenu(button)
    menu.addAction("File…", pick_file)
    menu.addAction("Diffusers folder…", pick_folder)
    button.setMenu(menu)
    button.setPopupMode(QToolButton.ToolButtonPopupMode.MenuButtonPopup)
    button.clicked.connect(pick_file)
    return button


def small_button(text: str, tooltip: str, icon: QIcon | None = None) -> QToolButton:
    """A tool button; with an icon, ``text`` is only its accessible name."""
    button = QToolButton()
    button.setText(text)
    button.setToolTip(tooltip)
    if icon is not None:
        button.setIcon(icon)
        button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)
    return button


def error_label() -> QLabel:
    label = QLabel()
    label.setTextFormat(Qt.TextFormat.PlainText)  # messages quote prompts with <lora:...> tags
    label.setWordWrap(True)
    label.setStyleSheet(ERROR_STYLE)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    # Long unbreakable words (paths) must not widen the dock.
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    label.setMinimumWidth(1)
    label.hide()
    return label


class Preview(QWidget):
    """The job's live preview, scaled to fit and centred. The engine's preview is 1/8 of the
    image's size (one pixel per latent), so it is enlarged, smoothly."""

    def __init__(self) -> None:
        super().__init__()
        self._image: QImage | None = None
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def image(self) -> QImage | None:
        return self._image

    def set_image(self, image: QImage | None) -> None:
        self._image = image
        self.setVisible(image is not None)
        self.update()

    def sizeHint(self) -> QSize:
        return QSize(PREVIEW_SIZE, PREVIEW_SIZE)

    def minimumSizeHint(self) -> QSize:
        return QSize(48, 48)

    def paintEvent(self, event: QPaintEvent) -> None:
        if self._image is None or self._image.isNull():
            return
        size = self._image.size().scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio)
        target = QRect(QPoint(0, 0), size)
        target.moveCenter(self.rect().center())
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        painter.drawImage(target, self._image)
        painter.end()


def pil_to_qimage(image: Any) -> QImage:
    """A QImage owning its pixels, from a PIL image (any mode) or a QImage."""
    if isinstance(image, QImage):
        return image.copy()
    rgba = image.convert("RGBA")
    data = rgba.tobytes("raw", "RGBA")
    borrowed = QImage(data, rgba.width, rgba.height, rgba.width * 4, QImage.Format.Format_RGBA8888)
    # The QImage above points into ``data``; the copy owns its pixels and outlives the bytes.
    return borrowed.copy()


# --- stored settings ----------------------------------------------------------------------------


def dock_panel_layout(
    panel: QWidget,
    hint: str,
    sections: list[QWidget],
    actions: QWidget,
    stretch: tuple[int, int] = (3, 1),
) -> tuple[QLabel, QScrollArea, QSplitter]:
    """The layout the dock panels share: a hint shown without a project, the settings in a
    scroll area, and below a splitter the actions and progress (the artist trades settings
    space for preview space with its handle). Returns (hint label, scroll area, splitter)."""
    hint_label = QLabel(hint)
    hint_label.setWordWrap(True)
    hint_label.setStyleSheet(MUTED_STYLE)
    content = QWidget()
    content_layout = QVBoxLayout(content)
    content_layout.setContentsMargins(4, 4, 4, 4)
    for section in sections:
        content_layout.addWidget(section)
    content_layout.addStretch(1)
    scroll = QScrollArea()
    scroll.setWidget(content)
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    splitter = QSplitter(Qt.Orientation.Vertical)
    splitter.addWidget(scroll)
    splitter.addWidget(actions)
    splitter.setStretchFactor(0, stretch[0])
    splitter.setStretchFactor(1, stretch[1])
    splitter.setChildrenCollapsible(False)
    layout = QVBoxLayout(panel)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(hint_label)
    layout.addWidget(splitter, 1)
    return hint_label, scroll, splitter


def fill_schedule_choices(sampler: QComboBox, schedule: QComboBox) -> None:
    """Offer only the schedule types the engine can run with the chosen sampler (DDIM:
    Automatic only), keeping the current choice when it still applies."""
    from charstudio.engine.samplers import schedule_types_for

    current = schedule.currentText() or AUTOMATIC
    try:
        choices = schedule_types_for(sampler.currentText())
    except ValueError:
        choices = [AUTOMATIC]
    blocked = schedule.blockSignals(True)
    try:
        schedule.clear()
        schedule.addItems(choices)
        schedule.setCurrentIndex(max(schedule.findText(current), 0))
    finally:
        schedule.blockSignals(blocked)


def hrow(*items: QWidget | str | tuple[QWidget, int]) -> QHBoxLayout:
    """A row for a form: widgets (with an optional stretch) and plain text labels."""
    row = QHBoxLayout()
    for item in items:
        if isinstance(item, str):
            row.addWidget(QLabel(item))
        elif isinstance(item, tuple):
            row.addWidget(item[0], item[1])
        else:
            row.addWidget(item)
    return row
