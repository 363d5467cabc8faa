"""Culling in the real window, driven by key presses; every assertion reads the catalog."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QEvent, QItemSelectionModel, QSettings, Qt
from PySide6.QtTest import QAbstractItemModelTester
from PySide6.QtWidgets import QApplication

from charstudio.catalog import Decision, Project
from charstudio.catalog.importer import import_images
from charstudio.jobs import run_job
from charstudio.ui.filter_panel import CountRole
from charstudio.ui.main_window import GRID, LOUPE, SURVEY, MainWindow

pytestmark = pytest.mark.gui


@pytest.fixture
def project_root(make_png, tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    with Project.create(root, "Anna") as project:
        for n in range(10):
            make_png(project.images_dir / f"{n:02}.png", seed=n)
        run_job(import_images(project, [project.images_dir]))
    return root


@pytest.fixture
def window(qtbot, tmp_path: Path, project_root: Path):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    window = MainWindow(settings)
    qtbot.addWidget(window)
    window.open_project(project_root)
    window.show()
    qtbot.waitExposed(window)
    window.activateWindow()
    window.grid.setFocus()
    yield window
    window.close()


def decision(window: MainWindow, image_id: int) -> Decision:
    assert window.project is not None
    return window.project.catalog.decision(image_id)


def press(qtbot, window: MainWindow, key: Qt.Key, modifier=Qt.NoModifier) -> None:
    target = window.stack.currentWidget()
    qtbot.keyClick(target, key, modifier)


def test_model_passes_qt_model_tester(window: MainWindow) -> None:
    QAbstractItemModelTester(window.model, QAbstractItemModelTester.FailureReportingMode.Fatal)
    assert window.model.rowCount() == 10


def test_flag_stars_labels_and_reasons_by_key(qtbot, window: MainWindow) -> None:
    first = window.current_id()
    assert first == 1
    press(qtbot, window, Qt.Key_P)
    assert decision(window, 1).flag == "pick"
    press(qtbot, window, Qt.Key_3)
    press(qtbot, window, Qt.Key_6)
    assert decision(window, 1) == Decision(flag="pick", stars=3, color="red")
    press(qtbot, window, Qt.Key_X)
    assert decision(window, 1).flag == "reject"
    press(qtbot, window, Qt.Key_U)
    assert decision(window, 1).flag == "none"
    press(qtbot, window, Qt.Key_L)
    assert decision(window, 1) == Decision(
        flag="reject", stars=3, color="red", reject_reason="off-look"
    )
    assert window.summary.text() == "picked 0 · rejected 1 · unreviewed 9 · of 10"


def test_library_views_count_what_each_pass_has_left(qtbot, window: MainWindow) -> None:
    def counts() -> dict[str, int | None]:
        views = window.filters.views
        return {
            views.item(row).text().strip(): views.item(row).data(CountRole)
            for row in range(views.count())
        }

    assert counts()["All photos"] == 10 and counts()["Unreviewed"] == 10
    press(qtbot, window, Qt.Key_P)
    press(qtbot, window, Qt.Key_Right)
    press(qtbot, window, Qt.Key_L)  # reject as off-look
    shown = counts()
    assert (shown["Unreviewed"], shown["Picked"], shown["Rejected"]) == (8, 1, 1)
    assert (shown["off-look"], shown["off-prompt"]) == (1, 0)
    assert shown["Training set (collection)"] == 0


def test_enter_in_the_goal_box_sets_the_goal_without_opening_the_loupe(
    qtbot, window: MainWindow
) -> None:
    window.goal.setFocus()
    window.goal.lineEdit().selectAll()
    qtbot.keyClicks(window.goal, "12")
    qtbot.keyClick(window.goal, Qt.Key_Return)
    assert window.goal.value() == 12
    assert window.stack.currentIndex() == GRID
    assert window.grid.hasFocus()  # the culling keys work again at once


def test_grid_cells_fill_the_row_at_every_width(qtbot) -> None:
    from PySide6.QtGui import QStandardItem, QStandardItemModel

    from charstudio.ui.image_grid import ImageGridView

    model = QStandardItemModel()
    for n in range(40):
        model.appendRow(QStandardItem(str(n)))
    grid = ImageGridView()
    qtbot.addWidget(grid)
    grid.setModel(model)
    grid.set_cell_size(150)
    grid.show()
    for width in range(600, 612):  # some widths divide exactly by the column count
        grid.resize(width, 500)
        QApplication.processEvents()
        grid.doItemsLayout()
        rects = [grid.visualRect(model.index(r, 0)) for r in range(model.rowCount())]
        first_row = [r for r in rects if r.top() == rects[0].top()]
        assert grid.gridSize().width() >= 150
        assert len(first_row) == (grid.viewport().width() - 1) // 150  # no column lost
        # The row's cells reach the right edge (a pixel of slack per column): no unused strip.
        assert grid.viewport().width() - first_row[-1].right() <= len(first_row) + 1


def test_thumbnail_size_is_remembered(
    qtbot, window: MainWindow, tmp_path: Path, project_root: Path
) -> None:
    window.size_slider.setValue(150)
    assert window.grid.cell_size() == 150
    window.close()
    again = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat))
    qtbot.addWidget(again)
    again.open_project(project_root)
    assert again.grid.cell_size() == again.size_slider.value() == 150
    again.close()


def test_a_decision_applies_to_the_selection_and_undo_redo(qtbot, window: MainWindow) -> None:
    selection = window.grid.selectionModel()
    for row in (0, 1, 2):
        selection.select(window.model.index(row), QItemSelectionModel.Select)
    press(qtbot, window, Qt.Key_P)
    assert [decision(window, i).flag for i in (1, 2, 3, 4)] == ["pick", "pick", "pick", "none"]
    press(qtbot, window, Qt.Key_Z, Qt.ControlModifier)
    assert [decision(window, i).flag for i in (1, 2, 3)] == ["none"] * 3
    press(qtbot, window, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)
    assert [decision(window, i).flag for i in (1, 2, 3)] == ["pick"] * 3


def test_undo_says_what_it_took_back_and_keeps_a_decision_made_elsewhere(
    qtbot, window: MainWindow, project_root: Path
) -> None:
    press(qtbot, window, Qt.Key_P)
    with Project.open(project_root) as other:  # a command on the same project, meanwhile
        other.catalog.decide([1], "stars", stars=4)
        other.catalog.decide([1], "reject", flag="reject")
    press(qtbot, window, Qt.Key_Z, Qt.ControlModifier)
    message = window.statusBar().currentMessage()
    assert message.startswith('Undone "Pick" (1 image)') and "kept a newer decision" in message
    assert decision(window, 1).flag == "reject" and decision(window, 1).stars == 4
    press(qtbot, window, Qt.Key_Z, Qt.ControlModifier)
    press(qtbot, window, Qt.Key_Z, Qt.ControlModifier)
    press(qtbot, window, Qt.Key_Z, Qt.ControlModifier)
    assert window.statusBar().currentMessage() == "Nothing to undo"


def test_shift_applies_and_advances_and_auto_advance(qtbot, window: MainWindow) -> None:
    press(qtbot, window, Qt.Key_X, Qt.ShiftModifier)
    assert decision(window, 1).flag == "reject"
    assert window.current_id() == 2
    press(qtbot, window, Qt.Key_P)
    assert window.current_id() == 2  # no auto-advance yet
    qtbot.keyClick(window.grid, Qt.Key_CapsLock)
    assert window.auto_advance.isChecked()
    press(qtbot, window, Qt.Key_2)
    assert decision(window, 2).stars == 2
    assert window.current_id() == 3
    qtbot.keyClick(window.grid, Qt.Key_CapsLock)
    assert not window.auto_advance.isChecked()


def test_caps_lock_state_is_read_from_letters(qtbot, window: MainWindow) -> None:
    # With Caps Lock on, P arrives as "P" without Shift: pick and advance.
    qtbot.keyClick(window.grid, Qt.Key_P, Qt.NoModifier)  # "p": Caps Lock off
    assert window.current_id() == 1 and not window.auto_advance.isChecked()
    window.grid.setFocus()
    event_text = "X"
    from PySide6.QtGui import QKeyEvent

    QApplication.sendEvent(
        window.grid, QKeyEvent(QEvent.KeyPress, Qt.Key_X, Qt.NoModifier, event_text)
    )
    assert window.auto_advance.isChecked()


def test_compare_steps_the_candidate_through_the_grid(qtbot, window: MainWindow) -> None:
    window._focus_id(1)
    press(qtbot, window, Qt.Key_C)  # one image selected: it and the next one
    assert window.stack.currentIndex() == SURVEY and window.survey.keys() == [1, 2]
    press(qtbot, window, Qt.Key_Right)
    assert window.survey.keys() == [1, 3]  # the candidate moved on, the select stayed
    press(qtbot, window, Qt.Key_P)  # decisions go to the active pane: the new candidate
    assert decision(window, 3).flag == "pick"
    press(qtbot, window, Qt.Key_Left)
    press(qtbot, window, Qt.Key_Left)  # skips the select: nothing before it
    assert window.survey.keys() == [1, 2]
    press(qtbot, window, Qt.Key_Up)  # make select, next candidate
    assert window.survey.keys() == [2, 3]


def test_filters_keep_focus_and_persist(qtbot, window: MainWindow, project_root: Path) -> None:
    for _ in range(3):
        press(qtbot, window, Qt.Key_P, Qt.ShiftModifier)  # picks 1, 2, 3
    window._focus_id(2)
    window.filters.views.setCurrentRow(2)  # "Picked"
    assert window.model.rowCount() == 3
    assert window.current_id() == 2
    assert window.summary.text().startswith("showing 3 · picked 3")
    window.close()
    with Project.open(project_root) as project:
        assert project.catalog.get_setting("grid_filter")["view"] == "picked"
    again = MainWindow(window.settings)
    qtbot.addWidget(again)
    again.open_project(project_root)
    assert again.model.rowCount() == 3
    assert again.filters.views.currentRow() == 2
    again.close()


def test_loupe_keys_act_on_the_shown_image(qtbot, window: MainWindow) -> None:
    window._focus_id(4)
    press(qtbot, window, Qt.Key_E)
    assert window.stack.currentIndex() == LOUPE
    assert window.loupe.current_key() == 4
    press(qtbot, window, Qt.Key_Right)
    assert window.loupe.current_key() == 5
    press(qtbot, window, Qt.Key_P)
    assert decision(window, 5).flag == "pick"
    press(qtbot, window, Qt.Key_Escape)
    assert window.stack.currentIndex() == GRID
    assert window.current_id() == 5


def test_rejecting_in_survey_removes_the_image(qtbot, window: MainWindow) -> None:
    selection = window.grid.selectionModel()
    for row in (0, 1, 2):
        selection.select(window.model.index(row), QItemSelectionModel.Select)
    press(qtbot, window, Qt.Key_N)
    assert window.stack.currentIndex() == SURVEY
    assert window.survey.keys() == [1, 2, 3]
    assert "00.png" in window.info.text.toPlainText()  # the info panel follows the survey
    press(qtbot, window, Qt.Key_Right)
    assert "01.png" in window.info.text.toPlainText()
    assert len(window.grid.selectionModel().selectedIndexes()) == 3  # selection kept
    focused = window.survey.focused_key()
    press(qtbot, window, Qt.Key_X)
    assert decision(window, focused).flag == "reject"
    assert focused not in window.survey.keys()  # noqa: SIM118 (a list, not a dict)
    assert len(window.survey.keys()) == 2


def test_use_picks_and_export(qtbot, window: MainWindow, tmp_path: Path) -> None:
    for _ in range(2):
        press(qtbot, window, Qt.Key_P, Qt.ShiftModifier)
    window.use_picks()
    assert window.project is not None
    assert window.project.catalog.training_set()[1] == [1, 2]
    with qtbot.waitSignal(window.queue_worker.jobFinished, timeout=10000) as finished:
        job_id = window.start_export(tmp_path / "picks")
    assert finished.args[0].id == job_id and finished.args[0].status == "done"
    assert window.statusBar().currentMessage().startswith("Exported 2 picks")
    # Each pick goes with its training caption.
    exported = sorted(p.name for p in (tmp_path / "picks").iterdir())
    assert exported == ["00.png", "00.txt", "01.png", "01.txt"]


def test_cheat_sheet_lists_every_culling_key(qtbot, window: MainWindow) -> None:
    window.show_cheat_sheet()
    text = window.cheat_sheet.text()
    for key in ("P", "X", "U", "Caps Lock", "Ctrl+Z", "off-look"):
        assert key in text


def test_screenshot_of_the_main_window(qtbot, window: MainWindow, tmp_path: Path) -> None:
    index = window.model.index(9)
    qtbot.waitUntil(lambda: window.model.data(index, Qt.DecorationRole).width() == 64)
    press(qtbot, window, Qt.Key_P)
    image = window.grab().toImage()
    path = tmp_path / "main_window.png"
    assert image.save(str(path))
    colors = {
        image.pixelColor(x, y).rgb()
        for x in range(0, image.width(), 37)
        for y in range(0, image.height(), 37)
    }
    assert len(colors) > 20  # thumbnails and panels, not a blank window
