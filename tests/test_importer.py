"""Importing files: metadata, duplicates, copy vs in place, missing files. Bad files and a
killed import: tests/faults/."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from charstudio.catalog import Project
from charstudio.catalog.importer import ImportReport, import_images
from charstudio.jobs import CancelToken, run_job


def _import(project: Project, *paths: Path, **kwargs) -> ImportReport:
    return run_job(import_images(project, list(paths), **kwargs))


@pytest.fixture
def project(tmp_path: Path):
    with Project.create(tmp_path / "proj", "Anna") as project:
        yield project


def test_import_reads_a1111_parameters_into_columns(project: Project, make_png, tmp_path) -> None:
    src = make_png(tmp_path / "out" / "00001-4240233169.png", seed=4240233169)
    report = _import(project, src)
    assert report.to_json() == {
        "added": 1,
        "duplicates": 0,
        "relinked": 0,
        "failed": [],
        "warnings": [],
        "canceled": False,
    }
    record = project.catalog.images()[0]
    assert record.path == src.resolve().as_posix()  # in place: absolute
    assert record.seed == 4240233169
    assert record.steps == 30
    assert record.sampler == "DPM++ 2M"
    assert record.schedule_type == "Karras"
    assert record.cfg_scale == 7.0
    assert record.size == "512x512"
    assert record.model == "v1-5-pruned-emaonly"
    assert record.model_hash == "6ce0161689"
    assert record.negative_prompt == "jewellery, clothes, (blurry:1.2)"
    assert record.prompt.startswith("an extreme closeup front shot")
    assert record.extras == {"Lora hashes": "fr3nch: 1a2b3c4d5e6f", "Version": "v1.10.1"}
    assert record.infotext and record.infotext.endswith("Version: v1.10.1")
    assert (record.width, record.height, record.format) == (64, 64, "PNG")
    assert len(record.sha256) == 64


def test_reimport_adds_nothing(project: Project, make_png, tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    for n in range(5):
        make_png(folder / f"{n}.png", seed=n)
    assert _import(project, folder).added == 5
    again = _import(project, folder)
    assert (again.added, again.duplicates) == (0, 5)
    assert project.catalog.image_count() == 5


def test_same_pixels_under_another_name_are_a_duplicate(project, make_png, tmp_path) -> None:
    a = make_png(tmp_path / "a.png", seed=3)
    b = tmp_path / "copy of a.png"
    b.write_bytes(a.read_bytes())
    report = _import(project, a, b)
    assert (report.added, report.duplicates) == (1, 1)


def test_folders_are_searched_recursively_and_sidecars_passed_over(
    project: Project, make_png, tmp_path: Path
) -> None:
    root = tmp_path / "outputs"
    make_png(root / "txt2img" / "2026-11-01" / "a.png", seed=1)
    make_png(root / "txt2img" / "2026-11-02" / "b.png", seed=2)
    Image.new("RGB", (32, 32), "gray").save(root / "c.JPG")
    Image.new("RGB", (32, 32), "gray").save(root / "d.webp")
    (root / "a.txt").write_text("fr3nchl4dy, woman")
    report = _import(project, root)
    assert (report.added, report.failed) == (4, [])
    assert {r.format for r in project.catalog.images()} == {"PNG", "JPEG", "WEBP"}


def test_copy_puts_files_into_the_project(project: Project, make_png, tmp_path: Path) -> None:
    make_png(tmp_path / "src" / "x.png", seed=1)
    make_png(tmp_path / "src2" / "x.png", seed=2)  # same name, other content
    report = _import(project, tmp_path / "src", tmp_path / "src2", copy=True)
    assert report.added == 2
    paths = sorted(r.path for r in project.catalog.images())
    assert paths == ["images/x-1.png", "images/x.png"]
    assert all((project.root / p).is_file() for p in paths)
    assert not list(project.images_dir.glob(".*part"))


def test_files_already_inside_the_project_are_stored_relative(project, make_png) -> None:
    inside = make_png(project.images_dir / "sub" / "y.png", seed=9)
    _import(project, inside)
    assert project.catalog.images()[0].path == "images/sub/y.png"


def test_missing_files_are_detected_and_relinked_when_found(project, make_png, tmp_path) -> None:
    src = make_png(tmp_path / "shoot" / "a.png", seed=5)
    _import(project, src)
    image_id = project.catalog.images()[0].id
    project.catalog.decide([image_id], "pick", flag="pick", stars=4)
    moved = tmp_path / "moved" / "a.png"
    moved.parent.mkdir()
    src.rename(moved)
    assert project.missing_image_ids() == [image_id]
    report = _import(project, moved)
    assert (report.added, report.relinked) == (0, 1)
    assert project.missing_image_ids() == []
    assert project.catalog.decision(image_id).stars == 4  # the artist's work is kept


def test_cancel_stops_between_files(project: Project, make_png, tmp_path: Path) -> None:
    for n in range(20):
        make_png(tmp_path / "many" / f"{n:02}.png", seed=n)
    token = CancelToken()
    job = import_images(project, [tmp_path / "many"], cancel=token)
    events = []
    for event in job:
        events.append(event)
        if event.done == 3:
            token.cancel()
    assert project.catalog.image_count() == 3
    assert events[0].total == 20
