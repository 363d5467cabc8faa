"""Text-to-image sampling: the one path every generation (sweeps, grids, regenerate) uses.

A1111's loop: each image starts from its own seed's noise; classifier-free guidance runs
the positive and the negative prompt through the UNet as one batch; Euler, Euler a, DPM++ 2M
and DDIM step the latents with A1111's own loops (:mod:`charstudio.engine.kdiffusion_samplers`),
the other samplers with the diffusers scheduler their A1111 name resolves to; the VAE decodes
them and :func:`to_uint8` turns pixels into bytes as A1111 saves them (truncating). Qt-free;
torch is imported when sampling starts.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any

from charstudio.engine.nonfinite import NonFiniteDecode, bad_rows
from charstudio.engine.samplers import SamplerSpec, make_scheduler, resolve_sampler
from charstudio.engine.seeds import DEFAULT_RNG, noise_and_generators, scheduler_step
from charstudio.jobs.protocol import CancelToken

if TYPE_CHECKING:
    from PIL import Image

    from charstudio.engine.conditioning import ConditioningSchedule, PromptEncoder

# on_step(step, total, latents) — for progress and live previews
StepCallback = Callable[[int, int, Any], None]

DECODE_MODES = ("batch", "slice", "tile")


def vae_scale_factor(vae: Any) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def sample_latents(*, on_step: StepCallback | None = None, **settings: Any) -> Any:
    """Denoised latents ``[len(seeds), 4, h, w]`` for one batch of one prompt; ``settings`` are
    :func:`iter_sample_latents`' arguments, ``on_step`` is called after every step."""
    loop = iter_sample_latents(**settings)
    while True:
        try:
            step, total, latents = next(loop)
        except StopIteration as done:
            return done.value
        if on_step is not None:
            on_step(step, total, latents)


def iter_sample_latents(
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
    conditioning: ConditioningSchedule | None = None,
    rng: str = DEFAULT_RNG,
    subseeds: Sequence[int] | None = None,
    subseed_strength: float = 0.0,
) -> Generator[tuple[int, int, Any], None, Any]:
    """The sampling loop as a generator: yields ``(step, total, latents)`` after every step and
    returns the denoised latents, so a job can report progress between steps.

    Each UNet call takes its conditioning from a :class:`ConditioningSchedule` (prompt editing
    and alternation), which ``encoder`` builds from the prompts unless ``conditioning`` (any
    object whose ``at(call)`` gives ``(cond, uncond)``) is passed. As in A1111, the schedule
    counts UNet calls: a second-order sampler's extra calls count too.

    ``rng`` is A1111's random number generator source (``NV``, ``CPU`` or ``GPU``) for the
    initial and the step noise; ``subseeds``/``subseed_strength`` its variation seeds."""
    import torch

    from charstudio.engine.kdiffusion_samplers import supports

    spec = resolve_sampler(sampler, schedule_type)
    if spec.loop is not None and supports(scheduler_config):
        return (
            yield from _iter_a1111_loop(
                spec,
                unet=unet,
                vae=vae,
                encoder=encoder,
                prompt=prompt,
                negative_prompt=negative_prompt,
                seeds=seeds,
                steps=steps,
                cfg_scale=cfg_scale,
                width=width,
                height=height,
                scheduler_config=scheduler_config,
                device=device,
                cancel=cancel,
                conditioning=conditioning,
                rng=rng,
                subseeds=subseeds,
                subseed_strength=subseed_strength,
            )
        )
    scheduler = make_scheduler(spec, scheduler_config, seeds=list(seeds))
    scheduler.set_timesteps(steps, device=device)
    dtype = dtype or unet.dtype
    factor = vae_scale_factor(vae)
    shape = (unet.config.in_channels, height // factor, width // factor)
    latents, generators = noise_and_generators(
        seeds,
        shape,
        device=device,
        dtype=dtype,
        rng=rng,
        subseeds=subseeds,
        subseed_strength=subseed_strength,
    )
    latents = latents * scheduler.init_noise_sigma

    timesteps = scheduler.timesteps
    if conditioning is None:
        # A1111 lays the schedule over its UNet calls, counting a second-order sampler's
        # steps twice (steps * 2, though its last step makes a single call).
        calls = len(timesteps)
        conditioning = encoder.schedule(
            prompt, negative_prompt, 2 * steps if calls > steps else calls
        )
    batch = len(seeds)
    # The UNet's context per distinct (cond, uncond) pair; the pair is kept so its ids stay valid.
    contexts: dict[tuple[int, int], tuple[Any, Any, Any]] = {}

    def context_at(index: int) -> Any:
        cond, uncond = conditioning.at(index)
        key = id(cond), id(uncond)
        if key not in contexts:
            pair = torch.cat([uncond.expand(batch, -1, -1), cond.expand(batch, -1, -1)])
            contexts[key] = (cond, uncond, pair.to(device=device, dtype=dtype))
        return contexts[key][2]

    # Each image's stream feeds the step noise of samplers that draw it.
    step_noise = generators if spec.stochastic else None

    for index, t in enumerate(timesteps):
        if cancel is not None:
            cancel.raise_if_canceled()
        context = context_at(index)
        # Inference mode per step, not around the loop: a generator suspended inside a
        # ``with`` would leave the mode switched on in whatever code runs between steps.
        with torch.inference_mode():
            model_input = scheduler.scale_model_input(torch.cat([latents, latents]), t)
            noise = unet(model_input, t, encoder_hidden_states=context).sample
            noise_uncond, noise_cond = noise.chunk(2)
            guided = noise_uncond + cfg_scale * (noise_cond - noise_uncond)
            latents = scheduler_step(scheduler, step_noise, guided, t, latents)
        yield index + 1, len(timesteps), latents
    return latents


def _iter_a1111_loop(
    spec: SamplerSpec,
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
    scheduler_config: dict[str, Any] | None,
    device: str,
    cancel: CancelToken | None,
    conditioning: ConditioningSchedule | None,
    rng: str,
    subseeds: Sequence[int] | None,
    subseed_strength: float,
) -> Generator[tuple[int, int, Any], None, Any]:
    """:func:`iter_sample_latents` for samplers run by A1111's own loops (``spec.loop``).

    The latents stay float32 (A1111's); the UNet gets its own dtype. The UNet batch is the
    positive prompts then the negative ones, as A1111's CFG denoiser lays it out."""
    import torch

    from charstudio.engine import kdiffusion_samplers as ks

    assert spec.loop is not None
    factor = vae_scale_factor(vae)
    shape = (unet.config.in_channels, height // factor, width // factor)
    latents, streams = noise_and_generators(
        seeds,
        shape,
        device=device,
        dtype=torch.float32,
        rng=rng,
        subseeds=subseeds,
        subseed_strength=subseed_strength,
    )
    total = ks.sampler_calls(spec.loop, steps)
    if conditioning is None:
        # A1111 lays the prompt schedule over the sampling steps (DDIM included, though it
        # makes fewer UNet calls).
        conditioning = encoder.schedule(prompt, negative_prompt, steps)
    batch = len(seeds)
    contexts: dict[tuple[int, int], tuple[Any, Any, Any]] = {}

    def context_at(call: int) -> Any:
        if cancel is not None:
            cancel.raise_if_canceled()
        cond, uncond = conditioning.at(call)
        key = id(cond), id(uncond)
        if key not in contexts:
            pair = torch.cat([cond.expand(batch, -1, -1), uncond.expand(batch, -1, -1)])
            contexts[key] = (cond, uncond, pair.to(device=device, dtype=unet.dtype))
        return contexts[key][2]

    loop = ks.run_sampler(
        spec.loop,
        unet=unet,
        latents=latents,
        steps=steps,
        schedule_type=spec.schedule_type,
        cfg_scale=cfg_scale,
        context_at=context_at,
        model=ks.model_schedule(scheduler_config),
        noise=ks.step_noise(streams, shape, device) if spec.stochastic else None,
    )
    call = 0
    while True:
        try:
            latents = next(loop)
        except StopIteration as done:
            return done.value
        call += 1
        yield call, total, latents


def to_uint8(pixels: Any) -> Any:
    """Float pixels in [0, 1] to uint8 as A1111 saves them: ``255 * x`` truncated, not
    rounded (values are clamped to [0, 1] first)."""
    import torch

    return (pixels.float().clamp(0, 1) * 255).to(torch.uint8)


def decode_latents(vae: Any, latents: Any, *, mode: str = "batch") -> list[Image.Image]:
    """RGB images from latents.

    ``mode`` "batch" decodes the whole batch in one VAE call (fastest); "slice" one image per
    call (flat memory); "tile" one image per call in overlapping tiles (least memory, for
    large sizes). The generator falls back along that list when the GPU runs out of memory.
    NaN or infinite pixels raise :class:`NonFiniteDecode` naming the images.
    """
    import torch
    from PIL import Image

    if mode not in DECODE_MODES:
        raise ValueError(f"decode mode must be one of {', '.join(DECODE_MODES)}, not {mode!r}")
    tiling = mode == "tile" and hasattr(vae, "enable_tiling")
    if tiling:
        vae.enable_tiling()
    try:
        chunks = [latents] if mode == "batch" else list(latents.split(1))
        images = []
        bad: list[int] = []
        with torch.inference_mode():
            for chunk in chunks:
                # A1111 (the CompVis model) multiplies by the inverse rather than dividing.
                scaled = chunk.to(vae.dtype) * (1.0 / vae.config.scaling_factor)
                pixels = vae.decode(scaled).sample
                bad.extend(len(images) + i for i in bad_rows(pixels))
                pixels = to_uint8((pixels.float() + 1.0) / 2.0)
                for array in pixels.permute(0, 2, 3, 1).cpu().numpy():
                    images.append(Image.fromarray(array, "RGB"))
        if bad:  # never a black picture: the caller retries in fp32 or fails those images
            raise NonFiniteDecode(bad, vae.dtype, images)
        return images
    finally:
        if tiling:
            vae.disable_tiling()


# SD 1.x latent channels -> approximate RGB: a linear map good enough for a live preview
# (the same idea as A1111's "Approx cheap" preview), costing nothing next to a VAE decode.
_PREVIEW_RGB = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)


def preview_image(latents: Any, index: int = 0) -> Image.Image:
    """A quick low-resolution RGB preview of one image of a latent batch (1/8 of the size)."""
    import torch
    from PIL import Image

    with torch.inference_mode():
        one = latents[index].float()
        if one.shape[0] != len(_PREVIEW_RGB):
            one = one[: len(_PREVIEW_RGB)]
        weights = torch.tensor(_PREVIEW_RGB, device=one.device)[: one.shape[0]]
        rgb = torch.einsum("chw,cr->hwr", one, weights)
        rgb = to_uint8((rgb + 1) / 2).cpu().numpy()
    return Image.fromarray(rgb, "RGB")
