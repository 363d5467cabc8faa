"""The main window: opening projects, importing in the background, the grid."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt

from charstudio.catalog import Project
from charstudio.ui.main_window import MainWindow

pytestmark = pytest.mark.gui


@pytest.fixture
def window(qtbot, tmp_path: Path):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    window = MainWindow(settings)
    qtbot.addWidget(window)
    yield window
    window.close()


def test_without_a_project_import_is_disabled(window: MainWindow) -> None:
    assert not window.import_action.isEnabled()
    assert "No project open" in window.summary.text()
    assert "New Project" in window.grid.empty_text


def test_import_runs_in_the_background_and_fills_the_grid(
    window: MainWindow, qtbot, make_png, tmp_path: Path
) -> None:
    Project.create(tmp_path / "proj", "Anna").close()
    for n in range(12):
        make_png(tmp_path / "out" / f"{n:02}.png", seed=n)
    (tmp_path / "out" / "zero.png").write_bytes(b"")
    assert window.open_project(tmp_path / "proj")
    assert window.windowTitle().startswith("Anna")

    assert window.queue_worker is not None
    with qtbot.waitSignal(window.queue_worker.jobFinished, timeout=20000) as finished:
        job_id = window.start_import([tmp_path / "out"])
    assert finished.args[0].id == job_id and finished.args[0].status == "done"
    qtbot.waitUntil(lambda: window.model.rowCount() == 12)
    assert window.import_action.isEnabled()
    assert window.summary.text() == "picked 0 · rejected 0 · unreviewed 12 · of 12"
    assert "failed 1" in window.statusBar().currentMessage()

    # Thumbnails arrive from the worker threads and replace the placeholder.
    index = window.model.index(0)
    placeholder = window.model.data(index, Qt.DecorationRole)
    qtbot.waitUntil(lambda: window.model.data(index, Qt.DecorationRole) is not placeholder)
    assert window.model.data(index, Qt.DecorationRole).width() == 64  # never enlarged
    assert "Seed: 0" in window.model.data(index, Qt.ToolTipRole)


def test_recent_projects_are_remembered(window: MainWindow, tmp_path: Path) -> None:
    for name in ("a", "b"):
        Project.create(tmp_path / name, name).close()
        window.open_project(tmp_path / name)
    assert window.recent_projects()[:2] == [str(tmp_path / "b"), str(tmp_path / "a")]
    assert window.settings.value("last_project") == str(tmp_path / "b")
    assert len(window.recent_menu.actions()) == 2


def test_opening_a_non_project_warns_and_keeps_the_current_one(
    window: MainWindow, tmp_path: Path, monkeypatch
) -> None:
    warnings: list[str] = []
    monkeypatch.setattr(
        "charstudio.ui.main_window.QMessageBox.warning",
        lambda parent, title, text: warnings.append(text),
    )
    Project.create(tmp_path / "proj", "Anna").close()
    window.open_project(tmp_path / "proj")
    assert not window.open_project(tmp_path / "empty")
    assert "not a charstudio project" in warnings[0]
    assert window.project is not None and window.project.name == "Anna"


def test_new_project_dialog_creates_the_folder_from_the_name(
    window: MainWindow, tmp_path: Path, monkeypatch
) -> None:
    from charstudio.ui.new_project_dialog import NewProjectDialog

    def fill_and_accept(dialog: NewProjectDialog) -> int:
        dialog.location.setText(str(tmp_path))
        dialog.name.setText("French Lady")
        assert dialog.buttons.button(dialog.buttons.StandardButton.Ok).isEnabled()
        assert "fr3nch" not in dialog.folder_label.text()
        dialog.token.setText("fr3nchl4dy")
        return NewProjectDialog.Accepted

    monkeypatch.setattr(NewProjectDialog, "exec", fill_and_accept)
    window.new_project()
    assert window.project is not None
    assert window.project.root == tmp_path / "French-Lady"
    assert (window.project.name, window.project.token) == ("French Lady", "fr3nchl4dy")
    assert "No images yet" in window.grid.empty_text


def test_an_import_interrupted_by_closing_resumes_on_reopening(
    qtbot, tmp_path: Path, make_png, monkeypatch
) -> None:
    from charstudio.jobs.queue import JobQueue
    from charstudio.presenters.job_recovery import RecoveryChoice
    from charstudio.ui import job_recovery_dialog

    # The artist is asked first (tests/test_job_recovery.py) and answers "Resume Now".
    monkeypatch.setattr(job_recovery_dialog, "ask_recovery", lambda *_: RecoveryChoice.RESUME)

    Project.create(tmp_path / "proj", "Anna").close()
    for n in range(3):
        make_png(tmp_path / "out" / f"{n}.png", seed=n)
    with Project.open(tmp_path / "proj") as project:  # as if the app died while importing
        queue = JobQueue(project)
        queue.submit("import", {"paths": [str(tmp_path / "out")], "copy": False})
        job = queue.run_next()
        next(job)
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    window = MainWindow(settings)
    qtbot.addWidget(window)
    window.open_project(tmp_path / "proj")
    assert window.queue_worker is not None
    qtbot.waitUntil(lambda: window.model.rowCount() == 3, timeout=20000)
    window.close()


def test_the_window_opens_no_larger_than_the_screen(window: MainWindow) -> None:
    from PySide6.QtWidgets import QApplication

    room = QApplication.primaryScreen().availableGeometry()
    assert 0 < window.width() <= min(1440, room.width())
    assert 0 < window.height() <= min(900, room.height())
