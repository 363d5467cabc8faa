"""Decisions and their unlimited, persisted undo/redo history."""

from __future__ import annotations

from pathlib import Path

import pytest

from charstudio.catalog import Decision, ImageRecord, Project


@pytest.fixture
def project(tmp_path: Path):
    project = Project.create(tmp_path / "p", "Anna")
    for n in range(1, 6):
        project.catalog.add_image(
            ImageRecord(
                path=f"images/{n}.png",
                sha256=f"{n:064x}",
                file_size=1,
                file_mtime=0.0,
                width=8,
                height=8,
                format="PNG",
            )
        )
    yield project
    project.close()


def test_a_decision_applies_to_the_whole_selection(project: Project) -> None:
    project.catalog.decide([1, 2, 3], "pick", flag="pick")
    assert [project.catalog.decision(i).flag for i in (1, 2, 3, 4)] == [
        "pick",
        "pick",
        "pick",
        "none",
    ]
    assert project.catalog.decision_counts() == {"pick": 3, "reject": 0, "none": 2}


def test_reject_reason_implies_reject_and_picking_clears_it(project: Project) -> None:
    project.catalog.decide([1], "reject", reject_reason="off-prompt")
    assert project.catalog.decision(1) == Decision(flag="reject", reject_reason="off-prompt")
    project.catalog.decide([1], "pick", flag="pick")
    assert project.catalog.decision(1) == Decision(flag="pick")


def test_stars_and_colour_are_independent_of_the_flag(project: Project) -> None:
    project.catalog.decide([2], "stars", stars=4)
    project.catalog.decide([2], "label", color="green")
    project.catalog.decide([2], "reject", flag="reject")
    assert project.catalog.decision(2) == Decision(flag="reject", stars=4, color="green")


@pytest.mark.parametrize(
    "fields",
    [{"flag": "maybe"}, {"stars": 6}, {"color": "pink"}, {"reject_reason": "ugly"}],
)
def test_invalid_values_are_refused_and_nothing_changes(project: Project, fields) -> None:
    with pytest.raises(ValueError):
        project.catalog.decide([1, 2], "bad", **fields)
    assert project.catalog.decision(1) == Decision()


def test_unknown_image_is_refused_without_partial_changes(project: Project) -> None:
    with pytest.raises(KeyError):
        project.catalog.decide([1, 999], "pick", flag="pick")
    assert project.catalog.decision(1) == Decision()


def test_undo_and_redo_walk_the_history_without_limit(project: Project) -> None:
    catalog = project.catalog
    for stars in range(1, 6):  # five actions
        catalog.decide([1, 2], f"{stars} stars", stars=stars)
    for expected in (4, 3, 2, 1, 0):
        assert sorted(catalog.undo() or []) == [1, 2]
        assert catalog.decision(1).stars == expected
    assert catalog.undo() is None
    for expected in (1, 2, 3, 4, 5):
        catalog.redo()
        assert catalog.decision(2).stars == expected
    assert catalog.redo() is None


def test_a_new_decision_after_undo_discards_the_redo_branch(project: Project) -> None:
    catalog = project.catalog
    catalog.decide([1], "pick", flag="pick")
    catalog.decide([1], "stars", stars=3)
    catalog.undo()
    catalog.decide([1], "label", color="red")
    assert catalog.redo() is None
    assert catalog.decision(1) == Decision(flag="pick", color="red")


def test_a_no_op_decision_makes_no_history_entry(project: Project) -> None:
    catalog = project.catalog
    catalog.decide([3], "pick", flag="pick")
    assert catalog.decide([3], "pick", flag="pick") is None
    catalog.undo()
    assert catalog.decision(3).flag == "none"


def test_history_and_undo_survive_a_restart(project: Project, tmp_path: Path) -> None:
    project.catalog.decide([4], "pick", flag="pick")
    project.catalog.decide([4], "reject: off-look", reject_reason="off-look")
    project.close()
    with Project.open(tmp_path / "p") as reopened:
        history = reopened.catalog.decision_history(4)
        assert [h["label"] for h in history] == ["pick", "reject: off-look"]
        assert history[1]["before"]["flag"] == "pick"
        reopened.catalog.undo()
        assert reopened.catalog.decision(4).flag == "pick"
        assert [h["label"] for h in reopened.catalog.decision_history(4)] == ["pick"]
