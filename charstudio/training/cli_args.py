"""``charstudio train-ti``'s options and their translation into the training job's params.

    charstudio train-ti PROJECT --model MODEL [--name NAME] [--init TEXT] [--vectors N]
        [--lr SCHEDULE] [--batch-size B] [--grad-accum G] [--steps N] [--save-every N]
        [--preview-every N] [--template FILE] [--images picks|all|PATH...] [--resume RUN]
        [--json] (and the less common A1111 options: size, seed, latent sampling, clipping,
        tag shuffling/dropout, preview prompt, precision, gradient checkpointing, device)

Options left out keep :class:`TrainTISettings`' defaults (the workflow's). ``--resume`` takes a
run id or its folder name and continues that run with its own settings; only ``--steps`` may
change then (to train on further).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charstudio.training.cli_common import (
    add_device_option,
    add_images_option,
    new_run_params,
    option_changes,
    resume_params,
    sampler_changes,
)
from charstudio.training.settings import (
    CLIP_GRAD_MODES,
    LATENT_SAMPLING_METHODS,
    TRAIN_PRECISIONS,
)
from charstudio.training.templates import read_template_file

if TYPE_CHECKING:
    from charstudio.catalog.project import Project

__all__ = ["train_ti_arguments", "train_ti_params_from_args"]

# argparse dest -> TrainTISettings field, for the options that map one to one.
_SETTING_OPTIONS = {
    "name": "name",
    "init": "init_text",
    "vectors": "vectors",
    "lr": "learning_rate",
    "batch_size": "batch_size",
    "grad_accum": "gradient_accumulation",
    "steps": "max_steps",
    "save_every": "save_every",
    "preview_every": "preview_every",
    "width": "width",
    "height": "height",
    "seed": "seed",
    "latent_sampling": "latent_sampling",
    "tag_dropout": "tag_dropout",
    "clip_grad": "clip_grad_mode",
    "clip_grad_value": "clip_grad_value",
    "clip_skip": "clip_skip",
    "precision": "precision",
    "preview_prompt": "preview_prompt",
    "preview_negative": "preview_negative_prompt",
    "preview_seed": "preview_seed",
    "preview_sampler": "preview_sampler",
    "preview_steps": "preview_steps",
    "preview_cfg": "preview_cfg_scale",
}
_FLAGS = {"shuffle_tags": "shuffle_tags", "gradient_checkpointing": "gradient_checkpointing"}


def train_ti_arguments(parser: argparse.ArgumentParser, *, project: bool = True) -> None:
    """Add ``train-ti``'s arguments (``PROJECT`` too unless ``project`` is False; ``--json`` is
    left to the caller's common verb options)."""
    if project:
        parser.add_argument("project", help="the project folder")
    add = parser.add_argument
    add("--model", help="checkpoint file, diffusers folder or model name (not with --resume)")
    add("--vae", help="separate VAE file")
    add("--name", help="embedding name, typed in prompts (default: the project's token)")
    add("--init", metavar="TEXT", help="initialization text (default: woman)")
    add("--vectors", type=int, metavar="N", help="vectors per token (default: 2)")
    add("--lr", metavar="SCHEDULE", help='learning rate or A1111 schedule, e.g. "0.005:100, 1e-3"')
    add("--batch-size", type=int, metavar="B", help="default: the number of images, at most 8")
    add("--grad-accum", type=int, metavar="G", help="gradient accumulation steps (default: 1)")
    add("--steps", type=int, metavar="N", help="max steps (default: 150)")
    add("--save-every", type=int, metavar="N", help="save the embedding every N steps (1)")
    add("--preview-every", type=int, metavar="N", help="preview image every N steps (5)")
    add("--template", metavar="FILE", help="prompt template file ([name], [filewords])")
    add_images_option(add, resume_help="continue a run (its id or folder name)")
    add("--width", type=int, help="training width (512)")
    add("--height", type=int, help="training height (512)")
    add("--seed", type=int, help="training seed (-1: random)")
    add("--latent-sampling", choices=LATENT_SAMPLING_METHODS, help="once (default)")
    add("--shuffle-tags", action="store_true", default=None, help="shuffle [filewords] tags")
    add("--tag-dropout", type=float, metavar="P", help="drop each [filewords] tag with P")
    add("--clip-grad", choices=CLIP_GRAD_MODES, help="gradient clipping (disabled)")
    add("--clip-grad-value", metavar="SCHEDULE", help="clipping value or schedule (0.1)")
    add("--clip-skip", type=int)
    add("--precision", choices=TRAIN_PRECISIONS, help="auto: fp16 on CUDA, fp32 on the CPU")
    add(
        "--gradient-checkpointing",
        action="store_true",
        default=None,
        help="less GPU memory, slower",
    )
    add("--preview-prompt", help="default: the template's first line")
    add("--preview-negative", help="preview negative prompt")
    add("--preview-seed", type=int)
    add("--preview-sampler", help='A1111 sampler name, e.g. "DPM++ 2M Karras"')
    add("--preview-steps", type=int)
    add("--preview-cfg", type=float)
    add_device_option(add)


def _settings_changes(args: argparse.Namespace) -> dict[str, Any]:
    changes = option_changes(args, {**_SETTING_OPTIONS, **_FLAGS})
    changes.update(sampler_changes(args, "preview_sampler", "preview_sampler"))
    if getattr(args, "template", None):
        path = Path(args.template).expanduser()
        if not path.is_file():
            raise ValueError(f"--template: no such file: {path}")
        changes["template"] = read_template_file(path)
    return changes


def train_ti_params_from_args(project: Project, args: argparse.Namespace) -> dict[str, Any]:
    """The job params for parsed ``train-ti`` arguments; ValueError with a message when they do
    not fit together."""
    from charstudio.training.settings import TrainTISettings

    changes = _settings_changes(args)
    if args.resume:
        return resume_params(
            project, args, changes, setting="max_steps", option="--steps", param="max_steps"
        )
    return new_run_params(TrainTISettings.for_project(project, **changes).to_json(), args)
