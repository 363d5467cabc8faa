"""The Train screen's Qt-free rules: saved settings read leniently, and a run's snapshot."""

from __future__ import annotations

from pathlib import Path

import pytest

from charstudio.catalog import Project
from charstudio.engine.sweeps import GenerationSettings
from charstudio.presenters.generate import stored_request
from charstudio.presenters.run_view import run_snapshot
from charstudio.presenters.saved_settings import apply_saved, has_type
from charstudio.presenters.train import run_rows, stored_state
from charstudio.training.run_files import (
    PREVIEW_FOLDER,
)
from tests.runs import make_ti_run


@pytest.fixture
def project(tmp_path: Path):
    with Project.create(tmp_path / "proj", "Anna", token="ann4") as project:
        yield project


def test_json_types_are_checked_against_the_fields() -> None:
    assert has_type(3, int) and not has_type(True, int) and not has_type(3.5, int)
    assert has_type(3, float) and not has_type("3", float)
    assert has_type(None, int | None) and has_type("Karras", str | None)
    assert not has_type([1], str | None)


def test_one_bad_value_falls_back_alone() -> None:
    base = GenerationSettings(prompt="")
    settings, dropped = apply_saved(
        base, {"prompt": "a woman", "steps": "thirty", "cfg_scale": 5, "seed": True, "typo": 1}
    )
    assert (settings.prompt, settings.steps, settings.cfg_scale) == ("a woman", 30, 5)
    assert dropped == ["steps", "seed", "typo"]
    # The settings class's own checks count too: a width it refuses is dropped.
    settings, dropped = apply_saved(base, {"width": -8, "prompt": "kept"})
    assert settings.prompt == "kept" and settings.width == base.width and dropped == ["width"]
    assert apply_saved(base, "garbage") == (base, ["all settings"])


def test_generate_and_train_read_their_saved_settings(project: Project) -> None:
    request, dropped = stored_request(
        {"settings": {"prompt": "p", "sampler": "No Such Sampler"}, "x": 3, "save_grid": "yes"}
    )
    assert request.settings.prompt == "p" and request.settings.sampler == "DPM++ 2M"
    assert dropped == ["sampler", "X axis", "save_grid"]
    settings, choices, dropped = stored_state(
        {"settings": {"vectors": "two", "max_steps": 99}, "model": "/m.safetensors", "images": 3},
        project,
    )
    assert (settings.vectors, settings.max_steps, settings.name) == (2, 99, "ann4")
    assert choices == {"model": "/m.safetensors"} and dropped == ["vectors"]


def test_a_run_snapshot_has_its_loss_previews_and_checkpoints(project: Project) -> None:
    run_id = make_ti_run(project, steps=10, saved=(10, 5))
    folder = project.root / "runs" / "ti-001-ann4"
    (folder / PREVIEW_FOLDER / "notes.png").write_bytes(b"no step in the name")
    snapshot = run_snapshot(project, run_id)
    assert snapshot is not None
    assert snapshot.title == "ann4 · ti-001-ann4 · running"
    assert snapshot.loss[0] == (1, 0.29) and len(snapshot.loss) == 10
    assert [p.step for p in snapshot.previews] == [5, 10]
    assert [(c.step, c.loss) for c in snapshot.checkpoints] == [
        (5, pytest.approx(0.25)),
        (10, pytest.approx(0.2)),
    ]
    assert snapshot.newest_checkpoint.path == folder / "ann4-10.pt"
    assert (snapshot.step, snapshot.end_step) == (10, 20)
    assert run_snapshot(project, 999) is None
    assert [row.run_id for row in run_rows(project)] == [run_id]
