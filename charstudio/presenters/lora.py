"""The LoRA panel's rules that are not widgets: saved settings, the job's params and checks,
and how a finished run is worded. The panel binds its widgets to ``TrainLoraSettings``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from charstudio.catalog import Project
from charstudio.presenters.saved_settings import apply_saved
from charstudio.presenters.train import IMAGE_CHOICES
from charstudio.training.lora_settings import TrainLoraSettings

__all__ = ["KIND", "SETTING_KEY", "finish_text", "job_params", "problems", "stored_state"]

KIND = "train-lora"
SETTING_KEY = "train.lora"  # project setting: {"settings": TrainLoraSettings JSON, "model", ...}
# Tuples are not edited in the panel: the sample prompts come from the training images.
_NOT_IN_FORM = frozenset({"sample_prompts", "sample_seeds"})


def for_project(project: Project) -> TrainLoraSettings:
    return TrainLoraSettings(name=project.token, token=project.token)


def stored_state(
    stored: object, project: Project
) -> tuple[TrainLoraSettings, dict[str, Any], list[str]]:
    """The saved settings (each unreadable value back to its default alone), the other saved
    choices (model, vae, images) and the names of the values dropped."""
    settings = for_project(project)
    if stored is None:
        return settings, {}, []
    if not isinstance(stored, Mapping):
        return settings, {}, ["all settings"]
    raw = stored.get("settings")
    settings, dropped = apply_saved(
        settings, raw if isinstance(raw, Mapping) else {}, skip=_NOT_IN_FORM
    )
    if not isinstance(raw, Mapping):
        dropped = ["settings"]
    settings = settings.replace(
        name=settings.name or project.token, token=settings.token or project.token
    )
    choices = {k: stored[k] for k in ("model", "vae") if isinstance(stored.get(k), str)}
    if stored.get("images") in {value for _label, value in IMAGE_CHOICES}:
        choices["images"] = stored["images"]
    return settings, choices, dropped


def job_params(
    settings: TrainLoraSettings, model: str | None, vae: str | None, images: str
) -> dict[str, Any]:
    """The params of a "train-lora" job (see :mod:`charstudio.training.lora`)."""
    return {"settings": settings.to_json(), "model": model, "vae": vae, "images": images}


def problems(project: Project, params: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The job's own checks, before it is queued: ``(problems, warnings)``; loads no model."""
    from charstudio.training.lora import check_lora_params

    return check_lora_params(project, params)


def finish_text(status: str, result: Mapping[str, Any], error: str = "") -> str:
    """``Done: anna trained 10 epochs (1,600 steps)``, or why it stopped."""
    name = result.get("name") or "the LoRA"
    saved = [c for c in result.get("checkpoints", []) if isinstance(c, Mapping)]
    epochs = max((int(c.get("epoch", 0)) for c in saved), default=0)
    step = result.get("step")
    if status == "failed":
        return f"Failed: {error}" if error else "Failed."
    if status == "canceled":
        return f"Canceled: {name} kept {len(saved)} saved epoch{'s' if len(saved) != 1 else ''}"
    if status == "paused":
        return f"Paused: {name} at step {step}; Resume continues from there"
    steps = f" ({step:,} steps)" if isinstance(step, int) else ""
    return f"Done: {name} trained {epochs} epoch{'s' if epochs != 1 else ''}{steps}"
