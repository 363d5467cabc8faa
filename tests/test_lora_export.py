"""Exporting a LoRA run's epoch (or average) to A1111's models/Lora and ComfyUI's models/loras:
the validated file, A1111's sidecars, the catalog record; the file loads in diffusers and
generates in charstudio as the run's own file does."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from charstudio.catalog import Project  # noqa: E402
from charstudio.cli import main  # noqa: E402
from charstudio.engine.model_hash import addnet_hash  # noqa: E402
from charstudio.engine.runner import ModelRunner  # noqa: E402
from charstudio.engine.sweeps import GenerationSettings  # noqa: E402
from charstudio.jobs import run_job  # noqa: E402
from charstudio.training import records  # noqa: E402
from charstudio.training.lora_average import average_top_epochs  # noqa: E402
from charstudio.training.lora_export import export_lora, lora_folder  # noqa: E402
from charstudio.training.lora_metadata import save_lora_file  # noqa: E402

from .lora_fixture import (  # noqa: E402
    ALPHA,
    NAME,
    RANK,
    TOKEN,
    kohya_metadata,
    kohya_tensors,
    make_lora_run,
)
from .tiny_sd import diffusers_pipeline, tiny_components, write_diffusers_folder  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)


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


def installs(tmp_path: Path) -> tuple[Path, Path]:
    """An A1111 install and a ComfyUI install, as their folders look."""
    a1111 = tmp_path / "stable-diffusion-webui"
    (a1111 / "models" / "Stable-diffusion").mkdir(parents=True)
    comfy = tmp_path / "ComfyUI"
    (comfy / "models" / "checkpoints").mkdir(parents=True)
    return a1111, comfy


def test_export_writes_validated_files_and_sidecars(project: Project, tmp_path: Path) -> None:
    a1111, comfy = installs(tmp_path)
    assert lora_folder(a1111) == a1111 / "models" / "Lora"
    assert lora_folder(comfy / "models") == comfy / "models" / "loras"
    preview = tmp_path / "chosen.png"
    Image.new("RGB", (32, 32), (200, 10, 10)).save(preview)
    result = export_lora(
        project, project.run_id, epoch=2, folders=[a1111, comfy], name="Zoe", preview=preview,  # type: ignore[attr-defined]
    )  # fmt: skip
    assert (result.epoch, result.step) == (2, 16)
    own = project.root / "loras"
    folders = [own, a1111 / "models" / "Lora", comfy / "models" / "loras"]
    source = project.root / f"runs/lora-001-{NAME}/{NAME}-000002.safetensors"
    weights = load_file(str(source))
    for folder in folders:
        path = folder / "Zoe.safetensors"
        assert str(path) in result.files
        exported = load_file(str(path))
        assert exported.keys() == weights.keys()
        assert all(torch.equal(exported[k], weights[k]) for k in weights)
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata()
        # A1111's alias and hash; the training metadata kept.
        assert meta["ss_output_name"] == "Zoe" and meta["ss_network_dim"] == str(RANK)
        assert meta["sshs_model_hash"] == addnet_hash(path.read_bytes())
        assert meta["modelspec.title"] == "Zoe" and meta["modelspec.trigger_phrase"] == TOKEN
        # Written like every other file the app writes: the umask decides.
        mask = os.umask(0)
        os.umask(mask)
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    for folder in folders[1:]:
        card = json.loads((folder / "Zoe.json").read_text(encoding="utf-8"))
        assert card["activation text"] == TOKEN and card["preferred weight"] == 0.8
        assert card["sd version"] == "SD1" and card["negative text"] == ""
        assert (folder / "Zoe.preview.png").read_bytes() == preview.read_bytes()
    assert not (own / "Zoe.json").exists()
    with project.catalog.transaction() as conn:
        rows = conn.execute("SELECT step, name, path FROM exports ORDER BY id").fetchall()
    assert [(r[0], r[1]) for r in rows] == [(16, "Zoe")] * 3
    assert rows[0][2] == "loras/Zoe.safetensors"


def test_the_exported_file_loads_in_diffusers_with_the_trained_update(
    project: Project, tmp_path: Path
) -> None:
    export_lora(project, project.run_id, epoch=3)  # type: ignore[attr-defined]
    path = project.root / "loras" / f"{NAME}.safetensors"
    pipe = diffusers_pipeline(tiny_components(5), tmp_path / "tok")
    target = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    before = pipe.unet.get_submodule(target).weight.detach().clone()
    pipe.load_lora_weights(str(path))
    pipe.fuse_lora(lora_scale=0.8)
    after = pipe.unet.get_submodule(target).weight.detach()
    tensors = load_file(str(path))
    stem = "lora_unet_" + target.replace(".", "_")
    up, down = (
        tensors[f"{stem}.lora_up.weight"].float(),
        tensors[f"{stem}.lora_down.weight"].float(),
    )
    torch.testing.assert_close(after - before, 0.8 * ALPHA / RANK * up @ down, rtol=1e-3,
                               atol=1e-4)  # fmt: skip


def test_lora_name_in_charstudio_gives_the_run_files_images(
    project: Project, model_dir: Path
) -> None:
    export_lora(project, project.run_id, epoch=2, name="Zoe")  # type: ignore[attr-defined]

    def image(tag: str) -> np.ndarray:
        runner = ModelRunner(project)
        runner.loras.folders.append(project.root / f"runs/lora-001-{NAME}")
        settings = GenerationSettings(prompt=f"a photo of {TOKEN} {tag}", seed=7, steps=2,
                                      width=32, height=32, model=str(model_dir))  # fmt: skip
        made = run_job(runner.batch(settings, [7]))[0]
        return np.asarray(made[0])

    exported = image("<lora:Zoe:0.8>")
    assert np.array_equal(exported, image(f"<lora:{NAME}-000002:0.8>"))
    assert not np.array_equal(exported, image(f"<lora:{NAME}-000003:0.8>"))


def test_averaged_and_refused_exports(project: Project, model, tmp_path: Path) -> None:
    run_id = project.run_id  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="no averaged LoRA"):
        export_lora(project, run_id, averaged=True)
    average_top_epochs(project, run_id, epochs=[1, 2])
    result = export_lora(project, run_id, averaged=True, name="ZoeAvg")
    assert result.averaged == [1, 2] and result.step == -1
    with pytest.raises(ValueError, match=r"no saved epoch 9; saved epochs: 1, 2, 3"):
        export_lora(project, run_id, epoch=9)
    with pytest.raises(ValueError, match="export name"):
        export_lora(project, run_id, epoch=1, name="con")
    # An epoch file with a key A1111 cannot map is refused before anything is written.
    tensors = kohya_tensors(model, 4)
    tensors["lora_unet_conv_in.lora_down.weight"] = torch.zeros(RANK, 4, 3, 3)
    tensors["lora_unet_conv_in.lora_up.weight"] = torch.zeros(32, RANK, 1, 1)
    relative = f"runs/lora-001-{NAME}/{NAME}-000004.safetensors"
    digest = save_lora_file(project.root / relative, tensors, kohya_metadata(NAME, 4))
    records.record_checkpoint(project.catalog, run_id, 32, relative, None, digest)
    target = tmp_path / "a1111-loras"
    with pytest.raises(ValueError) as caught:
        export_lora(project, run_id, epoch=4, folders=[target], name="Broken")
    assert "lora_unet_conv_in.lora_down.weight" in str(caught.value)
    assert not (project.root / "loras" / "Broken.safetensors").exists()
    assert not target.exists()


def test_the_export_command_takes_epochs(project: Project, tmp_path: Path, capsys) -> None:
    a1111, _ = installs(tmp_path)
    root = str(project.root)
    assert main(["export", root, "--run", f"lora-001-{NAME}", "--epoch", "1", "--to",
                 str(a1111), "--remember", "--weight", "0.7", "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["epoch"] == 1 and str(a1111 / "models" / "Lora" / f"{NAME}.json") in out["files"]
    card = json.loads((a1111 / "models" / "Lora" / f"{NAME}.json").read_text(encoding="utf-8"))
    assert card["preferred weight"] == 0.7
    # Remembered for LoRA exports: the next one goes there without --to.
    assert main(["export", root, "--run", "1", "--epoch", "3", "--name", "Later", "--json"]) == 0
    assert (
        str(a1111 / "models" / "Lora" / "Later.safetensors")
        in json.loads(capsys.readouterr().out)["files"]
    )
    assert main(["export", root, "--run", "1"]) == 2
    assert "--epoch N" in capsys.readouterr().err
    assert main(["export", root, "--run", "1", "--epoch", "5"]) == 2
    assert "no saved epoch 5" in capsys.readouterr().err
