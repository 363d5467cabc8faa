"""Averaging a LoRA run's best epochs into one LoRA (FaceChain's ensemble)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file  # noqa: E402

from charstudio.catalog import Project  # noqa: E402
from charstudio.engine.loras import load_lora  # noqa: E402
from charstudio.training import records  # noqa: E402
from charstudio.training.lora_average import (  # noqa: E402
    average_lora_tensors,
    average_top_epochs,
    lora_checkpoints,
)
from charstudio.training.lora_validate import ModuleTable, validate_lora  # noqa: E402

from .lora_fixture import ALPHA, NAME, RANK, kohya_tensors, make_lora_run  # noqa: E402
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


def deltas(tensors) -> dict[str, torch.Tensor]:
    """Each module's effective update, alpha / rank * up @ down, flattened to 2-D."""
    out = {}
    for key in tensors:
        if key.endswith(".lora_down.weight"):
            stem = key.removesuffix(".lora_down.weight")
            down = tensors[key].double().flatten(1)
            up = tensors[f"{stem}.lora_up.weight"].double().flatten(1)
            out[stem] = up @ down * (float(tensors[f"{stem}.alpha"]) / down.shape[0])
    return out


def test_the_average_of_the_updates_is_exact_when_the_rank_allows(model) -> None:
    inputs = [kohya_tensors(model, seed) for seed in (1, 2, 3)]
    # Three rank-4 updates sum to rank 12 at most: re-factored at rank 12 nothing is lost.
    averaged = average_lora_tensors(inputs, rank=12, alpha=6.0)
    wanted = {s: sum(d[s] for d in map(deltas, inputs)) / 3 for s in deltas(inputs[0])}
    got = deltas(averaged)
    assert set(got) == set(wanted)
    for stem, delta in wanted.items():
        torch.testing.assert_close(got[stem], delta, rtol=1e-4, atol=1e-5)
    # Averaging the factors instead would not give the mean update.
    stem = next(iter(wanted))
    naive = {k: sum(t[k] for t in inputs) / 3 for k in inputs[0]}
    assert not torch.allclose(deltas(naive)[stem], wanted[stem], atol=1e-3)


def test_at_the_run_rank_the_shapes_stay_and_the_best_approximation_is_kept(model) -> None:
    first = kohya_tensors(model, 1)
    # Two epochs sharing their down factors: the mean update has rank 4, so rank 4 is exact.
    second = {k: (v if k.endswith(("lora_down.weight", "alpha")) else v * -0.5)
              for k, v in kohya_tensors(model, 2).items()}  # fmt: skip
    second = {**second, **{k: v for k, v in first.items() if k.endswith("lora_down.weight")}}
    averaged = average_lora_tensors([first, second])
    assert {k: tuple(v.shape) for k, v in averaged.items()} == {
        k: tuple(v.shape) for k, v in first.items()
    }
    assert all(float(averaged[k]) == ALPHA for k in averaged if k.endswith(".alpha"))
    for stem, delta in deltas(averaged).items():
        wanted = (deltas(first)[stem] + deltas(second)[stem]) / 2
        torch.testing.assert_close(delta, wanted, rtol=1e-4, atol=1e-5)
    # Truncation keeps the largest singular directions: the error is the dropped tail's.
    three = average_lora_tensors([kohya_tensors(model, s) for s in (1, 2, 3)])
    stem = next(iter(deltas(three)))
    full = sum(deltas(kohya_tensors(model, s))[stem] for s in (1, 2, 3)) / 3
    values = torch.linalg.svdvals(full)
    error = torch.linalg.matrix_norm(deltas(three)[stem] - full)
    assert float(error) == pytest.approx(float(values[RANK:].norm()), rel=1e-3)


def test_top_epochs_are_averaged_beside_the_run_and_recorded(project: Project, model) -> None:
    run = records.get_run(project.catalog, project.run_id)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="no grid with identity scores"):
        average_top_epochs(project, run.id, k=2)
    # A scored grid: epoch 3 best, then epoch 1.
    with project.catalog.transaction() as conn:
        grid = conn.execute(
            "INSERT INTO grids (run_id, params, created_at) VALUES (?, '{}', 'now')", (run.id,)
        ).lastrowid
        for x, (step, score) in enumerate([(8, 0.7), (16, 0.2), (24, 0.9)]):
            conn.execute(
                "INSERT INTO grid_cells (grid_id, x, y, z, step, seed, score) "
                "VALUES (?, ?, 0, 0, ?, 1, ?)",
                (grid, x, step, score),
            )
    result = average_top_epochs(project, run.id, k=2)
    assert result.epochs == [1, 3] and result.step == -1
    assert result.path == f"runs/lora-001-{NAME}/{NAME}-avg-1-3.safetensors"
    path = project.root / result.path
    saved = load_file(str(path))
    assert all(v.dtype == torch.float16 for v in saved.values())
    epochs = [load_file(str(project.root / f"runs/lora-001-{NAME}/{NAME}-00000{e}.safetensors"))
              for e in (1, 3)]  # fmt: skip
    stem = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    wanted = (deltas(epochs[0])[stem] + deltas(epochs[1])[stem]) / 2
    values = torch.linalg.svdvals(wanted)
    error = torch.linalg.matrix_norm(deltas(saved)[stem] - wanted)
    assert float(error) <= float(values[RANK:].norm()) * 1.01 + 1e-3  # fp16 storage
    # A file A1111 and ComfyUI load, named and hashed for itself, usable by <lora:>.
    table = ModuleTable.from_models(model.unet, model.text_encoder)
    validate_lora(path, table=table, expect_name=f"{NAME}-avg-1-3")
    assert load_lora(path).metadata["ss_training_comment"].startswith("average of epochs 1, 3")
    columns = lora_checkpoints(project.catalog, run)
    assert [c.label for c in columns] == [
        "epoch 1", "epoch 2", "epoch 3", "average of epochs 1, 3"
    ]  # fmt: skip
    # Another average gets the next free negative step; the same epochs again replace it.
    assert average_top_epochs(project, run.id, epochs=[2, 3]).step == -2
    assert average_top_epochs(project, run.id, epochs=[3, 1]).step == -1
    assert len(records.run_checkpoints(project.catalog, run.id)) == 5
    with pytest.raises(ValueError, match=r"no saved epoch 7; saved epochs: 1, 2, 3"):
        average_top_epochs(project, run.id, epochs=[1, 7])
    assert json.loads(json.dumps(result.to_json()))["epochs"] == [1, 3]
