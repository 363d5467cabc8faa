"""The Compare panel's rules without Qt: the form → the grid job's GridSpec, its checks, the
saved settings (read leniently), the runs and grids listed, Refine's steps and the job's words."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from charstudio.catalog import Project
from charstudio.jobs.queue import JobQueue
from charstudio.presenters.compare import (
    GridForm,
    RunChoice,
    axes_text,
    cancel_queued_grids,
    describe_steps,
    dropped_note,
    finish_text,
    finished_grid,
    grid_line,
    grid_spec,
    lora_folders,
    refine_plan,
    run_choices,
    run_text,
    settings_to_store,
    status_title,
    steps_preset,
    steps_text,
    stored_spec,
)
from charstudio.training import records
from charstudio.training.checkpoint_grid import DEFAULT_GRID_PROMPT, GridSpec
from charstudio.training.grid_records import GridRecord

MODEL = "/models/v1-5-pruned-emaonly.safetensors"
RUN = RunChoice(1, "zxq", "done", tuple(range(5, 151, 5)), MODEL)
FORM = GridForm(
    run_id=1,
    steps="20:100:20",
    seed="777",
    batch=2,
    prompt=f"  {DEFAULT_GRID_PROMPT} ",
    negative_prompt="blurry",
    sampler="DPM++ 2M",
    schedule_type="Karras",
    sampling_steps=30,
    cfg_scale=7.0,
    width=512,
    height=512,
)


def test_the_form_becomes_the_grid_jobs_spec() -> None:
    spec = grid_spec(FORM, [RUN])
    assert spec == GridSpec(
        run_id=1, steps=(20, 40, 60, 80, 100), seed=777, batch=2, negative_prompt="blurry"
    )
    assert axes_text(spec) == "5 steps × 2 seeds = 10 images (seeds 777–778)"
    # Other checked models make a Z axis that starts with the run's own model (never twice).
    other = "/models/deliberate_v2.safetensors"
    z = grid_spec(dataclasses.replace(FORM, extra_models=(MODEL, other)), [RUN])
    assert z.models == (MODEL, other)
    assert axes_text(z).startswith("5 steps × 2 seeds × 2 models = 20 images")


@pytest.mark.parametrize(
    ("change", "runs", "expected"),
    [
        ({}, [], "Choose a training run"),
        ({}, [dataclasses.replace(RUN, steps=())], "has no saved steps to compare yet"),
        ({"steps": "20:100:7"}, [RUN], "No checkpoint for step 27, 34"),
        ({"steps": "20:100:7"}, [RUN], "zxq saved steps 5–150 every 5"),
        ({"steps": "soon"}, [RUN], "write 20:140:20 or 20,40,60"),
        ({"seed": " "}, [RUN], "Give a seed"),
        ({"seed": "-3"}, [RUN], "is not a whole number"),
        ({"prompt": "a portrait photo"}, [RUN], "The prompt needs [name]"),
    ],
)
def test_the_form_is_checked_before_a_grid_is_queued(change, runs, expected) -> None:
    with pytest.raises(ValueError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        grid_spec(dataclasses.replace(FORM, **change), runs)


def test_steps_are_written_and_described_as_the_artist_types_them() -> None:
    assert steps_text([60, 20, 40]) == "20:60:20" and steps_text([40, 45, 55]) == "40, 45, 55"
    assert describe_steps(list(range(1, 151))) == "1–150"
    assert describe_steps(range(5, 151, 5)) == "5–150 every 5"
    assert describe_steps([]) == "none"
    assert steps_preset(range(5, 151, 5)) == [20, 40, 60, 80, 100, 120, 140]
    assert steps_preset([10, 20]) == [10, 20]  # fewer than two multiples of 20: all
    assert steps_preset([15, 5, 10], every=1) == [5, 10, 15]


def test_saved_settings_are_read_one_value_at_a_time() -> None:
    spec = grid_spec(FORM, [RUN])
    saved = settings_to_store(spec)
    assert "run_id" not in saved and "steps" not in saved
    assert stored_spec(saved) == (dataclasses.replace(spec, run_id=0, steps=()), [])
    stored = {**saved, "batch": 400, "sampler": "Euler q", "cfg_scale": "high", "seed": True}
    read, dropped = stored_spec({**stored, "prompt": "kept [name]", "cfg": 3})
    assert dropped == ["seed", "batch", "sampler", "cfg_scale", "cfg"]  # in the saved order
    default = GridSpec(run_id=0, steps=())
    assert (read.batch, read.sampler, read.cfg_scale, read.seed) == (
        default.batch,
        default.sampler,
        default.cfg_scale,
        default.seed,
    )
    assert read.prompt == "kept [name]" and read.negative_prompt == "blurry"
    assert stored_spec({"cfg_scale": 6})[0].cfg_scale == 6.0  # JSON writes 6.0 as 6
    assert isinstance(stored_spec({"cfg_scale": 6})[0].cfg_scale, float)
    assert stored_spec("unreadable") == (default, ["all settings"])
    assert stored_spec(None) == (default, [])
    assert dropped_note(["batch", "seed"]).endswith("(unreadable): batch, seed")
    assert dropped_note([]) == ""


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    project = Project.create(tmp_path / "proj", "Zxq", token="zxq")
    yield project
    project.close()


def add_run(project: Project, name: str, steps: range | tuple[int, ...]) -> int:
    run_id = records.create_run(
        project.catalog, name=name, folder=f"runs/{name}", params={"model": MODEL}, job_id=None
    )
    for step in steps:
        records.record_checkpoint(
            project.catalog, run_id, step, f"runs/{name}/{name}-{step}.pt", 0.1, ""
        )
    return run_id


def test_runs_are_offered_newest_first_with_their_saved_steps(project) -> None:
    older = add_run(project, "zxq", range(10, 31, 10))
    newer = add_run(project, "qqx", ())
    choices = run_choices(project)
    assert [c.id for c in choices] == [newer, older]
    assert choices[1].steps == (10, 20, 30) and choices[1].model == MODEL
    assert choices[1].label() == f"zxq · run {older} · 3 steps saved"
    assert choices[0].label().endswith("no saved steps")


def test_lora_runs_are_offered_with_their_epochs_not_their_averages(project) -> None:
    embedding = add_run(project, "zxq", (10, 20))
    lora = records.create_run(
        project.catalog,
        name="zxq",
        folder="runs/lora-001-zxq",
        params={"model": MODEL, "steps_per_epoch": 4},
        job_id=None,
        kind="lora",
    )
    for step, file in ((4, "zxq-000001"), (8, "zxq-000002"), (-1, "zxq-avg-1-2")):
        path = f"runs/lora-001-zxq/{file}.safetensors"
        records.record_checkpoint(project.catalog, lora, step, path, 0.1, "")
    choices = run_choices(project)
    assert [c.id for c in choices] == [lora, embedding]
    assert (choices[0].kind, choices[0].steps) == ("lora", (4, 8))
    assert choices[0].label() == f"LoRA zxq · run {lora} · 2 epochs saved"
    assert "epoch N" in run_text(choices[0])


def test_refine_compares_every_5_saved_steps_of_the_range(project) -> None:
    run_id = add_run(project, "zxq", (20, 40, 45, 55, 60))
    spec = GridSpec(run_id=run_id, steps=(20, 40, 60), seed=99)
    plan = refine_plan(project, spec, 40, 60)
    assert plan.spec == dataclasses.replace(spec, steps=(40, 45, 55, 60))
    assert plan.note(40, 60, 7) == "Refining 40–60 (job 7); not saved by the run: 50"
    nothing = refine_plan(project, spec, 20, 30)
    assert nothing.spec is None and "saved no steps between 20 and 30" in nothing.problem


def test_a_finished_grid_job_is_worded_from_its_result(project) -> None:
    job_id = JobQueue(project).submit("grid", {})
    suggestion = {"step": 60, "reason": "step 60 is the first …"}
    result = {"grid_id": 4, "cells": [{}] * 20, "suggestion": suggestion}
    project.catalog.update_job(job_id, status="done", result=result)
    found, grid_id = finished_grid(project, job_id, None)
    assert grid_id == 4
    assert finish_text("done", None, found, grid_id) == "grid 4 done (20 images): suggested step 60"
    unscored = {"cells": [{}] * 2, "suggestion": {"step": None, "reason": "no faces"}}
    assert finish_text("done", None, unscored, 5) == "grid 5 done (2 images); no faces"
    assert finish_text("canceled", None, {}, 5) == "grid 5 canceled; its finished cells are kept"
    assert finish_text("failed", "ValueError: bad step", {}, None) == "bad step"
    assert status_title("done", "grid 4 done") == "Done: grid 4 done"
    assert status_title("canceled") == "Canceled."


def test_earlier_grids_are_listed_with_their_axes_and_choice() -> None:
    spec = GridSpec(run_id=1, steps=(20, 40, 60), batch=4)
    grid = GridRecord(3, 1, spec, None, 40, "2026-01-02T03:04:05", None, cell_count=5)
    assert grid_line(grid) == (
        "Grid 3 · steps 20–60 every 20 · 4 seeds · 5/12 cells\n2026-01-02 03:04 · chosen step 40"
    )


def test_cancel_takes_only_the_queued_grid_jobs_off_the_queue(project) -> None:
    queue = JobQueue(project)
    grid = queue.submit("grid", {})
    other = queue.submit("generate", {})
    assert cancel_queued_grids(project) == [grid]
    assert [job.id for job in queue.pending()] == [other]
    assert cancel_queued_grids(project) == []


def test_lora_exports_go_to_the_installs_lora_folders(tmp_path: Path) -> None:
    a1111 = tmp_path / "webui"
    (a1111 / "models" / "Stable-diffusion").mkdir(parents=True)
    (a1111 / "embeddings").mkdir()
    comfy = tmp_path / "ComfyUI" / "models"
    (comfy / "checkpoints").mkdir(parents=True)
    (comfy / "embeddings").mkdir()
    loose = tmp_path / "mine" / "embeddings"
    loose.mkdir(parents=True)
    assert lora_folders([a1111 / "embeddings", comfy / "embeddings", loose]) == [
        a1111 / "models" / "Lora",
        comfy / "loras",
        loose,
    ]
