"""The Windows first run's logic, on Linux, with a stand-in uv and a stand-in nvidia-smi."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from charstudio.install import environment
from charstudio.install.environment import EnvironmentSpec, env_python, read_stamp
from charstudio.install.first_run import (
    CancelToken,
    FirstRun,
    Installation,
    SetupLock,
    launch_detached,
    split_args,
)
from charstudio.install.paths import log_dir
from charstudio.install.setup_events import (
    Cancelled,
    DownloadProgress,
    Event,
    Failed,
    Finished,
    GpuDetected,
    Installing,
    StepStarted,
)
from charstudio.install.setup_failures import FailureKind, classify
from charstudio.install.setup_progress import SetupProgress, format_eta
from charstudio.install.torch_variant import Outcome, TorchVariant
from charstudio.install.uv_output import OutputParser

pytestmark = pytest.mark.skipif(os.name == "nt", reason="the stand-ins are POSIX scripts")

REPO = Path(__file__).resolve().parents[1]
GiB, MiB = 1 << 30, 1 << 20
RTX_3060 = "NVIDIA GeForce RTX 3060, 581.57, 12288, 8.6\n"
OLD_DRIVER = "NVIDIA GeForce RTX 3060, 566.14, 12288, 8.6\n"

# uv 0.13's own words (the index address left out): what the stand-in prints.
UV_OFFLINE_DNS = """\
error: Failed to fetch: `<index>/simple/torch/`
  cause: error sending request for url (<index>/simple/torch/)
  cause: client error (Connect)
  cause: dns error
  cause: failed to lookup address information: Name or service not known"""
UV_OFFLINE_REFUSED = """\
error: Request failed after 3 retries in 10.5s
  cause: Failed to fetch: <index>/simple/torch/
  cause: error sending request for url (<index>/simple/torch/)
  cause: client error (Connect)
  cause: tcp connect error
  cause: Connection refused (os error 111)"""
UV_DISK_FULL = """\
error: Failed to install: numpy-2.1.3-cp311-cp311-manylinux_2_17_x86_64.whl (numpy==2.1.3)
  cause: failed to write to file `env/lib/python3.11/site-packages/numpy/core/_multiarray.so`: \
No space left on device (os error 28)"""
UV_NO_TORCH_BUILD = """\
error: No solution found when resolving dependencies:
  cause: Because there is no version of torch==2.15.0 and you require torch==2.15.0, we can \
conclude that your requirements are unsatisfiable."""
UV_ODD = "error: Querying Python at `env/bin/python` failed with exit status exit code: 1"
UV_FAILURES = {
    "offline": UV_OFFLINE_DNS,
    "refused": UV_OFFLINE_REFUSED,
    "disk": UV_DISK_FULL,
    "no_torch_build": UV_NO_TORCH_BUILD,
    "odd": UV_ODD,
}

STANDIN_UV = """\
#!{python}
# A stand-in for uv 0.13: records its arguments, prints what uv prints, makes what uv makes.
import json, sys, time
from pathlib import Path

here = Path(__file__).resolve().parent
args = sys.argv[1:]
with (here / "calls.jsonl").open("a", encoding="utf-8") as calls:
    calls.write(json.dumps(args) + "\\n")
control_file = here / "behaviour.json"
control = json.loads(control_file.read_text(encoding="utf-8")) if control_file.exists() else {{}}
FAILURES = {failures}


def say(line):
    print(line, file=sys.stderr, flush=True)


if args[:1] == ["venv"]:
    venv = Path(args[1])
    say("Using CPython 3.11.7")
    say(f"Creating virtual environment at: {{venv}}")
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    (venv / "bin" / "python").write_text("#!/bin/sh\\n", encoding="utf-8")
    (venv / "lib" / "python3.11" / "site-packages").mkdir(parents=True, exist_ok=True)
    (venv / "created-by-uv-venv").write_text(str(time.time_ns()), encoding="utf-8")
    say(f"Activate with: source {{venv}}/bin/activate")
    sys.exit(0)

if args[:2] == ["pip", "sync"]:
    python = Path(args[args.index("--python") + 1])
    say(f"Using Python 3.11.7 environment at: {{python.parent.parent}}")
    say("Resolved 3 packages in 64ms")
    failures = control.get("failures", [])
    if failures:
        failure = failures.pop(0)
        control_file.write_text(json.dumps(control), encoding="utf-8")
        say(FAILURES[failure])
        sys.exit(2 if failure != "odd" else 1)
    say("Downloading torch (2.3GiB)")
    say("Downloading numpy (15.6MiB)")
    say(" Downloaded numpy")
    if control.get("slow"):
        time.sleep(60)
    say(" Downloaded torch")
    say("Prepared 3 packages in 2.10s")
    say("Installed 3 packages in 35ms")
    say(" + numpy==2.1.3")
    say(" + six==1.16.0")
    say(" + torch==2.15.0")
    site = python.parent.parent / "lib" / "python3.11" / "site-packages"
    backend = args[args.index("--torch-backend") + 1] if "--torch-backend" in args else None
    (site / "installed.json").write_text(
        json.dumps({{"lock": Path(args[2]).read_text(encoding="utf-8"), "backend": backend}}),
        encoding="utf-8",
    )
    sys.exit(0)

say("error: unrecognized subcommand")
sys.exit(2)
"""

STANDIN_SMI = """\
#!{python}
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
with (here / "smi-calls.txt").open("a", encoding="utf-8") as calls:
    calls.write(" ".join(sys.argv[1:]) + "\\n")
sys.stdout.write((here / "smi-output.txt").read_text(encoding="utf-8"))
"""


@dataclass
class Rig:
    """An installed charstudio in a folder with spaces and non-ASCII letters, a stand-in uv in
    it, a stand-in nvidia-smi on PATH, and a launcher that records instead of starting."""

    tmp: Path
    installation: Installation
    environ: dict[str, str]
    log_path: Path
    launched: list[tuple[list[str], Path]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def session(self, argv: Sequence[str] = (), **kwargs: object) -> FirstRun:
        options: dict[str, object] = {
            "installation": self.installation,
            "environ": self.environ,
            "log_path": self.log_path,
            "launcher": self.launch,
            "home_dir": self.tmp / "home of José",
        }
        return FirstRun(list(argv), **(options | kwargs))  # type: ignore[arg-type]

    def launch(self, argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> None:
        self.launched.append((list(argv), cwd))

    def run(self, argv: Sequence[str] = (), *, without_gpu: bool = False) -> Event:
        self.events = []
        return self.session(argv).run(self.events.append, without_gpu=without_gpu)

    def gpu(self, smi_output: str | None) -> None:
        """What nvidia-smi prints; None: no nvidia-smi (no NVIDIA driver)."""
        smi = self.tmp / "drivers ü" / "nvidia-smi"
        if smi_output is None:
            smi.unlink(missing_ok=True)
            return
        smi.parent.mkdir(exist_ok=True)
        smi.write_text(STANDIN_SMI.format(python=sys.executable), encoding="utf-8")
        smi.chmod(0o755)
        (smi.parent / "smi-output.txt").write_text(smi_output, encoding="utf-8")

    def smi_calls(self) -> int:
        calls = self.tmp / "drivers ü" / "smi-calls.txt"
        return len(calls.read_text(encoding="utf-8").splitlines()) if calls.exists() else 0

    def uv_behaves(self, *, failures: Sequence[str] = (), slow: bool = False) -> None:
        control = {"failures": list(failures), "slow": slow}
        (self.installation.uv.parent / "behaviour.json").write_text(json.dumps(control))

    def uv_calls(self) -> list[list[str]]:
        calls = self.installation.uv.parent / "calls.jsonl"
        if not calls.exists():
            return []
        return [json.loads(line) for line in calls.read_text(encoding="utf-8").splitlines()]

    @property
    def venv(self) -> Path:
        return self.installation.venv

    def stamp(self) -> dict[str, str | None] | None:
        return read_stamp(self.installation.venv)

    def installed(self) -> dict[str, str | None]:
        site = self.venv / "lib" / "python3.11" / "site-packages"
        found: dict[str, str | None] = json.loads((site / "installed.json").read_text("utf-8"))
        return found


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    home = tmp_path / "Programme Ünïcode" / "charstudio"
    app = home / "app"
    (app / "requirements").mkdir(parents=True)
    (app / "requirements" / "lock.txt").write_text("six==1.16.0\ntorch==2.15.0\n")
    (app / "requirements" / "uv.txt").write_text("uv==0.13.10\n")
    uv = home / "uv" / "uv"
    uv.parent.mkdir(parents=True)
    uv.write_text(
        STANDIN_UV.format(python=sys.executable, failures=repr(UV_FAILURES)), encoding="utf-8"
    )
    uv.chmod(0o755)
    (tmp_path / "home of José").mkdir()
    environ = {"PATH": str(tmp_path / "drivers ü"), "CHARSTUDIO_HOME": str(home)}
    installation = Installation(home=home, app_root=app, uv=uv, windows=False)
    made = Rig(tmp_path, installation, environ, tmp_path / "logs ü" / "setup.log")
    made.gpu(RTX_3060)
    return made


def test_split_args_strips_the_repair_flag() -> None:
    assert split_args(["--repair-environment", "My Project"]) == (True, ["My Project"])
    assert split_args(["My Project", "--version"]) == (False, ["My Project", "--version"])


def test_first_setup_creates_the_environment_stamps_it_and_starts_the_app(rig: Rig) -> None:
    final = rig.run(["C:/Projects/fr3nch lady", "--verbose"])
    assert isinstance(final, Finished), final
    venv, uv = rig.venv, str(rig.installation.uv)
    assert rig.uv_calls() == [
        ["venv", str(venv), "--python", "3.11", "--clear", "--no-project", "--managed-python"],
        [
            "pip",
            "sync",
            str(rig.installation.lock),
            "--python",
            str(env_python(venv)),
            "--torch-backend",
            "cu132",
        ],
    ]
    assert rig.installed()["backend"] == "cu132"
    stamp = rig.stamp()
    assert stamp is not None and stamp["torch_backend"] == "cu132"
    pth = (venv / "lib/python3.11/site-packages/charstudio-app.pth").read_text(encoding="ascii")
    assert ast.literal_eval(pth.split("append(", 1)[1].rstrip(")\n")) == str(
        rig.installation.app_root
    )
    assert rig.launched == [
        (
            [
                str(env_python(venv, gui=True)),
                "-m",
                "charstudio",
                "C:/Projects/fr3nch lady",
                "--verbose",
            ],
            rig.tmp / "home of José",
        )
    ]
    kinds = [type(event).__name__ for event in rig.events]
    assert kinds[:2] == ["GpuDetected", "StepStarted"]
    assert kinds[-1] == "Finished"
    assert "DownloadProgress" in kinds and "Installing" in kinds
    steps = [e for e in rig.events if isinstance(e, StepStarted)]
    assert [(s.index, s.count, s.downloads) for s in steps] == [(0, 2, False), (1, 2, True)]
    assert steps[1].argv[0] == uv
    log = rig.log_path.read_text(encoding="utf-8")
    assert "$ " + f'"{uv}" pip sync' in log  # the command, quoted (the path has spaces)
    assert "| Downloading torch (2.3GiB)" in log
    assert "NVIDIA GeForce RTX 3060 (12 GB), driver 581.57 → CUDA 13.2 build" in log
    first = log.splitlines()[0]
    time.strptime(first[:19], "%Y-%m-%d %H:%M:%S")  # every line starts with a timestamp


def test_the_fast_path_runs_neither_uv_nor_nvidia_smi(rig: Rig) -> None:
    assert isinstance(rig.run(), Finished)
    uv_calls, smi_calls = len(rig.uv_calls()), rig.smi_calls()
    assert smi_calls == 1
    rig.gpu("this nvidia-smi must not run\n")
    session = rig.session(["Ünïcode project"])
    assert session.try_fast_path()
    assert len(rig.uv_calls()) == uv_calls
    assert rig.smi_calls() == smi_calls
    assert rig.launched[-1][0][-1] == "Ünïcode project"


def test_the_fast_path_uses_the_backend_the_stamp_records(rig: Rig) -> None:
    """A CPU environment stays current when a GPU appears later: the next start doesn't ask
    nvidia-smi (repair does)."""
    rig.gpu(None)
    assert isinstance(rig.run(), Finished)
    assert rig.installed()["backend"] == "cpu"
    rig.gpu(RTX_3060)
    assert rig.session().try_fast_path()
    assert rig.smi_calls() == 0


def test_no_fast_path_before_a_finished_setup(rig: Rig) -> None:
    assert not rig.session().try_fast_path()
    (rig.venv / "bin").mkdir(parents=True)
    env_python(rig.venv).write_text("")  # an environment without a stamp: interrupted
    assert not rig.session().try_fast_path()
    assert rig.launched == []


def test_repair_detects_again_and_resyncs_and_the_flag_never_reaches_the_app(rig: Rig) -> None:
    assert isinstance(rig.run(), Finished)
    before = len(rig.uv_calls())
    session = rig.session(["--repair-environment", "project"])
    assert not session.try_fast_path()
    events: list[Event] = []
    assert isinstance(session.run(events.append), Finished)
    new_calls = rig.uv_calls()[before:]
    assert [call[:2] for call in new_calls] == [["pip", "sync"]]
    assert "--reinstall" in new_calls[0]  # damaged files are replaced from the cache
    assert rig.smi_calls() == 2
    assert rig.launched[-1][0][3:] == ["project"]


def test_an_update_after_a_driver_update_replaces_the_cpu_torch(rig: Rig) -> None:
    rig.gpu(OLD_DRIVER)
    assert isinstance(rig.run(without_gpu=True), Finished)
    assert rig.installed()["backend"] == "cpu"
    rig.gpu(RTX_3060)
    lock = rig.installation.lock
    lock.write_text(lock.read_text() + "regex==2026.12.2\n")  # a newer charstudio
    before = len(rig.uv_calls())
    assert isinstance(rig.run(), Finished)
    [sync] = rig.uv_calls()[before:]
    assert sync[sync.index("--torch-backend") + 1] == "cu132"
    assert sync[-4:] == ["--reinstall-package", "torch", "--reinstall-package", "torchvision"]
    stamp = rig.stamp()
    assert stamp is not None and stamp["torch_backend"] == "cu132"


def test_a_new_lock_resyncs_without_recreating_the_environment(rig: Rig) -> None:
    assert isinstance(rig.run(), Finished)
    created = (rig.venv / "created-by-uv-venv").read_text()
    new_lock = "six==1.17.0\ntorch==2.15.0\n"
    rig.installation.lock.write_text(new_lock)  # what installing a newer charstudio does
    assert not rig.session().try_fast_path()
    before = len(rig.uv_calls())
    assert isinstance(rig.run(), Finished)
    assert [call[:2] for call in rig.uv_calls()[before:]] == [["pip", "sync"]]
    assert (rig.venv / "created-by-uv-venv").read_text() == created
    assert rig.installed()["lock"] == new_lock
    stamp = rig.stamp()
    assert stamp is not None
    assert stamp["lock_sha256"] == hashlib.sha256(new_lock.encode()).hexdigest()
    assert rig.session().try_fast_path()


@pytest.mark.parametrize("failure", ["offline", "refused"])
def test_offline_failure_then_retry_succeeds(rig: Rig, failure: str) -> None:
    rig.uv_behaves(failures=[failure])
    final = rig.run()
    assert isinstance(final, Failed)
    problem = final.failure
    assert problem.kind is FailureKind.OFFLINE
    assert problem.can_retry and not problem.can_continue_without_gpu
    assert "couldn't reach the download server" in problem.message
    assert "internet" in problem.message
    assert str(rig.log_path) in problem.message
    assert problem.message == f"{problem.summary}\n\nDetails are in the log: {rig.log_path}"
    assert problem.log_path == rig.log_path
    assert rig.stamp() is None
    assert rig.launched == []
    assert (
        "dns error" in rig.log_path.read_text() or "Connection refused" in rig.log_path.read_text()
    )
    # Retry: the environment exists now, so only the sync runs again.
    before = len(rig.uv_calls())
    assert isinstance(rig.run(), Finished)
    assert [call[:2] for call in rig.uv_calls()[before:]] == [["pip", "sync"]]
    assert rig.stamp() is not None
    assert len(rig.launched) == 1


def test_disk_full(rig: Rig) -> None:
    rig.uv_behaves(failures=["disk"])
    final = rig.run()
    assert isinstance(final, Failed)
    assert final.failure.kind is FailureKind.DISK_FULL
    assert "enough free disk space" in final.failure.message
    assert str(rig.installation.home) in final.failure.message
    assert str(rig.log_path) in final.failure.message
    assert final.failure.can_retry
    assert rig.stamp() is None


def test_any_other_uv_failure_reads_plainly(rig: Rig) -> None:
    rig.uv_behaves(failures=["odd"])
    final = rig.run()
    assert isinstance(final, Failed)
    assert final.failure.kind is FailureKind.OTHER
    assert final.failure.message == f"Setting up charstudio failed; details in {rig.log_path}"
    assert final.failure.can_retry
    assert "Querying Python" in rig.log_path.read_text(encoding="utf-8")


def test_a_missing_gpu_build_offers_the_cpu_build(rig: Rig) -> None:
    rig.uv_behaves(failures=["no_torch_build"])
    final = rig.run()
    assert isinstance(final, Failed)
    assert final.failure.kind is FailureKind.GPU_BUILD_MISSING
    assert "CUDA 13.2" in final.failure.message
    assert final.failure.can_continue_without_gpu
    assert isinstance(rig.run(without_gpu=True), Finished)
    assert rig.installed()["backend"] == "cpu"


def test_driver_too_old_stops_before_any_download_and_offers_the_cpu_build(rig: Rig) -> None:
    rig.gpu(OLD_DRIVER)
    final = rig.run()
    assert isinstance(final, Failed)
    problem = final.failure
    assert problem.kind is FailureKind.DRIVER_TOO_OLD
    assert rig.uv_calls() == []
    assert "566.14" in problem.message and "580" in problem.message
    assert "NVIDIA GeForce RTX 3060 (12 GB)" in problem.message
    assert problem.can_retry and problem.can_continue_without_gpu
    assert str(rig.log_path) in problem.message
    # "Continue without GPU (slow)" on the same session: nvidia-smi isn't asked again.
    session = rig.session()
    session.run(lambda event: None)
    events: list[Event] = []
    assert isinstance(session.run(events.append, without_gpu=True), Finished)
    assert rig.smi_calls() == 2
    detected = [e.variant for e in events if isinstance(e, GpuDetected)]
    assert [(v.backend, v.outcome) for v in detected] == [("cpu", Outcome.CPU_CHOSEN)]
    assert rig.installed()["backend"] == "cpu"
    stamp = rig.stamp()
    assert stamp is not None and stamp["torch_backend"] == "cpu"


def test_uv_missing_or_corrupt(rig: Rig) -> None:
    uv = rig.installation.uv
    uv.unlink()
    final = rig.run()
    assert isinstance(final, Failed)
    assert final.failure.kind is FailureKind.UV_BROKEN
    assert not final.failure.can_retry
    assert "reinstall charstudio" in final.failure.message
    assert str(rig.log_path) in final.failure.message
    uv.write_bytes(b"MZ\x90\x00 not a program for this system")
    uv.chmod(0o755)
    final = rig.run()
    assert isinstance(final, Failed) and final.failure.kind is FailureKind.UV_BROKEN
    uv.chmod(0o644)
    final = rig.run()
    assert isinstance(final, Failed) and final.failure.kind is FailureKind.UV_BROKEN
    assert rig.stamp() is None and rig.launched == []


def test_a_second_start_during_the_setup_runs_no_uv(rig: Rig) -> None:
    held = SetupLock(rig.installation.setup_lock)
    assert held.acquire()
    try:
        final = rig.run()
    finally:
        held.release()
    assert isinstance(final, Failed)
    assert final.failure.kind is FailureKind.ALREADY_RUNNING
    assert "already being set up" in final.failure.message
    assert rig.uv_calls() == [] and rig.smi_calls() == 0
    assert isinstance(rig.run(), Finished)  # the lock is free again, and so after a set-up
    assert SetupLock(rig.installation.setup_lock).acquire()


def test_a_missing_lock_means_a_broken_installation(rig: Rig) -> None:
    rig.installation.lock.unlink()
    assert not rig.session().try_fast_path()
    final = rig.run()
    assert isinstance(final, Failed)
    assert final.failure.kind is FailureKind.INSTALLATION_BROKEN
    assert "reinstall" in final.failure.message
    assert rig.uv_calls() == []


def test_unexpected_errors_are_logged_with_their_traceback_never_shown(rig: Rig) -> None:
    def boom() -> TorchVariant:
        raise RuntimeError("boom in detection")

    events: list[Event] = []
    final = rig.session(detect=boom).run(events.append)
    assert isinstance(final, Failed)
    assert final.failure.message == f"Setting up charstudio failed; details in {rig.log_path}"
    assert "Traceback" not in final.failure.message
    log = rig.log_path.read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in log
    assert "RuntimeError: boom in detection" in log
    assert events == [final]


def test_a_failed_launch_is_a_failure_not_a_traceback(rig: Rig) -> None:
    def cannot_launch(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> None:
        raise FileNotFoundError(2, "No such file or directory", argv[0])

    final = rig.session(launcher=cannot_launch).run(lambda event: None)
    assert isinstance(final, Failed)
    assert final.failure.kind is FailureKind.OTHER
    assert "FileNotFoundError" in rig.log_path.read_text(encoding="utf-8")


def test_cancel_stops_uv_and_stamps_nothing_so_the_next_start_resumes(rig: Rig) -> None:
    rig.run()  # an environment exists
    rig.installation.lock.write_text("six==1.17.0\ntorch==2.15.0\n")
    rig.uv_behaves(slow=True)
    session = rig.session()
    token = CancelToken()
    events: list[Event] = []
    downloading = threading.Event()

    def on_event(event: Event) -> None:
        events.append(event)
        if isinstance(event, DownloadProgress) and event.packages_done:
            downloading.set()

    worker = threading.Thread(target=session.run, args=(on_event, token))
    started = time.monotonic()
    worker.start()
    assert downloading.wait(20), events
    token.cancel()
    worker.join(20)
    assert not worker.is_alive()
    assert time.monotonic() - started < 30  # uv was stopped, not waited for (it sleeps 60 s)
    assert isinstance(events[-1], Cancelled)
    stamp = rig.stamp()
    assert stamp is not None
    assert stamp["lock_sha256"] != hashlib.sha256(b"six==1.17.0\ntorch==2.15.0\n").hexdigest()
    assert not rig.session().try_fast_path()
    assert len(rig.launched) == 1  # only the first run's
    rig.uv_behaves()
    assert isinstance(rig.run(), Finished)
    assert rig.session().try_fast_path()


def test_cancel_before_uv_starts_runs_no_step(rig: Rig) -> None:
    token = CancelToken()
    token.cancel()
    final = rig.session().run(lambda event: None, token)
    assert isinstance(final, Cancelled)
    assert rig.uv_calls() == []
    assert rig.stamp() is None


# ── uv's output → progress ───────────────────────────────────────────────────────────────────


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_download_progress_and_eta_from_uv_lines() -> None:
    clock = Clock()
    parser = OutputParser(clock)
    assert parser.feed("Using Python 3.11.7 environment at: env") is None
    assert parser.feed("Resolved 98 packages in 1.21s") is None
    first = parser.feed("Downloading torch (2.3GiB)")
    assert isinstance(first, DownloadProgress)
    assert (first.done_bytes, first.total_bytes, first.rate, first.eta_s) == (
        0,
        int(2.3 * GiB),
        None,
        None,
    )
    parser.feed("Downloading nvidia-cudnn-cu13 (600.0MiB)")
    numpy = parser.feed("Downloading numpy (15.6MiB)")
    assert isinstance(numpy, DownloadProgress)
    total = int(2.3 * GiB) + 600 * MiB + int(15.6 * MiB)
    assert (numpy.total_bytes, numpy.packages_total) == (total, 3)
    clock.now = 102.0
    done = parser.feed(" Downloaded numpy")
    assert isinstance(done, DownloadProgress)
    # The two still running have each received about what numpy had: 3 × 15.6 MiB in 2 s.
    received = 3 * int(15.6 * MiB)
    assert done.done_bytes == received
    assert done.rate == pytest.approx(received / 2)
    assert done.eta_s == pytest.approx((total - received) / (received / 2))
    assert done.packages_done == 1
    # Between uv's lines a view carries the estimate on at the measured rate.
    later = done.now(104.0)
    assert later.done_bytes == int(received + 2 * received / 2)
    assert later.eta_s == pytest.approx((total - later.done_bytes) / (received / 2))
    assert done.now(10_000.0).done_bytes == int(total * 0.99)  # never "done" before uv says so
    clock.now = 160.0
    parser.feed(" Downloaded nvidia-cudnn-cu13")
    clock.now = 200.0
    last = parser.feed(" Downloaded torch")
    assert isinstance(last, DownloadProgress)
    assert (last.done_bytes, last.packages_done, last.eta_s) == (total, 3, 0.0)
    assert parser.feed(" Downloaded torch") is None  # a repeat changes nothing
    assert isinstance(parser.feed("Prepared 3 packages in 1m 40s"), Installing)
    assert parser.feed("Installed 98 packages in 2.31s") is None


def test_output_parser_reads_other_sizes_and_colours() -> None:
    parser = OutputParser(Clock())
    kib = parser.feed("Downloading pillow (978.5KiB)")
    assert isinstance(kib, DownloadProgress) and kib.total_bytes == int(978.5 * 1024)
    python = parser.feed("Downloading cpython-3.11.14-windows-x86_64-none (download) (21.0MiB)")
    assert isinstance(python, DownloadProgress)
    assert python.current == "cpython-3.11.14-windows-x86_64-none (download)"
    coloured = parser.feed("\x1b[1mDownloading\x1b[0m scipy (36.1MiB)\r")
    assert isinstance(coloured, DownloadProgress) and coloured.packages_total == 3


def test_progress_text_for_the_window() -> None:
    variant = TorchVariant(
        "cu132",
        Outcome.CUDA,
        "NVIDIA GeForce RTX 3060 (12 GB), driver 581.57 → CUDA 13.2 build",
        gpu_name="NVIDIA GeForce RTX 3060",
        cuda="13.2",
    )
    view = SetupProgress()
    assert view.headline(0) == "Checking your graphics card…"
    view.apply(GpuDetected(variant))
    view.apply(StepStarted(0, 2, "Creating the Python environment", ("uv", "venv"), False))
    assert view.headline(0) == "Preparing Python…"
    assert view.fraction(0) is None
    view.apply(StepStarted(1, 2, "Installing the pinned packages", ("uv", "pip", "sync"), True))
    assert view.headline(0) == (
        "Getting ready to download PyTorch with CUDA 13.2 for your NVIDIA GeForce RTX 3060…"
    )
    total = int(2.9 * GiB)
    view.apply(DownloadProgress(int(1.2 * GiB), total, 3, 40, rate=10 * MiB, at=50.0))
    assert view.headline(50.0) == (
        "Downloading PyTorch with CUDA 13.2 for your NVIDIA GeForce RTX 3060 — "
        "1.2 of 2.9 GB · about 3 min left"
    )
    assert view.fraction(50.0) == pytest.approx(0.9 * 1.2 / 2.9, abs=1e-3)
    assert view.fraction(60.0) > view.fraction(50.0)  # type: ignore[operator]
    assert view.detail() == variant.reason
    view.apply(Installing())
    assert (
        view.headline(70.0) == "Installing PyTorch with CUDA 13.2 for your NVIDIA GeForce RTX 3060…"
    )
    cpu = SetupProgress()
    cpu.apply(GpuDetected(TorchVariant("cpu", Outcome.NO_GPU, "No NVIDIA graphics card found")))
    cpu.apply(StepStarted(0, 1, "Installing", ("uv", "pip", "sync"), True))
    cpu.apply(DownloadProgress(300 * MiB, 900 * MiB, 1, 9, rate=None, at=0.0))
    assert cpu.headline(0.0) == "Downloading PyTorch (CPU build) — 300 of 900 MB"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, ""),
        (12, "less than a minute left"),
        (61, "about 2 min left"),
        (3 * 3600 + 60, "about 3 h 01 min left"),
    ],
)
def test_eta_words(seconds: float | None, text: str) -> None:
    assert format_eta(seconds) == text


@pytest.mark.parametrize(
    ("output", "kind"),
    [
        (UV_OFFLINE_DNS, FailureKind.OFFLINE),
        (UV_OFFLINE_REFUSED, FailureKind.OFFLINE),
        ("  cause: No such host is known. (os error 11001)", FailureKind.OFFLINE),
        (
            "  cause: No connection could be made because the target machine actively refused "
            "it. (os error 10061)",
            FailureKind.OFFLINE,
        ),
        (
            "error: Failed to download distribution due to network timeout. Try increasing "
            "UV_HTTP_TIMEOUT (current value: 30s).",
            FailureKind.OFFLINE,
        ),
        ("  cause: operation timed out", FailureKind.OFFLINE),
        (UV_DISK_FULL, FailureKind.DISK_FULL),
        ("  cause: There is not enough space on the disk. (os error 112)", FailureKind.DISK_FULL),
        (UV_NO_TORCH_BUILD, FailureKind.GPU_BUILD_MISSING),
        (UV_ODD, FailureKind.OTHER),
        ("error: Failed to install: six (hash mismatch)", FailureKind.OTHER),
    ],
)
def test_classify_uv_errors(output: str, kind: FailureKind) -> None:
    assert classify(output) is kind


# ── Paths and launching ──────────────────────────────────────────────────────────────────────


def test_log_dir(tmp_path: Path) -> None:
    override = tmp_path / "über logs"
    assert log_dir({"CHARSTUDIO_LOG_DIR": str(override)}) == override
    assert override.is_dir()
    local = tmp_path / "AppData Local"
    assert log_dir({"LOCALAPPDATA": str(local)}, windows=True) == local / "charstudio" / "logs"
    state = tmp_path / "state"
    assert log_dir({"XDG_STATE_HOME": str(state)}, windows=False) == state / "charstudio" / "logs"
    assert (state / "charstudio" / "logs").is_dir()
    relative = log_dir({"XDG_STATE_HOME": "relative"}, windows=False, create=False)
    assert relative == Path.home() / ".local" / "state" / "charstudio" / "logs"


def test_installation_from_the_launchers_environment(tmp_path: Path) -> None:
    home = tmp_path / "Programs" / "charstudio"
    found = Installation.from_environment(
        {"CHARSTUDIO_HOME": str(home)}, app_root=home / "app", windows=True
    )
    assert (found.home, found.uv, found.venv) == (home, home / "uv" / "uv.exe", home / "env")
    assert found.lock == home / "app" / "requirements" / "lock.txt"
    guessed = Installation.from_environment({}, app_root=home / "app", windows=False)
    assert (guessed.home, guessed.uv) == (home, home / "uv" / "uv")
    spec = found.spec("cu132")
    assert spec == EnvironmentSpec(
        venv=home / "env",
        python=environment.WINDOWS_PYTHON,
        lock=found.lock,
        app_root=home / "app",
        torch_backend="cu132",
        managed_python=True,
    )


def test_launch_detached_starts_the_program_in_the_folder_with_the_arguments(
    tmp_path: Path,
) -> None:
    out = tmp_path / "launched.json"
    script = tmp_path / "app ü.py"
    script.write_text(
        "import json, os, sys\n"
        f"open({str(out)!r}, 'w', encoding='utf-8').write("
        "json.dumps([os.getcwd(), sys.argv[1:], os.getsid(0) == os.getpid()]))\n",
        encoding="utf-8",
    )
    cwd = tmp_path / "home of José"
    cwd.mkdir()
    launch_detached([sys.executable, str(script), "My Ünïcode project", ""], cwd, dict(os.environ))
    deadline = time.monotonic() + 20
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)
    where, args, own_session = json.loads(out.read_text(encoding="utf-8"))
    assert (Path(where), args, own_session) == (cwd, ["My Ünïcode project", ""], True)


# ── Entry points ─────────────────────────────────────────────────────────────────────────────


def copy_app(rig: Rig) -> Path:
    """The installed app folder as the installer lays it out: the install package, start.pyw,
    requirements/ (only the standard library is needed to run them)."""
    app = rig.installation.app_root
    shutil.copy(REPO / "packaging" / "windows" / "start.pyw", app / "start.pyw")
    (app / "charstudio" / "install").mkdir(parents=True)
    shutil.copy(REPO / "charstudio" / "__init__.py", app / "charstudio" / "__init__.py")
    for module in (REPO / "charstudio" / "install").glob("*.py"):
        shutil.copy(module, app / "charstudio" / "install" / module.name)
    shutil.copy(REPO / "requirements" / "uv.txt", app / "requirements" / "uv.txt")
    return app


def run_start_pyw(rig: Rig, *args: str) -> subprocess.CompletedProcess[str]:
    """start.pyw as the launcher runs it, in an isolated interpreter without site-packages."""
    env = {
        "PATH": rig.environ["PATH"],
        "HOME": str(rig.tmp / "home of José"),
        "CHARSTUDIO_HOME": str(rig.installation.home),
        "CHARSTUDIO_LOG_DIR": str(rig.log_path.parent),
        "LANG": "C.UTF-8",
    }
    start = rig.installation.app_root / "start.pyw"
    command = [sys.executable, "-I", "-S", "-X", "importtime", str(start), *args]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, cwd=rig.tmp, check=False
    )


def test_start_pyw_fast_path_starts_the_app_without_tkinter(rig: Rig) -> None:
    app = copy_app(rig)
    assert isinstance(rig.run(), Finished)
    # The app's interpreter: records how it was started.
    record = rig.tmp / "app-started.json"
    python = env_python(rig.venv, gui=True)
    python.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"with open({str(record)!r}, 'w', encoding='utf-8') as f:\n"
        "    f.write(json.dumps([os.getcwd(), sys.argv[1:]]))\n",
        encoding="utf-8",
    )
    python.chmod(0o755)
    done = run_start_pyw(rig, "My Ünïcode project")
    assert done.returncode == 0, done.stderr
    assert "tkinter" not in done.stderr  # -X importtime lists every module imported
    assert "charstudio.install.first_run" in done.stderr
    deadline = time.monotonic() + 20
    while not record.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)
    cwd, argv = json.loads(record.read_text(encoding="utf-8"))
    assert argv == ["-m", "charstudio", "My Ünïcode project"]
    assert Path(cwd) == rig.tmp / "home of José"
    assert app.is_dir()


def test_start_pyw_without_a_window_reports_a_broken_install_plainly(rig: Rig) -> None:
    """No display (the window can't open) and uv missing: the set-up runs without a window
    and the failure is reported in words, with the log's path, not as a traceback."""
    copy_app(rig)
    rig.installation.uv.unlink()
    done = run_start_pyw(rig)
    assert done.returncode == 1
    messages = [line for line in done.stderr.splitlines() if line.startswith("charstudio: ")]
    assert any("reinstall charstudio" in line for line in messages), done.stderr
    assert f"Details are in the log: {rig.log_path}" in done.stderr
    assert "Traceback" not in done.stderr


def test_importing_the_first_run_loads_no_gui_toolkit_and_no_torch() -> None:
    code = (
        "import sys\n"
        "import charstudio.install.first_run, charstudio.install.first_run_window\n"
        "import charstudio.install.torch_variant, charstudio.install.paths\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'tkinter', 'PySide6', 'torch', 'numpy'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert done.stdout.strip() == "[]"


def test_the_app_path_file_survives_a_windows_code_page(rig: Rig) -> None:
    assert isinstance(rig.run(), Finished)
    pth = rig.venv / "lib/python3.11/site-packages/charstudio-app.pth"
    line = pth.read_bytes().decode("cp1252").strip()  # as site.py reads it on such a Windows
    if line.startswith("import"):  # an executed line: the path is its string literal
        literals = [n for n in ast.walk(ast.parse(line)) if isinstance(n, ast.Constant)]
        line = next(str(n.value) for n in literals if isinstance(n.value, str))
    assert line == str(rig.installation.app_root)


# ── The window (only where an X server can be started) ───────────────────────────────────────


@pytest.fixture
def display(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("Xvfb is not installed")
        return
    pytest.importorskip("tkinter")
    number = 90 + os.getpid() % 400
    server = subprocess.Popen(
        [xvfb, f":{number}", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    monkeypatch.setenv("DISPLAY", f":{number}")
    deadline = time.monotonic() + 10
    while not Path(f"/tmp/.X11-unix/X{number}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield
    server.terminate()
    server.wait(10)


def test_the_window_shows_a_failure_then_retries_and_starts_the_app(
    rig: Rig, display: None
) -> None:
    from charstudio.install.first_run_window import SetupWindow

    rig.uv_behaves(failures=["offline"])
    window = SetupWindow(rig.session(["project"]))
    seen: dict[str, object] = {}

    def watch() -> None:
        if window.failure is None:
            window.root.after(50, watch)
            return
        seen["message"] = window.headline.cget("text")
        seen["log"] = window.log_path.get()
        seen["buttons"] = [
            str(b.cget("text"))
            for b in (window.retry, window.close, window.without_gpu, window.cancel)
            if b.winfo_manager()
        ]
        window.on_retry()

    window.root.after(50, watch)
    window.root.after(30_000, window.root.destroy)  # never hang the suite
    assert window.run() == 0
    assert "couldn't reach the download server" in str(seen["message"])
    assert str(rig.log_path) not in str(seen["message"])  # shown once, in its own field
    assert seen["log"] == str(rig.log_path)
    assert seen["buttons"] == ["Retry", "Close"]
    assert rig.launched and rig.launched[-1][0][3:] == ["project"]
    assert rig.stamp() is not None
