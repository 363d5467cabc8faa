"""Schedule types for samplers whose diffusers class cannot take them (Euler a).

The engine samples Euler a with A1111's own loop (:mod:`charstudio.engine.kdiffusion_samplers`);
this module serves :func:`charstudio.engine.samplers.make_scheduler`'s diffusers scheduler.

A1111 lets every k-diffusion sampler run on every schedule type; diffusers' Euler ancestral
class only spaces timesteps. :func:`scheduled` gives such a class a ``set_timesteps`` that
replaces its uniform sigmas with the Karras, Exponential or Beta ones, computed exactly as
diffusers computes them for the classes that have the option (so "Euler a Karras" walks the
same sigmas as "Euler Karras"), and maps each sigma back to a fractional timestep for the UNet.

torch, numpy and scipy are imported inside the functions, like the rest of the engine.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

SIGMA_SCHEDULES = ("Karras", "Exponential", "Beta")
KARRAS_RHO = 7.0
BETA_ALPHA = BETA_BETA = 0.6  # diffusers' and A1111's defaults for the Beta schedule


def sigmas_for(schedule: str, sigma_min: float, sigma_max: float, steps: int) -> Any:
    """``steps`` sigmas from ``sigma_max`` down to ``sigma_min`` (a numpy array)."""
    import numpy as np

    if schedule == "Karras":
        ramp = np.linspace(0, 1, steps)
        low, high = sigma_min ** (1 / KARRAS_RHO), sigma_max ** (1 / KARRAS_RHO)
        return (high + ramp * (low - high)) ** KARRAS_RHO
    if schedule == "Exponential":
        return np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), steps))
    if schedule == "Beta":
        from scipy import stats

        points = stats.beta.ppf(1 - np.linspace(0, 1, steps), BETA_ALPHA, BETA_BETA)
        return sigma_min + points * (sigma_max - sigma_min)
    raise ValueError(f"no sigma schedule {schedule!r}; known: {', '.join(SIGMA_SCHEDULES)}")


def sigma_to_timestep(sigmas: Any, log_sigmas: Any) -> Any:
    """Fractional timesteps for ``sigmas``, interpolating linearly in log sigma between the
    model's 1,000 training sigmas (``log_sigmas``, ascending)."""
    import numpy as np

    log_sigma = np.log(np.maximum(sigmas, 1e-10))
    above = np.cumsum(log_sigma[None, :] - log_sigmas[:, None] >= 0, axis=0).argmax(axis=0)
    low = above.clip(max=log_sigmas.shape[0] - 2)
    weight = (log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1])
    weight = np.clip(weight, 0, 1)
    return (1 - weight) * low + weight * (low + 1)


@cache
def scheduled(base: type) -> type:
    """A subclass of the diffusers scheduler class ``base`` whose instances follow the schedule
    named by their ``sigma_schedule`` attribute (set it after building the scheduler)."""

    class SigmaScheduled(base):  # type: ignore[misc, valid-type]
        sigma_schedule: str | None = None

        def set_timesteps(self, num_inference_steps: int, device: Any = None) -> None:
            super().set_timesteps(num_inference_steps, device=device)
            if self.sigma_schedule is None:
                return
            import numpy as np
            import torch

            uniform = self.sigmas[:-1].cpu().numpy()  # the last sigma is the final 0
            sigmas = sigmas_for(
                self.sigma_schedule, float(uniform[-1]), float(uniform[0]), num_inference_steps
            )
            alphas = self.alphas_cumprod.cpu().numpy()
            log_sigmas = np.log(((1 - alphas) / alphas) ** 0.5)
            timesteps = sigma_to_timestep(sigmas, log_sigmas)
            self.sigmas = torch.cat([torch.from_numpy(sigmas).float(), torch.zeros(1)]).to(
                device=device
            )
            self.timesteps = torch.from_numpy(timesteps).float().to(device=device)

    SigmaScheduled.__name__ = SigmaScheduled.__qualname__ = f"{base.__name__}WithSigmaSchedule"
    return SigmaScheduled
