"""Model files whose pickle would run code when loaded: a payload that writes a marker file
must never run, whatever the file claims to be (checkpoint, LoRA or embedding; ``.ckpt``,
``.pt``, ``.bin``, zip or legacy pickle; a diffusers folder's ``.bin`` weights) and whichever
way it is reached (loaded directly, listed in a library, used by ``charstudio generate``).
Each is refused with a plain message naming the file. More forms: test_unsafe_files.py;
damaged and truncated checkpoints: tests/test_model_loading.py, tests/test_loras.py,
tests/test_embeddings.py."""

from __future__ import annotations

import builtins
import pickle
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from charstudio.engine.embeddings import EmbeddingError, EmbeddingLibrary, load_embedding  # noqa: E402
from charstudio.engine.loras import LoraError, LoraLibrary, load_lora  # noqa: E402
from charstudio.engine.model_loading import UnsafeCheckpointError, read_state_dict  # noqa: E402

from .conftest import assert_no_traceback, charstudio  # noqa: E402


class WritesMarker:
    """Unpickling this opens ``marker`` for writing, which creates it: the proof that code ran.
    No shell involved, so it works everywhere."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (builtins.open, (str(self.marker), "w"))


def _write(path: Path, payload: object, form: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if form == "legacy":  # a plain pickle, as very old checkpoints are
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, path)
    return path


FORMS = [(suffix, form) for suffix in (".ckpt", ".pt", ".bin") for form in ("zip", "legacy")]


@pytest.mark.parametrize(("suffix", "form"), FORMS)
def test_a_checkpoint_payload_never_runs(tmp_path: Path, suffix: str, form: str) -> None:
    marker = tmp_path / "ran.txt"
    path = _write(
        tmp_path / f"evil{suffix}",
        {"state_dict": {"w": torch.zeros(2)}, "extra": WritesMarker(marker)},
        form,
    )
    with pytest.raises(UnsafeCheckpointError, match=rf"evil\{suffix}"):
        read_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize(("suffix", "form"), FORMS)
def test_a_lora_payload_never_runs(tmp_path: Path, suffix: str, form: str) -> None:
    marker = tmp_path / "ran.txt"
    path = _write(
        tmp_path / "loras" / f"evil{suffix}",
        {"lora_unet_x.lora_down.weight": torch.zeros(1, 2), "x": WritesMarker(marker)},
        form,
    )
    with pytest.raises(LoraError, match=rf"evil\{suffix}.*refused"):
        load_lora(path)
    library = LoraLibrary([path.parent])
    assert "evil" in library.errors()
    assert not marker.exists()


@pytest.mark.parametrize(("suffix", "form"), [f for f in FORMS if f[0] != ".ckpt"])
def test_an_embedding_payload_never_runs(tmp_path: Path, suffix: str, form: str) -> None:
    marker = tmp_path / "ran.txt"
    payload = {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": torch.zeros(2, 768)},
        "name": WritesMarker(marker),
    }
    path = _write(tmp_path / "embeddings" / f"evil{suffix}", payload, form)
    with pytest.raises(EmbeddingError, match=rf"evil\{suffix}.*unsafe"):
        load_embedding(path)
    library = EmbeddingLibrary([path.parent])
    assert "evil" in library.errors()
    assert not marker.exists()


# -- through the command line, as an artist meets them ------------------------------------------


@pytest.fixture
def cli_project(tmp_path: Path) -> Path:
    root = tmp_path / "p"
    assert charstudio("new", str(root), "--name", "Anna").returncode == 0
    return root


def _generate(root: Path, model: Path | str, prompt: str) -> tuple[int, str]:
    result = charstudio("generate", str(root), "--model", str(model), "--prompt", prompt,
                        "--steps", "1", "--width", "32", "--height", "32", "--json")  # fmt: skip
    assert_no_traceback(result)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.slow
def test_generate_with_a_malicious_checkpoint_refuses_it(cli_project: Path, tmp_path) -> None:
    marker = tmp_path / "ran.txt"
    evil = _write(tmp_path / "models" / "evil.ckpt", {"x": WritesMarker(marker)}, "zip")
    code, out = _generate(cli_project, evil, "a woman")
    assert code != 0
    assert "evil.ckpt" in out
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_diffusers_folder_with_malicious_bin_weights(
    cli_project: Path, model_dir: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "ran.txt"
    folder = tmp_path / "evil-model"
    shutil.copytree(model_dir, folder)
    unet = folder / "unet"
    for weights in unet.glob("diffusion_pytorch_model*"):
        weights.unlink()
    _write(unet / "diffusion_pytorch_model.bin", {"x": WritesMarker(marker)}, "zip")
    code, _ = _generate(cli_project, folder, "a woman")
    assert code != 0
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["embedding", "lora"])
def test_generate_never_runs_a_payload_in_the_projects_folders(
    cli_project: Path, model_dir: Path, tmp_path: Path, kind: str
) -> None:
    marker = tmp_path / "ran.txt"
    if kind == "embedding":
        _write(cli_project / "embeddings" / "evil.pt", {"x": WritesMarker(marker)}, "zip")
        prompt = "a photo of evil, a woman"
    else:
        _write(cli_project / "loras" / "evil.pt", {"x": WritesMarker(marker)}, "zip")
        prompt = "a photo of a woman <lora:evil:0.8>"
    code, out = _generate(cli_project, model_dir, prompt)
    assert not marker.exists()
    # Asked for by name, a file that would run code refuses the job, naming the file.
    assert code != 0
    assert "evil.pt" in out
