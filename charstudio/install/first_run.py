"""The Windows first run: make charstudio's environment with uv, then start the app.

The installer's launcher runs ``start.pyw`` with a uv-managed Python on every start. When the
environment is current (its stamp matches the lock, uv, Python and the torch build recorded in
the stamp) the app starts at once: no nvidia-smi, no uv. Otherwise the GPU is detected, the
torch build chosen (``torch_variant``), uv's steps run one by one with their output streamed into
the log and into typed progress events, the stamp is written, and the app starts.
``--repair-environment`` forces the second path.

This module has no UI (``first_run_window`` is the tkinter view) and takes every path, the
environment variables, the uv executable and the process launchers as parameters, so tests run
it on Linux with a stand-in uv. Standard library only.
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
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
from charstudio.install.torch_variant import Outcome, TorchVariant

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


# ── Events ───────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class GpuDetected:
    variant: TorchVariant


@dataclass(frozen=True)
class StepStarted:
    index: int  # 0-based
    count: int
    label: str
    argv: tuple[str, ...]
    downloads: bool  # the step that installs the packages (and downloads them)


@dataclass(frozen=True)
class DownloadProgress:
    """Bytes downloaded so far of those uv announced. uv reports a download only when it starts
    and when it ends, so ``done_bytes`` is an estimate (see ``DownloadTracker``); ``at`` is when
    it was made, and ``rate`` (bytes/s) lets a view move it on between events with ``now``."""

    done_bytes: int
    total_bytes: int
    packages_done: int
    packages_total: int
    rate: float | None
    at: float
    current: str = ""

    @property
    def complete(self) -> bool:
        return self.packages_done >= self.packages_total

    def now(self, when: float) -> DownloadProgress:
        """This estimate carried forward to ``when`` at the measured rate."""
        if self.rate is None or self.complete or when <= self.at:
            return self
        ceiling = max(self.done_bytes, int(self.total_bytes * 0.99))
        done = min(ceiling, int(self.done_bytes + self.rate * (when - self.at)))
        return replace(self, done_bytes=done, at=when)

    @property
    def eta_s(self) -> float | None:
        if self.complete:
            return 0.0
        if not self.rate:
            return None
        return max(0.0, (self.total_bytes - self.done_bytes) / self.rate)


@dataclass(frozen=True)
class Installing:
    """Downloads are done; uv is putting the packages in place."""


@dataclass(frozen=True)
class Finished:
    spec: EnvironmentSpec


class FailureKind(enum.Enum):
    OFFLINE = "offline"
    DISK_FULL = "disk_full"
    DRIVER_TOO_OLD = "driver_too_old"
    GPU_BUILD_MISSING = "gpu_build_missing"
    UV_BROKEN = "uv_broken"
    INSTALLATION_BROKEN = "installation_broken"
    ALREADY_RUNNING = "already_running"
    OTHER = "other"


class SetupFailure(Exception):
    """A failed set-up, in words for the artist: ``summary`` for a view that shows the log's
    path on its own, ``message`` (the summary and the log's path) everywhere else."""

    def __init__(
        self,
        kind: FailureKind,
        summary: str,
        log_path: Path,
        *,
        can_retry: bool,
        can_continue_without_gpu: bool = False,
        message: str | None = None,
    ) -> None:
        self.kind = kind
        self.summary = summary
        self.message = message or f"{summary}\n\nDetails are in the log: {log_path}"
        self.log_path = log_path
        self.can_retry = can_retry
        self.can_continue_without_gpu = can_continue_without_gpu
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"SetupFailure({self.kind.name}, {self.message!r})"


class SetupCancelled(Exception):
    """The artist cancelled; nothing was stamped, so the next start resumes."""


@dataclass(frozen=True)
class Failed:
    failure: SetupFailure


@dataclass(frozen=True)
class Cancelled:
    """The set-up stopped because the artist cancelled it."""


Event = GpuDetected | StepStarted | DownloadProgress | Installing | Finished | Failed | Cancelled


# ── uv's output ──────────────────────────────────────────────────────────────────────────────

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# uv 0.13 prints, for each of the larger downloads (small ones go unmentioned):
#   "Downloading numpy (15.6MiB)"  when it starts   and   " Downloaded numpy"  when it is done;
# then "Prepared 4 packages in 291ms" and "Installed 4 packages in 35ms".
_DOWNLOADING = re.compile(
    r"^Downloading (?P<name>.+) \((?P<size>\d+(?:\.\d+)?) ?(?P<unit>[kKMGT]?i?B)\)$"
)
_DOWNLOADED = re.compile(r"^Downloaded (?P<name>.+)$")
_PREPARED = re.compile(r"^Prepared \d+ packages?\b")
_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
_UNITS |= {"KB": 10**3, "kB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


def parse_size(number: str, unit: str) -> int:
    return int(float(number) * _UNITS.get(unit, 1))


class DownloadTracker:
    """Estimates the bytes downloaded from uv's start and end lines.

    uv downloads in parallel and the connections share the bandwidth. So when a download ends,
    every download still running has received about as much as the one that just ended, and
    the bytes so far are the finished ones plus that much for each one still running; divided
    by the time since the first started, that gives the rate the estimate moves on with.
    """

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}
        self.finished: set[str] = set()
        self.started_at: float | None = None
        self.estimate: DownloadProgress | None = None

    def start(self, name: str, size: int, now: float) -> DownloadProgress:
        if self.started_at is None:
            self.started_at = now
        self.sizes[name] = size
        return self._progress(now, current=name)

    def finish(self, name: str, now: float) -> DownloadProgress | None:
        if name not in self.sizes or name in self.finished:
            return None
        self.finished.add(name)
        return self._progress(now, current=name)

    def _progress(self, now: float, current: str) -> DownloadProgress:
        total = sum(self.sizes.values())
        finished = sum(self.sizes[name] for name in self.finished)
        running = [size for name, size in self.sizes.items() if name not in self.finished]
        last = max((self.sizes[name] for name in self.finished), default=0)
        done = min(total, finished + sum(min(size, last) for size in running))
        if self.estimate is not None and not running:
            done = total
        elif self.estimate is not None:
            done = max(done, min(self.estimate.now(now).done_bytes, total))
        elapsed = now - (self.started_at if self.started_at is not None else now)
        rate = done / elapsed if done and elapsed > 0 else None
        self.estimate = DownloadProgress(
            done, total, len(self.finished), len(self.sizes), rate, now, current
        )
        return self.estimate


class OutputParser:
    """Turns uv's output lines into progress events."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.downloads = DownloadTracker()

    def feed(self, raw: str) -> Event | None:
        line = _ANSI.sub("", raw).rstrip()
        text = line.strip()
        if match := _DOWNLOADING.match(text):
            size = parse_size(match["size"], match["unit"])
            return self.downloads.start(match["name"], size, self.clock())
        if match := _DOWNLOADED.match(text):
            return self.downloads.finish(match["name"], self.clock())
        if _PREPARED.match(text):
            return Installing()
        return None


# ── What went wrong, in words ────────────────────────────────────────────────────────────────

_DISK_FULL = re.compile(
    r"no space left on device|os error 28\b|not enough space on the disk|os error 112\b"
    r"|disk quota exceeded|os error 122\b",
    re.IGNORECASE,
)
_OFFLINE = re.compile(
    r"dns error|failed to lookup address|name or service not known|no such host is known"
    r"|temporary failure in name resolution|tcp connect error|connection refused"
    r"|actively refused|connection reset|forcibly closed|connection closed|connection aborted"
    r"|network is unreachable|no route to host|timed out|network timeout|error sending request"
    r"|os error (?:10050|10051|10054|10060|10061|10065|11001|11002|11004|101|104|110|111|113)\b"
    r"|invalid peer certificate|certificate verify failed|unknown ?issuer|tls handshake"
    r"|because the network was disabled",
    re.IGNORECASE,
)
_NOT_FOUND = re.compile(r"no solution found|not found in the package registry", re.IGNORECASE)
_TORCH = re.compile(r"\btorch(vision|audio)?\b", re.IGNORECASE)


def classify(output: str) -> FailureKind:
    """The kind of failure uv's output shows."""
    if _DISK_FULL.search(output):
        return FailureKind.DISK_FULL
    if _OFFLINE.search(output):
        return FailureKind.OFFLINE
    if _NOT_FOUND.search(output) and _TORCH.search(output):
        return FailureKind.GPU_BUILD_MISSING
    return FailureKind.OTHER


def failure_for(
    kind: FailureKind,
    log_path: Path,
    *,
    installation: Installation | None = None,
    variant: TorchVariant | None = None,
) -> SetupFailure:
    """The artist's message for a kind of failure; every one names the log."""
    retry, without_gpu = True, False
    if kind is FailureKind.OFFLINE:
        text = (
            "charstudio couldn't reach the download server. Check that this computer is "
            "connected to the internet (and that no firewall or proxy blocks charstudio), then "
            "click Retry. What was already downloaded is kept."
        )
    elif kind is FailureKind.DISK_FULL:
        where = f" (the drive with {installation.home})" if installation else ""
        text = (
            "There isn't enough free disk space to install charstudio's components"
            f"{where}. They need several gigabytes. Free up some space, then click Retry."
        )
    elif kind is FailureKind.DRIVER_TOO_OLD:
        driver = variant.driver if variant and variant.driver else "installed"
        needed = variant.min_driver if variant and variant.min_driver else "a newer one"
        card = f" for your {variant.gpu_label}" if variant and variant.gpu_label else ""
        text = (
            f"Your NVIDIA graphics driver ({driver}) is too old for the GPU version of PyTorch"
            f"{card}: it needs driver {needed} or newer. Update the driver with the NVIDIA app "
            "or from NVIDIA's website, then click Retry. Or continue without the GPU: "
            "charstudio works, but generating and training are very slow."
        )
        without_gpu = True
    elif kind is FailureKind.GPU_BUILD_MISSING:
        cuda = f" for CUDA {variant.cuda}" if variant and variant.cuda else ""
        text = (
            f"The download server has no PyTorch build{cuda} for this version of charstudio. "
            "Click Retry later, or continue without the GPU (very slow) until an update of "
            "charstudio fixes this."
        )
        without_gpu = True
    elif kind is FailureKind.UV_BROKEN:
        text = (
            "charstudio's installation is damaged: its setup tool (uv) is missing or cannot "
            "run. Please reinstall charstudio."
        )
        retry = False
    elif kind is FailureKind.ALREADY_RUNNING:
        text = (
            "charstudio is already being set up in another window. It opens by itself when "
            "that is done."
        )
    elif kind is FailureKind.INSTALLATION_BROKEN:
        text = "charstudio's installation is incomplete. Please reinstall charstudio."
        retry = False
    else:
        return SetupFailure(
            kind,
            "Setting up charstudio failed.",
            log_path,
            can_retry=True,
            message=f"Setting up charstudio failed; details in {log_path}",
        )
    return SetupFailure(kind, text, log_path, can_retry=retry, can_continue_without_gpu=without_gpu)


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


# ── Words for a progress display ─────────────────────────────────────────────────────────────


def format_size(size: int) -> str:
    if size >= 1 << 30:
        return f"{size / (1 << 30):.1f} GB"
    return f"{max(size, 0) / (1 << 20):.0f} MB"


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return "less than a minute left"
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min left"
    return f"about {minutes // 60} h {minutes % 60:02d} min left"


def format_amounts(done: int, total: int) -> str:
    if total >= 1 << 30:
        return f"{done / (1 << 30):.1f} of {total / (1 << 30):.1f} GB"
    return f"{done / (1 << 20):.0f} of {total / (1 << 20):.0f} MB"


class SetupProgress:
    """The state of a set-up as a view shows it: a sentence, a fraction (None: not known),
    and the graphics-card line. Fed the events in order; ``now`` moves downloads on between
    events."""

    def __init__(self) -> None:
        self.variant: TorchVariant | None = None
        self.step: StepStarted | None = None
        self.download: DownloadProgress | None = None
        self.installing = False
        self.finished = False

    def apply(self, event: Event) -> None:
        if isinstance(event, GpuDetected):
            self.variant = event.variant
        elif isinstance(event, StepStarted):
            self.step, self.download, self.installing = event, None, False
        elif isinstance(event, DownloadProgress):
            self.download = event
        elif isinstance(event, Installing):
            self.installing = True
        elif isinstance(event, Finished):
            self.finished = True

    def what(self) -> str:
        variant = self.variant
        if variant is None or variant.backend == "cpu":
            return "PyTorch (CPU build)"
        card = f" for your {variant.gpu_name}" if variant.gpu_name else ""
        return f"PyTorch with CUDA {variant.cuda}{card}"

    def headline(self, now: float) -> str:
        if self.finished:
            return "Starting charstudio…"
        if self.step is None:
            return "Checking your graphics card…"
        if not self.step.downloads:
            return "Preparing Python…"
        if self.installing:
            return f"Installing {self.what()}…"
        if self.download is None:
            return f"Getting ready to download {self.what()}…"
        progress = self.download.now(now)
        parts = [format_amounts(progress.done_bytes, progress.total_bytes)]
        if eta := format_eta(progress.eta_s):
            parts.append(eta)
        return f"Downloading {self.what()} — " + " · ".join(parts)

    def fraction(self, now: float) -> float | None:
        """Downloads fill 90% of the bar, installing the rest; None while not measurable."""
        if self.finished:
            return 1.0
        if self.installing:
            return 0.95
        if self.download is None or self.download.total_bytes <= 0:
            return None
        progress = self.download.now(now)
        if progress.done_bytes <= 0:
            return None
        return 0.9 * progress.done_bytes / progress.total_bytes

    def detail(self) -> str:
        return self.variant.reason if self.variant else ""
