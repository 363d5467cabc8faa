"""Decisions and their unlimited, persisted undo/redo history."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from charstudio.catalog import Catalog, Decision, ImageRecord, Project
from charstudio.catalog.database import migrate_to
from charstudio.cli import main


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


# -- several sessions on one project (the app and a command, two windows) -----------------


@pytest.fixture
def other(project: Project):
    """A second session on the same project, as another process would open it."""
    catalog = Catalog(project.catalog.path)
    yield catalog
    catalog.close()


def test_another_sessions_decision_keeps_my_redo(project: Project, other: Catalog) -> None:
    mine = project.catalog
    mine.decide([1], "pick", flag="pick")
    assert mine.undo() == [1]
    other.decide([2], "reject", flag="reject")  # used to delete every undone action
    assert mine.redo() == [1]
    assert mine.decision(1).flag == "pick"
    assert other.decision(2).flag == "reject"
    assert [h["label"] for h in mine.decision_history(1)] == ["pick"]


def test_undo_takes_back_my_own_newest_action_not_another_sessions(
    project: Project, other: Catalog
) -> None:
    mine = project.catalog
    mine.decide([1], "my pick", flag="pick")
    other.decide([2], "their 5 stars", stars=5)
    step = mine.undo_step()
    assert step is not None and step.label == "my pick" and step.kept == []
    assert mine.undo() is None  # the other session's action is not mine to undo
    assert mine.decision(2).stars == 5
    assert [h["label"] for h in mine.decision_history(2)] == ["their 5 stars"]
    mine.decide([3], "my label", color="blue")  # my new action ends only my redo branch
    assert other.undo() == [2]
    assert other.redo() == [2]
    assert mine.redo() is None


def test_undo_keeps_a_newer_decision_made_elsewhere(project: Project, other: Catalog) -> None:
    mine = project.catalog
    mine.decide([1, 2], "pick", flag="pick")
    other.decide([1], "reject: off-look", reject_reason="off-look")
    step = mine.undo_step()
    assert step is not None and sorted(step.image_ids) == [1, 2] and step.kept == [1]
    assert "1 image kept a newer decision made elsewhere" in step.message("Undone")
    assert mine.decision(1) == Decision(flag="reject", reject_reason="off-look")  # theirs
    assert mine.decision(2) == Decision()  # mine, undone
    step = mine.redo_step()
    assert step is not None and step.kept == [1]
    assert mine.decision(1) == Decision(flag="reject", reject_reason="off-look")
    assert mine.decision(2).flag == "pick"


def test_undo_restores_only_the_parts_the_action_changed(project: Project, other: Catalog) -> None:
    mine = project.catalog
    mine.decide([1], "3 stars", stars=3)
    other.decide([1], "pick", flag="pick")  # another part of the same image
    step = mine.undo_step()
    assert step is not None and step.kept == []
    assert mine.decision(1) == Decision(flag="pick", stars=0)


def test_a_finished_command_can_be_undone_after_my_own_actions(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = project.catalog
    mine.decide([1], "pick", flag="pick")
    assert main(["decide", str(project.root), "2", "--stars", "4"]) == 0
    capsys.readouterr()
    assert mine.undo() == [1]  # my own first
    assert mine.undo() == [2]  # then the command's, which has ended
    assert mine.decision(2).stars == 0
    assert mine.redo() == [2]
    assert mine.decision(2).stars == 4


def test_a_catalog_from_before_sessions_upgrades_and_keeps_its_undo(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    migrate_to(conn, 5)
    conn.execute(
        "INSERT INTO images (id, path, sha256, file_size, file_mtime, width, height, format, "
        "added_at) VALUES (1, 'images/1.png', ?, 1, 0, 8, 8, 'PNG', 'then')",
        ("1" * 64,),
    )
    conn.execute(
        "INSERT INTO decisions (image_id, flag, stars, updated_at) VALUES (1, 'pick', 2, 'then')"
    )
    for n, (label, before, after) in enumerate(
        [
            ("pick", Decision(), Decision(flag="pick")),
            ("2 stars", Decision(flag="pick"), Decision(flag="pick", stars=2)),
        ],
        start=1,
    ):
        conn.execute(
            "INSERT INTO decision_actions (id, label, created_at) VALUES (?, ?, 'then')",
            (n, label),
        )
        conn.execute(
            "INSERT INTO decision_changes (action_id, image_id, before, after) VALUES (?, 1, ?, ?)",
            (n, json.dumps(before.as_dict()), json.dumps(after.as_dict())),
        )
    conn.commit()
    conn.close()
    with Catalog(path) as catalog:
        assert [h["label"] for h in catalog.decision_history(1)] == ["pick", "2 stars"]
        assert catalog.undo() == [1]
        assert catalog.decision(1) == Decision(flag="pick")
        assert catalog.redo() == [1]
        assert catalog.decision(1) == Decision(flag="pick", stars=2)
    assert (tmp_path / "old.sqlite.v5.bak").exists()
