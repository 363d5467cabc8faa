"""The Compare panel, the checkpoint grid viewer and their controller (workflow step 4).

No model runs here: grids are catalog rows (``grids``, ``grid_cells``) with small PNG cell files
written by the tests, and a running grid job is played by feeding the controller the progress
events the job yields. Only the export test needs torch (it writes real embedding files).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from PySide6.QtCore import QEvent, QPoint, Qt
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QApplication, QDialog, QFileDialog, QWidget

from charstudio.catalog import Project
from charstudio.catalog.records import utc_now
from charstudio.jobs import CancelToken, Progress
from charstudio.jobs.queue import JobQueue, QueuedJob
from charstudio.presenters.compare import SETTING_KEY
from charstudio.training import records
from charstudio.training.checkpoint_grid import GridSpec, refine_steps
from charstudio.training.export import EXPORT_FOLDERS_SETTING
from charstudio.training.grid_records import read_grid
from charstudio.ui.compare_controller import KIND, CompareController, ExportDialog
from charstudio.ui.compare_panel import ComparePanel
from charstudio.ui.grid_viewer import PLOT_H, GridViewer

pytestmark = pytest.mark.gui

TOKEN = "fr3nchl4dy"
RUN_FOLDER = f"runs/ti-001-{TOKEN}"
SEED = 12345678
STEPS = (20, 40, 60, 80, 100)
RUN_MODEL = "/models/v1-5-pruned-emaonly.safetensors"
# Identity per step and seed: step 60 is the first where all four pass 0.5; one face is missing
# at step 20.
SCORES = {
    20: [0.2, 0.31, None, 0.28],
    40: [0.45, 0.52, 0.4, 0.49],
    60: [0.62, 0.58, 0.66, 0.55],
    80: [0.7, 0.72, 0.68, 0.61],
    100: [0.66, 0.41, 0.7, 0.63],
}


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    """A finished run that saved a checkpoint every 5 steps (catalog rows; no files needed)."""
    project = Project.create(tmp_path / "proj", "Léa", token=TOKEN)
    run_id = records.create_run(
        project.catalog, name=TOKEN, folder=RUN_FOLDER, params={"model": RUN_MODEL}, job_id=None
    )
    for step in range(5, 151, 5):
        path = f"{RUN_FOLDER}/{TOKEN}-{step}.pt"
        records.record_checkpoint(project.catalog, run_id, step, path, 0.1, "0" * 64)
    records.set_run_status(project.catalog, run_id, "done")
    project.run_id = run_id  # type: ignore[attr-defined]
    yield project
    project.close()


def cell_path(grid_id: int, step: int, seed: int, z: int = 0) -> str:
    return f"grids/grid-{grid_id:05d}/z{z}-{TOKEN}-{step}-{seed}.png"


def write_cell(project: Project, grid_id: int, x: int, y: int, step: int, **values: Any) -> dict:
    """One cell as the job makes it: a PNG and its grid_cells row; returns the event's dict."""
    seed = SEED + y
    relative = cell_path(grid_id, step, seed)
    file = project.root / relative
    file.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (40 * x % 256, 60 * y % 256, 128)).save(file)
    cell = {"x": x, "y": y, "z": 0, "step": step, "seed": seed, "path": relative}
    cell |= {"score": values.get("score"), "faces": values.get("faces")}
    with project.catalog.transaction() as conn:
        conn.execute(
            "INSERT INTO grid_cells (grid_id, x, y, z, step, seed, path, score, faces) "
            "VALUES (:grid_id, :x, :y, :z, :step, :seed, :path, :score, :faces) "
            "ON CONFLICT (grid_id, x, y, z) DO UPDATE SET score = excluded.score, "
            "faces = excluded.faces",
            {"grid_id": grid_id, **cell},
        )
    return cell


def make_grid(
    project: Project,
    steps: tuple[int, ...] = STEPS,
    *,
    scores: dict[int, list[float | None]] | None = None,
    cells: bool = True,
    faces: bool = True,
    job_id: int | None = None,
    chosen: int | None = None,
    run_id: int | None = None,
) -> int:
    run_id = run_id if run_id is not None else project.run_id  # type: ignore[attr-defined]
    spec = GridSpec(run_id=run_id, steps=steps, width=32, height=32)
    with project.catalog.transaction() as conn:
        grid_id = int(
            conn.execute(
                "INSERT INTO grids (run_id, params, chosen_step, created_at, job_id) "
                "VALUES (?, ?, ?, ?, ?)",
                (run_id, json.dumps(spec.to_json()), chosen, utc_now(), job_id),
            ).lastrowid
            or 0
        )
    if cells:
        for x, step in enumerate(steps):
            for y in range(spec.batch):
                score = scores[step][y] if scores else None
                found = (0 if score is None else 1) if scores else (1 if faces else None)
                write_cell(project, grid_id, x, y, step, score=score, faces=found)
    return grid_id


def _never_runs(project: Project, params: dict, cancel: CancelToken, job_id: int) -> Iterator:
    raise AssertionError("GUI tests never make a grid")
    yield


class FakeWorker:
    """The QueueWorker's submit/cancel_current; jobs are stored in the real queue table."""

    def __init__(self) -> None:
        self.submitted: list[tuple[str, dict[str, Any]]] = []
        self.canceled = 0

    def submit(self, project: Project, kind: str, params: dict) -> int:
        self.submitted.append((kind, params))
        return JobQueue(project, {KIND: _never_runs}).submit(kind, params)

    def cancel_current(self) -> None:
        self.canceled += 1


Controlled = tuple[ComparePanel, GridViewer, CompareController, FakeWorker]


@pytest.fixture
def controlled(qtbot, project: Project) -> Iterator[Controlled]:
    panel = ComparePanel()
    viewer = GridViewer()
    qtbot.addWidget(panel)
    qtbot.addWidget(viewer)
    controller = CompareController(panel, viewer)
    worker = FakeWorker()
    controller.set_project(project, worker)  # type: ignore[arg-type]
    yield panel, viewer, controller, worker
    controller.set_project(None, None)


@pytest.fixture
def viewer(qtbot) -> Iterator[GridViewer]:
    viewer = GridViewer()
    qtbot.addWidget(viewer)
    viewer.resize(1000, 700)
    viewer.show()
    qtbot.waitExposed(viewer)
    yield viewer
    viewer.set_project(None)


def wait_shown(qtbot, viewer: GridViewer) -> None:
    def all_shown() -> bool:
        cells = [
            viewer.cell(c, r)
            for c in range(viewer.column_count())
            for r in range(viewer.row_count())
        ]
        return all(cell is not None and cell.state == "shown" for cell in cells)

    qtbot.waitUntil(all_shown, timeout=5000)


def grid_job(job_id: int, params: dict, status: str = "running") -> QueuedJob:
    return QueuedJob(job_id, KIND, params, status, "2024-01-01T00:00:00")


def chosen_in_catalog(project: Project, grid_id: int) -> int | None:
    return read_grid(project.catalog, grid_id).chosen_step


def header_click(qtbot, viewer: GridViewer, column: int, shift: bool = False) -> None:
    left, right = viewer._x_span(column)
    position = QPoint(round((left + right) / 2), PLOT_H + 12)
    modifier = Qt.KeyboardModifier.ShiftModifier if shift else Qt.KeyboardModifier.NoModifier
    qtbot.mouseClick(viewer.view.header, Qt.MouseButton.LeftButton, modifier, position)


# -- the grid ------------------------------------------------------------------------------------


def test_cells_are_laid_out_by_step_and_seed_with_labels(qtbot, viewer, project) -> None:
    grid_id = make_grid(project, scores=SCORES)
    viewer.load_grid(project, grid_id)
    wait_shown(qtbot, viewer)
    assert viewer.column_labels() == [f"{TOKEN}-{s}" for s in STEPS]
    assert viewer.row_labels() == [f"Seed {SEED + y}" for y in range(4)]
    for column, step in enumerate(STEPS):
        for row in range(4):
            cell = viewer.cell(column, row)
            assert cell is not None and (cell.step, cell.seed) == (step, SEED + row)
            assert cell.path == cell_path(grid_id, step, SEED + row)
    # Steps run left to right, seeds top to bottom, in one scene (one zoom for every cell).
    lefts = [viewer.cell_rect(c, 0).left() for c in range(5)]
    tops = [viewer.cell_rect(0, r).top() for r in range(4)]
    assert lefts == sorted(lefts) and len(set(lefts)) == 5
    assert tops == sorted(tops) and len(set(tops)) == 4
    assert viewer.title_label.text().startswith(f"Grid {grid_id} · {TOKEN} · steps 20–100")
    # The plot's numbers per column are the core's step scores.
    scores = viewer.column_scores()
    assert scores[0] is not None and scores[0].detection_rate == 0.75
    assert scores[2] is not None and scores[2].minimum == pytest.approx(0.55)


def test_zoom_and_pan_are_one_view_for_all_cells(qtbot, viewer, project) -> None:
    viewer.load_grid(project, make_grid(project))
    assert viewer.is_fit()
    fitted = viewer.scale()
    viewer.view.setFocus()
    qtbot.keyClick(viewer.view, Qt.Key.Key_Z)  # 1:1 on the focused cell
    assert not viewer.is_fit() and viewer.scale() == pytest.approx(1.0)
    qtbot.keyClick(viewer.view, Qt.Key.Key_Equal)
    assert viewer.scale() == pytest.approx(1.25)
    qtbot.keyClick(viewer.view, Qt.Key.Key_F)
    assert viewer.is_fit() and viewer.scale() == pytest.approx(fitted)


def test_cells_added_while_the_job_runs_appear(qtbot, controlled, project) -> None:
    panel, viewer, controller, _worker = controlled
    job_id = JobQueue(project).submit(KIND, {})
    project.catalog.update_job(job_id, status="running")
    grid_id = make_grid(project, cells=False, job_id=job_id)
    job = grid_job(job_id, {})
    shown: list[bool] = []
    controller.showViewer.connect(lambda: shown.append(True))

    assert controller.job_started(job)
    controller.job_progress(
        job, Progress(0, 150, "Grid of 5 steps × 4 seeds", 0.1, {"grid_id": grid_id})
    )
    assert viewer.grid_id() == grid_id and shown == [True]
    assert viewer.cell(0, 0) is None  # nothing made yet: placeholders
    assert "Making the grid: 0 of 20 cells" in viewer.reason_label.text()

    first = write_cell(project, grid_id, 0, 0, 20)
    controller.job_progress(job, Progress(30, 150, f"{TOKEN}-20 seed {SEED}", 2.0, {"cell": first}))
    qtbot.waitUntil(lambda: getattr(viewer.cell(0, 0), "state", "") == "shown", timeout=5000)
    assert viewer.cell(1, 0) is None
    assert "1 of 20 cells" in viewer.reason_label.text()
    assert "making: 1 of 20" in viewer.detail_label.text()
    assert "ETA" in panel.status_text()

    # The job ends: scores were written to the cells, the result carries the suggestion.
    for x, step in enumerate(STEPS):
        for y in range(4):
            score = SCORES[step][y]
            write_cell(project, grid_id, x, y, step, score=score, faces=int(score is not None))
    suggestion = {"step": 60, "reason": "step 60 is the first where every image (4) shows …"}
    project.catalog.update_job(
        job_id,
        status="done",
        result={"grid_id": grid_id, "cells": [{}] * 20, "suggestion": suggestion},
    )
    assert controller.job_finished(grid_job(job_id, {}, "done"))
    wait_shown(qtbot, viewer)
    assert viewer.suggested_step() == 60
    assert "suggested step 60" in panel.status_text()
    assert not controller.job_finished(QueuedJob(99, "generate", {}, "done", "x"))


def test_reopening_a_grid_from_the_catalog_shows_it(qtbot, controlled, project) -> None:
    panel, viewer, controller, _worker = controlled
    older = make_grid(project, scores=SCORES, chosen=60)
    newer = make_grid(project, (40, 45, 50, 55, 60), scores=None)
    controller.refresh_grids()
    assert panel.grid_ids() == [newer, older]  # newest first
    assert "chosen step 60" in panel.grids_list.item(1).text()
    shown: list[bool] = []
    controller.showViewer.connect(lambda: shown.append(True))
    panel.grids_list.setCurrentRow(1)
    panel.open_button.click()
    assert shown == [True] and viewer.grid_id() == older
    wait_shown(qtbot, viewer)
    assert viewer.column_labels()[2] == f"{TOKEN}-60"
    assert viewer.chosen_step() == 60
    assert f"chosen: {TOKEN}-60" in viewer.title_label.text()
    assert viewer.export_button.isEnabled() and TOKEN in viewer.export_button.text()


def test_the_suggested_step_is_marked_with_its_reason(viewer, project) -> None:
    viewer.load_grid(project, make_grid(project, scores=SCORES))
    assert viewer.suggested_step() == 60
    assert viewer.suggested_columns() == [2]
    text = viewer.reason_label.text()
    assert text.startswith("Suggested: step 60 — first where every image (4)")
    assert "over-baked" in text  # identity drops again at step 100
    assert "★ suggested" in viewer.column_tooltip(2)
    assert "★ suggested" not in viewer.column_tooltip(3)


def test_the_jobs_reason_is_shown_when_it_has_one(viewer, project) -> None:
    job_id = JobQueue(project).submit(KIND, {})
    reason = "no identity scores: face recognition weights are not installed"
    project.catalog.update_job(
        job_id, status="done", result={"suggestion": {"step": None, "reason": reason}}
    )
    viewer.load_grid(project, make_grid(project, job_id=job_id))
    assert viewer.suggested_step() is None
    assert viewer.reason_label.text().startswith(
        "No identity scores: face recognition weights are not installed."
    )


def test_without_scores_the_grid_works_and_says_why(qtbot, viewer, project) -> None:
    grid_id = make_grid(project, scores=None, faces=True)
    viewer.load_grid(project, grid_id)
    wait_shown(qtbot, viewer)
    assert viewer.suggested_step() is None
    assert all(score is None for score in viewer.column_scores())
    assert viewer.reason_label.text().startswith(
        "No identity scores: the face recognizer was not available"
    )
    viewer.view.setFocus()
    qtbot.keyClick(viewer.view, Qt.Key.Key_Right)
    assert viewer.focused() == (1, 0)


def test_choosing_a_column_stores_the_chosen_step(qtbot, viewer, project) -> None:
    grid_id = make_grid(project, scores=SCORES)
    viewer.load_grid(project, grid_id)
    changes: list[tuple[int, int]] = []
    viewer.chosenStepChanged.connect(lambda grid, step: changes.append((grid, step)))
    viewer.view.setFocus()
    qtbot.keyClick(viewer.view, Qt.Key.Key_Right)
    qtbot.keyClick(viewer.view, Qt.Key.Key_C)
    assert chosen_in_catalog(project, grid_id) == 40
    header_click(qtbot, viewer, 3)  # clicking a column's label chooses its step
    assert chosen_in_catalog(project, grid_id) == 80
    assert viewer.chosen_step() == 80 and viewer.focused()[0] == 3
    header_click(qtbot, viewer, 3)  # a click never undoes a choice
    assert changes == [(grid_id, 40), (grid_id, 80)]
    assert "✓ chosen" in viewer.column_tooltip(3)
    qtbot.keyClick(viewer.view, Qt.Key.Key_C)  # again on the chosen step: no choice
    assert chosen_in_catalog(project, grid_id) is None
    assert not viewer.export_button.isEnabled()


def claims(view: QWidget, key: Qt.Key, modifiers=Qt.KeyboardModifier.NoModifier) -> bool:
    """Whether the view takes ``key`` before the window's shortcuts can (ShortcutOverride)."""
    event = QKeyEvent(QEvent.Type.ShortcutOverride, key, modifiers)
    event.ignore()
    QApplication.sendEvent(view, event)
    return event.isAccepted()


def test_the_windows_culling_keys_stay_out_and_esc_asks_to_close(qtbot, viewer, project) -> None:
    """P, Shift+X, 3… would decide on the hidden library image: the grid takes them."""
    grid_id = make_grid(project)
    viewer.load_grid(project, grid_id)
    shift = Qt.KeyboardModifier.ShiftModifier
    for key, modifiers in ((Qt.Key.Key_P, shift), (Qt.Key.Key_X, shift), (Qt.Key.Key_3, shift)):
        assert claims(viewer.view, key) and claims(viewer.view, key, modifiers)
    for key in (Qt.Key.Key_C, Qt.Key.Key_E, Qt.Key.Key_Return, Qt.Key.Key_Escape):
        assert claims(viewer.view, key)
    assert not claims(viewer.view, Qt.Key.Key_G)  # back to the library: the window's
    assert not claims(viewer.view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    viewer.view.setFocus()
    qtbot.keyClick(viewer.view, Qt.Key.Key_P)  # swallowed: nothing happens
    assert chosen_in_catalog(project, grid_id) is None and viewer.focused() == (0, 0)
    with qtbot.waitSignal(viewer.closeRequested):
        qtbot.keyClick(viewer.view, Qt.Key.Key_Escape)


def test_arrows_move_the_focus_and_enter_opens_the_cell(qtbot, viewer, project) -> None:
    grid_id = make_grid(project)
    viewer.load_grid(project, grid_id)
    viewer.view.setFocus()
    for key in (Qt.Key.Key_Left, Qt.Key.Key_Up):  # at the edges nothing moves
        qtbot.keyClick(viewer.view, key)
    assert viewer.focused() == (0, 0)
    for key in (Qt.Key.Key_Right, Qt.Key.Key_Right, Qt.Key.Key_Down):
        qtbot.keyClick(viewer.view, key)
    assert viewer.focused() == (2, 1)
    expected = str(project.root / cell_path(grid_id, 60, SEED + 1))
    with qtbot.waitSignal(viewer.openImage) as opened:
        qtbot.keyClick(viewer.view, Qt.Key.Key_Return)
    assert opened.args == [expected]
    qtbot.keyClick(viewer.view, Qt.Key.Key_Down)
    with qtbot.waitSignal(viewer.openImage) as opened:
        qtbot.keyClick(viewer.view, Qt.Key.Key_E)
    assert opened.args == [str(project.root / cell_path(grid_id, 60, SEED + 2))]
    items, current = viewer.loupe_items()
    assert len(items) == 20 and items[current].path == opened.args[0]


def test_refine_queues_a_grid_every_5_steps_of_the_selected_range(qtbot, controlled, project):
    _panel, viewer, controller, worker = controlled
    viewer.resize(1000, 700)
    viewer.show()
    qtbot.waitExposed(viewer)
    grid_id = make_grid(project)
    controller.open_grid(grid_id)
    spec = viewer.spec()
    assert spec is not None
    assert not viewer.refine_button.isEnabled()  # no range selected yet
    viewer.view.setFocus()
    qtbot.keyClick(viewer.view, Qt.Key.Key_Right)
    qtbot.keyClick(viewer.view, Qt.Key.Key_Right, Qt.KeyboardModifier.ShiftModifier)
    assert viewer.selection() == (1, 2) and viewer.selected_steps() == (40, 60)
    viewer.refine_button.click()
    refined = dataclasses.replace(spec, steps=tuple(refine_steps(40, 60)))
    assert worker.submitted == [("grid", refined.to_json())]
    assert refined.steps == (40, 45, 50, 55, 60)
    # Shift+click on two column labels selects the range too (R refines it).
    header_click(qtbot, viewer, 3)
    header_click(qtbot, viewer, 4, shift=True)
    assert viewer.selected_steps() == (80, 100)
    qtbot.keyClick(viewer.view, Qt.Key.Key_R)
    assert worker.submitted[-1][1]["steps"] == [80, 85, 90, 95, 100]
    assert worker.submitted[-1][1]["seed"] == SEED


def test_save_grid_png_copies_the_jobs_png_or_draws_one(viewer, project, tmp_path) -> None:
    grid_id = make_grid(project, scores=SCORES)
    viewer.load_grid(project, grid_id)
    drawn = viewer.save_grid_png(tmp_path / "out" / "drawn")
    assert drawn.name == "drawn.png"
    with Image.open(drawn) as image:  # 5 × 4 cells of 32 px plus the legends
        assert image.width > 5 * 32 and image.height > 4 * 32
    stored = project.root / "grids" / f"grid-{grid_id:05d}.png"
    Image.new("RGB", (10, 10), (1, 2, 3)).save(stored)
    with project.catalog.transaction() as conn:
        conn.execute("UPDATE grids SET path = ? WHERE id = ?", (f"grids/{stored.name}", grid_id))
    viewer.load_grid(project, grid_id)
    copied = viewer.save_grid_png(tmp_path / "copy.png")
    assert copied.read_bytes() == stored.read_bytes()


def test_saving_over_a_grid_png_held_open_says_so(viewer, project, tmp_path, monkeypatch) -> None:
    from charstudio import atomic_files

    grid_id = make_grid(project, scores=SCORES)
    viewer.load_grid(project, grid_id)
    dest = tmp_path / "grid.png"
    dest.write_bytes(b"open in a viewer")

    def refuse(src: object, dst: object) -> None:
        error = PermissionError(13, "Access is denied", str(dst))
        error.winerror = 5  # type: ignore[attr-defined]  # Windows: the target is open
        raise error

    monkeypatch.setattr(atomic_files.os, "replace", refuse)
    monkeypatch.setattr(atomic_files, "RETRY_SECONDS", 0.05)
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(dest), ""))
    assert viewer.save_dialog() is None
    assert "another program has it open" in viewer.note_label.text()
    assert dest.read_bytes() == b"open in a viewer"


def test_export_writes_the_embedding_and_remembers_the_folder(
    qtbot, controlled, project, tmp_path, monkeypatch
) -> None:
    torch = pytest.importorskip("torch")
    from charstudio.engine.embeddings import load_embedding, save_a1111_pt

    _panel, viewer, controller, _worker = controlled
    folder = "runs/ti-002-zxq"
    run_id = records.create_run(
        project.catalog, name="zxq", folder=folder, params={"model": RUN_MODEL}, job_id=None
    )
    vectors = torch.randn(2, 768)
    saved = save_a1111_pt(project.root / folder / "zxq-60.pt", "zxq-60", vectors, step=60)
    records.record_checkpoint(project.catalog, run_id, 60, f"{folder}/{saved.name}", 0.1, "0")
    grid_id = make_grid(project, (60,), run_id=run_id, chosen=60)
    controller.open_grid(grid_id)
    a1111 = tmp_path / "a1111" / "embeddings"
    offered: list[list[str]] = []

    def fake_exec(dialog: ExportDialog) -> int:
        offered.append(dialog.folders())
        dialog.add_folder(a1111)
        return QDialog.DialogCode.Accepted

    monkeypatch.setattr(ExportDialog, "exec", fake_exec)
    with qtbot.waitSignal(controller.exported) as exported:
        viewer.export_button.click()
    files = {Path(f) for f in exported.args[0].files}
    expected = {
        project.root / "embeddings" / "zxq.pt",
        project.root / "embeddings" / "zxq.safetensors",
        a1111 / "zxq.pt",
        a1111 / "zxq.safetensors",
    }
    assert files == expected and all(f.is_file() for f in expected)
    assert torch.equal(load_embedding(a1111 / "zxq.safetensors", width=None).vectors, vectors)
    assert project.catalog.get_setting(EXPORT_FOLDERS_SETTING) == [str(a1111)]
    assert str(a1111 / "zxq.pt") in viewer.note_label.text()
    # The next export offers the remembered folder, checked.
    viewer.export_button.click()
    assert offered == [[], [str(a1111)]]


def test_export_dialog_finds_the_embeddings_folder_of_an_install(qtbot, tmp_path) -> None:
    from charstudio.ui.compare_controller import embeddings_folder

    (tmp_path / "webui" / "embeddings").mkdir(parents=True)
    (tmp_path / "ComfyUI" / "models").mkdir(parents=True)
    assert embeddings_folder(tmp_path / "webui", "a1111") == tmp_path / "webui" / "embeddings"
    comfy = embeddings_folder(tmp_path / "ComfyUI", "comfyui")
    assert comfy == tmp_path / "ComfyUI" / "models" / "embeddings"
    dialog = ExportDialog("zxq-60", "zxq", ["/a", "/b"], tmp_path / "embeddings")
    qtbot.addWidget(dialog)
    dialog.folders_list.item(0).setCheckState(Qt.CheckState.Unchecked)
    assert dialog.folders() == ["/b"] and dialog.name() == "zxq"
    dialog.name_edit.setText("")
    assert not dialog.buttons.button(dialog.buttons.StandardButton.Ok).isEnabled()


# -- the panel -----------------------------------------------------------------------------------


def test_the_panel_submits_a_grid_job_with_the_expected_spec(controlled, project) -> None:
    panel, _viewer, _controller, worker = controlled
    run_id = project.run_id  # type: ignore[attr-defined]
    # The newest run is selected; its steps preset is every 20 saved steps.
    assert panel.selected_run() is not None and panel.selected_run().id == run_id
    assert panel.steps_edit.text() == "20:140:20"
    panel.steps_edit.setText("20:100:20")
    panel.seed_edit.setText("777")
    panel.batch_spin.setValue(2)
    panel.negative_edit.setPlainText("blurry")
    panel.make_button.click()
    expected = GridSpec(
        run_id=run_id, steps=STEPS, seed=777, batch=2, negative_prompt="blurry"
    ).to_json()
    assert worker.submitted == [("grid", expected)]
    assert expected["prompt"].count("[name]") == 1 and expected["sampler"] == "DPM++ 2M"
    assert project.catalog.get_setting(SETTING_KEY)["seed"] == 777  # remembered


def test_the_panel_checks_steps_and_prompt_before_queueing(controlled) -> None:
    panel, _viewer, _controller, worker = controlled
    panel.steps_edit.setText("20:100:7")  # 27, 34 … were never saved
    panel.make_button.click()
    assert worker.submitted == []
    assert "No checkpoint for step 27" in panel.problem_label.text()
    assert "saved steps 5–150 every 5" in panel.problem_label.text()
    panel.steps_edit.setText("20:60:20")
    panel.prompt_edit.setPlainText("a portrait photo")
    panel.make_button.click()
    assert worker.submitted == [] and "[name]" in panel.problem_label.text()


def test_other_base_checkpoints_make_a_z_axis_at_512x768(controlled, project) -> None:
    panel, _viewer, _controller, worker = controlled
    other = "/models/deliberate_v2.safetensors"
    panel.set_model_choices([RUN_MODEL, other])
    assert panel.models_list.item(0).isHidden()  # the run's own model is always included
    panel.models_list.item(1).setCheckState(Qt.CheckState.Checked)
    assert (panel.width_spin.value(), panel.height_spin.value()) == (512, 768)
    panel.make_button.click()
    params = worker.submitted[-1][1]
    assert params["models"] == [RUN_MODEL, other]
    assert (params["width"], params["height"]) == (512, 768)


def test_cancel_stops_the_running_grid_job(controlled, project) -> None:
    panel, _viewer, controller, worker = controlled
    controller.cancel()
    assert worker.canceled == 0  # nothing of ours runs
    job_id = JobQueue(project).submit(KIND, {})
    controller.job_started(grid_job(job_id, {}))
    assert panel.cancel_button.isEnabled()
    panel.cancel_button.click()
    assert worker.canceled == 1


# -- one real grid -------------------------------------------------------------------------------


@pytest.mark.slow  # two steps × two seeds on a tiny random-weight model, on the CPU
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers on numpy 2
def test_end_to_end_tiny_model_through_the_queue_worker(qtbot, tmp_path: Path) -> None:
    """The panel's grid runs on the real worker thread; its cells stream into the viewer and
    the finished grid is reloaded with its suggestion (or the reason there is none)."""
    torch = pytest.importorskip("torch")
    from charstudio.engine.embeddings import save_a1111_pt
    from charstudio.ui.queue_worker import QueueWorker

    from .tiny_sd import tiny_components, write_diffusers_folder

    model_dir = write_diffusers_folder(tmp_path / "tiny-sd", tiny_components(5))
    project = Project.create(tmp_path / "proj", "Zxq", "zxq")
    folder = "runs/ti-001-zxq"
    run_id = records.create_run(
        project.catalog, name="zxq", folder=folder, params={"model": str(model_dir)}, job_id=None
    )
    generator = torch.Generator().manual_seed(0)
    for step in (10, 20):
        vectors = torch.randn(2, 32, generator=generator) * 4
        path = save_a1111_pt(project.root / folder / f"zxq-{step}.pt", f"zxq-{step}", vectors)
        records.record_checkpoint(project.catalog, run_id, step, f"{folder}/{path.name}", 0.1, "")
    records.set_run_status(project.catalog, run_id, "done")
    panel, viewer = ComparePanel(), GridViewer()
    qtbot.addWidget(panel)
    qtbot.addWidget(viewer)
    controller = CompareController(panel, viewer)
    worker = QueueWorker(project.root)
    worker.jobStarted.connect(controller.job_started)
    worker.jobProgress.connect(controller.job_progress)
    worker.jobFinished.connect(controller.job_finished)
    added: list[dict] = []
    original_add = viewer.add_cell
    viewer.add_cell = lambda cell: (added.append(cell), original_add(cell))  # type: ignore[method-assign]
    try:
        controller.set_project(project, worker)
        assert panel.steps_edit.text() == "10, 20"  # fewer than two multiples of 20: all
        panel.batch_spin.setValue(2)
        panel.steps_spin.setValue(2)
        panel.width_spin.setValue(32)
        panel.height_spin.setValue(32)
        with qtbot.waitSignal(worker.jobFinished, timeout=120_000) as finished:
            panel.make_button.click()
        job = finished.args[0]
        assert job.status == "done", job.error
        assert len(added) >= 3  # cells reached the viewer while the job ran
        wait_shown(qtbot, viewer)
        assert viewer.column_labels() == ["zxq-10", "zxq-20"]
        assert viewer.row_labels() == [f"Seed {SEED}", f"Seed {SEED + 1}"]
        text = viewer.reason_label.text()
        assert text.startswith(("Suggested: step", "No suggestion:", "No identity scores:"))
        assert panel.status_text().startswith("Done: grid")
        assert panel.grid_ids() == [viewer.grid_id()]
    finally:
        worker.shutdown()
        controller.set_project(None, None)
        project.close()
