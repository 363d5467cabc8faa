"""The checkpoint grid on a LoRA run: X = epochs (and averages), Y = seeds, Z = weights and
base checkpoints; cells made through <lora:>, scored, the epoch suggested; the grid command."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from charstudio.catalog import Project  # noqa: E402
from charstudio.cli import main  # noqa: E402
from charstudio.engine.runner import ModelRunner  # noqa: E402
from charstudio.engine.sweeps import GenerationSettings  # noqa: E402
from charstudio.jobs import run_job  # noqa: E402
from charstudio.training.checkpoint_grid import (  # noqa: E402
    GridSpec,
    checkpoint_grid_job,
    lora_grid_steps,
)
from charstudio.training.grid_records import column_labels, read_grid  # noqa: E402
from charstudio.training.lora_average import average_top_epochs  # noqa: E402

from .lora_fixture import NAME, STEPS_PER_EPOCH, TOKEN, make_lora_run  # noqa: E402
from .tiny_sd import tiny_components, write_diffusers_folder  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture(scope="module")
def model():
    return tiny_components(5)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, model) -> Path:
    return write_diffusers_folder(tmp_path_factory.mktemp("m") / "tiny-sd", model)


@pytest.fixture
def project(tmp_path: Path, model, model_dir: Path):
    with Project.create(tmp_path / "proj", "Zxq") as project:
        project.run_id = make_lora_run(project, model, model_dir)  # type: ignore[attr-defined]
        yield project


class FakeScorer:
    """Scores by the LoRA file named in the cell's file name (no face recognizer needed)."""

    available = True
    message = ""

    def __init__(self, by_stem: dict[str, float]) -> None:
        self.by_stem = by_stem

    def score(self, path: Path) -> tuple[int, float | None]:
        stem = next(s for s in sorted(self.by_stem, key=len, reverse=True) if s in path.name)
        return 1, self.by_stem[stem]


def params(project: Project, **changes) -> dict:
    spec = GridSpec(
        run_id=project.run_id,  # type: ignore[attr-defined]
        steps=lora_grid_steps(project, project.run_id),  # type: ignore[attr-defined]
        batch=2,
        sampling_steps=2,
        width=32,
        height=32,
    )
    return {**spec.to_json(), **changes}


def test_epochs_are_the_columns_and_the_first_good_epoch_is_suggested(project: Project) -> None:
    scorer = FakeScorer({f"{NAME}-000001": 0.3, f"{NAME}-000002": 0.62, f"{NAME}-000003": 0.4})
    events = []
    result = run_job(checkpoint_grid_job(project, params(project), scorer=scorer), events.append)
    assert [(c.step, c.y) for c in result.cells] == [
        (e * STEPS_PER_EPOCH, y) for e in (1, 2, 3) for y in range(2)
    ]
    assert "Grid of 3 epochs × 2 seeds" in events[0].message
    infotext = Image.open(project.root / result.cells[2].path).text["parameters"]
    assert f"{TOKEN} wearing a sweater" in infotext and f"<lora:{NAME}-000002:1>" in infotext
    assert f"{NAME}-000002: " in infotext  # Lora hashes: the epoch's file was used
    # Each epoch's LoRA reached the model: the same seed gives another image per epoch.
    first = [np.asarray(Image.open(project.root / c.path)) for c in result.cells if c.y == 0]
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[1], first[2])
    assert result.suggestion["epoch"] == 2 and result.suggestion["step"] == 16
    assert "epoch 2 is the first" in result.suggestion["reason"]
    assert "identity drops again at epoch 3" in result.suggestion["reason"]
    assert [(s["epoch"], s["label"]) for s in result.scores] == [
        (1, "epoch 1"), (2, "epoch 2"), (3, "epoch 3")
    ]  # fmt: skip
    with Image.open(project.root / result.grid_path) as grid:
        assert grid.width > 3 * 32 and grid.height > 2 * 32


def test_a_cell_is_what_the_lora_tag_generates(project: Project, model_dir: Path) -> None:
    steps = lora_grid_steps(project, project.run_id, [3])  # type: ignore[attr-defined]
    result = run_job(checkpoint_grid_job(project, params(project, steps=list(steps), batch=1,
                                                         weights=[0.6]), scorer=None))  # fmt: skip
    runner = ModelRunner(project)
    runner.loras.folders.append(project.root / f"runs/lora-001-{NAME}")
    settings = GenerationSettings(
        prompt="a medium closeup color portrait photo of zxq woman wearing a sweater on a "
        f"greek island <lora:{NAME}-000003:0.6>",
        seed=12345678,
        steps=2,
        width=32,
        height=32,
        model=str(model_dir),
    )
    made = run_job(runner.batch(settings, [12345678]))[0][0]
    cell = np.asarray(Image.open(project.root / result.cells[0].path))
    assert np.array_equal(np.asarray(made), cell)


def test_weights_and_an_average_in_one_grid(project: Project) -> None:
    average = average_top_epochs(project, project.run_id, epochs=[2, 3])  # type: ignore[attr-defined]
    steps = lora_grid_steps(project, project.run_id, [1, 2], averaged=True)  # type: ignore[attr-defined]
    assert steps == (8, 16, average.step)
    scorer = FakeScorer({f"{NAME}-000001": 0.2, f"{NAME}-000002": 0.6, f"{NAME}-avg-2-3": 0.8})
    spec = params(project, steps=list(steps), batch=1, weights=[0.6, 1.0])
    result = run_job(checkpoint_grid_job(project, spec, scorer=scorer))
    assert sorted({(c.x, c.z) for c in result.cells}) == [(x, z) for x in range(3) for z in (0, 1)]
    weights = {c.z: Image.open(project.root / c.path).text["parameters"] for c in result.cells
               if c.x == 2}  # fmt: skip
    assert f"<lora:{NAME}-avg-2-3:0.6>" in weights[0] and f"<lora:{NAME}-avg-2-3:1>" in weights[1]
    assert result.suggestion["epoch"] == 2
    assert (
        "average of epochs 2, 3 also passes, with a higher mean (0.80)"
        in (result.suggestion["reason"])
    )
    assert column_labels(project.catalog, project.run_id) == {  # type: ignore[attr-defined]
        8: "epoch 1", 16: "epoch 2", 24: "epoch 3", -1: "average of epochs 2, 3"
    }  # fmt: skip
    stored = read_grid(project.catalog, result.grid_id)
    assert stored.spec is not None and stored.spec.weights == (0.6, 1.0)
    with pytest.raises(ValueError, match=r"no saved epoch 9; saved epochs: 1, 2, 3"):
        lora_grid_steps(project, project.run_id, [9])  # type: ignore[attr-defined]


def test_the_grid_command_takes_epochs(project: Project, capsys) -> None:
    args = ["grid", str(project.root), "--run", f"lora-001-{NAME}", "--epochs", "1:3:2",
            "--weights", "0.8", "--batch", "1", "--sampling-steps", "1", "--width", "32",
            "--height", "32", "--json"]  # fmt: skip
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(c["epoch"], c["step"]) for c in out["cells"]] == [(1, 8), (3, 24)]
    assert Path(out["grid"]).is_file() and "epoch" in out["suggestion"]
    small = ["--batch", "1", "--sampling-steps", "1", "--width", "32", "--height", "32"]
    assert main(["grid", str(project.root), "--run", "1", "--epochs", "1", *small]) == 0
    assert "epoch     1" in capsys.readouterr().out
    assert main(["grid", str(project.root), "--run", "1", "--epochs", "4"]) == 2
    assert "no saved epoch 4; saved epochs: 1, 2, 3" in capsys.readouterr().err
    assert main(["grid", str(project.root), "--run", "1", "--steps", "8"]) == 2
    assert "--epochs" in capsys.readouterr().err
