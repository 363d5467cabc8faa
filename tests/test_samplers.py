"""A1111 sampler names resolve to diffusers schedulers that run and follow A1111's schedules."""

from __future__ import annotations

import copy
import functools
import importlib.util
import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from charstudio.engine.samplers import (
    SAMPLER_NAMES,
    SCHEDULE_TYPES,
    SD15_SCHEDULER_CONFIG,
    SamplerSpec,
    SamplerUnavailableError,
    available_sampler_names,
    make_scheduler,
    resolve_sampler,
    sampler_available,
    schedule_types_for,
)

# diffusers' KDPM2 schedulers trip NumPy 2 deprecation warnings thousands of times per build;
# recording them all would dominate the run time.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
HAS_TORCHSDE = importlib.util.find_spec("torchsde") is not None
STEPS = 30

NEW_STYLE = [(name, schedule) for name in SAMPLER_NAMES for schedule in schedule_types_for(name)]
# Names as older A1111 versions wrote them in infotext.
LEGACY = [
    "DPM++ 2M Karras",
    "DPM2 Karras",
    "DPM2 a Karras",
    "DPM++ 2S a Karras",
    "DPM++ SDE Karras",
    "DPM++ 2M SDE Karras",
    "DPM++ 2M SDE Exponential",
    "DPM++ 2M SDE Heun Karras",
    "DPM++ 3M SDE Karras",
    "DPM++ 3M SDE Exponential",
    "LMS Karras",
]


def _build(spec: SamplerSpec, seeds: list[int] | None = None):
    if spec.requires and not sampler_available(spec):
        with pytest.raises(SamplerUnavailableError, match="torchsde"):
            make_scheduler(spec, seeds=seeds or [1])
        pytest.skip(f"{spec.a1111_name} needs {spec.requires}")
    return copy.deepcopy(_prototype(spec, tuple(seeds or [1])))


@functools.cache
def _prototype(spec: SamplerSpec, seeds: tuple[int, ...]):
    # Built once per spec: diffusers' KDPM2 schedulers take a quarter second to construct.
    return make_scheduler(spec, seeds=list(seeds))


def _sample(scheduler, seed: int = 0, steps: int = STEPS) -> torch.Tensor:
    """Run the whole schedule on a tiny latent with a smooth stand-in for the UNet."""
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, 8, 8, generator=generator) * scheduler.init_noise_sigma
    takes_generator = "generator" in inspect.signature(scheduler.step).parameters
    extra = {"generator": generator} if takes_generator else {}
    for t in scheduler.timesteps:
        eps = 0.5 * torch.tanh(scheduler.scale_model_input(x, t))
        x = scheduler.step(eps, t, x, **extra).prev_sample
    return x


@functools.cache
def _sigmas(name: str, schedule: str | None = None) -> np.ndarray:
    scheduler = _build(resolve_sampler(name, schedule))
    scheduler.set_timesteps(STEPS)
    return scheduler.sigmas.double().numpy()


def _model_sigmas() -> np.ndarray:
    """SD 1.5's sigmas, as k-diffusion's CompVisDenoiser computes them."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    alphas_cumprod = np.cumprod(1.0 - betas)
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


@pytest.mark.parametrize(("name", "schedule"), NEW_STYLE)
def test_every_sampler_and_schedule_builds_and_samples(name: str, schedule: str) -> None:
    spec = resolve_sampler(name, schedule)
    assert spec.a1111_name == name
    x = _sample(_build(spec))
    assert x.shape == (1, 4, 8, 8)
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("legacy", ["DPM++ 2M Karras", "DPM2 Karras", "LMS Karras"])
def test_legacy_names_build_and_sample(legacy: str) -> None:
    assert torch.isfinite(_sample(_build(resolve_sampler(legacy)))).all()


@pytest.mark.parametrize("legacy", LEGACY)
def test_legacy_names_equal_sampler_plus_schedule_type(legacy: str) -> None:
    name, schedule = legacy.rsplit(" ", 1)
    spec = resolve_sampler(legacy)
    assert spec == resolve_sampler(name, schedule)
    assert (spec.a1111_name, spec.schedule_type) == (name, schedule)


def test_every_combined_name_resolves_like_its_parts() -> None:
    for name, schedule in NEW_STYLE:
        if schedule != "Automatic":
            assert resolve_sampler(f"{name} {schedule}") == resolve_sampler(name, schedule)


def test_sdes_that_need_torchsde_fail_clearly_only_for_that_sampler() -> None:
    spec = resolve_sampler("DPM++ SDE", "Karras")
    assert spec.scheduler_class == "DPMSolverSDEScheduler" and spec.brownian
    assert ("DPM++ SDE" in available_sampler_names()) == HAS_TORCHSDE
    assert set(SAMPLER_NAMES) - set(available_sampler_names()) <= {"DPM++ SDE"}
    if HAS_TORCHSDE:
        with pytest.raises(ValueError, match="seeds"):
            make_scheduler(spec)
        scheduler = make_scheduler(spec, seeds=[7, 8])
        assert list(scheduler.config.noise_sampler_seed) == [7, 8]
    else:
        with pytest.raises(SamplerUnavailableError, match="torchsde"):
            make_scheduler(spec, seeds=[7])


def test_automatic_means_the_samplers_a1111_default() -> None:
    expected = {
        "DPM++ 2M": "Karras",
        "DPM++ SDE": "Karras",
        "DPM++ 2S a": "Karras",
        "DPM2": "Karras",
        "DPM2 a": "Karras",
        "DPM++ 2M SDE": "Exponential",
        "DPM++ 2M SDE Heun": "Exponential",
        "DPM++ 3M SDE": "Exponential",
        "Euler a": "Automatic",
        "Euler": "Automatic",
        "LMS": "Automatic",
        "Heun": "Automatic",
        "DDIM": "Automatic",
        "UniPC": "Automatic",
    }
    for name, schedule in expected.items():
        assert resolve_sampler(name).schedule_type == schedule
        assert resolve_sampler(name, "Automatic") == resolve_sampler(name)
        assert resolve_sampler(name, "") == resolve_sampler(name)
    assert resolve_sampler("DPM++ 2M").config["use_karras_sigmas"] is True
    assert resolve_sampler("DPM++ 2M", "Uniform").config["use_karras_sigmas"] is False


def test_a1111_mapping_of_the_main_samplers() -> None:
    dpm = resolve_sampler("DPM++ 2M", "Karras")
    assert dpm.scheduler_class == "DPMSolverMultistepScheduler"
    assert dpm.config["algorithm_type"] == "dpmsolver++" and dpm.config["solver_order"] == 2
    assert dpm.config["final_sigmas_type"] == "zero" and not dpm.stochastic
    sde = resolve_sampler("DPM++ 2M SDE Karras")
    assert sde.config["algorithm_type"] == "sde-dpmsolver++" and sde.stochastic
    assert resolve_sampler("DPM++ 3M SDE").config["solver_order"] == 3
    assert resolve_sampler("DPM++ 2M SDE Heun").config["solver_type"] == "heun"
    classes = {
        "Euler a": "EulerAncestralDiscreteScheduler",
        "Euler": "EulerDiscreteScheduler",
        "LMS": "LMSDiscreteScheduler",
        "Heun": "HeunDiscreteScheduler",
        "DPM2": "KDPM2DiscreteScheduler",
        "DPM2 a": "KDPM2AncestralDiscreteScheduler",
        "DPM++ 2S a": "DPMSolverSinglestepScheduler",
        "DDIM": "DDIMScheduler",
        "PLMS": "PNDMScheduler",
        "UniPC": "UniPCMultistepScheduler",
        "LCM": "LCMScheduler",
    }
    for name, cls in classes.items():
        assert resolve_sampler(name).scheduler_class == cls
    stochastic = {n for n in SAMPLER_NAMES if resolve_sampler(n).stochastic}
    assert stochastic == {
        "DPM++ SDE",
        "DPM++ 2M SDE",
        "DPM++ 2M SDE Heun",
        "DPM++ 2S a",
        "DPM++ 3M SDE",
        "Euler a",
        "DPM2 a",
        "LCM",
    }
    assert "Approximation" in resolve_sampler("DPM++ 2S a").notes


def test_sampler_names_follow_a1111_menu_order() -> None:
    assert SAMPLER_NAMES == [
        "DPM++ 2M",
        "DPM++ SDE",
        "DPM++ 2M SDE",
        "DPM++ 2M SDE Heun",
        "DPM++ 2S a",
        "DPM++ 3M SDE",
        "Euler a",
        "Euler",
        "LMS",
        "Heun",
        "DPM2",
        "DPM2 a",
        "DDIM",
        "PLMS",
        "UniPC",
        "LCM",
    ]
    assert SCHEDULE_TYPES[:4] == ["Automatic", "Uniform", "Karras", "Exponential"]
    assert schedule_types_for("Euler a") == SCHEDULE_TYPES  # as in A1111: every schedule
    assert schedule_types_for("LCM") == ["Automatic", "Uniform"]
    assert schedule_types_for("DDIM") == ["Automatic"]


def test_matching_ignores_case_extra_spaces_and_accepts_a1111_aliases() -> None:
    karras = resolve_sampler("DPM++ 2M", "Karras")
    assert resolve_sampler("  dpm++   2m  KARRAS ") == karras
    assert resolve_sampler("dpm++ 2m", " karras ") == karras
    assert resolve_sampler("k_dpmpp_2m", "karras") == karras
    assert resolve_sampler("Euler A").a1111_name == "Euler a"
    assert resolve_sampler("k_euler_a") == resolve_sampler("Euler a")
    sgm = resolve_sampler("Euler", "SGM Uniform")
    assert resolve_sampler("Euler", "sgm_uniform") == sgm
    assert resolve_sampler("Euler SGMUniform") == sgm
    assert sgm.config["timestep_spacing"] == "trailing"


def test_a_schedule_in_the_name_wins_over_the_schedule_field() -> None:
    # A1111's get_sampler_and_scheduler: the suffix overrides "Schedule type".
    assert resolve_sampler("DPM++ 2M Karras", "Exponential").schedule_type == "Karras"


def test_timesteps_samplers_ignore_the_schedule_type_like_a1111() -> None:
    for name in ("DDIM", "PLMS", "UniPC"):
        for schedule in ("Karras", "Exponential", "Simple", "Align Your Steps"):
            assert resolve_sampler(name, schedule) == resolve_sampler(name)
        assert resolve_sampler(name).schedule_type == "Automatic"


def test_unknown_sampler_names_list_the_known_ones() -> None:
    with pytest.raises(ValueError, match="Unknown sampler 'Euler z'") as info:
        resolve_sampler("Euler z")
    for name in SAMPLER_NAMES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="Unknown sampler"):
        resolve_sampler("")
    with pytest.raises(ValueError, match=r"not available in charstudio.*DPM\+\+ 2M"):
        resolve_sampler("DPM fast")
    with pytest.raises(ValueError, match="not available in charstudio"):
        resolve_sampler("Restart Karras")


def test_unknown_or_unavailable_schedule_types_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"Unknown schedule type 'Karas'.*Karras"):
        resolve_sampler("Euler", "Karas")
    with pytest.raises(ValueError, match="'Karras' is not available for sampler 'LCM'"):
        resolve_sampler("LCM", "Karras")
    with pytest.raises(ValueError, match=r"'Simple' is not available.*Automatic, Uniform"):
        resolve_sampler("DPM++ 2M Simple")


def test_karras_sigmas_follow_a1111_rho_7_between_the_model_limits() -> None:
    model = _model_sigmas()
    ramp = np.linspace(0, 1, STEPS)
    lo, hi = model[0] ** (1 / 7), model[-1] ** (1 / 7)
    expected = np.append((hi + ramp * (lo - hi)) ** 7, 0.0)
    for name in ("Euler", "DPM++ 2M", "DPM2"):
        sigmas = _sigmas(name, "Karras")
        assert sigmas[0] == pytest.approx(14.6146, rel=1e-4)
        if name != "DPM2":  # KDPM2 interleaves midpoint sigmas
            np.testing.assert_allclose(sigmas, expected, rtol=1e-4)


def test_exponential_and_uniform_sigmas_follow_a1111() -> None:
    model = _model_sigmas()
    exponential = np.append(np.exp(np.linspace(np.log(model[-1]), np.log(model[0]), STEPS)), 0)
    np.testing.assert_allclose(_sigmas("Euler", "Exponential"), exponential, rtol=1e-4)
    np.testing.assert_allclose(_sigmas("DPM++ 2M SDE"), exponential, rtol=1e-4)
    # Uniform: k-diffusion's model.get_sigmas(n), t = linspace(999, 0, n) (log-sigma interp).
    t = np.linspace(999, 0, STEPS)
    uniform = np.append(np.exp(np.interp(t, np.arange(1000), np.log(model))), 0)
    np.testing.assert_allclose(_sigmas("Euler"), uniform, rtol=1e-3)


def test_schedule_types_really_change_the_sigmas() -> None:
    for name in SAMPLER_NAMES:
        supported = schedule_types_for(name)
        if name == "DPM++ SDE" and not HAS_TORCHSDE:
            continue
        if "Karras" not in supported:
            continue
        uniform = _sigmas(name, "Uniform")
        for schedule in ("Karras", "Exponential", "Beta"):
            other = _sigmas(name, schedule)
            assert other.shape != uniform.shape or not np.allclose(other, uniform), (name, schedule)
        assert not np.allclose(_sigmas(name, "Karras"), _sigmas(name, "Exponential"))
    assert not np.allclose(_sigmas("Euler", "SGM Uniform"), _sigmas("Euler", "Uniform"))


def test_base_config_contributes_only_the_models_noise_schedule() -> None:
    # A pipeline's PNDM config carries "leading" spacing that must not leak into Euler.
    base = {
        **SD15_SCHEDULER_CONFIG,
        "_class_name": "PNDMScheduler",
        "timestep_spacing": "leading",
        "use_karras_sigmas": True,
        "prediction_type": "v_prediction",
    }
    scheduler = make_scheduler(resolve_sampler("Euler"), base)
    assert scheduler.config.timestep_spacing == "linspace"
    assert scheduler.config.use_karras_sigmas is False
    assert scheduler.config.prediction_type == "v_prediction"
    default = make_scheduler(resolve_sampler("DDIM"))
    assert default.config.beta_schedule == "scaled_linear" and default.config.steps_offset == 1
    assert default.config.clip_sample is False and default.config.set_alpha_to_one is False


def test_spec_settings_are_all_accepted_by_their_scheduler_class() -> None:
    import diffusers

    for name, schedule in NEW_STYLE:
        spec = resolve_sampler(name, schedule)
        if not sampler_available(spec):
            continue
        params = inspect.signature(getattr(diffusers, spec.scheduler_class).__init__).parameters
        assert set(spec.config) <= set(params), (name, schedule)


def test_stochastic_sampling_repeats_exactly_with_the_same_generator() -> None:
    for name in ("Euler a", "DPM++ 2M SDE", "DPM2 a", "DPM++ 2S a"):
        spec = resolve_sampler(name)
        first = _sample(_build(spec), seed=3)
        assert torch.equal(first, _sample(_build(spec), seed=3))
        assert not torch.equal(first, _sample(_build(spec), seed=4))


def test_spec_is_frozen_and_hashable() -> None:
    spec = resolve_sampler("DPM++ 2M Karras")
    assert hash(spec) == hash(resolve_sampler("DPM++ 2M", "Karras"))
    with pytest.raises(AttributeError):
        spec.a1111_name = "Euler"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.config["solver_order"] = 3  # type: ignore[index]


def test_importing_the_engine_modules_loads_neither_torch_nor_diffusers() -> None:
    code = (
        "import json, sys\n"
        "import charstudio.engine.samplers as s, charstudio.engine.seeds\n"
        "s.resolve_sampler('DPM++ 2M Karras'); s.schedule_types_for('Euler')\n"
        "print(json.dumps([m for m in ('torch', 'diffusers', 'PySide6') if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert json.loads(out.stdout) == []


@pytest.mark.parametrize("schedule", ["Karras", "Exponential", "Beta"])
def test_euler_a_walks_the_same_sigmas_as_euler_on_every_schedule(schedule: str) -> None:
    # A1111 lets Euler a take any schedule type; diffusers' class has no sigma options.
    ancestral = _build(resolve_sampler("Euler a", schedule))
    ancestral.set_timesteps(STEPS)
    euler = _build(resolve_sampler("Euler", schedule))
    euler.set_timesteps(STEPS)
    assert np.allclose(ancestral.sigmas.numpy(), euler.sigmas.numpy(), rtol=1e-6)
    assert np.allclose(ancestral.timesteps.numpy(), euler.timesteps.numpy(), atol=1e-3)
    assert ancestral.init_noise_sigma == pytest.approx(float(euler.init_noise_sigma), rel=1e-6)
    assert not np.allclose(_sigmas("Euler a", schedule), _sigmas("Euler a", "Uniform"))
    karras_image = _sample(ancestral)
    uniform_image = _sample(_build(resolve_sampler("Euler a", "Uniform")))
    assert torch.isfinite(karras_image).all()
    assert not torch.allclose(karras_image, uniform_image)
    assert resolve_sampler("Euler a Karras") == resolve_sampler("Euler a", "Karras")
