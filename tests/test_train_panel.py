"""The Train panel and its controller: the tutorial's defaults, settings that survive restarts,
live checks that block bad runs, the jobs it queues, and what it shows while a run trains.

No test here trains a real model except the last one, which trains a tiny random-weight model
for three steps through the real queue worker."""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from PySide6.QtCore import Qt

from charstudio.catalog import Project
from charstudio.catalog.importer import import_images
from charstudio.jobs import CancelToken, Progress, run_job
from charstudio.jobs.queue import JobQueue, QueuedJob
from charstudio.presenters.progress_text import train_progress_text
from charstudio.presenters.train import SETTING_KEY, RunRow
from charstudio.training import records
from charstudio.training.pause import PAUSE_FILE
from charstudio.training.settings import TrainTISettings
from charstudio.training.templates import DEFAULT_TEMPLATE
from charstudio.ui.loss_plot import LossPlot, nice_ticks
from charstudio.ui.train_controller import KIND, TrainController
from charstudio.ui.train_panel import TrainPanel

pytestmark = pytest.mark.gui

TOKEN = "fr3nchl4dy"


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A checkpoint file: the panel's checks only need it to exist (nothing loads it)."""
    path = tmp_path / "models" / "v1-5-pruned-emaonly.safetensors"
    path.parent.mkdir()
    path.write_bytes(b"not loaded by these tests")
    return path


def add_images(project: Project, make_png: Callable[..., Path], count: int, folder: Path) -> list:
    files = [make_png(folder / f"{i}.png", seed=i + 1, size=32) for i in range(count)]
    report = run_job(import_images(project, files, copy=True))
    assert report.added == count
    return [r.id for r in project.catalog.images()]


@pytest.fixture
def project(tmp_path: Path, make_png: Callable[..., Path]) -> Iterator[Project]:
    """Eight imported images made the training set, as "Use Picks as Training Set" does."""
    project = Project.create(tmp_path / "proj", "Léa", token=TOKEN)
    ids = add_images(project, make_png, 8, tmp_path / "src")
    project.catalog.create_training_set("8 picks", ids)
    yield project
    project.close()


MakePanel = Callable[..., TrainPanel]


@pytest.fixture
def make_panel(qtbot, project: Project) -> Iterator[MakePanel]:
    """Panels that let go of their project before the project closes (as the window does)."""
    made: list[TrainPanel] = []

    def make(project: Project | None, model: Path | None = None) -> TrainPanel:
        panel = TrainPanel()
        qtbot.addWidget(panel)
        if model is not None:
            panel.set_model_choices([str(model)])
        panel.set_project(project)
        made.append(panel)
        return panel

    yield make
    for panel in made:
        panel.set_project(None)


@pytest.fixture
def panel(make_panel: MakePanel, project: Project, model: Path) -> TrainPanel:
    return make_panel(project, model)


def _no_training(project: Project, params: dict, cancel: CancelToken, job_id: int) -> Iterator:
    raise AssertionError("GUI tests never train")
    yield


class FakeWorker:
    """The QueueWorker's submit/cancel_current; jobs are stored in the real queue table."""

    def __init__(self) -> None:
        self.submitted: list[tuple[str, dict[str, Any]]] = []
        self.canceled = 0

    def submit(self, project: Project, kind: str, params: dict) -> int:
        self.submitted.append((kind, params))
        return JobQueue(project, {KIND: _no_training}).submit(kind, params)

    def cancel_current(self) -> None:
        self.canceled += 1


Controlled = tuple[TrainPanel, TrainController, FakeWorker]


@pytest.fixture
def controlled(qtbot, project: Project, model: Path) -> Iterator[Controlled]:
    panel = TrainPanel()
    qtbot.addWidget(panel)
    controller = TrainController(panel)
    worker = FakeWorker()
    controller.set_project(project, worker)  # type: ignore[arg-type]
    panel.set_model_choices([str(model)])
    panel.check_now()
    yield panel, controller, worker
    controller.set_project(None, None)


def queued(job_id: int, params: dict | None = None, status: str = "running", error=None):
    return QueuedJob(job_id, KIND, params or {}, status, "2024-01-01T00:00:00", error)


def step_event(step: int, total: int = 150, **detail: Any) -> Progress:
    base = {"run_id": 1, "step": step, "loss": 0.1234, "learning_rate": 0.002, "it_per_s": 2.0}
    return Progress(step, total, f"Step {step}/{total}", 10.0, {**base, **detail})


def new_run(project: Project, status: str = "running", **params: Any) -> records.RunRecord:
    """A run row and folder as the training job makes them."""
    run_id = records.create_run(
        project.catalog,
        name=TOKEN,
        folder=f"runs/ti-{len(records.list_runs(project.catalog)) + 1:03d}-{TOKEN}",
        params={"settings": TrainTISettings(name=TOKEN).to_json(), "images": [], **params},
        job_id=None,
    )
    if status != "running":
        records.set_run_status(project.catalog, run_id, status)
    run = records.get_run(project.catalog, run_id)
    (project.root / run.folder).mkdir(parents=True)
    return run


# -- settings ------------------------------------------------------------------------------------


def test_defaults_are_the_tutorials_with_the_project_token(panel: TrainPanel) -> None:
    settings = panel.settings()
    assert settings == TrainTISettings.for_project(panel.project())
    assert settings.name == TOKEN
    assert (settings.init_text, settings.vectors, settings.learning_rate) == ("woman", 2, "0.002")
    assert (settings.max_steps, settings.save_every, settings.preview_every) == (150, 1, 5)
    assert settings.template == "a closeup photo of [name], neutral gray background"
    assert (settings.width, settings.height, settings.latent_sampling) == (512, 512, "once")
    assert (settings.batch_size, settings.gradient_accumulation) == (None, 1)
    # What the artist sees, in A1111's words.
    assert panel.name_edit.text() == TOKEN
    assert panel.batch_size_spin.text() == "Auto"
    assert panel.template_edit.toPlainText() == DEFAULT_TEMPLATE
    assert panel.images_combo.currentData() == "picks"
    assert not panel.advanced_box.isVisibleTo(panel)  # the rest waits under "Advanced"


def fill(panel: TrainPanel) -> TrainTISettings:
    """Every setting changed through its widget, as an artist would."""
    panel.name_edit.setText("l3a")
    panel.init_text_edit.setText("girl")
    panel.vectors_spin.setValue(4)
    panel.learning_rate_edit.setText("0.005:100, 1e-3:1000, 1e-5")
    panel.batch_size_spin.setValue(4)
    panel.accumulation_spin.setValue(2)
    panel.max_steps_spin.setValue(300)
    panel.save_every_spin.setValue(10)
    panel.preview_every_spin.setValue(20)
    panel.template_edit.setPlainText("a photo of [name], [filewords]\nart by [name]")
    panel.width_spin.setValue(512)
    panel.height_spin.setValue(768)
    panel.latent_sampling_combo.setCurrentText("random")
    panel.seed_edit.setText("42")
    panel.shuffle_tags_check.setChecked(True)
    panel.tag_dropout_spin.setValue(0.1)
    panel.clip_grad_mode_combo.setCurrentText("norm")
    panel.clip_grad_value_edit.setText("1.0")
    panel.alpha_weight_check.setChecked(True)
    panel.clip_skip_spin.setValue(2)
    panel.precision_combo.setCurrentIndex(panel.precision_combo.findData("bf16"))
    panel.gradient_checkpointing_check.setChecked(True)
    panel.preview_prompt_edit.setText("a portrait of [name]")
    panel.preview_negative_edit.setText("blurry")
    panel.preview_seed_edit.setText("-1")
    panel.preview_sampler_combo.setCurrentText("Euler a")
    panel.preview_schedule_combo.setCurrentText("Exponential")  # any schedule, as in A1111
    panel.preview_steps_spin.setValue(30)
    panel.preview_cfg_spin.setValue(5.5)
    panel.images_combo.setCurrentIndex(panel.images_combo.findData("all"))
    return TrainTISettings(
        name="l3a",
        init_text="girl",
        vectors=4,
        learning_rate="0.005:100, 1e-3:1000, 1e-5",
        batch_size=4,
        gradient_accumulation=2,
        max_steps=300,
        save_every=10,
        preview_every=20,
        template="a photo of [name], [filewords]\nart by [name]",
        width=512,
        height=768,
        latent_sampling="random",
        seed=42,
        shuffle_tags=True,
        tag_dropout=0.1,
        clip_grad_mode="norm",
        clip_grad_value="1.0",
        use_alpha_weight=True,
        clip_skip=2,
        precision="bf16",
        gradient_checkpointing=True,
        preview_prompt="a portrait of [name]",
        preview_negative_prompt="blurry",
        preview_seed=-1,
        preview_sampler="Euler a",
        preview_schedule_type="Exponential",
        preview_steps=30,
        preview_cfg_scale=5.5,
    )


def test_settings_round_trip_through_the_project(
    make_panel: MakePanel, project: Project, model: Path
) -> None:
    first = make_panel(project, model)
    expected = fill(first)
    assert first.settings() == expected
    first.set_project(None)  # leaving a project saves its settings
    stored = project.catalog.get_setting(SETTING_KEY)
    assert stored["settings"] == expected.to_json()
    assert (stored["model"], stored["images"]) == (str(model), "all")

    second = make_panel(project, model)
    assert second.settings() == expected
    assert second.model_combo.path() == str(model)
    assert second.images_choice() == "all"
    assert second.clip_grad_value_edit.isEnabled()


def test_unreadable_saved_values_fall_back_one_by_one(
    make_panel: MakePanel, project: Project
) -> None:
    project.catalog.set_setting(
        SETTING_KEY, {"settings": {"vectors": "two", "max_steps": 99, "typo": 1}, "images": 3}
    )
    panel = make_panel(project)
    assert panel.settings().vectors == 2  # the default
    assert panel.settings().max_steps == 99  # the readable value is kept
    assert panel.images_choice() == "picks"
    assert "vectors, typo" in panel.problem_label.text()
    panel.max_steps_spin.setValue(100)  # any change: the note has been read
    panel.check_now()
    assert "typo" not in panel.problem_label.text()


def test_load_template_file(panel: TrainPanel, tmp_path: Path) -> None:
    template = tmp_path / "subject_filewords.txt"
    template.write_text("a photo of a [name], [filewords]\na rendering of a [name]\n", "utf-8")
    panel.load_template_file(template)
    assert panel.settings().template == "a photo of a [name], [filewords]\na rendering of a [name]"


# -- checks --------------------------------------------------------------------------------------


def test_problems_show_and_block_train(panel: TrainPanel, qtbot) -> None:
    panel.check_now()
    assert panel.problems() == []
    assert panel.train_button.isEnabled()

    panel.learning_rate_edit.setText("0.005:abc")
    with qtbot.assertNotEmitted(panel.trainRequested):
        panel.train()  # checks at once, without waiting for the live check
    assert any("learning rate" in p for p in panel.problems())
    assert panel.problem_label.isVisibleTo(panel)
    assert "abc" in panel.problem_label.text()
    assert not panel.train_button.isEnabled()

    panel.learning_rate_edit.setText("0.005:100, 0.002")
    qtbot.waitUntil(lambda: panel.train_button.isEnabled(), timeout=2000)  # the live check
    assert not panel.problem_label.isVisibleTo(panel)


def test_missing_checkpoint_is_a_problem(panel: TrainPanel, tmp_path: Path) -> None:
    panel.model_combo.set_path(str(tmp_path / "gone.safetensors"))
    problems, _warnings = panel.check_now()
    assert any("checkpoint not found" in p for p in problems)
    assert not panel.train_button.isEnabled()


def test_a_name_clip_knows_is_a_warning_not_a_problem(panel: TrainPanel) -> None:
    panel.name_edit.setText("woman")
    problems, warnings = panel.check_now()
    assert problems == []
    assert any("CLIP already knows" in w for w in warnings)
    assert panel.warning_label.isVisibleTo(panel)
    assert panel.train_button.isEnabled()


def test_images_line_shows_the_training_set_and_batch_plan(
    make_panel: MakePanel, project: Project, model: Path
) -> None:
    panel = make_panel(project, model)
    assert panel.images_label.text() == "Training set: 8 picked images → batch 8 × 1"
    panel.batch_size_spin.setValue(4)
    panel.accumulation_spin.setValue(2)
    assert panel.images_label.text() == "Training set: 8 picked images → batch 4 × 2"
    panel.accumulation_spin.setValue(4)  # 4 × 4 would use images twice per step: lowered
    assert panel.images_label.text().endswith("→ batch 4 × 2")
    assert any("lowered to 2" in w for w in panel.check_now()[1])

    # A new, smaller training set ("Use Picks as Training Set" again).
    ids = [r.id for r in project.catalog.images()]
    project.catalog.create_training_set("3 picks", ids[:3])
    panel.batch_size_spin.setValue(0)
    panel.refresh_images()
    assert panel.images_label.text() == "Training set: 3 picked images → batch 3 × 1"

    panel.images_combo.setCurrentIndex(panel.images_combo.findData("all"))
    assert panel.images_label.text() == "All images: 8 images → batch 8 × 1"


def test_no_picks_blocks_train(make_panel: MakePanel, tmp_path: Path, model: Path) -> None:
    empty = Project.create(tmp_path / "empty", "Bea", token="b3a")
    panel = make_panel(empty, model)
    assert "no picks to train on" in panel.images_label.text()
    assert any("no picks" in p for p in panel.problems())
    assert not panel.train_button.isEnabled()
    panel.name_edit.setText("woman")  # the name's warning does not wait for the images
    assert any("CLIP already knows" in w for w in panel.check_now()[1])
    panel.set_project(None)
    empty.close()


# -- jobs ----------------------------------------------------------------------------------------


def test_train_submits_a_train_ti_job(controlled, project: Project, model: Path, qtbot) -> None:
    panel, controller, worker = controlled
    panel.max_steps_spin.setValue(80)
    with qtbot.waitSignal(controller.message) as news:
        qtbot.mouseClick(panel.train_button, Qt.MouseButton.LeftButton)
    assert "queued" in news.args[0]
    assert worker.submitted == [
        (
            "train-ti",
            {
                "settings": TrainTISettings.for_project(project, max_steps=80).to_json(),
                "model": str(model),
                "vae": None,
                "images": "picks",
            },
        )
    ]
    job = JobQueue(project).pending()[0]
    assert (job.kind, job.params["settings"]["max_steps"]) == ("train-ti", 80)
    assert controller.current_job == job.id
    assert not panel.train_button.isEnabled()  # one run at a time
    assert panel.cancel_button.isEnabled()
    assert "queued" in panel.status_text()
    # The settings of the run just started are remembered.
    assert project.catalog.get_setting(SETTING_KEY)["settings"]["max_steps"] == 80


def test_progress_updates_bar_status_plot_preview_and_checkpoint(
    controlled, project: Project
) -> None:
    panel, controller, _worker = controlled
    assert controller.job_started(queued(7))
    assert not controller.job_started(QueuedJob(8, "generate", {}, "running", ""))  # not ours

    controller.job_progress(queued(7), Progress(0, 150, "Loading v1-5-pruned-emaonly", 0.5, {}))
    assert panel.status_text() == "Loading v1-5-pruned-emaonly"
    for step in range(1, 40):
        controller.job_progress(queued(7), step_event(step, loss=0.2 - step / 1000))
    preview = Image.new("RGB", (64, 48), (200, 120, 90))
    checkpoint = project.root / "runs" / "ti-001-x" / f"{TOKEN}-40.pt"
    controller.job_progress(
        queued(7),
        step_event(
            40,
            it_per_s=1.8,
            learning_rate=0.002,
            preview=preview,
            preview_path=str(checkpoint.with_suffix(".png")),
            checkpoint_path=str(checkpoint),
        ),
    )
    # 110 steps left at 1.8 it/s: 61 s.
    assert panel.status_text() == "Step 40/150 · loss 0.1234 · lr 0.002 · 1.8 it/s · ETA 01:01"
    assert (panel.progress_bar.value(), panel.progress_bar.maximum()) == (40, 150)
    assert panel.loss_plot.point_count() == 40
    assert panel.loss_plot.points()[-1] == (40, 0.1234)
    assert panel.loss_plot.total() == 150
    assert panel.preview_image() is not None
    assert panel.preview_image().size().toTuple() == (64, 48)
    assert panel.preview_label.text() == "Preview · step 40"
    assert panel.checkpoint_label.text() == f"Last checkpoint: runs/ti-001-x/{TOKEN}-40.pt"
    assert controller.current_run == 1


def test_slow_steps_show_seconds_per_step() -> None:
    text = train_progress_text(step_event(10, total=20, it_per_s=0.25))
    assert text == "Step 10/20 · loss 0.1234 · lr 0.002 · 4.0 s/it · ETA 00:40"


def test_pause_asks_the_running_run_to_pause(controlled, project: Project, qtbot) -> None:
    panel, controller, worker = controlled
    run = new_run(project)
    controller.job_started(queued(3))
    assert panel.pause_button.isEnabled()
    controller.job_progress(queued(3), step_event(12, run_id=run.id))
    qtbot.mouseClick(panel.pause_button, Qt.MouseButton.LeftButton)
    assert (project.root / run.folder / PAUSE_FILE).is_file()
    assert not panel.pause_button.isEnabled()
    assert "Pausing" in panel.status_text()
    controller.job_progress(queued(3), step_event(13, run_id=run.id))  # the step in flight
    assert panel.status_text().endswith("Pausing after this step…")
    assert worker.canceled == 0  # pausing is not canceling


def test_pause_before_the_run_exists_says_so(controlled, project: Project, qtbot) -> None:
    panel, controller, _worker = controlled
    controller.job_started(queued(3))
    with qtbot.waitSignal(controller.message) as news:
        qtbot.mouseClick(panel.pause_button, Qt.MouseButton.LeftButton)
    assert "not started" in news.args[0]
    assert panel.pause_button.isEnabled()  # nothing was asked: Pause works again
    assert not list((project.root).glob(f"runs/*/{PAUSE_FILE}"))


def fake_train_job(status: str, run_folder: str) -> Callable[..., Iterator[Progress]]:
    """A "train-ti" job that reports three steps and ends with ``status`` (no model)."""

    def job(project: Project, params: dict, cancel: CancelToken, job_id: int) -> Iterator:
        run_id = records.create_run(
            project.catalog, name=TOKEN, folder=run_folder, params=params, job_id=job_id
        )
        folder = project.root / run_folder
        folder.mkdir(parents=True)
        with open(folder / "loss.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["step", "loss", "learning_rate", "images_per_s"])
            for step in (1, 2, 3):
                writer.writerow([step, {1: 0.3, 2: 0.15, 3: 0.1}[step], 0.002, 10])
        for step in (1, 3):  # step 2's event was dropped, as the worker does when busy
            yield step_event(step, total=10, run_id=run_id)
        checkpoint = f"{run_folder}/{TOKEN}-3.pt"
        records.record_checkpoint(project.catalog, run_id, 3, checkpoint, 0.1, "ab")
        records.set_run_status(project.catalog, run_id, status)
        return {
            "run_id": run_id,
            "status": status,
            "step": 3,
            "end_step": 10,
            "name": TOKEN,
            "checkpoints": [{"step": 3, "path": checkpoint}],
            "previews": [],
            "loss_csv": f"{run_folder}/loss.csv",
        }

    return job


def run_fake_job(controller: TrainController, project: Project, job_fn) -> QueuedJob:
    queue = JobQueue(project, {KIND: job_fn})
    queue.submit(KIND, {"settings": {}, "model": "m", "images": "picks"})
    started = queue.pending()[0]
    controller.job_started(started)
    job = run_job(queue.run_next(), lambda event: controller.job_progress(started, event))
    assert job is not None
    return job


def test_a_paused_run_can_be_resumed(controlled, project: Project, model: Path, qtbot) -> None:
    panel, controller, worker = controlled
    job = run_fake_job(controller, project, fake_train_job("paused", f"runs/ti-001-{TOKEN}"))
    assert job.status == "done"  # for the queue; the run itself is paused
    with qtbot.waitSignal(controller.runFinished) as finished:
        controller.job_finished(job)
    run_id = finished.args[0]
    assert panel.status_text().startswith(f"Paused: {TOKEN} paused at step 3/10")
    assert panel.loss_plot.points() == [(1, 0.3), (2, 0.15), (3, 0.1)]  # the whole log
    assert panel.checkpoint_label.text().endswith(f"runs/ti-001-{TOKEN}/{TOKEN}-3.pt")
    assert panel.selected_run_id() == run_id  # selected, ready to resume
    assert panel.runs()[0].status == "paused"
    records.set_run_status(  # as the job stores it: the model the run trains on
        project.catalog, run_id, "paused", params={"settings": {}, "model": str(model)}
    )
    assert panel.resume_button.isEnabled()
    assert panel.train_button.isEnabled()
    # The action row's Pause button turns into Resume for the stopped run.
    assert panel.pause_button.text() == "Resume" and panel.pause_button.isEnabled()

    qtbot.mouseClick(panel.pause_button, Qt.MouseButton.LeftButton)
    assert worker.submitted[-1] == ("train-ti", {"resume_run_id": run_id})
    assert controller.current_run == run_id
    assert not panel.resume_button.isEnabled()
    assert panel.pause_button.text() == "Pause"
    assert panel.loss_plot.point_count() == 3  # the resumed run's log goes on from there


def test_resume_is_only_for_stopped_runs(controlled, project: Project) -> None:
    panel, controller, _worker = controlled
    done = new_run(project, "done")
    failed = new_run(project, "failed")
    controller.refresh_runs()
    assert [row.run_id for row in panel.runs()] == [failed.id, done.id]  # newest first
    panel.select_run(done.id)
    assert not panel.resume_button.isEnabled()
    panel.select_run(failed.id)
    assert panel.resume_button.isEnabled()


def test_resume_shows_why_a_run_cannot_continue(controlled, project: Project) -> None:
    panel, controller, worker = controlled
    run = new_run(project, "canceled", model="gone.safetensors")
    controller.refresh_runs()
    panel.select_run(run.id)
    assert controller.resume(run.id) is None
    assert worker.submitted == []
    assert any("checkpoint not found" in p for p in panel.problems())


def test_selecting_a_run_shows_its_loss_preview_and_checkpoint(controlled, project: Project):
    panel, controller, _worker = controlled
    run = new_run(project, "done")
    folder = project.root / run.folder
    (folder / "loss.csv").write_text(
        "step,loss,learning_rate,images_per_s\n1,0.2,0.002,9\n2,0.1,0.002,9\n", "utf-8"
    )
    (folder / "previews").mkdir()
    Image.new("RGB", (16, 16)).save(folder / "previews" / f"{TOKEN}-5.png")
    Image.new("RGB", (24, 24)).save(folder / "previews" / f"{TOKEN}-10.png")
    records.record_checkpoint(project.catalog, run.id, 2, f"{run.folder}/{TOKEN}-2.pt", 0.1, "ab")
    controller.refresh_runs()
    panel.select_run(run.id)
    assert panel.loss_plot.points() == [(1, 0.2), (2, 0.1)]
    assert panel.preview_label.text() == "Preview · step 10"  # the newest, by step number
    assert panel.preview_image().width() == 24
    assert panel.checkpoint_label.text() == f"Last checkpoint: {run.folder}/{TOKEN}-2.pt"


def test_cancel_a_queued_or_running_job(controlled, project: Project, qtbot) -> None:
    panel, controller, worker = controlled
    job_id = controller.submit(panel.current_params())
    qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    assert JobQueue(project).jobs()[0].status == "canceled"  # taken out of the queue
    assert worker.canceled == 0
    assert controller.current_job is None and not panel.is_busy()
    assert panel.train_button.isEnabled()

    job_id = controller.submit(panel.current_params())
    controller.job_started(queued(job_id))  # the worker claimed it
    JobQueue(project)._claim(job_id)
    qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    assert worker.canceled == 1  # the worker stops it at its next step


def test_out_of_memory_failure_is_shown(controlled, project: Project, qtbot) -> None:
    panel, controller, _worker = controlled
    controller.job_started(queued(4))
    controller.job_progress(queued(4), step_event(2))
    error = (
        "TrainingError: The GPU ran out of memory training with batch size 8 at 512×512; use "
        "batch size 4 with gradient accumulation 2 (the same images per step), or turn on "
        "gradient checkpointing."
    )
    with qtbot.waitSignal(controller.message) as news:
        controller.job_finished(queued(4, status="failed", error=error))
    assert panel.status_text().startswith("Failed: The GPU ran out of memory")
    assert "TrainingError" not in panel.status_text()
    assert "#d9534f" in panel.status_label.styleSheet()  # red
    assert "failed" in news.args[0] and "batch size 4" in news.args[0]
    assert panel.train_button.isEnabled() and not panel.cancel_button.isEnabled()
    assert controller.current_job is None


def test_a_train_job_left_queued_shows_as_this_panels_run(qtbot, project: Project) -> None:
    job_id = JobQueue(project).submit(KIND, {"settings": {}, "model": "m", "images": "picks"})
    panel = TrainPanel()
    qtbot.addWidget(panel)
    controller = TrainController(panel)
    controller.set_project(project, FakeWorker())  # type: ignore[arg-type]
    assert controller.current_job == job_id
    assert panel.is_busy() and not panel.train_button.isEnabled()
    controller.set_project(None, None)


def test_runs_list_shows_status_and_steps(panel: TrainPanel) -> None:
    panel.set_runs([RunRow(2, TOKEN, "paused", 40, 150), RunRow(1, TOKEN, "failed", 12, None, "x")])
    item = panel.runs_tree.topLevelItem(0)
    assert [item.text(c) for c in range(3)] == [f"#2 {TOKEN}", "paused", "40/150"]
    assert panel.runs_tree.topLevelItem(1).text(2) == "12"


# -- the loss plot -------------------------------------------------------------------------------


def test_loss_plot_smooths_truncates_and_paints_many_points(qtbot) -> None:
    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.resize(360, 150)
    plot.add_point(1, 0.5)
    assert plot.smoothed() == pytest.approx([0.5])  # bias-corrected: no drift from zero
    plot.add_point(2, 0.3)
    assert plot.smoothed()[1] == pytest.approx((0.9 * 0.05 + 0.03) / (1 - 0.81))
    plot.add_point(3, float("nan"))  # no point for a NaN step
    assert plot.point_count() == 2

    plot.set_total(10_000)
    started = time.perf_counter()
    for step in range(1, 10_001):
        plot.add_point(step, 0.1 + (step % 7) / 100)
    plot.grab()
    assert plot.point_count() == 10_000
    assert time.perf_counter() - started < 2.0
    raw, smooth = plot._polylines(plot.rect().toRectF().adjusted(30, 10, -8, -20), (0, 1e4, 0, 1))
    assert raw.size() <= 4 * plot.width()  # reduced per pixel column
    assert smooth.size() <= plot.width()

    plot.add_point(500, 0.2)  # a resumed run trains step 500 again
    assert plot.point_count() == 500
    assert plot.points()[-1] == (500, 0.2)


def test_nice_ticks() -> None:
    assert nice_ticks(0, 150, 4) == [0, 50, 100, 150]
    assert nice_ticks(0.05, 0.27, 3) == pytest.approx([0.1, 0.2])
    assert nice_ticks(1, 1) == [1]


# -- one real run --------------------------------------------------------------------------------


@pytest.mark.slow  # the run takes ~8 s on 2 CPU cores; importing diffusers cold, as long again
def test_end_to_end_tiny_model_through_the_queue_worker(
    qtbot, tmp_path: Path, make_png, project: Project
) -> None:
    """Three steps on a tiny random-weight model, 32×32 images, on the real worker thread."""
    pytest.importorskip("torch")
    from charstudio.ui.queue_worker import QueueWorker
    from charstudio.ui.run_view import RunView

    from .tiny_sd import tiny_components, write_diffusers_folder

    model_dir = write_diffusers_folder(tmp_path / "tiny-sd", tiny_components(5))
    panel = TrainPanel()
    qtbot.addWidget(panel)
    run_view = RunView()
    qtbot.addWidget(run_view)
    controller = TrainController(panel, run_view)
    worker = QueueWorker(project.root)
    worker.jobStarted.connect(controller.job_started)
    worker.jobProgress.connect(controller.job_progress)
    worker.jobFinished.connect(controller.job_finished)
    try:
        controller.set_project(project, worker)
        panel.model_combo.set_path(str(model_dir))
        panel.set_settings(
            TrainTISettings(
                name=TOKEN,
                width=32,
                height=32,
                batch_size=2,
                max_steps=3,
                preview_every=3,
                preview_steps=2,
                seed=7,
            )
        )
        params = panel.current_params()
        params["device"] = "cpu"
        with qtbot.waitSignal(controller.runFinished, timeout=60_000) as finished:
            controller.submit(params)
        run = records.get_run(project.catalog, finished.args[0])
        assert run.status == "done"
        assert panel.status_text() == f"Done: {TOKEN} trained to step 3"
        assert panel.loss_plot.point_count() == 3
        assert panel.preview_label.text() == "Preview · step 3"
        assert panel.checkpoint_label.text().endswith(f"{TOKEN}-3.pt")
        assert panel.runs()[0].run_id == run.id and panel.runs()[0].step == 3
        # The centre run view followed the run: its loss, the preview and every checkpoint.
        assert run_view.run_id() == run.id
        assert run_view.loss_plot.point_count() == 3
        assert run_view.preview_steps() == ["step 3"]
        assert [row[0] for row in run_view.checkpoint_rows()] == ["1", "2", "3"]
    finally:
        worker.shutdown()
        controller.set_project(None, None)
