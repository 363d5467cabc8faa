"""Set up charstudio's environment in a source checkout, using only Python and pip.

``main.py`` and ``run_tests.py`` call this. The environment (``.venv``) holds exactly the
pinned set in ``requirements/lock.txt``, built with the Python that runs this file (no Python
is downloaded) by the uv version pinned in ``requirements/uv.txt``, which pip installs into
``.tools/`` on first use. When the environment already matches the lock nothing runs at all;
see ``charstudio/install/environment.py``. Standard library only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from charstudio.install.environment import (
    EnvironmentSpec,
    ensure_environment,
    env_python,
    is_current,
    uv_version,
)

ROOT = Path(__file__).resolve().parent
TOOLS = ROOT / ".tools"
VENV = ROOT / ".venv"


def in_project_env() -> bool:
    """True when this interpreter is the project's own environment."""
    if os.environ.get("CHARSTUDIO_ENV") == "1":
        return True
    return VENV.exists() and Path(sys.prefix).resolve() == VENV.resolve()


def _installed_uv() -> Path | None:
    bin_dir = TOOLS / "bin"
    candidate = bin_dir / ("uv.exe" if os.name == "nt" else "uv")
    return candidate if candidate.is_file() else None


def find_uv() -> str:
    """The pinned uv, installed into .tools/ with pip when missing or of another version."""
    wanted = uv_version()
    found = _installed_uv()
    if found is not None:
        reported = subprocess.run([str(found), "--version"], capture_output=True, text=True)
        if reported.returncode == 0 and reported.stdout.split()[1:2] == [wanted]:
            return str(found)
    print(f"charstudio: installing uv {wanted} into .tools/ (first run only)…", file=sys.stderr)
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "--target", str(TOOLS), f"uv=={wanted}"], check=True)
    found = _installed_uv()
    if found is None:
        sys.exit("charstudio: pip installed uv, but its executable is not in .tools/bin")
    return str(found)


def project_spec() -> EnvironmentSpec:
    return EnvironmentSpec(venv=VENV, python=sys.executable)


def ensure_env(spec: EnvironmentSpec | None = None) -> Path:
    """Create or update .venv to match the lock; the environment's interpreter."""
    spec = spec or project_spec()
    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never")

    def run(argv: list[str]) -> int:
        return subprocess.call(argv, env=env, cwd=ROOT)

    # When the environment is current, uv is not even looked for: the app starts at once.
    code = 0 if is_current(spec) else ensure_environment(spec, find_uv(), run)
    if code != 0:
        sys.exit(f"charstudio: setting up the environment failed (uv exit code {code})")
    return env_python(spec.venv)


def run_in_env(args: list[str]) -> int:
    """Run ``python ARGS`` with the environment's interpreter, setting it up first."""
    python = ensure_env()
    env = dict(os.environ, CHARSTUDIO_ENV="1")  # the child is in the environment
    return subprocess.call([str(python), *args], env=env, cwd=ROOT)
