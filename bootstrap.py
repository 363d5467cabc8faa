"""Set up charstudio's environment on a fresh machine, using only Python and pip.

``main.py`` and ``run_tests.py`` call this. It installs uv into ``.tools/`` (unless uv is
already on PATH), and uv builds ``.venv`` from ``pyproject.toml`` with the interpreter that
runs this file, so no Python is downloaded. Standard library only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TOOLS = ROOT / ".tools"
VENV = ROOT / ".venv"


def in_project_env() -> bool:
    """True when this interpreter is the project's own environment (or a frozen build)."""
    if getattr(sys, "frozen", False) or os.environ.get("CHARSTUDIO_ENV") == "1":
        return True
    return VENV.exists() and Path(sys.prefix).resolve() == VENV.resolve()


def _uv_in_tools() -> Path | None:
    names = {"uv", "uv.exe"}
    for candidate in sorted(TOOLS.rglob("uv*")):
        if candidate.name in names and candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def find_uv() -> str:
    """Path of a uv executable, installing uv into .tools/ with pip when there is none."""
    found = shutil.which("uv") or _uv_in_tools()
    if found:
        return str(found)
    print("charstudio: installing uv (first run only)…", file=sys.stderr)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--upgrade",
            "--target",
            str(TOOLS),
            "uv",
        ],
        check=True,
    )
    found = _uv_in_tools()
    if not found:
        sys.exit("charstudio: pip installed uv, but its executable was not found in .tools/")
    return str(found)


def uv_run(args: list[str], extras: tuple[str, ...] = ()) -> int:
    """Run ``args`` inside the project environment, creating or updating it first."""
    env = dict(os.environ)
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")
    env["CHARSTUDIO_ENV"] = "1"  # the child is in the environment: never bootstrap twice
    command = [find_uv(), "run", "--project", str(ROOT), "--python", sys.executable]
    for extra in extras:
        command += ["--extra", extra]
    command += args
    return subprocess.call(command, env=env, cwd=ROOT)
