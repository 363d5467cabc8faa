"""Engine options: device and precision choice, and the speed settings applied to a model."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from charstudio.engine.runtime import (  # noqa: E402
    EngineOptions,
    is_out_of_memory,
    prepare_for_inference,
)

from .tiny_sd import tiny_components  # noqa: E402


def test_precision_follows_the_device() -> None:
    assert EngineOptions(device="cpu").resolved_dtype() == torch.float32
    assert EngineOptions(device="cuda").resolved_dtype() == torch.float16
    assert EngineOptions(device="cuda", precision="bf16").resolved_dtype() == torch.bfloat16
    assert EngineOptions(device="cuda:1", precision="fp32").resolved_dtype() == torch.float32
    with pytest.raises(ValueError, match="precision must be one of"):
        EngineOptions(precision="int4")


def test_stored_options_round_trip_and_ignore_unknown_keys() -> None:
    options = EngineOptions(device="cpu", precision="bf16", compile=True)
    assert EngineOptions.from_json(options.to_json()) == options
    assert EngineOptions.from_json({"precision": "fp32", "from_a_newer_version": 1}) == (
        EngineOptions(precision="fp32")
    )
    assert EngineOptions.from_json(None) == EngineOptions()


def test_prepare_sets_sdpa_and_channels_last_once() -> None:
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    model = tiny_components(1)
    model.unet.set_attn_processor(AttnProcessor())  # as if a loader left the classic one
    prepare_for_inference(model, EngineOptions(device="cpu"))
    processors = model.unet.attn_processors.values()
    assert processors and all(isinstance(p, AttnProcessor2_0) for p in processors)
    conv = model.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    # A second call with the same options leaves the model alone.
    model.unet.set_attn_processor(AttnProcessor())
    prepare_for_inference(model, EngineOptions(device="cpu"))
    assert all(isinstance(p, AttnProcessor) for p in model.unet.attn_processors.values())


def test_out_of_memory_is_recognised_however_it_is_reported() -> None:
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))
