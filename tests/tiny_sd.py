"""Tiny random-weight SD 1.x models for tests, in every form artists have models in.

``tiny_components()`` builds an SD1-shaped UNet, VAE and CLIP text encoder small enough to run on
the CPU in milliseconds. ``write_ldm_checkpoint()`` saves them as a single-file checkpoint in the
*original* (LDM / A1111) key layout, the reverse of diffusers' conversion, so the loader is tested
on files shaped like the ones people download. ``write_diffusers_folder()`` saves a diffusers
folder. ``TINY_CONFIGS`` is what ``load_sd15(config_overrides=...)`` needs to build them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from .weights import set_random_weights

TINY_UNET: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 32,
    "attention_head_dim": 4,
    "norm_num_groups": 32,
}
TINY_VAE: dict[str, Any] = {
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
    "latent_channels": 4,
    "norm_num_groups": 32,
}
TINY_TEXT: dict[str, Any] = {
    "vocab_size": 49408,  # the real CLIP vocabulary, so charstudio's tokenizer ids fit
    "max_position_embeddings": 77,
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "projection_dim": 32,
}
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "unet": TINY_UNET,
    "vae": TINY_VAE,
    "text_encoder": TINY_TEXT,
}


@dataclass
class TinySD:
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel


def tiny_components(seed: int = 0) -> TinySD:
    """A tiny SD1-shaped model with random weights, the same for the same seed.

    Every parameter is set by :func:`set_random_weights` (none keeps a library's initial value),
    so no two tensors are equal and a key mapped to the wrong place cannot go unnoticed.
    """
    unet = set_random_weights(UNet2DConditionModel(**TINY_UNET), seed)
    vae = set_random_weights(AutoencoderKL(**TINY_VAE), seed + 1)
    text_encoder = set_random_weights(CLIPTextModel(CLIPTextConfig(**TINY_TEXT)), seed + 2)
    for model in (unet, vae, text_encoder):
        model.eval()
    return TinySD(unet, vae, text_encoder)


# -- diffusers -> LDM key mapping (the reverse of diffusers' single-file conversion) ----------

_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


def _split(key: str, prefix: str) -> list[str] | None:
    return key[len(prefix) :].split(".") if key.startswith(prefix) else None


def _resnet_tail(parts: list[str], table: dict[str, str]) -> str:
    """``norm1.weight`` -> ``in_layers.0.weight`` (UNet) / ``nin_shortcut`` (VAE)."""
    layer, rest = parts[0], ".".join(parts[1:])
    return f"{table.get(layer, layer)}.{rest}"


def unet_key_to_ldm(key: str, config: dict[str, Any]) -> str:
    """One diffusers UNet2DConditionModel key -> the LDM ``model.diffusion_model.`` key."""
    per_block = config["layers_per_block"]
    for old, new in _UNET_TOP.items():
        if key.startswith(old + "."):
            return "model.diffusion_model." + new + key[len(old) :]
    parts = key.split(".")
    if parts[0] == "down_blocks":
        block, kind = int(parts[1]), parts[2]
        if kind == "downsamplers":  # down_blocks.b.downsamplers.0.conv.weight
            index = 1 + block * (per_block + 1) + per_block
            ldm = f"input_blocks.{index}.0.op.{parts[-1]}"
        else:
            index = 1 + block * (per_block + 1) + int(parts[3])
            if kind == "resnets":
                ldm = f"input_blocks.{index}.0." + _resnet_tail(parts[4:], _UNET_RESNET)
            else:
                ldm = f"input_blocks.{index}.1." + ".".join(parts[4:])
    elif parts[0] == "mid_block":
        kind, index = parts[1], int(parts[2])
        if kind == "resnets":  # resnet, attention, resnet -> middle_block.0/1/2
            ldm = f"middle_block.{2 * index}." + _resnet_tail(parts[3:], _UNET_RESNET)
        else:
            ldm = f"middle_block.{2 * index + 1}." + ".".join(parts[3:])
    elif parts[0] == "up_blocks":
        block, kind = int(parts[1]), parts[2]
        if kind == "upsamplers":  # after the resnet (.0) and, if the block has one, attention (.1)
            index = block * (per_block + 1) + per_block
            slot = 2 if "CrossAttn" in config["up_block_types"][block] else 1
            ldm = f"output_blocks.{index}.{slot}.conv.{parts[-1]}"
        else:
            index = block * (per_block + 1) + int(parts[3])
            if kind == "resnets":
                ldm = f"output_blocks.{index}.0." + _resnet_tail(parts[4:], _UNET_RESNET)
            else:
                ldm = f"output_blocks.{index}.1." + ".".join(parts[4:])
    else:
        raise KeyError(f"no LDM name for UNet key {key}")
    return "model.diffusion_model." + ldm


def vae_key_to_ldm(key: str, config: dict[str, Any]) -> str:
    """One diffusers AutoencoderKL key -> the LDM ``first_stage_model.`` key."""
    n_blocks = len(config["block_out_channels"])
    parts = key.split(".")
    side = parts[0]  # encoder / decoder / quant_conv / post_quant_conv
    if side in ("quant_conv", "post_quant_conv"):
        return "first_stage_model." + key
    rest = parts[1:]
    layer = rest[0]
    if layer in ("conv_in", "conv_out"):
        ldm = ".".join(rest)
    elif layer == "conv_norm_out":
        ldm = "norm_out." + ".".join(rest[1:])
    elif layer == "mid_block":
        if rest[1] == "resnets":
            ldm = f"mid.block_{int(rest[2]) + 1}." + _resnet_tail(
                rest[3:], {"conv_shortcut": "nin_shortcut"}
            )
        else:  # mid_block.attentions.0.<name>.<param>
            name = ".".join(rest[3:-1])
            ldm = f"mid.attn_1.{_VAE_ATTENTION[name]}.{rest[-1]}"
    elif layer in ("down_blocks", "up_blocks"):
        block = int(rest[1])
        if layer == "down_blocks":
            ldm_block, sampler = f"down.{block}", "downsample"
        else:  # LDM numbers decoder levels from the lowest resolution up
            ldm_block, sampler = f"up.{n_blocks - 1 - block}", "upsample"
        if rest[2] == "resnets":
            ldm = f"{ldm_block}.block.{rest[3]}." + _resnet_tail(
                rest[4:], {"conv_shortcut": "nin_shortcut"}
            )
        else:  # downsamplers.0.conv.<param> / upsamplers.0.conv.<param>
            ldm = f"{ldm_block}.{sampler}.conv.{rest[-1]}"
    else:
        raise KeyError(f"no LDM name for VAE key {key}")
    return f"first_stage_model.{side}.{ldm}"


def ldm_state_dict(model: TinySD) -> dict[str, torch.Tensor]:
    """The model's weights under the original SD 1.x checkpoint keys."""
    out: dict[str, torch.Tensor] = {}
    unet_config = dict(model.unet.config)
    for key, value in model.unet.state_dict().items():
        out[unet_key_to_ldm(key, unet_config)] = value.detach().clone()
    vae_config = dict(model.vae.config)
    for key, value in model.vae.state_dict().items():
        ldm_key = vae_key_to_ldm(key, vae_config)
        value = value.detach().clone()
        if ".mid.attn_1." in ldm_key and value.ndim == 2:
            value = value[:, :, None, None].contiguous()  # LDM's VAE attention uses 1x1 convs
        out[ldm_key] = value
    for key, value in model.text_encoder.state_dict().items():
        text_key = key if key.startswith("text_model.") else "text_model." + key
        out["cond_stage_model.transformer." + text_key] = value.detach().clone()
    # Real files carry these too; the loader must ignore them.
    n_pos = model.text_encoder.config.max_position_embeddings
    out["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(
        n_pos
    ).unsqueeze(0)
    out["alphas_cumprod"] = torch.linspace(0.999, 0.005, 1000)
    return out


def write_ldm_checkpoint(path: Path, model: TinySD) -> Path:
    """Save as a single-file checkpoint: safetensors for ``.safetensors``, else a Lightning-style
    ``.ckpt`` (``{"state_dict": ..., "global_step": ...}``) through ``torch.save``."""
    state = ldm_state_dict(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"state_dict": state, "global_step": 470000, "epoch": 6}, path)
    return path


def write_diffusers_folder(path: Path, model: TinySD) -> Path:
    """Save as a diffusers model folder (no tokenizer: charstudio ships its own)."""
    from diffusers import PNDMScheduler

    model.unet.save_pretrained(path / "unet")
    model.vae.save_pretrained(path / "vae")
    model.text_encoder.save_pretrained(path / "text_encoder")
    PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True
    ).save_pretrained(path / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "scheduler": ["diffusers", "PNDMScheduler"],
    }
    (path / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return path


def clip_tokenizer_for_diffusers(folder: Path) -> Any:
    """A transformers ``CLIPTokenizer`` written from charstudio's own CLIP BPE files, for
    diffusers pipelines in tests (nothing is downloaded)."""
    from transformers import CLIPTokenizer

    from charstudio.prompts import get_clip_tokenizer
    from charstudio.prompts.clip_tokenizer import read_merges

    ours = get_clip_tokenizer()
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {ours.id_to_token(i): i for i in range(ours.vocab_size)}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    merges = "".join(f"{a} {b}\n" for a, b in read_merges())
    (folder / "merges.txt").write_text("#version: 0.2\n" + merges, encoding="utf-8")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))


def diffusers_pipeline(model: TinySD, folder: Path) -> Any:
    """A plain diffusers ``StableDiffusionPipeline`` over the tiny components."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=model.vae,
        text_encoder=model.text_encoder,
        tokenizer=clip_tokenizer_for_diffusers(folder),
        unet=model.unet,
        scheduler=PNDMScheduler(beta_schedule="scaled_linear", skip_prk_steps=True),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
