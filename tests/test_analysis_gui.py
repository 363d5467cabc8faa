"""The face analysis in the window: badges, the Face filter, stacks, look-alike tools, the bulk
rejections, the weights dialog and the background job. Analyses are written straight into the
catalog (no detector runs here) and the ``analyze`` job kind is replaced by a fake."""

from __future__ import annotations

import threading
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtTest import QAbstractItemModelTester

from charstudio.analysis.project import save_analyses
from charstudio.analysis.results import FaceAnalysis
from charstudio.analysis.weights import WeightsChecksumError
from charstudio.catalog import Project
from charstudio.catalog.importer import import_images
from charstudio.jobs import CancelToken, ProgressClock, run_job
from charstudio.jobs.queue import BUILTIN_KINDS, JobQueue
from charstudio.ui.face_weights_dialog import FaceWeightsDialog
from charstudio.ui.grid_delegate import FaceBadgesRole, FaceFlagsRole, StackRole
from charstudio.ui.main_window import MainWindow

from .test_analysis_view import PHASH, face, face_analysis, flip, unit

pytestmark = pytest.mark.gui

A, B = unit(1.0, 0.0), unit(0.0, 1.0)


def synthetic(project: Project, *, embeddings: bool = True) -> list[tuple[int, FaceAnalysis]]:
    """Analyses for the eight images of :func:`project_root`, by image id:
    1–3 a stack (1 blurry, 3 the sharpest), 4 no face, 5 two faces, 6 cut off and small,
    7 and 8 clean; identity A: 1, 2, 3, 7; identity B: 5, 6; 8 unlike both."""
    shas = [r.sha256 for r in project.catalog.images()]

    def emb(vector: tuple[float, ...]) -> tuple[float, ...] | None:
        return vector if embeddings else None

    specs: list[dict[str, Any]] = [
        {"faces": (face(sharpness=5.0),), "phash": PHASH, "embedding": emb(A)},
        {"faces": (face(sharpness=90.0),), "phash": flip(PHASH, 2), "embedding": emb(A)},
        {"faces": (face(sharpness=150.0),), "phash": flip(PHASH, 4), "embedding": emb(A)},
        {"faces": (), "phash": flip(PHASH, 40)},
        {
            "faces": (face(), face((20.0, 20.0, 200.0, 260.0))),
            "phash": flip(PHASH, 24),
            "embedding": emb(unit(0.9, 1.0)),
        },
        {
            "faces": (face((0.0, 10.0, 50.0, 60.0)),),
            "phash": flip(PHASH, 32),
            "embedding": emb(B),
        },
        {"faces": (face(),), "phash": flip(PHASH, 16), "embedding": emb(unit(0.95, 0.05))},
        {"faces": (face(),), "phash": flip(PHASH, 48), "embedding": emb(unit(0.0, 0.0, 1.0))},
    ]
    return [
        (image_id, face_analysis(sha, **spec))
        for image_id, (sha, spec) in enumerate(zip(shas, specs, strict=True), start=1)
    ]


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Weights a test installs stay in its own cache folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CHARSTUDIO_FACE_WEIGHTS", raising=False)


@pytest.fixture
def project_root(make_png, tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    with Project.create(root, "Anna") as project:
        for n in range(8):
            make_png(project.images_dir / f"{n:02}.png", seed=n)
        run_job(import_images(project, [project.images_dir]))
    return root


def analyzed(root: Path, *, embeddings: bool = True) -> Path:
    with Project.open(root) as project:
        save_analyses(project.catalog, synthetic(project, embeddings=embeddings))
    return root


def open_window(qtbot, tmp_path: Path, root: Path) -> MainWindow:
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    window = MainWindow(settings)
    qtbot.addWidget(window)
    window.analysis.open_delay_ms = 60_000  # the tests say when to look for stale images
    window.open_project(root)
    window.show()
    qtbot.waitExposed(window)
    window.activateWindow()
    window.grid.setFocus()
    return window


@pytest.fixture
def window(qtbot, tmp_path: Path, project_root: Path) -> Iterator[MainWindow]:
    window = open_window(qtbot, tmp_path, analyzed(project_root))
    yield window
    window.close()


def rows(window: MainWindow) -> list[int]:
    return [window.model.id_at(r) for r in range(window.model.rowCount())]


def press(qtbot, window: MainWindow, key: Qt.Key, modifier=Qt.NoModifier) -> None:
    qtbot.keyClick(window.stack.currentWidget(), key, modifier)


def focus(window: MainWindow, image_id: int) -> None:
    window._focus_id(image_id)
    assert window.current_id() == image_id


def set_face(window: MainWindow, key: str) -> None:
    window.filters.face.setCurrentIndex(window.filters.face.findData(key))


# -- badges, filters, bulk rejections ----------------------------------------------------------


def test_the_model_exposes_flags_and_badges(window: MainWindow) -> None:
    QAbstractItemModelTester(window.model, QAbstractItemModelTester.FailureReportingMode.Fatal)
    model = window.model

    def data(image_id: int, role: int) -> Any:
        row = model.row_of(image_id)
        assert row is not None
        return model.data(model.index(row), role)

    assert data(5, FaceFlagsRole) == ("several-faces",)
    assert data(5, FaceBadgesRole) == ["2 faces"]
    assert data(6, FaceBadgesRole) == ["cut off", "small"]
    assert data(4, FaceBadgesRole) == ["no face"]
    assert data(7, FaceBadgesRole) == []
    assert "Face: cut off, small face" in data(6, Qt.ToolTipRole)
    # The cells paint with badges and stack markers (nothing raises, something is drawn).
    image = window.grid.grab().toImage()
    assert not image.isNull()


def test_the_face_filter(window: MainWindow) -> None:
    set_face(window, "flagged")
    assert rows(window) == [1, 4, 5, 6]  # 1 (blurry) shows alone: its stack mates are clean
    set_face(window, "several-faces")
    assert rows(window) == [5]
    set_face(window, "unflagged")
    assert rows(window) == [3, 7, 8]  # 2 and 3 stack; 3 is the sharper
    assert "showing 3" in window.summary.text()
    assert window.project is not None
    assert window.project.catalog.get_setting("grid_filter")["face"] == "unflagged"
    set_face(window, "any")
    assert len(rows(window)) == 6


def test_reject_flagged_is_one_undo_step(qtbot, window: MainWindow) -> None:
    assert window.project is not None
    catalog = window.project.catalog
    catalog.decide([5], "Pick", flag="pick")  # the artist's word stands
    window.model.refresh_decisions([5])
    window.reject_flagged_action.trigger()
    decisions = catalog.decisions()
    assert [i for i, d in decisions.items() if d.reject_reason == "off-prompt"] == [1, 4, 6]
    assert decisions[5].flag == "pick"
    assert "Rejected 3 flagged images as off-prompt" in window.statusBar().currentMessage()
    press(qtbot, window, Qt.Key_Z, Qt.ControlModifier)
    assert all(catalog.decision(i).flag == "none" for i in (1, 4, 6))
    assert catalog.decision(5).flag == "pick"


# -- stacks ------------------------------------------------------------------------------------


def test_stacks_collapse_to_the_best_and_s_toggles(qtbot, window: MainWindow) -> None:
    QAbstractItemModelTester(window.model, QAbstractItemModelTester.FailureReportingMode.Fatal)
    assert rows(window) == [3, 4, 5, 6, 7, 8]
    model = window.model
    top = model.data(model.index(0), StackRole)
    assert (top.size, top.position, top.expanded) == (3, 1, False)
    focus(window, 3)
    press(qtbot, window, Qt.Key_S)
    assert rows(window) == [3, 1, 2, 4, 5, 6, 7, 8]
    member = model.data(model.index(2), StackRole)
    assert (member.position, member.expanded) == (3, True)
    focus(window, 2)
    press(qtbot, window, Qt.Key_S)  # S on a member closes the stack, focus on its top
    assert rows(window) == [3, 4, 5, 6, 7, 8]
    assert window.current_id() == 3
    focus(window, 7)
    press(qtbot, window, Qt.Key_S)
    assert rows(window) == [3, 4, 5, 6, 7, 8]
    assert "no stack" in window.statusBar().currentMessage()
    # A star makes 1 the best: it becomes the top once the grid is arranged again.
    assert window.project is not None
    window.project.catalog.decide([1], "1 star", stars=1)
    window.model.refresh_decisions([1])
    window.set_filter(window.filters.current_filter())
    assert rows(window)[0] == 1
    # View > Collapse Duplicate Stacks off shows every image, and is remembered.
    window.collapse_action.trigger()
    assert rows(window) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert window.project.catalog.get_setting("collapse_stacks") is False


def test_keep_the_best_of_each_stack_in_one_undo_step(qtbot, window: MainWindow) -> None:
    assert window.project is not None
    catalog = window.project.catalog
    window.keep_best_action.trigger()
    decisions = catalog.decisions()
    assert [i for i, d in decisions.items() if d.reject_reason == "not-best"] == [1, 2]
    assert decisions[3].flag == "none"
    assert "rejected 2 images as not best" in window.statusBar().currentMessage()
    window.undo_action.trigger()
    assert all(catalog.decision(i).flag == "none" for i in (1, 2))


# -- look-alike tools --------------------------------------------------------------------------


def test_lookalike_sort_follows_the_picks_then_the_selection(qtbot, window: MainWindow) -> None:
    window.collapse_action.setChecked(False)
    focus(window, 6)
    press(qtbot, window, Qt.Key_P)
    window.filters.sort.setCurrentText("look-alike")
    order = rows(window)
    assert order[:2] == [6, 5] and order[-1] == 4  # no face, no embedding: last
    window.filters.descending.setChecked(True)  # least alike first
    assert rows(window)[-2:] == [6, 4]
    window.filters.descending.setChecked(False)

    focus(window, 7)  # selects 7 alone
    press(qtbot, window, Qt.Key_S, Qt.ControlModifier | Qt.ShiftModifier)
    order = rows(window)
    assert order[0] == 7 and set(order[1:4]) == {1, 2, 3}
    assert "similarity to 1 selected image" in window.statusBar().currentMessage()
    assert window.filters.sort.currentText() == "look-alike"


def test_the_info_panel_shows_the_lookalike_score(qtbot, window: MainWindow) -> None:
    focus(window, 7)
    text = window.info.text.toPlainText()
    assert "Flags" in text and "pick images to compare" in text
    focus(window, 3)
    press(qtbot, window, Qt.Key_P)
    focus(window, 7)
    text = window.info.text.toPlainText()
    assert "Look-alike" in text and "1.00" in text  # 7 and 3 are nearly the same face
    focus(window, 6)
    assert "0.05" in window.info.text.toPlainText() or "0.0" in window.info.text.toPlainText()


def test_identity_groups_are_collections(qtbot, window: MainWindow) -> None:
    labels = [
        window.filters.views.item(r).text().strip() for r in range(window.filters.views.count())
    ]
    assert labels[-2:] == ["Identity 1 (4)", "Identity 2 (2)"]
    window.filters.views.setCurrentRow(window.filters.views.count() - 1)
    assert rows(window) == [5, 6]
    assert window.model.image_filter.identity == 2
    # A stricter threshold splits the groups; the chosen one is gone, so all images show.
    window.filters.identity_slider.setValue(20)
    labels = [
        window.filters.views.item(r).text().strip() for r in range(window.filters.views.count())
    ]
    assert "Identity 2 (2)" not in labels
    assert window.model.image_filter.identity in (None, 1)
    assert window.project is not None
    assert window.project.catalog.get_setting("identity_distance") == 0.2


def test_without_embeddings_the_lookalike_tools_say_what_they_need(
    qtbot, tmp_path: Path, project_root: Path
) -> None:
    window = open_window(qtbot, tmp_path, analyzed(project_root, embeddings=False))
    try:
        assert not window.similar_action.isEnabled()
        sort_model = window.filters.sort.model()
        assert not sort_model.item(window.filters.sort.findText("look-alike")).isEnabled()
        assert not window.filters.identity_slider.isEnabled()
        assert "weights" in window.filters.lookalike_note.text()
        assert window.filters.weights_button.isVisibleTo(window.filters)
        focus(window, 7)
        assert "needs the face recognition weights" in window.info.text.toPlainText()
        # Flags and stacks work without embeddings.
        assert rows(window)[0] == 3
        window.filters.weights_button.click()
        assert window.analysis.dialog is not None and window.analysis.dialog.isVisible()
        window.analysis.dialog.close()
    finally:
        window.close()


# -- the weights dialog ------------------------------------------------------------------------


def test_weights_download_shows_progress_and_succeeds(qtbot, tmp_path: Path) -> None:
    halfway = threading.Event()
    go_on = threading.Event()

    def fake_download(dest: Path, *, progress, cancel: CancelToken) -> Path:
        progress(50 * 2**20, 100 * 2**20)
        halfway.set()
        go_on.wait(10)
        progress(100 * 2**20, 100 * 2**20)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(b"weights")
        return dest

    dest = tmp_path / "w.pt"
    dialog = FaceWeightsDialog(download=fake_download, dest=dest)
    qtbot.addWidget(dialog)
    assert "Not installed" in dialog.location.text()
    with qtbot.waitSignal(dialog.weightsInstalled, timeout=10000) as installed:
        dialog.download_button.click()
        qtbot.waitUntil(lambda: dialog.progress.value() == 50 * 1024)
        assert "50.0 of 100.0 MiB" in dialog.status.text()
        assert dialog.cancel_button.isEnabled() and not dialog.download_button.isEnabled()
        go_on.set()
    assert installed.args == [str(dest)]
    assert "verified" in dialog.status.text()
    assert dialog.download_button.isEnabled() and not dialog.cancel_button.isEnabled()


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (urllib.error.URLError("Name or service not known"), "internet connection"),
        (WeightsChecksumError("the download has sha256 abc"), "Checksum mismatch"),
    ],
)
def test_weights_download_failures_read_clearly(
    qtbot, tmp_path: Path, error: Exception, expected: str
) -> None:
    def failing(dest: Path, *, progress, cancel: CancelToken) -> Path:
        progress(1024, None)
        raise error

    dialog = FaceWeightsDialog(download=failing, dest=tmp_path / "w.pt")
    qtbot.addWidget(dialog)
    installed: list[str] = []
    dialog.weightsInstalled.connect(installed.append)
    dialog.download_button.click()
    qtbot.waitUntil(lambda: expected in dialog.status.text())
    qtbot.waitUntil(lambda: not dialog.busy())
    assert installed == [] and not (tmp_path / "w.pt").exists()
    assert dialog.download_button.isEnabled()


def test_weights_download_can_be_canceled(qtbot, tmp_path: Path) -> None:
    def slow(dest: Path, *, progress, cancel: CancelToken) -> Path:
        for done in range(1000):
            cancel.raise_if_canceled()
            progress(done * 2**20, 1000 * 2**20)
            threading.Event().wait(0.01)
        raise AssertionError("not canceled")

    dialog = FaceWeightsDialog(download=slow, dest=tmp_path / "w.pt")
    qtbot.addWidget(dialog)
    dialog.download_button.click()
    qtbot.waitUntil(lambda: dialog.progress.value() > 0)
    dialog.cancel_button.click()
    qtbot.waitUntil(lambda: "Canceled" in dialog.status.text())


def test_choosing_a_file_checks_its_checksum(qtbot, tmp_path: Path, monkeypatch) -> None:
    import hashlib

    copy = tmp_path / "vggface2.pt"
    copy.write_bytes(b"someone's weights" * 100)
    dest = tmp_path / "cache" / "w.pt"
    dialog = FaceWeightsDialog(dest=dest)
    qtbot.addWidget(dialog)
    dialog.choose_file(copy)
    qtbot.waitUntil(lambda: "Checksum mismatch" in dialog.status.text())
    assert "CHARSTUDIO_FACE_WEIGHTS" in dialog.status.text() and not dest.exists()
    qtbot.waitUntil(lambda: not dialog.busy())

    digest = hashlib.sha256(copy.read_bytes()).hexdigest()
    monkeypatch.setattr("charstudio.analysis.weights.EXPECTED_SHA256", digest)
    with qtbot.waitSignal(dialog.weightsInstalled, timeout=10000):
        dialog.choose_file(copy)
    assert dest.read_bytes() == copy.read_bytes()
    assert "verified" in dialog.status.text()


# -- the background job ------------------------------------------------------------------------


def fake_analyze(embeddings: bool = True, gate: threading.Event | None = None) -> Any:
    """An ``analyze`` job kind that stores the synthetic analyses instead of detecting."""

    def factory(project: Project, params: dict, cancel: CancelToken, job_id: int) -> Any:
        analyses = synthetic(project, embeddings=embeddings)
        clock = ProgressClock(len(analyses))
        yield clock(0, "start")
        for done in range(1, len(analyses) + 1):
            if gate is not None and done == 2:
                gate.wait(10)
            if cancel.canceled:  # like the real job: keep what was finished, stop
                save_analyses(project.catalog, analyses[: done - 1])
                return {"analyzed": done - 1, "failed": [], "canceled": True}
            yield clock(done, f"image {done}")
        save_analyses(project.catalog, analyses)
        return {"analyzed": len(analyses), "failed": [], "canceled": False}

    return factory


def test_an_import_queues_an_analysis_that_fills_the_badges(
    qtbot, tmp_path: Path, make_png, monkeypatch
) -> None:
    monkeypatch.setitem(BUILTIN_KINDS, "analyze", fake_analyze(embeddings=False))
    Project.create(tmp_path / "proj", "Anna").close()
    for n in range(8):
        make_png(tmp_path / "out" / f"{n:02}.png", seed=n)
    window = open_window(qtbot, tmp_path, tmp_path / "proj")
    try:
        window.analysis.settle_ms = 0
        assert window.queue_worker is not None
        window.start_import([tmp_path / "out"])
        assert window.project is not None
        project = window.project
        qtbot.waitUntil(
            lambda: any(j.kind == "analyze" for j in JobQueue(project).jobs()), timeout=20000
        )
        qtbot.waitUntil(lambda: "Faces analyzed: 8 images" in window.analysis.status.label.text())
        qtbot.waitUntil(lambda: len(window.model.analysis) == 8)
        row = window.model.row_of(4)
        assert row is not None
        assert window.model.data(window.model.index(row), FaceBadgesRole) == ["no face"]
        assert rows(window)[0] == 3  # the stack collapsed
        # Nothing is stale now: Analyze Faces says so instead of queueing.
        assert window.analysis.analyze_now() is None
        assert "up to date" in window.statusBar().currentMessage()
        assert [j.kind for j in JobQueue(project).jobs()] == ["import", "analyze"]
    finally:
        window.close()


def test_analysis_progress_is_in_the_status_bar_and_cancels(
    qtbot, tmp_path: Path, project_root: Path, monkeypatch
) -> None:
    gate = threading.Event()
    monkeypatch.setitem(BUILTIN_KINDS, "analyze", fake_analyze(gate=gate))
    window = open_window(qtbot, tmp_path, project_root)  # nothing analyzed yet
    try:
        assert window.queue_worker is not None
        with qtbot.waitSignal(window.queue_worker.jobFinished, timeout=20000) as finished:
            window.analyze_action.trigger()
            status = window.analysis.status
            # The worker passes on at most one event per 50 ms: 0/8 or 1/8 is showing.
            qtbot.waitUntil(lambda: "/8 · ETA" in status.label.text())
            assert status.label.text().startswith("Analyzing faces ")
            assert status.isVisible() and status.cancel_button.isVisible()
            assert status.bar.maximum() == 8 and status.bar.value() in (0, 1)
            status.cancel_button.click()
            gate.set()
        assert finished.args[0].status == "canceled"
        assert "canceled" in window.analysis.status.label.text()
        assert len(window.model.analysis) <= 1  # what finished before the cancel, no more
    finally:
        window.close()


def test_weights_arriving_queue_an_analysis_for_the_embeddings(
    qtbot, tmp_path: Path, project_root: Path, monkeypatch
) -> None:
    monkeypatch.setitem(BUILTIN_KINDS, "analyze", fake_analyze(embeddings=True))

    def fake_download(dest: Path, *, progress, cancel: CancelToken) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(b"weights")
        return dest

    window = open_window(qtbot, tmp_path, analyzed(project_root, embeddings=False))
    try:
        assert not window.similar_action.isEnabled()
        window.analysis.download = fake_download
        window.weights_action.trigger()
        dialog = window.analysis.dialog
        assert dialog is not None
        dialog.download_button.click()
        qtbot.waitUntil(lambda: window.similar_action.isEnabled(), timeout=20000)
        assert window.filters.lookalike_note.isHidden()
    finally:
        window.close()
