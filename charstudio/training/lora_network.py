"""The trainable LoRA network: peft LoRA layers on the modules kohya's ``networks.lora`` trains,
named the way kohya names them, so each saved epoch is an ordinary kohya file.

Targets (kohya's facts for SD 1.x):

* UNet: every Linear and 1×1 Conv2d inside a ``Transformer2DModel`` (``proj_in``,
  ``proj_out``, ``attn1``/``attn2`` ``to_q``/``to_k``/``to_v``/``to_out.0``, ``ff.net.0.proj``,
  ``ff.net.2``) with rank ``dim`` and ``alpha``;
* LoCon (``conv_dim`` > 0): the ``ResnetBlock2D``, ``Downsample2D`` and ``Upsample2D`` modules
  too: their 3×3 convolutions with ``conv_dim``/``conv_alpha``, their Linear and 1×1 ones with
  ``dim``/``alpha``;
* text encoder (when trained; named ``lora_te_text_model_…`` whether or not the loaded
  ``CLIPTextModel`` has its ``text_model`` level): the CLIP attention's ``q_proj``/``k_proj``/
  ``v_proj``/``out_proj`` and the MLP's ``fc1``/``fc2``.

A module's kohya name is ``lora_unet_`` or ``lora_te_`` and its diffusers / transformers path
with ``.`` replaced by ``_``; peft's ``lora_A`` is kohya's ``lora_down`` and ``lora_B`` its
``lora_up``; the update is ``alpha / rank · up @ down`` in both. ``lora_down`` starts as
kaiming-uniform noise drawn from the run's seed on the CPU (the same on every device),
``lora_up`` at zero, so step 0 is the base model exactly. The trainable weights are float32
whatever the model's precision.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["ADAPTER", "LoraNetwork", "NetworkModule", "kohya_name", "target_modules"]

ADAPTER = "default"
UNET_PREFIX = "lora_unet"
TE_PREFIX = "lora_te"
_TRANSFORMER_BLOCKS = ("Transformer2DModel",)
_CONV_BLOCKS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
_TE_BLOCKS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP")


def kohya_name(prefix: str, path: str) -> str:
    if prefix == TE_PREFIX and not path.startswith("text_model."):
        path = f"text_model.{path}"  # transformers 5's CLIPTextModel has no text_model level
    return f"{prefix}_{path.replace('.', '_')}"


@dataclass(frozen=True)
class _Target:
    path: str  # the module's path in its model
    rank: int
    alpha: float


def _children_of(
    model: torch.nn.Module, block_types: tuple[str, ...]
) -> Iterator[tuple[str, torch.nn.Module]]:
    """Linear and Conv2d modules inside modules whose class is one of ``block_types``."""
    import torch

    seen: set[str] = set()
    for name, block in model.named_modules():
        if type(block).__name__ not in block_types:
            continue
        for child_name, child in block.named_modules():
            path = f"{name}.{child_name}" if name else child_name
            if (
                child_name
                and path not in seen
                and isinstance(child, torch.nn.Linear | torch.nn.Conv2d)
            ):
                seen.add(path)
                yield path, child


def _is_1x1(module: Any) -> bool:
    import torch

    return not isinstance(module, torch.nn.Conv2d) or tuple(module.kernel_size) == (1, 1)


def target_modules(
    unet: Any,
    text_encoder: Any | None,
    *,
    dim: int,
    alpha: float,
    conv_dim: int = 0,
    conv_alpha: float = 1.0,
) -> dict[str, tuple[str, _Target]]:
    """kohya name -> (component, target) for every module the network trains."""
    out: dict[str, tuple[str, _Target]] = {}
    for path, module in _children_of(unet, _TRANSFORMER_BLOCKS):
        if _is_1x1(module):
            out[kohya_name(UNET_PREFIX, path)] = ("unet", _Target(path, dim, alpha))
    if conv_dim:
        for path, module in _children_of(unet, _CONV_BLOCKS):
            target = (
                _Target(path, dim, alpha)
                if _is_1x1(module)
                else _Target(path, conv_dim, conv_alpha)
            )
            out[kohya_name(UNET_PREFIX, path)] = ("unet", target)
    if text_encoder is not None:
        for path, _module in _children_of(text_encoder, _TE_BLOCKS):
            out[kohya_name(TE_PREFIX, path)] = ("text_encoder", _Target(path, dim, alpha))
    return out


@dataclass(frozen=True)
class NetworkModule:
    """One trained module: its kohya name and peft layer."""

    name: str
    component: str  # "unet" or "text_encoder"
    path: str
    layer: Any  # a peft LoraLayer
    rank: int
    alpha: float

    @property
    def down(self) -> torch.nn.Parameter:
        return self.layer.lora_A[ADAPTER].weight

    @property
    def up(self) -> torch.nn.Parameter:
        return self.layer.lora_B[ADAPTER].weight


def _inject(model: Any, targets: dict[str, _Target]) -> None:
    import re

    from peft import LoraConfig, inject_adapter_in_model

    if not targets:
        return
    first = next(iter(targets.values()))
    config = LoraConfig(
        r=first.rank,
        lora_alpha=first.alpha,
        target_modules=[re.escape(t.path) for t in targets.values()],
        rank_pattern={re.escape(t.path): t.rank for t in targets.values()},
        alpha_pattern={re.escape(t.path): t.alpha for t in targets.values()},
        lora_dropout=0.0,
        init_lora_weights=True,
        bias="none",
    )
    # target_modules as exact paths: peft matches a list entry against each module's name.
    config.target_modules = {t.path for t in targets.values()}
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)


class LoraNetwork:
    """LoRA layers attached to a loaded model's UNet (and text encoder)."""

    def __init__(
        self,
        unet: Any,
        text_encoder: Any | None,
        *,
        dim: int,
        alpha: float,
        conv_dim: int = 0,
        conv_alpha: float = 1.0,
        seed: int = 0,
    ) -> None:
        import torch

        self.unet = unet
        self.text_encoder = text_encoder
        self.dim = dim
        self.alpha = alpha
        self.conv_dim = conv_dim
        self.conv_alpha = conv_alpha
        targets = target_modules(
            unet, text_encoder, dim=dim, alpha=alpha, conv_dim=conv_dim, conv_alpha=conv_alpha
        )
        for component, model in (("unet", unet), ("text_encoder", text_encoder)):
            if model is not None:
                _inject(model, {n: t for n, (c, t) in targets.items() if c == component})
        self.modules: list[NetworkModule] = []
        for name, (component, target) in targets.items():
            model = unet if component == "unet" else text_encoder
            layer = model.get_submodule(target.path)
            self.modules.append(
                NetworkModule(name, component, target.path, layer, target.rank, target.alpha)
            )
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for module in self.modules:
                for param in (module.down, module.up):
                    param.data = param.data.float()
                down = torch.empty(module.down.shape, dtype=torch.float32)
                # kohya's and peft's initialisation of the down weights, from our own stream.
                torch.nn.init.kaiming_uniform_(down, a=math.sqrt(5), generator=generator)
                module.down.copy_(down)
                module.up.zero_()
                module.down.requires_grad_(True)
                module.up.requires_grad_(True)

    # -- parameters ----------------------------------------------------------------------

    def parameters(self, component: str | None = None) -> list[torch.nn.Parameter]:
        return [
            p
            for m in self.modules
            if component is None or m.component == component
            for p in (m.down, m.up)
        ]

    # -- kohya state -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        """kohya keys -> float32 CPU copies (``alpha`` as a 0-d tensor, as kohya writes it)."""
        import torch

        out: dict[str, torch.Tensor] = {}
        for m in self.modules:
            out[f"{m.name}.lora_down.weight"] = m.down.detach().to("cpu", torch.float32).clone()
            out[f"{m.name}.lora_up.weight"] = m.up.detach().to("cpu", torch.float32).clone()
            out[f"{m.name}.alpha"] = torch.tensor(float(m.alpha))
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load kohya-keyed weights saved by :meth:`state_dict` (every module must be there)."""
        import torch

        missing = [m.name for m in self.modules if f"{m.name}.lora_down.weight" not in state]
        if missing:
            raise ValueError(
                f"the saved LoRA lacks {len(missing)} module(s) of this network, e.g. {missing[0]}"
            )
        with torch.no_grad():
            for m in self.modules:
                m.down.copy_(state[f"{m.name}.lora_down.weight"].to(m.down.device, torch.float32))
                m.up.copy_(state[f"{m.name}.lora_up.weight"].to(m.up.device, torch.float32))

    def all_finite(self) -> bool:
        import torch

        return all(bool(torch.isfinite(p).all()) for p in self.parameters())

    def remove(self) -> None:
        """Put the original modules back (the LoRA layers are dropped, the base weights were
        never changed)."""
        for m in self.modules:
            model = self.unet if m.component == "unet" else self.text_encoder
            parent_path, _, child = m.path.rpartition(".")
            parent = model.get_submodule(parent_path) if parent_path else model
            setattr(parent, child, m.layer.get_base_layer())
        self.modules = []
