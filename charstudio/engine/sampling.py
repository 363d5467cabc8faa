"""Text-to-image sampling: the one path every generation (sweeps, grids, regenerate) uses.

A1111's loop: each image starts from its own seed's noise; classifier-free guidance runs
the negative and the positive prompt through the UNet as one batch; the scheduler chosen by
A1111 sampler name steps the latents; the VAE decodes them. Qt-free; torch is imported when
sampling starts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from charstudio.engine.samplers import make_scheduler, resolve_sampler
from charstudio.engine.seeds import noise_and_generators
from charstudio.jobs.protocol import CancelToken

if TYPE_CHECKING:
    from PIL import Image

    from charstudio.engine.conditioning import PromptEncoder

# on_step(step, total, latents) — for progress and live previews
StepCallback = Callable[[int, int, Any], None]


def vae_scale_factor(vae: Any) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def sample_latents(
    *,
    unet: Any,
    vae: Any,
    encoder: PromptEncoder,
    prompt: str,
    negative_prompt: str,
    seeds: Sequence[int],
    steps: int,
    cfg_scale: float,
    width: int,
    height: int,
    sampler: str,
    schedule_type: str | None,
    scheduler_config: dict[str, Any] | None = None,
    device: str = "cpu",
    dtype: Any = None,
    cancel: CancelToken | None = None,
    on_step: StepCallback | None = None,
) -> Any:
    """Denoised latents ``[len(seeds), 4, h, w]`` for one batch of one prompt."""
    import torch

    spec = resolve_sampler(sampler, schedule_type)
    scheduler = make_scheduler(spec, scheduler_config, seeds=list(seeds))
    scheduler.set_timesteps(steps, device=device)
    dtype = dtype or unet.dtype
    factor = vae_scale_factor(vae)
    shape = (unet.config.in_channels, height // factor, width // factor)
    latents, generators = noise_and_generators(seeds, shape, device=device, dtype=dtype)
    latents = latents * scheduler.init_noise_sigma

    cond, uncond = encoder.encode_pair(prompt, negative_prompt)
    batch = len(seeds)
    context = torch.cat([uncond.expand(batch, -1, -1), cond.expand(batch, -1, -1)])
    context = context.to(device=device, dtype=dtype)
    step_kwargs: dict[str, Any] = {}
    if spec.stochastic:
        step_kwargs["generator"] = generators if batch > 1 else generators[0]

    timesteps = scheduler.timesteps
    with torch.inference_mode():
        for index, t in enumerate(timesteps):
            if cancel is not None:
                cancel.raise_if_canceled()
            model_input = scheduler.scale_model_input(torch.cat([latents, latents]), t)
            noise = unet(model_input, t, encoder_hidden_states=context).sample
            noise_uncond, noise_cond = noise.chunk(2)
            guided = noise_uncond + cfg_scale * (noise_cond - noise_uncond)
            latents = scheduler.step(guided, t, latents, **step_kwargs).prev_sample
            if on_step is not None:
                on_step(index + 1, len(timesteps), latents)
    return latents


def decode_latents(vae: Any, latents: Any) -> list[Image.Image]:
    """RGB images from latents, one VAE call per image to keep memory flat."""
    import torch
    from PIL import Image

    images = []
    with torch.inference_mode():
        for one in latents.split(1):
            scaled = one.to(vae.dtype) / vae.config.scaling_factor
            pixels = vae.decode(scaled).sample
            pixels = ((pixels.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
            array = pixels[0].permute(1, 2, 0).cpu().numpy()
            images.append(Image.fromarray(array, "RGB"))
    return images
