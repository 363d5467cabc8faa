"""NaN and infinity in generation: found, named and never saved as a black picture.

Real SD 1.5 produces non-finite numbers now and then: the float16 VAE overflows at some image
sizes (A1111 answers with "revert VAE to 32-bit floats"), a sampler or a broken model turns the
latents into NaN. Decoded pixels are checked before they become an image and latents after
every step; what is found is reported per image, in words the artist can act on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from charstudio.jobs.protocol import JobError

__all__ = [
    "NonFiniteDecode",
    "bad_rows",
    "latents_message",
    "vae_message",
]


class NonFiniteDecode(JobError):
    """The VAE decoded NaN or infinite pixels for the images at ``indices`` of the batch."""

    def __init__(self, indices: Sequence[int], dtype: Any, images: Sequence[Any] = ()) -> None:
        self.indices = list(indices)
        self.dtype = dtype
        self.images = list(images)  # every decoded image, the bad ones black
        super().__init__(vae_message(dtype))


def bad_rows(tensor: Any) -> list[int]:
    """Indices along the first dimension whose values are not all finite (one device sync when
    everything is finite, the common case)."""
    import torch

    if bool(torch.isfinite(tensor).all()):
        return []
    finite = torch.isfinite(tensor).reshape(tensor.shape[0], -1).all(dim=1)
    return [i for i, ok in enumerate(finite.tolist()) if not ok]


def is_half(dtype: Any) -> bool:
    import torch

    return dtype in (torch.float16, torch.bfloat16)


def latents_message(step: int, total: int, sampler: str) -> str:
    return (
        f"the sampler produced NaN at step {step} of {total} ({sampler}) — try another sampler "
        "or full precision (engine precision fp32); if every sampler fails, the model may have "
        "broken (NaN) weights"
    )


def vae_message(dtype: Any) -> str:
    if is_half(dtype):
        return "the VAE produced NaN in half precision"
    return (
        "the VAE produced NaN even in full precision (fp32) — the latents or the VAE are broken; "
        "try another VAE or another sampler"
    )
