"""The Generate panel: what the artist sets is what the engine gets, and it survives restarts."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor

from charstudio.catalog import Project
from charstudio.engine.requests import GenerateRequest
from charstudio.engine.sweeps import GenerationSettings
from charstudio.jobs import Progress
from charstudio.ui.generate_panel import SETTING_KEY, GeneratePanel

pytestmark = pytest.mark.gui

MODELS = ["/models/sd/v1-5-pruned-emaonly.safetensors", "/models/sd/deliberate_v2.safetensors"]


@pytest.fixture
def project(tmp_path: Path):
    project = Project.create(tmp_path / "proj", "Anna", token="ann4")
    yield project
    project.close()


def make_panel(qtbot, project: Project | None) -> GeneratePanel:
    panel = GeneratePanel()
    qtbot.addWidget(panel)
    panel.set_model_choices(MODELS)
    panel.set_project(project)
    return panel


@pytest.fixture
def panel(qtbot, project: Project) -> GeneratePanel:
    return make_panel(qtbot, project)


def fill(panel: GeneratePanel) -> None:
    """Set every field to something other than its default, as an artist would."""
    panel.model_combo.setCurrentIndex(1)
    panel.vae_combo.set_path("/models/vae/vae-ft-mse-840000.safetensors")
    panel.prompt_edit.setPlainText("a closeup photo of ann4, (neutral gray background:1.3)")
    panel.negative_edit.setPlainText("jewellery, clothes")
    panel.sampler_combo.setCurrentText("Euler a")
    panel.schedule_combo.setCurrentText("SGM Uniform")
    panel.steps_spin.setValue(42)
    panel.cfg_spin.setValue(5.5)
    panel.seed_edit.setText("1234")
    panel.width_spin.setValue(640)
    panel.height_spin.setValue(768)
    panel.batch_count_spin.setValue(3)
    panel.batch_size_spin.setValue(2)
    panel.clip_skip_spin.setValue(2)
    panel.subseed_edit.setText("777")
    panel.subseed_strength_spin.setValue(0.25)
    panel.rng_combo.setCurrentText("CPU")
    panel.emphasis_combo.setCurrentText("No norm")
    panel.axis_type_combos["X"].setCurrentText("Steps")
    panel.axis_value_edits["X"].setText("20-40 (+10)")
    panel.keep_seeds_check.setChecked(True)
    panel.save_grid_check.setChecked(False)


FILLED = GenerationSettings(
    prompt="a closeup photo of ann4, (neutral gray background:1.3)",
    negative_prompt="jewellery, clothes",
    seed=1234,
    steps=42,
    sampler="Euler a",
    schedule_type="SGM Uniform",
    cfg_scale=5.5,
    width=640,
    height=768,
    model=MODELS[1],
    vae="/models/vae/vae-ft-mse-840000.safetensors",
    clip_skip=2,
    batch_size=2,
    batch_count=3,
    rng="CPU",
    emphasis="No norm",
    subseed=777,
    subseed_strength=0.25,
)


def test_generate_emits_the_request_the_widgets_show(panel: GeneratePanel, qtbot) -> None:
    fill(panel)
    with qtbot.waitSignal(panel.generateRequested) as emitted:
        qtbot.mouseClick(panel.generate_button, Qt.LeftButton)
    request = emitted.args[0]
    assert isinstance(request, GenerateRequest)
    assert request.settings == FILLED
    assert (request.x, request.y, request.z) == ("Steps:20-40 (+10)", None, None)
    assert request.keep_random_seeds and not request.save_grid
    assert request.plan().image_count == 3 * 6
    assert "3 × 1 grid" in panel.plan_label.text()


def test_ctrl_enter_in_the_prompt_generates_with_a_fresh_plan_seed(
    panel: GeneratePanel, qtbot
) -> None:
    panel.prompt_edit.setPlainText("a photo of ann4")
    with qtbot.waitSignal(panel.generateRequested) as first:
        qtbot.keyClick(panel.prompt_edit, Qt.Key_Return, Qt.ControlModifier)
    with qtbot.waitSignal(panel.generateRequested) as second:
        qtbot.keyClick(panel.prompt_edit, Qt.Key_Enter, Qt.ControlModifier)
    assert panel.prompt_edit.toPlainText() == "a photo of ann4"  # no newline typed
    # Seed -1 must give new images every time: each job draws its own random seeds.
    assert first.args[0].plan_seed != second.args[0].plan_seed


def test_settings_round_trip_through_the_project(qtbot, project: Project) -> None:
    first = make_panel(qtbot, project)
    fill(first)
    first.save_settings()
    second = make_panel(qtbot, project)
    assert second.current_request(plan_seed=1) == first.current_request(plan_seed=1)
    assert second.current_request().settings == FILLED
    assert second.model_combo.currentText() == "deliberate_v2.safetensors"


def test_switching_project_saves_and_generate_saves(qtbot, project: Project, tmp_path) -> None:
    panel = make_panel(qtbot, project)
    panel.prompt_edit.setPlainText("first prompt")
    other = Project.create(tmp_path / "other", "Bea")
    panel.set_project(other)  # saves "first prompt" into the first project
    assert panel.prompt_edit.toPlainText() == ""  # the other project starts from defaults
    panel.prompt_edit.setPlainText("other prompt")
    with qtbot.waitSignal(panel.generateRequested):
        panel.generate()
    assert other.catalog.get_setting(SETTING_KEY)["settings"]["prompt"] == "other prompt"
    panel.set_project(project)
    assert panel.prompt_edit.toPlainText() == "first prompt"
    other.close()


def test_character_sheet_is_the_288_image_job(panel: GeneratePanel, qtbot) -> None:
    panel.model_combo.setCurrentIndex(1)
    qtbot.mouseClick(panel.character_sheet_button, Qt.LeftButton)
    request = panel.current_request()
    settings = request.settings
    assert settings.prompt.startswith("an extreme closeup front shot photo of a 25yo woman")
    # The untrained token would be noise to CLIP: the sheet uses the description alone.
    assert "ann4" not in settings.prompt
    assert (settings.sampler, settings.schedule_type, settings.steps) == ("DPM++ 2M", "Karras", 30)
    assert (settings.cfg_scale, settings.width, settings.height, settings.seed) == (7, 512, 512, -1)
    assert settings.model == MODELS[1]  # the chosen checkpoint is kept
    assert request.keep_random_seeds
    plan = request.plan()
    assert plan.image_count == 288
    assert plan.shape == (3, 3, 1)
    assert panel.plan_label.text().startswith("288 images · 3 × 3 grid · 32 per cell")


def test_character_sheet_keeps_a_prompt_written_for_it(panel: GeneratePanel) -> None:
    own = "an extreme closeup front shot photo of a woman with red curls, gray background"
    panel.prompt_edit.setPlainText(own)
    panel.apply_character_sheet()
    assert panel.prompt_edit.toPlainText() == own
    # A description without the framing words gets them in front, keeping the description.
    panel.prompt_edit.setPlainText("a woman with red curls")
    panel.apply_character_sheet()
    text = panel.prompt_edit.toPlainText()
    assert text == "an extreme closeup front shot photo of a woman with red curls"
    assert panel.current_request().plan().image_count == 288


def test_an_axis_text_missing_from_the_prompt_is_shown_and_nothing_is_emitted(
    panel: GeneratePanel, qtbot
) -> None:
    panel.prompt_edit.setPlainText("a closeup photo of ann4")
    panel.axis_type_combos["X"].setCurrentText("Prompt S/R")
    panel.axis_value_edits["X"].setText("an extreme closeup, a closeup")
    assert "an extreme closeup" in panel.plan_label.text()  # live, before Generate
    with qtbot.assertNotEmitted(panel.generateRequested):
        qtbot.mouseClick(panel.generate_button, Qt.LeftButton)
    assert panel.problem_label.isVisibleTo(panel)
    assert panel.problem_label.text().startswith("X axis:")
    assert "'an extreme closeup'" in panel.problem_label.text()
    panel.prompt_edit.setPlainText("an extreme closeup photo of ann4")  # fixing it clears it
    assert not panel.problem_label.isVisibleTo(panel)
    assert panel.plan_label.text().startswith("2 images · 2 × 1 grid")


def test_an_unparsable_axis_names_the_axis(panel: GeneratePanel, qtbot) -> None:
    panel.axis_type_combos["Y"].setCurrentText("Steps")
    panel.axis_value_edits["Y"].setText("many")
    with pytest.raises(ValueError, match=r"^Y axis: .*'many'"):
        panel.current_request()
    with qtbot.assertNotEmitted(panel.generateRequested):
        panel.generate()
    assert "Y axis" in panel.problem_label.text()


def test_window_problems_stay_until_the_next_change(panel: GeneratePanel) -> None:
    panel.show_problems(["Unknown LoRA 'fr3nch'", "Model file not found: /x.safetensors"])
    assert panel.problem_label.isVisibleTo(panel)
    assert "Unknown LoRA 'fr3nch'\nModel file not found" in panel.problem_label.text()
    panel.steps_spin.setValue(31)
    assert not panel.problem_label.isVisibleTo(panel)


def test_token_counters_follow_the_text(panel: GeneratePanel) -> None:
    assert panel.prompt_tokens.text() == "0/75"
    panel.prompt_edit.setPlainText("a photo of a cat <lora:fr3nch:0.8>")  # tags are not counted
    assert panel.prompt_tokens.text() == "5/75"
    panel.prompt_edit.setPlainText("cat, " * 40)
    assert panel.prompt_tokens.text() == "80/150"  # a second 75-token chunk
    panel.negative_edit.setPlainText("blurry")
    assert panel.negative_tokens.text() == "1/75"
    panel.set_embeddings({"blurry": 8})  # an embedding counts its vectors, as in A1111
    assert panel.negative_tokens.text() == "8/75"


def test_token_counter_counts_the_longest_scheduled_prompt(panel: GeneratePanel) -> None:
    panel.steps_spin.setValue(10)
    panel.prompt_edit.setPlainText("a [cat:very fluffy long haired dog:0.5]")
    assert panel.prompt_tokens.text() == "6/75"  # "a very fluffy long haired dog", as in A1111
    assert "steps 1–6: a cat" in panel.prompt_tokens.toolTip()
    panel.prompt_edit.setPlainText("a [cat|very fluffy long haired dog]")
    panel.steps_spin.setValue(1)  # one step only ever reads the first option
    assert panel.prompt_tokens.text() == "2/75"


def test_progress_shows_image_count_speed_eta_and_preview(panel: GeneratePanel, qtbot) -> None:
    panel.job_started(7)
    assert panel.cancel_button.isEnabled() and panel.generate_button.isEnabled()
    preview = Image.new("RGB", (64, 32), (255, 0, 0))
    detail = {"images_done": 12, "images_total": 288, "it_per_s": 5.3, "preview": preview}
    panel.show_progress(Progress(12, 288, "", 20.0, detail))
    assert panel.status_text() == "Image 12/288 · 5.3 it/s · ETA 07:40"
    assert (panel.progress_bar.value(), panel.progress_bar.maximum()) == (12, 288)
    del preview, detail  # the shown image must not depend on the PIL buffer
    image = panel.preview_image()
    assert image is not None and (image.width(), image.height()) == (64, 32)
    assert image.pixelColor(10, 10) == QColor(255, 0, 0)
    assert panel.preview.isVisibleTo(panel)
    with qtbot.waitSignal(panel.cancelRequested) as canceled:
        qtbot.mouseClick(panel.cancel_button, Qt.LeftButton)
    assert canceled.args == [7]


def test_opening_another_project_clears_the_last_ones_progress(
    panel: GeneratePanel, tmp_path
) -> None:
    panel.job_started(7)
    detail = {"images_done": 3, "images_total": 8, "preview": Image.new("RGB", (8, 8))}
    panel.show_progress(Progress(3, 8, "", 1.0, detail))
    panel.show_problems(["unknown LoRA <lora:x>"])
    other = Project.create(tmp_path / "other", "Bea")
    panel.set_project(other)
    assert panel.preview_image() is None
    assert panel.status_text() == "" and not panel.progress_bar.isVisibleTo(panel)
    assert not panel.cancel_button.isEnabled()
    assert not panel.problem_label.isVisibleTo(panel)
    other.close()


def test_slow_steps_show_seconds_per_iteration(panel: GeneratePanel) -> None:
    panel.job_started(1)
    panel.show_progress(Progress(0, 4, "Loading checkpoint", 1.0, {"it_per_s": 0.5}))
    assert panel.status_text() == "0/4 · 2.0 s/it · ETA --:--\nLoading checkpoint"


def test_a_failed_job_shows_its_error(panel: GeneratePanel) -> None:
    panel.job_started(3)
    message = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 8.00 GiB total capacity)"
    panel.job_finished("failed", message)
    assert panel.status_text() == f"Failed: {message}"
    assert "color" in panel.status_label.styleSheet()
    assert not panel.cancel_button.isEnabled()
    panel.job_started(4)
    panel.job_finished("canceled")
    assert panel.status_text() == "Canceled."
    assert panel.status_label.styleSheet() == ""


def test_queue_length_is_shown(panel: GeneratePanel) -> None:
    panel.set_queue_length(2)
    assert panel.queue_label.isVisibleTo(panel) and panel.queue_label.text() == "2 jobs queued"
    panel.set_queue_length(0)
    assert not panel.queue_label.isVisibleTo(panel)


@pytest.mark.parametrize("stored", ["garbage", [1, 2], {"settings": "x"}])
def test_corrupt_stored_settings_fall_back_to_defaults(qtbot, project: Project, stored) -> None:
    project.catalog.set_setting(SETTING_KEY, stored)
    panel = make_panel(qtbot, project)
    request = panel.current_request()
    assert request.settings == GenerationSettings(prompt="", model=MODELS[0])
    assert "reset to their defaults" in panel.problem_label.text()


def test_bad_stored_values_are_dropped_one_by_one(qtbot, project: Project) -> None:
    project.catalog.set_setting(
        SETTING_KEY,
        {
            "settings": {
                "prompt": "kept prompt",
                "steps": "many",
                "width": 500,
                "sampler": "Nonsense sampler",
                "negative_prompt": 12,
                "cfg_scale": 6.5,
                "bogus": 1,
            },
            "x": 5,
            "y": "Prompt S/R:kept, prompt",
            "keep_random_seeds": "yes",
        },
    )
    panel = make_panel(qtbot, project)
    request = panel.current_request()
    assert request.settings.prompt == "kept prompt"
    assert request.settings.cfg_scale == 6.5
    assert (request.settings.steps, request.settings.width) == (30, 512)
    assert (request.settings.sampler, request.settings.negative_prompt) == ("DPM++ 2M", "")
    assert (request.x, request.y, request.keep_random_seeds) == (
        None,
        "Prompt S/R:kept, prompt",
        False,
    )
    for name in ("steps", "width", "sampler", "bogus", "X axis", "keep_random_seeds"):
        assert name in panel.problem_label.text()


def test_a_catalog_value_that_is_not_json_does_not_crash(qtbot, project: Project) -> None:
    with project.catalog.transaction() as conn:
        conn.execute("INSERT INTO settings (key, value) VALUES (?, ?)", (SETTING_KEY, "{not json"))
    panel = make_panel(qtbot, project)
    assert panel.current_request().settings.steps == 30


def test_without_a_project_the_panel_is_disabled(qtbot) -> None:
    panel = make_panel(qtbot, None)
    assert panel.hint_label.isVisibleTo(panel)
    assert not panel.scroll.isEnabled() and not panel.generate_button.isEnabled()
    with qtbot.assertNotEmitted(panel.generateRequested):
        panel.generate()


def test_checkpoints_show_file_names_and_keep_full_paths(panel: GeneratePanel) -> None:
    assert [panel.model_combo.itemText(i) for i in range(2)] == [
        "v1-5-pruned-emaonly.safetensors",
        "deliberate_v2.safetensors",
    ]
    panel.model_combo.setCurrentIndex(1)
    panel.set_model_choices([*MODELS, "/models/sd/new.safetensors"])  # a rescan keeps the choice
    assert panel.current_request().settings.model == MODELS[1]
    panel.model_combo.setEditText(r"D:\sd\dreamshaper_8.safetensors")  # a pasted path works too
    assert panel.current_request().settings.model == r"D:\sd\dreamshaper_8.safetensors"
    assert panel.current_request().settings.vae is None  # "Automatic"


def test_schedule_types_follow_the_sampler(panel: GeneratePanel) -> None:
    panel.sampler_combo.setCurrentText("DDIM")
    schedules = [panel.schedule_combo.itemText(i) for i in range(panel.schedule_combo.count())]
    assert schedules == ["Automatic"]
    assert panel.current_request().settings.schedule_type is None
    panel.sampler_combo.setCurrentText("DPM++ 2M")
    panel.schedule_combo.setCurrentText("Exponential")
    assert panel.current_request().settings.schedule_type == "Exponential"


def test_seed_buttons_and_size_helpers(panel: GeneratePanel, qtbot) -> None:
    assert not panel.reuse_seed_button.isEnabled()
    panel.set_last_seed(4240233169)
    qtbot.mouseClick(panel.reuse_seed_button, Qt.LeftButton)
    assert panel.current_request().settings.seed == 4240233169
    qtbot.mouseClick(panel.random_seed_button, Qt.LeftButton)
    assert panel.current_request().settings.seed == -1
    panel.width_spin.setValue(512)
    panel.height_spin.setValue(768)
    qtbot.mouseClick(panel.swap_size_button, Qt.LeftButton)
    assert (panel.width_spin.value(), panel.height_spin.value()) == (768, 512)
    panel.width_spin.lineEdit().selectAll()
    qtbot.keyClicks(panel.width_spin, "500")  # SD needs multiples of 8: snapped, not refused
    assert panel.current_request().settings.width == 496


def test_engine_options_are_stored_in_the_project_at_once(qtbot, tmp_path) -> None:
    from charstudio.engine.runtime import ENGINE_SETTING, EngineOptions

    with Project.create(tmp_path / "engine", "Engine") as project:
        panel = GeneratePanel()
        qtbot.addWidget(panel)
        panel.set_project(project)
        assert panel.engine_options() == EngineOptions()
        panel.precision_combo.setCurrentIndex(panel.precision_combo.findData("bf16"))
        panel.compile_check.setChecked(True)
        stored = EngineOptions.from_json(project.catalog.get_setting(ENGINE_SETTING))
        assert (stored.precision, stored.compile) == ("bf16", True)
        again = GeneratePanel()
        qtbot.addWidget(again)
        again.set_project(project)
        assert again.engine_options() == stored
        panel.set_project(None)
        again.set_project(None)


def test_noise_source_and_variation_default_to_a1111_reproducible_values(
    panel: GeneratePanel,
) -> None:
    settings = panel.current_request().settings
    assert (settings.rng, settings.emphasis) == ("NV", "Original")
    assert (settings.subseed, settings.subseed_strength) == (-1, 0.0)
    panel.subseed_edit.setText("")  # an empty field means random, as for the seed
    assert panel.current_request().settings.subseed == -1
