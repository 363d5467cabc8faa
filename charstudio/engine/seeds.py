"""A1111 seed rules and per-image noise.

* Seed -1 means "random" (A1111's ``get_fixed_seed``); image ``i`` of batch ``b`` uses
  ``seed + b * batch_size + i``.
* Each image's initial noise comes from its own generator seeded with its seed, drawn with the
  image's own shape, so an image regenerates alone from its metadata whatever batch it was
  born in.
* Where the noise comes from is A1111's "Random number generator source" (infotext ``RNG``):

  - ``NV`` (charstudio's default): CUDA's Philox generator computed on the CPU
    (:mod:`charstudio.engine.philox`), the noise ``torch.randn`` gives on an NVIDIA GPU, on
    every machine.
  - ``CPU``: torch's CPU generator (charstudio's noise before ``RNG`` was written).
  - ``GPU`` (A1111's default, written as no ``RNG`` key): a CUDA generator when CUDA is
    available; without CUDA the same numbers computed as ``NV`` (A1111's NV is CUDA's
    ``torch.randn`` up to float32 rounding in the last bit or two), so A1111 images made with
    its default regenerate on any machine.

* Variation seeds (A1111's subseeds): the noise is A1111's ``slerp`` of the seed's noise and
  the variation seed's noise by the variation strength.
* Step noise of ancestral/SDE samplers continues each image's stream after its initial noise,
  as A1111's ``ImageRNG`` does (unless ENSD reseeds it with ``seed + delta``). Torch generators
  go to diffusers, which draws one slice per batch item from a list of generators; Philox
  streams are fed to the scheduler by :func:`scheduler_step`.

Importing this module is cheap: torch loads on first use.
"""

from __future__ import annotations

import operator
import random
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from charstudio.engine.philox import PhiloxGenerator

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_RNG",
    "RANDOM_SEED",
    "RNG_SOURCES",
    "SEED_RANDOM_UPPER",
    "batch_seeds",
    "generators_for",
    "initial_noise",
    "noise_and_generators",
    "noise_device",
    "noise_source",
    "normalize_rng",
    "resolve_seed",
    "scheduler_step",
    "slerp",
]

RANDOM_SEED = -1
# A1111 draws random seeds with random.randrange(4294967294), i.e. 0 ≤ seed < this.
SEED_RANDOM_UPPER = 4294967294

# A1111's "Random number generator source" values, as written in infotext.
RNG_SOURCES = ("GPU", "CPU", "NV")
DEFAULT_RNG = "NV"

# A stream of noise for one image: a torch generator, or CUDA's Philox computed on the CPU.
NoiseStream = Any  # torch.Generator | PhiloxGenerator


def normalize_rng(rng: str) -> str:
    """``"GPU"``, ``"CPU"`` or ``"NV"`` from any capitalisation; ValueError otherwise."""
    value = str(rng).strip().upper()
    if value not in RNG_SOURCES:
        raise ValueError(f"rng must be one of {', '.join(RNG_SOURCES)}, not {rng!r}")
    return value


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


def noise_source(rng: str = DEFAULT_RNG, device: str | torch.device = "cpu") -> str:
    """How the noise is drawn here: ``"CPU"`` (torch CPU generator), ``"CUDA"`` (torch CUDA
    generator) or ``"NV"`` (Philox on the CPU). ``GPU`` is CUDA where there is CUDA, else NV."""
    rng = normalize_rng(rng)
    if rng != "GPU":
        return rng
    import torch

    if torch.device(device).type == "cuda" or torch.cuda.is_available():
        return "CUDA"
    return "NV"


def noise_device(rng: str = DEFAULT_RNG, device: str | torch.device = "cpu") -> torch.device:
    """Where the noise is drawn: a CUDA device for ``rng="GPU"`` when there is one, else the CPU
    (``NV`` computes CUDA's numbers on the CPU)."""
    import torch

    if noise_source(rng, device) != "CUDA":
        return torch.device("cpu")
    target = torch.device(device)
    return target if target.type == "cuda" else torch.device("cuda")


def _check_seed(seed: int) -> int:
    seed = operator.index(seed)
    if seed == RANDOM_SEED:
        raise ValueError("resolve seed -1 with resolve_seed() before drawing noise")
    return seed


def generators_for(
    seeds: Sequence[int], device: str | torch.device = "cpu", *, delta: int = 0
) -> list[torch.Generator]:
    """One fresh torch generator per image, seeded ``seed + delta`` (delta: A1111's ENSD)."""
    import torch

    if not seeds:
        raise ValueError("at least one seed is needed")
    return [torch.Generator(device=device).manual_seed(_check_seed(seed) + delta) for seed in seeds]


def streams_for(
    seeds: Sequence[int],
    rng: str = DEFAULT_RNG,
    device: str | torch.device = "cpu",
    *,
    delta: int = 0,
) -> list[NoiseStream]:
    """One fresh noise stream per image for ``rng``: torch generators, or Philox streams."""
    if noise_source(rng, device) != "NV":
        return list(generators_for(seeds, noise_device(rng, device), delta=delta))
    if not seeds:
        raise ValueError("at least one seed is needed")
    return [PhiloxGenerator(_check_seed(seed) + delta) for seed in seeds]


def _draw(stream: NoiseStream, shape: tuple[int, ...]) -> torch.Tensor:
    """The stream's next float32 noise of ``shape`` (on the stream's device)."""
    import torch

    if isinstance(stream, PhiloxGenerator):
        return torch.from_numpy(stream.randn(shape))
    return torch.randn(shape, generator=stream, device=stream.device, dtype=torch.float32)


def slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's variation-seed blend of one image's noise ``low`` [C, H, W] toward ``high``.

    As A1111 computes it: vectors are taken along dim 1 (the rows of each channel), and when
    they are nearly parallel on average it falls back to ``low * val + high * (1 - val)``.
    """
    import torch

    low_unit = low / torch.norm(low, dim=1, keepdim=True)
    high_unit = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_unit * high_unit).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    sin_omega = torch.sin(omega)
    low_weight = (torch.sin((1.0 - val) * omega) / sin_omega).unsqueeze(1)
    high_weight = (torch.sin(val * omega) / sin_omega).unsqueeze(1)
    return low_weight * low + high_weight * high


def initial_noise(
    seeds: Sequence[int],
    shape: tuple[int, int, int],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    rng: str = DEFAULT_RNG,
    generators: Sequence[NoiseStream] | None = None,
    subseeds: Sequence[int] | None = None,
    subseed_strength: float = 0.0,
) -> torch.Tensor:
    """Initial latents [B, C, h, w] for ``seeds``; ``shape`` is one image's (C, H/8, W/8).

    Noise is drawn in float32 from each image's own stream (fresh ones for ``rng`` unless
    ``generators`` are given, which are then advanced), then moved to ``device``/``dtype``:
    drawing in fp16 would give other values than the float32 stream. With ``subseeds`` and a
    non-zero ``subseed_strength`` each image's noise is slerped toward its variation seed's.
    """
    import torch

    if len(shape) != 3:
        raise ValueError(f"shape must be (channels, height/8, width/8), not {tuple(shape)}")
    shape = tuple(shape)  # type: ignore[assignment]
    if generators is None:
        generators = streams_for(seeds, rng, device)
    elif len(generators) != len(seeds):
        raise ValueError(f"{len(generators)} generators for {len(seeds)} seeds")
    varied = subseeds is not None and subseed_strength != 0
    if varied and len(subseeds or ()) != len(seeds):
        raise ValueError(f"{len(subseeds or ())} variation seeds for {len(seeds)} seeds")
    # Per image and with the image's own shape, so the batch never changes an image's noise.
    noise = []
    for index, stream in enumerate(generators):
        x = _draw(stream, shape)
        if varied:
            assert subseeds is not None
            sub = _draw(streams_for([subseeds[index]], rng, device)[0], shape)
            x = slerp(subseed_strength, x, sub.to(x.device))
        noise.append(x.to(device=device))
    return torch.stack(noise).to(device=device, dtype=dtype or torch.float32)


def noise_and_generators(
    seeds: Sequence[int],
    shape: tuple[int, int, int],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    rng: str = DEFAULT_RNG,
    ensd: int = 0,
    subseeds: Sequence[int] | None = None,
    subseed_strength: float = 0.0,
) -> tuple[torch.Tensor, list[NoiseStream]]:
    """Initial latents and each image's stream for the step noise (see :func:`scheduler_step`).

    The step noise continues each image's stream after its initial noise (A1111's ImageRNG);
    a non-zero ``ensd`` (A1111's "Eta noise seed delta") reseeds it with ``seed + ensd``.
    """
    streams = streams_for(seeds, rng, device)
    latents = initial_noise(
        seeds,
        shape,
        device=device,
        dtype=dtype,
        rng=rng,
        generators=streams,
        subseeds=subseeds,
        subseed_strength=subseed_strength,
    )
    if ensd:
        streams = streams_for(seeds, rng, device, delta=ensd)
    return latents, streams


_PATCH_LOCK = threading.Lock()


def _draws_step_noise(scheduler: Any) -> bool:
    """Whether ``scheduler.step`` draws Gaussian noise (it takes a ``generator``)."""
    import inspect

    return "generator" in inspect.signature(scheduler.step).parameters


def scheduler_step(
    scheduler: Any, streams: Sequence[NoiseStream] | None, *args: Any, **kwargs: Any
) -> Any:
    """``scheduler.step(*args, **kwargs).prev_sample`` with its step noise (if it draws any)
    from ``streams``, one per batch item; ``None`` for a sampler without step noise.

    diffusers takes torch generators; Philox streams replace the scheduler module's
    ``randn_tensor`` for the duration of the call (under a lock).
    """
    if not streams or not _draws_step_noise(scheduler):
        # Brownian-tree samplers (DPM++ SDE) seed their own noise from the image seeds.
        return scheduler.step(*args, **kwargs).prev_sample
    if not isinstance(streams[0], PhiloxGenerator):
        generator = list(streams) if len(streams) > 1 else streams[0]
        return scheduler.step(*args, generator=generator, **kwargs).prev_sample
    import torch

    module = sys.modules[type(scheduler).__module__]

    def philox_randn_tensor(
        shape: Any, generator: Any = None, device: Any = None, dtype: Any = None, **_: Any
    ) -> torch.Tensor:
        shape = tuple(shape)
        if shape[0] != len(streams):
            raise ValueError(f"step noise for {shape[0]} images from {len(streams)} streams")
        noise = torch.stack([_draw(stream, shape[1:]) for stream in streams])
        return noise.to(device=device, dtype=dtype)

    with _PATCH_LOCK:
        original = getattr(module, "randn_tensor", None)
        if original is None:
            raise RuntimeError(f"{type(scheduler).__name__} draws step noise in an unknown way")
        module.randn_tensor = philox_randn_tensor  # type: ignore[attr-defined]
        try:
            return scheduler.step(*args, **kwargs).prev_sample
        finally:
            module.randn_tensor = original  # type: ignore[attr-defined]
