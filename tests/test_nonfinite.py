"""No silent NaN: generation, training, checkpoint grids and ``--json`` on tiny models whose
weights or outputs are forced to NaN. A NaN image is never a black PNG recorded as done, a NaN
embedding is never saved, a NaN grid cell is shown as failed, and JSON stays strict."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from charstudio.catalog import Project  # noqa: E402
from charstudio.cli import main  # noqa: E402
from charstudio.engine.embeddings import save_a1111_pt  # noqa: E402
from charstudio.engine.generate import generate_job  # noqa: E402
from charstudio.engine.model_loading import load_sd15  # noqa: E402
from charstudio.engine.requests import GenerateRequest  # noqa: E402
from charstudio.engine.runner import MODEL_CACHE, ModelRunner  # noqa: E402
from charstudio.engine.runtime import EngineOptions  # noqa: E402
from charstudio.engine.sweeps import GenerationSettings  # noqa: E402
from charstudio.finite_json import dumps, json_ready  # noqa: E402
from charstudio.jobs import run_job  # noqa: E402
from charstudio.jobs.queue import JobQueue  # noqa: E402
from charstudio.training import records  # noqa: E402
from charstudio.training.checkpoint_grid import checkpoint_grid_job  # noqa: E402
from charstudio.training.grid_records import read_cells  # noqa: E402
from charstudio.training.ti import TrainingError, train_ti_job  # noqa: E402

from .generation import tiny_settings  # noqa: E402
from .test_train_ti import TOKEN, make_project, params, responsive_tiny_model  # noqa: E402
from .tiny_sd import tiny_components, write_diffusers_folder  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)

PROMPT = "a photo of a woman, neutral gray background"


def strict_loads(text: str) -> Any:
    """json.loads that refuses NaN, Infinity and -Infinity."""

    def refuse(name: str) -> Any:
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(autouse=True)
def fresh_model_cache():
    """These tests break their models on purpose: never leave one resident for other tests."""
    MODEL_CACHE.clear()
    yield
    MODEL_CACHE.clear()


def settings(model: Path, **changes: Any) -> GenerationSettings:
    return tiny_settings(model, **{"prompt": PROMPT, **changes})


def new_job(project: Project) -> int:
    return project.catalog.create_job("generate", {}, status="running")


def generated_files(project: Project) -> list[Path]:
    folder = project.root / "images" / "generated"
    return sorted(folder.rglob("*.png")) if folder.is_dir() else []


def nan_unet_model(folder: Path) -> Path:
    model = tiny_components(5)
    with torch.no_grad():
        model.unet.conv_in.weight[0, 0, 0, 0] = float("nan")
    return write_diffusers_folder(folder, model)


# -- generation -------------------------------------------------------------------------------


def test_a_half_precision_vae_that_gives_nan_is_retried_in_fp32(project, tmp_path) -> None:
    model = write_diffusers_folder(tmp_path / "tiny-sd", tiny_components(5))
    request = GenerateRequest(settings(model))
    reference = run_job(generate_job(project, request.to_params(), job_id=new_job(project)))
    with Image.open(project.file_path(reference.paths[0])) as image:
        expected = np.asarray(image.convert("RGB")).astype(int)

    runner = ModelRunner(project, options=EngineOptions())
    components = runner.load(settings(model))
    components.vae.to(dtype=torch.bfloat16)
    real_decode = components.vae.decode

    def decode(latents, *args, **kwargs):  # NaN in half precision only, as the fp16 VAE does
        output = real_decode(latents, *args, **kwargs)
        if components.vae.dtype in (torch.float16, torch.bfloat16):
            output.sample.fill_(float("nan"))
        return output

    components.vae.decode = decode
    events = []
    job = generate_job(project, request.to_params(), job_id=new_job(project), runner=runner)
    result = run_job(job, events.append)
    assert not result.failed and len(result.image_ids) == 1
    assert components.vae.dtype == torch.float32  # for the rest of the job
    assert any("fp32" in note for note in result.notes)
    assert any("fp32" in event.message for event in events)
    with Image.open(project.file_path(result.paths[0])) as image:
        made = np.asarray(image.convert("RGB")).astype(int)
    assert made.max() > 0  # not a black picture
    assert np.abs(made - expected).mean() < 4  # the same image (weights went through bf16)

    # The next job gets the model's own precision back.
    ModelRunner(project, options=EngineOptions()).load(settings(model))
    assert components.vae.dtype == torch.bfloat16


def test_a_unet_that_outputs_nan_fails_the_image_and_writes_nothing(project, tmp_path) -> None:
    model = nan_unet_model(tmp_path / "nan-unet")
    request = GenerateRequest(settings(model, batch_size=2))
    queue = JobQueue(project)
    job_id = queue.submit("generate", request.to_params())
    ended = run_job(queue.run_next(job_id=job_id))
    assert ended is not None and ended.status == "failed"
    assert "sampler produced NaN at step 1" in (ended.error or "")
    assert "try another sampler or full precision" in (ended.error or "")
    assert generated_files(project) == [] and project.catalog.image_count() == 0


def test_only_the_nan_image_of_a_batch_fails(project, tmp_path) -> None:
    model = write_diffusers_folder(tmp_path / "tiny-sd", tiny_components(5))
    runner = ModelRunner(project, options=EngineOptions())
    components = runner.load(settings(model))
    real_forward = components.unet.forward

    def forward(sample, *args, **kwargs):  # the second image of the batch (uncond and cond)
        output = real_forward(sample, *args, **kwargs)
        half = sample.shape[0] // 2
        output.sample[[1, half + 1]] = float("nan")
        return output

    components.unet.forward = forward
    try:
        request = GenerateRequest(settings(model, batch_size=2))
        result = run_job(generate_job(project, request.to_params(), job_id=new_job(project),
                                      runner=runner))  # fmt: skip
    finally:
        components.unet.forward = real_forward
    assert len(result.image_ids) == 1 and project.catalog.image_count() == 1
    assert [(f["index"], f["seed"]) for f in result.failed] == [(1, 1235)]
    assert "NaN at step 1" in result.failed[0]["error"]
    assert [p.name for p in generated_files(project)] == ["0000-1234.png"]


def test_generate_json_output_is_strict_and_names_the_failure(project, tmp_path, capsys) -> None:
    model = nan_unet_model(tmp_path / "nan-unet")
    args = ["generate", str(project.root), "--model", str(model), "--prompt", PROMPT,
            "--steps", "2", "--width", "32", "--height", "32", "--json"]  # fmt: skip
    assert main(args) == 1
    out = strict_loads(capsys.readouterr().out)
    assert out["status"] == "failed" and "NaN" in out["error"] and out["images"] == []


def test_json_helpers_turn_nan_into_null_with_an_error() -> None:
    value = {"loss": float("nan"), "scores": [0.5, float("inf")], "step": 3}
    ready = json_ready(value)
    assert ready["loss"] is None and ready["scores"] == [0.5, None] and ready["step"] == 3
    assert "loss" in ready["nonfinite_error"] and "scores[1]" in ready["nonfinite_error"]
    assert strict_loads(dumps(value))["loss"] is None
    assert json_ready({"loss": 0.25}) == {"loss": 0.25}  # nothing added when all is finite


def test_job_results_are_stored_as_strict_json(project) -> None:
    job_id = new_job(project)
    project.catalog.update_job(job_id, status="done", result={"loss": math.nan})
    stored = strict_loads(project.catalog.job(job_id)["result"])
    assert stored["loss"] is None and "loss" in stored["nonfinite_error"]


# -- training ---------------------------------------------------------------------------------


def model_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".pt", ".safetensors"))


def test_a_model_with_nan_weights_stops_training_at_step_1(tmp_path) -> None:
    model = responsive_tiny_model()
    with torch.no_grad():
        model.text_encoder.final_layer_norm.weight[0] = float("nan")
    folder = write_diffusers_folder(tmp_path / "nan-te", model)
    with make_project(tmp_path / "proj") as project:
        queue = JobQueue(project)
        job_id = queue.submit("train-ti", params(folder, save_every=1, preview_every=1))
        ended = run_job(queue.run_next(job_id=job_id))
        assert ended is not None and ended.status == "failed"
        message = ended.error or ""
        assert "Training stopped at step 1: the loss became NaN" in message
        assert "NaN weights" in message and "text encoder" in message
        (run,) = records.list_runs(project.catalog, kind=None)
        assert run.status == "failed" and "step 1" in (run.error or "")
        run_folder = project.root / run.folder
        assert model_files(run_folder) == []
        assert records.run_checkpoints(project.catalog, run.id) == []
        assert not list(run_folder.rglob("*.png"))  # no preview either


def test_nan_midway_keeps_the_last_finite_checkpoint(tmp_path) -> None:
    """The UNet turns NaN on the 3rd optimizer step (2 micro-batches per step)."""
    calls = {"training": 0}

    def loader(*args: Any, **kwargs: Any) -> Any:
        components = load_sd15(*args, **kwargs)

        def hook(_module, _inputs, output):
            if not torch.is_grad_enabled():  # previews run without gradients: leave them
                return output
            calls["training"] += 1
            if calls["training"] > 4:
                output.sample.mul_(float("nan"))
            return output

        components.unet.register_forward_hook(hook)
        return components

    folder = write_diffusers_folder(tmp_path / "tiny", responsive_tiny_model())
    with make_project(tmp_path / "proj") as project:
        job = train_ti_job(project, params(folder, save_every=1, preview_every=0), loader=loader)
        with pytest.raises(TrainingError) as raised:
            run_job(job)
        message = str(raised.value)
        assert "Training stopped at step 3: the loss became NaN" in message
        assert "learning rate" in message and "step 2, is kept" in message
        (run,) = records.list_runs(project.catalog, kind=None)
        assert run.status == "failed" and "step 3" in (run.error or "")
        run_folder = project.root / run.folder
        names = [p.name for p in model_files(run_folder)]
        assert names == [f"{TOKEN}-{s}{ext}" for s in (1, 2) for ext in (".pt", ".safetensors")]
        assert [c.step for c in records.run_checkpoints(project.catalog, run.id)] == [1, 2]
        for path in model_files(run_folder):
            if path.suffix == ".pt":
                vectors = torch.load(path, weights_only=True)["string_to_param"]["*"]
                assert torch.isfinite(vectors).all()
        losses = (run_folder / "loss.csv").read_text(encoding="utf-8").lower()
        assert "nan" not in losses


def test_a_preview_that_comes_out_nan_is_not_saved(tmp_path, monkeypatch) -> None:
    import charstudio.engine.sampling as sampling

    real = sampling.decode_latents

    def decode(vae, latents, *, mode="batch"):
        return real(vae, latents * float("nan"), mode=mode)

    monkeypatch.setattr(sampling, "decode_latents", decode)
    folder = write_diffusers_folder(tmp_path / "tiny", responsive_tiny_model())
    with make_project(tmp_path / "proj") as project:
        events = []
        job = train_ti_job(project, params(folder, max_steps=2, save_every=2, preview_every=1))
        result = run_job(job, events.append)
        assert result.status == "done" and result.previews == []
        assert any("Preview at step 1 not saved" in w for w in result.warnings)
        assert any("preview_error" in e.detail for e in events)


def test_train_json_output_is_strict_and_names_the_step(tmp_path, capsys) -> None:
    model = responsive_tiny_model()
    with torch.no_grad():
        model.unet.conv_in.weight[0, 0, 0, 0] = float("nan")
    folder = write_diffusers_folder(tmp_path / "nan-unet", model)
    with make_project(tmp_path / "proj") as project:
        root = str(project.root)
    args = ["train-ti", root, "--model", str(folder), "--steps", "2", "--save-every", "1",
            "--preview-every", "0", "--width", "16", "--height", "16", "--json"]  # fmt: skip
    assert main(args) == 1
    out = strict_loads(capsys.readouterr().out)
    assert out["status"] == "failed" and "step 1" in out["error"] and "UNet" in out["error"]
    assert out["checkpoints"] == [] and out["run_id"] is not None


# -- checkpoint grids -------------------------------------------------------------------------

NAME = "zxq"


@pytest.fixture
def grid_project(tmp_path: Path):
    """A finished run with a good step 10 and a NaN step 20 (a file from a broken run)."""
    model = write_diffusers_folder(tmp_path / "tiny-sd", tiny_components(5))
    with Project.create(tmp_path / "grid-proj", "Zxq", NAME) as project:
        folder = f"runs/ti-001-{NAME}"
        run_id = records.create_run(
            project.catalog, name=NAME, folder=folder, params={"model": str(model)}, job_id=None
        )
        for step, fill in ((10, 0.5), (20, float("nan"))):
            vectors = torch.full((2, 32), fill)
            path = save_a1111_pt(project.root / folder / f"{NAME}-{step}.pt", f"{NAME}-{step}",
                                 vectors, step=step)  # fmt: skip
            records.record_checkpoint(project.catalog, run_id, step, f"{folder}/{path.name}",
                                      0.1, "0" * 64)  # fmt: skip
        records.set_run_status(project.catalog, run_id, "done")
        project.run_id = run_id  # type: ignore[attr-defined]
        yield project


class StepScorer:
    available = True
    message = ""

    def __init__(self) -> None:
        self.scored: list[str] = []

    def score(self, path: Path) -> tuple[int, float | None]:
        self.scored.append(path.name)
        return 1, 0.8


def test_a_nan_checkpoint_gives_failed_grid_cells(grid_project, qtbot) -> None:
    project = grid_project
    scorer = StepScorer()
    grid = {"run_id": project.run_id, "steps": [10, 20], "batch": 2, "sampling_steps": 2,
            "width": 32, "height": 32}  # fmt: skip
    result = run_job(checkpoint_grid_job(project, grid, scorer=scorer))
    assert not list((project.root / f"grids/grid-{result.grid_id:05d}").glob(f"*{NAME}-20-*"))
    failed = [c for c in result.cells if c.failed]
    assert [(c.step, c.y) for c in failed] == [(20, 0), (20, 1)]
    assert all("NaN" in (c.error or "") and c.path == "" and c.score is None for c in failed)
    assert all(f"{NAME}-20" not in name for name in scorer.scored) and len(scorer.scored) == 2
    assert [s["step"] for s in result.scores] == [10]
    strict_loads(dumps(result.to_json()))

    cells = read_cells(project.catalog, result.grid_id)
    assert [(c["step"], bool(c["error"])) for c in cells] == [
        (10, False), (10, False), (20, True), (20, True)
    ]  # fmt: skip

    from charstudio.ui.grid_viewer import GridViewer

    viewer = GridViewer()
    qtbot.addWidget(viewer)
    viewer.load_grid(project, result.grid_id)
    cell = viewer.cell(1, 0)
    assert cell is not None and cell.state == "failed" and "NaN" in (cell.error or "")
    assert "failed" in viewer.column_tooltip(1)
    good = viewer.cell(0, 0)
    assert good is not None and good.state != "failed"
    viewer.set_project(None)
