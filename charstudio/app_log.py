"""The app's log file: where tracebacks go instead of to the artist.

The Windows app runs without a console (``pythonw``), so anything printed to stderr is lost.
:func:`install` sends warnings, failed jobs and uncaught exceptions (main thread and worker
threads) to ``charstudio.log`` in :func:`charstudio.install.paths.log_dir`, rotated at 2 MB.
Where there is a console, an uncaught exception prints one line naming the log, not a
traceback.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import threading
from pathlib import Path
from types import TracebackType

from charstudio.install.paths import log_dir

LOG_NAME = "charstudio.log"


def install() -> Path:
    """Start logging to the log file; returns its path. Safe to call more than once."""
    path = log_dir() / LOG_NAME
    root = logging.getLogger()
    if not any(getattr(h, "baseFilename", None) == str(path) for h in root.handlers):
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=2_000_000, backupCount=3, encoding="utf-8", delay=True
        )
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(min(root.level or logging.INFO, logging.INFO))
        logging.captureWarnings(True)

    def excepthook(
        kind: type[BaseException], value: BaseException, tb: TracebackType | None
    ) -> None:
        logging.getLogger("charstudio").error("uncaught exception", exc_info=(kind, value, tb))
        if sys.stderr is not None:
            what = str(value) or kind.__name__
            print(f"charstudio: unexpected error: {what} (details in {path})", file=sys.stderr)

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        logging.getLogger("charstudio").error(
            "uncaught exception in thread %s",
            getattr(args.thread, "name", "?"),
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]
        )

    if not getattr(sys.excepthook, "_charstudio", False):
        excepthook._charstudio = True  # type: ignore[attr-defined]
        sys.excepthook = excepthook
        threading.excepthook = thread_hook
    return path
