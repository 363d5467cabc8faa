"""The checkpoint grid viewer in the main window: reopen a grid, open a cell full size, culling
keys do nothing to grid cells, Esc leads back."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt

from charstudio.catalog import Project
from charstudio.training import records
from charstudio.ui.main_window import CELL, CHECKPOINTS, GRID, MainWindow

from .test_grid_viewer import RUN_FOLDER, RUN_MODEL, TOKEN, make_grid, wait_shown

pytestmark = pytest.mark.gui


def test_a_grid_opens_in_the_window_and_cells_open_full_size(qtbot, tmp_path: Path) -> None:
    project = Project.create(tmp_path / "proj", "Léa", token=TOKEN)
    run_id = records.create_run(
        project.catalog, name=TOKEN, folder=RUN_FOLDER, params={"model": RUN_MODEL}, job_id=None
    )
    for step in range(5, 151, 5):
        path = f"{RUN_FOLDER}/{TOKEN}-{step}.pt"
        records.record_checkpoint(project.catalog, run_id, step, path, 0.1, "0")
    project.run_id = run_id  # type: ignore[attr-defined]
    grid_id = make_grid(project)
    decisions_before = project.catalog.decision_counts()
    project.close()

    window = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat))
    qtbot.addWidget(window)
    window.show()
    try:
        assert window.open_project(tmp_path / "proj")
        assert window.compare_panel.grid_ids() == [grid_id]
        window.compare_panel.grids_list.setCurrentRow(0)
        window.compare_panel.open_button.click()
        assert window.stack.currentIndex() == CHECKPOINTS
        wait_shown(qtbot, window.grid_viewer)
        qtbot.keyClick(window.grid_viewer.view, Qt.Key.Key_Right)
        qtbot.keyClick(window.grid_viewer.view, Qt.Key.Key_P)  # not a catalog image
        qtbot.keyClick(window.grid_viewer.view, Qt.Key.Key_Return)
        assert window.stack.currentIndex() == CELL
        assert window.cell_loupe.current_item().path.endswith(f"{TOKEN}-40-12345678.png")
        qtbot.keyClick(window.cell_loupe, Qt.Key.Key_P)
        qtbot.keyClick(window.cell_loupe, Qt.Key.Key_Escape)
        assert window.stack.currentIndex() == CHECKPOINTS
        qtbot.keyClick(window.grid_viewer.view, Qt.Key.Key_Escape)
        assert window.stack.currentIndex() == GRID
        assert window.project is not None
        assert window.project.catalog.decision_counts() == decisions_before
    finally:
        window.close()
