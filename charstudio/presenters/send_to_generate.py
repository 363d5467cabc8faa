"""An image's settings back into the Generate form, as A1111's "Send to txt2img" does.

The artist picks a strong image in the grid and wants more of it: same prompt, seed, sampler
and size, one image, no sweep axes. The checkpoint is looked up among the project's model
files by the infotext's model name, then by its cached hash (hashing a 2 GB file on the GUI
thread is out of the question); when neither finds it, the form keeps its own checkpoint and
says so.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from charstudio.catalog.records import ImageRecord
from charstudio.engine.model_hash import MODEL_HASH_LENGTH, hash_cache
from charstudio.engine.regenerate import settings_from_infotext
from charstudio.engine.requests import GenerateRequest
from charstudio.engine.sweeps import GenerationSettings


@dataclass(frozen=True)
class SentRequest:
    request: GenerateRequest
    notes: list[str]  # what could not be carried over, in words for the status bar


def _fields_settings(image: ImageRecord) -> GenerationSettings | None:
    """Settings from the catalog's columns when the image has no usable infotext."""
    if image.prompt is None or image.seed is None:
        return None
    base = GenerationSettings(prompt=image.prompt)
    return base.replace(
        negative_prompt=image.negative_prompt or "",
        seed=image.seed,
        steps=image.steps or base.steps,
        sampler=image.sampler or base.sampler,
        schedule_type=image.schedule_type,
        cfg_scale=image.cfg_scale if image.cfg_scale is not None else base.cfg_scale,
        width=image.width,
        height=image.height,
        clip_skip=image.clip_skip or 1,
    )


def _cached_hash(path: Path) -> str | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    digest = hash_cache().get(path, "sha256", stat)
    return digest[:MODEL_HASH_LENGTH] if digest else None


def find_checkpoint(
    name: str | None, short_hash: str | None, checkpoints: Sequence[Path]
) -> Path | None:
    """The checkpoint an infotext names: by file stem (A1111 writes the stem), else by a
    hash already in the cache."""
    if name:
        wanted = name.casefold()
        for path in checkpoints:
            if path.stem.casefold() == wanted or path.name.casefold() == wanted:
                return path
    if short_hash:
        wanted = short_hash.casefold()
        for path in checkpoints:
            if path.is_file() and _cached_hash(path) == wanted:
                return path
    return None


def request_from_image(
    image: ImageRecord, *, checkpoints: Sequence[Path], current: GenerateRequest
) -> SentRequest:
    """The Generate form's request for making ``image`` again; ValueError when the image
    carries no generation settings at all (an imported photo)."""
    notes: list[str] = []
    settings: GenerationSettings | None = None
    if image.infotext:
        try:
            settings = settings_from_infotext(image.infotext, model=None)
        except ValueError as error:
            notes.append(f"{Path(image.path).name}: {error}")
    settings = settings or _fields_settings(image)
    if settings is None:
        raise ValueError(f"{Path(image.path).name} has no generation settings to send")
    model = find_checkpoint(image.model or settings.model, image.model_hash, checkpoints)
    kept = current.settings
    if model is None and (image.model or image.model_hash):
        label = image.model or image.model_hash
        keeping = Path(kept.model).name if kept.model else "the form's checkpoint"
        notes.append(f"checkpoint {label} is not in the model folders; keeping {keeping}")
    settings = settings.replace(
        model=str(model) if model is not None else kept.model,
        vae=kept.vae,  # the infotext names a VAE by file name only; the form's choice stays
        batch_size=1,
        batch_count=1,
    )
    request = GenerateRequest(settings, keep_random_seeds=False, save_grid=current.save_grid)
    return SentRequest(request, notes)
