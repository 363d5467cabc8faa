"""An A1111-equivalent txt2img path for tests, written from the published algorithms.

What A1111 runs for a txt2img with its CPU noise: each image's noise from
``torch.Generator().manual_seed(seed)``, step noise continuing that generator; k-diffusion's
``CompVisDenoiser`` (eps model, sigma <-> fractional t by log-sigma interpolation) under
A1111's ``CFGDenoiser`` (positive then negative prompt in one batch, combined on the
denoised); k-diffusion's ``sample_euler`` / ``sample_euler_ancestral`` / ``sample_dpmpp_2m``
and ``get_sigmas_karras``; A1111's DDIM timesteps sampler; the VAE output clamped and saved as
``(255 * x).astype(uint8)``. Kept deliberately plain (no sharing with the engine) so that the
parity tests compare two independent implementations.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def compvis_alphas_cumprod(beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """The LDM model's ``alphas_cumprod`` buffer (float64 maths, stored float32)."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = np.cumprod(1.0 - betas.numpy(), axis=0)
    return torch.tensor(alphas_cumprod, dtype=torch.float32)


class CompVisDenoiser:
    """k-diffusion's DiscreteEpsDDPMDenoiser over a diffusers UNet (quantize off)."""

    def __init__(self, unet: Any, alphas_cumprod: torch.Tensor) -> None:
        self.unet = unet
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.log_sigmas = self.sigmas.log()

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        log_sigma = sigma.log()
        dists = log_sigma - self.log_sigmas[:, None]
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=len(self.log_sigmas) - 2)
        high_idx = low_idx + 1
        low, high = self.log_sigmas[low_idx], self.log_sigmas[high_idx]
        w = (low - log_sigma) / (low - high)
        w = w.clamp(0, 1)
        t = (1 - w) * low_idx + w * high_idx
        return t.view(sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = t.float()
        low_idx, high_idx, w = t.floor().long(), t.ceil().long(), t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low_idx] + w * self.log_sigmas[high_idx]
        return log_sigma.exp()

    def get_sigmas(self, n: int) -> torch.Tensor:
        t = torch.linspace(len(self.sigmas) - 1, 0, n)
        return torch.cat([self.t_to_sigma(t), torch.zeros(1)])

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> Any:
        c_out = -sigma
        c_in = 1 / (sigma**2 + 1.0**2) ** 0.5
        c_out, c_in = c_out[:, None, None, None], c_in[:, None, None, None]
        eps = self.unet(x * c_in, self.sigma_to_t(sigma), encoder_hidden_states=context).sample
        return x + eps * c_out


class CFGDenoiser:
    """A1111's CFGDenoiser for one prompt pair: batch [cond..., uncond...], combine_denoised."""

    def __init__(self, inner: Any, cond: torch.Tensor, uncond: torch.Tensor, scale: float):
        self.inner, self.cond, self.uncond, self.scale = inner, cond, uncond, scale

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        x_in = torch.cat([x, x])
        sigma_in = torch.cat([sigma, sigma])
        cond_in = torch.cat([self.cond.expand(n, -1, -1), self.uncond.expand(n, -1, -1)])
        x_out = self.inner(x_in, sigma_in, cond_in)
        denoised_uncond = x_out[-n:]
        denoised = torch.clone(denoised_uncond)
        for i in range(n):
            denoised[i] += (x_out[i] - denoised_uncond[i]) * (1.0 * self.scale)
        return denoised


def get_sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Any:
    ramp = torch.linspace(0, 1, n)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    return (x - denoised) / sigma


def get_ancestral_step(sigma_from: Any, sigma_to: Any, eta: float = 1.0) -> tuple[Any, Any]:
    sigma_up = min(
        sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5
    )
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def sample_euler(model: Any, x: torch.Tensor, sigmas: torch.Tensor, randn: Any) -> Any:
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        gamma = 0.0
        sigma_hat = sigmas[i] * (gamma + 1)
        denoised = model(x, sigma_hat * s_in)
        d = to_d(x, sigma_hat, denoised)
        dt = sigmas[i + 1] - sigma_hat
        x = x + d * dt
    return x


def sample_euler_ancestral(model: Any, x: torch.Tensor, sigmas: torch.Tensor, randn: Any) -> Any:
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1])
        d = to_d(x, sigmas[i], denoised)
        dt = sigma_down - sigmas[i]
        x = x + d * dt
        if sigmas[i + 1] > 0:
            x = x + randn() * 1.0 * sigma_up
    return x


def sample_dpmpp_2m(model: Any, x: torch.Tensor, sigmas: torch.Tensor, randn: Any) -> Any:
    s_in = x.new_ones([x.shape[0]])

    def sigma_fn(t: torch.Tensor) -> torch.Tensor:
        return t.neg().exp()

    def t_fn(sigma: torch.Tensor) -> torch.Tensor:
        return sigma.log().neg()

    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        t, t_next = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * denoised
        else:
            h_last = t - t_fn(sigmas[i - 1])
            r = h_last / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


def sample_ddim(
    unet: Any,
    x: torch.Tensor,
    steps: int,
    alphas_cumprod: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, int]:
    """A1111's DDIM (eta 0) with CFG on the noise prediction; returns (latents, UNet calls)."""
    timesteps = torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(
        torch.float64
    )
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)
    sigmas = 0.0 * np.sqrt(
        (1 - alphas_prev.numpy())
        / (1 - alphas.numpy())
        * (1 - alphas.numpy() / alphas_prev.numpy())
    )
    eps_model = CFGDenoiser(
        lambda x_in, t_in, context: unet(x_in, t_in, encoder_hidden_states=context).sample,
        cond,
        uncond,
        scale,
    )
    s_in = x.new_ones(x.shape[0])
    s_x = x.new_ones((x.shape[0], 1, 1, 1))
    calls = 0
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = eps_model(x, timesteps[index].item() * s_in)
        calls += 1
        a_t = alphas[index].item() * s_x
        a_prev = alphas_prev[index].item() * s_x
        sigma_t = sigmas[index].item() * s_x
        sqrt_one_minus_at = sqrt_one_minus_alphas[index].item() * s_x
        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        dir_xt = (1.0 - a_prev - sigma_t**2).sqrt() * e_t
        x = a_prev.sqrt() * pred_x0 + dir_xt
    return x, calls


def cpu_noise(seeds: list[int], shape: tuple[int, int, int]) -> tuple[torch.Tensor, Any]:
    """A1111's CPU RNG: each image's noise from its own seeded generator; ``randn()`` draws
    the next step noise of every image from the same generators."""
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    x = torch.stack([torch.randn(shape, generator=g) for g in generators])

    def randn() -> torch.Tensor:
        return torch.stack([torch.randn(shape, generator=g) for g in generators])

    return x, randn


def txt2img_latents(
    *,
    sampler: str,
    unet: Any,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    seeds: list[int],
    steps: int,
    cfg_scale: float,
    shape: tuple[int, int, int],
) -> torch.Tensor:
    """Latents A1111 samples for one prompt pair: ``sampler`` is "DPM++ 2M Karras",
    "Euler a", "Euler" or "DDIM"."""
    alphas_cumprod = compvis_alphas_cumprod()
    x, randn = cpu_noise(seeds, shape)
    with torch.no_grad():
        if sampler == "DDIM":
            return sample_ddim(unet, x, steps, alphas_cumprod, cond, uncond, cfg_scale)[0]
        inner = CompVisDenoiser(unet, alphas_cumprod)
        model = CFGDenoiser(inner, cond, uncond, cfg_scale)
        if sampler == "DPM++ 2M Karras":
            sigma_min, sigma_max = inner.sigmas[0].item(), inner.sigmas[-1].item()
            sigmas = get_sigmas_karras(steps, sigma_min, sigma_max)
            loop = sample_dpmpp_2m
        else:
            sigmas = inner.get_sigmas(steps)
            loop = {"Euler a": sample_euler_ancestral, "Euler": sample_euler}[sampler]
        x = x * sigmas[0]
        return loop(model, x, sigmas, randn)


def to_pixels(vae: Any, latents: torch.Tensor) -> list[np.ndarray]:
    """A1111's decode and save: clamp((x + 1) / 2), then ``(255 * x).astype(uint8)``."""
    with torch.no_grad():
        decoded = vae.decode(1.0 / vae.config.scaling_factor * latents).sample.float()
    decoded = torch.clamp((decoded + 1.0) / 2.0, min=0.0, max=1.0)
    return [(255.0 * np.moveaxis(image.numpy(), 0, 2)).astype(np.uint8) for image in decoded]
