"""The SD 1.x model while a trainer holds it: frozen, set up for fast training, given back as
it was; the noise schedule, mixed precision, a step through the gradient scaler, the random
streams of a resume state and the likely cause of a NaN. Shared by the textual-inversion and
LoRA trainers. torch is imported inside the functions (the core loads it lazily)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import random

    import torch

__all__ = [
    "SD15_NOISE_SCHEDULE",
    "autocast",
    "autocast_dtype",
    "freeze",
    "noise_scheduler",
    "nonfinite_cause",
    "optimizer_step",
    "restore_random_streams",
    "slow_down",
    "speed_up",
    "thaw",
]

SD15_NOISE_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}


def freeze(*models: Any) -> list[tuple[Any, bool]]:
    """Stop gradients in ``models``; returns each parameter's flag before, for :func:`thaw`."""
    flags = [(p, p.requires_grad) for model in models for p in model.parameters()]
    for model in models:
        model.requires_grad_(False)
    return flags


def thaw(flags: list[tuple[Any, bool]]) -> None:
    """Give the parameters back the gradient flags :func:`freeze` found."""
    for param, flag in flags:
        param.requires_grad_(flag)


def speed_up(unet: Any, vae: Any, device: torch.device, *, checkpointing: bool) -> bool:
    """Set the networks up for fast training on ``device`` (PyTorch's attention, NHWC and cuDNN's
    autotuner on CUDA; gradient checkpointing in the UNet when asked); returns cuDNN's autotuner
    setting before, for :func:`slow_down`."""
    import torch

    if hasattr(unet, "set_attn_processor"):
        from diffusers.models.attention_processor import AttnProcessor2_0

        for model in (unet, vae):
            model.set_attn_processor(AttnProcessor2_0())
    cudnn_benchmark = torch.backends.cudnn.benchmark
    if device.type == "cuda":
        # Tensor-core convolutions prefer NHWC; every step has the same shapes, so cuDNN's
        # autotuner pays for itself after the first step.
        unet.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    if checkpointing:
        unet.enable_gradient_checkpointing()
    return cudnn_benchmark


def slow_down(
    unet: Any, text_encoder: Any | None, cudnn_benchmark: bool, *, checkpointing: bool
) -> None:
    """Undo :func:`speed_up` (the UNet keeps its memory layout); ``text_encoder``, when given,
    has its gradient checkpointing turned off too."""
    import torch

    torch.backends.cudnn.benchmark = cudnn_benchmark
    if checkpointing:
        unet.disable_gradient_checkpointing()
        if text_encoder is not None and hasattr(text_encoder, "gradient_checkpointing_disable"):
            text_encoder.gradient_checkpointing_disable()


def noise_scheduler(scheduler_config: dict[str, Any] | None) -> Any:
    """SD 1.x's DDPM training schedule (epsilon prediction), betas from the model's config."""
    from diffusers import DDPMScheduler

    config = {**SD15_NOISE_SCHEDULE, **(scheduler_config or {})}
    return DDPMScheduler(
        num_train_timesteps=int(config["num_train_timesteps"]),
        beta_start=float(config["beta_start"]),
        beta_end=float(config["beta_end"]),
        beta_schedule=str(config["beta_schedule"]),
        prediction_type="epsilon",
    )


def autocast_dtype(unet: Any, device: torch.device) -> torch.dtype | None:
    """The half precision to autocast in: the UNet's own, on CUDA only."""
    import torch

    dtype = unet.dtype
    if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16):
        return dtype
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def optimizer_step(optimizer: Any, scaler: Any) -> None:
    """Step the optimizer (through the fp16 gradient scaler when there is one) and clear the
    gradients."""
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def restore_random_streams(
    state: dict[str, Any], generator: torch.Generator, rng: random.Random
) -> None:
    """Set the torch generator and Python RNG to a resume state's."""
    generator.set_state(state["torch_generator"])
    version, internal, gauss = state["python_rng"]
    rng.setstate((version, tuple(internal), gauss))


def nonfinite_cause(
    unet: Any, text_encoder: Any, vae: Any, dtype: torch.dtype | None, rate: float
) -> str:
    """Why a step is likely to have gone NaN: broken weights, half precision or the rate."""
    import torch

    broken = [
        label
        for label, model in (("UNet", unet), ("text encoder", text_encoder), ("VAE", vae))
        # only the frozen weights: trained ones are checked after every step
        if any(not bool(torch.isfinite(p).all()) for p in model.parameters() if not p.requires_grad)
    ]
    if broken:
        return (
            f"The model has NaN weights (in its {' and '.join(broken)}): the checkpoint is "
            "broken; train on another one."
        )
    lower = f"{rate / 10:.2g}"
    if dtype == torch.float16:
        return (
            "Likely causes: half precision (fp16) overflowed — train with precision bf16 or "
            f"fp32 — or the learning rate ({rate:g}) is too high; try {lower}."
        )
    return (
        f"Likely cause: the learning rate ({rate:g}) is too high; try {lower}. Other causes: "
        "half precision (fp16), or a model with NaN weights."
    )
