"""The Generate panel's form: A1111's txt2img fields (model, prompts, sampling, seeds) and
its X/Y/Z plot rows, built on the panel as a mixin of
:class:`~charstudio.ui.generate_panel.GeneratePanel` (``panel.prompt_edit``…)."""

from __future__ import annotations

from PySide6.QtCore import QRegularExpression, Qt
from PySide6.QtGui import (
    QRegularExpressionValidator,
)
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QVBoxLayout,
)

from charstudio.engine.samplers import resolve_sampler
from charstudio.engine.sweeps import (
    AXIS_TYPES,
    SAMPLER_NAMES,
)
from charstudio.prompts.attention import EMPHASIS_MODES
from charstudio.ui.icons import dice_icon, reuse_icon
from charstudio.ui.widgets import (
    AUTOMATIC,
    MUTED_STYLE,
    PRECISION_CHOICES,
    ComboBox,
    DoubleSpinBox,
    PathCombo,
    SizeSpinBox,
    SpinBox,
    browse_button,
    hrow,
    small_button,
)

LETTERS = ("X", "Y", "Z")


AXIS_HINTS = {
    "Prompt S/R": "text to find first, then replacements",
    "Seed": "-1, 1234, 5678",
    "Steps": "20-40 (+10)",
    "CFG Scale": "5-9 (+1)",
    "Sampler": "Euler a, DPM++ 2M Karras",
    "Checkpoint name": "model_a, model_b",
    "Size": "512x512, 512x768",
    "Embedding": "name-40, name-60, name-80",
    "LoRA weight": "0.5-1 (+0.25)",
    "Clip skip": "1, 2",
    "Schedule type": "Karras, Exponential, Uniform",
    "VAE": "None, path/to/vae.safetensors",
    "Prompt order": "parts of the prompt, e.g. smiling, gray background",
}


class GenerateForm:
    """Builds the form's widgets on the panel (a QWidget)."""

    def _build_model_box(self) -> QGroupBox:
        self.model_combo = PathCombo(None, "Checkpoint file or folder")
        self.vae_combo = PathCombo(AUTOMATIC, "VAE file")
        self.model_browse = browse_button(
            self, self.model_combo, "Checkpoint", "Checkpoints (*.safetensors *.ckpt)"
        )
        self.vae_browse = browse_button(
            self, self.vae_combo, "VAE", "VAE (*.safetensors *.ckpt *.pt)"
        )
        box = QGroupBox("Model")
        form = QFormLayout(box)
        for label, combo, button in (
            ("Checkpoint", self.model_combo, self.model_browse),
            ("VAE", self.vae_combo, self.vae_browse),
        ):
            row = QHBoxLayout()
            row.addWidget(combo, 1)
            row.addWidget(button)
            form.addRow(label, row)
        return box

    def _prompt_edit(self, lines: int, placeholder: str) -> QPlainTextEdit:
        edit = QPlainTextEdit()
        edit.setPlaceholderText(placeholder)
        edit.setTabChangesFocus(True)
        height = edit.fontMetrics().lineSpacing() * lines + 12
        edit.setFixedHeight(height)
        edit.installEventFilter(self)  # Ctrl+Enter generates, as in A1111
        return edit

    def _build_prompt_box(self) -> QGroupBox:
        self.prompt_edit = self._prompt_edit(5, "Prompt (Ctrl+Enter to generate)")
        self.negative_edit = self._prompt_edit(3, "Negative prompt")
        self.prompt_tokens = QLabel()
        self.negative_tokens = QLabel()
        box = QGroupBox("Prompts")
        layout = QVBoxLayout(box)
        for title, edit, counter in (
            ("Prompt", self.prompt_edit, self.prompt_tokens),
            ("Negative prompt", self.negative_edit, self.negative_tokens),
        ):
            counter.setStyleSheet(MUTED_STYLE)
            counter.setAlignment(Qt.AlignmentFlag.AlignRight)
            header = QHBoxLayout()
            header.addWidget(QLabel(title))
            header.addStretch(1)
            header.addWidget(counter)
            layout.addLayout(header)
            layout.addWidget(edit)
        return box

    def _build_sampling_box(self) -> QGroupBox:
        self.sampler_combo = ComboBox()
        for name in SAMPLER_NAMES:
            self.sampler_combo.addItem(name)
            notes = resolve_sampler(name).notes
            if notes:
                self.sampler_combo.setItemData(
                    self.sampler_combo.count() - 1, notes, Qt.ItemDataRole.ToolTipRole
                )
        self.schedule_combo = ComboBox()
        self.schedule_combo.setToolTip("Schedule type (Automatic: the sampler's default)")
        self.steps_spin = SpinBox()
        self.steps_spin.setRange(1, 150)
        self.cfg_spin = DoubleSpinBox()
        self.cfg_spin.setRange(1.0, 30.0)
        self.cfg_spin.setSingleStep(0.5)
        self.cfg_spin.setDecimals(1)
        self.width_spin = SizeSpinBox()
        self.height_spin = SizeSpinBox()
        self.swap_size_button = small_button("⇅", "Swap width and height")
        self.batch_count_spin = SpinBox()
        self.batch_count_spin.setRange(1, 100)
        self.batch_count_spin.setToolTip("Batch count: batches made one after the other")
        self.batch_size_spin = SpinBox()
        self.batch_size_spin.setRange(1, 8)
        self.batch_size_spin.setToolTip("Batch size: images made at once (uses more VRAM)")
        self.clip_skip_spin = SpinBox()
        self.clip_skip_spin.setRange(1, 12)
        self.clip_skip_spin.setToolTip("Clip skip (1 = use the last CLIP layer)")
        self.seed_edit = QLineEdit()
        self.seed_edit.setValidator(
            QRegularExpressionValidator(QRegularExpression(r"-1|\d{1,19}"), self.seed_edit)
        )
        self.seed_edit.setPlaceholderText("-1")
        self.seed_edit.setToolTip("Seed; -1 picks a random one")
        self.rng_combo = ComboBox()
        self.rng_combo.addItems(["NV", "CPU", "GPU"])
        self.rng_combo.setToolTip(
            "Random number generator source, as A1111's setting. NV: an NVIDIA GPU's noise on "
            "any machine, so a seed makes the same image everywhere and in A1111; CPU; GPU"
        )
        self.emphasis_combo = ComboBox()
        self.emphasis_combo.addItems(list(EMPHASIS_MODES))
        self.emphasis_combo.setToolTip(
            "Emphasis, as A1111's setting. Original: (word:1.2) weights with the mean restored; "
            "No norm: weights only; None: brackets are plain text"
        )
        self.subseed_edit = QLineEdit()
        self.subseed_edit.setValidator(
            QRegularExpressionValidator(QRegularExpression(r"-1|\d{1,19}"), self.subseed_edit)
        )
        self.subseed_edit.setPlaceholderText("-1")
        self.subseed_edit.setToolTip("Variation seed; -1 picks a random one")
        self.subseed_strength_spin = DoubleSpinBox()
        self.subseed_strength_spin.setRange(0.0, 1.0)
        self.subseed_strength_spin.setSingleStep(0.05)
        self.subseed_strength_spin.setDecimals(2)
        self.subseed_strength_spin.setToolTip(
            "Variation strength: 0 is the seed's image, 1 the variation seed's"
        )
        self.random_seed_button = small_button("Random", "Random seed (-1)", dice_icon())
        self.reuse_seed_button = small_button("Reuse", "Reuse the last image's seed", reuse_icon())
        self.reuse_seed_button.setEnabled(False)

        box = QGroupBox("Sampling")
        form = QFormLayout(box)
        form.addRow("Sampler", hrow((self.sampler_combo, 3), (self.schedule_combo, 2)))
        form.addRow("Steps", hrow((self.steps_spin, 1), "CFG", (self.cfg_spin, 1)))
        row = hrow((self.width_spin, 1), "×", (self.height_spin, 1))
        row.addWidget(self.swap_size_button)
        form.addRow("Size", row)
        row = QHBoxLayout()
        row.addWidget(self.batch_count_spin, 1)
        row.addWidget(QLabel("×"))
        row.addWidget(self.batch_size_spin, 1)
        batch_label = QLabel("Batches")
        batch_label.setToolTip("Batch count × batch size")
        form.addRow(batch_label, row)
        row = QHBoxLayout()
        row.addWidget(self.seed_edit, 1)
        row.addWidget(self.random_seed_button)
        row.addWidget(self.reuse_seed_button)
        row.addWidget(QLabel("Clip skip"))
        row.addWidget(self.clip_skip_spin)
        form.addRow("Seed", row)
        form.addRow(
            "Variation",
            hrow((self.subseed_edit, 2), "strength", (self.subseed_strength_spin, 1)),
        )
        form.addRow("Noise", hrow((self.rng_combo, 1), "Emphasis", (self.emphasis_combo, 1)))

        self.sampler_combo.currentTextChanged.connect(self._update_schedule_choices)
        self.swap_size_button.clicked.connect(self._swap_size)
        self.random_seed_button.clicked.connect(lambda: self.seed_edit.setText("-1"))
        self.reuse_seed_button.clicked.connect(self._reuse_seed)
        return box

    def _build_xyz_box(self) -> QGroupBox:
        self.axis_type_combos: dict[str, QComboBox] = {}
        self.axis_value_edits: dict[str, QLineEdit] = {}
        box = QGroupBox("X/Y/Z plot")
        grid = QGridLayout(box)
        grid.setColumnStretch(2, 1)
        for row, letter in enumerate(LETTERS):
            combo = ComboBox()
            combo.addItems(["", *AXIS_TYPES])
            combo.setToolTip(f"{letter} axis type (empty: no {letter} axis)")
            edit = QLineEdit()
            edit.setToolTip(f"{letter} values, comma-separated (quotes keep commas)")
            edit.setClearButtonEnabled(True)
            self.axis_type_combos[letter] = combo
            self.axis_value_edits[letter] = edit
            grid.addWidget(QLabel(letter), row, 0)
            grid.addWidget(combo, row, 1)
            grid.addWidget(edit, row, 2)
            combo.currentTextChanged.connect(
                lambda _t, letter=letter: self._axis_type_changed(letter)
            )
            self._axis_type_changed(letter)
        self.swap_axes_button = small_button("⇄ X/Y", "Swap the X and Y axes")
        self.keep_seeds_check = QCheckBox("Keep -1 for seeds")
        self.keep_seeds_check.setToolTip("Every cell draws its own random seed")
        self.save_grid_check = QCheckBox("Save grid")
        self.save_grid_check.setToolTip("Also save an A1111-style grid image of the plot")
        row_layout = QHBoxLayout()
        row_layout.addWidget(self.keep_seeds_check)
        row_layout.addWidget(self.save_grid_check)
        row_layout.addStretch(1)
        row_layout.addWidget(self.swap_axes_button)
        grid.addLayout(row_layout, len(LETTERS), 0, 1, 3)
        self.plan_label = QLabel()
        self.plan_label.setTextFormat(Qt.TextFormat.PlainText)
        self.plan_label.setWordWrap(True)
        grid.addWidget(self.plan_label, len(LETTERS) + 1, 0, 1, 3)
        self.swap_axes_button.clicked.connect(self._swap_axes)
        return box

    def _build_engine_box(self) -> QGroupBox:
        """How the GPU runs (project setting ``engine``, read when a job starts)."""
        self.precision_combo = ComboBox()
        for label, value in PRECISION_CHOICES:
            self.precision_combo.addItem(label, value)
        self.precision_combo.setToolTip(
            "Automatic: fp16 on an NVIDIA GPU, fp32 on the CPU. bf16 cannot overflow and is "
            "as fast on RTX 30xx and newer."
        )
        self.compile_check = QCheckBox("Compile the UNet (torch.compile)")
        self.compile_check.setToolTip(
            "Faster sampling after a slow first job (the compile takes a minute or more)"
        )
        box = QGroupBox("Engine")
        form = QFormLayout(box)
        form.addRow("Precision", self.precision_combo)
        form.addRow(self.compile_check)
        self.precision_combo.currentIndexChanged.connect(self._engine_changed)
        self.compile_check.toggled.connect(self._engine_changed)
        return box
