"""The whole workflow of DESIGN.md from the command line, on a tiny model: generate a sweep,
pick, train an embedding, compare its steps in a grid, export one, generate with the token."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from charstudio.cli import main  # noqa: E402

from .tiny_sd import tiny_components, write_diffusers_folder  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)
pytestmark = pytest.mark.slow


def run(capsys, *args: str) -> dict | list:
    assert main([*args, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_generate_pick_train_compare_export_generate(tmp_path: Path, capsys) -> None:
    project = str(tmp_path / "lea")
    run(capsys, "new", project, "--name", "Léa", "--token", "l3a")
    model = str(write_diffusers_folder(tmp_path / "models" / "tiny-sd", tiny_components(5)))
    tiny = ["--width", "32", "--height", "32"]

    made = run(capsys, "generate", project, "--model", model, "--prompt",
               "a closeup photo of a woman, front shot", "--x",
               "Prompt S/R:front shot, side angle", "--steps", "2", "--batch-size", "2",
               *tiny)  # fmt: skip
    assert made["status"] == "done" and len(made["images"]) == 4
    picks = [str(image["id"]) for image in made["images"][:2]]
    run(capsys, "decide", project, *picks, "--flag", "pick")

    trained = run(capsys, "train-ti", project, "--model", model, "--steps", "4",
                  "--save-every", "2", "--preview-every", "0", *tiny)  # fmt: skip
    assert trained["status"] == "done"
    assert [c["step"] for c in trained["checkpoints"]] == [2, 4]
    run_id = str(trained["run_id"])

    grid = run(capsys, "grid", project, "--run", run_id, "--steps", "2:4:2", "--batch", "1",
               "--sampling-steps", "1", *tiny)  # fmt: skip
    assert [cell["step"] for cell in grid["cells"]] == [2, 4]
    assert Path(grid["grid"]).is_file()

    exported = run(capsys, "export", project, "--run", run_id, "--step", "4")
    assert sorted(Path(f).name for f in exported["files"]) == ["l3a.pt", "l3a.safetensors"]

    again = run(capsys, "generate", project, "--model", model, "--prompt",
                "a medium closeup photo of l3a", "--steps", "1", *tiny)  # fmt: skip
    info = run(capsys, "info", again["images"][0]["file"])
    assert info[0]["extras"]["TI hashes"].startswith("l3a: ")  # the exported embedding was used
