"""The Windows first run: make charstudio's environment with uv, then start the app.

The installer's launcher runs ``start.pyw`` with a uv-managed Python on every start. When the
environment is current (its stamp matches the lock, uv, Python and the torch build recorded in
the stamp) the app starts at once: no nvidia-smi, no uv. Otherwise the GPU is detected, the
torch build chosen (``torch_variant``), uv's steps run one by one with their output streamed into
the log and into progress events (``setup_events``, read by ``uv_output``), the stamp is written,
and the app starts. ``--repair-environment`` forces the second path. A failure is reported in
words (``setup_failures``).

This module has no UI (``first_run_window`` is the tkinter view, ``setup_progress`` its words)
and takes every path, the environment variables, the uv executable and the process launchers as
parameters, so tests run it on Linux with a stand-in uv. Standard library only.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from charstudio.install import torch_variant
from charstudio.install.environment import (
    APP_ROOT,
    WINDOWS_PYTHON,
    EnvironmentSpec,
    Step,
    env_python,
    is_current,
    mark_current,
    read_stamp,
    setup_steps,
)
from charstudio.install.paths import log_dir
from charstudio.install.setup_events import (
    Cancelled,
    Event,
    Failed,
    Finished,
    GpuDetected,
    StepStarted,
)
from charstudio.install.setup_failures import FailureKind, SetupFailure, classify, failure_for
from charstudio.install.torch_variant import Outcome, TorchVariant
from charstudio.install.uv_output import OutputParser

REPAIR_FLAG = "--repair-environment"
LOG_NAME = "setup.log"
OLD_LOG_NAME = "setup.old.log"
LOG_ROTATE_BYTES = 5 * 1024 * 1024

# Windows process creation flags (subprocess only defines them on Windows).
CREATE_NO_WINDOW = 0x08000000
DETACHED_PROCESS = 0x00000008
CREATE_NEW_PROCESS_GROUP = 0x00000200


def split_args(argv: Sequence[str]) -> tuple[bool, list[str]]:
    """(repair asked for, the arguments for the app without ``--repair-environment``)."""
    repair = REPAIR_FLAG in argv
    return repair, [arg for arg in argv if arg != REPAIR_FLAG]


# ── Where things are ─────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Installation:
    """An installed charstudio: ``home`` is the install folder (``$INSTDIR``), ``app_root`` the
    folder with the ``charstudio`` package and ``requirements/``, ``uv`` the pinned uv."""

    home: Path
    app_root: Path
    uv: Path
    windows: bool = os.name == "nt"

    @property
    def venv(self) -> Path:
        return self.home / "env"

    @property
    def lock(self) -> Path:
        return self.app_root / "requirements" / "lock.txt"

    @property
    def setup_lock(self) -> Path:
        return self.home / "setup.lock"

    def spec(self, torch_backend: str | None) -> EnvironmentSpec:
        return EnvironmentSpec(
            venv=self.venv,
            python=WINDOWS_PYTHON,
            lock=self.lock,
            app_root=self.app_root,
            torch_backend=torch_backend,
            managed_python=True,
        )

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        app_root: Path = APP_ROOT,
        windows: bool | None = None,
    ) -> Installation:
        """The installation this code runs from: ``CHARSTUDIO_HOME`` (set by the launcher),
        else the folder above the app folder; uv in its ``uv`` folder."""
        env = os.environ if environ is None else environ
        if windows is None:
            windows = os.name == "nt"
        home = Path(env["CHARSTUDIO_HOME"]) if env.get("CHARSTUDIO_HOME") else app_root.parent
        uv = home / "uv" / ("uv.exe" if windows else "uv")
        return cls(home=home, app_root=app_root, uv=uv, windows=windows)


def recorded_backend(installation: Installation) -> str | None:
    """The torch backend the existing environment's stamp records, if any."""
    stamp = read_stamp(installation.venv)
    backend = stamp.get("torch_backend") if stamp else None
    return backend if isinstance(backend, str) else None


def current_spec(installation: Installation) -> EnvironmentSpec | None:
    """The spec of the environment when it is current for the backend its stamp records: the
    fast path, which runs no subprocess."""
    if read_stamp(installation.venv) is None:
        return None
    spec = installation.spec(recorded_backend(installation))
    try:
        return spec if is_current(spec) else None
    except (OSError, ValueError):  # the lock or the uv pin is unreadable: set up (and report)
        return None


# ── Launching the app ────────────────────────────────────────────────────────────────────────

Launcher = Callable[[Sequence[str], Path, Mapping[str, str]], None]


def launch_detached(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> None:
    """Start ``argv`` on its own, not tied to this process or a console."""
    options: dict[str, Any] = {}
    if os.name == "nt":
        options["creationflags"] = DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP
    else:
        options["start_new_session"] = True
    subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        **options,
    )


def app_command(installation: Installation, args: Sequence[str]) -> list[str]:
    return [str(env_python(installation.venv, gui=True)), "-m", "charstudio", *args]


# ── The log ──────────────────────────────────────────────────────────────────────────────────


def default_log_path(environ: Mapping[str, str] | None = None) -> Path:
    try:
        return log_dir(environ) / LOG_NAME
    except OSError:  # an unwritable profile folder must not stop the set-up
        fallback = Path(tempfile.gettempdir()) / "charstudio-logs"
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback / LOG_NAME


class SetupLog:
    """The set-up log: each line with a timestamp, appended; rotated once it is large."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        lines = text.splitlines() or [""]
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if self.path.is_file() and self.path.stat().st_size > LOG_ROTATE_BYTES:
                    os.replace(self.path, self.path.with_name(OLD_LOG_NAME))
                with self.path.open("a", encoding="utf-8", errors="replace") as log:
                    log.writelines(f"{stamp} {line}\n" for line in lines)
            except OSError:
                pass  # logging must never be the reason the set-up fails


def _quote(argv: Iterable[str]) -> str:
    return " ".join(f'"{arg}"' if (" " in arg or not arg) else arg for arg in argv)


# ── Running uv ───────────────────────────────────────────────────────────────────────────────


class Process(Protocol):
    """The part of ``subprocess.Popen`` the set-up uses."""

    stdout: IO[str] | None

    def wait(self, timeout: float | None = None) -> int: ...

    def poll(self) -> int | None: ...

    def terminate(self) -> None: ...


Popen = Callable[..., Process]


class SetupLock:
    """Held while one start sets the environment up, so that a second start (a double-click
    while the first is still downloading) does not run uv on the same environment."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+b")
        try:
            if sys.platform == "win32":
                import msvcrt

                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._file = handle
        return True

    def release(self) -> None:
        handle, self._file = self._file, None
        if handle is None:
            return
        if sys.platform == "win32":
            import msvcrt

            handle.seek(0)
            with contextlib.suppress(OSError):
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        handle.close()


class CancelToken:
    """Set from the UI thread; stops the running uv at once and the set-up before its next step."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._process: Process | None = None

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        self._event.set()
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                self._process.terminate()

    def attach(self, process: Process | None) -> None:
        with self._lock:
            self._process = process
            if process is not None and self._event.is_set() and process.poll() is None:
                process.terminate()


class SetupCancelled(Exception):
    """The artist cancelled; nothing was stamped, so the next start resumes."""


_NO_GPU_CHOSEN = TorchVariant("cpu", Outcome.CPU_CHOSEN, "CPU build (slow), as you chose")


@dataclass
class FirstRun:
    """One start of the installed app: the fast path, or the set-up and then the app."""

    argv: Sequence[str]
    installation: Installation = field(default_factory=Installation.from_environment)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    log_path: Path | None = None
    detect: Callable[[], TorchVariant] | None = None
    popen: Popen = subprocess.Popen
    launcher: Launcher = launch_detached
    clock: Callable[[], float] = time.monotonic
    home_dir: Path | None = None  # the app's working folder (the user's home by default)
    variant: TorchVariant | None = None  # the last detection

    def __post_init__(self) -> None:
        self.repair, self.app_args = split_args(self.argv)
        if self.log_path is None:
            self.log_path = default_log_path(self.environ)
        self.log = SetupLog(self.log_path)

    @property
    def log_file(self) -> Path:
        assert self.log_path is not None
        return self.log_path

    # The fast path.

    def try_fast_path(self) -> bool:
        """Start the app when the environment is current (and no repair was asked for)."""
        if self.repair:
            return False
        if current_spec(self.installation) is None:
            return False
        self.launch_app()
        return True

    def launch_app(self) -> None:
        argv = app_command(self.installation, self.app_args)
        self.launcher(argv, self.home_dir or Path.home(), self.environ)

    # The set-up.

    def run(
        self,
        on_event: Callable[[Event], None],
        cancel: CancelToken | None = None,
        *,
        without_gpu: bool = False,
    ) -> Event:
        """Set up and start the app; never raises. Reports progress through ``on_event`` and
        ends with exactly one Finished, Failed or Cancelled event, which it also returns."""
        cancel = cancel or CancelToken()
        lock = SetupLock(self.installation.setup_lock)
        final: Event
        try:
            if not lock.acquire():
                self.log.write("Another start is setting charstudio up; not running uv.")
                raise failure_for(FailureKind.ALREADY_RUNNING, self.log_file)
            spec = self._set_up(on_event, cancel, without_gpu=without_gpu)
            self.log.write("Starting charstudio: " + _quote(app_command(self.installation, [])))
            self.launch_app()
            self.repair = False
            final = Finished(spec)
        except SetupCancelled:
            self.log.write("Cancelled; the next start picks up where this one stopped.")
            final = Cancelled()
        except SetupFailure as failure:
            self.log.write(f"Failed ({failure.kind.value}): {failure.message}")
            final = Failed(failure)
        except Exception:
            self.log.write("Unexpected error:\n" + traceback.format_exc())
            final = Failed(failure_for(FailureKind.OTHER, self.log_file))
        finally:
            lock.release()
        on_event(final)
        return final

    def _set_up(
        self, on_event: Callable[[Event], None], cancel: CancelToken, *, without_gpu: bool
    ) -> EnvironmentSpec:
        inst = self.installation
        self.log.write(
            f"=== Setting up charstudio in {inst.home} (app {inst.app_root}, uv {inst.uv}); "
            f"arguments: {_quote(self.argv) or '(none)'}"
        )
        if not inst.lock.is_file():
            self.log.write(f"The lock file is missing: {inst.lock}")
            raise failure_for(FailureKind.INSTALLATION_BROKEN, self.log_file, installation=inst)
        if not inst.uv.is_file():
            self.log.write(f"uv is missing: {inst.uv}")
            raise failure_for(FailureKind.UV_BROKEN, self.log_file, installation=inst)
        if without_gpu:
            variant = (self.variant or _NO_GPU_CHOSEN).without_gpu()
        else:
            detect = self.detect or (lambda: torch_variant.detect(environ=self.environ))
            variant = detect()
        self.variant = variant
        self.log.write(f"Graphics card: {variant.reason} (backend {variant.backend})")
        on_event(GpuDetected(variant))
        if variant.outcome is Outcome.DRIVER_TOO_OLD:
            raise failure_for(
                FailureKind.DRIVER_TOO_OLD, self.log_file, installation=inst, variant=variant
            )
        spec = inst.spec(variant.backend)
        steps = setup_steps(spec, str(inst.uv), reinstall=self.repair)
        for index, step in enumerate(steps):
            if cancel.cancelled:
                raise SetupCancelled
            downloads = step.argv[1:3] == ["pip", "sync"]
            on_event(StepStarted(index, len(steps), step.label, tuple(step.argv), downloads))
            self._run_step(step, on_event, cancel, variant)
        if cancel.cancelled:
            raise SetupCancelled
        mark_current(spec)
        self.log.write("The environment is ready.")
        return spec

    def _run_step(
        self,
        step: Step,
        on_event: Callable[[Event], None],
        cancel: CancelToken,
        variant: TorchVariant,
    ) -> None:
        self.log.write(f"{step.label}: $ {_quote(step.argv)}")
        env = dict(self.environ)
        env["NO_COLOR"] = "1"
        options: dict[str, Any] = {}
        if self.installation.windows:
            options["creationflags"] = CREATE_NO_WINDOW
        try:
            process = self.popen(
                step.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                encoding="utf-8",
                errors="replace",
                bufsize=1,
                **options,
            )
        except OSError as error:  # missing, not executable, or not a program (corrupt)
            self.log.write(f"uv could not be started: {error!r}")
            raise failure_for(
                FailureKind.UV_BROKEN, self.log_file, installation=self.installation
            ) from error
        cancel.attach(process)
        parser = OutputParser(self.clock)
        tail: deque[str] = deque(maxlen=200)
        try:
            assert process.stdout is not None
            for raw in process.stdout:
                line = raw.rstrip("\r\n")
                tail.append(line)
                self.log.write(f"| {line}")
                event = parser.feed(line)
                if event is not None:
                    on_event(event)
            code = process.wait()
        finally:
            cancel.attach(None)
        if cancel.cancelled:
            raise SetupCancelled
        self.log.write(f"(exit code {code})")
        if code != 0:
            kind = classify("\n".join(tail))
            if kind is FailureKind.GPU_BUILD_MISSING and variant.outcome is not Outcome.CUDA:
                kind = FailureKind.OTHER
            raise failure_for(kind, self.log_file, installation=self.installation, variant=variant)
