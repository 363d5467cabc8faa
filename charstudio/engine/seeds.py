"""A1111 seed rules and per-image noise.

* Seed -1 means "random" (A1111's ``get_fixed_seed``); image ``i`` of batch ``b`` uses
  ``seed + b * batch_size + i``.
* Each image's initial noise comes from its own ``torch.Generator`` seeded with its seed, drawn
  with the image's own shape, so an image regenerates alone from its metadata whatever batch
  it was born in.
* By default the noise is drawn on the CPU and then moved to the device. That is A1111's
  "Random number generator source: CPU" setting (infotext ``RNG: CPU``) and gives the same
  pixels for a seed on every GPU and on machines without one. A1111's default is ``GPU``
  (noise drawn on the CUDA device, which differs from the CPU stream and between GPU kinds);
  ``rng="gpu"`` reproduces it with a CUDA generator when CUDA is available.
* Step noise of ancestral/SDE samplers continues each image's generator after its initial
  noise, as A1111's ``ImageRNG`` does (unless ENSD reseeds it with ``seed + delta``); pass the
  generators to diffusers, which draws one slice per batch item from a list of generators.

Importing this module is cheap: torch loads on first use.
"""

from __future__ import annotations

import operator
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

__all__ = [
    "RANDOM_SEED",
    "SEED_RANDOM_UPPER",
    "batch_seeds",
    "generators_for",
    "initial_noise",
    "noise_and_generators",
    "noise_device",
    "resolve_seed",
]

RANDOM_SEED = -1
# A1111 draws random seeds with random.randrange(4294967294), i.e. 0 ≤ seed < this.
SEED_RANDOM_UPPER = 4294967294

Rng = Literal["cpu", "gpu"]


def resolve_seed(seed: int, rng: random.Random | None = None) -> int:
    """-1 becomes a random seed in A1111's range [0, 4294967293]; any other seed is kept."""
    seed = operator.index(seed)
    if seed == RANDOM_SEED:
        return (rng or random).randrange(SEED_RANDOM_UPPER)
    return seed


def batch_seeds(seed: int, batch_size: int, batch_index: int = 0) -> list[int]:
    """Seeds of batch ``batch_index``: image i uses ``seed + batch_index * batch_size + i``."""
    seed = operator.index(seed)
    if seed == RANDOM_SEED:
        raise ValueError("resolve seed -1 with resolve_seed() before computing batch seeds")
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, not {batch_size}")
    if batch_index < 0:
        raise ValueError(f"batch index must not be negative, not {batch_index}")
    first = seed + batch_index * batch_size
    return [first + i for i in range(batch_size)]


def noise_device(rng: Rng = "cpu", device: str | torch.device = "cpu") -> torch.device:
    """Where noise is drawn: the CPU, or for ``rng="gpu"`` a CUDA device when there is one."""
    import torch

    if rng == "cpu":
        return torch.device("cpu")
    if rng != "gpu":
        raise ValueError(f"rng must be 'cpu' or 'gpu', not {rng!r}")
    target = torch.device(device)
    if target.type == "cuda":
        return target
    # No CUDA here: fall back to the CPU stream (seeds then match RNG: CPU, not A1111's GPU).
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def generators_for(
    seeds: Sequence[int], device: str | torch.device = "cpu", *, delta: int = 0
) -> list[torch.Generator]:
    """One fresh generator per image, seeded ``seed + delta`` (delta: A1111's ENSD)."""
    import torch

    if not seeds:
        raise ValueError("at least one seed is needed")
    generators = []
    for seed in seeds:
        seed = operator.index(seed)
        if seed == RANDOM_SEED:
            raise ValueError("resolve seed -1 with resolve_seed() before drawing noise")
        generators.append(torch.Generator(device=device).manual_seed(seed + delta))
    return generators


def initial_noise(
    seeds: Sequence[int],
    shape: tuple[int, int, int],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    rng: Rng = "cpu",
    generators: Sequence[torch.Generator] | None = None,
) -> torch.Tensor:
    """Initial latents [B, C, h, w] for ``seeds``; ``shape`` is one image's (C, H/8, W/8).

    Noise is drawn in float32 with each image's own generator (fresh ones from ``seeds`` unless
    ``generators`` are given, which are then advanced), then moved to ``device``/``dtype``:
    drawing in fp16 would give other values than the float32 stream.
    """
    import torch

    if len(shape) != 3:
        raise ValueError(f"shape must be (channels, height/8, width/8), not {tuple(shape)}")
    if generators is None:
        generators = generators_for(seeds, noise_device(rng, device))
    elif len(generators) != len(seeds):
        raise ValueError(f"{len(generators)} generators for {len(seeds)} seeds")
    # Per image and with the image's own shape, so the batch never changes an image's noise.
    noise = [
        torch.randn(tuple(shape), generator=g, device=g.device, dtype=torch.float32)
        for g in generators
    ]
    return torch.stack(noise).to(device=device, dtype=dtype or torch.float32)


def noise_and_generators(
    seeds: Sequence[int],
    shape: tuple[int, int, int],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    rng: Rng = "cpu",
    ensd: int = 0,
) -> tuple[torch.Tensor, list[torch.Generator]]:
    """Initial latents and the generators to pass to diffusers for the step noise.

    The step noise continues each image's stream after its initial noise (A1111's ImageRNG);
    a non-zero ``ensd`` (A1111's "Eta noise seed delta") reseeds it with ``seed + ensd``.
    """
    generators = generators_for(seeds, noise_device(rng, device))
    latents = initial_noise(seeds, shape, device=device, dtype=dtype, generators=generators)
    if ensd:
        generators = generators_for(seeds, generators[0].device, delta=ensd)
    return latents, generators
