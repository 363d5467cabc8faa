"""Where and how the networks run: device, precision and the speed options.

The defaults are what a desktop artist wants with no configuration: the GPU in float16 when
there is one (bfloat16 on request: the same speed on Ampere and newer, and it cannot overflow),
float32 on the CPU, PyTorch's scaled-dot-product attention (flash / memory-efficient kernels),
channels-last memory layout for the convolutions, and torch.compile only when asked for (its
first run compiles for a minute or more). Stored per project under the ``engine`` setting.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = [
    "ENGINE_SETTING",
    "PRECISIONS",
    "EngineOptions",
    "is_out_of_memory",
    "prepare_for_inference",
]

PRECISIONS = ("auto", "fp16", "bf16", "fp32")
ENGINE_SETTING = "engine"  # the project setting holding EngineOptions.to_json()
_DTYPE_NAMES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


@dataclass(frozen=True)
class EngineOptions:
    device: str = "auto"  # "auto" (the first CUDA GPU, else the CPU), "cuda", "cuda:1", "cpu"
    precision: str = "auto"  # "auto": fp16 on CUDA, fp32 on the CPU
    channels_last: bool = True
    compile: bool = False  # torch.compile the UNet (slow first run, faster after)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}"
            )

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> EngineOptions:
        """Options from a stored setting; unknown keys (from a newer version) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in dict(data or {}).items() if k in known})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def resolved_dtype(self, device: str | None = None) -> Any:
        import torch

        device = device or self.resolved_device()
        if self.precision == "auto":
            return torch.float16 if device.startswith("cuda") else torch.float32
        return getattr(torch, _DTYPE_NAMES[self.precision])


def prepare_for_inference(components: Any, options: EngineOptions) -> None:
    """Apply the speed options to a freshly loaded model, once (marked on the object)."""
    key = (options.channels_last, options.compile)
    if getattr(components, "_prepared_for", None) == key:
        return
    import torch
    from diffusers.models.attention_processor import AttnProcessor2_0

    for model in (components.unet, components.vae):
        # SDPA on every attention layer (loaders may have left the classic processor).
        if hasattr(model, "set_attn_processor"):
            model.set_attn_processor(AttnProcessor2_0())
        if options.channels_last:
            model.to(memory_format=torch.channels_last)
    if options.compile:
        components.unet = torch.compile(components.unet, fullgraph=False)
    components._prepared_for = key


def is_out_of_memory(error: BaseException) -> bool:
    """True for the GPU running out of memory, however PyTorch reports it."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(error, getattr(torch.cuda, "OutOfMemoryError", ())):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def free_gpu_memory() -> None:
    """Give cached CUDA blocks back after an out-of-memory error."""
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
