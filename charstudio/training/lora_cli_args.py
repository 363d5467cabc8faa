"""``charstudio train-lora``'s options and their translation into the LoRA job's params.

    charstudio train-lora PROJECT --model MODEL [--name NAME] [--dim N] [--alpha N]
        [--unet-lr LR] [--te-lr LR] [--optimizer NAME] [--epochs N] [--repeats N]
        [--batch-size B] [--resolution PX] [--save-every-epochs N] [--sample-every-epochs N]
        [--images picks|all|PATH...] [--resume RUN] [--json] (and kohya's other options:
        scheduler, warmup, min-SNR gamma, noise offset, caption options, LoCon, precision …)

Options left out keep :class:`TrainLoraSettings`' defaults. ``--resume`` takes a run id or its
folder name and continues that run with its own settings; only ``--epochs`` may change then.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from charstudio.training.cli_common import (
    add_device_option,
    add_images_option,
    new_run_params,
    option_changes,
    resume_params,
    sampler_changes,
)
from charstudio.training.lora_settings import LORA_OPTIMIZERS, LORA_PRECISIONS, LORA_SCHEDULERS

if TYPE_CHECKING:
    from charstudio.catalog.project import Project

__all__ = ["train_lora_arguments", "train_lora_params_from_args"]

# argparse dest -> TrainLoraSettings field, for the options that map one to one.
_SETTING_OPTIONS = {
    "name": "name",
    "token": "token",
    "dim": "dim",
    "alpha": "alpha",
    "conv_dim": "conv_dim",
    "conv_alpha": "conv_alpha",
    "unet_lr": "unet_lr",
    "te_lr": "te_lr",
    "optimizer": "optimizer",
    "weight_decay": "weight_decay",
    "scheduler": "scheduler",
    "warmup_steps": "warmup_steps",
    "min_snr_gamma": "min_snr_gamma",
    "noise_offset": "noise_offset",
    "max_grad_norm": "max_grad_norm",
    "epochs": "epochs",
    "repeats": "repeats",
    "batch_size": "batch_size",
    "grad_accum": "gradient_accumulation",
    "resolution": "resolution",
    "bucket_step": "bucket_step",
    "keep_tokens": "keep_tokens",
    "caption_dropout": "caption_dropout",
    "tag_dropout": "tag_dropout",
    "precision": "precision",
    "clip_skip": "clip_skip",
    "seed": "seed",
    "save_every_epochs": "save_every_epochs",
    "sample_every_epochs": "sample_every_epochs",
    "sample_steps": "sample_steps",
    "sample_cfg": "sample_cfg_scale",
    "sample_negative": "sample_negative_prompt",
    "max_samples": "max_samples",
}
# Flags that turn a default on (True) or off (False).
_FLAGS = {
    "gradient_checkpointing": ("gradient_checkpointing", True),
    "no_te": ("train_text_encoder", False),
    "no_buckets": ("buckets", False),
    "no_shuffle": ("shuffle_tags", False),
    "no_cache_latents": ("cache_latents", False),
}


def train_lora_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``train-lora``'s arguments (``--json`` is left to the common verb options)."""
    add = parser.add_argument
    add("project", help="the project folder")
    add("--model", help="checkpoint file, diffusers folder or model name (not with --resume)")
    add("--vae", help="separate VAE file")
    add("--name", help="output name, NAME-000001.safetensors (default: the project's token)")
    add("--token", help="activation tag, first in every caption (default: the project's token)")
    add("--dim", type=int, metavar="N", help="network dim / rank (16)")
    add("--alpha", type=float, metavar="N", help="network alpha (8)")
    add("--conv-dim", type=int, metavar="N", help="LoCon: rank for the 3×3 convolutions (0: off)")
    add("--conv-alpha", type=float, metavar="N", help="LoCon alpha (1)")
    add("--unet-lr", type=float, metavar="LR", help="UNet learning rate (1e-4)")
    add("--te-lr", type=float, metavar="LR", help="text encoder learning rate (5e-5)")
    add("--no-te", action="store_true", default=None, help="train the UNet only")
    add("--optimizer", choices=LORA_OPTIMIZERS, help="AdamW (default), AdamW8bit, Prodigy")
    add("--weight-decay", type=float, metavar="W", help="optimizer weight decay (0.01)")
    add("--scheduler", choices=LORA_SCHEDULERS, help="learning-rate schedule (cosine)")
    add("--warmup-steps", type=int, metavar="N", help="warmup steps for *_with_warmup (5%%)")
    add("--min-snr-gamma", type=float, metavar="G", help="min-SNR weighting gamma (5; 0: off)")
    add("--noise-offset", type=float, metavar="X", help="noise offset (0)")
    add("--max-grad-norm", type=float, metavar="X", help="gradient norm clipping (1; 0: off)")
    add("--epochs", type=int, metavar="N", help="epochs (10)")
    add("--repeats", type=int, metavar="N", help="repeats per image and epoch (about 160/images)")
    add("--batch-size", type=int, metavar="B", help="batch size (1)")
    add("--grad-accum", type=int, metavar="G", help="gradient accumulation steps (1)")
    add("--resolution", type=int, metavar="PX", help="training resolution (512)")
    add("--no-buckets", action="store_true", default=None, help="crop every image square")
    add("--bucket-step", type=int, metavar="PX", help="aspect bucket size step (64)")
    add("--keep-tokens", type=int, metavar="N", help="leading tags never shuffled (1)")
    add("--no-shuffle", action="store_true", default=None, help="do not shuffle caption tags")
    add("--caption-dropout", type=float, metavar="P", help="empty caption with probability P")
    add("--tag-dropout", type=float, metavar="P", help="drop each tag with probability P")
    add("--no-cache-latents", action="store_true", default=None, help="new latent draw per step")
    add("--gradient-checkpointing", action="store_true", default=None, help="less memory, slower")
    add("--precision", choices=LORA_PRECISIONS, help="auto: fp16 on CUDA, fp32 on the CPU")
    add("--clip-skip", type=int)
    add("--seed", type=int, help="training seed (-1: random)")
    add("--save-every-epochs", type=int, metavar="N", help="save every N epochs (1 up to 20)")
    add("--sample-every-epochs", type=int, metavar="N", help="samples every N epochs (1; 0: off)")
    add("--sample-steps", type=int, metavar="N", help="sampling steps of the samples (20)")
    add("--sample-sampler", help='A1111 sampler name for samples, e.g. "DPM++ 2M Karras"')
    add("--sample-cfg", type=float, help="CFG scale of the samples (7)")
    add("--sample-negative", help="negative prompt of the samples (default: each image's own)")
    add(
        "--sample-prompt",
        action="append",
        metavar="PROMPT",
        help="sample this prompt (repeatable; default: the training images' own prompts)",
    )
    add("--sample-seed", type=int, action="append", metavar="SEED", help="seed for the samples")
    add("--max-samples", type=int, metavar="N", help="samples per epoch from the images (4)")
    add_images_option(add, resume_help="continue a LoRA run (its id or folder name)")
    add_device_option(add)


def _settings_changes(args: argparse.Namespace) -> dict[str, Any]:
    changes = option_changes(args, _SETTING_OPTIONS)
    for dest, (setting, value) in _FLAGS.items():
        if getattr(args, dest, None):
            changes[setting] = value
    changes.update(sampler_changes(args, "sample_sampler", "sample_sampler"))
    if getattr(args, "sample_prompt", None):
        changes["sample_prompts"] = tuple(args.sample_prompt)
    if getattr(args, "sample_seed", None):
        changes["sample_seeds"] = tuple(args.sample_seed)
    return changes


def train_lora_params_from_args(project: Project, args: argparse.Namespace) -> dict[str, Any]:
    """The job params for parsed ``train-lora`` arguments; ValueError with a message when they
    do not fit together."""
    from charstudio.training.lora_settings import TrainLoraSettings

    changes = _settings_changes(args)
    if args.resume:

        def check(run: Any) -> None:
            if run.kind != "lora":
                raise ValueError(f"run {run.id} is a {run.kind} run; resume it with train-ti")

        return resume_params(
            project, args, changes, setting="epochs", option="--epochs", param="epochs", check=check
        )
    optimizer = changes.pop("optimizer", None)
    settings = TrainLoraSettings()
    if optimizer:  # its usual rates first, so --unet-lr and the like still override them
        settings = settings.with_optimizer(optimizer)
    return new_run_params(settings.replace(**changes).to_json(), args)
