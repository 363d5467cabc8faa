"""One click trains a LoRA from the picks in the GUI, and the run shows in the centre."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from charstudio.catalog import Project  # noqa: E402
from charstudio.presenters import lora as presenter  # noqa: E402
from charstudio.training import records  # noqa: E402
from charstudio.training.lora_settings import TrainLoraSettings  # noqa: E402
from charstudio.ui.lora_controller import LoraController  # noqa: E402
from charstudio.ui.lora_panel import LoraPanel  # noqa: E402
from charstudio.ui.run_view import RunView  # noqa: E402

from .test_train_ti import SIZE, TOKEN, make_project, responsive_tiny_model  # noqa: E402
from .tiny_sd import write_diffusers_folder  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)


def test_saved_settings_are_read_leniently(tmp_path: Path) -> None:
    with Project.create(tmp_path / "proj", "Anna", token="ann4") as project:
        settings, choices, dropped = presenter.stored_state(
            {"settings": {"dim": "sixteen", "alpha": 4, "epochs": None}, "model": "/m.ckpt"},
            project,
        )
    assert (settings.dim, settings.alpha, settings.epochs) == (16, 4, None)
    assert (settings.name, settings.token) == ("ann4", "ann4")
    assert choices == {"model": "/m.ckpt"} and dropped == ["dim"]
    text = presenter.finish_text(
        "done",
        {"name": "ann4", "step": 12, "checkpoints": [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}]},
    )
    assert text == "Done: ann4 trained 3 epochs (12 steps)"


def test_the_panel_trains_a_lora_and_the_run_view_follows_it(qtbot, tmp_path: Path) -> None:
    from charstudio.ui.queue_worker import QueueWorker

    model_dir = write_diffusers_folder(tmp_path / "tiny-sd", responsive_tiny_model())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    project = make_project(tmp_path / "proj")
    panel = LoraPanel()
    run_view = RunView()
    qtbot.addWidget(panel)
    qtbot.addWidget(run_view)
    controller = LoraController(panel, run_view)
    worker = QueueWorker(project.root)
    worker.jobStarted.connect(controller.job_started)
    worker.jobProgress.connect(controller.job_progress)
    worker.jobFinished.connect(controller.job_finished)
    try:
        controller.set_project(project, worker)
        panel.model_combo.set_path(str(model_dir))
        panel.form.fill(
            TrainLoraSettings(
                name=TOKEN,
                token=TOKEN,
                resolution=SIZE,
                buckets=False,
                epochs=2,
                repeats=1,
                batch_size=2,
                dim=4,
                alpha=2.0,
                sample_steps=2,
                max_samples=1,
                seed=7,
            )
        )
        submitted: list[dict] = []
        panel.trainRequested.connect(submitted.append)
        with qtbot.waitSignal(controller.runFinished, timeout=120_000) as finished:
            panel.train_button.click()  # the panel's own checks, then the job
        assert submitted and submitted[0]["settings"]["epochs"] == 2
        run = records.get_run(project.catalog, finished.args[0])
        assert (run.kind, run.status) == ("lora", "done")
        assert panel.status_text().startswith(f"Done: {TOKEN} trained 2 epochs")
        assert run_view.run_id() == run.id
        assert [row[0] for row in run_view.checkpoint_rows()] != []
        assert any(step.startswith("epoch 2") for step in run_view.preview_steps())
        assert run_view.loss_plot.point_count() > 0
        # The panel remembers its settings in the project.
        assert project.catalog.get_setting(presenter.SETTING_KEY)["settings"]["dim"] == 4
    finally:
        worker.shutdown()
        controller.set_project(None, None)
        project.close()
        torch.set_num_threads(threads)
