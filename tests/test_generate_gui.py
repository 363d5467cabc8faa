"""Generating from the main window: the panel queues a job on the GPU worker, images stream
into the grid while it runs, problems show before anything is queued, cancel works."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from PySide6.QtCore import QSettings  # noqa: E402

from charstudio.catalog import Project  # noqa: E402
from charstudio.engine.requests import GenerateRequest  # noqa: E402
from charstudio.engine.sweeps import GenerationSettings  # noqa: E402
from charstudio.jobs.queue import JobQueue  # noqa: E402
from charstudio.ui.main_window import MainWindow  # noqa: E402

from .tiny_sd import tiny_components, write_diffusers_folder  # noqa: E402

pytestmark = pytest.mark.gui
warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture
def window(qtbot, tmp_path: Path):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    window = MainWindow(settings)
    qtbot.addWidget(window)
    yield window
    window.close()


@pytest.fixture
def opened(window: MainWindow, tmp_path: Path) -> MainWindow:
    Project.create(tmp_path / "proj", "Anna").close()
    # A checkpoint in the project's own models/ folder shows up in the panel's choices.
    write_diffusers_folder(tmp_path / "proj" / "models" / "tiny-sd", tiny_components(5))
    assert window.open_project(tmp_path / "proj")
    return window


def request(window: MainWindow, **changes) -> GenerateRequest:
    settings = GenerationSettings(
        prompt="a closeup photo of a woman",
        seed=99,
        steps=2,
        sampler="Euler",
        schedule_type=None,
        width=32,
        height=32,
        model=window.generate_panel.current_request().settings.model,
        batch_size=2,
        batch_count=2,
    )
    return GenerateRequest(settings.replace(**changes), x="Prompt S/R:a closeup, a medium shot")


def test_checkpoints_of_the_project_are_offered(opened: MainWindow, tmp_path: Path) -> None:
    chosen = opened.generate_panel.current_request().settings.model
    assert chosen is not None and Path(chosen).name == "tiny-sd"


def test_generate_streams_images_into_the_grid(opened: MainWindow, qtbot) -> None:
    window = opened
    added: list[list[int]] = []
    window.generation.imagesAdded.connect(added.append)
    window.show_generate()
    window.generate_panel.set_request(request(window))
    assert window.queue_worker is not None
    with qtbot.waitSignal(window.queue_worker.jobFinished, timeout=60000) as finished:
        window.generate_panel.generate_button.click()
    assert finished.args[0].status == "done", finished.args[0].error
    # Images arrived batch by batch, before the job ended, and the grid shows all of them.
    assert [len(batch) for batch in added] == [2, 2, 2, 2]
    qtbot.waitUntil(lambda: window.model.rowCount() == 8)
    assert window.summary.text().endswith("of 8")
    assert "8 images" in window.statusBar().currentMessage()
    # The sweep's values are offered as filters in the library.
    project = window.project
    assert project is not None and "a medium shot" in project.catalog.sweep_axes().get("X", [])
    # Settings are remembered for the project.
    stored = project.catalog.get_setting("generate.request")
    assert stored["settings"]["prompt"] == "a closeup photo of a woman"


def test_problems_show_in_the_panel_and_nothing_is_queued(opened: MainWindow) -> None:
    window = opened
    window.generate_panel.set_request(request(window, prompt="a closeup photo <lora:nobody:0.7>"))
    window.generate_panel.generate_button.click()
    assert window.project is not None
    assert JobQueue(window.project).jobs() == []
    assert "nobody" in window.generate_panel.problem_label.text()


def test_the_panel_refuses_what_the_command_line_refuses(opened: MainWindow) -> None:
    """The GUI runs the command line's checks: a LoRA in the negative prompt
    is refused before queueing, not by the job minutes later."""
    window = opened
    window.generate_panel.set_request(
        request(window, negative_prompt="blurry <lora:nothere:1>", prompt="a closeup photo")
    )
    window.generate_panel.generate_button.click()
    assert window.project is not None
    assert JobQueue(window.project).jobs() == []
    assert "nothere" in window.generate_panel.problem_label.text()


def test_cancel_from_the_panel(opened: MainWindow, qtbot) -> None:
    window = opened
    window.generate_panel.set_request(request(window, batch_count=20, steps=3))
    started: list[int] = []
    window.generation.imagesAdded.connect(lambda ids: started.append(len(ids)))
    assert window.queue_worker is not None
    with qtbot.waitSignal(window.queue_worker.jobFinished, timeout=60000) as finished:
        window.generate_panel.generate_button.click()
        qtbot.waitUntil(lambda: bool(started), timeout=30000)
        window.generate_panel.cancel_button.click()
    assert finished.args[0].status == "canceled"
    assert 0 < window.model.rowCount() < 80
    assert "anceled" in window.generate_panel.status_text()
    # The status bar counts what the catalog kept, not "0 images".
    kept = window.model.rowCount()
    message = window.statusBar().currentMessage()
    assert f"canceled: {kept} image{'s' if kept != 1 else ''} kept" in message, message
