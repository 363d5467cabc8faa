"""The Train panel's settings form: the widgets of every TrainTISettings field, in A1111's
order and wording, and the one binding table that maps them to the settings.

A mixin of :class:`~charstudio.ui.train_panel.TrainPanel`: the widgets live on the panel
(``panel.name_edit``…), built here so the panel module keeps to runs, checks and progress.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QRegularExpression, Qt
from PySide6.QtGui import QRegularExpressionValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLayout,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from charstudio.catalog import Project
from charstudio.engine.samplers import SAMPLER_NAMES
from charstudio.presenters.train import IMAGE_CHOICES
from charstudio.training.settings import (
    CLIP_GRAD_MODES,
    LATENT_SAMPLING_METHODS,
    TrainSettingsError,
)
from charstudio.ui import form_binding as fb
from charstudio.ui.dialog_folders import start_folder
from charstudio.ui.form_binding import Form
from charstudio.ui.widgets import (
    AUTOMATIC,
    PRECISION_CHOICES,
    ComboBox,
    DoubleSpinBox,
    PathCombo,
    SizeSpinBox,
    SpinBox,
    browse_button,
    fill_schedule_choices,
)

_SEED_PATTERN = r"-1|\d{1,19}"


class _Rows(QGridLayout):
    """Label | field rows, the dock's width split evenly: the labels wrap, so A1111's long
    labels fit a narrow dock without squeezing the fields, and every group lines up."""

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.setColumnStretch(0, 1)
        self.setColumnStretch(1, 1)
        self._next = 0

    def add(self, label: str, field: QWidget | QLayout) -> QLabel:
        text = QLabel(label)
        text.setWordWrap(True)
        if isinstance(field, QWidget):
            text.setBuddy(field)
            text.setToolTip(field.toolTip())
        self.addWidget(text, self._next, 0)
        if isinstance(field, QLayout):
            self.addLayout(field, self._next, 1)
        else:
            self.addWidget(field, self._next, 1)
        self._next += 1
        return text

    def add_wide(self, item: QWidget | QLayout) -> None:
        if isinstance(item, QLayout):
            self.addLayout(item, self._next, 0, 1, 2)
        else:
            self.addWidget(item, self._next, 0, 1, 2)
        self._next += 1


class TrainForm:
    """Builds the form's widgets on the panel (a QWidget) and binds them to the settings."""

    _project: Project | None

    def _build_source_box(self) -> QGroupBox:
        self.model_combo = PathCombo(None, "Checkpoint file or folder")
        self.remembered_model: str | None = None  # the project's saved choice, if any
        self.model_combo.setToolTip("The model to train on; A1111 trains on base SD 1.5")
        self.model_browse = browse_button(
            self, self.model_combo, "Checkpoint", "Checkpoints (*.safetensors *.ckpt)"
        )
        self.images_combo = ComboBox()
        for label, value in IMAGE_CHOICES:
            self.images_combo.addItem(label, value)
        self.images_combo.setToolTip(
            "Training set: the picks made into a training set (Use Picks as Training Set)"
        )
        self.images_label = QLabel()
        self.images_label.setWordWrap(True)
        self.images_label.setTextFormat(Qt.TextFormat.PlainText)

        box = QGroupBox("Model and images")
        form = QFormLayout(box)
        row = QHBoxLayout()
        row.addWidget(self.model_combo, 1)
        row.addWidget(self.model_browse)
        form.addRow("Checkpoint", row)
        form.addRow("Images", self.images_combo)
        form.addRow(self.images_label)
        return box

    def _build_embedding_box(self) -> QGroupBox:
        self.name_edit = QLineEdit()
        self.name_edit.setToolTip(
            "The embedding's file name and the word typed in prompts; a made-up word such as "
            "fr3nchl4dy (empty: the project's token)"
        )
        self.init_text_edit = QLineEdit()
        self.init_text_edit.setToolTip(
            "Initialization text: the embedding starts as these words' vectors (e.g. woman)"
        )
        self.vectors_spin = SpinBox()
        self.vectors_spin.setRange(1, 75)
        self.vectors_spin.setToolTip("Number of vectors per token (2 in the tutorial)")
        self.learning_rate_edit = QLineEdit()
        self.learning_rate_edit.setToolTip(
            "A fixed rate (0.002) or an A1111 schedule: 0.005:100, 1e-3:1000, 1e-5 "
            "(0.005 up to step 100, then 0.001 up to 1000, then 1e-5)"
        )
        self.batch_size_spin = SpinBox()
        self.batch_size_spin.setRange(0, 64)
        self.batch_size_spin.setSpecialValueText("Auto")
        self.batch_size_spin.setToolTip(
            "Images per batch. Auto: the number of images, at most 8. "
            "Batch size × gradient accumulation should equal the number of images."
        )
        self.accumulation_spin = SpinBox()
        self.accumulation_spin.setRange(1, 64)
        self.accumulation_spin.setToolTip(
            "Gradient accumulation steps: batches per step (4 × 2 or 2 × 4 when memory is short)"
        )
        self.max_steps_spin = SpinBox()
        self.max_steps_spin.setRange(1, 1_000_000)
        self.save_every_spin = SpinBox()
        self.save_every_spin.setRange(0, 100_000)
        self.save_every_spin.setToolTip(
            "Save a copy of embedding to the run folder every N steps, 0 to disable (the last "
            "step is always saved)"
        )
        self.preview_every_spin = SpinBox()
        self.preview_every_spin.setRange(0, 100_000)
        self.preview_every_spin.setToolTip(
            "Save an image to the run folder every N steps, 0 to disable"
        )
        self.template_edit = QPlainTextEdit()
        self.template_edit.setTabChangesFocus(True)
        self.template_edit.setPlaceholderText("a closeup photo of [name], neutral gray background")
        self.template_edit.setToolTip(
            "Prompt template: one prompt per line, a random line per image; [name] is the "
            "embedding, [filewords] the image's caption (its .txt file or its prompt)"
        )
        self.template_edit.setFixedHeight(self.template_edit.fontMetrics().lineSpacing() * 3 + 12)
        self.template_button = QPushButton("Load template file…")
        self.template_button.setToolTip(
            "Read a template file, e.g. from A1111's textual_inversion_templates"
        )
        self.width_spin = SizeSpinBox()
        self.height_spin = SizeSpinBox()
        self.latent_sampling_combo = ComboBox()
        self.latent_sampling_combo.addItems(LATENT_SAMPLING_METHODS)
        self.latent_sampling_combo.setToolTip(
            "once: each image is encoded once; deterministic: the VAE's mean; random: a new "
            "sample every step"
        )

        box = QGroupBox("Train an embedding")
        rows = _Rows(box)
        rows.add("Embedding name", self.name_edit)
        rows.add("Initialization text", self.init_text_edit)
        rows.add("Number of vectors per token", self.vectors_spin)
        rows.add("Embedding learning rate", self.learning_rate_edit)
        rows.add("Batch size", self.batch_size_spin)
        rows.add("Gradient accumulation steps", self.accumulation_spin)
        rows.add("Max steps", self.max_steps_spin)
        rows.add("Save a copy of embedding every N steps", self.save_every_spin)
        rows.add("Save an image every N steps", self.preview_every_spin)
        header = QHBoxLayout()
        header.addWidget(QLabel("Prompt template"))
        header.addStretch(1)
        header.addWidget(self.template_button)
        rows.add_wide(header)
        rows.add_wide(self.template_edit)
        size = QHBoxLayout()
        size.addWidget(self.width_spin, 1)
        size.addWidget(QLabel("×"))
        size.addWidget(self.height_spin, 1)
        rows.add("Width × height", size)
        rows.add("Latent sampling method", self.latent_sampling_combo)
        self.template_button.clicked.connect(self._pick_template_file)
        return box

    def _build_advanced(self) -> QWidget:
        self.advanced_button = QToolButton()
        self.advanced_button.setText("Advanced")
        self.advanced_button.setCheckable(True)
        self.advanced_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced_button.setArrowType(Qt.ArrowType.RightArrow)
        self.advanced_button.setAutoRaise(True)

        self.vae_combo = PathCombo(AUTOMATIC, "VAE file")
        self.vae_combo.setMinimumContentsLength(6)  # fit the narrow field column
        self.vae_browse = browse_button(
            self, self.vae_combo, "VAE", "VAE (*.safetensors *.ckpt *.pt)"
        )
        self.seed_edit = self._seed_edit("Seed of the run's noise and data order; -1: random")
        self.shuffle_tags_check = QCheckBox("Shuffle tags by ',' when creating prompts")
        self.tag_dropout_spin = DoubleSpinBox()
        self.tag_dropout_spin.setRange(0.0, 1.0)
        self.tag_dropout_spin.setSingleStep(0.05)
        self.tag_dropout_spin.setDecimals(2)
        self.tag_dropout_spin.setToolTip("Drop out tags when creating prompts: the chance per tag")
        self.clip_grad_mode_combo = ComboBox()
        self.clip_grad_mode_combo.addItems(CLIP_GRAD_MODES)
        self.clip_grad_value_edit = QLineEdit()
        self.clip_grad_value_edit.setToolTip(
            "Gradient clipping value, or a schedule like the learning rate"
        )
        self.alpha_weight_check = QCheckBox("Use PNG alpha channel as loss weight")
        self.clip_skip_spin = SpinBox()
        self.clip_skip_spin.setRange(1, 12)
        self.clip_skip_spin.setToolTip("Clip skip (1 = use the last CLIP layer)")
        self.precision_combo = ComboBox()
        for label, value in PRECISION_CHOICES:
            self.precision_combo.addItem(label, value)
        self.precision_combo.setToolTip(
            "Automatic: fp16 weights with autocast on an NVIDIA GPU (as A1111), fp32 on the CPU"
        )
        self.gradient_checkpointing_check = QCheckBox("Gradient checkpointing")
        self.gradient_checkpointing_check.setToolTip("Uses less GPU memory, trains slower")

        self.preview_prompt_edit = QLineEdit()
        self.preview_prompt_edit.setPlaceholderText("empty: the template's first line")
        self.preview_negative_edit = QLineEdit()
        self.preview_seed_edit = self._seed_edit(
            "Preview seed; -1: random, drawn when the run starts"
        )
        self.preview_sampler_combo = ComboBox()
        self.preview_sampler_combo.addItems(SAMPLER_NAMES)
        self.preview_schedule_combo = ComboBox()
        self.preview_schedule_combo.setToolTip("Schedule type (Automatic: the sampler's default)")
        self.preview_steps_spin = SpinBox()
        self.preview_steps_spin.setRange(1, 150)
        self.preview_cfg_spin = DoubleSpinBox()
        self.preview_cfg_spin.setRange(1.0, 30.0)
        self.preview_cfg_spin.setSingleStep(0.5)
        self.preview_cfg_spin.setDecimals(1)

        self.advanced_box = QWidget()
        layout = QVBoxLayout(self.advanced_box)
        layout.setContentsMargins(0, 0, 0, 0)
        training = QGroupBox("Training")
        rows = _Rows(training)
        vae = QHBoxLayout()
        vae.addWidget(self.vae_combo, 1)
        vae.addWidget(self.vae_browse)
        rows.add("VAE", vae)
        rows.add("Seed", self.seed_edit)
        rows.add_wide(self.shuffle_tags_check)
        rows.add("Drop out tags when creating prompts", self.tag_dropout_spin)
        rows.add("Gradient clipping", self.clip_grad_mode_combo)
        rows.add("Gradient clipping value", self.clip_grad_value_edit)
        rows.add_wide(self.alpha_weight_check)
        rows.add("Clip skip", self.clip_skip_spin)
        rows.add("Precision", self.precision_combo)
        rows.add_wide(self.gradient_checkpointing_check)
        layout.addWidget(training)

        preview = QGroupBox("Preview images")
        rows = _Rows(preview)
        rows.add("Preview prompt", self.preview_prompt_edit)
        rows.add("Negative prompt", self.preview_negative_edit)
        rows.add("Sampling method", self.preview_sampler_combo)
        rows.add("Schedule type", self.preview_schedule_combo)
        rows.add("Sampling steps", self.preview_steps_spin)
        rows.add("CFG scale", self.preview_cfg_spin)
        rows.add("Seed", self.preview_seed_edit)
        layout.addWidget(preview)
        self.advanced_box.hide()

        container = QWidget()
        outer = QVBoxLayout(container)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(2)
        outer.addWidget(self.advanced_button)
        outer.addWidget(self.advanced_box)
        self.advanced_button.toggled.connect(self.set_advanced_visible)
        self.preview_sampler_combo.currentTextChanged.connect(self._update_schedule_choices)
        self.clip_grad_mode_combo.currentTextChanged.connect(
            lambda mode: self.clip_grad_value_edit.setEnabled(mode != "disabled")
        )
        return container

    def _seed_edit(self, tooltip: str) -> QLineEdit:
        edit = QLineEdit()
        edit.setValidator(QRegularExpressionValidator(QRegularExpression(_SEED_PATTERN), edit))
        edit.setPlaceholderText("-1")
        edit.setToolTip(tooltip)
        return edit

    def _build_form(self) -> Form:
        """One binding per TrainTISettings field: the only place widgets meet fields."""

        def seed_error(text: str) -> Exception:
            return TrainSettingsError([f"seed must be -1 (random) or a whole number, not {text!r}"])

        def select_schedule(value: str | None) -> None:
            index = self.preview_schedule_combo.findText(
                value or AUTOMATIC, Qt.MatchFlag.MatchFixedString
            )
            self.preview_schedule_combo.setCurrentIndex(max(0, index))

        def select_sampler(value: str) -> None:
            index = self.preview_sampler_combo.findText(value, Qt.MatchFlag.MatchFixedString)
            self.preview_sampler_combo.setCurrentIndex(max(0, index))
            self._update_schedule_choices()

        sampler = fb.Binding(
            "preview_sampler",
            self.preview_sampler_combo.currentText,
            select_sampler,
            self.preview_sampler_combo.currentIndexChanged,
        )
        schedule = fb.Binding(
            "preview_schedule_type",
            self._schedule_type,
            select_schedule,
            self.preview_schedule_combo.currentIndexChanged,
        )
        return Form(
            [
                fb.line("name", self.name_edit, strip=True),
                fb.line("init_text", self.init_text_edit),
                fb.spin("vectors", self.vectors_spin),
                fb.line("learning_rate", self.learning_rate_edit, strip=True),
                fb.spin("batch_size", self.batch_size_spin, zero_is_none=True),
                fb.spin("gradient_accumulation", self.accumulation_spin),
                fb.spin("max_steps", self.max_steps_spin),
                fb.spin("save_every", self.save_every_spin),
                fb.spin("preview_every", self.preview_every_spin),
                fb.plain("template", self.template_edit),
                fb.spin("width", self.width_spin),
                fb.spin("height", self.height_spin),
                fb.combo_text("latent_sampling", self.latent_sampling_combo),
                fb.seed("seed", self.seed_edit, seed_error),
                fb.check("shuffle_tags", self.shuffle_tags_check),
                fb.spin("tag_dropout", self.tag_dropout_spin, decimals=2),
                fb.combo_text("clip_grad_mode", self.clip_grad_mode_combo),
                fb.line("clip_grad_value", self.clip_grad_value_edit, strip=True),
                fb.check("use_alpha_weight", self.alpha_weight_check),
                fb.spin("clip_skip", self.clip_skip_spin),
                fb.combo_data("precision", self.precision_combo),
                fb.check("gradient_checkpointing", self.gradient_checkpointing_check),
                fb.line("preview_prompt", self.preview_prompt_edit),
                fb.line("preview_negative_prompt", self.preview_negative_edit),
                fb.seed("preview_seed", self.preview_seed_edit, seed_error),
                # The sampler before its schedule type: it decides the schedule choices.
                sampler,
                schedule,
                fb.spin("preview_steps", self.preview_steps_spin),
                fb.spin("preview_cfg_scale", self.preview_cfg_spin, decimals=1),
            ]
        )

    def load_template_file(self, path: str | Path) -> None:
        from charstudio.training.templates import read_template_file

        try:
            text = read_template_file(path)
        except (OSError, UnicodeDecodeError) as error:
            self._show_checks([f"Cannot read the template file {path}: {error}"], self._warnings)
            return
        self.template_edit.setPlainText(text.strip("\n"))

    def set_advanced_visible(self, visible: bool) -> None:
        self.advanced_box.setVisible(visible)
        self.advanced_button.setArrowType(
            Qt.ArrowType.DownArrow if visible else Qt.ArrowType.RightArrow
        )
        if self.advanced_button.isChecked() != visible:
            self.advanced_button.setChecked(visible)

    def _pick_template_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Load template file",
            start_folder(self._project.root if self._project else None),
            "Templates (*.txt);;All files (*)",
        )
        if path:
            self.load_template_file(path)

    def _schedule_type(self) -> str | None:
        text = self.preview_schedule_combo.currentText()
        return None if text in ("", AUTOMATIC) else text

    def _update_schedule_choices(self) -> None:
        fill_schedule_choices(self.preview_sampler_combo, self.preview_schedule_combo)
