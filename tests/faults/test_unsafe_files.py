"""Model, LoRA and embedding files that must be refused with a plain message: pickles that
would run code, and PyTorch pickles renamed to ``.safetensors``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from charstudio.engine.embeddings import EmbeddingError, load_embedding
from charstudio.engine.loras import LoraError, LoraLibrary, load_lora
from charstudio.engine.model_loading import (
    CorruptCheckpointError,
    UnsafeCheckpointError,
    read_state_dict,
)
from charstudio.engine.pt_files import blocked_global


class _CallsOsSystem:
    """Unpickling this calls os.system (pickled as posix.system or nt.system)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"echo ran > {self.marker}",))


@pytest.mark.parametrize(
    "message",
    [
        # torch 2.6 and later (2.15 here), for os/posix/nt/subprocess...
        "Weights only load failed. ...\n\nTrying to load unsupported GLOBAL posix.system whose "
        "module posix is blocked.\n\nCheck the documentation of torch.load",
        # torch 2.4 and 2.5, and any module not on the block list
        "Weights only load failed. ... Unsupported global: GLOBAL posix.system was not an "
        "allowed global by default. Please use `torch.serialization.add_safe_globals(...)`",
    ],
)
def test_every_torch_message_form_names_os_system(message: str) -> None:
    assert blocked_global(message) == "posix.system, i.e. os.system"


def test_other_refusal_forms_name_the_class_or_function() -> None:
    assert blocked_global("Unsupported global: GLOBAL nt.system was not allowed") == (
        "nt.system, i.e. os.system"
    )
    assert (
        blocked_global("Trying to call reduce for unrecognized function <built-in function eval>")
        == "eval"
    )
    assert (
        blocked_global(
            "Can only build Tensor, Parameter, OrderedDict or types allowlisted via "
            "`add_safe_globals`, but got <class 'evil.Payload'>"
        )
        == "evil.Payload"
    )
    assert blocked_global("Weights only load failed. something else") is None


@pytest.mark.parametrize("save", ["zip", "legacy"])
def test_a_ckpt_that_calls_os_system_is_refused_naming_it(tmp_path: Path, save: str) -> None:
    marker = tmp_path / "ran.txt"
    payload = {"w": torch.zeros(2), "x": _CallsOsSystem(marker)}
    checkpoint = tmp_path / "evil.ckpt"
    torch.save(payload, checkpoint, _use_new_zipfile_serialization=save == "zip")
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.ckpt.*os\.system"):
        read_state_dict(checkpoint)

    lora = tmp_path / "loras" / "evil.pt"
    lora.parent.mkdir()
    lora.write_bytes(checkpoint.read_bytes())
    with pytest.raises(LoraError, match=r"evil\.pt.*refused.*os\.system"):
        load_lora(lora)

    embedding = tmp_path / "evil.pt"
    embedding.write_bytes(checkpoint.read_bytes())
    with pytest.raises(EmbeddingError, match=r"evil\.pt.*unsafe unpickling.*os\.system"):
        load_embedding(embedding)
    assert not marker.exists()


def test_a_pytorch_file_renamed_safetensors_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "renamed.safetensors"
    torch.save({"a": torch.zeros(2)}, path)
    expected = r"renamed\.safetensors is not a safetensors file \(it looks like a PyTorch pickle"
    with pytest.raises(CorruptCheckpointError, match=expected):
        read_state_dict(path)
    with pytest.raises(LoraError, match=expected):
        load_lora(path)
    with pytest.raises(EmbeddingError, match=expected):
        load_embedding(path)
    assert "is not a safetensors file" in LoraLibrary([tmp_path]).errors()["renamed"]


def test_a_safetensors_file_whose_header_length_starts_like_a_pickle_still_loads(
    tmp_path: Path,
) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    for name_length in range(1, 300):  # find a header whose length's low byte is 0x80
        save_file({"k" * name_length: torch.zeros(1, 768)}, str(path))
        if path.read_bytes()[:1] == b"\x80":
            break
    assert path.read_bytes()[:1] == b"\x80"
    assert list(read_state_dict(path)) == ["k" * name_length]
    assert load_embedding(path).vectors.shape == (1, 768)
