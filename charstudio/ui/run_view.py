"""A training run in the centre of the window: the loss full size, every preview side by side
over the steps (as OneTrainer's sample viewer) and the saved checkpoints with their losses.

Passive: it shows a :class:`~charstudio.presenters.run_view.RunSnapshot` and, while the run
trains, the loss points and previews the Train controller passes on.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from charstudio.presenters.run_view import RunSnapshot, SavedFile
from charstudio.ui.loss_plot import LossPlot
from charstudio.ui.widgets import ERROR_STYLE, MUTED_STYLE

PREVIEW_ICON = 128
PathRole = Qt.ItemDataRole.UserRole


class RunView(QWidget):
    compareRequested = Signal(int)  # make a checkpoint grid of this run
    previewOpened = Signal(str)  # a preview's file, to see full size
    closeRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._run_id: int | None = None
        self.title_label = QLabel()
        font = self.title_label.font()
        font.setPointSizeF(font.pointSizeF() * 1.3)
        font.setBold(True)
        self.title_label.setFont(font)
        self.detail_label = QLabel()
        self.detail_label.setWordWrap(True)
        self.detail_label.setTextFormat(Qt.TextFormat.PlainText)
        self.compare_button = QPushButton("Compare Checkpoints…")
        self.compare_button.setToolTip("A grid of the saved steps × seeds, scored by identity")
        self.back_button = QPushButton("Back to the Library")
        self.loss_plot = LossPlot()
        self.loss_plot.setMinimumHeight(180)
        self.previews = QListWidget()
        self.previews.setViewMode(QListView.ViewMode.IconMode)
        self.previews.setFlow(QListView.Flow.LeftToRight)
        self.previews.setWrapping(True)
        self.previews.setResizeMode(QListView.ResizeMode.Adjust)
        self.previews.setMovement(QListView.Movement.Static)
        self.previews.setIconSize(QSize(PREVIEW_ICON, PREVIEW_ICON))
        # A fixed cell: QListView lays uniform cells out in full rows, never one lone column.
        self.previews.setGridSize(QSize(PREVIEW_ICON + 12, PREVIEW_ICON + 28))
        self.previews.setUniformItemSizes(True)
        self.checkpoints = QTableWidget(0, 3)
        self.checkpoints.setHorizontalHeaderLabels(["Step", "Loss", "File"])
        self.checkpoints.verticalHeader().hide()
        self.checkpoints.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.checkpoints.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        header = self.checkpoints.horizontalHeader()
        for column in (0, 1):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.checkpoints.setMinimumWidth(300)

        top = QHBoxLayout()
        top.addWidget(self.title_label, 1)
        top.addWidget(self.compare_button)
        top.addWidget(self.back_button)
        lower = QSplitter(Qt.Orientation.Horizontal)
        lower.addWidget(self._titled("Previews over the steps", self.previews))
        lower.addWidget(self._titled("Saved checkpoints", self.checkpoints))
        lower.setStretchFactor(0, 3)
        lower.setStretchFactor(1, 1)
        body = QSplitter(Qt.Orientation.Vertical)
        body.addWidget(self._titled("Loss", self.loss_plot))
        body.addWidget(lower)
        body.setStretchFactor(0, 2)
        body.setStretchFactor(1, 3)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.detail_label)
        layout.addWidget(body, 1)

        self.compare_button.clicked.connect(self._compare)
        self.back_button.clicked.connect(self.closeRequested)
        self.previews.itemActivated.connect(
            lambda item: self.previewOpened.emit(item.data(PathRole))
        )

    @staticmethod
    def _titled(title: str, widget: QWidget) -> QWidget:
        box = QWidget()
        layout = QVBoxLayout(box)
        layout.setContentsMargins(0, 4, 0, 0)
        label = QLabel(title)
        label.setStyleSheet(MUTED_STYLE)
        layout.addWidget(label)
        layout.addWidget(widget, 1)
        return box

    def run_id(self) -> int | None:
        return self._run_id

    def set_snapshot(self, snapshot: RunSnapshot | None) -> None:
        self._run_id = snapshot.run_id if snapshot else None
        self.previews.clear()
        self.checkpoints.setRowCount(0)
        self.loss_plot.clear()
        if snapshot is None:
            self.title_label.setText("No training run")
            self.detail_label.clear()
            self.compare_button.setEnabled(False)
            return
        self.title_label.setText(snapshot.title)
        total = f" of {snapshot.end_step}" if snapshot.end_step else ""
        detail = f"Saved up to step {snapshot.step}{total}"
        if snapshot.error:
            detail += f" — {snapshot.error}"
        self.detail_label.setText(detail)
        self.detail_label.setStyleSheet(ERROR_STYLE if snapshot.status == "failed" else "")
        self.loss_plot.set_total(snapshot.end_step)
        self.loss_plot.set_points(snapshot.loss)
        for preview in snapshot.previews:
            self.add_preview(preview)
        for checkpoint in snapshot.checkpoints:
            self._add_checkpoint(checkpoint)
        self.compare_button.setEnabled(bool(snapshot.checkpoints))

    def add_loss_point(self, step: int, loss: float) -> None:
        self.loss_plot.add_point(step, loss)

    def add_preview(self, preview: SavedFile, image: QImage | None = None) -> None:
        """Append a preview (``image`` when the caller has it decoded already)."""
        path = str(preview.path)
        for row in range(self.previews.count()):
            if self.previews.item(row).data(PathRole) == path:
                return
        image = image if image is not None else QImage(path)
        icon = QPixmap.fromImage(image).scaled(
            PREVIEW_ICON,
            PREVIEW_ICON,
            Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.SmoothTransformation,
        )
        item = QListWidgetItem(QIcon(icon), preview.caption)
        item.setData(PathRole, path)
        item.setToolTip(path)
        self.previews.addItem(item)
        self.previews.scrollToItem(item)

    def add_checkpoint(self, checkpoint: SavedFile) -> None:
        for row in range(self.checkpoints.rowCount()):
            if self.checkpoints.item(row, 0).data(PathRole) == str(checkpoint.path):
                return
        self._add_checkpoint(checkpoint)
        self.compare_button.setEnabled(True)

    def _add_checkpoint(self, checkpoint: SavedFile) -> None:
        row = self.checkpoints.rowCount()
        self.checkpoints.insertRow(row)
        step = QTableWidgetItem(str(checkpoint.step))
        step.setData(PathRole, str(checkpoint.path))
        loss = "" if checkpoint.loss is None else f"{checkpoint.loss:.4f}"
        self.checkpoints.setItem(row, 0, step)
        self.checkpoints.setItem(row, 1, QTableWidgetItem(loss))
        self.checkpoints.setItem(row, 2, QTableWidgetItem(checkpoint.path.name))

    def preview_steps(self) -> list[str]:
        return [self.previews.item(r).text() for r in range(self.previews.count())]

    def checkpoint_rows(self) -> list[tuple[str, str, str]]:
        return [
            tuple(self.checkpoints.item(r, c).text() for c in range(3))  # type: ignore[misc]
            for r in range(self.checkpoints.rowCount())
        ]

    def _compare(self) -> None:
        if self._run_id is not None:
            self.compareRequested.emit(self._run_id)
