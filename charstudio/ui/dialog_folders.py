"""Where file dialogs open: never the app's install folder.

An empty start folder makes Qt open the current directory, which for the installed app is
its own program folder — a place the artist never keeps images or models. Each dialog names
the folders it would like (the project, the current file's folder…); the first one that
exists wins, else the home folder.
"""

from __future__ import annotations

from pathlib import Path


def start_folder(*candidates: Path | str | None) -> str:
    for candidate in candidates:
        if not candidate:
            continue
        path = Path(candidate).expanduser()
        if path.is_file():
            path = path.parent
        if path.is_dir():
            return str(path)
    return str(Path.home())
