"""A1111's variation seed ("subseed") and strength: noise, seed rules, infotext, generation."""

from __future__ import annotations

import math
import random
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from charstudio.catalog import Project  # noqa: E402
from charstudio.engine.philox import philox_randn  # noqa: E402
from charstudio.engine.regenerate import regenerate_image, settings_from_infotext  # noqa: E402
from charstudio.engine.requests import GenerateRequest  # noqa: E402
from charstudio.engine.seeds import initial_noise, slerp  # noqa: E402
from charstudio.engine.sweeps import GenerationSettings, plan_sweep  # noqa: E402
from charstudio.jobs import run_job  # noqa: E402
from charstudio.metadata.imagefile import read_infotext  # noqa: E402
from charstudio.metadata.infotext import format_infotext, parse_infotext  # noqa: E402

from .generation import generate_images, tiny_settings  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SHAPE = (4, 8, 8)


# --- the blend ----------------------------------------------------------------------------------


def _column_slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's slerp written out per vector: each channel's column low[c, :, w] (dim 1)."""
    out = torch.empty_like(low)
    for c in range(low.shape[0]):
        for w in range(low.shape[2]):
            a, b = low[c, :, w].double(), high[c, :, w].double()
            omega = math.acos(float((a / a.norm()) @ (b / b.norm())))
            so = math.sin(omega)
            out[c, :, w] = (
                math.sin((1 - val) * omega) / so * a + math.sin(val * omega) / so * b
            ).float()
    return out


def test_slerp_is_a1111s_per_column_blend() -> None:
    low = torch.from_numpy(philox_randn(1, SHAPE))
    high = torch.from_numpy(philox_randn(2, SHAPE))
    for val in (0.1, 0.5, 0.9):
        torch.testing.assert_close(slerp(val, low, high), _column_slerp(val, low, high))
    # The ends are the two noises themselves.
    assert torch.equal(slerp(0.0, low, high), low)
    assert torch.equal(slerp(1.0, low, high), high)


def test_slerp_of_nearly_parallel_noise_is_a1111s_linear_fallback() -> None:
    low = torch.from_numpy(philox_randn(3, SHAPE))
    high = low * 1.0001
    # A1111 weighs low by val here (not 1 - val): kept as it is, for identical noise.
    torch.testing.assert_close(slerp(0.25, low, high), low * 0.25 + high * 0.75)


def test_variation_noise_blends_each_image_toward_its_variation_seed() -> None:
    plain = initial_noise([10, 10], SHAPE, rng="NV")
    varied = initial_noise([10, 10], SHAPE, rng="NV", subseeds=[20, 21], subseed_strength=0.3)
    for i, subseed in enumerate((20, 21)):
        expected = slerp(0.3, plain[i], torch.from_numpy(philox_randn(subseed, SHAPE)))
        assert torch.equal(varied[i], expected)
    assert not torch.equal(varied[0], varied[1])
    # Strength 0 is no variation; CPU noise varies with CPU noise.
    assert torch.equal(initial_noise([10], SHAPE, subseeds=[20], subseed_strength=0.0), plain[:1])
    cpu = initial_noise([10], SHAPE, rng="CPU", subseeds=[20], subseed_strength=0.5)
    sub = torch.randn(SHAPE, generator=torch.Generator().manual_seed(20))
    assert torch.equal(cpu[0], slerp(0.5, initial_noise([10], SHAPE, rng="CPU")[0], sub))
    with pytest.raises(ValueError, match="variation seeds"):
        initial_noise([10, 11], SHAPE, subseeds=[20], subseed_strength=0.5)


# --- seed rules and infotext --------------------------------------------------------------------


def test_with_a_strength_images_keep_the_seed_and_count_up_the_variation_seed() -> None:
    base = GenerationSettings(
        prompt="a", seed=100, subseed=200, subseed_strength=0.3, batch_size=2, batch_count=2
    )
    plan = plan_sweep(base, None, None, None, keep_random_seeds=False)
    assert [(job.seed, job.subseed) for job in plan.images] == [
        (100, 200),
        (100, 201),
        (100, 202),
        (100, 203),
    ]
    assert plan.images[3].settings.subseed == 203
    plain = plan_sweep(base.replace(subseed_strength=0), None, None, None, keep_random_seeds=False)
    assert [(job.seed, job.subseed) for job in plain.images] == [
        (100, None),
        (101, None),
        (102, None),
        (103, None),
    ]
    # A random variation seed is resolved like the seed.
    random_plan = plan_sweep(
        base.replace(subseed=-1), None, None, None, keep_random_seeds=True, rng=random.Random(1)
    )
    assert all(job.subseed is not None and job.subseed >= 0 for job in random_plan.images)


def test_variation_is_written_and_read_as_a1111_does() -> None:
    settings = GenerationSettings(
        prompt="a", model="m.safetensors", subseed=7, subseed_strength=0.25
    )
    text = format_infotext(settings.to_params(5, subseed=9))
    assert "Model: m, Variation seed: 9, Variation seed strength: 0.25, RNG: NV" in text
    back = settings_from_infotext(text, model=None)
    assert (back.seed, back.subseed, back.subseed_strength) == (5, 9, 0.25)
    plain = format_infotext(settings.replace(subseed_strength=0).to_params(5))
    assert "Variation" not in plain
    assert settings_from_infotext(plain, model=None).subseed_strength == 0
    with pytest.raises(ValueError, match="Variation seed strength"):
        GenerationSettings(prompt="a", subseed_strength=1.5)


# --- generation ---------------------------------------------------------------------------------


def settings(model_dir: Path, **changes) -> GenerationSettings:
    # Euler draws no step noise: the initial noise decides the image.
    defaults = {"negative_prompt": "", "seed": 300, "sampler": "Euler", "cfg_scale": 7.0}
    return tiny_settings(model_dir, **{**defaults, **changes})


generate = generate_images


def pixels(project: Project, image_id: int) -> np.ndarray:
    with Image.open(project.file_path(project.catalog.image(image_id).path)) as image:
        return np.asarray(image.convert("RGB"))


def test_variations_generate_and_regenerate(project, model_dir, tmp_path) -> None:
    varied = generate(
        project,
        GenerateRequest(settings(model_dir, subseed=500, subseed_strength=0.4, batch_size=2)),
    )
    (plain,) = generate(project, GenerateRequest(settings(model_dir)))
    texts = [parse_infotext(project.catalog.image(i).infotext or "") for i in varied]
    assert [(p.seed, p.settings["Variation seed"]) for p in texts] == [(300, "500"), (300, "501")]
    assert all(p.settings["Variation seed strength"] == "0.4" for p in texts)
    first, second, base = (pixels(project, i) for i in (*varied, plain))
    assert not np.array_equal(first, second) and not np.array_equal(first, base)
    # From the job's batch, and imported elsewhere from the infotext alone.
    assert run_job(regenerate_image(project, varied[1])).identical is True
    from charstudio.catalog.importer import import_images

    file = project.file_path(project.catalog.image(varied[1]).path)
    with Project.create(tmp_path / "other", "Other") as other:
        run_job(import_images(other, [file]))
        (image_id,) = [r.id for r in other.catalog.images()]
        result = run_job(regenerate_image(other, image_id, model=str(model_dir)))
    # Alone instead of in its batch of two, the UNet's float sums may differ in the last bit;
    # A1111's truncation to 8 bits then moves the odd saturated pixel by one level.
    regenerated = np.asarray(result.image.convert("RGB")).astype(int)
    difference = np.abs(regenerated - pixels(project, varied[1]).astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.001
    assert read_infotext(file) == result.infotext


def test_full_strength_is_the_variation_seeds_own_image(project, model_dir) -> None:
    (full,) = generate(
        project, GenerateRequest(settings(model_dir, subseed=777, subseed_strength=1.0))
    )
    (own,) = generate(project, GenerateRequest(settings(model_dir, seed=777)))
    assert np.array_equal(pixels(project, full), pixels(project, own))
