"""``charstudio train-lora`` and ``charstudio captions`` from the command line: bad options and a
missing model refused before torch is imported, a tiny run and its resume, captions shown and
written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from charstudio.catalog import Project
from charstudio.cli import main

from .test_train_ti import SIZE, TOKEN, make_project, responsive_tiny_model
from .tiny_sd import write_diffusers_folder


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lora_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_diffusers_folder(
        tmp_path_factory.mktemp("models") / "tiny-sd", responsive_tiny_model()
    )


@pytest.fixture
def root(tmp_path: Path) -> str:
    make_project(tmp_path / "proj").close()
    return str(tmp_path / "proj")


def _tiny(model: Path) -> list[str]:
    return [
        "--model",
        str(model),
        "--resolution",
        str(SIZE),
        "--no-buckets",
        "--epochs",
        "1",
        "--repeats",
        "1",
        "--batch-size",
        "2",
        "--dim",
        "2",
        "--sample-every-epochs",
        "0",
        "--device",
        "cpu",
    ]


def test_bad_options_and_missing_model_are_refused_before_torch(root: str) -> None:
    script = (
        "import sys; from charstudio.cli import main; "
        f"codes = [main(['train-lora', {root!r}, '--model', 'no-such-model.safetensors']), "
        f"main(['train-lora', {root!r}, '--model', 'x', '--dim', '0', '--caption-dropout', '2'])]; "
        "print(codes, 'torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.stdout.strip() == "[2, 2] False", done.stderr
    assert "no-such-model" in done.stderr
    assert "network dim must be at least 1, not 0" in done.stderr
    assert "caption dropout must be between 0 and 1" in done.stderr
    assert "Traceback" not in done.stderr


def test_unknown_optimizer_is_an_argparse_error(root: str, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["train-lora", root, "--model", "x", "--optimizer", "SGD"])
    assert exited.value.code == 2
    assert "invalid choice: 'SGD'" in capsys.readouterr().err


def test_train_then_resume_for_more_epochs(root: str, lora_model_dir: Path, capsys) -> None:
    assert main(["train-lora", root, *_tiny(lora_model_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["status"], out["epoch"], out["steps_per_epoch"]) == ("done", 1, 2)
    assert [c["epoch"] for c in out["checkpoints"]] == [1]
    first = Path(out["checkpoints"][0]["file"])
    assert first.name == f"{TOKEN}-000001.safetensors" and first.is_file()

    assert main(["train-lora", root, "--resume", str(out["run_id"]), "--dim", "4"]) == 2
    assert "only --epochs may change" in capsys.readouterr().err

    assert main(["train-lora", root, "--resume", out["folder"], "--epochs", "2", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["run_id"], again["status"], again["step"]) == (out["run_id"], "done", 4)
    assert [c["epoch"] for c in again["checkpoints"]] == [1, 2]
    assert first.read_bytes() and Path(again["checkpoints"][1]["file"]).is_file()


def test_captions_shown_and_written(root: str, capsys) -> None:
    assert main(["captions", root, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # Four imported images with the same prompt: it is all character, so all token.
    assert [c["caption"] for c in out["captions"]] == [TOKEN] * 4
    assert {c["source"] for c in out["captions"]} == {"prompt"} and out["written"] == []
    with Project.open(Path(root)) as project:
        first = project.catalog.images()[0]
        from charstudio.training.captions import set_caption

        set_caption(project.catalog, first.id, f"{TOKEN}, smiling")
    assert main(["captions", root, "--write"]) == 0
    text = capsys.readouterr().out
    assert f"[edited]  {TOKEN}, smiling" in text and "wrote 4 caption file(s)" in text
    files = sorted(Path(root).rglob("*.txt"))
    assert len(files) == 4
    assert {f.read_text(encoding="utf-8") for f in files} == {TOKEN, f"{TOKEN}, smiling"}


def test_prodigy_takes_its_own_rates_unless_given(root: str) -> None:
    from charstudio.cli import build_parser
    from charstudio.training.lora_cli_args import train_lora_params_from_args

    with Project.open(Path(root)) as project:

        def settings_for(*extra: str) -> dict:
            args = build_parser().parse_args(["train-lora", root, "--model", "m", *extra])
            return train_lora_params_from_args(project, args)["settings"]

        prodigy = settings_for("--optimizer", "Prodigy")
        assert (prodigy["unet_lr"], prodigy["te_lr"], prodigy["scheduler"]) == (
            1.0,
            1.0,
            "constant",
        )
        assert settings_for("--optimizer", "Prodigy", "--unet-lr", "0.5")["unet_lr"] == 0.5
        assert settings_for()["unet_lr"] == 1e-4 and settings_for()["optimizer"] == "AdamW"
