"""Preview images during training, made the way generation makes images.

A preview goes through the engine's own sampling path (:class:`PromptEncoder`,
:func:`iter_sample_latents`, :func:`decode_latents`) on the model being trained, with the
embedding's current vectors in memory under the checkpoint's name: ``[name]`` in the preview
prompt becomes ``NAME-<step>``, so the infotext written into the PNG regenerates the same
image with the saved ``NAME-<step>`` file in A1111 or charstudio (the name spelt without the
step works too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from charstudio import __version__
from charstudio.engine.sweeps import GenerationSettings
from charstudio.jobs.protocol import JobError

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from charstudio.training.settings import TrainTISettings

__all__ = ["Preview", "PreviewFailed", "render_preview", "sample_finite"]


class PreviewFailed(JobError):
    """The preview came out NaN (latents or pixels); no image is made. The message says why."""


@dataclass
class Preview:
    image: Image.Image
    infotext: str
    prompt: str


def _decode_finite(vae: Any, latents: Any) -> Image.Image:
    """The preview's image; a half-precision VAE that gives NaN decodes again in fp32 (and goes
    back to its precision: training keeps its own); NaN even then raises PreviewFailed."""
    import torch

    from charstudio.engine.nonfinite import NonFiniteDecode, is_half
    from charstudio.engine.sampling import decode_latents

    try:
        return decode_latents(vae, latents)[0]
    except NonFiniteDecode as error:
        if not is_half(error.dtype):
            raise PreviewFailed(str(error)) from None
    original = vae.dtype
    vae.to(dtype=torch.float32)
    try:
        return decode_latents(vae, latents)[0]
    except NonFiniteDecode as error:
        raise PreviewFailed(str(error)) from None
    finally:
        vae.to(dtype=original)


def sample_finite(
    components: Any, encoder: Any, *, device: Any, sampler_label: str, **sampling: Any
) -> Image.Image:
    """One image sampled on the model as it is now through the engine's sampling path
    (``sampling``: :func:`iter_sample_latents`' prompt, seeds, steps, size and sampler
    arguments); NaN latents or pixels raise :class:`PreviewFailed` naming ``sampler_label``."""
    import torch

    from charstudio.engine.nonfinite import bad_rows, latents_message
    from charstudio.engine.sampling import iter_sample_latents

    with torch.no_grad():
        loop = iter_sample_latents(
            unet=components.unet,
            vae=components.vae,
            encoder=encoder,
            scheduler_config=components.scheduler_config,
            device=str(device),
            **sampling,
        )
        while True:
            try:
                step, total, current = next(loop)
            except StopIteration as done:
                latents = done.value
                break
            if bad_rows(current):
                loop.close()
                raise PreviewFailed(latents_message(step, total, sampler_label))
        return _decode_finite(components.vae, latents)


def preview_settings(
    settings: TrainTISettings, prompt: str, *, model_name: str | None
) -> GenerationSettings:
    return GenerationSettings(
        prompt=prompt,
        negative_prompt=settings.preview_negative_prompt,
        seed=settings.preview_seed,
        steps=settings.preview_steps,
        sampler=settings.preview_sampler,
        schedule_type=settings.preview_schedule_type,
        cfg_scale=settings.preview_cfg_scale,
        width=settings.width,
        height=settings.height,
        model=model_name,
        clip_skip=settings.clip_skip,
    )


def render_preview(
    components: Any,
    settings: TrainTISettings,
    *,
    name: str,
    step: int,
    vectors: torch.Tensor,
    first_caption: str,
    device: Any,
    ti_hash: str | None = None,
) -> Preview:
    """One preview image of the embedding after ``step`` steps, with its A1111 infotext."""
    from charstudio.engine.conditioning import PromptEncoder
    from charstudio.metadata.infotext import format_infotext

    step_name = f"{name}-{step}"
    prompt = settings.preview_text(step_name, first_caption)
    seed = settings.preview_seed
    generation = preview_settings(settings, prompt, model_name=components.name)
    detached = vectors.detach()
    encoder = PromptEncoder(
        components.text_encoder,
        embeddings={name: detached, step_name: detached},
        clip_skip=settings.clip_skip,
        device=device,
        dtype=components.unet.dtype,
    )
    image = sample_finite(
        components,
        encoder,
        device=device,
        sampler_label=generation.sampler,
        prompt=prompt,
        negative_prompt=settings.preview_negative_prompt,
        seeds=[seed],
        steps=settings.preview_steps,
        cfg_scale=settings.preview_cfg_scale,
        width=settings.width,
        height=settings.height,
        sampler=settings.preview_sampler,
        schedule_type=settings.preview_schedule_type,
    )
    extras: dict[str, object] = {}
    if ti_hash:
        extras["TI hashes"] = f"{step_name}: {ti_hash}"
    extras["Version"] = f"charstudio {__version__}"
    params = generation.to_params(seed, model_hash=components.model_hash, extras=extras)
    return Preview(image, format_infotext(params), prompt)
