"""A1111 sampler names on diffusers schedulers.

Artists name samplers the A1111 way: ``DPM++ 2M`` plus a ``Schedule type`` (A1111 ≥ 1.9), or
the older combined form ``DPM++ 2M Karras``. :func:`resolve_sampler` turns either into a
:class:`SamplerSpec` (which diffusers scheduler, with which settings) and :func:`make_scheduler`
builds it for an SD 1.5 model. Importing this module is cheap: diffusers loads on first build.

A1111 rules reproduced here:

* A schedule suffix on the sampler name ("DPM++ 2M Karras") wins over a separate schedule type,
  as in A1111's ``get_sampler_and_scheduler``.
* ``Automatic`` means the sampler's own default: Karras for DPM++ 2M, DPM++ SDE, DPM++ 2S a,
  DPM2 and DPM2 a; Exponential for DPM++ 2M SDE (Heun) and DPM++ 3M SDE; the model's uniform
  schedule for the rest. A1111 ≥ 1.9 reads an old infotext's bare ``Sampler: DPM++ 2M`` (which
  meant uniform before 1.9) as Automatic too, so it now regenerates with Karras; we do the same.
  :attr:`SamplerSpec.schedule_type` is the resolved label, which A1111 writes to infotext
  unless it is ``Automatic``.
* DDIM, PLMS and UniPC are A1111 "timesteps" samplers that ignore the schedule type, so any A1111
  schedule type is accepted for them and resolves to ``Automatic``.
* Karras uses rho 7 between the model's own sigma_min/sigma_max; Exponential is log-linear
  between them; Beta uses alpha = beta = 0.6 (A1111's defaults) — diffusers computes the same.
  Uniform is diffusers' ``linspace`` spacing and SGM Uniform its ``trailing`` spacing; they
  interpolate sigmas linearly (k-diffusion: in log sigma) and the DPM-Solver classes place
  their uniform steps up to a fraction of a step apart from A1111's (within 0.1% for Euler).
* Samplers that end at sigma 0 take a plain first-order (Euler-like) last step in k-diffusion;
  diffusers does the same with ``final_sigmas_type="zero"``, so ``euler_at_final`` stays off and
  DPM++ multistep keeps ``lower_order_final`` off (k-diffusion has no lower-order penultimate
  step). UniPC ends at the model's sigma_min like A1111's (``final_sigmas_type="sigma_min"``).

Euler, Euler a, DPM++ 2M and DDIM do not run on their diffusers scheduler: the engine runs them
with A1111's own loops (:mod:`charstudio.engine.kdiffusion_samplers`, named by
:attr:`SamplerSpec.loop`) so their images match A1111's pixel for pixel; their diffusers
settings below remain the nearest scheduler for code that asks :func:`make_scheduler`.

Approximations (diffusers has no exact equivalent) are listed in each sampler's ``notes``.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from charstudio.engine.kdiffusion_samplers import KDIFFUSION_SAMPLERS

__all__ = [
    "SAMPLER_NAMES",
    "SCHEDULE_TYPES",
    "SD15_SCHEDULER_CONFIG",
    "SamplerSpec",
    "SamplerUnavailableError",
    "available_sampler_names",
    "make_scheduler",
    "resolve_sampler",
    "sampler_available",
    "schedule_label",
    "schedule_types_for",
]

# The scheduler config shipped with runwayml/stable-diffusion-v1-5 (a PNDMScheduler config).
SD15_SCHEDULER_CONFIG: Mapping[str, Any] = MappingProxyType(
    {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "trained_betas": None,
        "prediction_type": "epsilon",
        "steps_offset": 1,
        "clip_sample": False,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
    }
)

# Only keys that describe the *model's* noise schedule are taken from a base config. Sampling
# keys (timestep_spacing, use_karras_sigmas, ...) come from the spec alone: a pipeline's own
# scheduler config carries e.g. PNDM's "leading" spacing, which would silently change Euler.
_MODEL_KEYS = (
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "prediction_type",
    "steps_offset",
    "rescale_betas_zero_snr",
)

# Schedule types charstudio can apply, in A1111's menu order.
SCHEDULE_TYPES: list[str] = ["Automatic", "Uniform", "Karras", "Exponential", "SGM Uniform", "Beta"]

# Every A1111 schedule type (label and aliases) so that old names parse and clear errors can
# tell "A1111 has it, charstudio does not" from a typo.
_A1111_SCHEDULES: dict[str, tuple[str, ...]] = {
    "Automatic": ("automatic",),
    "Uniform": ("uniform",),
    "Karras": ("karras",),
    "Exponential": ("exponential",),
    "Polyexponential": ("polyexponential",),
    "SGM Uniform": ("sgm uniform", "sgmuniform"),
    "KL Optimal": ("kl optimal",),
    "Align Your Steps": ("align your steps",),
    "Simple": ("simple",),
    "Normal": ("normal",),
    "DDIM": ("ddim",),
    "Beta": ("beta",),
}

# A1111 samplers without a diffusers equivalent.
_A1111_UNSUPPORTED = ("DPM fast", "DPM adaptive", "Restart", "DDIM CFG++")

# How each schedule type is expressed, per capability of the diffusers class.
_SIGMA_FLAGS: dict[str, dict[str, Any]] = {
    "Karras": {"use_karras_sigmas": True},
    "Exponential": {"use_exponential_sigmas": True},
    "Beta": {"use_beta_sigmas": True},
}
_SPACINGS: dict[str, str] = {"Uniform": "linspace", "SGM Uniform": "trailing"}


class SamplerUnavailableError(RuntimeError):
    """The sampler is known but cannot be built here (a Python package is missing)."""


@dataclass(frozen=True)
class SamplerSpec:
    """One A1111 sampler + schedule type, as a diffusers scheduler class and its settings."""

    a1111_name: str
    schedule_type: str
    scheduler_class: str
    config: Mapping[str, Any] = field(hash=False)
    # The scheduler draws fresh noise every step: pass one generator per image (seeds.py).
    stochastic: bool = False
    # Karras/Exponential/Beta applied by sigma_schedules.py (the diffusers class lacks them).
    sigma_schedule: str | None = None
    # Its step noise comes from Brownian trees seeded by the image seeds (DPM++ SDE).
    brownian: bool = False
    requires: tuple[str, ...] = ()
    notes: str = ""
    # The engine runs it with A1111's own loop (kdiffusion_samplers.py), not the scheduler.
    loop: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))


@dataclass(frozen=True)
class _Sampler:
    name: str
    scheduler_class: str
    config: Mapping[str, Any]
    # A1111's 'scheduler' option: what Automatic means; None is the model's uniform schedule.
    default_schedule: str | None = None
    sigma_flags: bool = True  # the class has use_karras/exponential/beta_sigmas
    spacing: bool = True  # the class has timestep_spacing
    timesteps_sampler: bool = False  # A1111 ignores the schedule type for it
    own_sigma_schedules: bool = False  # the sigma flags are applied by sigma_schedules.py
    stochastic: bool = False
    brownian: bool = False
    requires: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    notes: str = ""


_DPMPP_MULTISTEP = {
    "algorithm_type": "dpmsolver++",
    "solver_order": 2,
    "solver_type": "midpoint",
    "lower_order_final": False,
    "euler_at_final": False,
    "final_sigmas_type": "zero",
}
_SDE_NOISE_NOTE = (
    "A1111 draws this sampler's step noise from Brownian trees; diffusers draws Gaussian noise "
    "from the per-image generators: same statistics, different pixels for a given seed."
)
_DISCARD_NOTE = (
    "A1111 computes steps+1 sigmas and drops the next-to-last one for this sampler; diffusers "
    "cannot, so the last steps are spaced slightly differently."
)

# A1111's sampler table, in its menu order (k-diffusion samplers, then timesteps samplers, then
# LCM), restricted to what diffusers can run.
_SAMPLERS: tuple[_Sampler, ...] = (
    _Sampler(
        "DPM++ 2M",
        "DPMSolverMultistepScheduler",
        _DPMPP_MULTISTEP,
        default_schedule="Karras",
        aliases=("k_dpmpp_2m",),
    ),
    _Sampler(
        "DPM++ SDE",
        "DPMSolverSDEScheduler",
        {},
        default_schedule="Karras",
        sigma_flags=True,
        stochastic=True,
        brownian=True,
        requires=("torchsde",),
        aliases=("k_dpmpp_sde",),
        notes="diffusers' port of k-diffusion's sample_dpmpp_sde; needs the torchsde package.",
    ),
    _Sampler(
        "DPM++ 2M SDE",
        "DPMSolverMultistepScheduler",
        {**_DPMPP_MULTISTEP, "algorithm_type": "sde-dpmsolver++"},
        default_schedule="Exponential",
        stochastic=True,
        aliases=("k_dpmpp_2m_sde",),
        notes=_SDE_NOISE_NOTE,
    ),
    _Sampler(
        "DPM++ 2M SDE Heun",
        "DPMSolverMultistepScheduler",
        {**_DPMPP_MULTISTEP, "algorithm_type": "sde-dpmsolver++", "solver_type": "heun"},
        default_schedule="Exponential",
        stochastic=True,
        aliases=("k_dpmpp_2m_sde_heun",),
        notes=_SDE_NOISE_NOTE,
    ),
    _Sampler(
        "DPM++ 2S a",
        "DPMSolverSinglestepScheduler",
        {
            "algorithm_type": "sde-dpmsolver++",
            "solver_order": 2,
            "solver_type": "midpoint",
            # diffusers requires it with a final sigma of zero (it forces it on, with a warning).
            "lower_order_final": True,
            "final_sigmas_type": "zero",
        },
        default_schedule="Karras",
        spacing=False,
        stochastic=True,
        aliases=("k_dpmpp_2s_a",),
        notes=(
            "Approximation: diffusers has no DPM++ 2S ancestral. DPMSolverSinglestepScheduler "
            "with the SDE variant is used: its first-order step equals the ancestral (eta 1) "
            "step and it injects noise of the same size, but each second-order step spans two "
            "schedule intervals, so N steps cost N UNet calls (about 2N in A1111) and images "
            "differ from A1111's. SGM Uniform is unavailable (no timestep_spacing)."
        ),
    ),
    _Sampler(
        "DPM++ 3M SDE",
        "DPMSolverMultistepScheduler",
        {**_DPMPP_MULTISTEP, "algorithm_type": "sde-dpmsolver++", "solver_order": 3},
        default_schedule="Exponential",
        stochastic=True,
        aliases=("k_dpmpp_3m_sde",),
        notes=(
            "Approximation: diffusers' third-order SDE DPM-Solver++ differs in form from "
            "k-diffusion's sample_dpmpp_3m_sde. " + _DISCARD_NOTE + " " + _SDE_NOISE_NOTE
        ),
    ),
    _Sampler(
        "Euler a",
        "EulerAncestralDiscreteScheduler",
        {},
        stochastic=True,
        aliases=("k_euler_a", "k_euler_ancestral"),
        # diffusers' class has no sigma flags: sigma_schedules.py supplies them.
        own_sigma_schedules=True,
    ),
    _Sampler(
        "Euler",
        "EulerDiscreteScheduler",
        {"interpolation_type": "linear", "final_sigmas_type": "zero"},
        aliases=("k_euler",),
    ),
    _Sampler("LMS", "LMSDiscreteScheduler", {}, aliases=("k_lms",)),
    _Sampler("Heun", "HeunDiscreteScheduler", {"clip_sample": False}, aliases=("k_heun",)),
    _Sampler(
        "DPM2",
        "KDPM2DiscreteScheduler",
        {},
        default_schedule="Karras",
        aliases=("k_dpm_2",),
        notes=_DISCARD_NOTE,
    ),
    _Sampler(
        "DPM2 a",
        "KDPM2AncestralDiscreteScheduler",
        {},
        default_schedule="Karras",
        stochastic=True,
        aliases=("k_dpm_2_a",),
        notes=_DISCARD_NOTE,
    ),
    _Sampler(
        "DDIM",
        "DDIMScheduler",
        # CompVis DDIM: "leading" steps + 1, eta 0, no clipping, alpha_prev of the last step is
        # alphas_cumprod[0] (set_alpha_to_one False).
        {
            "timestep_spacing": "leading",
            "clip_sample": False,
            "set_alpha_to_one": False,
        },
        timesteps_sampler=True,
        aliases=("ddim",),
    ),
    _Sampler(
        "PLMS",
        "PNDMScheduler",
        # skip_prk_steps gives the CompVis PLMS sampler (no Runge-Kutta warm-up).
        {"timestep_spacing": "leading", "skip_prk_steps": True, "set_alpha_to_one": False},
        timesteps_sampler=True,
        aliases=("plms",),
        notes="A1111's own PLMS places its timesteps a little differently ('leading' here).",
    ),
    _Sampler(
        "UniPC",
        "UniPCMultistepScheduler",
        # A1111's defaults: variant bh1, order 3, lower-order final steps, time-uniform steps
        # ending at the model's sigma_min (no final denoise to zero).
        {
            "solver_type": "bh1",
            "solver_order": 3,
            "predict_x0": True,
            "lower_order_final": True,
            "timestep_spacing": "linspace",
            "final_sigmas_type": "sigma_min",
        },
        timesteps_sampler=True,
        aliases=("unipc",),
    ),
    _Sampler(
        "LCM",
        "LCMScheduler",
        {"clip_sample": False, "set_alpha_to_one": False},
        sigma_flags=False,
        spacing=False,
        stochastic=True,
        aliases=("k_lcm",),
        notes=(
            "For LCM models/LoRAs. Approximation: diffusers' LCMScheduler picks timesteps from "
            "LCM's 50-step training schedule; A1111's LCM uses the model's uniform schedule. "
            "Only Automatic/Uniform."
        ),
    ),
)

SAMPLER_NAMES: list[str] = [s.name for s in _SAMPLERS]


def _norm(text: str) -> str:
    return " ".join(text.replace("_", " ").split()).casefold()


_BY_NAME: dict[str, _Sampler] = {}
for _s in _SAMPLERS:
    for _key in (_s.name, *_s.aliases):
        _BY_NAME[_norm(_key)] = _s

_SCHEDULE_BY_NAME: dict[str, str] = {
    _norm(alias): label
    for label, aliases in _A1111_SCHEDULES.items()
    for alias in (label, *aliases)
}
# Longest first, so "SGM Uniform" is stripped before "Uniform".
_SCHEDULE_SUFFIXES = sorted(_SCHEDULE_BY_NAME, key=len, reverse=True)


def _supported_schedules(sampler: _Sampler) -> list[str]:
    if sampler.timesteps_sampler:
        return ["Automatic"]
    supported = ["Automatic", "Uniform"]
    if sampler.sigma_flags:
        supported += ["Karras", "Exponential"]
    if sampler.spacing:
        supported.append("SGM Uniform")
    if sampler.sigma_flags:
        supported.append("Beta")
    # Keep A1111's menu order.
    return [label for label in SCHEDULE_TYPES if label in supported]


def _schedule_config(sampler: _Sampler, schedule: str) -> dict[str, Any]:
    if sampler.timesteps_sampler:
        return {}
    config: dict[str, Any] = {}
    if sampler.spacing:
        config["timestep_spacing"] = _SPACINGS.get(schedule, "linspace")
    if sampler.sigma_flags:
        for label, flags in _SIGMA_FLAGS.items():
            for key in flags:
                config[key] = label == schedule
    return config


_UNSUPPORTED_KEYS = frozenset(_norm(name) for name in _A1111_UNSUPPORTED)


def _lookup_sampler(key: str, original: str) -> _Sampler:
    sampler = _BY_NAME.get(key)
    if sampler is not None:
        return sampler
    if key in _UNSUPPORTED_KEYS:
        raise ValueError(
            f"A1111 sampler {original.strip()!r} is not available in charstudio (diffusers has "
            f"no equivalent). Available samplers: {', '.join(SAMPLER_NAMES)}"
        )
    raise ValueError(
        f"Unknown sampler {original.strip()!r}. Known samplers: {', '.join(SAMPLER_NAMES)} "
        f"(optionally followed by a schedule type: {', '.join(SCHEDULE_TYPES[1:])})"
    )


def _split_name(name: str) -> tuple[_Sampler, str | None]:
    """Split "DPM++ 2M Karras" into the sampler and its schedule suffix (A1111's parse)."""
    key = _norm(name)
    if key in _BY_NAME:
        return _BY_NAME[key], None
    for suffix in _SCHEDULE_SUFFIXES:
        if key.endswith(" " + suffix):
            head = key[: -len(suffix) - 1]
            if head in _BY_NAME or head in _UNSUPPORTED_KEYS:
                return _lookup_sampler(head, name), _SCHEDULE_BY_NAME[suffix]
    return _lookup_sampler(key, name), None


def split_sampler_name(name: str) -> tuple[str, str | None]:
    """Canonical (sampler, schedule written into the name or None) for an A1111 sampler
    name in either style, any case: ``"dpm++ 2m karras"`` -> ``("DPM++ 2M", "Karras")``.
    Raises ValueError for names A1111 does not know or charstudio cannot run."""
    sampler, schedule = _split_name(name)
    return sampler.name, schedule


def _schedule_label(schedule_type: str | None) -> str:
    if schedule_type is None or not schedule_type.strip():
        return "Automatic"
    label = _SCHEDULE_BY_NAME.get(_norm(schedule_type))
    if label is None:
        raise ValueError(
            f"Unknown schedule type {schedule_type.strip()!r}. "
            f"Known schedule types: {', '.join(SCHEDULE_TYPES)}"
        )
    return label


def schedule_label(schedule_type: str) -> str:
    """The canonical A1111 label of a schedule type written in any case or alias
    (``"karras"`` -> ``"Karras"``); ValueError naming the known ones when unknown."""
    if not schedule_type.strip():
        raise ValueError(f"empty schedule type; known: {', '.join(SCHEDULE_TYPES)}")
    return _schedule_label(schedule_type)


def resolve_sampler(name: str, schedule_type: str | None = None) -> SamplerSpec:
    """Resolve an A1111 sampler name (either naming style) and schedule type.

    Matching is case-insensitive and ignores extra spaces. Raises ValueError naming the known
    samplers or schedule types when something is unknown or the pair cannot be built.
    """
    sampler, suffix = _split_name(name)
    # A suffix in the name wins over the separate field, as in A1111.
    label = suffix if suffix is not None else _schedule_label(schedule_type)
    if sampler.timesteps_sampler:
        label = "Automatic"  # A1111 ignores the schedule type for these samplers
    supported = _supported_schedules(sampler)
    if label not in supported:
        raise ValueError(
            f"Schedule type {label!r} is not available for sampler {sampler.name!r} in "
            f"charstudio. Available: {', '.join(supported)}"
        )
    effective = label
    if label == "Automatic" and sampler.default_schedule is not None:
        effective = sampler.default_schedule
    config = {**sampler.config, **_schedule_config(sampler, effective)}
    own = None
    if sampler.own_sigma_schedules:
        own = effective if effective in _SIGMA_FLAGS else None
        config = {k: v for k, v in config.items() if not k.startswith("use_")}
    return SamplerSpec(
        a1111_name=sampler.name,
        schedule_type=effective,
        scheduler_class=sampler.scheduler_class,
        config=config,
        sigma_schedule=own,
        stochastic=sampler.stochastic,
        brownian=sampler.brownian,
        requires=sampler.requires,
        notes=sampler.notes,
        loop=KDIFFUSION_SAMPLERS.get(sampler.name),
    )


def schedule_types_for(name: str) -> list[str]:
    """The schedule types charstudio offers with this sampler (for the GUI's combo box)."""
    sampler, _suffix = _split_name(name)
    return _supported_schedules(sampler)


def _missing(requires: Sequence[str]) -> list[str]:
    return [module for module in requires if importlib.util.find_spec(module) is None]


def sampler_available(spec_or_name: SamplerSpec | str) -> bool:
    """Whether the packages this sampler needs are installed."""
    if isinstance(spec_or_name, str):
        spec_or_name = resolve_sampler(spec_or_name)
    return not _missing(spec_or_name.requires)


def available_sampler_names() -> list[str]:
    """SAMPLER_NAMES minus those whose packages are missing here."""
    return [name for name in SAMPLER_NAMES if sampler_available(name)]


def make_scheduler(
    spec: SamplerSpec,
    base_config: Mapping[str, Any] | None = None,
    *,
    seeds: Sequence[int] | None = None,
) -> Any:
    """Build the diffusers scheduler for ``spec``.

    ``base_config`` describes the model's noise schedule (default: SD 1.5's); a loaded
    pipeline's ``scheduler.config`` works too — only its model keys are used (beta schedule,
    prediction type, ...). ``seeds`` (one per image of the batch) seed the Brownian-tree noise
    of DPM++ SDE per image, as A1111 does; they are required for it so that an image
    regenerates alone. Build a fresh scheduler per batch: schedulers keep sampling state.
    """
    missing = _missing(spec.requires)
    if missing:
        raise SamplerUnavailableError(
            f"Sampler {spec.a1111_name!r} needs the Python package(s) {', '.join(missing)}, "
            f"which are not installed (pip install {' '.join(missing)}). Choose another sampler."
        )
    import diffusers

    cls = getattr(diffusers, spec.scheduler_class)
    base = SD15_SCHEDULER_CONFIG if base_config is None else base_config
    config = {key: base[key] for key in _MODEL_KEYS if key in base}
    config.update(spec.config)
    if spec.brownian:
        if not seeds:
            raise ValueError(f"Sampler {spec.a1111_name!r} needs the batch's seeds")
        config["noise_sampler_seed"] = [int(seed) for seed in seeds]
    params = inspect.signature(cls.__init__).parameters
    if spec.sigma_schedule is None:
        return cls(**{key: value for key, value in config.items() if key in params})
    from charstudio.engine.sigma_schedules import scheduled

    scheduler = scheduled(cls)(**{key: value for key, value in config.items() if key in params})
    scheduler.sigma_schedule = spec.sigma_schedule
    return scheduler
