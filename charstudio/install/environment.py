"""The project environment, made to match the pinned lock exactly.

Everything charstudio runs on is pinned in ``requirements/lock.txt`` (written by ``relock.py``)
and installed with the uv version pinned in ``requirements/uv.txt``. An environment is
*current* when the stamp file inside it records the same lock, uv, interpreter and torch
build as asked for now; then nothing runs and the app starts at once. Otherwise the steps
below create or update it: ``uv pip sync`` installs exactly the lock (and removes anything
else), and a ``.pth`` file puts the app's source folder on the path instead of installing it,
so no build backend is resolved at install time.

Standard library only: this module runs before the environment exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

APP_ROOT = Path(__file__).resolve().parents[2]
LOCK_FILE = APP_ROOT / "requirements" / "lock.txt"
UV_PIN_FILE = APP_ROOT / "requirements" / "uv.txt"

# The Python the Windows installer's first run asks uv for (a uv-managed build); the lock is
# resolved and tested for it. The installer's build script reads this constant.
WINDOWS_PYTHON = "3.11"

STAMP_NAME = "charstudio-environment.json"
PTH_NAME = "charstudio-app.pth"
# What uv's --torch-backend changes: the same version number, another build.
TORCH_PACKAGES = ("torch", "torchvision")


def uv_version(pin_file: Path = UV_PIN_FILE) -> str:
    """The pinned uv version, from the ``uv==X.Y.Z`` line of ``requirements/uv.txt``."""
    for line in pin_file.read_text(encoding="utf-8").splitlines():
        name, sep, version = line.split("#", 1)[0].strip().partition("==")
        if sep and name.strip().lower() == "uv":
            return version.strip()
    raise ValueError(f"{pin_file}: no 'uv==VERSION' line")


def env_python(venv: Path, *, windows: bool | None = None, gui: bool = False) -> Path:
    """The interpreter inside ``venv`` (``pythonw.exe`` for ``gui`` on Windows)."""
    if windows is None:
        windows = os.name == "nt"
    if windows:
        return venv / "Scripts" / ("pythonw.exe" if gui else "python.exe")
    return venv / "bin" / "python"


@dataclass(frozen=True)
class EnvironmentSpec:
    """What the environment must be.

    ``python`` is what ``uv venv --python`` gets: an interpreter path (source checkouts use
    the Python that ran the command) or a version request (the Windows first run asks for a
    uv-managed ``WINDOWS_PYTHON``). ``torch_backend`` is uv's ``--torch-backend`` value
    (``cu128``, ``cpu``…); None installs torch from the registry as locked.
    """

    venv: Path
    python: str
    lock: Path = LOCK_FILE
    app_root: Path = APP_ROOT
    torch_backend: str | None = None
    managed_python: bool = False

    def fingerprint(self) -> dict[str, str | None]:
        return {
            "lock_sha256": hashlib.sha256(self.lock.read_bytes()).hexdigest(),
            "uv": uv_version(self.app_root / "requirements" / "uv.txt"),
            "python": self.python,
            "torch_backend": self.torch_backend,
            "app_root": str(self.app_root),
        }

    @property
    def stamp(self) -> Path:
        return self.venv / STAMP_NAME


def read_stamp(venv: Path) -> dict[str, str | None] | None:
    """What the environment in ``venv`` was made from, or None (never finished, or none)."""
    try:
        data = json.loads((venv / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_current(spec: EnvironmentSpec) -> bool:
    """True when the environment exists and was made from exactly this lock, uv, Python and
    torch build: the fast path, which runs no subprocess."""
    return env_python(spec.venv).is_file() and read_stamp(spec.venv) == spec.fingerprint()


@dataclass(frozen=True)
class Step:
    """One command of the set-up, with the words a progress display shows for it."""

    label: str
    argv: list[str]


def setup_steps(spec: EnvironmentSpec, uv: str, *, reinstall: bool = False) -> list[Step]:
    """The uv commands that bring the environment to the spec.

    The virtual environment is (re)created only when it is missing or was made by another
    interpreter; otherwise ``uv pip sync`` updates it in place, which is quick because uv
    links unchanged packages from its cache. ``uv pip sync`` keeps an installed
    ``torch 2.15.0+cpu`` for a lock saying ``torch==2.15.0`` whatever the backend, since the
    version matches, so a change of torch build names those packages for reinstalling.
    ``reinstall`` reinstalls everything (from the cache), repairing damaged files.
    """
    steps: list[Step] = []
    stamp = read_stamp(spec.venv)
    made_by_other_python = stamp is not None and stamp.get("python") != spec.python
    fresh = not env_python(spec.venv).is_file() or made_by_other_python
    if fresh:
        venv = [uv, "venv", str(spec.venv), "--python", spec.python, "--clear", "--no-project"]
        if spec.managed_python:
            venv.append("--managed-python")
        steps.append(Step("Creating the Python environment", venv))
    sync = [uv, "pip", "sync", str(spec.lock), "--python", str(env_python(spec.venv))]
    if spec.torch_backend:
        sync += ["--torch-backend", spec.torch_backend]
    if reinstall and not fresh:
        sync.append("--reinstall")
    elif not fresh and (stamp is None or stamp.get("torch_backend") != spec.torch_backend):
        sync += [arg for name in TORCH_PACKAGES for arg in ("--reinstall-package", name)]
    steps.append(Step("Installing the pinned packages", sync))
    return steps


def site_packages(venv: Path) -> Path:
    """The environment's site-packages folder (``Lib`` on Windows, ``lib/pythonX.Y`` else)."""
    windows = venv / "Lib" / "site-packages"
    if windows.is_dir():
        return windows
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if not found:
        raise FileNotFoundError(f"{venv}: no site-packages folder (is it a virtual environment?)")
    return found[-1]


def mark_current(spec: EnvironmentSpec) -> None:
    """After the steps succeeded: put the app on the path and write the stamp last, so an
    interrupted set-up is never mistaken for a finished one.

    Python 3.11 reads ``.pth`` files in the locale's encoding (a Windows code page), so the
    path goes in as an ASCII-escaped string literal of an executed line, not as raw text.
    """
    line = f"import sys; sys.path.append({str(spec.app_root)!a})\n"
    (site_packages(spec.venv) / PTH_NAME).write_text(line, encoding="ascii")
    tmp = spec.stamp.with_name(spec.stamp.name + ".tmp")
    tmp.write_text(json.dumps(spec.fingerprint(), indent=1), encoding="utf-8")
    os.replace(tmp, spec.stamp)


Runner = Callable[[Sequence[str]], int]


def ensure_environment(spec: EnvironmentSpec, uv: str, run: Runner) -> int:
    """Bring the environment to ``spec`` with ``run`` (returns each command's exit code);
    0 when it is current, else the failing command's exit code."""
    if is_current(spec):
        return 0
    for step in setup_steps(spec, uv):
        print(f"charstudio: {step.label[:1].lower()}{step.label[1:]}…", file=sys.stderr)
        code = run(step.argv)
        if code != 0:
            return code
    mark_current(spec)
    return 0
