"""Filters, sorting, stats, training sets and exporting picks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from charstudio.catalog import ImageRecord, Project
from charstudio.catalog.export import export_images
from charstudio.catalog.queries import ImageFilter
from charstudio.cli import main
from charstudio.jobs import run_job

X = ["an extreme closeup", "a medium closeup", "a closeup"]
Y = ["front shot", "side angle", "low angle shot"]


@pytest.fixture
def project(tmp_path: Path):
    """Nine images, one per sweep cell, seeds descending so time and seed orders differ."""
    with Project.create(tmp_path / "p", "Anna") as project:
        n = 0
        for y in Y:
            for x in X:
                n += 1
                project.catalog.add_image(
                    ImageRecord(
                        path=f"images/{n}.png",
                        sha256=f"{n:064x}",
                        file_size=1,
                        file_mtime=0.0,
                        width=8,
                        height=8,
                        format="PNG",
                        prompt=f"{x} {y} photo of a woman",
                        seed=100 - n,
                        sweep={"X": x, "Y": y},
                        added_at=f"2026-11-01T00:00:{n:02}",
                    )
                )
        yield project


def ids(project: Project, **kwargs) -> list[int]:
    return project.catalog.filtered_ids(ImageFilter(**kwargs))


def test_views_by_flag_and_reason(project: Project) -> None:
    catalog = project.catalog
    catalog.decide([1, 2], "pick", flag="pick")
    catalog.decide([3], "reject", reject_reason="off-prompt")
    catalog.decide([4], "reject", reject_reason="poor-quality")
    assert ids(project, view="picked") == [1, 2]
    assert ids(project, view="rejected") == [3, 4]
    assert ids(project, view="rejected", reject_reason="poor-quality") == [4]
    assert ids(project, view="unreviewed") == [5, 6, 7, 8, 9]
    assert len(ids(project)) == 9


def test_stars_colour_sweep_and_text(project: Project) -> None:
    project.catalog.decide([2, 5], "3 stars", stars=3)
    project.catalog.decide([5], "5 stars", stars=5)
    project.catalog.decide([7], "green", color="green")
    assert ids(project, min_stars=3) == [2, 5]
    assert ids(project, min_stars=4) == [5]
    assert ids(project, color="green") == [7]
    assert ids(project, sweep={"Y": "side angle"}) == [4, 5, 6]
    assert ids(project, sweep={"Y": "side angle", "X": "a closeup"}) == [6]
    assert ids(project, text="LOW angle") == [7, 8, 9]
    assert ids(project, text="100%") == []  # LIKE wildcards are literal


def test_sorting(project: Project) -> None:
    assert ids(project, sort="seed") == [9, 8, 7, 6, 5, 4, 3, 2, 1]
    assert ids(project, sort="time", descending=True) == [9, 8, 7, 6, 5, 4, 3, 2, 1]
    project.catalog.decide([6], "5", stars=5)
    project.catalog.decide([2], "2", stars=2)
    assert ids(project, sort="stars", descending=True)[:2] == [6, 2]


def test_filter_survives_as_json_and_bad_values_fall_back(project: Project) -> None:
    f = ImageFilter(view="rejected", reject_reason="off-look", sweep={"X": "a closeup"})
    project.catalog.set_setting("filter", f.to_json())
    assert ImageFilter.from_json(project.catalog.get_setting("filter")) == f
    assert ImageFilter.from_json({"view": "nonsense"}) == ImageFilter()
    assert ImageFilter.from_json(None) == ImageFilter()


def test_sweep_axes_are_listed_in_order(project: Project) -> None:
    assert project.catalog.sweep_axes() == {"X": X, "Y": Y}


def test_stats_and_training_set(project: Project) -> None:
    project.catalog.decide([1, 2, 3], "pick", flag="pick")
    project.catalog.decide([4, 5], "reject", reject_reason="off-look")
    project.catalog.decide([6], "reject", flag="reject")
    assert project.catalog.stats() == {
        "total": 9,
        "picked": 3,
        "rejected": 3,
        "unreviewed": 3,
        "rejected_by_reason": {
            "off-prompt": 0,
            "poor-quality": 0,
            "off-look": 2,
            "not-best": 0,
            "unspecified": 1,
        },
        "training_set": 0,
    }
    assert ids(project, view="training") == []
    set_id = project.catalog.create_training_set("picks", ids(project, view="picked"))
    assert project.catalog.stats()["training_set"] == 3
    assert project.catalog.training_set() == (set_id, [1, 2, 3])
    project.catalog.decide([1], "unpick", flag="none")  # the set keeps what it was made of
    assert ids(project, view="training") == [1, 2, 3]


def test_export_copies_picks_with_captions(make_png, tmp_path: Path) -> None:
    with Project.create(tmp_path / "p", "Anna") as project:
        from charstudio.catalog.importer import import_images

        for n in range(3):
            make_png(project.images_dir / f"{n}.png", seed=n)
        (project.images_dir / "0.txt").write_text("fr3nchl4dy, woman, gray background")
        run_job(import_images(project, [project.images_dir]))
        dest = tmp_path / "out"
        dest.mkdir()
        (dest / "0.png").write_bytes(b"keep me")
        report = run_job(export_images(project, [1, 2], dest))
        assert (report.copied, report.captions, report.failed) == (2, 2, [])
        assert (dest / "0.png").read_bytes() == b"keep me"  # never overwritten
        assert (dest / "0-1.txt").read_text() == "fr3nchl4dy, woman, gray background"
        assert (dest / "0-1.png").read_bytes() == (project.images_dir / "0.png").read_bytes()
        assert (dest / "1.png").is_file()
        # No .txt beside it: the caption derived from its prompt (all of it the character).
        assert (dest / "1.txt").read_text() == project.token


def test_stats_and_decide_commands(project: Project, capsys) -> None:
    root = str(project.root)
    project.close()
    assert main(["decide", root, "1", "images/2.png", "--flag", "pick", "--stars", "4"]) == 0
    assert main(["decide", root, "3", "--reason", "off-prompt", "--json"]) == 0
    capsys.readouterr()
    assert main(["stats", root, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["picked"], stats["rejected"], stats["unreviewed"]) == (2, 1, 6)
    assert stats["rejected_by_reason"]["off-prompt"] == 1
    assert main(["decide", root, "999", "--flag", "pick"]) == 2
    assert "no image with id 999" in capsys.readouterr().err
    assert main(["decide", root, "1"]) == 2
