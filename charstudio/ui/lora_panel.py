"""Train a LoRA on the training set: kohya's main settings, one Train button, the run's
progress. A passive view: the LoRA presenter holds the rules, the controller the job."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import QRegularExpression, Qt, Signal
from PySide6.QtGui import QRegularExpressionValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from charstudio.catalog import Project
from charstudio.jobs import Progress
from charstudio.presenters import lora as presenter
from charstudio.presenters.progress_text import train_progress_text
from charstudio.presenters.train import IMAGE_CHOICES
from charstudio.training.lora_settings import LORA_OPTIMIZERS, LORA_SCHEDULERS, TrainLoraSettings
from charstudio.training.settings import TrainSettingsError
from charstudio.ui import form_binding as fb
from charstudio.ui.form_binding import Form
from charstudio.ui.widgets import (
    ERROR_STYLE,
    PRECISION_CHOICES,
    ComboBox,
    DoubleSpinBox,
    PathCombo,
    SpinBox,
    browse_button,
    dock_panel_layout,
    error_label,
)

__all__ = ["LoraPanel"]


def _rate_edit(tooltip: str) -> QLineEdit:
    edit = QLineEdit()
    edit.setValidator(QRegularExpressionValidator(QRegularExpression(r"[0-9.eE+-]{1,16}"), edit))
    edit.setToolTip(tooltip)
    return edit


def _rate(name: str, edit: QLineEdit) -> fb.Binding:
    def get() -> float:
        try:
            return float(edit.text())
        except ValueError:
            raise TrainSettingsError([f"{name}: {edit.text()!r} is not a number"]) from None

    return fb.Binding(name, get, lambda value: edit.setText(f"{value:g}"), edit.textChanged)


class LoraPanel(QWidget):
    trainRequested = Signal(object)  # params of a new "train-lora" job, checked
    pauseRequested = Signal()
    cancelRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._project: Project | None = None
        self._loading = False
        self._build_fields()
        self.form = self._build_form()
        self._actions = self._build_actions()
        self.hint_label, self.scroll, self.splitter = dock_panel_layout(
            self,
            "Open or create a project to train a LoRA.",
            [self._source_box(), self._network_box(), self._training_box()],
            self._actions,
            stretch=(3, 1),
        )
        self.form.on_change(self._changed)
        self.model_combo.currentTextChanged.connect(self._changed)
        self.images_combo.currentIndexChanged.connect(self._changed)
        self.set_project(None)

    # -- building ----------------------------------------------------------------------------

    def _build_fields(self) -> None:
        self.model_combo = PathCombo(None, "Checkpoint file or folder")
        self.model_combo.setToolTip("The model to train on; the guides train on base SD 1.5")
        self.images_combo = ComboBox()
        for label, value in IMAGE_CHOICES:
            self.images_combo.addItem(label, value)
        self.name_edit = QLineEdit()
        self.name_edit.setToolTip("Output name: files NAME-000001.safetensors, <lora:NAME:0.8>")
        self.token_edit = QLineEdit()
        self.token_edit.setToolTip("Activation tag: first in every caption, typed in prompts")
        self.dim_spin = SpinBox()
        self.dim_spin.setRange(1, 256)
        self.dim_spin.setToolTip("Network dim (rank)")
        self.alpha_spin = DoubleSpinBox()
        self.alpha_spin.setRange(0.1, 256.0)
        self.alpha_spin.setDecimals(1)
        self.conv_dim_spin = SpinBox()
        self.conv_dim_spin.setRange(0, 128)
        self.conv_dim_spin.setSpecialValueText("Off")
        self.conv_dim_spin.setToolTip("LoCon: rank of the 3×3 convolutions' LoRA (Off: LoRA only)")
        self.unet_lr_edit = _rate_edit("UNet learning rate (1e-4; Prodigy: 1)")
        self.te_lr_edit = _rate_edit("Text encoder learning rate (5e-5; Prodigy: 1)")
        self.train_te_check = QCheckBox("Train the text encoder")
        self.optimizer_combo = ComboBox()
        self.optimizer_combo.addItems(LORA_OPTIMIZERS)
        self.scheduler_combo = ComboBox()
        self.scheduler_combo.addItems(LORA_SCHEDULERS)
        self.epochs_spin = SpinBox()
        self.epochs_spin.setRange(0, 1000)
        self.epochs_spin.setSpecialValueText("Auto")
        self.repeats_spin = SpinBox()
        self.repeats_spin.setRange(0, 1000)
        self.repeats_spin.setSpecialValueText("Auto")
        self.repeats_spin.setToolTip("Auto: images × repeats × epochs near 1,600 steps")
        self.batch_spin = SpinBox()
        self.batch_spin.setRange(1, 64)
        self.resolution_spin = SpinBox()
        self.resolution_spin.setRange(64, 2048)
        self.resolution_spin.setSingleStep(64)
        self.save_every_spin = SpinBox()
        self.save_every_spin.setRange(0, 1000)
        self.save_every_spin.setSpecialValueText("Auto")
        self.save_every_spin.setToolTip("Save every N epochs (Auto: every epoch up to 20)")
        self.sample_every_spin = SpinBox()
        self.sample_every_spin.setRange(0, 1000)
        self.sample_every_spin.setToolTip("Sample images every N epochs with the sweep's prompts")
        self.min_snr_spin = DoubleSpinBox()
        self.min_snr_spin.setRange(0.0, 20.0)
        self.min_snr_spin.setToolTip("Min-SNR gamma (5; 0 = off)")
        self.noise_offset_spin = DoubleSpinBox()
        self.noise_offset_spin.setRange(0.0, 1.0)
        self.noise_offset_spin.setSingleStep(0.05)
        self.seed_edit = QLineEdit()
        self.seed_edit.setValidator(
            QRegularExpressionValidator(QRegularExpression(r"-1|\d{1,19}"), self.seed_edit)
        )
        self.seed_edit.setPlaceholderText("-1")
        self.precision_combo = ComboBox()
        for label, value in PRECISION_CHOICES:
            self.precision_combo.addItem(label, value)
        self.checkpointing_check = QCheckBox("Gradient checkpointing (less memory, slower)")

    def _build_form(self) -> Form:
        def seed_error(text: str) -> Exception:
            return TrainSettingsError([f"seed must be -1 (random) or a whole number, not {text!r}"])

        return Form(
            [
                fb.line("name", self.name_edit, strip=True),
                fb.line("token", self.token_edit, strip=True),
                fb.spin("dim", self.dim_spin),
                fb.spin("alpha", self.alpha_spin, decimals=1),
                fb.spin("conv_dim", self.conv_dim_spin),
                fb.check("train_text_encoder", self.train_te_check),
                _rate("unet_lr", self.unet_lr_edit),
                _rate("te_lr", self.te_lr_edit),
                fb.combo_text("optimizer", self.optimizer_combo),
                fb.combo_text("scheduler", self.scheduler_combo),
                fb.spin("epochs", self.epochs_spin, zero_is_none=True),
                fb.spin("repeats", self.repeats_spin, zero_is_none=True),
                fb.spin("batch_size", self.batch_spin),
                fb.spin("resolution", self.resolution_spin),
                fb.spin("save_every_epochs", self.save_every_spin, zero_is_none=True),
                fb.spin("sample_every_epochs", self.sample_every_spin),
                fb.spin("min_snr_gamma", self.min_snr_spin, decimals=2),
                fb.spin("noise_offset", self.noise_offset_spin, decimals=2),
                fb.seed("seed", self.seed_edit, seed_error),
                fb.combo_data("precision", self.precision_combo),
                fb.check("gradient_checkpointing", self.checkpointing_check),
            ]
        )

    def _source_box(self) -> QGroupBox:
        box = QGroupBox("Model and images")
        form = QFormLayout(box)
        row = QHBoxLayout()
        row.addWidget(self.model_combo, 1)
        row.addWidget(
            browse_button(
                self, self.model_combo, "Checkpoint", "Checkpoints (*.safetensors *.ckpt)"
            )
        )
        form.addRow("Checkpoint", row)
        form.addRow("Images", self.images_combo)
        return box

    def _network_box(self) -> QGroupBox:
        box = QGroupBox("LoRA")
        form = QFormLayout(box)
        form.addRow("Output name", self.name_edit)
        form.addRow("Activation tag", self.token_edit)
        form.addRow("Network dim", self.dim_spin)
        form.addRow("Network alpha", self.alpha_spin)
        form.addRow("LoCon conv dim", self.conv_dim_spin)
        form.addRow("UNet learning rate", self.unet_lr_edit)
        form.addRow("Text encoder rate", self.te_lr_edit)
        form.addRow("", self.train_te_check)
        form.addRow("Optimizer", self.optimizer_combo)
        form.addRow("Scheduler", self.scheduler_combo)
        return box

    def _training_box(self) -> QGroupBox:
        box = QGroupBox("Training")
        form = QFormLayout(box)
        form.addRow("Epochs", self.epochs_spin)
        form.addRow("Repeats", self.repeats_spin)
        form.addRow("Batch size", self.batch_spin)
        form.addRow("Resolution", self.resolution_spin)
        form.addRow("Save every N epochs", self.save_every_spin)
        form.addRow("Sample every N epochs", self.sample_every_spin)
        form.addRow("Min-SNR gamma", self.min_snr_spin)
        form.addRow("Noise offset", self.noise_offset_spin)
        form.addRow("Seed", self.seed_edit)
        form.addRow("Precision", self.precision_combo)
        form.addRow("", self.checkpointing_check)
        return box

    def _build_actions(self) -> QWidget:
        self.problem_label = error_label()
        self.train_button = QPushButton("Train LoRA")
        self.train_button.setDefault(True)
        self.train_button.setMinimumHeight(32)
        self.pause_button = QPushButton("Pause")
        self.pause_button.setToolTip("Save the current state and stop; Resume continues there")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the run; the epochs saved so far are kept")
        self.progress_bar = QProgressBar()
        self.progress_bar.setFormat("%v/%m")
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setTextFormat(Qt.TextFormat.PlainText)
        actions = QWidget()
        layout = QVBoxLayout(actions)
        layout.setContentsMargins(6, 2, 6, 6)
        layout.addWidget(self.problem_label)
        buttons = QHBoxLayout()
        buttons.addWidget(self.train_button, 1)
        buttons.addWidget(self.pause_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addStretch(1)
        self.train_button.clicked.connect(self.train)
        self.pause_button.clicked.connect(self.pauseRequested)
        self.cancel_button.clicked.connect(self.cancelRequested)
        self.set_busy(False)
        return actions

    # -- the project and its settings -----------------------------------------------------------

    def set_project(self, project: Project | None) -> None:
        if self._project is not None and project is not self._project:
            self.save_settings()
        self._project = project
        self.scroll.setEnabled(project is not None)
        self._actions.setEnabled(project is not None)
        self.hint_label.setVisible(project is None)
        self.set_busy(False)
        self.progress_bar.hide()
        self.status_label.clear()
        self.show_problems([])
        if project is None:
            return
        try:
            stored = project.catalog.get_setting(presenter.SETTING_KEY)
        except ValueError:
            stored = "unreadable"
        settings, choices, dropped = presenter.stored_state(stored, project)
        self._loading = True
        try:
            self.model_combo.set_path(choices.get("model"))
            self.images_combo.setCurrentIndex(
                max(0, self.images_combo.findData(choices.get("images", "picks")))
            )
            self.form.fill(settings)
        finally:
            self._loading = False
        if dropped:
            self.show_problems(
                [f"Saved LoRA settings reset to their defaults (unreadable): {', '.join(dropped)}"]
            )

    def set_model_choices(self, paths: Sequence[str]) -> None:
        self.model_combo.set_choices(paths)

    def settings(self) -> TrainLoraSettings:
        return TrainLoraSettings(**self.form.values())

    def current_params(self) -> dict[str, Any]:
        return presenter.job_params(
            self.settings(),
            self.model_combo.path(),
            None,
            str(self.images_combo.currentData()),
        )

    def save_settings(self) -> None:
        if self._project is None:
            return
        try:
            params = self.current_params()
        except TrainSettingsError:
            return  # a value still being typed: the last good settings stay
        params.pop("vae", None)
        self._project.catalog.set_setting(presenter.SETTING_KEY, params)

    def _changed(self) -> None:
        if not self._loading:
            self.show_problems([])

    # -- the job ---------------------------------------------------------------------------------

    def train(self) -> None:
        if self._project is None:
            return
        try:
            params = self.current_params()
        except TrainSettingsError as error:
            self.show_problems(error.problems)
            return
        problems, _warnings = presenter.problems(self._project, params)
        if problems:
            self.show_problems(problems)
            return
        self.save_settings()
        self.trainRequested.emit(params)

    def show_problems(self, problems: Sequence[str]) -> None:
        text = "\n".join(problems)
        self.problem_label.setText(text)
        self.problem_label.setVisible(bool(text))

    def set_busy(self, busy: bool) -> None:
        self.train_button.setEnabled(not busy)
        self.pause_button.setEnabled(busy)
        self.cancel_button.setEnabled(busy)

    def job_started(self, job_id: int) -> None:
        self.set_busy(True)
        self.progress_bar.setRange(0, 0)
        self.progress_bar.show()
        self.status_label.setStyleSheet("")
        self.status_label.setText(f"Job {job_id}: loading the model…")

    def show_progress(self, progress: Progress) -> None:
        if progress.total:
            self.progress_bar.setRange(0, progress.total)
            self.progress_bar.setValue(min(progress.done, progress.total))
        self.status_label.setText(train_progress_text(progress))

    def job_finished(self, status: str, text: str) -> None:
        self.set_busy(False)
        if status == "done" and self.progress_bar.maximum() > 0:
            self.progress_bar.setValue(self.progress_bar.maximum())
        self.status_label.setStyleSheet(ERROR_STYLE if status == "failed" else "")
        self.status_label.setText(text)

    def status_text(self) -> str:
        return self.status_label.text()
