"""The ``charstudio`` entry point: commands run in the core; without one the GUI opens."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path


def _open_gui(project: Path | None) -> int:
    from charstudio.ui.app import run_app  # Qt loads only when the app is wanted

    return run_app(project)


def main(argv: Sequence[str] | None = None) -> int:
    from charstudio import app_log
    from charstudio.cli import main as cli_main

    app_log.install()  # tracebacks (failed jobs, crashes) go to the log file, not the console
    return cli_main(argv, launch_gui=_open_gui)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
