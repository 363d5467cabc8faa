"""A1111 seed rules; each image's noise depends on its own seed only."""

from __future__ import annotations

import copy
import functools
import inspect
import random

import pytest
import torch

from charstudio.engine.samplers import make_scheduler, resolve_sampler
from charstudio.engine.seeds import (
    SEED_RANDOM_UPPER,
    batch_seeds,
    generators_for,
    initial_noise,
    noise_and_generators,
    noise_device,
    resolve_seed,
)

# diffusers' KDPM2 schedulers trip NumPy 2 deprecation warnings thousands of times per run.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SHAPE = (4, 8, 8)


def test_minus_one_resolves_to_a_random_seed_in_a1111s_range() -> None:
    seeds = {resolve_seed(-1) for _ in range(20)}
    assert len(seeds) > 1
    assert all(0 <= s < SEED_RANDOM_UPPER <= 2**32 - 1 for s in seeds)
    assert resolve_seed(-1, random.Random(5)) == resolve_seed(-1, random.Random(5))


def test_other_seeds_are_kept() -> None:
    for seed in (0, 1, 12345678, 4240233169, 2**32 - 1, 2**40):
        assert resolve_seed(seed) == seed
    with pytest.raises(TypeError):
        resolve_seed(1.5)  # type: ignore[arg-type]


def test_batch_seed_arithmetic() -> None:
    assert batch_seeds(100, 4) == [100, 101, 102, 103]
    assert batch_seeds(100, 4, 2) == [108, 109, 110, 111]
    assert batch_seeds(7, 1, 5) == [12]
    # Batch count 8 x batch size 4: 32 consecutive seeds, as A1111's all_seeds.
    assert [s for b in range(8) for s in batch_seeds(500, 4, b)] == list(range(500, 532))
    for bad in ((-1, 4, 0), (1, 0, 0), (1, 4, -1)):
        with pytest.raises(ValueError):
            batch_seeds(*bad)


def test_an_image_regenerates_alone_from_its_seed() -> None:
    alone = initial_noise([1234], SHAPE)
    batch = initial_noise([7, 8, 9, 1234], SHAPE)
    assert batch.shape == (4, *SHAPE)
    assert torch.equal(alone[0], batch[3])
    assert not torch.equal(batch[0], batch[1])


def test_noise_is_deterministic_and_matches_a1111s_cpu_rng() -> None:
    first = initial_noise([42, 43], SHAPE)
    assert torch.equal(first, initial_noise([42, 43], SHAPE))
    # A1111 with RNG source CPU: torch.randn(shape, generator=Generator().manual_seed(seed)).
    reference = torch.randn(SHAPE, generator=torch.Generator().manual_seed(42))
    assert torch.equal(first[0], reference)


def test_noise_moves_to_the_requested_dtype() -> None:
    half = initial_noise([42], SHAPE, dtype=torch.float16)
    assert half.dtype == torch.float16 and half.device.type == "cpu"
    assert torch.equal(half, initial_noise([42], SHAPE).half())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback without CUDA")
def test_gpu_rng_falls_back_to_the_cpu_stream_without_cuda() -> None:
    assert noise_device("gpu").type == "cpu"
    assert torch.equal(initial_noise([5], SHAPE, rng="gpu"), initial_noise([5], SHAPE))


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="rng"):
        noise_device("tpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        initial_noise([1], (4, 8))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="-1"):
        initial_noise([-1], SHAPE)
    with pytest.raises(ValueError):
        generators_for([])
    with pytest.raises(ValueError, match="generators"):
        initial_noise([1, 2], SHAPE, generators=generators_for([1]))


def test_generators_for_are_seeded_per_image_with_optional_delta() -> None:
    gens = generators_for([10, 11])
    assert [g.initial_seed() for g in gens] == [10, 11]
    assert [g.initial_seed() for g in generators_for([10], delta=31337)] == [31347]


def test_step_noise_continues_each_images_stream() -> None:
    latents, gens = noise_and_generators([21, 22], SHAPE)
    assert torch.equal(latents, initial_noise([21, 22], SHAPE))
    # The next draw continues after the initial noise, so it is not the same noise again.
    fresh = generators_for([21])[0]
    torch.randn(SHAPE, generator=fresh)
    assert torch.equal(torch.randn(SHAPE, generator=gens[0]), torch.randn(SHAPE, generator=fresh))
    _, reseeded = noise_and_generators([21], SHAPE, ensd=31337)
    assert reseeded[0].initial_seed() == 21 + 31337


@functools.cache
def _prototype(name: str):
    # Built once: diffusers' KDPM2 schedulers take a quarter second to construct.
    return make_scheduler(resolve_sampler(name))


def _sample_batch(name: str, seeds: list[int]) -> torch.Tensor:
    """Sample a batch like a diffusers pipeline: one generator per image for the step noise."""
    scheduler = copy.deepcopy(_prototype(name))
    scheduler.set_timesteps(12)
    latents, gens = noise_and_generators(seeds, SHAPE)
    x = latents * scheduler.init_noise_sigma
    extra = (
        {"generator": gens} if "generator" in inspect.signature(scheduler.step).parameters else {}
    )
    for t in scheduler.timesteps:
        eps = 0.5 * torch.tanh(scheduler.scale_model_input(x, t))
        x = scheduler.step(eps, t, x, **extra).prev_sample
    return x


@pytest.mark.parametrize("name", ["Euler a", "DPM++ 2M SDE", "DPM2 a", "DPM++ 2M"])
def test_whole_sampling_regenerates_an_image_alone(name: str) -> None:
    batch = _sample_batch(name, [900, 901, 902])
    alone = _sample_batch(name, [902])
    torch.testing.assert_close(alone[0], batch[2], rtol=1e-5, atol=1e-5)
    assert torch.equal(_sample_batch(name, [902]), alone)
