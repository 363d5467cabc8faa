"""The Generate panel: A1111's txt2img settings and X/Y/Z plot, laid out for a dock.

The panel edits one :class:`GenerateRequest` and shows the running job; it never runs anything.
It emits ``generateRequested(GenerateRequest)`` and ``cancelRequested(job_id)``; the main window
queues and runs the jobs and reports back through ``job_started`` / ``show_progress`` /
``job_finished``. Validation, planning and token counting are the core's (engine.requests,
engine.sweeps, prompts.token_count), so the panel, the command line and the tests agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import (
    QImage,
    QKeyEvent,
)
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from charstudio.catalog import Project
from charstudio.engine.requests import GenerateRequest, new_plan_seed
from charstudio.engine.runtime import ENGINE_SETTING, EngineOptions
from charstudio.engine.sweeps import (
    CHARACTER_SHEET_X,
    CHARACTER_SHEET_Y,
    GenerationSettings,
    character_sheet_preset,
    parse_axis,
    split_sampler_name,
)
from charstudio.jobs import Progress
from charstudio.presenters.generate import SETTING_KEY, stored_request
from charstudio.presenters.progress_text import generate_progress_text
from charstudio.prompts.token_count import CHUNK_LENGTH, format_schedule, prompt_report
from charstudio.ui.generate_form import AXIS_HINTS, LETTERS, GenerateForm
from charstudio.ui.widgets import (
    AUTOMATIC,
    ERROR_STYLE,
    MUTED_STYLE,
    Preview,
    dock_panel_layout,
    error_label,
    fill_schedule_choices,
    pil_to_qimage,
)

__all__ = ["SETTING_KEY", "GeneratePanel", "pil_to_qimage"]

EMPTY_COUNTER = f"0/{CHUNK_LENGTH}"

# Planning resolves every cell (Prompt S/R search, seeds); past this many cells the live label
# only multiplies axis lengths so typing never stalls. Generate always plans in full.
PLAN_CELL_LIMIT = 5000

# The character sheet searches for the first value of each axis ("an extreme closeup",
# "front shot"), so a prompt for it must contain both.
SHEET_FRAMING = parse_axis(CHARACTER_SHEET_X).value_text(0)
SHEET_ANGLE = parse_axis(CHARACTER_SHEET_Y).value_text(0)
# DESIGN.md workflow step 1: the tutorial's description of the character.
SHEET_DESCRIPTION = (
    "a 25yo woman with chin length straight black hair in a bob cut with bangs, "
    "(neutral gray background:1.3), neutral face expression"
)
SHEET_NEGATIVE = "jewellery, clothes, (blurry:1.2)"


# --- the panel ----------------------------------------------------------------------------------


class GeneratePanel(GenerateForm, QWidget):
    """txt2img + X/Y/Z plot settings, the Generate button and the running job's progress."""

    generateRequested = Signal(object)  # GenerateRequest, validated and planned once
    cancelRequested = Signal(int)  # the running job's id (from job_started; -1 if unknown)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._project: Project | None = None
        self._loading = False  # filling widgets from a request: no "changed" side effects
        self._last_seed: int | None = None
        self._job_id = -1
        self._embeddings: dict[str, int] = {}

        sections = [  # built before the actions, which read some of them
            self._build_model_box(),
            self._build_prompt_box(),
            self._build_sampling_box(),
            self._build_xyz_box(),
            self._build_engine_box(),
        ]
        self._actions = self._build_actions()
        self.hint_label, self.scroll, self.splitter = dock_panel_layout(
            self,
            "Open or create a project to generate images.",
            sections,
            self._actions,
            stretch=(3, 1),
        )

        self._connect_changes()
        self.set_request(GenerateRequest(GenerationSettings(prompt="")))
        self.set_project(None)

    # -- building ---------------------------------------------------------------------------

    def _show_engine_options(self, project: Project) -> None:
        try:
            options = EngineOptions.from_json(project.catalog.get_setting(ENGINE_SETTING))
        except (TypeError, ValueError):  # hand-edited nonsense: the defaults
            options = EngineOptions()
        self._loading = True
        try:
            index = self.precision_combo.findData(options.precision)
            self.precision_combo.setCurrentIndex(max(0, index))
            self.compile_check.setChecked(options.compile)
        finally:
            self._loading = False

    def engine_options(self) -> EngineOptions:
        return EngineOptions(
            precision=str(self.precision_combo.currentData()),
            compile=self.compile_check.isChecked(),
        )

    def _engine_changed(self) -> None:
        if self._loading or self._project is None:
            return
        self._project.catalog.set_setting(ENGINE_SETTING, self.engine_options().to_json())

    def _build_actions(self) -> QWidget:
        self.problem_label = error_label()
        self.character_sheet_button = QPushButton("Character sheet")
        self.character_sheet_button.setToolTip(
            "The tutorial's 288-image sweep: 3 framings × 3 angles × 8 batches of 4, "
            "DPM++ 2M Karras, 30 steps, CFG 7, 512×512, Keep -1 for seeds"
        )
        self.generate_button = QPushButton("Generate")
        self.generate_button.setDefault(True)
        self.generate_button.setMinimumHeight(32)
        self.generate_button.setToolTip(
            "Generate (Ctrl+Enter in a prompt). While a job runs, this queues another."
        )
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.queue_label = QLabel()
        self.queue_label.setStyleSheet(MUTED_STYLE)
        self.queue_label.hide()
        self.progress_bar = QProgressBar()
        self.progress_bar.setFormat("%v/%m")
        self.status_label = QLabel()
        self.status_label.setTextFormat(Qt.TextFormat.PlainText)
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.status_label.setMinimumWidth(1)
        self.preview = Preview()
        self.preview.hide()
        self.progress_bar.hide()
        self.status_label.hide()

        actions = QWidget()
        layout = QVBoxLayout(actions)
        layout.setContentsMargins(6, 2, 6, 6)
        layout.addWidget(self.problem_label)
        buttons = QHBoxLayout()
        buttons.addWidget(self.character_sheet_button)
        buttons.addWidget(self.generate_button, 1)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        layout.addWidget(self.queue_label)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addStretch(0)
        layout.addWidget(self.preview, 1)

        self.character_sheet_button.clicked.connect(self.apply_character_sheet)
        self.generate_button.clicked.connect(self.generate)
        self.cancel_button.clicked.connect(lambda: self.cancelRequested.emit(self._job_id))
        return actions

    def _connect_changes(self) -> None:
        for edit in (self.prompt_edit, self.negative_edit):
            edit.textChanged.connect(self._changed)
        for combo in (self.model_combo, self.vae_combo):
            combo.currentTextChanged.connect(self._changed)
        combos = (self.sampler_combo, self.schedule_combo, self.rng_combo, self.emphasis_combo)
        for combo in (*combos, *self.axis_type_combos.values()):
            combo.currentIndexChanged.connect(self._changed)
        for spin in self._spins():
            spin.valueChanged.connect(self._changed)
        for line in (self.seed_edit, self.subseed_edit, *self.axis_value_edits.values()):
            line.textChanged.connect(self._changed)
        for check in (self.keep_seeds_check, self.save_grid_check):
            check.toggled.connect(self._changed)

    def _spins(self) -> tuple[QSpinBox | QDoubleSpinBox, ...]:
        return (
            self.steps_spin,
            self.cfg_spin,
            self.width_spin,
            self.height_spin,
            self.batch_count_spin,
            self.batch_size_spin,
            self.clip_skip_spin,
            self.subseed_strength_spin,
        )

    # -- the window's API ---------------------------------------------------------------------

    def set_project(self, project: Project | None) -> None:
        """Show ``project``'s saved settings; the previous project's are saved first.

        Call with None before closing a project's catalog.
        """
        if self._project is not None and project is not self._project:
            self.save_settings()
        if project is not self._project:
            self.clear_job_view()  # the last project's progress and preview are not this one's
        self._project = project
        self.scroll.setEnabled(project is not None)
        self._actions.setEnabled(project is not None)
        self.hint_label.setVisible(project is None)
        if project is None:
            return
        try:
            stored = project.catalog.get_setting(SETTING_KEY)
        except ValueError:  # not even JSON (a hand-edited catalog)
            stored = "unreadable"
        request, dropped = stored_request(stored)
        self.set_request(request)
        self._show_engine_options(project)
        if dropped:
            self.show_problems(
                [f"Saved settings reset to their defaults (unreadable): {', '.join(dropped)}"]
            )

    def save_settings(self) -> None:
        """Remember the current settings in the project (also invalid axes, to fix later)."""
        if self._project is None:
            return
        try:
            request = self._build_request(plan_seed=0)
        except ValueError:
            return  # nothing consistent to store; the fields keep their text until fixed
        self._project.catalog.set_setting(SETTING_KEY, request.to_params())

    def set_request(self, request: GenerateRequest) -> None:
        """Fill the widgets from ``request`` (e.g. a saved one, or an image's settings)."""
        settings = request.settings
        self._loading = True
        try:
            self.model_combo.set_path(settings.model)
            self.vae_combo.set_path(settings.vae)
            self.prompt_edit.setPlainText(settings.prompt)
            self.negative_edit.setPlainText(settings.negative_prompt)
            self._set_sampler(settings.sampler, settings.schedule_type)
            self.steps_spin.setValue(settings.steps)
            self.cfg_spin.setValue(settings.cfg_scale)
            self.width_spin.setValue(settings.width)
            self.height_spin.setValue(settings.height)
            self.batch_count_spin.setValue(settings.batch_count)
            self.batch_size_spin.setValue(settings.batch_size)
            self.clip_skip_spin.setValue(settings.clip_skip)
            self.seed_edit.setText(str(settings.seed))
            self.subseed_edit.setText(str(settings.subseed))
            self.subseed_strength_spin.setValue(settings.subseed_strength)
            self.rng_combo.setCurrentText(settings.rng)
            self.emphasis_combo.setCurrentText(settings.emphasis)
            for letter, spec in zip(LETTERS, (request.x, request.y, request.z), strict=True):
                self._set_axis(letter, spec)
            self.keep_seeds_check.setChecked(request.keep_random_seeds)
            self.save_grid_check.setChecked(request.save_grid)
        finally:
            self._loading = False
        self._changed()

    def current_request(self, plan_seed: int | None = None) -> GenerateRequest:
        """The request the widgets show; ValueError naming the field or axis that is wrong.

        Each call draws a fresh ``plan_seed`` unless one is given, so -1 seeds differ per job.
        """
        request = self._build_request(new_plan_seed() if plan_seed is None else plan_seed)
        request.axes()  # syntax errors now, naming the axis letter
        return request

    def request_or_default(self) -> GenerateRequest:
        """The form's settings without axes, defaults for fields that don't parse: the base
        that another image's settings are sent onto."""
        return GenerateRequest(
            self._build_settings_or_default(), save_grid=self.save_grid_check.isChecked()
        )

    def set_model_choices(self, paths: Sequence[str]) -> None:
        self.model_combo.set_choices(paths)

    def set_vae_choices(self, paths: Sequence[str]) -> None:
        self.vae_combo.set_choices(paths)

    def set_embeddings(self, embeddings: Mapping[str, int]) -> None:
        """Embedding names -> vectors per token, so the token counters count them as A1111."""
        self._embeddings = dict(embeddings)
        self._update_token_counts()

    def set_last_seed(self, seed: int | None) -> None:
        """The seed ♻ fills in (the last generated or selected image's)."""
        self._last_seed = seed
        self.reuse_seed_button.setEnabled(seed is not None)
        self.reuse_seed_button.setToolTip(
            f"Reuse seed {seed}" if seed is not None else "Reuse the last image's seed"
        )

    def show_problems(self, problems: Sequence[str]) -> None:
        """Show problems (red) until the next change to the settings."""
        text = "\n".join(p for p in problems if p)
        self.problem_label.setText(text)
        self.problem_label.setVisible(bool(text))

    def clear_problems(self) -> None:
        self.show_problems([])

    def set_queue_length(self, waiting: int) -> None:
        """Jobs waiting behind the running one."""
        self.queue_label.setText(f"{waiting} job{'s' if waiting != 1 else ''} queued")
        self.queue_label.setVisible(waiting > 0)

    def set_busy(self, busy: bool) -> None:
        """A job is running: Cancel works. Generate stays enabled (a second job is queued)."""
        self.cancel_button.setEnabled(busy)
        if busy:
            self.progress_bar.show()
            self.status_label.show()

    def clear_job_view(self) -> None:
        """Back to the idle look: no progress, status, preview, queue count or problems."""
        self._job_id = -1
        self.set_busy(False)
        self.progress_bar.reset()
        self.progress_bar.hide()
        self.status_label.clear()
        self.status_label.hide()
        self.queue_label.hide()
        self.preview.set_image(None)
        self.clear_problems()

    def job_started(self, job_id: int) -> None:
        self._job_id = job_id
        self.progress_bar.setRange(0, 0)  # busy indicator until the first progress event
        self.status_label.setStyleSheet("")
        self.status_label.setText(f"Job {job_id}: starting…")
        self.set_busy(True)

    def show_progress(self, progress: Progress) -> None:
        if progress.total:
            self.progress_bar.setRange(0, progress.total)
            self.progress_bar.setValue(min(progress.done, progress.total))
        else:
            self.progress_bar.setRange(0, 0)
        self.status_label.setText(generate_progress_text(progress))
        preview = progress.detail.get("preview")
        if preview is not None:
            self.preview.set_image(pil_to_qimage(preview))

    def job_finished(self, status: str, message: str = "") -> None:
        """status: "done", "canceled" or "failed" (``message`` then says why)."""
        self._job_id = -1
        self.set_busy(False)
        titles = {"done": "Done", "canceled": "Canceled", "failed": "Failed"}
        title = titles.get(status, status.capitalize())
        if status == "done" and self.progress_bar.maximum() > 0:
            self.progress_bar.setValue(self.progress_bar.maximum())
        elif self.progress_bar.maximum() == 0:
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(1 if status == "done" else 0)
        self.status_label.setStyleSheet(ERROR_STYLE if status == "failed" else "")
        self.status_label.setText(f"{title}: {message}" if message else f"{title}.")
        self.status_label.show()

    def status_text(self) -> str:
        return self.status_label.text()

    # -- user actions ----------------------------------------------------------------------

    def generate(self) -> None:
        """Validate and plan the request, then emit it (no signal if something is wrong)."""
        if self._project is None:
            return
        try:
            request = self.current_request()
            request.plan()  # Prompt S/R text not found, bad sampler... before it is queued
        except ValueError as error:
            self.show_problems([str(error)])
            return
        self.save_settings()
        self.generateRequested.emit(request)

    def apply_character_sheet(self) -> None:
        """DESIGN.md workflow step 1: the 288-image framing × angle sweep."""
        prompt = self.prompt_edit.toPlainText().strip()
        if SHEET_FRAMING not in prompt or SHEET_ANGLE not in prompt:
            # Look description only, as the tutorial does: before training the project's
            # token is noise to CLIP and would only pull the sweep off the description.
            lead = f"{SHEET_FRAMING} {SHEET_ANGLE} photo of"
            has_either = SHEET_FRAMING in prompt or SHEET_ANGLE in prompt
            # Keep the artist's own description when there is one; otherwise the tutorial's.
            if prompt and not has_either:
                prompt = f"{lead} {prompt}"
            else:
                prompt = f"{lead} {SHEET_DESCRIPTION}"
        negative = self.negative_edit.toPlainText().strip() or SHEET_NEGATIVE
        preset, _x, _y = character_sheet_preset(prompt, negative)
        current = self._build_settings_or_default()
        settings = preset.replace(model=current.model, vae=current.vae, clip_skip=current.clip_skip)
        self.set_request(
            GenerateRequest(
                settings,
                x=CHARACTER_SHEET_X,
                y=CHARACTER_SHEET_Y,
                z=None,
                keep_random_seeds=True,
                save_grid=self.save_grid_check.isChecked(),
            )
        )

    # -- internals ---------------------------------------------------------------------------

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if (
            event.type() == QEvent.Type.KeyPress
            and watched in (self.prompt_edit, self.negative_edit)
            and isinstance(event, QKeyEvent)
            and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
            and event.modifiers() & Qt.KeyboardModifier.ControlModifier
        ):
            self.generate()
            return True
        return super().eventFilter(watched, event)

    def _seed(self, edit: QLineEdit | None = None, what: str = "Seed") -> int:
        text = (edit or self.seed_edit).text().strip()
        if text in ("", "-"):
            return -1
        try:
            return int(text)
        except ValueError:
            raise ValueError(
                f"{what} must be -1 (random) or a whole number, not {text!r}"
            ) from None

    def _build_settings(self) -> GenerationSettings:
        for spin in self._spins():
            spin.interpretText()  # a value still being typed counts
        return GenerationSettings(
            prompt=self.prompt_edit.toPlainText(),
            negative_prompt=self.negative_edit.toPlainText(),
            seed=self._seed(),
            steps=self.steps_spin.value(),
            sampler=self.sampler_combo.currentText(),
            schedule_type=self._schedule_type(),
            cfg_scale=self.cfg_spin.value(),
            width=self.width_spin.value(),
            height=self.height_spin.value(),
            model=self.model_combo.path(),
            vae=self.vae_combo.path(),
            clip_skip=self.clip_skip_spin.value(),
            batch_size=self.batch_size_spin.value(),
            batch_count=self.batch_count_spin.value(),
            rng=self.rng_combo.currentText(),
            emphasis=self.emphasis_combo.currentText(),
            subseed=self._seed(self.subseed_edit, "Variation seed"),
            subseed_strength=self.subseed_strength_spin.value(),
        )

    def _build_settings_or_default(self) -> GenerationSettings:
        try:
            return self._build_settings()
        except ValueError:
            return GenerationSettings(prompt="")

    def _build_request(self, plan_seed: int) -> GenerateRequest:
        x, y, z = (self._axis_spec(letter) for letter in LETTERS)
        return GenerateRequest(
            self._build_settings(),
            x=x,
            y=y,
            z=z,
            keep_random_seeds=self.keep_seeds_check.isChecked(),
            plan_seed=plan_seed,
            save_grid=self.save_grid_check.isChecked(),
        )

    def _schedule_type(self) -> str | None:
        text = self.schedule_combo.currentText()
        return None if text in ("", AUTOMATIC) else text

    def _axis_spec(self, letter: str) -> str | None:
        axis_type = self.axis_type_combos[letter].currentText()
        if not axis_type:
            return None
        return f"{axis_type}:{self.axis_value_edits[letter].text().strip()}"

    def _set_axis(self, letter: str, spec: str | None) -> None:
        name, _, values = (spec or "").partition(":")
        index = self.axis_type_combos[letter].findText(
            name.strip(),
            Qt.MatchFlag.MatchFixedString,  # case-insensitive
        )
        self.axis_type_combos[letter].setCurrentIndex(max(index, 0))
        edit = self.axis_value_edits[letter]
        edit.setText(values.strip() if index > 0 else "")
        edit.setCursorPosition(0)  # show the first value, the one Prompt S/R searches for

    def _axis_type_changed(self, letter: str) -> None:
        axis_type = self.axis_type_combos[letter].currentText()
        edit = self.axis_value_edits[letter]
        edit.setEnabled(bool(axis_type))
        edit.setPlaceholderText(AXIS_HINTS.get(axis_type, ""))

    def _set_sampler(self, sampler: str, schedule_type: str | None) -> None:
        try:
            name, suffix = split_sampler_name(sampler)
        except ValueError:
            name, suffix = GenerationSettings(prompt="").sampler, None
        self.sampler_combo.setCurrentText(name)
        self._update_schedule_choices()
        wanted = suffix or schedule_type or AUTOMATIC
        index = self.schedule_combo.findText(wanted, Qt.MatchFlag.MatchFixedString)
        self.schedule_combo.setCurrentIndex(max(index, 0))

    def _update_schedule_choices(self) -> None:
        fill_schedule_choices(self.sampler_combo, self.schedule_combo)

    def _swap_size(self) -> None:
        width, height = self.width_spin.value(), self.height_spin.value()
        self.width_spin.setValue(height)
        self.height_spin.setValue(width)

    def _swap_axes(self) -> None:
        x, y = self._axis_spec("X"), self._axis_spec("Y")
        self._set_axis("X", y)
        self._set_axis("Y", x)

    def _reuse_seed(self) -> None:
        if self._last_seed is not None:
            self.seed_edit.setText(str(self._last_seed))

    def _changed(self) -> None:
        if self._loading:
            return
        self.clear_problems()
        self._update_token_counts()
        self._update_plan()

    def _update_token_counts(self) -> None:
        for edit, label in (
            (self.prompt_edit, self.prompt_tokens),
            (self.negative_edit, self.negative_tokens),
        ):
            text = edit.toPlainText()
            if not text:  # skip loading the tokenizer while the window opens
                label.setText(EMPTY_COUNTER)
                label.setToolTip("")
                continue
            # Prompt editing and alternation: the longest text of the schedule counts, as in A1111.
            report = prompt_report(text, self._embeddings or None, steps=self.steps_spin.value())
            label.setText(report["counter"])
            chunks = " + ".join(str(chunk["tokens"]) for chunk in report["chunks"])
            tip = f"Tokens per 75-token chunk: {chunks}"
            if len(report["schedule"]) > 1:
                tip += "\n" + format_schedule(report).replace("; ", "\n")
            label.setToolTip(tip)

    def _update_plan(self) -> None:
        try:
            request = self._build_request(plan_seed=0)
            axes = request.axes()
            nx, ny, nz = (len(axis) if axis is not None else 1 for axis in axes)
            if nx * ny * nz <= PLAN_CELL_LIMIT:
                plan = request.plan()
                count = plan.image_count
            else:
                count = nx * ny * nz * request.settings.images_per_job
        except ValueError as error:
            self.plan_label.setStyleSheet(ERROR_STYLE)
            self.plan_label.setText(str(error))
            return
        self.plan_label.setStyleSheet(MUTED_STYLE)
        per_cell = request.settings.images_per_job
        images = f"{count} image{'s' if count != 1 else ''}"
        if not request.has_axes:
            batches = request.settings.batch_count
            self.plan_label.setText(
                f"{images} ({batches} batch{'es' if batches != 1 else ''} of "
                f"{request.settings.batch_size})"
            )
            return
        grid = f"{nx} × {ny} grid" if nz == 1 else f"{nz} grids of {nx} × {ny}"
        self.plan_label.setText(f"{images} · {grid} · {per_cell} per cell")

    def preview_image(self) -> QImage | None:
        """The last preview shown (full size), or None."""
        return self.preview.image()
