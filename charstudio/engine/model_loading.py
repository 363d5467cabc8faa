"""Load Stable Diffusion 1.x models the way artists have them, with no network.

Sources, in the order they are recognised:

* a single-file checkpoint (``.safetensors``, ``.ckpt``/``.pt``) in the original LDM key layout
  (``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.transformer.*``), the
  form in which checkpoints are shared. The keys are converted with diffusers' own LDM
  conversion helpers and the components are built from the SD 1.5 configs shipped in
  ``resources/sd15``, so nothing is fetched from the Hub. Pickled checkpoints go through
  ``torch.load(weights_only=True)`` only;
* a diffusers model folder (``model_index.json`` with ``unet/``, ``vae/``, ``text_encoder/``);
* a Hugging Face Hub id such as ``runwayml/stable-diffusion-v1-5``, only when online.

:class:`ModelCache` keeps one model resident between jobs and frees it when another is asked for.
torch, diffusers and transformers are imported inside the functions that need them so that
importing this module (e.g. when the window opens) stays cheap.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charstudio.engine.model_hash import model_hash as compute_model_hash
from charstudio.engine.pt_files import (
    RefusedPickle,
    UnreadableTorchFile,
    load_weights_only,
    misnamed_safetensors,
)
from charstudio.jobs.protocol import JobError
from charstudio.resources import resource_path

if TYPE_CHECKING:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

__all__ = [
    "CorruptCheckpointError",
    "ModelCache",
    "ModelLoadError",
    "ModelNotFoundError",
    "NotSD1CheckpointError",
    "SD15Components",
    "UnsafeCheckpointError",
    "load_sd15",
    "read_state_dict",
    "sd15_config",
]

COMPONENTS = ("unet", "vae", "text_encoder", "scheduler")
_CONFIG_FILES = {
    "unet": "unet/config.json",
    "vae": "vae/config.json",
    "text_encoder": "text_encoder/config.json",
    "scheduler": "scheduler/scheduler_config.json",
}

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

# Checkpoints saved with old transformers lack the ``text_model.`` level; A1111 renames these
# prefixes the same way before loading.
_OLD_CLIP_PREFIXES = {
    CLIP_PREFIX + part: CLIP_PREFIX + "text_model." + part
    for part in ("embeddings.", "encoder.", "final_layer_norm.")
}

# Old PyTorch Lightning .ckpt files pickle this callback class (e.g. the original sd-v1-4.ckpt).
# A1111 allows it too; a behaviourless stand-in receives its state, so nothing runs.
_LIGHTNING_CALLBACK = "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelLoadError(JobError):
    """A model could not be loaded; the message is meant for the user."""


class ModelNotFoundError(ModelLoadError, FileNotFoundError):
    """The file or folder does not exist (and is not a usable Hub id)."""


class NotSD1CheckpointError(ModelLoadError):
    """The file holds something other than a Stable Diffusion 1.x model."""


class UnsafeCheckpointError(ModelLoadError):
    """A pickled checkpoint needs code execution to load, which is refused."""


class CorruptCheckpointError(ModelLoadError):
    """The file is truncated, damaged or not a checkpoint format at all."""


class _LightningCallbackStandIn:
    """Receives the state of a pickled Lightning ``ModelCheckpoint``; does nothing."""


@dataclass(eq=False)
class SD15Components:
    """The loaded networks of one SD 1.x model and what infotexts say about it."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    model_hash: str | None  # A1111 "Model hash" (sha256[:10]); None for folders and Hub ids
    name: str  # A1111 "Model" (the file name without extension)
    source: Path | str  # the file, folder or Hub id it came from
    kind: str  # "safetensors", "ckpt", "diffusers" or "hub"
    scheduler_config: dict[str, Any] = field(default_factory=dict)
    vae_source: Path | None = None
    vae_hash: str | None = None  # A1111 "VAE hash" of a separate VAE file

    @property
    def vae_name(self) -> str | None:
        """A1111 "VAE" value: the separate VAE's file name, if one was given."""
        return self.vae_source.name if self.vae_source is not None else None


# -- configs ------------------------------------------------------------------------------


def sd15_config(
    component: str,
    *,
    config_dir: Path | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The config of one SD 1.5 component, from ``resources/sd15`` unless another folder is given.

    ``overrides[component]`` is merged on top (tests use it to describe tiny models).
    """
    if component not in _CONFIG_FILES:
        raise ValueError(f"unknown SD 1.5 component {component!r}; expected one of {COMPONENTS}")
    folder = Path(config_dir) if config_dir is not None else resource_path("sd15")
    config = json.loads((folder / _CONFIG_FILES[component]).read_text(encoding="utf-8"))
    if overrides and component in overrides:
        config.update(overrides[component])
    return config


def _model_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    # Bookkeeping keys ("_class_name", "architectures", ...) are not constructor arguments.
    skip = {"architectures", "model_type", "torch_dtype", "dtype", "transformers_version"}
    return {k: v for k, v in config.items() if not k.startswith("_") and k not in skip}


# -- reading files ------------------------------------------------------------------------


def _resolve_dtype(dtype: torch.dtype | str | None, device: str | torch.device) -> torch.dtype:
    import torch

    if dtype is None:
        # Half precision is what GPUs are fast at; CPUs lack fast fp16 kernels.
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    if isinstance(dtype, str):
        aliases = {"fp16": "float16", "half": "float16", "bf16": "bfloat16", "fp32": "float32"}
        resolved = getattr(torch, aliases.get(dtype, dtype), None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}")
        return resolved
    return dtype


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` or pickled PyTorch checkpoint file, on the CPU.

    The format is recognised from the content, not the extension. Pickles load only through
    ``torch.load(weights_only=True)``. A ``state_dict`` wrapper (Lightning ``.ckpt``) is removed;
    non-tensor entries (step counters, callbacks) are dropped.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"model file not found: {path}")
    with open(path, "rb") as file:
        head = file.read(9)
    misnamed = misnamed_safetensors(path, head)
    if misnamed:
        raise CorruptCheckpointError(misnamed)
    # Safetensors first: its u64 header length may start with the byte 0x80, as a pickle does.
    if len(head) == 9 and head[8:9] == b"{":  # u64 header length, then the JSON header
        raw: Any = _load_safetensors(path)
    elif head[:2] == b"PK" or head[:1] == b"\x80":  # zip (torch.save) or legacy pickle
        raw = _torch_load_safely(path)
    else:
        raise CorruptCheckpointError(
            f"{path.name} is not a model file: it is neither a .safetensors nor a PyTorch "
            "checkpoint (or it is empty or damaged)"
        )
    while isinstance(raw, Mapping) and isinstance(raw.get("state_dict"), Mapping):
        raw = raw["state_dict"]
    if isinstance(raw, Mapping) and "string_to_param" in raw:  # A1111 embedding .pt
        raise NotSD1CheckpointError(
            "this is not a Stable Diffusion 1.x checkpoint: it looks like a textual inversion "
            "embedding; put it in embeddings/"
        )
    if not isinstance(raw, Mapping):
        raise NotSD1CheckpointError(
            f"this is not a Stable Diffusion 1.x checkpoint: {path.name} holds a "
            f"{type(raw).__name__}, not a dictionary of weights"
        )
    return {str(k): v for k, v in raw.items() if isinstance(v, torch.Tensor)}


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CorruptCheckpointError(
            f"{path.name} is damaged or incomplete (an interrupted download?): {exc}"
        ) from exc


def _torch_load_safely(path: Path) -> Any:
    stand_in = [(_LightningCallbackStandIn, _LIGHTNING_CALLBACK)]
    try:
        return load_weights_only(path, allowed=stand_in)
    except RefusedPickle as exc:
        what = f" (it references {exc.found})" if exc.found else ""
        raise UnsafeCheckpointError(
            f"refusing to load {path.name}: it contains Python objects that could run code "
            f"when unpickled{what}. Only plain weights are loaded from .ckpt files; use a "
            ".safetensors version of this model instead."
        ) from exc
    except UnreadableTorchFile as exc:
        raise CorruptCheckpointError(
            f"{path.name} is damaged or incomplete (an interrupted download?): {exc}"
        ) from exc


# -- recognising what a file holds ---------------------------------------------------------


def _what_else(keys: list[str]) -> str | None:
    """A short description of a non-SD1 file from its keys, or None when nothing matches."""
    if any(k.startswith("conditioner.embedders.") for k in keys):
        return "it looks like an SDXL model"
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return "it looks like a Stable Diffusion 2.x model (OpenCLIP text encoder)"
    if any(k.startswith(UNET_PREFIX) for k in keys):
        return None  # a full LDM checkpoint; what is missing from it is reported elsewhere
    if any(
        k.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_"))
        or any(part in k for part in (".lora_down.", ".lora_A.", ".lora.", ".hada_w1_"))
        for k in keys
    ):
        return "it looks like a LoRA; put it in loras/ and use <lora:name:weight> in the prompt"
    if "emb_params" in keys or "clip_l" in keys:
        return "it looks like a textual inversion embedding; put it in embeddings/"
    if any(k.startswith(("encoder.", "decoder.", "vae.", VAE_PREFIX)) for k in keys):
        return "it looks like a VAE on its own; choose it as the VAE instead"
    if any(k.startswith(("down_blocks.", "conv_in.", "time_embedding.")) for k in keys):
        return "it looks like a single diffusers component; load the whole diffusers folder"
    return None


def _check_sd1_layout(state: Mapping[str, Any], name: str, *, need_vae: bool) -> None:
    keys = list(state)
    other = _what_else(keys)
    if other is not None:
        raise NotSD1CheckpointError(f"this is not a Stable Diffusion 1.x checkpoint: {other}")
    missing = []
    if not any(k.startswith(UNET_PREFIX) for k in keys):
        missing.append("UNet (model.diffusion_model.*)")
    if not any(k.startswith(CLIP_PREFIX) for k in keys):
        missing.append("CLIP text encoder (cond_stage_model.transformer.*)")
    if need_vae and not any(k.startswith(VAE_PREFIX) for k in keys):
        missing.append("VAE (first_stage_model.*)")
    if missing:
        sample = ", ".join(keys[:3]) or "no tensors at all"
        raise NotSD1CheckpointError(
            f"this is not a Stable Diffusion 1.x checkpoint: {name} has no "
            f"{' and no '.join(missing)}; it holds {len(keys)} tensors such as {sample}"
        )


# -- building components -------------------------------------------------------------------


@contextlib.contextmanager
def _empty_weights() -> Iterator[None]:
    """Create parameters on the meta device: real values come from the checkpoint anyway,
    and random-initialising 1 B parameters first would cost seconds."""
    try:
        from accelerate import init_empty_weights
    except ImportError:  # pragma: no cover - accelerate is a dependency; fall back to real init
        yield
        return
    # Buffers stay real: CLIP's position_ids is a non-persistent buffer no file provides.
    with init_empty_weights(include_buffers=False):
        yield


def _load_weights(
    model: torch.nn.Module,
    weights: Mapping[str, torch.Tensor],
    *,
    what: str,
    name: str,
    device: torch.device | str,
    dtype: torch.dtype,
) -> None:
    """Assign converted weights into a model built with empty weights, checking shapes first."""
    import torch

    expected = model.state_dict()
    # Shapes first: a different architecture is the likelier story than a truncated one.
    for key, target in expected.items():
        value = weights.get(key)
        if value is not None and tuple(value.shape) != tuple(target.shape):
            raise NotSD1CheckpointError(
                f"this is not a Stable Diffusion 1.x checkpoint: the {what} in {name} does not "
                f"have SD 1.5's shapes ({key}: {tuple(value.shape)} in the file, "
                f"{tuple(target.shape)} expected)"
            )
    missing = [k for k in expected if k not in weights]
    if missing:
        raise NotSD1CheckpointError(
            f"this is not a Stable Diffusion 1.x checkpoint: the {what} in {name} is incomplete "
            f"({len(missing)} of {len(expected)} tensors missing, e.g. {missing[0]})"
        )
    ready: dict[str, torch.Tensor] = {}
    for key in expected:
        value = weights[key]
        cast = value.to(device=device, dtype=dtype if value.is_floating_point() else value.dtype)
        if cast is value:
            # Own the memory: safetensors tensors are views of a memory-mapped file, which
            # would stay locked (Windows) and change if the file were overwritten.
            cast = value.clone(memory_format=torch.contiguous_format)
        ready[key] = cast
    model.load_state_dict(ready, strict=True, assign=True)
    model.to(device=device)
    model.eval()


def _build_unet(config: Mapping[str, Any]) -> UNet2DConditionModel:
    from diffusers import UNet2DConditionModel

    with _empty_weights():
        return UNet2DConditionModel.from_config(_model_kwargs(config))


def _build_vae(config: Mapping[str, Any]) -> AutoencoderKL:
    from diffusers import AutoencoderKL

    with _empty_weights():
        return AutoencoderKL.from_config(_model_kwargs(config))


def _build_text_encoder(config: Mapping[str, Any]) -> CLIPTextModel:
    from transformers import CLIPTextConfig, CLIPTextModel

    with _empty_weights():
        return CLIPTextModel(CLIPTextConfig(**_model_kwargs(config)))


def _text_encoder_weights(
    model: CLIPTextModel, converted: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    # transformers >= 5.6 flattened CLIPTextModel (no ``text_model.`` level in its state dict).
    if hasattr(model, "text_model"):
        return dict(converted)
    return {k.removeprefix("text_model."): v for k, v in converted.items()}


def _vae_from_ldm(
    state: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    *,
    name: str,
    device: torch.device | str,
    dtype: torch.dtype,
) -> AutoencoderKL:
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    vae = _build_vae(config)
    converted = convert_ldm_vae_checkpoint(dict(state), dict(config))
    _load_weights(vae, converted, what="VAE", name=name, device=device, dtype=dtype)
    return vae


def _load_single_file(
    path: Path,
    *,
    configs: Mapping[str, Mapping[str, Any]],
    skip_vae: bool,
    device: torch.device | str,
    dtype: torch.dtype,
) -> tuple[UNet2DConditionModel, AutoencoderKL | None, CLIPTextModel]:
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
    )

    state = read_state_dict(path)
    for old, new in _OLD_CLIP_PREFIXES.items():
        for key in [k for k in state if k.startswith(old)]:
            state[new + key[len(old) :]] = state.pop(key)
    _check_sd1_layout(state, path.name, need_vae=not skip_vae)

    unet_config = dict(configs["unet"])
    conv_in = state.get(UNET_PREFIX + "input_blocks.0.0.weight")
    if conv_in is not None and conv_in.ndim == 4:
        # Inpainting (9) and instruct-pix2pix (8) checkpoints differ from SD 1.5 only here.
        unet_config["in_channels"] = int(conv_in.shape[1])

    unet = _build_unet(unet_config)
    converted = convert_ldm_unet_checkpoint(state, unet_config)
    _load_weights(unet, converted, what="UNet", name=path.name, device=device, dtype=dtype)
    del converted

    text_encoder = _build_text_encoder(configs["text_encoder"])
    converted = _text_encoder_weights(text_encoder, convert_ldm_clip_checkpoint(state))
    _load_weights(
        text_encoder, converted, what="text encoder", name=path.name, device=device, dtype=dtype
    )
    del converted

    vae = None
    if not skip_vae:
        vae = _vae_from_ldm(state, configs["vae"], name=path.name, device=device, dtype=dtype)
    return unet, vae, text_encoder


def _load_vae(
    path: Path, config: Mapping[str, Any], *, device: torch.device | str, dtype: torch.dtype
) -> AutoencoderKL:
    """A separate VAE: a diffusers folder, or a file in LDM or diffusers key layout."""
    if path.is_dir():
        from diffusers import AutoencoderKL

        folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
        vae = AutoencoderKL.from_pretrained(str(folder), local_files_only=True)
        return vae.to(device=device, dtype=dtype).eval()

    state = read_state_dict(path)
    keys = list(state)
    if any(k.startswith("encoder.down_blocks.") for k in keys):  # diffusers layout
        vae = _build_vae(config)
        _load_weights(vae, state, what="VAE", name=path.name, device=device, dtype=dtype)
        return vae
    ldm_vae = ("encoder.down.", VAE_PREFIX + "encoder.down.", "vae.encoder.down.")
    if any(k.startswith(ldm_vae) for k in keys):
        return _vae_from_ldm(state, config, name=path.name, device=device, dtype=dtype)
    other = _what_else(keys)
    raise NotSD1CheckpointError(
        f"{path.name} is not a Stable Diffusion 1.x VAE"
        + (f": {other}" if other and "VAE" not in other else "")
    )


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _load_pretrained(
    source: str, *, device: torch.device | str, dtype: torch.dtype, local: bool
) -> tuple[UNet2DConditionModel, AutoencoderKL, CLIPTextModel, dict[str, Any]]:
    """The three networks of a diffusers model folder or Hub repository."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    kwargs: dict[str, Any] = {"local_files_only": True} if local else {}
    unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", **kwargs)
    vae = AutoencoderKL.from_pretrained(source, subfolder="vae", **kwargs)
    text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **kwargs)
    scheduler_config: dict[str, Any] = {}
    if local:
        scheduler_file = Path(source) / _CONFIG_FILES["scheduler"]
        if scheduler_file.is_file():
            scheduler_config = json.loads(scheduler_file.read_text(encoding="utf-8"))
    else:
        from diffusers import PNDMScheduler

        scheduler_config = dict(PNDMScheduler.load_config(source, subfolder="scheduler"))
    if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
        raise NotSD1CheckpointError(
            f"this is not a Stable Diffusion 1.x model: {source}'s UNet expects "
            f"{unet.config.cross_attention_dim}-wide text features, its text encoder gives "
            f"{text_encoder.config.hidden_size}"
        )
    models = [m.to(device=device, dtype=dtype).eval() for m in (unet, vae, text_encoder)]
    return models[0], models[1], models[2], scheduler_config


CLIP_VOCABULARY = 49408  # SD 1.x's CLIP tokenizer; charstudio always tokenizes with it


def _check_vocabulary(text_encoder: Any, name: str) -> None:
    """A text encoder with fewer token embeddings than the CLIP vocabulary would fail on the
    first prompt with an index error; say what is wrong when the model loads instead."""
    rows = int(text_encoder.get_input_embeddings().weight.shape[0])
    if rows < CLIP_VOCABULARY:
        raise NotSD1CheckpointError(
            f"{name}: its text encoder has {rows:,} token embeddings, but Stable Diffusion 1.x "
            f"prompts use CLIP's vocabulary of {CLIP_VOCABULARY:,} tokens, so it cannot encode "
            "them (this is not an SD 1.x model, or its text encoder is damaged)"
        )


def load_sd15(
    path: Path | str,
    *,
    vae: Path | str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    config_dir: Path | None = None,
    config_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    hash_cache: Path | None = None,
    compute_hash: bool = True,
) -> SD15Components:
    """Load an SD 1.x model from a checkpoint file, a diffusers folder or (online) a Hub id.

    ``vae`` replaces the model's own VAE with a separate file or folder. ``dtype`` defaults to
    float16 on CUDA and float32 elsewhere. Single files are built from the SD 1.5 configs in
    ``config_dir`` (default ``resources/sd15``) with ``config_overrides[component]`` on top.
    ``hash_cache`` is the JSON file caching model hashes (default in the user's cache folder).
    Raises :class:`ModelLoadError` subclasses with messages meant for the user.
    """
    torch_dtype = _resolve_dtype(dtype, device)
    vae_path = Path(vae) if vae is not None else None
    if vae_path is not None and not vae_path.exists():
        raise ModelNotFoundError(f"VAE file not found: {vae_path}")

    def vae_config() -> dict[str, Any]:
        return sd15_config("vae", config_dir=config_dir, overrides=config_overrides)

    source: Path | str
    local = Path(path)
    if local.is_file():
        configs = {
            c: sd15_config(c, config_dir=config_dir, overrides=config_overrides)
            for c in ("unet", "vae", "text_encoder", "scheduler")
        }
        unet, own_vae, text_encoder = _load_single_file(
            local, configs=configs, skip_vae=vae_path is not None, device=device, dtype=torch_dtype
        )
        with open(local, "rb") as file:
            kind = "ckpt" if file.read(1) in (b"P", b"\x80") else "safetensors"
        source, name, scheduler_config = local, local.stem, configs["scheduler"]
        digest = compute_model_hash(local, cache_file=hash_cache) if compute_hash else None
    elif local.is_dir():
        index_file = local / "model_index.json"
        if not index_file.is_file():
            raise NotSD1CheckpointError(
                f"{local} is a folder but not a diffusers model folder (no model_index.json)"
            )
        index = json.loads(index_file.read_text(encoding="utf-8"))
        if "text_encoder_2" in index:
            raise NotSD1CheckpointError(
                f"this is not a Stable Diffusion 1.x model: {local.name} looks like an SDXL model"
            )
        unet, own_vae, text_encoder, scheduler_config = _load_pretrained(
            str(local), device=device, dtype=torch_dtype, local=True
        )
        source, name, kind, digest = local, local.name, "diffusers", None
    else:
        hub_id = str(path).replace("\\", "/")
        if not _HUB_ID.match(hub_id):
            raise ModelNotFoundError(f"model not found: {path}")
        if _hub_offline():
            raise ModelLoadError(
                f"{path} is not a file or folder here, and Hugging Face Hub models can only be "
                "downloaded when online (HF_HUB_OFFLINE is set)"
            )
        unet, own_vae, text_encoder, scheduler_config = _load_pretrained(
            hub_id, device=device, dtype=torch_dtype, local=False
        )
        source, name, kind, digest = hub_id, hub_id.rsplit("/", 1)[-1], "hub", None

    _check_vocabulary(text_encoder, name)
    vae_hash = None
    if vae_path is not None:
        del own_vae  # the separate VAE replaces it
        vae_model = _load_vae(vae_path, vae_config(), device=device, dtype=torch_dtype)
        if compute_hash and vae_path.is_file():
            vae_hash = compute_model_hash(vae_path, cache_file=hash_cache)
    else:
        assert own_vae is not None
        vae_model = own_vae
    return SD15Components(
        unet=unet,
        vae=vae_model,
        text_encoder=text_encoder,
        model_hash=digest,
        name=name,
        source=source,
        kind=kind,
        scheduler_config=dict(scheduler_config),
        vae_source=vae_path,
        vae_hash=vae_hash,
    )


# -- keeping one model resident ------------------------------------------------------------


def _identity(path: Path | str | None) -> tuple[str, int, int] | None:
    """Path plus mtime and size, so a file replaced in place is loaded again."""
    if path is None:
        return None
    p = Path(path)
    try:
        stat = p.stat()
    except OSError:
        return (str(path), 0, 0)  # a Hub id or a missing file: the loader reports which
    return (os.path.normcase(str(p.resolve())), stat.st_mtime_ns, stat.st_size)


class ModelCache:
    """Keeps the last loaded model resident; asking for another frees it first.

    Only one SD model fits comfortably on an 8 GB GPU, so the old one is released (and CUDA's
    cached blocks returned) *before* the new one loads. Thread-safe: the GPU worker and the GUI
    may both ask.
    """

    def __init__(self, loader: Callable[..., SD15Components] = load_sd15) -> None:
        self._loader = loader
        self._lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._model: SD15Components | None = None

    @property
    def current(self) -> SD15Components | None:
        return self._model

    def get(
        self,
        path: Path | str,
        *,
        vae: Path | str | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        **kwargs: Any,
    ) -> SD15Components:
        """The model for ``path`` (+ ``vae``), loading it only if it is not the resident one."""
        key = (
            _identity(path),
            _identity(vae),
            str(device),
            str(dtype),
            repr(sorted(kwargs.items())),
        )
        with self._lock:
            if self._model is not None and self._key == key:
                return self._model
            self._release()
            model = self._loader(path, vae=vae, device=device, dtype=dtype, **kwargs)
            self._model, self._key = model, key
            return model

    def clear(self) -> None:
        """Free the resident model (e.g. before training needs the GPU memory)."""
        with self._lock:
            self._release()

    def _release(self) -> None:
        if self._model is None:
            return
        self._model = None
        self._key = None
        gc.collect()
        torch = sys.modules.get("torch")  # never import torch just to free nothing
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
