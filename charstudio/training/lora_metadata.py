"""kohya's metadata for a LoRA file, and the file itself.

A kohya LoRA's safetensors header carries ``ss_*`` text fields describing how it was trained
(A1111's "metadata" view and civitai read them; A1111 takes its alias from ``ss_output_name``
and the SD version from ``ss_base_model_version`` / ``ss_v2``), two hashes and Stability's
``modelspec.*`` fields:

* ``sshs_model_hash``: the sha256 of the file's bytes after the safetensors header (kohya's
  "addnet" hash, which A1111 shows 12 digits of in ``Lora hashes``); it depends on the tensors
  only, so it stays right whatever text is later added to the header;
* ``sshs_legacy_hash``: the first 8 hex digits of the sha256 of the 64 KiB at offset 1 MiB of
  the file written with only its ``ss_*`` fields (kohya's legacy hash, computed the same way).

Values are text: numbers as Python writes them, lists and dicts as JSON, absent values as
``"None"`` (kohya's spelling). :func:`lora_file_bytes` returns the finished file (fp16 tensors,
hashes, modelspec) and :func:`save_lora_file` writes it atomically.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charstudio.engine.model_hash import addnet_hash

if TYPE_CHECKING:
    import torch

    from charstudio.training.lora_settings import TrainLoraSettings

__all__ = [
    "LoraRunInfo",
    "kohya_metadata",
    "lora_file_bytes",
    "modelspec_metadata",
    "save_lora_file",
    "sshs_hashes",
]

_LEGACY_OFFSET = 0x100000
_LEGACY_LENGTH = 0x10000
_OPTIMIZER_CLASSES = {
    "AdamW": "torch.optim.adamw.AdamW",
    "AdamW8bit": "bitsandbytes.optim.adamw.AdamW8bit",
    "Prodigy": "prodigyopt.prodigy.Prodigy",
}


@dataclass
class LoraRunInfo:
    """What the metadata needs besides the settings: the run's dataset, model and plan."""

    output_name: str
    session_id: int
    started_at: float  # unix time
    model_name: str | None
    model_hash: str | None  # A1111's short hash of the base checkpoint
    model_sha256: str | None
    n_images: int
    repeats: int
    batches_per_epoch: int
    steps_per_epoch: int
    epochs: int
    total_steps: int
    dataset_dir: str  # kohya's "<repeats>_<token> <class>" folder name
    tag_frequency: dict[str, int] = field(default_factory=dict)
    bucket_info: dict[str, Any] = field(default_factory=dict)
    mixed_precision: str = "no"
    warmup_steps: int = 0


def _text(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def kohya_metadata(
    settings: TrainLoraSettings,
    info: LoraRunInfo,
    *,
    epoch: int,
    step: int,
    finished_at: float | None = None,
) -> dict[str, str]:
    """The ``ss_*`` fields of the file saved after ``epoch`` epochs (``step`` optimizer steps)."""
    resolution = settings.resolution
    network_args: dict[str, str] = {}
    if settings.conv_dim:
        network_args = {"conv_dim": str(settings.conv_dim), "conv_alpha": str(settings.conv_alpha)}
    optimizer = f"{_OPTIMIZER_CLASSES[settings.optimizer]}(weight_decay={settings.weight_decay:g})"
    unet_lr = settings.unet_lr
    te_lr = settings.te_lr if settings.train_text_encoder else None
    fields: dict[str, Any] = {
        "ss_session_id": info.session_id,
        "ss_training_started_at": info.started_at,
        "ss_training_finished_at": finished_at if finished_at is not None else time.time(),
        "ss_output_name": info.output_name,
        "ss_learning_rate": unet_lr,
        "ss_unet_lr": unet_lr,
        "ss_text_encoder_lr": te_lr,
        "ss_network_train_unet_only": not settings.train_text_encoder,
        "ss_num_train_images": info.n_images * info.repeats,
        "ss_num_reg_images": 0,
        "ss_num_batches_per_epoch": info.batches_per_epoch,
        "ss_num_epochs": info.epochs,
        "ss_epoch": epoch,
        "ss_steps": step,
        "ss_max_train_steps": info.total_steps,
        "ss_batch_size_per_device": settings.batch_size,
        "ss_total_batch_size": settings.batch_size * settings.gradient_accumulation,
        "ss_gradient_accumulation_steps": settings.gradient_accumulation,
        "ss_gradient_checkpointing": settings.gradient_checkpointing,
        "ss_lr_scheduler": settings.scheduler,
        "ss_lr_warmup_steps": info.warmup_steps,
        "ss_optimizer": optimizer,
        "ss_max_grad_norm": settings.max_grad_norm,
        "ss_network_module": "networks.lora",
        "ss_network_dim": settings.dim,
        "ss_network_alpha": settings.alpha,
        "ss_network_dropout": None,
        "ss_network_args": network_args or None,
        "ss_mixed_precision": info.mixed_precision,
        "ss_full_fp16": False,
        "ss_v2": False,
        "ss_base_model_version": "sd_v1",
        "ss_sd_model_name": info.model_name,
        "ss_sd_model_hash": info.model_hash,
        "ss_new_sd_model_hash": info.model_sha256,
        "ss_clip_skip": settings.clip_skip,
        "ss_max_token_length": None,
        "ss_cache_latents": settings.cache_latents,
        "ss_seed": settings.seed,
        "ss_noise_offset": settings.noise_offset or None,
        "ss_min_snr_gamma": settings.min_snr_gamma or None,
        "ss_prior_loss_weight": 1.0,
        "ss_resolution": f"({resolution}, {resolution})",
        "ss_enable_bucket": settings.buckets,
        "ss_min_bucket_reso": resolution // 2 if settings.buckets else None,
        "ss_max_bucket_reso": resolution * 2 if settings.buckets else None,
        "ss_bucket_no_upscale": False,
        "ss_bucket_info": info.bucket_info or None,
        "ss_keep_tokens": settings.keep_tokens,
        "ss_shuffle_caption": settings.shuffle_tags,
        "ss_caption_dropout_rate": settings.caption_dropout,
        "ss_caption_dropout_every_n_epochs": 0,
        "ss_caption_tag_dropout_rate": settings.tag_dropout,
        "ss_color_aug": False,
        "ss_flip_aug": False,
        "ss_random_crop": False,
        "ss_face_crop_aug_range": None,
        "ss_dataset_dirs": {
            info.dataset_dir: {"n_repeats": info.repeats, "img_count": info.n_images}
        },
        "ss_tag_frequency": {info.dataset_dir: info.tag_frequency},
        "ss_training_comment": f"activation tag: {settings.token}" if settings.token else None,
    }
    return {key: _text(value) for key, value in fields.items()}


def modelspec_metadata(
    title: str, *, resolution: int, trigger: str | None, created_at: float
) -> dict[str, str]:
    """Stability's model spec fields kohya writes for an SD 1.x LoRA."""
    out = {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": "stable-diffusion-v1/lora",
        "modelspec.implementation": "diffusers",
        "modelspec.title": title,
        "modelspec.resolution": f"{resolution}x{resolution}",
        "modelspec.prediction_type": "epsilon",
        "modelspec.date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created_at)),
    }
    if trigger:
        out["modelspec.trigger_phrase"] = trigger
    return out


def sshs_hashes(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> tuple[str, str]:
    """``(sshs_model_hash, sshs_legacy_hash)`` of the file holding ``tensors`` (see the module
    docstring); only the ``ss_*`` fields of ``metadata`` count, as in kohya."""
    from safetensors.torch import save

    data = save(dict(tensors), metadata={k: v for k, v in metadata.items() if k.startswith("ss_")})
    legacy = hashlib.sha256(data[_LEGACY_OFFSET : _LEGACY_OFFSET + _LEGACY_LENGTH]).hexdigest()
    return addnet_hash(data), legacy[:8]


def lora_file_bytes(
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str],
    *,
    resolution: int = 512,
    trigger: str | None = None,
) -> bytes:
    """The kohya file: tensors in float16 (``alpha`` too, as kohya saves), ``metadata`` plus the
    two ``sshs`` hashes and ``modelspec.*`` (title from ``ss_output_name``)."""
    import torch
    from safetensors.torch import save

    half = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in tensors.items()}
    full = dict(metadata)
    model_hash, legacy_hash = sshs_hashes(half, full)
    full["sshs_model_hash"] = model_hash
    full["sshs_legacy_hash"] = legacy_hash
    title = full.get("ss_output_name") or "lora"
    created = float(full.get("ss_training_finished_at") or time.time())
    full.update(
        modelspec_metadata(title, resolution=resolution, trigger=trigger, created_at=created)
    )
    return save(half, metadata=full)


def save_lora_file(
    path: Path,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str],
    *,
    resolution: int = 512,
    trigger: str | None = None,
) -> str:
    """Write the kohya file atomically (flushed, then renamed into place); returns the sha256 of
    the whole file."""
    from charstudio.atomic_files import write_bytes_atomic

    data = lora_file_bytes(tensors, metadata, resolution=resolution, trigger=trigger)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data)
    return hashlib.sha256(data).hexdigest()
