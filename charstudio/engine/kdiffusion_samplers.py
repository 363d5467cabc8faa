"""A1111's own sampling loops for Euler, Euler a, DPM++ 2M and DDIM.

A1111 runs these samplers through k-diffusion (and its own DDIM), and diffusers' schedulers
differ from them in ways that show in the pixels: whole-number UNet timesteps, sigmas
interpolated linearly in t instead of in log sigma, DDIM's "leading" timesteps. This module
follows the published algorithms step by step, in the same order of floating-point operations,
so an image matches A1111's for the same noise:

* The model's schedule: ``alphas_cumprod`` computed in float64 and stored in float32 (as the
  CompVis model A1111 loads), sigmas ``sqrt((1 - a) / a)``; a sigma goes to the UNet as the
  fractional timestep found by interpolating in log sigma (k-diffusion's ``sigma_to_t``, A1111
  leaves quantization off), and the input is scaled by ``1 / sqrt(sigma^2 + 1)``.
* Classifier-free guidance as A1111's ``CFGDenoiser``: one UNet batch of the positive then the
  negative prompt, combined on the denoised image: ``uncond + (cond - uncond) * cfg``.
* Schedule types as A1111 ≥ 1.9 computes them (Automatic/Uniform is k-diffusion's
  ``get_sigmas``, Karras with rho 7 between the model's own sigma_min and sigma_max, ...).
* DDIM as A1111's timesteps sampler: timesteps ``range(0, 1000, 1000 // steps) + 1`` and one
  UNet call fewer than timesteps, eta 0.

Everything runs in float32 whatever the UNet's dtype; torch is imported inside functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "KDIFFUSION_SAMPLERS",
    "ModelSchedule",
    "ddim_timesteps",
    "model_schedule",
    "run_sampler",
    "sampler_calls",
    "sigmas_for",
    "step_noise",
    "supports",
]

# charstudio sampler name -> the loop that runs it.
KDIFFUSION_SAMPLERS: Mapping[str, str] = {
    "Euler": "euler",
    "Euler a": "euler_ancestral",
    "DPM++ 2M": "dpmpp_2m",
    "DDIM": "ddim",
}

KARRAS_RHO = 7.0
BETA_ALPHA = BETA_BETA = 0.6  # A1111's default Beta schedule parameters

# (x, sigma or timestep, call index) -> the guided model output.
Model = Callable[[Any, Any, int], Any]
# Fresh Gaussian noise shaped like the latents (the images' step-noise streams).
NoiseFn = Callable[[], Any]


@dataclass(frozen=True)
class ModelSchedule:
    """The model's 1,000 training noise levels (float32 tensors, ascending sigmas)."""

    alphas_cumprod: Any
    sigmas: Any
    log_sigmas: Any

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0].item())

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1].item())

    def sigma_to_t(self, sigma: Any) -> Any:
        """Fractional timesteps for ``sigma``: linear interpolation in log sigma."""
        log_sigma = sigma.log()
        dists = log_sigma - self.log_sigmas[:, None]
        low = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.log_sigmas.shape[0] - 2)
        high = low + 1
        low_log, high_log = self.log_sigmas[low], self.log_sigmas[high]
        weight = ((low_log - log_sigma) / (low_log - high_log)).clamp(0, 1)
        return ((1 - weight) * low + weight * high).view(sigma.shape)

    def t_to_sigma(self, t: Any) -> Any:
        t = t.float()
        low, high, weight = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - weight) * self.log_sigmas[low] + weight * self.log_sigmas[high]).exp()

    def uniform_sigmas(self, steps: int) -> Any:
        import torch

        t = torch.linspace(len(self.sigmas) - 1, 0, steps)
        return _append_zero(self.t_to_sigma(t))


def _append_zero(sigmas: Any) -> Any:
    import torch

    return torch.cat([sigmas, sigmas.new_zeros([1])])


def supports(config: Mapping[str, Any] | None) -> bool:
    """Whether these loops can run a model with this scheduler config: an epsilon-prediction
    model with a (scaled) linear beta schedule, like every SD 1.x checkpoint. Others (e.g.
    v-prediction) keep their diffusers scheduler."""
    if config is None:
        return True
    return (
        config.get("prediction_type", "epsilon") == "epsilon"
        and (
            config.get("trained_betas") is not None
            or config.get("beta_schedule", "scaled_linear") in ("scaled_linear", "linear")
        )
        and not config.get("rescale_betas_zero_snr", False)
    )


def model_schedule(config: Mapping[str, Any] | None = None) -> ModelSchedule:
    """The noise schedule of a model from its scheduler config (default: SD 1.5's)."""
    import numpy as np
    import torch

    from charstudio.engine.samplers import SD15_SCHEDULER_CONFIG

    config = SD15_SCHEDULER_CONFIG if config is None else config
    if config.get("prediction_type", "epsilon") != "epsilon":
        raise ValueError(
            f"A1111's samplers here support epsilon-prediction models only, not "
            f"{config.get('prediction_type')!r}"
        )
    steps = int(config.get("num_train_timesteps", 1000))
    start, end = float(config.get("beta_start", 0.00085)), float(config.get("beta_end", 0.012))
    kind = config.get("beta_schedule", "scaled_linear")
    trained = config.get("trained_betas")
    # float64 betas from torch.linspace, as the CompVis model computes them
    if trained is not None:
        betas = np.asarray(trained, dtype=np.float64)
    elif kind == "scaled_linear":
        betas = (torch.linspace(start**0.5, end**0.5, steps, dtype=torch.float64) ** 2).numpy()
    elif kind == "linear":
        betas = torch.linspace(start, end, steps, dtype=torch.float64).numpy()
    else:
        raise ValueError(f"unsupported beta schedule {kind!r} (scaled_linear or linear)")
    alphas_cumprod = torch.tensor(np.cumprod(1.0 - betas), dtype=torch.float32)
    sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
    return ModelSchedule(alphas_cumprod, sigmas, sigmas.log())


def sigmas_for(schedule_type: str, steps: int, model: ModelSchedule) -> Any:
    """``steps`` sigmas of an A1111 schedule type, then a final 0 (float32, CPU)."""
    import numpy as np
    import torch

    sigma_min, sigma_max = model.sigma_min, model.sigma_max
    if schedule_type in ("Automatic", "Uniform"):
        return model.uniform_sigmas(steps)
    if schedule_type == "Karras":
        ramp = torch.linspace(0, 1, steps)
        low, high = sigma_min ** (1 / KARRAS_RHO), sigma_max ** (1 / KARRAS_RHO)
        return _append_zero((high + ramp * (low - high)) ** KARRAS_RHO)
    if schedule_type == "Exponential":
        return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps).exp())
    if schedule_type == "SGM Uniform":
        start = model.sigma_to_t(torch.tensor(sigma_max))
        end = model.sigma_to_t(torch.tensor(sigma_min))
        sigmas = [model.t_to_sigma(t) for t in torch.linspace(start, end, steps + 1)[:-1]]
        return torch.FloatTensor([*sigmas, 0.0])
    if schedule_type == "Beta":
        from scipy import stats

        points = [stats.beta.ppf(x, BETA_ALPHA, BETA_BETA) for x in 1 - np.linspace(0, 1, steps)]
        return torch.FloatTensor([*(sigma_min + p * (sigma_max - sigma_min) for p in points), 0.0])
    raise ValueError(f"no schedule type {schedule_type!r} for A1111's samplers")


def ddim_timesteps(steps: int) -> Any:
    """A1111's DDIM timesteps, ascending (the loop walks them down, skipping the first)."""
    import torch

    if steps < 1:
        raise ValueError("DDIM needs at least one step")
    return torch.clip(torch.tensor(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)


def sampler_calls(loop: str, steps: int) -> int:
    """How many UNet calls (progress steps) the loop makes for ``steps``."""
    return len(ddim_timesteps(steps)) - 1 if loop == "ddim" else steps


def _to_d(x: Any, sigma: Any, denoised: Any) -> Any:
    return (x - denoised) / sigma


def _euler(model: Model, x: Any, sigmas: Any, noise: NoiseFn | None) -> Generator[Any, None, Any]:
    for i in range(len(sigmas) - 1):
        sigma_hat = sigmas[i] * 1.0  # s_churn 0: no noise added back (gamma 0)
        denoised = model(x, sigma_hat, i)
        d = _to_d(x, sigma_hat, denoised)
        x = x + d * (sigmas[i + 1] - sigma_hat)
        yield x
    return x


def _euler_ancestral(
    model: Model, x: Any, sigmas: Any, noise: NoiseFn | None
) -> Generator[Any, None, Any]:
    assert noise is not None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma, i)
        # eta 1: the largest step up that keeps the marginal at sigma_next
        sigma_up = min(sigma_next, (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
        sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5
        d = _to_d(x, sigma, denoised)
        x = x + d * (sigma_down - sigma)
        if sigma_next > 0:
            x = x + noise() * 1.0 * sigma_up
        yield x
    return x


def _dpmpp_2m(
    model: Model, x: Any, sigmas: Any, noise: NoiseFn | None
) -> Generator[Any, None, Any]:
    def t_of(sigma: Any) -> Any:
        return sigma.log().neg()

    def sigma_of(t: Any) -> Any:
        return t.neg().exp()

    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i], i)
        t, t_next = t_of(sigmas[i]), t_of(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (sigma_of(t_next) / sigma_of(t)) * x - (-h).expm1() * denoised
        else:
            r = (t - t_of(sigmas[i - 1])) / h
            combined = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigma_of(t_next) / sigma_of(t)) * x - (-h).expm1() * combined
        old_denoised = denoised
        yield x
    return x


_SIGMA_LOOPS = {"euler": _euler, "euler_ancestral": _euler_ancestral, "dpmpp_2m": _dpmpp_2m}


def _ddim(
    eps_model: Model, x: Any, timesteps: Any, alphas_cumprod: Any
) -> Generator[Any, None, Any]:
    import torch

    alphas = alphas_cumprod[timesteps]
    previous = torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))
    alphas_prev = alphas_cumprod[previous].to(torch.float64)
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)
    ones = x.new_ones((x.shape[0], 1, 1, 1))
    for call, index in enumerate(range(len(timesteps) - 1, 0, -1)):
        e_t = eps_model(x, timesteps[index].item() * x.new_ones((x.shape[0],)), call)
        a_t = alphas[index].item() * ones
        a_prev = alphas_prev[index].item() * ones
        pred_x0 = (x - sqrt_one_minus_alphas[index].item() * ones * e_t) / a_t.sqrt()
        dir_xt = (1.0 - a_prev).sqrt() * e_t  # eta 0: no noise term
        x = a_prev.sqrt() * pred_x0 + dir_xt
        yield x
    return x


def run_sampler(
    loop: str,
    *,
    unet: Any,
    latents: Any,
    steps: int,
    schedule_type: str,
    cfg_scale: float,
    context_at: Callable[[int], Any],
    model: ModelSchedule,
    noise: NoiseFn | None = None,
) -> Generator[Any, None, Any]:
    """Run A1111's ``loop`` from the initial noise ``latents`` (unit variance); yields the
    latents after every UNet call and returns the final ones.

    ``context_at(call)`` is the UNet's encoder states for that call: the batch's positive
    prompts followed by its negative prompts (A1111's order). ``noise()`` draws step noise
    (Euler a)."""
    import torch

    batch = latents.shape[0]
    unet_dtype = unet.dtype
    x = latents.float()

    def unet_out(unet_x: Any, t: Any, call: int) -> Any:
        # Only the UNet call in inference mode: a suspended generator must not leave it on.
        with torch.inference_mode():
            sample = unet(unet_x.to(unet_dtype), t, encoder_hidden_states=context_at(call))
        return sample.sample.float()

    def combine(out: Any) -> Any:
        cond, uncond = out[:batch], out[batch:]
        combined = torch.clone(uncond)
        combined += (cond - uncond) * cfg_scale
        return combined

    if loop == "ddim":
        alphas_cumprod = model.alphas_cumprod.to(x.device)

        def eps_model(x: Any, t: Any, call: int) -> Any:
            x_in = torch.cat([x, x])
            return combine(unet_out(x_in, torch.cat([t, t]), call))

        return (yield from _ddim(eps_model, x, ddim_timesteps(steps).to(x.device), alphas_cumprod))

    sigmas = sigmas_for(schedule_type, steps, model).to(x.device)
    schedule = ModelSchedule(
        model.alphas_cumprod.to(x.device), model.sigmas.to(x.device), model.log_sigmas.to(x.device)
    )

    def denoiser(x: Any, sigma: Any, call: int) -> Any:
        sigma = sigma * x.new_ones([batch])
        x_in, sigma_in = torch.cat([x, x]), torch.cat([sigma, sigma])
        c_out = (-sigma_in)[:, None, None, None]
        c_in = (1 / (sigma_in**2 + 1.0**2) ** 0.5)[:, None, None, None]
        eps = unet_out(x_in * c_in, schedule.sigma_to_t(sigma_in), call)
        return combine(x_in + eps * c_out)

    return (yield from _SIGMA_LOOPS[loop](denoiser, x * sigmas[0], sigmas, noise))


def step_noise(streams: Sequence[Any], shape: tuple[int, ...], device: Any) -> NoiseFn:
    """Each image's next step noise from its own stream, as A1111's ImageRNG draws it."""
    import torch

    from charstudio.engine.seeds import _draw

    def draw() -> Any:
        return torch.stack([_draw(stream, shape) for stream in streams]).to(device)

    return draw
