"""The textual-inversion job end to end on a tiny random-weight model (CPU, 16×16 images):
files at the set cadence, catalog rows, previews through the engine's sampling path, pause and
resume (bit-exact against an uninterrupted run), resume after a crash, cancel."""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from charstudio.catalog import Project  # noqa: E402
from charstudio.catalog.importer import import_images  # noqa: E402
from charstudio.engine.embeddings import load_embedding  # noqa: E402
from charstudio.jobs import CancelToken, Progress, run_job  # noqa: E402
from charstudio.jobs.queue import JobQueue  # noqa: E402
from charstudio.metadata.imagefile import read_infotext  # noqa: E402
from charstudio.metadata.infotext import parse_infotext  # noqa: E402
from charstudio.training import records  # noqa: E402
from charstudio.training.pause import request_pause  # noqa: E402
from charstudio.training.run_files import LOSS_FIELDS  # noqa: E402
from charstudio.training.ti import (  # noqa: E402
    TrainingError,
    TrainResult,
    check_train_params,
    train_ti_job,
)

from .tiny_sd import tiny_components, write_diffusers_folder  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)

TOKEN = "fr3nchl4dy"
WIDTH = 32  # the tiny text encoder's hidden size, i.e. the embedding width
SIZE = 16  # training and preview size: 8×8 latents keep every step in milliseconds


def responsive_tiny_model(seed: int = 3) -> Any:
    """A tiny model whose output depends noticeably on the text: the random cross-attention
    value/output projections are scaled up, as a trained model's would matter."""
    model = tiny_components(seed)
    with torch.no_grad():
        for name, module in model.unet.named_modules():
            if name.endswith("attn2"):
                module.to_v.weight.mul_(8)
                module.to_out[0].weight.mul_(8)
    return model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "tiny-sd"
    return write_diffusers_folder(folder, responsive_tiny_model())


def source_png(path: Path, seed: int) -> Path:
    """A noise PNG with A1111 infotext (its prompt becomes the catalog's caption)."""
    import random

    from PIL import PngImagePlugin

    from .conftest import a1111_infotext

    rng = random.Random(seed)
    image = Image.frombytes("RGB", (SIZE, SIZE), rng.randbytes(SIZE * SIZE * 3))
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", a1111_infotext(seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, pnginfo=info)
    return path


def make_project(root: Path) -> Project:
    """A project with 4 imported PNGs as its picks (the newest training set)."""
    project = Project.create(root, "Léa", token=TOKEN)
    files = [source_png(root.parent / f"src-{root.name}" / f"{i}.png", i) for i in range(4)]
    report = run_job(import_images(project, files, copy=True))
    assert report.added == 4
    project.catalog.create_training_set("4 picks", [r.id for r in project.catalog.images()])
    return project


@pytest.fixture
def project(tmp_path: Path):
    with make_project(tmp_path / "proj") as project:
        yield project


def params(model_dir: Path, **settings: Any) -> dict[str, Any]:
    """Small settings that still use every random stream: two template lines, [filewords] with
    shuffling and dropout, "random" latent sampling, batch 2 × accumulation 2."""
    base = {
        "width": SIZE,
        "height": SIZE,
        "max_steps": 6,
        "save_every": 2,
        "preview_every": 3,
        "preview_steps": 2,
        "learning_rate": "0.05:4, 0.02",
        "batch_size": 2,
        "gradient_accumulation": 2,
        "template": "a photo of [name], [filewords]\n[filewords], portrait of [name]",
        "shuffle_tags": True,
        "tag_dropout": 0.25,
        "latent_sampling": "random",
        "seed": 1234,
    }
    base.update(settings)
    return {"settings": base, "model": str(model_dir), "images": "picks"}


def train(
    project: Project,
    job_params: dict[str, Any],
    *,
    job_id: int = 0,
    on_event: Callable[[Progress], None] | None = None,
    cancel: CancelToken | None = None,
) -> tuple[TrainResult, list[Progress]]:
    events: list[Progress] = []

    def collect(event: Progress) -> None:
        events.append(event)
        if on_event is not None:
            on_event(event)

    result = run_job(train_ti_job(project, job_params, cancel, job_id), collect)
    return result, events


def vectors_of(project: Project, result: TrainResult, step: int) -> torch.Tensor:
    return load_embedding(project.root / result.folder / f"{TOKEN}-{step}.pt", width=WIDTH).vectors


def loss_rows(project: Project, result: TrainResult) -> list[dict[str, str]]:
    with open(project.root / result.loss_csv, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> dict[str, Any]:
    """An uninterrupted 6-step run: what pausing, crashing and resuming must reproduce."""
    root = tmp_path_factory.mktemp("reference")
    with make_project(root / "proj") as project:
        result, events = train(project, params(model_dir))
        return {
            "result": result,
            "vectors": {s: vectors_of(project, result, s) for s in (2, 4, 6)},
            "losses": [row["loss"] for row in loss_rows(project, result)],
            "events": events,
            "root": project.root,
        }


# -- a whole run ---------------------------------------------------------------------------


def test_files_appear_at_the_set_cadence_with_catalog_rows(reference) -> None:
    result: TrainResult = reference["result"]
    with Project.open(reference["root"]) as project:
        folder = project.root / result.folder
        assert result.status == "done" and result.step == result.end_step == 6
        assert result.folder == f"runs/ti-001-{TOKEN}"
        names = {p.name for p in folder.iterdir() if p.is_file()}
        expected = {f"{TOKEN}-{s}.{ext}" for s in (2, 4, 6) for ext in ("pt", "safetensors")}
        assert expected | {"loss.csv", "settings.json"} == names
        assert sorted(p.name for p in (folder / "previews").iterdir()) == [
            f"{TOKEN}-3.png",
            f"{TOKEN}-6.png",
        ]
        assert not [p for p in folder.rglob(".*")]  # no temporary files left behind
        rows = loss_rows(project, result)
        assert tuple(rows[0]) == LOSS_FIELDS and [int(r["step"]) for r in rows] == list(range(1, 7))
        assert [float(r["learning_rate"]) for r in rows] == [0.05] * 4 + [0.02] * 2

        catalog = project.catalog
        run = records.get_run(catalog, result.run_id)
        assert (run.kind, run.name, run.status, run.folder) == ("ti", TOKEN, "done", result.folder)
        assert run.finished_at and run.params["settings"]["batch_size"] == 2
        assert run.params == json.loads((folder / "settings.json").read_text(encoding="utf-8"))
        assert records.run_image_ids(catalog, run.id) == [r.id for r in catalog.images()]
        checkpoints = records.run_checkpoints(catalog, run.id)
        assert [c.step for c in checkpoints] == [2, 4, 6]
        for row, entry in zip(checkpoints, result.checkpoints, strict=True):
            pt = project.root / row.path
            assert entry["path"] == row.path and row.loss == pytest.approx(entry["loss"])
            import hashlib

            assert row.sha256 == hashlib.sha256(pt.read_bytes()).hexdigest()
        assert result.to_json()["checkpoints"][-1]["safetensors"].endswith("-6.safetensors")


def test_checkpoints_are_a1111_embeddings(reference) -> None:
    result: TrainResult = reference["result"]
    folder = Path(reference["root"]) / result.folder
    data = torch.load(folder / f"{TOKEN}-4.pt", weights_only=True)
    assert set(data) == {
        "string_to_token",
        "string_to_param",
        "name",
        "step",
        "sd_checkpoint",
        "sd_checkpoint_name",
    }
    assert data["string_to_token"] == {"*": 265} and data["step"] == 4
    assert data["name"] == f"{TOKEN}-4" and data["sd_checkpoint_name"] == "tiny-sd"
    assert data["string_to_param"]["*"].shape == (2, WIDTH)
    pt = load_embedding(folder / f"{TOKEN}-4.pt", width=WIDTH)
    st = load_embedding(folder / f"{TOKEN}-4.safetensors", width=WIDTH)
    assert (pt.name, pt.step, st.name) == (f"{TOKEN}-4", 4, f"{TOKEN}-4")
    assert torch.equal(pt.vectors, st.vectors) and pt.vectors.dtype == torch.float32
    assert not torch.equal(reference["vectors"][2], reference["vectors"][4])


def test_progress_reports_loss_rate_speed_checkpoints_and_previews(reference) -> None:
    events: list[Progress] = reference["events"]
    steps = [e for e in events if "loss" in e.detail]
    assert [e.done for e in steps] == [1, 2, 3, 4, 5, 6]
    assert all(e.total == 6 and e.detail["run_id"] == reference["result"].run_id for e in events)
    for event in steps:
        assert event.detail["loss"] > 0 and event.detail["it_per_s"] > 0
        assert event.detail["learning_rate"] in (0.05, 0.02)
        assert ("checkpoint_path" in event.detail) == (event.done % 2 == 0)
        assert ("preview" in event.detail) == (event.done % 3 == 0)
    preview = steps[2].detail["preview"]
    assert isinstance(preview, Image.Image) and preview.size == (SIZE, SIZE)
    assert Path(steps[2].detail["preview_path"]).is_file()


def test_previews_are_generated_like_generation_with_infotext(reference, model_dir) -> None:
    """The preview at step 6 is what the generation path makes with the saved NAME-6 file."""
    from charstudio.engine.runner import ModelRunner
    from charstudio.engine.sweeps import GenerationSettings

    result: TrainResult = reference["result"]
    with Project.open(reference["root"]) as project:
        preview_file = project.root / result.folder / "previews" / f"{TOKEN}-6.png"
        params6 = parse_infotext(read_infotext(preview_file))
        assert params6.prompt == f"a photo of {TOKEN}-6, " + project.catalog.images()[0].prompt
        assert (params6.steps, params6.seed, params6.width) == (2, 12345678, SIZE)
        assert params6.sampler == "DPM++ 2M" and params6.model == "tiny-sd"
        assert params6.settings["TI hashes"].startswith(f"{TOKEN}-6: ")
        step3 = parse_infotext(read_infotext(preview_file.with_name(f"{TOKEN}-3.png")))
        assert "TI hashes" not in step3.settings  # step 3 was not saved (save every 2)

        # Generation finds the checkpoint by name in embeddings/ and makes the same image.
        source = project.root / result.folder / f"{TOKEN}-6.pt"
        (project.root / "embeddings" / source.name).write_bytes(source.read_bytes())
        runner = ModelRunner(project)
        settings = GenerationSettings(
            prompt=params6.prompt,
            seed=params6.seed,
            steps=params6.steps,
            sampler=params6.sampler,
            schedule_type=params6.schedule_type,
            cfg_scale=params6.cfg_scale,
            width=SIZE,
            height=SIZE,
            model=str(model_dir),
        )
        (image, generated), *_ = run_job(runner.batch(settings, [params6.seed]))
        assert generated.settings["TI hashes"] == params6.settings["TI hashes"]
        with Image.open(preview_file) as stored:
            diff = np.abs(np.asarray(stored, dtype=int) - np.asarray(image, dtype=int))
        assert diff.mean() < 1.0  # same path; channels-last convolutions may round differently


# -- pause, resume, crash, cancel ----------------------------------------------------------


def test_resume_after_pause_equals_an_uninterrupted_run(project, model_dir, reference) -> None:
    def pause_at_3(event: Progress) -> None:
        if event.done == 3 and "loss" in event.detail:
            request_pause(project, event.detail["run_id"])

    paused, _ = train(project, params(model_dir), on_event=pause_at_3)
    assert (paused.status, paused.step) == ("paused", 3)
    folder = project.root / paused.folder
    assert not (folder / "PAUSE").exists()
    assert records.get_run(project.catalog, paused.run_id).status == "paused"
    # The pause saved step 3 although only every second step is saved.
    assert [c["step"] for c in paused.checkpoints] == [2, 3]

    resumed, events = train(project, {"resume_run_id": paused.run_id})
    assert (resumed.run_id, resumed.status, resumed.step) == (paused.run_id, "done", 6)
    assert events[-1].done == 6 and min(e.done for e in events) == 3
    for step in (4, 6):  # bit-exact: same data order, texts, latents, timesteps and noise
        assert torch.equal(vectors_of(project, resumed, step), reference["vectors"][step])
    assert [r["loss"] for r in loss_rows(project, resumed)] == reference["losses"]
    assert [c["step"] for c in resumed.checkpoints] == [2, 3, 4, 6]
    assert records.get_run(project.catalog, paused.run_id).status == "done"

    # A finished run trains on when given more steps; the new limit is stored with the run.
    extended, _ = train(project, {"resume_run_id": paused.run_id, "max_steps": 8})
    assert (extended.status, extended.step, extended.end_step) == ("done", 8, 8)
    assert [c["step"] for c in extended.checkpoints] == [2, 3, 4, 6, 8]
    assert len(loss_rows(project, extended)) == 8

    def no_loader(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("a finished run must not load the model")

    again = run_job(train_ti_job(project, {"resume_run_id": paused.run_id}, loader=no_loader))
    assert (again.status, again.step) == ("done", 8)


def test_a_job_rerun_after_a_crash_resumes_from_the_newest_good_state(
    project, model_dir, reference
) -> None:
    job_id = project.catalog.create_job("train-ti", params(model_dir), status="running")
    job = train_ti_job(project, params(model_dir), None, job_id)
    for event in job:
        if event.done == 5 and "loss" in event.detail:
            break
    job.close()  # the process dies: no status is written, the run stays "running"
    run = records.run_for_job(project.catalog, job_id)
    assert run is not None and run.status == "running"
    folder = project.root / run.folder
    (folder / "state" / "state-000005.pt").write_bytes(b"half a file")  # a damaged newer state

    # The queue re-runs the same job (same id, same params): it resumes the run at step 4.
    resumed, events = train(project, params(model_dir), job_id=job_id)
    assert resumed.run_id == run.id and resumed.status == "done"
    assert min(e.done for e in events) == 4
    assert torch.equal(vectors_of(project, resumed, 6), reference["vectors"][6])
    assert [r["loss"] for r in loss_rows(project, resumed)] == reference["losses"]
    assert len(records.list_runs(project.catalog)) == 1


def test_a_job_is_done_once_whoever_finishes_it(project, model_dir) -> None:
    # Job A dies at step 3; the artist resumes the run with another job (train-ti --resume);
    # then the queue re-runs job A, interrupted: it must not train a second run.
    first = project.catalog.create_job("train-ti", params(model_dir), status="running")
    job = train_ti_job(project, params(model_dir), None, first)
    for event in job:
        if event.done == 3 and "loss" in event.detail:
            break
    job.close()
    run = records.run_for_job(project.catalog, first)
    assert run is not None
    second = project.catalog.create_job("train-ti", {"resume_run_id": run.id}, status="running")
    resumed, _ = train(project, {"resume_run_id": run.id}, job_id=second)
    assert (resumed.run_id, resumed.status, resumed.step) == (run.id, "done", 6)
    finished = records.get_run(project.catalog, run.id)

    again, events = train(project, params(model_dir), job_id=first)
    assert again.run_id == run.id and again.status == "done"
    assert len(records.list_runs(project.catalog)) == 1  # no runs/ti-002-...
    assert not [e for e in events if "loss" in e.detail]  # not one step trained again
    assert records.run_for_job(project.catalog, first).id == run.id
    assert records.get_run(project.catalog, run.id).status == finished.status == "done"


def test_cancel_leaves_whole_files_and_rows_that_match_them(project, model_dir) -> None:
    cancel = CancelToken()

    def cancel_at_3(event: Progress) -> None:
        if event.done == 3 and "loss" in event.detail:
            cancel.cancel()

    result, _ = train(project, params(model_dir, save_every=1), on_event=cancel_at_3, cancel=cancel)
    assert (result.status, result.step) == ("canceled", 3)
    assert records.get_run(project.catalog, result.run_id).status == "canceled"
    assert_run_folder_consistent(project, result.run_id)


def test_cancel_through_the_queue_marks_the_run_canceled(project, model_dir) -> None:
    def factory(project_: Project, job_params: dict[str, Any], cancel: CancelToken, job_id: int):
        result = yield from train_ti_job(project_, job_params, cancel, job_id)
        return result.to_json()

    queue = JobQueue(project, kinds={"train-ti": factory})
    job_id = queue.submit("train-ti", params(model_dir, save_every=1))
    cancel = CancelToken()
    for event in queue.run_next(cancel, job_id=job_id):
        if event.done == 2 and "loss" in event.detail:
            cancel.cancel()  # the queue stops iterating after this event
    assert project.catalog.job(job_id)["status"] == "canceled"
    run = records.run_for_job(project.catalog, job_id)
    assert run is not None and run.status == "canceled"
    assert_run_folder_consistent(project, run.id)


def assert_run_folder_consistent(project: Project, run_id: int) -> None:
    """Every file present loads, and checkpoint rows and files match one to one."""
    run = records.get_run(project.catalog, run_id)
    folder = project.root / run.folder
    assert not [p for p in folder.rglob(".*")]
    pts = sorted(folder.glob("*.pt"))
    for pt in pts:
        load_embedding(pt, width=WIDTH)
        load_embedding(pt.with_suffix(".safetensors"), width=WIDTH)
    assert sorted(folder.glob("*.safetensors")) == [p.with_suffix(".safetensors") for p in pts]
    for state in (folder / "state").glob("*.pt"):
        torch.load(state, weights_only=True)
    for png in (folder / "previews").glob("*.png"):
        with Image.open(png) as image:
            image.load()
    loss_rows_ = list(csv.DictReader(open(folder / "loss.csv", encoding="utf-8")))  # noqa: SIM115
    assert all(float(r["loss"]) > 0 for r in loss_rows_)
    rows = {project.root / c.path for c in records.run_checkpoints(project.catalog, run_id)}
    assert rows == set(pts)


# -- params and failures -------------------------------------------------------------------


def test_params_are_checked_before_anything_runs(project, model_dir, tmp_path) -> None:
    assert check_train_params(project, params(model_dir)) == ([], [])
    problems, _ = check_train_params(project, params(model_dir, vectors=0, learning_rate="x"))
    assert any("vectors" in p for p in problems) and any("learning rate" in p for p in problems)
    missing = {**params(model_dir), "model": str(tmp_path / "nope.safetensors")}
    assert "not found" in check_train_params(project, missing)[0][0]
    assert "unknown training parameter" in check_train_params(project, {"modle": "x"})[0][0]
    assert check_train_params(project, params(model_dir) | {"vae": ""}) == ([], [])
    no_vae = params(model_dir) | {"vae": "vae.safetensors"}
    assert check_train_params(project, no_vae)[0] == ["VAE file not found: vae.safetensors"]
    problems, _ = check_train_params(project, params(model_dir) | {"images": [999]})
    assert "no image with id 999" in problems[0]
    woman = {**params(model_dir), "settings": {**params(model_dir)["settings"], "name": "woman"}}
    assert any("CLIP already knows" in w for w in check_train_params(project, woman)[1])
    with pytest.raises(TrainingError, match="no training run with id 42"):
        run_job(train_ti_job(project, {"resume_run_id": 42}))


def test_training_images_outside_the_catalog_use_their_caption_files(
    project, model_dir, tmp_path, make_png
) -> None:
    from charstudio.training.dataset import ImageSelectionError, gather_images

    outside = make_png(tmp_path / "extra" / "00012-portrait.png", seed=9, size=SIZE)
    (tmp_path / "extra" / "00012-portrait.txt").write_text("red hair, bob cut", encoding="utf-8")
    make_png(tmp_path / "extra" / "plain.png", seed=10, size=SIZE, infotext=None)
    first = project.catalog.images()[0]
    images = gather_images(project, [first.id, str(tmp_path / "extra")])
    assert [(i.image_id, i.caption) for i in images] == [
        (first.id, first.prompt),
        (None, "red hair, bob cut"),
        (None, "plain"),  # A1111's file-name caption
    ]
    assert images[1].path == outside
    assert len(gather_images(project, "all")) == 4
    with pytest.raises(ImageSelectionError, match="not found"):
        gather_images(project, [str(tmp_path / "missing.png")])
    with Project.create(tmp_path / "empty", "E") as empty, pytest.raises(ImageSelectionError):
        gather_images(empty, "picks")
