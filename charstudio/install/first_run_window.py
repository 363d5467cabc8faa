"""The first run's window (tkinter: Qt is what is being installed) and ``main``, which
``start.pyw`` calls on every start of the installed app.

When the environment is current, ``main`` starts the app without importing tkinter at all.
Otherwise a small window shows the set-up: what is happening in words, a progress bar and
Cancel; on failure the message, the log's path, Retry, Close and, where it applies, "Continue
without GPU". The set-up runs on a worker thread that only puts events on a queue; the window
polls the queue (tkinter is not thread-safe). Without tkinter the set-up runs without a window
and failures are shown in a Windows message box (or on stderr elsewhere).
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from charstudio.install.first_run import CancelToken, FirstRun, SetupLog, default_log_path
from charstudio.install.setup_events import Cancelled, Event, Failed, Finished
from charstudio.install.setup_failures import FailureKind, SetupFailure, failure_for
from charstudio.install.setup_progress import SetupProgress

if TYPE_CHECKING:
    import tkinter as tk

TITLE = "Setting up charstudio"
POLL_MS = 150
WIDTH_PX = 480


def open_folder(folder: Path) -> None:
    """Show ``folder`` in the system's file manager."""
    if sys.platform == "win32":
        os.startfile(folder)
    else:
        opener = "open" if sys.platform == "darwin" else "xdg-open"
        subprocess.Popen([opener, str(folder)], start_new_session=True)


class SetupWindow:
    """The view: it shows what ``SetupProgress`` says and sends the buttons to the session."""

    def __init__(self, session: FirstRun, root: tk.Tk | None = None) -> None:
        import tkinter as tk
        from tkinter import ttk

        self.session = session
        self.root = root or tk.Tk()
        self.root.title(TITLE)
        self.root.resizable(False, False)
        self.root.protocol("WM_DELETE_WINDOW", self.on_close)
        self.result = 1
        self.events: queue.Queue[Event] = queue.Queue()
        self.cancel_token = CancelToken()
        self.worker: threading.Thread | None = None
        self.progress = SetupProgress()
        self.failure: SetupFailure | None = None

        frame = ttk.Frame(self.root, padding=16)
        frame.grid(sticky="nsew")
        self.headline = ttk.Label(frame, text="", wraplength=WIDTH_PX, justify="left")
        self.headline.grid(row=0, column=0, columnspan=4, sticky="w")
        self.detail = ttk.Label(frame, text="", wraplength=WIDTH_PX, foreground="#555555")
        self.detail.grid(row=1, column=0, columnspan=4, sticky="w", pady=(4, 8))
        self.bar = ttk.Progressbar(frame, length=WIDTH_PX, maximum=1000, mode="determinate")
        self.bar.grid(row=2, column=0, columnspan=4, sticky="ew")
        self.log_path = tk.StringVar(value=str(session.log_file))
        self.log_entry = ttk.Entry(frame, textvariable=self.log_path, state="readonly")
        self.log_entry.grid(row=3, column=0, columnspan=3, sticky="ew", pady=(8, 0))
        self.open_log = ttk.Button(frame, text="Open log folder", command=self.on_open_log)
        self.open_log.grid(row=3, column=3, sticky="e", pady=(8, 0), padx=(8, 0))
        buttons = ttk.Frame(frame)
        buttons.grid(row=4, column=0, columnspan=4, sticky="e", pady=(12, 0))
        self.without_gpu = ttk.Button(
            buttons, text="Continue without GPU (slow)", command=self.on_without_gpu
        )
        self.retry = ttk.Button(buttons, text="Retry", command=self.on_retry)
        self.close = ttk.Button(buttons, text="Close", command=self.on_close)
        self.cancel = ttk.Button(buttons, text="Cancel", command=self.on_cancel)
        for column, button in enumerate((self.without_gpu, self.retry, self.close, self.cancel)):
            button.grid(row=0, column=column, padx=(8, 0))
        frame.columnconfigure(0, weight=1)

    # Running.

    def start(self, *, without_gpu: bool = False) -> None:
        self.failure = None
        self.progress = SetupProgress()
        self.cancel_token = CancelToken()
        self._show_running()
        self.worker = threading.Thread(
            target=self.session.run,
            args=(self.events.put, self.cancel_token),
            kwargs={"without_gpu": without_gpu},
            name="charstudio-setup",
            daemon=True,
        )
        self.worker.start()
        self.root.after(POLL_MS, self.poll)

    def poll(self) -> None:
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            self.progress.apply(event)
            if isinstance(event, Finished):
                self.result = 0
                self.root.destroy()
                return
            if isinstance(event, Cancelled):
                self.result = 1
                self.root.destroy()
                return
            if isinstance(event, Failed):
                self._show_failure(event.failure)
                return
        self._refresh()
        self.root.after(POLL_MS, self.poll)

    def _refresh(self) -> None:
        now = time.monotonic()
        if not self.cancel_token.cancelled:
            self.headline.configure(text=self.progress.headline(now))
        self.detail.configure(text=self.progress.detail())
        fraction = self.progress.fraction(now)
        if fraction is None:
            if str(self.bar.cget("mode")) != "indeterminate":
                self.bar.configure(mode="indeterminate")
                self.bar.start(15)
        else:
            if str(self.bar.cget("mode")) != "determinate":
                self.bar.stop()
                self.bar.configure(mode="determinate")
            self.bar.configure(value=int(fraction * 1000))

    def _show_running(self) -> None:
        self.headline.configure(text="Checking your graphics card…")
        self.detail.configure(text="")
        self.bar.grid()
        self.bar.configure(mode="determinate", value=0)
        for widget in (self.log_entry, self.open_log, self.without_gpu, self.retry, self.close):
            widget.grid_remove()
        self.cancel.grid()
        self.cancel.state(["!disabled"])

    def _show_failure(self, failure: SetupFailure) -> None:
        self.failure = failure
        self.bar.stop()
        self.bar.grid_remove()
        self.headline.configure(text=failure.summary)
        self.detail.configure(text="Details are in the log:")
        self.log_path.set(str(failure.log_path))
        self.log_entry.grid()
        self.open_log.grid()
        self.cancel.grid_remove()
        self.close.grid()
        if failure.can_retry:
            self.retry.grid()
        if failure.can_continue_without_gpu:
            self.without_gpu.grid()

    # Buttons.

    def on_cancel(self) -> None:
        self.cancel.state(["disabled"])
        self.headline.configure(text="Cancelling…")
        self.cancel_token.cancel()

    def on_close(self) -> None:
        if self.worker is not None and self.worker.is_alive():
            self.on_cancel()  # the window closes when the worker reports Cancelled
        else:
            self.root.destroy()

    def on_retry(self) -> None:
        self.start()

    def on_without_gpu(self) -> None:
        self.start(without_gpu=True)

    def on_open_log(self) -> None:
        with contextlib.suppress(OSError):
            open_folder(Path(self.log_path.get()).parent)

    def run(self) -> int:
        self.start()
        self.root.mainloop()
        return self.result


# ── Without tkinter ──────────────────────────────────────────────────────────────────────────


def show_message(text: str, *, error: bool) -> None:
    """A message box on Windows (stderr elsewhere, when there is one)."""
    if sys.platform == "win32":
        import ctypes

        flags = 0x10 if error else 0x40  # MB_ICONERROR / MB_ICONINFORMATION
        ctypes.windll.user32.MessageBoxW(None, text, "charstudio", flags)
    elif sys.stderr is not None:
        print(f"charstudio: {text}", file=sys.stderr)


def run_without_window(session: FirstRun) -> int:
    session.log.write("tkinter is not available: setting up without a window.")
    show_message(
        "charstudio is setting itself up: a one-time download of a few gigabytes. It opens "
        "by itself when it is done, which can take a while.",
        error=False,
    )
    final = session.run(lambda event: None)
    if isinstance(final, Failed):
        show_message(final.failure.message, error=True)
        return 1
    return 0 if isinstance(final, Finished) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """The installed app's entry point: the fast path, else the set-up window."""
    args = list(sys.argv[1:] if argv is None else argv)
    log_path: Path | None = None
    try:
        session = FirstRun(args)
        log_path = session.log_file
        if session.try_fast_path():
            return 0
        try:
            import tkinter
        except ImportError:
            return run_without_window(session)
        try:
            window = SetupWindow(session)
        except tkinter.TclError:  # Tcl/Tk files missing or no display
            session.log.write("The window could not open:\n" + traceback.format_exc())
            return run_without_window(session)
        return window.run()
    except Exception:
        log_path = log_path or default_log_path()
        SetupLog(log_path).write("Unexpected error:\n" + traceback.format_exc())
        show_message(failure_for(FailureKind.OTHER, log_path).message, error=True)
        return 1
