"""The loupe, compare and survey views: off-thread loading, stepping, zoom and pan, linked
panes, overlays, and the keys they leave to the main window."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QImage, QKeyEvent, QMouseEvent, QWheelEvent
from PySide6.QtWidgets import QApplication, QWidget

from charstudio.ui.canvas_overlays import parameter_lines
from charstudio.ui.image_canvas import ImageCanvas, Overlay, ViewState
from charstudio.ui.loupe import LoupeItem, LoupeView
from charstudio.ui.survey import SurveyView, grid_shape

pytestmark = pytest.mark.gui

# Set to a folder to keep copies of the screenshots the last test renders.
SCREENSHOT_DIR = os.environ.get("CHARSTUDIO_SCREENSHOT_DIR")


def portrait(path: Path, size: tuple[int, int] = (512, 512), seed: int = 0) -> Path:
    """A crude face on a grey background, a little different for every seed."""
    rng = random.Random(seed)
    w, h = size
    image = Image.new("RGB", size, (118 + rng.randint(0, 20),) * 3)
    draw = ImageDraw.Draw(image)
    dx, dy = rng.uniform(-0.06, 0.06) * w, rng.uniform(-0.04, 0.04) * h
    hair = rng.choice([(30, 24, 22), (60, 40, 28), (20, 20, 20)])
    draw.ellipse([0.26 * w + dx, 0.12 * h + dy, 0.74 * w + dx, 0.72 * h + dy], fill=hair)
    draw.ellipse([0.31 * w + dx, 0.2 * h + dy, 0.69 * w + dx, 0.78 * h + dy], fill=(226, 188, 160))
    for ex in (0.41, 0.59):
        cx, cy = ex * w + dx, 0.44 * h + dy
        draw.ellipse([cx - 0.04 * w, cy - 0.02 * h, cx + 0.04 * w, cy + 0.02 * h], fill="white")
        draw.ellipse([cx - 0.015 * w, cy - 0.015 * h, cx + 0.015 * w, cy + 0.015 * h], fill=hair)
    draw.arc(
        [0.43 * w + dx, 0.56 * h + dy, 0.57 * w + dx, 0.66 * h + dy], 20, 160, (150, 60, 60), 3
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


INFO = {
    "name": "00012-4240233169.png",
    "seed": "4240233169",
    "sampler": "DPM++ 2M",
    "schedule": "Karras",
    "steps": "30",
    "cfg": "7",
    "size": "512x512",
    "model": "v1-5-pruned-emaonly",
    "sweep": "X: an extreme closeup · Y: front shot",
    "prompt": "an extreme closeup front shot photo of a 25yo French woman with freckles, chin "
    "length straight black hair in a bob cut with bangs, (neutral gray background:1.3), "
    "neutral face expression, natural skin texture, soft studio light",
    "negative_prompt": "jewellery, clothes, earrings, (blurry:1.2), lowres, deformed iris",
}


def make_items(tmp_path: Path, count: int, size: tuple[int, int] = (1200, 900)) -> list[LoupeItem]:
    return [
        LoupeItem(100 + n, str(portrait(tmp_path / f"{n:03}.png", size, seed=n)), dict(INFO))
        for n in range(count)
    ]


def wheel(widget: QWidget, pos: QPointF, notches: float, shift: bool = False) -> None:
    modifiers = Qt.ShiftModifier if shift else Qt.NoModifier
    event = QWheelEvent(
        pos,
        widget.mapToGlobal(pos),
        QPoint(),
        QPoint(0, round(120 * notches)),
        Qt.NoButton,
        modifiers,
        Qt.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(widget, event)


def drag(widget: QWidget, start: QPointF, end: QPointF, shift: bool = False) -> None:
    modifiers = Qt.ShiftModifier if shift else Qt.NoModifier
    steps = [
        (QEvent.MouseButtonPress, start, Qt.LeftButton),
        (QEvent.MouseMove, (start + end) / 2, Qt.LeftButton),
        (QEvent.MouseMove, end, Qt.LeftButton),
        (QEvent.MouseButtonRelease, end, Qt.NoButton),
    ]
    for kind, pos, buttons in steps:
        button = Qt.NoButton if kind == QEvent.MouseMove else Qt.LeftButton
        event = QMouseEvent(kind, pos, widget.mapToGlobal(pos), button, buttons, modifiers)
        QApplication.sendEvent(widget, event)


def close_to(a: QPointF, b: QPointF, tolerance: float = 1e-6) -> bool:
    return abs(a.x() - b.x()) <= tolerance and abs(a.y() - b.y()) <= tolerance


def assert_not_blank(image: QImage) -> None:
    assert not image.isNull()
    colours = {
        image.pixel(x, y) for x in range(0, image.width(), 5) for y in range(0, image.height(), 5)
    }
    assert len(colours) > 30


@pytest.fixture
def loupe(qtbot):
    view = LoupeView()
    qtbot.addWidget(view)
    view.resize(400, 300)
    view.show()
    qtbot.waitExposed(view)
    yield view
    view.loader.wait()


@pytest.fixture
def survey(qtbot):
    view = SurveyView()
    qtbot.addWidget(view)
    view.resize(800, 400)
    view.show()
    qtbot.waitExposed(view)
    yield view
    view.loader.wait()


def loaded(canvas: ImageCanvas) -> bool:
    return canvas.has_image()


# -- the loupe -----------------------------------------------------------------------------


def test_loupe_shows_the_current_image_once_decoded(loupe: LoupeView, qtbot, tmp_path) -> None:
    items = make_items(tmp_path, 3)
    loupe.set_items(items, 1)
    assert loupe.current_key() == 101
    qtbot.waitUntil(lambda: loaded(loupe.canvas))
    assert loupe.canvas.key() == 101
    assert (loupe.canvas.image().width(), loupe.canvas.image().height()) == (1200, 900)
    assert loupe.canvas.view_state().fit
    assert loupe.canvas.fit_scale() == pytest.approx(1 / 3)


def test_arrows_step_and_announce_the_current_key(loupe: LoupeView, qtbot, tmp_path) -> None:
    loupe.set_items(make_items(tmp_path, 3), 0)
    with qtbot.waitSignal(loupe.currentChanged) as blocker:
        qtbot.keyClick(loupe, Qt.Key_Right)
    assert blocker.args == [101]
    assert loupe.current_key() == 101
    with qtbot.waitSignal(loupe.currentChanged) as blocker:
        qtbot.keyClick(loupe, Qt.Key_Left)
    assert blocker.args == [100]
    with qtbot.assertNotEmitted(loupe.currentChanged):
        qtbot.keyClick(loupe, Qt.Key_Left)  # already the first
    assert loupe.current_key() == 100
    assert loupe.go(5) and loupe.current_key() == 102  # clamped at the end


def test_neighbours_are_decoded_ahead(loupe: LoupeView, qtbot, tmp_path) -> None:
    loupe.set_items(make_items(tmp_path, 5), 2)
    qtbot.waitUntil(lambda: all(loupe.loader.is_cached(k) for k in (101, 102, 103)))
    assert not loupe.loader.is_cached(104)
    qtbot.keyClick(loupe, Qt.Key_Right)
    # Shown at once, without waiting for a decode.
    assert loupe.canvas.key() == 103 and loaded(loupe.canvas)
    qtbot.waitUntil(lambda: loupe.loader.is_cached(104))


def test_z_toggles_fit_and_one_to_one_about_the_anchor(loupe: LoupeView, qtbot, tmp_path) -> None:
    loupe.set_items(make_items(tmp_path, 2), 0)
    canvas = loupe.canvas
    qtbot.waitUntil(lambda: loaded(canvas))
    assert canvas.image_rect().getRect() == pytest.approx((0, 0, 400, 300))

    # Z with the mouse elsewhere zooms about the centre of the view.
    centre = QPointF(200, 150)
    with qtbot.waitSignal(canvas.viewChanged) as blocker:
        qtbot.keyClick(loupe, Qt.Key_Z)
    assert blocker.args[0] == ViewState(False, 1.0, 0.5, 0.5)
    assert close_to(canvas.map_to_image(centre), QPointF(600, 450))
    qtbot.keyClick(loupe, Qt.Key_Z)
    assert canvas.view_state().fit

    # At fit scale 1/3, widget point (150, 100) shows image pixel (450, 300); at 1:1 it
    # still does.
    anchor = QPointF(150, 100)
    assert close_to(canvas.map_to_image(anchor), QPointF(450, 300))
    canvas.toggle_fit_1to1(anchor)
    state = canvas.view_state()
    assert not state.fit and state.scale == 1.0
    assert close_to(canvas.map_to_image(anchor), QPointF(450, 300))
    assert (state.cx, state.cy) == pytest.approx((500 / 1200, 350 / 900))
    canvas.toggle_fit_1to1(anchor)
    assert canvas.view_state().fit

    # Double-click does the same.
    qtbot.mouseDClick(canvas, Qt.LeftButton, pos=QPoint(300, 200))
    assert canvas.scale() == 1.0
    assert close_to(canvas.map_to_image(QPointF(300, 200)), QPointF(900, 600))


def test_wheel_zooms_about_the_cursor_within_limits(loupe: LoupeView, qtbot, tmp_path) -> None:
    loupe.set_items(make_items(tmp_path, 1), 0)
    canvas = loupe.canvas
    qtbot.waitUntil(lambda: loaded(canvas))
    cursor = QPointF(100, 80)
    point = canvas.map_to_image(cursor)
    assert close_to(point, QPointF(300, 240))
    wheel(canvas, cursor, 1)
    assert canvas.scale() == pytest.approx(1.25 / 3)
    assert close_to(canvas.map_to_image(cursor), point)
    wheel(canvas, cursor, 2)
    assert canvas.scale() == pytest.approx(1.25**3 / 3)
    assert close_to(canvas.map_to_image(cursor), point)
    wheel(canvas, cursor, -30)
    assert canvas.scale() == pytest.approx(1 / 6)  # half the fit scale
    wheel(canvas, cursor, 40)
    assert canvas.scale() == 16


def test_drag_pans_the_zoomed_image(loupe: LoupeView, qtbot, tmp_path) -> None:
    loupe.set_items(make_items(tmp_path, 1), 0)
    canvas = loupe.canvas
    qtbot.waitUntil(lambda: loaded(canvas))
    drag(canvas, QPointF(200, 150), QPointF(150, 130))
    assert canvas.view_state().fit  # nothing to pan in fit

    canvas.toggle_fit_1to1()
    start, end = QPointF(200, 150), QPointF(150, 130)
    grabbed = canvas.map_to_image(start)
    with qtbot.waitSignal(canvas.viewChanged):
        drag(canvas, start, end)
    state = canvas.view_state()
    assert (state.cx, state.cy) == pytest.approx((0.5 + 50 / 1200, 0.5 + 20 / 900))
    assert close_to(canvas.map_to_image(end), grabbed)  # the image followed the hand

    # Panning stops at the edge of the image instead of showing empty space.
    drag(canvas, QPointF(0, 0), QPointF(3000, 3000))
    assert canvas.image_rect().topLeft() == QPointF(0, 0)


def test_zoom_is_kept_while_stepping(loupe: LoupeView, qtbot, tmp_path) -> None:
    loupe.set_items(make_items(tmp_path, 3), 0)
    qtbot.waitUntil(lambda: loaded(loupe.canvas))
    loupe.canvas.toggle_fit_1to1(QPointF(150, 100))
    before = loupe.canvas.view_state()
    qtbot.keyClick(loupe, Qt.Key_Right)
    qtbot.waitUntil(lambda: loaded(loupe.canvas))
    assert loupe.canvas.key() == 101
    assert loupe.canvas.view_state() == before


def test_i_cycles_the_three_overlays(loupe: LoupeView, qtbot, tmp_path) -> None:
    loupe.set_items(make_items(tmp_path, 1), 0)
    modes = []
    for _ in range(3):
        qtbot.keyClick(loupe, Qt.Key_I)
        modes.append(loupe.canvas.overlay_mode())
        loupe.grab()  # paints every mode
    assert modes == [Overlay.PARAMETERS, Overlay.PROMPT, Overlay.NONE]


def test_parameter_lines_follow_a1111_order() -> None:
    lines = parameter_lines(INFO | {"clip_skip": "2"})
    assert lines[:3] == ["00012-4240233169.png", "Seed: 4240233169", "Sampler: DPM++ 2M Karras"]
    assert "Sweep: X: an extreme closeup · Y: front shot" in lines
    assert lines[-1] == "Clip skip: 2"
    assert not any("French woman" in line for line in lines)
    assert parameter_lines({"name": "a.png", "summary": "one\ntwo"}) == ["a.png", "one", "two"]


def test_escape_asks_to_close(loupe: LoupeView, qtbot, tmp_path) -> None:
    loupe.set_items(make_items(tmp_path, 1), 0)
    with qtbot.waitSignal(loupe.closeRequested):
        qtbot.keyClick(loupe, Qt.Key_Escape)


class KeyRecorder(QWidget):
    def __init__(self) -> None:
        super().__init__()
        self.keys: list[int] = []

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() not in (Qt.Key_Control, Qt.Key_Shift):  # QTest presses these too
            self.keys.append(event.key())


@pytest.mark.parametrize("view_class", [LoupeView, SurveyView])
def test_culling_keys_reach_the_parent(view_class, qtbot, tmp_path) -> None:
    parent = KeyRecorder()
    qtbot.addWidget(parent)
    view = view_class(parent=parent)
    items = make_items(tmp_path, 2)
    if isinstance(view, LoupeView):
        view.set_items(items, 0)
    else:
        view.set_items(items)
    for key in (Qt.Key_P, Qt.Key_X, Qt.Key_3, Qt.Key_Z, Qt.Key_I):
        qtbot.keyClick(view, key)
    qtbot.keyClick(view, Qt.Key_Z, Qt.ControlModifier)  # undo belongs to the window
    assert parent.keys == [Qt.Key_P, Qt.Key_X, Qt.Key_3, Qt.Key_Z]
    view.loader.wait()


def test_a_missing_file_shows_the_missing_state(loupe: LoupeView, qtbot, tmp_path) -> None:
    items = make_items(tmp_path, 2)
    items.insert(1, LoupeItem(7, str(tmp_path / "gone.png"), {"name": "gone.png"}))
    loupe.set_items(items, 1)
    assert loupe.canvas.is_loading()
    qtbot.waitUntil(loupe.canvas.is_missing)
    assert not loupe.canvas.has_image()
    qtbot.keyClick(loupe, Qt.Key_Z)
    qtbot.keyClick(loupe, Qt.Key_I)
    wheel(loupe.canvas, QPointF(10, 10), 1)
    drag(loupe.canvas, QPointF(10, 10), QPointF(50, 50))
    image = loupe.grab().toImage()  # the "missing file" text is painted
    assert len({image.pixel(x, 150) for x in range(image.width())}) > 1
    qtbot.keyClick(loupe, Qt.Key_Right)
    qtbot.waitUntil(lambda: loaded(loupe.canvas))


def test_update_info_refreshes_the_badges(loupe: LoupeView, tmp_path) -> None:
    loupe.set_items(make_items(tmp_path, 2), 0)
    loupe.update_info(100, {"flag": "reject", "reject_reason": "off-prompt"})
    assert loupe.canvas.info()["flag"] == "reject"
    loupe.update_info(101, {"flag": "pick"})
    assert loupe.canvas.info()["flag"] == "reject"
    assert loupe.items()[1].info == {"flag": "pick"}


# -- compare and survey --------------------------------------------------------------------


def test_grid_shapes() -> None:
    assert [grid_shape(n) for n in range(1, 9)] == [
        (1, 1),
        (1, 2),
        (2, 2),
        (2, 2),
        (2, 3),
        (2, 3),
        (2, 4),
        (2, 4),
    ]


def test_compare_and_survey_panes(survey: SurveyView, qtbot, tmp_path) -> None:
    items = make_items(tmp_path, 10, size=(512, 512))
    survey.set_items(items[:2])
    assert survey.grid_shape() == (1, 2)
    left, right = survey.canvases()
    assert left.geometry().top() == right.geometry().top()
    assert left.geometry().right() < right.geometry().left()
    assert survey.focused_key() == 100 and left.is_focused() and not right.is_focused()

    survey.set_items(items)
    assert survey.keys() == [100 + n for n in range(8)]  # at most eight
    assert survey.grid_shape() == (2, 4)
    canvases = survey.canvases()
    assert canvases[0].geometry().top() == canvases[3].geometry().top()
    assert canvases[4].geometry().top() > canvases[0].geometry().bottom()
    qtbot.waitUntil(lambda: all(loaded(c) for c in survey.canvases()))


def test_linked_zoom_and_pan(survey: SurveyView, qtbot, tmp_path) -> None:
    survey.set_items(make_items(tmp_path, 4, size=(512, 512)))
    qtbot.waitUntil(lambda: all(loaded(c) for c in survey.canvases()))
    first, second, *rest = survey.canvases()
    wheel(first, QPointF(100, 60), 3)
    state = first.view_state()
    assert not state.fit
    assert all(c.view_state() == state for c in (second, *rest))

    # Shift moves one pane alone...
    drag(second, QPointF(100, 100), QPointF(80, 90), shift=True)
    moved = second.view_state()
    assert moved != state
    assert all(c.view_state() == state for c in (first, *rest))

    # ...and keeps its offset when the others pan together again.
    offset = (moved.cx - state.cx, moved.cy - state.cy)
    drag(first, QPointF(100, 100), QPointF(90, 95))
    panned = first.view_state()
    assert panned != state
    assert all(c.view_state() == panned for c in rest)
    now = second.view_state()
    assert (now.cx - panned.cx, now.cy - panned.cy) == pytest.approx(offset)

    # Shift+wheel changes one pane's zoom only.
    wheel(rest[0], QPointF(50, 50), 1, shift=True)
    assert rest[0].scale() == pytest.approx(panned.scale * 1.25)
    assert first.view_state() == panned

    # Z sends every pane back to fit, and I changes every overlay.
    qtbot.keyClick(survey, Qt.Key_Z)
    assert all(c.view_state().fit for c in survey.canvases())
    qtbot.keyClick(survey, Qt.Key_Z)
    assert all(c.scale() == 1.0 for c in survey.canvases())
    qtbot.keyClick(survey, Qt.Key_I)
    assert {c.overlay_mode() for c in survey.canvases()} == {Overlay.PARAMETERS}


def test_arrows_and_clicks_move_the_focus(survey: SurveyView, qtbot, tmp_path) -> None:
    survey.set_items(make_items(tmp_path, 8, size=(256, 256)))
    moves = [
        (Qt.Key_Right, 101),
        (Qt.Key_Down, 105),
        (Qt.Key_Left, 104),
        (Qt.Key_Up, 100),
    ]
    for key, expected in moves:
        with qtbot.waitSignal(survey.focusedChanged) as blocker:
            qtbot.keyClick(survey, key)
        assert blocker.args == [expected] and survey.focused_key() == expected
    with qtbot.assertNotEmitted(survey.focusedChanged):
        qtbot.keyClick(survey, Qt.Key_Up)
        qtbot.keyClick(survey, Qt.Key_Left)
    pane = survey.canvas(106)
    with qtbot.waitSignal(survey.focusedChanged) as blocker:
        qtbot.mouseClick(pane, Qt.LeftButton, pos=pane.rect().center())
    assert blocker.args == [106]
    assert pane.is_focused() and not survey.canvas(100).is_focused()
    with qtbot.waitSignal(survey.closeRequested):
        qtbot.keyClick(survey, Qt.Key_Escape)


def test_compare_has_select_and_candidate_roles(survey: SurveyView, qtbot, tmp_path) -> None:
    items = make_items(tmp_path, 4, size=(64, 64))
    survey.set_items(items[:2])
    select, candidate = survey.canvases()
    assert select.caption() == "Select · 00012-4240233169.png"
    assert candidate.caption().startswith("Candidate · ")
    # Right/Left ask the window for the grid's next/previous image as the candidate.
    with qtbot.waitSignal(survey.candidateStepRequested) as step:
        qtbot.keyClick(survey, Qt.Key_Right)
    assert step.args == [1]
    survey.replace_candidate(items[2])
    assert survey.keys() == [100, 102] and survey.focused_key() == 102
    assert survey.canvases()[1].caption().startswith("Candidate · ")
    # Up makes the candidate the select and asks for the next candidate; Down swaps.
    with qtbot.waitSignal(survey.candidateStepRequested) as step:
        qtbot.keyClick(survey, Qt.Key_Up)
    assert step.args == [1] and survey.keys() == [102, 100]
    assert survey.canvases()[0].caption().startswith("Select · ")
    qtbot.keyClick(survey, Qt.Key_Down)
    assert survey.keys() == [100, 102]
    # Survey panes show the file name without roles.
    survey.set_items(items)
    assert all("Select" not in c.caption() and c.caption() for c in survey.canvases())


def test_removing_a_rejected_image_reflows(survey: SurveyView, qtbot, tmp_path) -> None:
    survey.set_items(make_items(tmp_path, 5, size=(256, 256)), focused_key=101)
    assert survey.grid_shape() == (2, 3)
    with qtbot.waitSignal(survey.focusedChanged) as blocker:
        survey.remove_key(101)
    assert blocker.args == [102]  # the image that took its place
    assert survey.keys() == [100, 102, 103, 104]
    assert survey.grid_shape() == (2, 2)
    assert survey.canvas(101) is None and survey.canvas(102).is_focused()
    assert survey.canvas(103).geometry().left() == survey.canvas(100).geometry().left()

    with qtbot.assertNotEmitted(survey.focusedChanged):
        survey.remove_key(100)  # not focused: the focus stays
    assert survey.focused_key() == 102
    survey.set_focused_key(104)
    with qtbot.waitSignal(survey.focusedChanged) as blocker:
        survey.remove_key(104)  # the last one: the focus goes back
    assert blocker.args == [103]
    survey.remove_key(102)
    survey.remove_key(103)
    assert survey.keys() == [] and survey.focused_key() is None
    survey.grab()


def test_update_info_in_the_survey(survey: SurveyView, tmp_path) -> None:
    survey.set_items(make_items(tmp_path, 2, size=(64, 64)))
    survey.update_info(101, {"flag": "pick", "stars": "3"})
    assert survey.canvas(101).info() == {"flag": "pick", "stars": "3"}
    assert survey.canvas(100).info()["seed"] == "4240233169"


# -- how they look -------------------------------------------------------------------------


def test_screenshots(qtbot, tmp_path: Path) -> None:
    items = make_items(tmp_path / "images", 8, size=(512, 512))
    decisions = [
        {"flag": "pick", "stars": "4", "color": "green"},
        {"flag": "reject", "reject_reason": "off-prompt"},
        {"stars": "2"},
        {},
        {"flag": "pick", "stars": "5"},
        {"flag": "reject", "reject_reason": "poor-quality", "color": "red"},
        {"color": "blue"},
        {"flag": "pick"},
    ]
    for item, decision in zip(items, decisions, strict=True):
        item.info.update(decision)
        item.info["name"] = Path(item.path).name

    loupe = LoupeView()
    qtbot.addWidget(loupe)
    loupe.resize(900, 640)
    loupe.show()
    loupe.set_items(items, 0)
    qtbot.waitUntil(lambda: loaded(loupe.canvas))
    loupe.canvas.cycle_overlay()
    shots = {"loupe": loupe.grab().toImage()}
    loupe.canvas.cycle_overlay()
    loupe.canvas.toggle_fit_1to1(QPointF(400, 280))
    wheel(loupe.canvas, QPointF(400, 280), 4)  # past 2:1: nearest-neighbour pixels
    shots["loupe-prompt"] = loupe.grab().toImage()

    survey = SurveyView()
    qtbot.addWidget(survey)
    survey.resize(1280, 660)
    survey.show()
    survey.set_items(items, focused_key=102)
    qtbot.waitUntil(lambda: all(loaded(c) for c in survey.canvases()))
    survey.cycle_overlay()
    shots["survey"] = survey.grab().toImage()

    for name, image in shots.items():
        assert_not_blank(image)
        path = tmp_path / f"{name}.png"
        assert image.save(str(path))
        if SCREENSHOT_DIR:
            shutil.copy(path, Path(SCREENSHOT_DIR) / path.name)
    loupe.loader.wait()
    survey.loader.wait()
