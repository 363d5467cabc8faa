"""Re-pin charstudio's dependencies: ``python3 relock.py [--upgrade-package NAME ...]``.

Resolves the newest versions that ``pyproject.toml`` allows (or, with ``--upgrade-package``,
moves only the named packages), checks that every pinned package has a wheel for Linux and
Windows x86_64, builds a scratch environment from the new set, runs the whole test suite in
it, and rewrites ``requirements/lock.txt`` only when all of that passes.

``python3 relock.py --check`` checks the committed lock instead: no URLs, and wheels for both
platforms (CI runs it). Standard library only, like bootstrap.py.
"""

from __future__ import annotations

import argparse
import difflib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bootstrap import ROOT, find_uv
from charstudio.install.environment import (
    LOCK_FILE,
    WINDOWS_PYTHON,
    EnvironmentSpec,
    ensure_environment,
    env_python,
    uv_version,
)

SCRATCH = ROOT / "build" / "relock"
# Linux: glibc 2.35 (Ubuntu 22.04, Debian 12) or newer; PySide6 6.11 needs 2.34.
PLATFORMS = ("x86_64-manylinux_2_35", "x86_64-pc-windows-msvc")
HEADER = """\
# charstudio's pinned dependency set: the app and its test extra, for Linux and Windows x86_64
# with Python {python}+. Written by `python3 relock.py` with uv {uv}; do not edit by hand.
"""


def compile_lock(uv: str, out: Path, upgrade: list[str]) -> None:
    """Resolve pyproject.toml (its uv overrides included) into a universal pinned set."""
    command = [uv, "pip", "compile", "pyproject.toml", "--extra", "test", "--universal"]
    command += ["--python-version", WINDOWS_PYTHON, "--no-header", "--output-file", str(out)]
    if upgrade:
        command += [arg for name in upgrade for arg in ("--upgrade-package", name)]
    else:
        command.append("--upgrade")
    if LOCK_FILE.exists() and upgrade:
        shutil.copyfile(LOCK_FILE, out)  # uv keeps the pins it is not told to move
    subprocess.run(command, check=True, cwd=ROOT)
    body = out.read_text(encoding="utf-8")
    out.write_text(HEADER.format(python=WINDOWS_PYTHON, uv=uv_version()) + body, encoding="utf-8")


def location_problems(lock: Path) -> list[str]:
    """Lines of a lock that name a download location (a URL, an index or a path)."""
    problems = []
    for number, line in enumerate(lock.read_text(encoding="utf-8").splitlines(), 1):
        requirement = line.split("#", 1)[0].strip()
        if "://" in line or requirement.startswith(("-", "/", ".")) or " @ " in requirement:
            problems.append(f"{lock.name} line {number} names a location: {line.strip()}")
    return problems


def check_lock(uv: str, lock: Path) -> list[str]:
    """Problems with a lock file: URLs in it, or a pin without a wheel for a platform."""
    problems = location_problems(lock)
    for platform in PLATFORMS:
        result = subprocess.run(
            [
                *(uv, "pip", "compile", str(lock), "--no-deps", "--only-binary", ":all:"),
                *("--python-platform", platform, "--python-version", WINDOWS_PYTHON),
                *("--quiet", "--no-header"),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if result.returncode != 0:
            problems.append(f"not installable from wheels on {platform}:\n{result.stderr.strip()}")
    return problems


def run_suite(uv: str, lock: Path) -> int:
    """The whole test suite in a scratch environment built from ``lock``."""
    spec = EnvironmentSpec(venv=SCRATCH / "venv", python=sys.executable, lock=lock)
    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never")
    code = ensure_environment(spec, uv, lambda argv: subprocess.call(argv, env=env, cwd=ROOT))
    if code != 0:
        return code
    env.update(HF_HUB_OFFLINE="1", QT_QPA_PLATFORM="offscreen", CHARSTUDIO_ENV="1")
    python = str(env_python(spec.venv))
    return subprocess.call(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], env=env, cwd=ROOT
    )


def pins(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines() if "==" in line and not line.startswith("#")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="check the committed lock only")
    parser.add_argument("--upgrade-package", action="append", default=[], metavar="NAME")
    args = parser.parse_args(argv)
    uv = find_uv()
    if args.check:
        problems = check_lock(uv, LOCK_FILE)
        for problem in problems:
            print(f"relock: {problem}", file=sys.stderr)
        if not problems:
            platforms = " and ".join(PLATFORMS)
            print(f"relock: {LOCK_FILE.relative_to(ROOT)} is URL-free and installs on {platforms}")
        return 1 if problems else 0

    SCRATCH.mkdir(parents=True, exist_ok=True)
    candidate = SCRATCH / "lock.txt"
    compile_lock(uv, candidate, args.upgrade_package)
    old = LOCK_FILE.read_text(encoding="utf-8") if LOCK_FILE.exists() else ""
    new = candidate.read_text(encoding="utf-8")
    if pins(old) == pins(new):
        print("relock: the lock is already the newest set pyproject.toml allows")
        return 0
    for line in difflib.unified_diff(sorted(pins(old)), sorted(pins(new)), lineterm="", n=0):
        if not line.startswith(("---", "+++", "@@")):
            print(f"relock: {line}")
    problems = check_lock(uv, candidate)
    if problems:
        print("\n".join(f"relock: {p}" for p in problems), file=sys.stderr)
        print("relock: the lock is unchanged", file=sys.stderr)
        return 1
    if run_suite(uv, candidate) != 0:
        print(
            "relock: the test suite fails with the new set; the lock is unchanged", file=sys.stderr
        )
        return 1
    LOCK_FILE.parent.mkdir(exist_ok=True)
    shutil.copyfile(candidate, LOCK_FILE)
    print(f"relock: the suite passes; {LOCK_FILE.relative_to(ROOT)} rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
