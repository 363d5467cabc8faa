"""A1111 seed rules; each image's noise depends on its own seed only."""

from __future__ import annotations

import copy
import functools
import inspect
import random

import pytest
import torch

from charstudio.engine.philox import philox_randn
from charstudio.engine.samplers import make_scheduler, resolve_sampler
from charstudio.engine.seeds import (
    DEFAULT_RNG,
    SEED_RANDOM_UPPER,
    batch_seeds,
    generators_for,
    initial_noise,
    noise_and_generators,
    noise_device,
    noise_source,
    normalize_rng,
    resolve_seed,
    scheduler_step,
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


@pytest.mark.parametrize("rng", ["CPU", "NV"])
def test_an_image_regenerates_alone_from_its_seed(rng: str) -> None:
    alone = initial_noise([1234], SHAPE, rng=rng)
    batch = initial_noise([7, 8, 9, 1234], SHAPE, rng=rng)
    assert batch.shape == (4, *SHAPE)
    assert torch.equal(alone[0], batch[3])
    assert not torch.equal(batch[0], batch[1])


def test_noise_is_deterministic_and_matches_a1111s_cpu_rng() -> None:
    first = initial_noise([42, 43], SHAPE, rng="CPU")
    assert torch.equal(first, initial_noise([42, 43], SHAPE, rng="cpu"))
    # A1111 with RNG source CPU: torch.randn(shape, generator=Generator().manual_seed(seed)).
    reference = torch.randn(SHAPE, generator=torch.Generator().manual_seed(42))
    assert torch.equal(first[0], reference)


def test_noise_moves_to_the_requested_dtype() -> None:
    half = initial_noise([42], SHAPE, dtype=torch.float16)
    assert half.dtype == torch.float16 and half.device.type == "cpu"
    assert torch.equal(half, initial_noise([42], SHAPE).half())


def test_nv_is_the_default_and_is_cudas_philox_stream() -> None:
    assert DEFAULT_RNG == "NV"
    noise = initial_noise([42, 43], SHAPE)
    assert torch.equal(noise, initial_noise([42, 43], SHAPE, rng="NV"))
    assert torch.equal(noise[1], torch.from_numpy(philox_randn(43, SHAPE)))
    assert not torch.equal(noise, initial_noise([42, 43], SHAPE, rng="CPU"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback without CUDA")
def test_gpu_rng_without_cuda_computes_cudas_numbers_as_nv() -> None:
    assert noise_source("GPU") == "NV" and noise_device("gpu").type == "cpu"
    assert torch.equal(initial_noise([5], SHAPE, rng="GPU"), initial_noise([5], SHAPE, rng="NV"))


def test_rng_names_are_a1111s() -> None:
    assert [normalize_rng(v) for v in ("gpu", "Cpu", "nv", " NV ")] == ["GPU", "CPU", "NV", "NV"]
    assert noise_source("CPU") == "CPU" and noise_source("NV") == "NV"


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="rng"):
        noise_device("tpu")
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
    latents, gens = noise_and_generators([21, 22], SHAPE, rng="CPU")
    assert torch.equal(latents, initial_noise([21, 22], SHAPE, rng="CPU"))
    # The next draw continues after the initial noise, so it is not the same noise again.
    fresh = generators_for([21])[0]
    torch.randn(SHAPE, generator=fresh)
    assert torch.equal(torch.randn(SHAPE, generator=gens[0]), torch.randn(SHAPE, generator=fresh))
    _, reseeded = noise_and_generators([21], SHAPE, ensd=31337, rng="CPU")
    assert reseeded[0].initial_seed() == 21 + 31337


def test_nv_step_noise_continues_each_images_philox_stream() -> None:
    # A1111's ImageRNG with NV: the initial noise is draw 0 of Generator(seed), step noise
    # draws 1, 2, ...; ENSD restarts the streams at seed + delta.
    latents, streams = noise_and_generators([21, 22], SHAPE, rng="NV")
    assert torch.equal(latents[1], torch.from_numpy(philox_randn(22, SHAPE, 0)))
    assert [(s.seed, s.offset) for s in streams] == [(21, 1), (22, 1)]
    _, reseeded = noise_and_generators([21], SHAPE, rng="NV", ensd=31337)
    assert (reseeded[0].seed, reseeded[0].offset) == (21 + 31337, 0)


def test_nv_step_noise_reaches_the_scheduler() -> None:
    scheduler = copy.deepcopy(_prototype("Euler a"))
    scheduler.set_timesteps(4)
    sample = torch.zeros(2, *SHAPE)
    t = scheduler.timesteps[0]
    scheduler.scale_model_input(sample, t)
    _, streams = noise_and_generators([5, 6], SHAPE, rng="NV")
    stepped = scheduler_step(scheduler, streams, torch.zeros_like(sample), t, sample)
    # Zero model output and zero sample: what is left is sigma_up times the step noise.
    expected = torch.stack([torch.from_numpy(philox_randn(s, SHAPE, 1)) for s in (5, 6)])
    ratio = stepped / expected
    torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio.flatten()[0])))
    assert [s.offset for s in streams] == [2, 2]
    # The patch is gone afterwards: torch generators work as before.
    _, gens = noise_and_generators([5], SHAPE, rng="CPU")
    scheduler_step(scheduler, gens, torch.zeros(1, *SHAPE), scheduler.timesteps[1], stepped[:1])


@functools.cache
def _prototype(name: str):
    # Built once: diffusers' KDPM2 schedulers take a quarter second to construct.
    return make_scheduler(resolve_sampler(name))


def _sample_batch(name: str, seeds: list[int], rng: str = "CPU") -> torch.Tensor:
    """Sample a batch like a diffusers pipeline: one stream per image for the step noise."""
    scheduler = copy.deepcopy(_prototype(name))
    scheduler.set_timesteps(12)
    latents, gens = noise_and_generators(seeds, SHAPE, rng=rng)
    x = latents * scheduler.init_noise_sigma
    noisy = "generator" in inspect.signature(scheduler.step).parameters
    for t in scheduler.timesteps:
        eps = 0.5 * torch.tanh(scheduler.scale_model_input(x, t))
        x = scheduler_step(scheduler, gens if noisy else None, eps, t, x)
    return x


@pytest.mark.parametrize("rng", ["CPU", "NV"])
@pytest.mark.parametrize("name", ["Euler a", "DPM++ 2M SDE", "DPM2 a", "DPM++ 2M"])
def test_whole_sampling_regenerates_an_image_alone(name: str, rng: str) -> None:
    batch = _sample_batch(name, [900, 901, 902], rng)
    alone = _sample_batch(name, [902], rng)
    torch.testing.assert_close(alone[0], batch[2], rtol=1e-5, atol=1e-5)
    assert torch.equal(_sample_batch(name, [902], rng), alone)


@pytest.mark.parametrize("rng", ["CPU", "NV"])
def test_brownian_tree_samplers_take_no_step_noise_streams(rng: str) -> None:
    # DPM++ SDE seeds Brownian trees from the image seeds; its step takes no generator.
    scheduler = make_scheduler(resolve_sampler("DPM++ SDE"), seeds=[5])
    scheduler.set_timesteps(4)
    latents, streams = noise_and_generators([5], SHAPE, rng=rng)
    x = latents * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        eps = 0.5 * torch.tanh(scheduler.scale_model_input(x, t))
        x = scheduler_step(scheduler, streams, eps, t, x)
    assert torch.isfinite(x).all()
