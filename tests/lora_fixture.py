"""A finished LoRA run on the tiny model without training: kohya-format epoch files with
deterministic weights, their metadata and the catalog rows, as the LoRA trainer leaves them."""

from __future__ import annotations

from pathlib import Path

import torch

from charstudio.catalog import Project
from charstudio.training import records
from charstudio.training.lora_metadata import save_lora_file

NAME = "zxqlora"
TOKEN = "zxq woman"
RANK = 4
ALPHA = 2.0
STEPS_PER_EPOCH = 8
EPOCHS = (1, 2, 3)

# The tiny model's modules kohya's LoRA trains (attention blocks' linears and 1x1 convs, the
# text encoder's attention and MLP), under their diffusers names.
UNET_TARGETS = (
    "down_blocks.0.attentions.0.proj_in",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k",
    "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj",
    "mid_block.attentions.0.transformer_blocks.0.attn2.to_v",
    "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.2",
    "up_blocks.1.attentions.0.proj_out",
)
TEXT_TARGETS = (
    "encoder.layers.0.self_attn.q_proj",
    "encoder.layers.1.self_attn.out_proj",
    "encoder.layers.1.mlp.fc1",
)


def kohya_tensors(
    model, seed: int, *, rank: int = RANK, alpha: float = ALPHA, scale: float = 0.3
) -> dict[str, torch.Tensor]:
    """kohya keys with random factors for the tiny ``model`` (a TinySD); big enough to change
    the tiny model's images, the same for the same seed."""
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for prefix, root, paths in (
        ("lora_unet_", model.unet, UNET_TARGETS),
        ("lora_te_text_model_", model.text_encoder, TEXT_TARGETS),
    ):
        for path in paths:
            module = root.get_submodule(path if prefix == "lora_unet_" else _te_path(root, path))
            weight = module.weight
            kernel = list(weight.shape[2:])
            stem = prefix + path.replace(".", "_")
            down = torch.randn(rank, weight.shape[1], *kernel, generator=generator) * scale
            up = torch.randn(weight.shape[0], rank, *([1] * len(kernel)), generator=generator)
            out[f"{stem}.lora_down.weight"] = down
            out[f"{stem}.lora_up.weight"] = up * scale
            out[f"{stem}.alpha"] = torch.tensor(alpha)
    return out


def _te_path(text_encoder, path: str) -> str:
    # transformers 5's CLIPTextModel has no text_model level; 4 had one.
    return f"text_model.{path}" if hasattr(text_encoder, "text_model") else path


def kohya_metadata(name: str, epoch: int, *, rank: int = RANK, alpha: float = ALPHA) -> dict:
    return {
        "ss_output_name": name,
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha),
        "ss_epoch": str(epoch),
        "ss_steps": str(epoch * STEPS_PER_EPOCH),
        "ss_base_model_version": "sd_v1",
        "ss_v2": "False",
        "ss_training_finished_at": "1765000000.0",
    }


def make_lora_run(project: Project, model, model_dir: Path, *, name: str = NAME) -> int:
    """A done LoRA run with one kohya file and checkpoint row per epoch of :data:`EPOCHS`;
    returns its id."""
    folder = f"runs/lora-001-{name}"
    params = {
        "model": str(model_dir),
        "model_name": "tiny-sd",
        "model_hash": "0123456789",
        "token": TOKEN,
        "dim": RANK,
        "alpha": ALPHA,
        "epochs": len(EPOCHS),
        "steps_per_epoch": STEPS_PER_EPOCH,
        "resolution": 32,
        "clip_skip": 1,
    }
    run_id = records.create_run(
        project.catalog, name=name, folder=folder, params=params, job_id=None, kind="lora"
    )
    for epoch in EPOCHS:
        relative = f"{folder}/{name}-{epoch:06d}.safetensors"
        digest = save_lora_file(
            project.root / relative,
            kohya_tensors(model, seed=epoch),
            kohya_metadata(name, epoch),
            resolution=32,
            trigger=TOKEN,
        )
        records.record_checkpoint(
            project.catalog, run_id, epoch * STEPS_PER_EPOCH, relative, 1.0 / epoch, digest
        )
    records.set_run_status(project.catalog, run_id, "done")
    return run_id
