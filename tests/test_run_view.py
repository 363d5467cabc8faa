"""The centre run view: a training run's loss full size, its previews over the steps and its
checkpoints, opened from the Train panel's runs list."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings

from charstudio.catalog import Project
from charstudio.presenters.run_view import run_snapshot
from charstudio.ui.main_window import RUN, MainWindow
from charstudio.ui.run_view import RunView
from tests.runs import make_ti_run


def make_run(project: Project) -> int:
    return make_ti_run(project, steps=20, saved=(5, 10, 15, 20), status="done")


def test_the_view_shows_every_preview_and_checkpoint(qtbot, tmp_path: Path) -> None:
    with Project.create(tmp_path / "proj", "Anna", token="ann4") as project:
        snapshot = run_snapshot(project, make_run(project))
    view = RunView()
    qtbot.addWidget(view)
    view.set_snapshot(snapshot)
    assert view.title_label.text() == "ann4 · ti-001-ann4 · done"
    assert view.preview_steps() == ["step 5", "step 10", "step 15", "step 20"]
    assert view.checkpoint_rows()[-1] == ("20", "0.1000", "ann4-20.pt")
    assert view.loss_plot.point_count() == 20 and view.loss_plot.total() == 20
    assert view.compare_button.isEnabled()
    with qtbot.waitSignal(view.compareRequested) as asked:
        view.compare_button.click()
    assert asked.args == [snapshot.run_id]
    view.set_snapshot(None)
    assert view.preview_steps() == [] and not view.compare_button.isEnabled()


def test_choosing_a_run_in_the_train_panel_opens_it_in_the_centre(qtbot, tmp_path: Path) -> None:
    root = tmp_path / "proj"
    with Project.create(root, "Anna", token="ann4") as project:
        run_id = make_run(project)
    window = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat))
    qtbot.addWidget(window)
    window.open_project(root)
    window.train_panel.select_run(run_id)
    assert window.stack.currentIndex() == RUN
    assert window.run_view.run_id() == run_id
    assert window.current_id() is None  # culling keys do nothing here
    window.run_view.back_button.click()
    assert window.stack.currentIndex() != RUN
    window.close()
