"""The Train panel in the main window: "Use Picks as Training Set" leads to it."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QSettings

from charstudio.catalog import Project
from charstudio.catalog.importer import import_images
from charstudio.jobs import run_job
from charstudio.ui.main_window import MainWindow

pytestmark = pytest.mark.gui


def test_use_picks_opens_the_train_panel_with_the_training_set(
    qtbot, tmp_path: Path, make_png
) -> None:
    with Project.create(tmp_path / "proj", "Anna") as project:
        paths = [make_png(tmp_path / "in" / f"{n}.png", seed=n) for n in range(3)]
        run_job(import_images(project, paths))
        ids = [r.id for r in project.catalog.images()]
        project.catalog.decide(ids[:2], "pick", flag="pick")
    window = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat))
    qtbot.addWidget(window)
    try:
        assert window.open_project(tmp_path / "proj")
        window.use_picks()
        assert "2 picked images" in window.train_panel.images_label.text()
        assert window.train_panel.settings().name == "anna"
    finally:
        window.close()
