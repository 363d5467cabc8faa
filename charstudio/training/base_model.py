"""Which checkpoint the Train panel starts on.

In order: the checkpoint the artist trained on last in this project; else a base SD 1.5
checkpoint found in the model folders (the tutorial trains on base 1.5, and an embedding
trained there carries over to fine-tunes); else the checkpoint that made the picks. Qt-free.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from charstudio.catalog import Project
from charstudio.engine.sweeps import model_display_name

# File names SD 1.5's base checkpoint goes by (v1-5-pruned-emaonly.safetensors, sd15.ckpt,
# stable-diffusion-v1-5/...); inpainting variants are not a base to train on.
_BASE_SD15 = re.compile(r"(v1[-_.]?5|sd[-_]?1[-_.]?5|stable[-_]diffusion[-_]v?1[-_.]5)", re.I)


def base_sd15(checkpoints: Sequence[Path]) -> Path | None:
    """The base SD 1.5 checkpoint among ``checkpoints``, preferring the EMA-only prune."""
    found = [
        p for p in checkpoints if _BASE_SD15.search(p.name) and "inpaint" not in p.name.lower()
    ]
    found.sort(key=lambda p: ("emaonly" not in p.name.lower(), len(p.name), p.name))
    return found[0] if found else None


def suggest_training_model(
    checkpoints: Sequence[Path],
    *,
    last_trained: str | None = None,
    pick_models: Iterable[str] = (),
) -> tuple[str | None, str]:
    """(checkpoint, why in words) for the Train panel; (None, "") when nothing fits."""
    if last_trained:
        return last_trained, "the checkpoint you trained on last"
    base = base_sd15(checkpoints)
    if base is not None:
        return str(base), "base SD 1.5, as the tutorial trains"
    by_name = {model_display_name(p.name).casefold(): p for p in checkpoints}
    for name, _count in Counter(m for m in pick_models if m).most_common():
        match = by_name.get(model_display_name(name).casefold())
        if match is not None:
            return str(match), "the checkpoint that made the picks"
    return None, ""


def training_model_for(project: Project, checkpoints: Sequence[Path]) -> tuple[str | None, str]:
    """:func:`suggest_training_model` with this project's runs and picks."""
    from charstudio.training.records import list_runs

    runs = sorted(list_runs(project.catalog, kind=None), key=lambda r: r.id, reverse=True)
    last = next((str(r.params["model"]) for r in runs if r.params.get("model")), None)
    decisions = project.catalog.decisions()
    picked = {image_id for image_id, decision in decisions.items() if decision.flag == "pick"}
    pick_models = [r.model for r in project.catalog.images() if r.id in picked and r.model]
    return suggest_training_model(checkpoints, last_trained=last, pick_models=pick_models)
