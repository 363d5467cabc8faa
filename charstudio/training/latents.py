"""The training images' latents: each image goes through the VAE encoder once per run.

The encoder gives a diagonal Gaussian per image (mean and standard deviation). A1111's three
"latent sampling methods", all served from what was encoded at the start:

* ``once``: one sample of each image's distribution, drawn when the run starts and reused;
* ``deterministic``: the distribution's mean;
* ``random``: a new sample for every training sample, from the cached mean and deviation.

Latents are scaled by the VAE's scaling factor (0.18215 for SD 1.x) as the UNet expects. Samples
are drawn on the CPU from explicit generators: the same seed gives the same latents on every
device, and a resumed run continues the same stream.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = ["LatentCache", "encode_latents", "pixels_to_tensor"]


def pixels_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB image -> ``[3, H, W]`` float32 in [-1, 1], as the VAE encoder expects."""
    import numpy as np
    import torch

    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class LatentCache:
    """Each image's latent distribution, on the training device in float32."""

    def __init__(
        self,
        means: torch.Tensor,
        stds: torch.Tensor,
        *,
        method: str,
        scaling_factor: float,
        once_generator: torch.Generator | None = None,
    ) -> None:
        import torch

        if method not in ("once", "deterministic", "random"):
            raise ValueError(f"unknown latent sampling method {method!r}")
        self.method = method
        self.scaling_factor = float(scaling_factor)
        self.means = means.float()
        self.stds = stds.float()
        self._fixed: torch.Tensor | None = None
        if method == "deterministic":
            self._fixed = self.means * self.scaling_factor
        elif method == "once":
            noise = torch.randn(self.means.shape, generator=once_generator, dtype=torch.float32)
            self._fixed = (self.means + self.stds * noise.to(self.means.device)) * (
                self.scaling_factor
            )

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.means.shape[1:])

    def batch(self, indices: Sequence[int], generator: torch.Generator) -> torch.Tensor:
        """Scaled latents ``[len(indices), 4, h, w]``; "random" draws from ``generator``."""
        import torch

        index = torch.tensor(list(indices), dtype=torch.long, device=self.means.device)
        if self._fixed is not None:
            return self._fixed.index_select(0, index)
        mean = self.means.index_select(0, index)
        std = self.stds.index_select(0, index)
        noise = torch.randn(mean.shape, generator=generator, dtype=torch.float32)
        return (mean + std * noise.to(mean.device)) * self.scaling_factor


def encode_latents(
    vae: Any,
    pixels: Sequence[torch.Tensor],
    *,
    method: str,
    device: Any,
    once_generator: torch.Generator | None = None,
) -> Generator[tuple[int, int], None, LatentCache]:
    """Encode ``[3, H, W]`` images one at a time (light on memory for any count); yields
    ``(done, total)`` after each image and returns the :class:`LatentCache`."""
    import torch

    means, stds = [], []
    for done, image in enumerate(pixels, start=1):
        with torch.no_grad():
            batch = image.unsqueeze(0).to(device=device, dtype=vae.dtype)
            dist = vae.encode(batch).latent_dist
            means.append(dist.mean.float())
            stds.append(dist.std.float())
        yield done, len(pixels)
    return LatentCache(
        torch.cat(means),
        torch.cat(stds),
        method=method,
        scaling_factor=vae.config.scaling_factor,
        once_generator=once_generator,
    )
