"""A project's analysis end to end: the analyze job caches results in the catalog, is
incremental, and answers flags, duplicate stacks and similarity from the cache; the
`analyze` and `similar` commands print them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("facenet_pytorch")
skimage_data = pytest.importorskip("skimage.data")

from PIL import Image, ImageFilter  # noqa: E402

from charstudio.analysis.project import (  # noqa: E402
    analyze_project,
    duplicate_groups,
    image_flags,
    load_analyses,
    rank_similar,
    stale_image_ids,
)
from charstudio.analysis.recognition import Recognizer  # noqa: E402
from charstudio.catalog import Project  # noqa: E402
from charstudio.catalog.importer import import_images  # noqa: E402
from charstudio.cli import main  # noqa: E402
from charstudio.jobs import run_job  # noqa: E402


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    astronaut = Image.fromarray(skimage_data.astronaut())
    astronaut.save(folder / "a-astronaut.png")
    astronaut.resize((384, 384)).save(folder / "b-astronaut-small.jpg", quality=70)
    astronaut.filter(ImageFilter.GaussianBlur(1)).save(folder / "c-astronaut-soft.png")
    Image.new("RGB", (256, 256), (128, 128, 128)).save(folder / "d-blank.png")
    pair = Image.new("RGB", (1024, 512))
    pair.paste(astronaut, (0, 0))
    pair.paste(astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (512, 0))
    pair.save(folder / "e-two.png")
    return folder


@pytest.fixture
def project(tmp_path: Path, photos: Path):
    with Project.create(tmp_path / "proj", "Astro") as project:
        run_job(import_images(project, [photos]))
        yield project


def ids_by_name(project: Project) -> dict[str, int]:
    return {Path(r.path).name.split("-")[0]: r.id for r in project.catalog.images()}


def test_analysis_is_cached_and_incremental(project: Project) -> None:
    catalog = project.catalog
    first = run_job(analyze_project(project, recognizer=None))
    assert first["analyzed"] == 5 and first["embeddings"] is False
    assert len(load_analyses(catalog)) == 5
    assert stale_image_ids(catalog, want_embeddings=False) == []
    again = run_job(analyze_project(project, recognizer=None))
    assert again["analyzed"] == 0  # nothing changed: nothing redone

    # A file that changed (the catalog knows it by its sha256) is analyzed again.
    blank = ids_by_name(project)["d"]
    with catalog.transaction() as conn:
        conn.execute("UPDATE images SET sha256 = 'changed' WHERE id = ?", (blank,))
    assert stale_image_ids(catalog, want_embeddings=False) == [blank]
    assert blank not in load_analyses(catalog)  # a stale result is not served


def test_flags_and_duplicate_stacks_from_the_cache(project: Project) -> None:
    run_job(analyze_project(project, recognizer=None))
    ids = ids_by_name(project)
    flags = image_flags(project.catalog)
    assert flags[ids["a"]] == [] and flags[ids["b"]] == []
    assert flags[ids["d"]] == ["no-face"]
    assert flags[ids["e"]] == ["several-faces"]
    stacks = duplicate_groups(project.catalog)
    assert sorted(stacks[0]) == sorted([ids["a"], ids["b"], ids["c"]])
    assert all(ids["d"] not in s and ids["e"] not in s for s in stacks)


def test_similarity_ranking_with_a_recognizer(project: Project) -> None:
    recognizer = Recognizer.with_random_weights(3)
    report = run_job(analyze_project(project, recognizer=recognizer))
    assert report["embeddings"] is True
    ids = ids_by_name(project)
    ranked = rank_similar(project.catalog, [ids["a"]])
    assert ranked[0][0] == ids["a"] and ranked[0][1] == pytest.approx(1.0, abs=1e-5)
    assert {i for i, _ in ranked} >= {ids["a"], ids["b"], ids["c"]}
    assert ids["d"] not in {i for i, _ in ranked}  # no face, no embedding


def test_missing_files_are_reported_not_fatal(project: Project) -> None:
    record = project.catalog.image(ids_by_name(project)["d"])
    moved = Path(record.path).with_name("gone.png")
    Path(record.path).rename(moved)
    report = run_job(analyze_project(project, recognizer=None))
    assert report["analyzed"] == 4
    assert [f["error"] for f in report["failed"]] == ["file not found"]
    moved.rename(record.path)


def test_analyze_and_similar_commands(project: Project, capsys) -> None:
    assert main(["analyze", str(project.root), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {Path(r["path"]).name.split("-")[0]: r for r in rows}
    assert set(rows[0]) >= {"id", "path", "faces", "flags", "phash", "duplicate_group"}
    assert by_name["e"]["faces"] == 2 and by_name["e"]["flags"] == ["several-faces"]
    assert by_name["a"]["duplicate_group"] == by_name["b"]["duplicate_group"] == 1
    assert by_name["d"]["duplicate_group"] is None and len(by_name["a"]["phash"]) == 16
    # Without the recognizer's weights there is nothing to rank by: a clear error.
    assert main(["similar", str(project.root), "--to", str(by_name["a"]["id"])]) == 2
    assert "recognizer" in capsys.readouterr().err
    run_job(analyze_project(project, recognizer=Recognizer.with_random_weights(1)))
    assert main(["similar", str(project.root), "--to", str(by_name["a"]["id"]), "--json"]) == 0
    ranked = json.loads(capsys.readouterr().out)
    assert ranked[0]["id"] == by_name["a"]["id"] and ranked[0]["similarity"] == 1.0


def test_a_canceled_analysis_keeps_the_batches_it_finished(project: Project) -> None:
    from charstudio.analysis.detection import FaceDetector
    from charstudio.jobs import CancelToken

    token = CancelToken()
    job = analyze_project(
        project, recognizer=None, detector=FaceDetector(batch_size=2), cancel=token
    )
    for event in job:
        if event.done:
            token.cancel()  # as the queue does: the job stops at its next batch
    assert len(load_analyses(project.catalog)) == 2
    assert len(stale_image_ids(project.catalog, want_embeddings=False)) == 3


def test_faint_detections_do_not_keep_an_image_stale(project: Project) -> None:
    from charstudio.analysis.project import save_analyses
    from charstudio.analysis.results import Face, FaceAnalysis

    record = project.catalog.image(ids_by_name(project)["d"])
    faint = Face((1, 1, 20, 20), 0.75, (), 0.01, 0.07)
    save_analyses(project.catalog, [(record.id, FaceAnalysis(record.sha256, 256, 256, (faint,)))])
    stale = stale_image_ids(project.catalog, want_embeddings=True)
    assert record.id not in stale and len(stale) == 4
