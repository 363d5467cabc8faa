"""The Generate panel's rules that are not widgets: its saved settings."""

from __future__ import annotations

from collections.abc import Mapping

from charstudio.engine.requests import GenerateRequest
from charstudio.engine.samplers import split_sampler_name
from charstudio.engine.sweeps import GenerationSettings
from charstudio.presenters.saved_settings import apply_saved

__all__ = ["SETTING_KEY", "stored_request"]

SETTING_KEY = "generate.request"  # project setting holding GenerateRequest.to_params()
# Derived by the engine: a stale hash would be wrong for another file.
_DERIVED = frozenset({"extra_params", "model_hash"})


def _known_sampler(name: str, value: object) -> bool:
    if name != "sampler":
        return True
    try:
        split_sampler_name(str(value))
    except ValueError:
        return False
    return True


def stored_request(stored: object) -> tuple[GenerateRequest, list[str]]:
    """The request saved in a project, and the names of saved values that had to be dropped
    (each falls back to its default alone, so one bad value never loses the prompt)."""
    default = GenerateRequest(GenerationSettings(prompt=""))
    if stored is None:
        return default, []
    if not isinstance(stored, Mapping):
        return default, ["all settings"]
    raw = stored.get("settings")
    settings, dropped = apply_saved(
        default.settings, raw if raw is not None else {}, skip=_DERIVED, accept=_known_sampler
    )
    if dropped == ["all settings"]:
        dropped = ["settings"]
    axes: dict[str, str | None] = {}
    for key in ("x", "y", "z"):
        spec = stored.get(key)
        if spec is not None and not isinstance(spec, str):
            dropped.append(f"{key.upper()} axis")
            spec = None
        axes[key] = spec
    flags: dict[str, bool] = {}
    for key in ("keep_random_seeds", "save_grid"):
        if key in stored:
            if isinstance(stored[key], bool):
                flags[key] = stored[key]
            else:
                dropped.append(key)
    return default.replace(settings=settings, **axes, **flags), dropped
