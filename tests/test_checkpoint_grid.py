"""Comparing a run's checkpoints: step ranges, the grid job on a tiny model, identity scores
and the suggested step, and exporting the chosen step for A1111, ComfyUI and diffusers."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from charstudio.analysis.identity import StepScore, step_scores, suggest_step  # noqa: E402
from charstudio.catalog import Project  # noqa: E402
from charstudio.cli import main  # noqa: E402
from charstudio.engine.embeddings import load_embedding, save_a1111_pt  # noqa: E402
from charstudio.engine.generate import generate_job  # noqa: E402
from charstudio.engine.requests import GenerateRequest  # noqa: E402
from charstudio.engine.runner import ModelRunner  # noqa: E402
from charstudio.engine.sweeps import GenerationSettings  # noqa: E402
from charstudio.jobs import run_job  # noqa: E402
from charstudio.training import records  # noqa: E402
from charstudio.training.checkpoint_grid import (  # noqa: E402
    checkpoint_grid_job,
    parse_steps,
    refine_steps,
)
from charstudio.training.export import export_embedding  # noqa: E402

from .tiny_sd import diffusers_pipeline, tiny_components, write_diffusers_folder  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)
NAME = "zxq"
STEPS = (10, 20, 30)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_diffusers_folder(tmp_path_factory.mktemp("m") / "tiny-sd", tiny_components(5))


@pytest.fixture
def project(tmp_path: Path, model_dir: Path):
    """A project with a finished run: one A1111 .pt per step, each with other vectors."""
    with Project.create(tmp_path / "proj", "Zxq", NAME) as project:
        folder = f"runs/ti-001-{NAME}"
        params = {"model": str(model_dir), "model_hash": "0123456789", "model_name": "tiny-sd"}
        run_id = records.create_run(
            project.catalog, name=NAME, folder=folder, params=params, job_id=None
        )
        generator = torch.Generator().manual_seed(0)
        for step in STEPS:
            vectors = torch.randn(2, 32, generator=generator) * 4
            path = save_a1111_pt(project.root / folder / f"{NAME}-{step}.pt", f"{NAME}-{step}",
                                 vectors, step=step)  # fmt: skip
            records.record_checkpoint(project.catalog, run_id, step, f"{folder}/{path.name}",
                                      1.0 / step, "0" * 64)  # fmt: skip
        records.set_run_status(project.catalog, run_id, "done")
        project.run_id = run_id  # type: ignore[attr-defined]
        yield project


def grid_params(project: Project, **changes) -> dict:
    params = {
        "run_id": project.run_id,  # type: ignore[attr-defined]
        "steps": list(STEPS),
        "batch": 2,
        "sampling_steps": 2,
        "width": 32,
        "height": 32,
    }
    return {**params, **changes}


class FakeScorer:
    """Scores by step, so the suggestion logic runs without a face recognizer."""

    available = True
    message = ""

    def __init__(self, by_step: dict[int, float | None]) -> None:
        self.by_step = by_step

    def score(self, path: Path) -> tuple[int, float | None]:
        step = int(path.stem.split("-")[-2])
        value = self.by_step[step]
        return (0 if value is None else 1), value


def test_step_ranges() -> None:
    assert parse_steps("20:140:20") == [20, 40, 60, 80, 100, 120, 140]
    assert parse_steps("20:60") == [20, 40, 60]
    assert parse_steps("55, 40,40") == [40, 55]
    assert refine_steps(40, 60) == [40, 45, 50, 55, 60]
    assert refine_steps(43, 58) == [45, 50, 55]
    for bad in ("140:20:20", "a:b", "0", "20:140:0"):
        with pytest.raises(ValueError, match="steps"):
            parse_steps(bad)


def test_suggestion_rules() -> None:
    rising = step_scores({20: [0.2, 0.3], 40: [0.55, 0.45], 60: [0.6, 0.7], 80: [0.8, 0.75]})
    assert suggest_step(rising, 0.5).step == 60
    assert "first where every image" in suggest_step(rising, 0.5).reason
    # A face missing in one cell fails the step even when the others score high.
    missing = step_scores({20: [0.9, None], 40: [0.6, 0.7]})
    assert missing[0].detection_rate == 0.5 and suggest_step(missing, 0.5).step == 40
    never = suggest_step(step_scores({20: [0.1, 0.2], 40: [0.3, 0.4]}), 0.5)
    assert never.step is None and "closest is step 40" in never.reason
    collapses = suggest_step(step_scores({20: [0.6, 0.7], 40: [0.8, 0.8], 60: [0.2, 0.9]}), 0.5)
    assert collapses.step == 20 and "over-baked" in collapses.reason and "60" in collapses.reason
    assert suggest_step([], 0.5).step is None
    assert not StepScore(10, None, None, 0.0, 2).passes(0.0)


def test_grid_job_makes_cells_scores_and_a_grid(project: Project) -> None:
    scorer = FakeScorer({10: 0.3, 20: 0.6, 30: 0.7})
    events = []
    result = run_job(
        checkpoint_grid_job(project, grid_params(project), job_id=0, scorer=scorer),
        events.append,
    )
    assert [(c.step, c.seed) for c in result.cells] == [
        (s, 12345678 + y) for s in STEPS for y in range(2)
    ]
    streamed = [e.detail["cell"] for e in events if "cell" in e.detail]
    assert len(streamed) == 6  # each cell reported as soon as it exists
    # Each step's embedding reached the model: the same seed gives another image per step.
    first = [np.asarray(Image.open(project.root / c.path)) for c in result.cells if c.y == 0]
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[1], first[2])
    infotext = Image.open(project.root / result.cells[0].path).text["parameters"]
    assert f"{NAME}-10" in infotext and "Seed: 12345678" in infotext
    assert result.suggestion["step"] == 20
    assert [s["step"] for s in result.scores] == list(STEPS)
    with Image.open(project.root / result.grid_path) as grid:
        assert grid.width > 3 * 32 and grid.height > 2 * 32
    with project.catalog.transaction() as conn:
        rows = conn.execute(
            "SELECT x, y, step, seed, path, score FROM grid_cells WHERE grid_id = ? ORDER BY x, y",
            (result.grid_id,),
        ).fetchall()
        stored = conn.execute("SELECT path FROM grids WHERE id = ?", (result.grid_id,)).fetchone()
    assert len(rows) == 6 and rows[2][2] == 20 and rows[2][5] == pytest.approx(0.6)
    assert stored[0] == result.grid_path


def test_a_cell_matches_generating_with_the_step_name(project: Project, model_dir: Path) -> None:
    """The grid uses the generation path: a cell is exactly what generating NAME-20 gives."""
    result = run_job(
        checkpoint_grid_job(project, grid_params(project, steps=[20], batch=1), scorer=None)
    )
    runner = ModelRunner(project)
    runner.embeddings.folders.append(project.root / f"runs/ti-001-{NAME}")
    settings = GenerationSettings(
        prompt=f"a medium closeup color portrait photo of {NAME}-20 wearing a sweater on a "
        "greek island",
        seed=12345678,
        steps=2,
        width=32,
        height=32,
        model=str(model_dir),
    )
    made = run_job(runner.batch(settings, [12345678]))[0][0]
    assert np.array_equal(
        np.asarray(made), np.asarray(Image.open(project.root / result.cells[0].path))
    )


def test_unknown_steps_are_refused_before_anything_runs(project: Project) -> None:
    with pytest.raises(ValueError, match=r"no checkpoint for step 40.*saved steps: 10, 20, 30"):
        run_job(checkpoint_grid_job(project, grid_params(project, steps=[10, 40]), scorer=None))


def test_export_writes_files_that_load_and_generate(project: Project, model_dir, tmp_path) -> None:
    comfy = tmp_path / "ComfyUI" / "models" / "embeddings"
    result = export_embedding(project, project.run_id, 20, folders=[comfy])  # type: ignore[attr-defined]
    own = project.root / "embeddings"
    assert sorted(Path(f).name for f in result.files) == sorted(
        [f"{NAME}.pt", f"{NAME}.safetensors"] * 2
    )
    source = load_embedding(project.root / f"runs/ti-001-{NAME}/{NAME}-20.pt", width=32)
    for folder in (own, comfy):
        for suffix in (".pt", ".safetensors"):
            exported = load_embedding(folder / f"{NAME}{suffix}", width=32)
            assert torch.equal(exported.vectors, source.vectors)
    pt = load_embedding(own / f"{NAME}.pt", width=32)
    assert (pt.name, pt.step, pt.sd_checkpoint) == (NAME, 20, "0123456789")
    with project.catalog.transaction() as conn:
        assert conn.execute("SELECT COUNT(*) FROM exports WHERE step = 20").fetchone()[0] == 4

    # The bare token name now generates with the step-20 vectors, as NAME-20 did.
    def image(prompt: str) -> np.ndarray:
        runner = ModelRunner(project)
        runner.embeddings.folders.append(project.root / f"runs/ti-001-{NAME}")
        request = GenerateRequest(GenerationSettings(prompt=prompt, seed=7, steps=2, width=32,
                                                     height=32, model=str(model_dir)))  # fmt: skip
        job_id = project.catalog.create_job("generate", {}, status="running")
        made = run_job(generate_job(project, request.to_params(), job_id=job_id, runner=runner))
        return np.asarray(Image.open(project.file_path(made.paths[0])))

    assert np.array_equal(image(f"a photo of {NAME}"), image(f"a photo of {NAME}-20 "))

    # diffusers loads both files; the .pt's token is its name.
    pipe = diffusers_pipeline(tiny_components(5), tmp_path / "tok")
    pipe.load_textual_inversion(str(own / f"{NAME}.pt"))
    pipe.load_textual_inversion(str(comfy / f"{NAME}.safetensors"), token="qqxemb")
    table = pipe.text_encoder.get_input_embeddings().weight
    for token in (NAME, "qqxemb"):
        ids = pipe.tokenizer.convert_tokens_to_ids([token, f"{token}_1"])
        assert torch.equal(table[ids].detach(), source.vectors)


def test_grid_and_export_commands(project: Project, capsys, tmp_path) -> None:
    run = str(project.run_id)  # type: ignore[attr-defined]
    args = ["grid", str(project.root), "--run", run, "--steps", "10:30:10", "--batch", "1",
            "--sampling-steps", "1", "--width", "32", "--height", "32", "--json"]  # fmt: skip
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert [c["step"] for c in out["cells"]] == [10, 20, 30]
    assert Path(out["grid"]).is_file() and all(Path(c["image"]).is_file() for c in out["cells"])
    assert "suggestion" in out and "identity" in out["cells"][0]
    a1111 = tmp_path / "a1111" / "embeddings"
    assert main(["export", str(project.root), "--run", f"ti-001-{NAME}", "--step", "30",
                 "--to", str(a1111), "--remember", "--json"]) == 0  # fmt: skip
    files = json.loads(capsys.readouterr().out)["files"]
    assert str(a1111 / f"{NAME}.pt") in files
    # Remembered: the next export goes there too without --to.
    assert main(["export", str(project.root), "--run", "1", "--step", "10", "--json"]) == 0
    assert str(a1111 / f"{NAME}.safetensors") in json.loads(capsys.readouterr().out)["files"]
    assert main(["export", str(project.root), "--run", "1", "--step", "15"]) == 2
    assert "no checkpoint at step 15" in capsys.readouterr().err
