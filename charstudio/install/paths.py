"""Where charstudio writes its logs (the first run's set-up log and the app's own).

Standard library only: the Windows first run uses it before the environment exists.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

LOG_DIR_VARIABLE = "CHARSTUDIO_LOG_DIR"


def log_dir(
    environ: Mapping[str, str] | None = None,
    *,
    windows: bool | None = None,
    create: bool = True,
) -> Path:
    """The folder for charstudio's log files, created on demand.

    ``CHARSTUDIO_LOG_DIR`` overrides it. Otherwise Windows uses ``%LOCALAPPDATA%\\charstudio\\logs``
    and other systems ``$XDG_STATE_HOME/charstudio/logs`` (``~/.local/state`` when unset).
    """
    env = os.environ if environ is None else environ
    if windows is None:
        windows = os.name == "nt"
    override = env.get(LOG_DIR_VARIABLE)
    if override:
        folder = Path(override)
    elif windows:
        local = env.get("LOCALAPPDATA")
        base = Path(local) if local else Path.home() / "AppData" / "Local"
        folder = base / "charstudio" / "logs"
    else:
        state = env.get("XDG_STATE_HOME")
        # The XDG spec says relative values are invalid and must be ignored.
        valid = state is not None and Path(state).is_absolute()
        base = Path(state) if valid and state else Path.home() / ".local" / "state"
        folder = base / "charstudio" / "logs"
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder
