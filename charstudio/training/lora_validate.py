"""Check a kohya-format LoRA before it is exported: A1111 and ComfyUI must load every weight.

What the two programs map for an SD 1.x model (read from their sources):

* **UNet.** ComfyUI maps ``lora_unet_<name>`` for every UNet weight, ``<name>`` being either the
  LDM module path (``input_blocks_1_1_proj_in``) or the diffusers path
  (``down_blocks_0_attentions_0_proj_in``), both with "." written "_". A1111 looks the LDM
  name up in its model, and converts diffusers names by rule only under ``down_blocks_…``,
  ``mid_block_…`` and ``up_blocks_…`` (attentions, resnets, down/upsamplers), numbering blocks
  as SD 1.x lays them out; a diffusers name for a top-level module (``conv_in``,
  ``time_embedding_…``) reaches no module there. A LoRA patches Linear and Conv2d layers only.
* **Text encoder.** Both map ``lora_te_text_model_encoder_layers_<i>_<part>`` where ``<part>``
  is ``self_attn_{q,k,v,out}_proj`` or ``mlp_fc{1,2}`` (ComfyUI maps nothing else and logs
  "lora key not loaded" for the rest; A1111 needs the ``lora_te_`` prefix for SD 1.x).
* **Metadata.** A1111 names the network from ``ss_output_name``, shows its hash from
  ``sshs_model_hash`` and tells SD versions apart by ``ss_base_model_version`` or ``ss_v2``.

The set of module names is derived from the SD 1.5 UNet and CLIP text encoder themselves,
built on PyTorch's "meta" device (structure and shapes, no memory, a tenth of a second), and
named both ways as :mod:`charstudio.engine.loras` names them. The shapes are checked against
the model the run trained on when its structure is known (a diffusers folder), else SD 1.5's.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "LoraValidationError",
    "ModuleTable",
    "ValidationReport",
    "sd15_table",
    "table_for_model",
    "validate_lora",
]

# The SD 1.5 architecture (diffusers' UNet2DConditionModel defaults are SD 1.x's but for the
# 768-wide cross-attention; CLIP ViT-L/14's text tower).
_SD15_UNET: dict[str, Any] = {"cross_attention_dim": 768, "sample_size": 64}
_SD15_TEXT: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "max_position_embeddings": 77,
}
_TE_PARTS = ("self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj", "self_attn_out_proj",
             "mlp_fc1", "mlp_fc2")  # fmt: skip
_TE_KEY = re.compile(r"^lora_te_text_model_encoder_layers_(\d+)_(\w+)$")
# Diffusers-named UNet modules A1111 converts to its own names by rule.
_A1111_DIFFUSERS_UNET = re.compile(r"^(?:down_blocks|mid_block|up_blocks)_")
_LDM_UNET = re.compile(r"^(?:input_blocks|middle_block|output_blocks|time_embed|out)_")
_ROLES = (".lora_down.weight", ".lora_up.weight", ".alpha")
_SHOWN = 3  # bad keys named in a message


class LoraValidationError(ValueError):
    """The file would not load (fully) in A1111 or ComfyUI; the message names the file and the
    keys or metadata at fault."""


@dataclass(frozen=True)
class ModuleTable:
    """The patchable modules of one SD 1.x model under their kohya names (without the
    ``lora_unet_`` / ``lora_te_`` prefix) and the shape of their weights."""

    unet: Mapping[str, tuple[int, ...]]
    text_encoder: Mapping[str, tuple[int, ...]]
    text_layers: int

    @classmethod
    def from_models(cls, unet: torch.nn.Module, text_encoder: torch.nn.Module) -> ModuleTable:
        from charstudio.engine.loras import TEXT_ENCODER, UNET, _ModelIndex

        index = _ModelIndex(unet, text_encoder)
        tables: dict[str, dict[str, tuple[int, ...]]] = {}
        for component in (UNET, TEXT_ENCODER):
            tables[component] = {
                name: tuple(int(s) for s in module.weight.shape)
                for name, module in index.underscored[component].items()
                if module is not None
            }
        layers = getattr(getattr(text_encoder, "config", None), "num_hidden_layers", 0)
        return cls(tables[UNET], tables[TEXT_ENCODER], int(layers or 0))


@functools.cache
def sd15_table() -> ModuleTable:
    """SD 1.5's modules, from its structure on the meta device (cached)."""
    return _meta_table(_SD15_UNET, _SD15_TEXT)


def _meta_table(unet_config: Mapping[str, Any], text_config: Mapping[str, Any]) -> ModuleTable:
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_config)
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_config))
    return ModuleTable.from_models(unet, text_encoder)


def table_for_model(model: str | Path | None) -> ModuleTable:
    """The modules of the model a run trained on: from its configs when it is a diffusers
    folder (any size, the tests' tiny model included), else SD 1.5's."""
    folder = Path(model) if model else None
    if folder is None or not (folder / "unet" / "config.json").is_file():
        return sd15_table()
    try:
        unet_config = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
        text_config = json.loads(
            (folder / "text_encoder" / "config.json").read_text(encoding="utf-8")
        )
    except (OSError, ValueError):
        return sd15_table()
    return _cached_meta_table(json.dumps(unet_config, sort_keys=True),
                              json.dumps(text_config, sort_keys=True))  # fmt: skip


@functools.lru_cache(maxsize=4)
def _cached_meta_table(unet_json: str, text_json: str) -> ModuleTable:
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(json.loads(unet_json))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_dict(json.loads(text_json)))
    return ModuleTable.from_models(unet, text_encoder)


@dataclass
class ValidationReport:
    """What was checked in a file that passed."""

    path: Path
    modules: int = 0
    unet_modules: int = 0
    text_modules: int = 0
    rank: int | None = None
    alpha: float | None = None
    warnings: list[str] = field(default_factory=list)


def _mapped_name(stem: str, sd15: ModuleTable) -> str | None:
    """Why A1111 or ComfyUI would not load ``stem`` (a key without its role), or None."""
    if stem.startswith("lora_unet_"):
        name = stem[len("lora_unet_") :]
        if name not in sd15.unet:
            return "no SD 1.x UNet module has this name"
        if not (_A1111_DIFFUSERS_UNET.match(name) or _LDM_UNET.match(name)):
            return "A1111 does not map a diffusers name outside the UNet's blocks"
        return None
    if stem.startswith("lora_te_"):
        match = _TE_KEY.match(stem)
        if match is None:
            return "ComfyUI maps only text_model_encoder_layers_N_… in the text encoder"
        layer, part = int(match[1]), match[2]
        if part not in _TE_PARTS:
            return f"ComfyUI maps only {', '.join(_TE_PARTS)} in a text encoder layer"
        if layer >= sd15.text_layers:
            return f"SD 1.x's text encoder has {sd15.text_layers} layers"
        return None
    return "not a kohya SD 1.x key (lora_unet_… or lora_te_…)"


def _stem_and_role(key: str) -> tuple[str, str | None]:
    for role in _ROLES:
        if key.endswith(role):
            return key[: -len(role)], role
    return key, None


def _listed(items: list[str]) -> str:
    shown = "; ".join(items[:_SHOWN])
    return shown + (f"; and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def validate_lora(
    path: Path | str,
    *,
    data: bytes | None = None,
    table: ModuleTable | None = None,
    expect_name: str | None = None,
) -> ValidationReport:
    """Check the LoRA file ``path`` (or the bytes ``data`` about to be written there) for
    A1111 and ComfyUI; raise :class:`LoraValidationError` naming every kind of problem found
    (and the first few keys of each), else return what was checked.

    ``table`` holds the shapes of the model the LoRA was trained for (default SD 1.5); the
    names are always checked against SD 1.5's, which is what the two programs map.
    ``expect_name`` is the name ``ss_output_name`` must hold (the export's file name).
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load

    from charstudio.engine.loras import LoraError, lora_from_tensors

    path = Path(path)
    label = str(path)
    try:
        if data is None:
            data = path.read_bytes()
        length = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + length])
        metadata = {str(k): str(v) for k, v in (header.get("__metadata__") or {}).items()}
        tensors = dict(load(data))
    except (OSError, SafetensorError, ValueError, AttributeError) as exc:
        raise LoraValidationError(f"{label}: not a readable .safetensors LoRA ({exc})") from exc

    problems: list[str] = []
    sd15 = sd15_table()
    shapes = table or sd15

    # Keys: each must be a down/up/alpha of a module both programs map.
    unmapped: list[str] = []
    stray: list[str] = []
    for key in sorted(tensors):
        stem, role = _stem_and_role(key)
        if role is None:
            stray.append(key)
            continue
        reason = _mapped_name(stem, sd15)
        if reason:
            unmapped.append(f"{key} ({reason})")
    if unmapped:
        problems.append(f"keys A1111/ComfyUI would not load: {_listed(unmapped)}")
    if stray:
        problems.append(f"tensors that are not LoRA weights: {_listed(stray)}")

    # Numbers: NaN or inf anywhere makes every image it touches NaN.
    bad = [k for k, t in sorted(tensors.items()) if not bool(torch.isfinite(t.float()).all())]
    if bad:
        problems.append(f"tensors with NaN or infinite values: {_listed(bad)}")

    report = ValidationReport(path)
    try:
        lora = lora_from_tensors(tensors, path.stem, path, metadata=metadata)
    except LoraError as exc:
        problems.append(str(exc).removeprefix(f"{label}: "))
        lora = None
    if lora is not None:
        misfit: list[str] = []
        alphas: set[float] = set()
        ranks: set[int] = set()
        for module in lora.modules.values():
            component = "unet" if module.key.startswith("lora_unet_") else "text_encoder"
            name = module.key.split("_", 2)[2]  # drop lora_unet_ / lora_te_
            known = (shapes.unet if component == "unet" else shapes.text_encoder).get(name)
            if known is not None and not module.fits(known):
                misfit.append(f"{module.key} ({module.delta_shape()} vs the model's {known})")
            if module.alpha is not None:
                if not math.isfinite(module.alpha) or module.alpha <= 0:
                    misfit.append(f"{module.key}.alpha ({module.alpha}: must be above 0)")
                alphas.add(module.alpha)
            ranks.add(module.rank)
            report.modules += 1
            report.unet_modules += component == "unet"
            report.text_modules += component == "text_encoder"
        if misfit:
            problems.append(f"weights whose shapes do not fit: {_listed(misfit)}")
        report.rank = max(ranks) if ranks else None
        report.alpha = max(alphas) if alphas else None
        problems += _dim_alpha_problems(metadata, ranks, alphas)

    problems += _metadata_problems(metadata, data, expect_name)
    if problems:
        raise LoraValidationError(f"{label}: " + "; ".join(problems))
    return report


def _number(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def _dim_alpha_problems(
    metadata: Mapping[str, str], ranks: set[int], alphas: set[float]
) -> list[str]:
    """kohya's ``ss_network_dim``/``ss_network_alpha`` must describe the tensors: A1111 shows
    them, and a mismatch means the file was edited without its metadata."""
    problems = []
    dim = _number(metadata.get("ss_network_dim"))
    alpha = _number(metadata.get("ss_network_alpha"))
    if dim is not None and ranks and ranks != {int(dim)}:
        have = ", ".join(str(r) for r in sorted(ranks))
        problems.append(f"ss_network_dim says {int(dim)} but the weights have rank {have}")
    if (
        alpha is not None
        and alphas
        and any(abs(a - alpha) > 1e-3 * max(1.0, alpha) for a in alphas)
    ):
        have = ", ".join(f"{a:g}" for a in sorted(alphas))
        problems.append(f"ss_network_alpha says {alpha:g} but the alpha tensors hold {have}")
    return problems


def _metadata_problems(
    metadata: Mapping[str, str], data: bytes, expect_name: str | None
) -> list[str]:
    from charstudio.engine.model_hash import addnet_hash

    problems = []
    name = metadata.get("ss_output_name")
    if not name:
        problems.append("no ss_output_name in the metadata (A1111 names the LoRA from it)")
    elif expect_name is not None and name != expect_name:
        problems.append(f"ss_output_name is {name!r}, not {expect_name!r}")
    version = metadata.get("ss_base_model_version")
    v2 = metadata.get("ss_v2")
    if version is None and v2 is None:
        problems.append("neither ss_base_model_version nor ss_v2 in the metadata")
    elif (version is not None and not version.startswith("sd_v1")) or (
        version is None and str(v2).lower() != "false"
    ):
        problems.append(f"the metadata says another model family ({version or 'ss_v2 ' + str(v2)})")
    given = metadata.get("sshs_model_hash")
    if not given:
        problems.append("no sshs_model_hash in the metadata")
    elif given != addnet_hash(data):
        problems.append("sshs_model_hash is not the hash of the weights (sha256 after the header)")
    return problems
