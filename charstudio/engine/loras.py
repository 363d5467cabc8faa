"""LoRA files, used as A1111 does: ``<lora:name:weight>`` in the prompt merges the file's
low-rank updates into the model's weights for that generation.

Formats read (every one becomes the same thing: for each target module, ``down``
``[rank, in(, kh, kw)]``, ``up`` ``[out, rank(, 1, 1)]`` and ``alpha`` or None):

* kohya / sd-scripts (what A1111 users share): ``lora_unet_<module path, "." -> "_">`` and
  ``lora_te_`` / ``lora_te1_`` ``text_model_encoder_layers_0_self_attn_q_proj`` with
  ``.lora_down.weight``, ``.lora_up.weight``, ``.alpha``; LoCon convolutions (1x1 and 3x3), and
  the CP-decomposed ``.lora_mid.weight`` variant.
* diffusers / peft: ``unet.<path>.lora_A.weight`` / ``.lora_B.weight`` (A is down, B is up),
  ``text_encoder.<path>...``, ``base_model.model.<path>...`` (``get_peft_model_state_dict``),
  ``<path>.lora.down.weight``, ``<path>.lora_linear_layer.down.weight`` and the old attention
  processor form ``attn1.processor.to_q_lora.down.weight``. alpha comes from ``.alpha`` keys or
  the ``lora_adapter_metadata`` JSON that diffusers writes into the safetensors header.

Scale is ``alpha / rank``; without alpha it is 1 (alpha = rank), as in sd-scripts and peft.
kohya names replace every "." with "_", which cannot be undone by rule (``to_out_0`` vs
``ff_net_0_proj``), so names are resolved against the model being patched: every Linear and
Conv2d of the UNet and text encoder under its underscored name. UNet modules are also known by
their original LDM names (``lora_unet_input_blocks_1_1_proj_in``,
``lora_unet_middle_block_1_transformer_blocks_0_attn1_to_q``, ``lora_unet_output_blocks_…``),
which some SD 1.x trainers write and A1111 applies (its model has those names).

Applying merges ``W += weight * scale * up @ down`` into the weights in place, as A1111 does,
rather than adding forward hooks: the cost is paid once per change of LoRAs, not per step, and
the samplers see plain modules. The original weights are copied first, so restoring is exact.

LyCORIS LoHa/LoKr/OFT, DoRA and SDXL files are refused with a message saying so; they would
need other arithmetic or another model, and applying them partly would be silently wrong. A file
is called SDXL only on real evidence: a second text encoder (``lora_te2_``), several transformer
blocks per attention (``…_transformer_blocks_1_…``; SD 1.x and 2.x have one), SDXL's extra
embeddings, or ``ss_base_model_version`` starting with ``sdxl``.

torch and safetensors are imported inside functions so importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charstudio.engine.model_hash import addnet_hash, hash_cache
from charstudio.engine.pt_files import (
    RefusedPickle,
    UnreadableTorchFile,
    load_weights_only,
    misnamed_safetensors,
)
from charstudio.prompts.extra_networks import split_extra_networks

if TYPE_CHECKING:
    import torch

__all__ = [
    "LORA_EXTENSIONS",
    "TEXT_ENCODER",
    "UNET",
    "AppliedLoras",
    "LoraError",
    "LoraFile",
    "LoraLibrary",
    "LoraModule",
    "LoraPatcher",
    "LoraWeight",
    "a1111_lora_hash",
    "apply_loras",
    "load_lora",
    "lora_from_tensors",
    "lora_hashes_infotext",
    "loras_in_prompt",
    "te_unet_weights",
]

# Preference order when one folder holds the same stem in several formats.
LORA_EXTENSIONS: tuple[str, ...] = (".safetensors", ".pt", ".ckpt", ".bin")
UNET = "unet"
TEXT_ENCODER = "text_encoder"

# A tag's weight: one number for both parts, or (text encoder, UNet) from ``<lora:n:te:unet>``.
LoraWeight = float | tuple[float, float]

SHORTHASH_LENGTH = 12  # A1111's ``Lora hashes`` use the first 12 hex digits of its hash
_DEFAULT_CACHE_SIZE = 8  # loaded files kept in memory; a LoRA is 10-200 MB
_MAX_HEADER = 100 << 20  # a safetensors header larger than this is damage, not data
_PEFT_METADATA_KEY = "lora_adapter_metadata"


class LoraError(ValueError):
    """A LoRA file that cannot be used; the message names the file and the reason."""


# -- the in-memory form --------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LoraModule:
    """The low-rank update of one module: ``delta = scale * up @ down`` (reshaped to the weight).

    ``down`` is ``[rank, in]`` (Linear) or ``[rank, in, kh, kw]`` (Conv2d); ``up`` is
    ``[out, rank]`` or ``[out, rank, 1, 1]``. With ``mid`` (LoCon's CP decomposition,
    ``[rank, rank, kh, kw]``) the kernel lives in ``mid`` and down/up are 1x1.
    Tensors stay in the file's dtype on the CPU; the arithmetic is done in float32 when applied.
    """

    component: str  # UNET or TEXT_ENCODER
    path: str  # the module as the file names it: dotted (diffusers) or underscored (kohya)
    key: str  # the file's key stem, for messages (``lora_unet_..._to_q``, ``unet....to_q``)
    down: torch.Tensor
    up: torch.Tensor
    alpha: float | None = None
    mid: torch.Tensor | None = None
    rank_stabilized: bool = False  # peft ``use_rslora``: alpha / sqrt(rank)

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        # sd-scripts treats a missing or zero alpha as alpha = rank.
        alpha = self.alpha if self.alpha else float(self.rank)
        return alpha / (math.sqrt(self.rank) if self.rank_stabilized else self.rank)

    def delta_shape(self) -> tuple[int, ...]:
        """The shape the update has before it is laid onto a weight (for messages)."""
        if self.mid is not None:
            return (int(self.up.shape[0]), int(self.down.shape[1]), *map(int, self.mid.shape[2:]))
        return (int(self.up.shape[0]), int(self.down[0].numel()))

    def fits(self, shape: Sequence[int]) -> bool:
        """Whether the update can be laid onto a weight of ``shape``.

        Without ``mid`` only the output size and the flattened input size must agree, so a
        Linear-shaped update fits a 1x1 convolution (files made for models with linear
        ``proj_in`` are used on ones with conv ``proj_in`` and vice versa).
        """
        shape = tuple(int(s) for s in shape)
        if self.mid is not None:
            return self.delta_shape() == shape
        return (
            bool(shape)
            and shape[0] == self.up.shape[0]
            and math.prod(shape[1:]) == int(self.down[0].numel())
        )

    def delta(self, shape: Sequence[int], device: torch.device | str) -> torch.Tensor:
        """``scale * up @ down`` in float32 on ``device``, shaped like the target weight."""
        import torch

        down = self.down.to(device, torch.float32).flatten(1)
        up = self.up.to(device, torch.float32).flatten(1)
        if self.mid is None:
            update = up @ down
        else:
            mid = self.mid.to(device, torch.float32)
            update = torch.einsum("nmkl,in,mj->ijkl", mid, up, down)
        return (update * self.scale).reshape(tuple(shape))


@dataclass(eq=False)
class LoraFile:
    """One LoRA file, parsed. ``modules`` maps (component, module path) to its update."""

    name: str  # the file stem: what ``<lora:name:w>`` refers to
    path: Path
    modules: dict[tuple[str, str], LoraModule]
    # A1111's hash of the file (see :func:`a1111_lora_hash`); its first 12 digits go in infotext.
    a1111_hash: str
    mtime_ns: int = 0
    size: int = 0
    metadata: dict[str, str] = field(default_factory=dict)  # the safetensors header's text
    ignored_keys: tuple[str, ...] = ()  # tensors that are not LoRA weights (biases, extras)

    @property
    def shorthash(self) -> str:
        """A1111's short hash, as written in the ``Lora hashes`` infotext item."""
        return self.a1111_hash[:SHORTHASH_LENGTH]

    @property
    def identity(self) -> tuple[str, int, int]:
        """What says two loads are the same file contents: path, mtime and size."""
        return (str(self.path), self.mtime_ns, self.size)


def lora_hashes_infotext(files: Iterable[LoraFile]) -> str:
    """The value of A1111's ``Lora hashes`` item: ``name: shorthash, name2: shorthash``.

    The infotext writer adds the quotes (the value holds "," and ":"). As A1111 does, ":" and ","
    are removed from names so the value can be split again; a repeated name is listed once.
    """
    parts: list[str] = []
    seen: set[str] = set()
    for lora in files:
        alias = lora.name.replace(":", "").replace(",", "")
        if alias not in seen:
            seen.add(alias)
            parts.append(f"{alias}: {lora.shorthash}")
    return ", ".join(parts)


# -- keys ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _KeyInfo:
    component: str
    path: str
    role: str  # "down", "up", "mid" or "alpha"
    stem: str  # the key without its role suffix


_KOHYA_PREFIXES = (("lora_unet_", UNET), ("lora_te1_", TEXT_ENCODER), ("lora_te_", TEXT_ENCODER))
_KOHYA_ROLES = {
    "lora_down.weight": "down",
    "lora_up.weight": "up",
    "lora_mid.weight": "mid",
    "alpha": "alpha",
}
# Dotted (diffusers / peft) keys: module path, then the role.
_PEFT_KEY = re.compile(r"^(?P<path>.+)\.lora_(?P<ab>[AB])(?:\.[\w-]+)?\.weight$")
_PROCESSOR_KEY = re.compile(
    r"^(?P<path>.+?)(?:\.processor)?\.(?P<proj>to_q|to_k|to_v|to_out)_lora\.(?P<role>down|up)\.weight$"
)
_LAYER_KEY = re.compile(r"^(?P<path>.+)\.(?:lora|lora_linear_layer)\.(?P<role>down|up)\.weight$")
_KOHYA_STYLE_KEY = re.compile(r"^(?P<path>.+)\.lora_(?P<role>down|up|mid)\.weight$")
_ALPHA_KEY = re.compile(r"^(?P<path>.+)\.alpha$")
# The old attention-processor names of the projections they patch.
_PROCESSOR_TARGETS = {
    UNET: {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"},
    TEXT_ENCODER: {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"},
}
_DOTTED_PREFIXES = (("unet.", UNET), ("text_encoder.", TEXT_ENCODER), ("base_model.model.", None))

# Keys of networks that are not plain LoRA: their update is not up @ down.
_UNSUPPORTED = (
    (re.compile(r"hada_"), "LyCORIS LoHa"),
    (re.compile(r"lokr_"), "LyCORIS LoKr"),
    (re.compile(r"oft_|\.oft\b"), "OFT"),
    (re.compile(r"dora_scale|lora_magnitude_vector"), "DoRA"),
    (re.compile(r"\.(?:w_norm|b_norm)$"), "LyCORIS with trained norm layers"),
    (re.compile(r"\.diff(?:_b)?$"), "LyCORIS full-weight difference"),
)
_SDXL_ONLY = ("lora_te2_", "text_encoder_2.")
# UNet names only SDXL has: a second (or later) transformer block in an attention, and the
# pooled-text/size embeddings (``label_emb`` in LDM names, ``add_embedding`` in diffusers').
_SDXL_UNET = re.compile(r"transformer_blocks[._](?!0[._])\d+[._]|label_emb|add_embedding")
_BASE_MODEL_KEY = "ss_base_model_version"


def _parse_key(key: str) -> _KeyInfo | None:
    """Component, module path and role of one tensor key; None when it is not a LoRA weight."""
    for prefix, component in _KOHYA_PREFIXES:
        if key.startswith(prefix):
            name, _, tail = key[len(prefix) :].partition(".")
            role = _KOHYA_ROLES.get(tail)
            return _KeyInfo(component, name, role, prefix + name) if role and name else None

    component: str | None = None
    rest = key
    for prefix, prefix_component in _DOTTED_PREFIXES:
        if key.startswith(prefix):
            component, rest = prefix_component, key[len(prefix) :]
            break

    path: str
    role: str
    if match := _PEFT_KEY.match(rest):
        path, role = match["path"], "down" if match["ab"] == "A" else "up"
    elif match := _PROCESSOR_KEY.match(rest):
        comp = component or _component_of(match["path"])
        path = f"{match['path']}.{_PROCESSOR_TARGETS[comp][match['proj']]}"
        role = match["role"]
    elif (match := _LAYER_KEY.match(rest)) or (match := _KOHYA_STYLE_KEY.match(rest)):
        path, role = match["path"], match["role"]
    elif match := _ALPHA_KEY.match(rest):
        path, role = match["path"], "alpha"
    else:
        return None
    stem = key[: len(key) - len(rest)] + path
    return _KeyInfo(component or _component_of(path), path, role, stem)


def _component_of(path: str) -> str:
    # Un-prefixed peft keys: CLIP's modules live under text_model. (encoder. in transformers 5);
    # the UNet has no module named so.
    return TEXT_ENCODER if path.startswith(("text_model.", "encoder.")) else UNET


def _preview(items: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (", …" if len(items) > limit else "")


def _not_a_lora(label: str, keys: Sequence[str]) -> LoraError:
    """The error for a file with no LoRA weights, saying what it looks like instead."""
    if not keys:
        return LoraError(f"{label}: not a LoRA: the file holds no tensors")
    if any(k.startswith("model.diffusion_model.") for k in keys):
        what = "a full Stable Diffusion checkpoint; load it as a model"
    elif any(k.startswith("conditioner.embedders.") for k in keys):
        what = "an SDXL checkpoint"
    elif any(k in ("emb_params", "string_to_param", "clip_l", "clip_g") for k in keys):
        what = "a textual-inversion embedding; put it in embeddings/"
    elif any(k.startswith(("encoder.", "decoder.", "first_stage_model.")) for k in keys):
        what = "a VAE"
    else:
        what = (
            f"none of its {len(keys)} tensors ({_preview(list(keys))}) is a LoRA weight "
            "(lora_down/lora_up or lora_A/lora_B)"
        )
    return LoraError(f"{label}: not a LoRA: {what}")


def _sdxl_evidence(keys: Sequence[str], metadata: Mapping[str, str]) -> str | None:
    """Why a file is an SDXL LoRA, or None when nothing says so."""
    version = str(metadata.get(_BASE_MODEL_KEY) or "")
    if version.lower().startswith("sdxl"):
        return f"its metadata says {_BASE_MODEL_KEY} = {version}"
    for key in keys:
        if key.startswith(_SDXL_ONLY):
            return f"it has weights for a second text encoder ({key})"
    for key in keys:
        info = _parse_key(key)
        if info is not None and info.component == UNET and _SDXL_UNET.search(info.path):
            return f"it has weights for UNet modules only SDXL has ({info.stem})"
    return None


def _group_keys(
    keys: Sequence[str], label: str, metadata: Mapping[str, str] | None = None
) -> tuple[dict[tuple[str, str], dict[str, str]], list[str]]:
    """(component, path) -> {role: key}, and the keys that are not LoRA weights.

    Works on names alone, so a safetensors header can be checked without reading the tensors.
    Raises :class:`LoraError` for SDXL files, unsupported network types, files without LoRA
    weights and modules whose down or up factor is missing.
    """
    groups: dict[tuple[str, str], dict[str, str]] = {}
    stems: dict[tuple[str, str], str] = {}
    ignored: list[str] = []
    sdxl = _sdxl_evidence(keys, metadata or {})
    if sdxl:
        raise LoraError(f"{label}: made for SDXL: {sdxl}; this is an SD 1.5 model")
    unsupported = sorted(
        {what for k in keys for pattern, what in _UNSUPPORTED if pattern.search(k)}
    )
    if unsupported:
        raise LoraError(
            f"{label}: a {' / '.join(unsupported)} network, which cannot be applied here; "
            "only LoRA and LoCon files (lora_down/lora_up, lora_A/lora_B) can"
        )
    for key in keys:
        info = _parse_key(key)
        if info is None:
            ignored.append(key)
            continue
        target = (info.component, info.path)
        group = groups.setdefault(target, {})
        if info.role in group:  # e.g. the same module in two naming styles
            raise LoraError(f"{label}: the {info.role} factor of {info.stem} appears twice")
        group[info.role] = key
        stems.setdefault(target, info.stem)

    for target, group in list(groups.items()):
        if "down" in group and "up" in group:
            continue
        if set(group) == {"alpha"}:  # an alpha for a module the file has no weights for
            ignored.append(group["alpha"])
            del groups[target]
            continue
        lacking = " or ".join(role for role in ("down", "up") if role not in group)
        raise LoraError(
            f"{label}: {stems[target]} has no {lacking} factor; the file is incomplete or damaged"
        )
    if not groups:
        raise _not_a_lora(label, keys)
    return groups, ignored


# -- peft metadata -------------------------------------------------------------------------


def _peft_configs(metadata: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """diffusers' ``lora_adapter_metadata`` (peft LoraConfig per component: ``unet.lora_alpha``
    ...) as {component or "": config}."""
    raw = metadata.get(_PEFT_METADATA_KEY)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    configs: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        prefix, dot, name = str(key).partition(".")
        if dot and prefix in (UNET, TEXT_ENCODER):
            configs.setdefault(prefix, {})[name] = value
        else:
            configs.setdefault("", {})[str(key)] = value
    return configs


def _peft_alpha(config: Mapping[str, Any], path: str) -> float | None:
    alpha = config.get("lora_alpha")
    patterns = config.get("alpha_pattern") or {}
    if isinstance(patterns, Mapping):
        # peft matches a pattern against the end of the module name.
        for pattern, value in patterns.items():
            try:
                if re.fullmatch(rf"(?:.*\.)?(?:{pattern})", path):
                    alpha = value
                    break
            except re.error:
                continue
    return float(alpha) if isinstance(alpha, int | float) and not isinstance(alpha, bool) else None


# -- reading files -------------------------------------------------------------------------


def _is_safetensors(head: bytes) -> bool:
    # u64 little-endian header length, then the JSON header.
    return len(head) >= 9 and head[8:9] == b"{"


def _safetensors_header(head: bytes, size: int, label: str) -> dict[str, Any]:
    (length,) = struct.unpack("<Q", head[:8])
    if length > min(_MAX_HEADER, size - 8):
        raise LoraError(f"{label}: not a readable safetensors file (damaged header)")
    try:
        header = json.loads(head[8 : 8 + length])
    except ValueError as exc:
        raise LoraError(f"{label}: not a readable safetensors file ({exc})") from exc
    if not isinstance(header, dict):
        raise LoraError(f"{label}: not a readable safetensors file (damaged header)")
    return header


def _torch_load_safely(data: bytes, label: str) -> Any:
    try:
        return load_weights_only(data)
    except RefusedPickle as exc:
        # LoRA files never need a global outside torch's allow-list.
        what = f" (it references {exc.found})" if exc.found else ""
        raise LoraError(
            f"{label}: refused: loading it would need unsafe unpickling, which can run code"
            f"{what}. Only plain tensor files are read; use a .safetensors version of this LoRA."
        ) from exc
    except UnreadableTorchFile as exc:
        raise LoraError(f"{label}: not a readable PyTorch file ({exc})") from exc


def _read_tensors(path: Path, data: bytes) -> tuple[dict[str, Any], dict[str, str]]:
    """The tensors and text metadata of a safetensors or (safely) pickled file, by content."""
    import torch

    label = str(path)
    misnamed = misnamed_safetensors(path, data[:9], label)
    if misnamed:
        raise LoraError(misnamed)
    if _is_safetensors(data[:9]):
        from safetensors import SafetensorError
        from safetensors.torch import load

        header = _safetensors_header(data, len(data), label)
        meta = header.get("__metadata__")
        metadata = {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}
        try:
            return dict(load(data)), metadata
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise LoraError(f"{label}: not a readable safetensors file ({exc})") from exc
    if data[:2] == b"PK" or data[:1] == b"\x80":  # zip (torch.save) or legacy pickle
        raw = _torch_load_safely(data, label)
        while isinstance(raw, Mapping) and isinstance(raw.get("state_dict"), Mapping):
            raw = raw["state_dict"]
        if not isinstance(raw, Mapping):
            raise LoraError(f"{label}: not a LoRA: the file holds a {type(raw).__name__}")
        return {str(k): v for k, v in raw.items() if isinstance(v, torch.Tensor)}, {}
    raise LoraError(
        f"{label}: not a LoRA file: it is neither .safetensors nor a PyTorch file "
        "(or it is damaged)"
    )


def lora_from_tensors(
    tensors: Mapping[str, torch.Tensor],
    name: str,
    path: Path,
    *,
    a1111_hash: str = "",
    metadata: Mapping[str, str] | None = None,
    mtime_ns: int = 0,
    size: int = 0,
) -> LoraFile:
    """Parse a loaded file's tensors into a :class:`LoraFile`. Raises :class:`LoraError`."""
    metadata = dict(metadata or {})
    label = str(path)
    groups, ignored = _group_keys(list(tensors), label, metadata)
    configs = _peft_configs(metadata)
    modules: dict[tuple[str, str], LoraModule] = {}
    for (component, dotted_path), roles in groups.items():
        down, up = tensors[roles["down"]], tensors[roles["up"]]
        mid = tensors[roles["mid"]] if "mid" in roles else None
        stem = _parse_key(roles["down"])
        key = stem.stem if stem else dotted_path
        rank = int(down.shape[0]) if down.ndim >= 2 else 0
        # up's second dimension is the rank (its kernel, if any, must be 1x1).
        if rank == 0 or up.ndim < 2 or up.ndim != down.ndim or up.flatten(1).shape[1] != rank:
            raise LoraError(
                f"{label}: {key}: the factors do not fit together (down "
                f"{tuple(down.shape)}, up {tuple(up.shape)}); the file is damaged"
            )
        if mid is not None and (mid.ndim != 4 or tuple(mid.shape[:2]) != (rank, rank)):
            raise LoraError(f"{label}: {key}: lora_mid {tuple(mid.shape)} does not fit rank {rank}")
        alpha: float | None = None
        rank_stabilized = False
        if "alpha" in roles:
            alpha = float(tensors[roles["alpha"]].float().reshape(-1)[0])
        else:
            config = configs.get(component) or configs.get("")
            if config:
                alpha = _peft_alpha(config, dotted_path)
                rank_stabilized = bool(config.get("use_rslora"))
        modules[(component, dotted_path)] = LoraModule(
            component, dotted_path, key, down, up, alpha, mid, rank_stabilized
        )
    return LoraFile(
        name=name,
        path=path,
        modules=modules,
        a1111_hash=a1111_hash,
        mtime_ns=mtime_ns,
        size=size,
        metadata=metadata,
        ignored_keys=tuple(ignored),
    )


def a1111_lora_hash(
    path: Path,
    data: bytes,
    metadata: Mapping[str, str],
    stat: os.stat_result,
    *,
    cache_file: Path | None = None,
) -> str:
    """The hash A1111 keeps for a LoRA file (``Lora hashes`` shows its first 12 digits):
    ``sshs_model_hash`` from a safetensors file's metadata when present, else kohya's "addnet"
    hash for a ``.safetensors`` file (the sha256 of the bytes after its header), else the
    sha256 of the whole file. Computed from ``data`` (the file's bytes) and cached, like model
    hashes, by path, size and mtime (``stat``, taken before the bytes were read)."""
    given = str(metadata.get("sshs_model_hash") or "").strip()
    if given:
        return given
    kind = "addnet" if path.suffix.lower() == ".safetensors" else "sha256"
    cache = hash_cache(cache_file)
    digest = cache.get(path, kind, stat)
    if digest is None:
        digest = addnet_hash(data) if kind == "addnet" else hashlib.sha256(data).hexdigest()
        cache.put(path, kind, stat, digest)
    return digest


def load_lora(
    path: Path | str, *, name: str | None = None, hash_cache_file: Path | None = None
) -> LoraFile:
    """Read one LoRA file; its name is the file stem unless given. Raises :class:`LoraError`.

    The file is read once: the hash (:func:`a1111_lora_hash`, cached in ``hash_cache_file``,
    by default the model hash cache) and the tensors come from the same bytes, so the hash in
    an infotext is the hash of the weights that were used even if the file is being replaced.
    """
    path = Path(path)
    if path.suffix.lower() not in LORA_EXTENSIONS:
        raise LoraError(f"{path}: unsupported LoRA file type {path.suffix!r}")
    try:
        st = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        raise LoraError(f"{path}: cannot be read ({exc})") from exc
    if not data:  # files appear empty while a copy is under way
        raise LoraError(f"{path}: the file is empty")
    tensors, metadata = _read_tensors(path, data)
    digest = a1111_lora_hash(path, data, metadata, st, cache_file=hash_cache_file)
    del data
    return lora_from_tensors(
        tensors,
        name or path.stem,
        path,
        a1111_hash=digest,
        metadata=metadata,
        mtime_ns=st.st_mtime_ns,
        size=st.st_size,
    )


def _check_file(path: Path) -> LoraError | None:
    """A cheap check of a .safetensors file from its header alone (no tensors read)."""
    label = str(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if size == 0:
                return LoraError(f"{label}: the file is empty")
            if len(head) < 8:
                return LoraError(f"{label}: not a readable safetensors file (too short)")
            (length,) = struct.unpack("<Q", head)
            head += fh.read(min(length, _MAX_HEADER + 1))
    except OSError as exc:
        return LoraError(f"{label}: cannot be read ({exc})")
    if not _is_safetensors(head):
        misnamed = misnamed_safetensors(path, head, label)
        return LoraError(misnamed or f"{label}: not a readable safetensors file")
    try:
        header = _safetensors_header(head, size, label)
        meta = header.get("__metadata__")
        metadata = {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}
        _group_keys([k for k in header if k != "__metadata__"], label, metadata)
    except LoraError as exc:
        return exc
    return None


# -- the library ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _FileKey:
    path: Path
    mtime_ns: int
    size: int


class LoraLibrary:
    """The LoRAs a job can use: every LoRA file in ``folders`` (searched recursively).

    Names are file stems. When several files share a stem the first found wins: folders in the
    order given (a project's ``loras/`` before the user's folder), then shallower paths, then
    ``.safetensors`` over ``.pt`` over ``.ckpt`` over ``.bin``. Folders are rescanned on every
    query, so a file saved by a training run is found at once. Files are parsed on first use and
    cached by path, mtime and size; only the most recently used few stay in memory, since a
    LoRA can be 200 MB. Thread-safe.
    """

    def __init__(
        self,
        folders: Sequence[Path | str],
        *,
        cache_size: int = _DEFAULT_CACHE_SIZE,
        hash_cache_file: Path | None = None,
    ) -> None:
        self.folders = [Path(f) for f in folders]
        self.cache_size = max(1, cache_size)
        self.hash_cache_file = hash_cache_file
        self._lock = threading.RLock()
        self._loaded: OrderedDict[Path, tuple[_FileKey, LoraFile | LoraError]] = OrderedDict()
        self._checked: dict[Path, tuple[_FileKey, LoraError | None]] = {}

    def paths(self) -> dict[str, Path]:
        """Name -> file for every LoRA file found (usable or not), first one found wins."""
        found: dict[str, Path] = {}
        for folder in self.folders:
            if not folder.is_dir():
                continue
            candidates: list[tuple[int, str, str, int, Path]] = []
            for root, dirs, files in os.walk(folder, followlinks=True):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                rel = Path(root).relative_to(folder)
                for filename in files:
                    path = Path(root, filename)
                    ext = path.suffix.lower()
                    if filename.startswith(".") or ext not in LORA_EXTENSIONS:
                        continue
                    rank = LORA_EXTENSIONS.index(ext)
                    candidates.append((len(rel.parts), str(rel), path.stem, rank, path))
            candidates.sort(key=lambda c: c[:4])
            for *_, path in candidates:
                found.setdefault(path.stem, path)
        return found

    def resolve(self, name: str) -> str | None:
        """The library's spelling of ``name``: exact, else a unique case-insensitive match."""
        paths = self.paths()
        if name in paths:
            return name
        folded = [n for n in paths if n.casefold() == name.casefold()]
        return folded[0] if len(folded) == 1 else None

    @staticmethod
    def _key(path: Path) -> _FileKey | LoraError:
        try:
            st = path.stat()
        except OSError as exc:
            return LoraError(f"{path}: cannot be read ({exc})")
        return _FileKey(path, st.st_mtime_ns, st.st_size)

    def _load(self, path: Path) -> LoraFile | LoraError:
        key = self._key(path)
        if isinstance(key, LoraError):
            return key
        with self._lock:
            cached = self._loaded.get(path)
            if cached is not None and cached[0] == key:
                self._loaded.move_to_end(path)
                return cached[1]
        result: LoraFile | LoraError
        try:
            result = load_lora(path, hash_cache_file=self.hash_cache_file)
        except LoraError as exc:
            result = exc
        # Cache under the mtime/size the file had when it was read, not the earlier stat.
        if isinstance(result, LoraFile):
            key = _FileKey(path, result.mtime_ns, result.size)
        with self._lock:
            self._loaded[path] = (key, result)
            self._loaded.move_to_end(path)
            while len(self._loaded) > self.cache_size:
                self._loaded.popitem(last=False)
        return result

    def _problem(self, path: Path) -> LoraError | None:
        """Why the file cannot be used, as far as is known without parsing it in full:
        safetensors files are judged by their header; pickles must be loaded to be judged."""
        key = self._key(path)
        if isinstance(key, LoraError):
            return key
        with self._lock:
            loaded = self._loaded.get(path)
            if loaded is not None and loaded[0] == key:
                return loaded[1] if isinstance(loaded[1], LoraError) else None
            checked = self._checked.get(path)
            if checked is not None and checked[0] == key:
                return checked[1]
        if path.suffix.lower() == ".safetensors":
            problem = _check_file(path)
        else:
            result = self._load(path)
            problem = result if isinstance(result, LoraError) else None
        with self._lock:
            self._checked[path] = (key, problem)
        return problem

    def get(self, name: str) -> LoraFile:
        """The LoRA called ``name``; KeyError if no file has that name, :class:`LoraError` if
        the file cannot be used."""
        resolved = self.resolve(name)
        if resolved is None:
            folders = ", ".join(map(str, self.folders)) or "no folders"
            raise KeyError(f"no LoRA named {name!r} in {folders}")
        loaded = self._load(self.paths()[resolved])
        if isinstance(loaded, LoraError):
            raise loaded
        return loaded

    def errors(self) -> dict[str, str]:
        """Name -> why its file cannot be used, for every unusable file found."""
        out: dict[str, str] = {}
        for name, path in self.paths().items():
            problem = self._problem(path)
            if problem is not None:
                out[name] = str(problem)
        return out

    def missing(self, names: Iterable[str]) -> list[str]:
        """The names no usable file provides, in the order given, without repeats."""
        paths = self.paths()
        out: list[str] = []
        for name in names:
            if name in out:
                continue
            resolved = self.resolve(name)
            if resolved is None or self._problem(paths[resolved]) is not None:
                out.append(name)
        return out

    def for_prompt(self, prompt: str) -> list[tuple[LoraFile, LoraWeight]]:
        """The prompt's ``<lora:…>`` tags as loaded files with their weights, in order.

        KeyError for a name no file has, :class:`LoraError` for an unusable file, ValueError
        for a malformed weight: A1111 also fails the generation rather than ignore a tag.
        """
        return [(self.get(name), weight) for name, weight in loras_in_prompt(prompt)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.resolve(name) is not None


# -- prompts -------------------------------------------------------------------------------


def te_unet_weights(weight: LoraWeight) -> tuple[float, float]:
    """(text encoder weight, UNet weight) of a tag's weight."""
    if isinstance(weight, tuple):
        te, unet = weight
        return float(te), float(unet)
    return float(weight), float(weight)


def _tag_number(value: str, tag: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{tag}: {value.strip()!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{tag}: {value.strip()!r} is not a finite number")
    return number


def loras_in_prompt(prompt: str) -> list[tuple[str, LoraWeight]]:
    """The ``<lora:name:w>`` (and ``<lyco:…>``) tags of a prompt as (name, weight), in order.

    A1111's rules: no number means 1.0; ``<lora:name:a:b>`` puts ``a`` on the text encoder and
    ``b`` on the UNet, and the named forms ``te=a`` / ``unet=b`` override them. The weight is a
    float when both parts are equal, else the pair (te, unet); see :func:`te_unet_weights`.
    A1111's ``dyn=`` (use only part of the rank) is accepted and ignored. Repeated tags are kept:
    each adds its update. ValueError for a weight that is not a number.
    """
    _, networks = split_extra_networks(prompt)
    out: list[tuple[str, LoraWeight]] = []
    for network in networks:
        if network.kind.lower() not in ("lora", "lyco"):
            continue
        tag = f"<{network.kind}:{':'.join((network.name, *network.args))}>"
        name = network.name.strip()
        if not name:
            raise ValueError(f"{tag}: the tag names no LoRA")
        positional = [a for a in network.args if "=" not in a]
        named = {k.strip(): v for k, _, v in (a.partition("=") for a in network.args if "=" in a)}
        te = _tag_number(positional[0], tag) if positional else 1.0
        te = _tag_number(named["te"], tag) if "te" in named else te
        unet = _tag_number(positional[1], tag) if len(positional) > 1 else te
        unet = _tag_number(named["unet"], tag) if "unet" in named else unet
        out.append((name, te if te == unet else (te, unet)))
    return out


# -- applying ------------------------------------------------------------------------------


# diffusers -> LDM names of the UNet's modules: inside a ResNet block, and outside any block.
_LDM_RESNET = {
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_LDM_TOP = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_out": "out.2",
}


def _ldm_blocks(unet: torch.nn.Module) -> dict[str, tuple[str, bool]]:
    """diffusers module path -> (its LDM path, whether it is a ResNet block), read from the
    UNet's own structure, so any number of layers per block is numbered right.

    LDM numbers ``input_blocks`` from 1 (0 is ``conv_in``): each down block's layers (ResNet at
    ``.0``, attention at ``.1``), then its downsampler (``.0.op``); ``middle_block`` is ResNet,
    attention, ResNet; ``output_blocks`` from 0, the upsampler sharing the last layer's block
    (``.1.conv``, or ``.2.conv`` after an attention).
    """
    out: dict[str, tuple[str, bool]] = {name: (ldm, False) for name, ldm in _LDM_TOP.items()}

    def layers(prefix: str, block: Any, first: int, ldm: str) -> int:
        attentions = getattr(block, "attentions", None) or ()
        index = first
        for j in range(len(getattr(block, "resnets", ()) or ())):
            out[f"{prefix}.resnets.{j}"] = (f"{ldm}.{index}.0", True)
            if j < len(attentions):
                out[f"{prefix}.attentions.{j}"] = (f"{ldm}.{index}.1", False)
            index += 1
        return index

    index = 1
    for b, block in enumerate(getattr(unet, "down_blocks", None) or ()):
        index = layers(f"down_blocks.{b}", block, index, "input_blocks")
        if getattr(block, "downsamplers", None):
            out[f"down_blocks.{b}.downsamplers.0.conv"] = (f"input_blocks.{index}.0.op", False)
            index += 1
    mid = getattr(unet, "mid_block", None)
    if mid is not None:
        for j in range(len(getattr(mid, "resnets", ()) or ())):
            out[f"mid_block.resnets.{j}"] = (f"middle_block.{2 * j}", True)
        for j in range(len(getattr(mid, "attentions", None) or ())):
            out[f"mid_block.attentions.{j}"] = (f"middle_block.{2 * j + 1}", False)
    index = 0
    for b, block in enumerate(getattr(unet, "up_blocks", None) or ()):
        index = layers(f"up_blocks.{b}", block, index, "output_blocks")
        if getattr(block, "upsamplers", None):
            slot = 2 if getattr(block, "attentions", None) else 1
            out[f"up_blocks.{b}.upsamplers.0.conv"] = (
                f"output_blocks.{index - 1}.{slot}.conv",
                False,
            )
    return out


def _ldm_name(name: str, blocks: Mapping[str, tuple[str, bool]]) -> str | None:
    """The LDM name of a UNet module (diffusers path), or None when it has none."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        found = blocks.get(".".join(parts[:cut]))
        if found is None:
            continue
        ldm, resnet = found
        rest = parts[cut:]
        if resnet:
            if not rest or rest[0] not in _LDM_RESNET:
                return None
            rest = [_LDM_RESNET[rest[0]], *rest[1:]]
        return ".".join([ldm, *rest])
    return None


class _ModelIndex:
    """The patchable modules (Linear, Conv2d) of a UNet and text encoder, by both spellings.

    CLIP's modules are listed with and without the ``text_model.`` level: files name them with
    it (transformers 4 had it), transformers 5's CLIPTextModel has none. UNet modules are also
    listed under their LDM names (``input_blocks.1.1.proj_in``).
    """

    def __init__(self, unet: torch.nn.Module, text_encoder: torch.nn.Module | None) -> None:
        import torch

        self.dotted: dict[str, dict[str, torch.nn.Module]] = {}
        self.underscored: dict[str, dict[str, torch.nn.Module | None]] = {}
        ldm_blocks = _ldm_blocks(unet)
        for component, model in ((UNET, unet), (TEXT_ENCODER, text_encoder)):
            dotted: dict[str, torch.nn.Module] = {}
            underscored: dict[str, torch.nn.Module | None] = {}
            for name, module in model.named_modules() if model is not None else ():
                if not isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
                    continue
                names = [name]
                if component == TEXT_ENCODER:
                    bare = name.removeprefix("text_model.")
                    names = [bare, "text_model." + bare]
                elif ldm := _ldm_name(name, ldm_blocks):
                    names.append(ldm)
                for alias in names:
                    dotted.setdefault(alias, module)
                    flat = alias.replace(".", "_")
                    # Two modules with one underscored name would be ambiguous; none such
                    # exists in SD 1.x, but a match must never be a guess.
                    known = underscored.get(flat, module)
                    underscored[flat] = module if known is module else None
            self.dotted[component] = dotted
            self.underscored[component] = underscored

    def lookup(self, component: str, path: str) -> torch.nn.Module | None:
        module = self.dotted.get(component, {}).get(path)
        if module is None:
            module = self.underscored.get(component, {}).get(path.replace(".", "_"))
        return module


_SDXL_CONTEXT = 2048  # the width of the text SDXL's cross-attention reads
_SD2_WIDTH = 1024  # OpenCLIP-H: SD 2.x's text width, read by its cross-attention too


def _family_guess(lora: LoraFile) -> str | None:
    """The model family a LoRA that fits nothing was made for, when something says so: its
    metadata, or the width of the text its cross-attention or text encoder reads."""
    # (A file whose metadata says SDXL never gets here: loading refuses it.)
    version = str(lora.metadata.get(_BASE_MODEL_KEY) or "").lower()
    if version.startswith("sd_v2") or str(lora.metadata.get("ss_v2") or "").lower() == "true":
        return "SD 2.x"
    reads: set[int] = set()
    for module in lora.modules.values():
        text_side = (
            re.search(r"attn2[._]to_[kv]$", module.path)
            if module.component == UNET
            else re.search(r"self_attn[._][qkv]_proj$", module.path)
        )
        if text_side and module.down.ndim >= 2:
            reads.add(int(module.down.shape[1]))
    if _SDXL_CONTEXT in reads:
        return "SDXL"
    if _SD2_WIDTH in reads:
        return "SD 2.x"
    return None


def _no_fit_error(
    lora: LoraFile, missing: list[str], wrong: list[tuple[LoraModule, tuple[int, ...]]]
) -> LoraError:
    parts = []
    if missing:
        parts.append(f"{len(missing)} not in the model (such as {missing[0]})")
    if wrong:
        module, shape = wrong[0]
        parts.append(
            f"{len(wrong)} with other shapes (such as {module.key}: {module.delta_shape()} in "
            f"the file, {shape} in the model)"
        )
    guess = _family_guess(lora)
    return LoraError(
        f"{lora.path}: none of its {len(lora.modules)} modules fits this model: "
        f"{'; '.join(parts)}. It was made for a different model" + (f" ({guess}?)" if guess else "")
    )


@dataclass(eq=False)
class AppliedLoras:
    """LoRAs merged into a model's weights, with the original weights kept to restore them."""

    loras: tuple[tuple[LoraFile, LoraWeight], ...]
    # File name -> its modules that were skipped: not in the model, or with other shapes.
    unmatched: dict[str, list[str]] = field(default_factory=dict)
    weights_changed: int = 0
    _backups: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list, repr=False)

    @property
    def restored(self) -> bool:
        return not self._backups

    def restore(self) -> None:
        """Put back the exact original weights (a no-op the second time)."""
        _restore(self._backups)
        self._backups = []


def _restore(backups: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    import torch

    with torch.no_grad():
        for weight, original in reversed(backups):
            weight.copy_(original)


def _apply(index: _ModelIndex, loras: Sequence[tuple[LoraFile, LoraWeight]]) -> AppliedLoras:
    import torch

    # Resolve everything first, so a file that does not fit fails before any weight changes.
    plan: dict[int, tuple[torch.Tensor, list[tuple[LoraModule, float]]]] = {}
    unmatched: dict[str, list[str]] = {}
    for lora, weight in loras:
        te_weight, unet_weight = te_unet_weights(weight)
        missing: list[str] = []
        wrong: list[tuple[LoraModule, tuple[int, ...]]] = []
        fitting: list[tuple[LoraModule, torch.Tensor]] = []
        for module in lora.modules.values():
            target = index.lookup(module.component, module.path)
            if target is None:
                missing.append(module.key)
            elif not module.fits(target.weight.shape):
                wrong.append((module, tuple(int(s) for s in target.weight.shape)))
            else:
                fitting.append((module, target.weight))
        if not fitting:
            raise _no_fit_error(lora, missing, wrong)
        if missing or wrong:
            skipped = missing + [f"{m.key} (shape {m.delta_shape()} vs {s})" for m, s in wrong]
            unmatched.setdefault(lora.name, []).extend(skipped)
        for module, param in fitting:
            multiplier = te_weight if module.component == TEXT_ENCODER else unet_weight
            if multiplier != 0:
                plan.setdefault(id(param), (param, []))[1].append((module, multiplier))

    backups: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for param, updates in plan.values():
                # The copy lives on the CPU: it is only read back on restore, and GPU memory is
                # what an 8 GB card runs out of.
                backups.append((param, param.detach().to("cpu", copy=True)))
                # All updates of one weight are summed in float32 and added once, so fp16
                # weights are rounded once and the result does not depend on the LoRAs' order.
                total = torch.zeros(param.shape, dtype=torch.float32, device=param.device)
                for module, multiplier in updates:
                    total.add_(module.delta(param.shape, param.device), alpha=multiplier)
                param.copy_((param.float() + total).to(param.dtype))
    except BaseException:
        _restore(backups)
        raise
    return AppliedLoras(tuple(loras), unmatched, len(backups), backups)


def apply_loras(
    unet: torch.nn.Module,
    text_encoder: torch.nn.Module | None,
    loras: Sequence[tuple[LoraFile, LoraWeight]],
) -> AppliedLoras:
    """Merge ``loras`` (file, weight) into the models' weights in place; restore with
    :meth:`AppliedLoras.restore`. Raises :class:`LoraError`, before changing anything, for a
    file none of whose modules fits these models. Use :class:`LoraPatcher` to switch sets."""
    return _apply(_ModelIndex(unet, text_encoder), list(loras))


class LoraPatcher:
    """The LoRAs currently merged into one loaded model (keep one per model).

    :meth:`set` does nothing when asked for the same files (path, mtime, size) with the same
    weights as now; otherwise it restores the original weights and applies the new set, so
    LoRAs never stack up across jobs. Thread-safe.
    """

    def __init__(self, unet: torch.nn.Module, text_encoder: torch.nn.Module | None) -> None:
        self.unet = unet
        self.text_encoder = text_encoder
        self._lock = threading.Lock()
        self._index: _ModelIndex | None = None
        self._applied: AppliedLoras | None = None
        self._key: tuple[Any, ...] = ()

    @property
    def applied(self) -> AppliedLoras | None:
        return self._applied

    def set(self, loras: Sequence[tuple[LoraFile, LoraWeight]]) -> AppliedLoras | None:
        """Make ``loras`` the merged set; returns what is applied (None for an empty set)."""
        loras = list(loras)
        key = tuple((lora.identity, te_unet_weights(weight)) for lora, weight in loras)
        with self._lock:
            if key == self._key:
                return self._applied
            self._clear()
            if loras:
                if self._index is None:
                    self._index = _ModelIndex(self.unet, self.text_encoder)
                self._applied = _apply(self._index, loras)
                self._key = key
            return self._applied

    def clear(self) -> None:
        """Restore the original weights."""
        with self._lock:
            self._clear()

    def _clear(self) -> None:
        if self._applied is not None:
            self._applied.restore()
        self._applied = None
        self._key = ()
