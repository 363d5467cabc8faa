"""Build the Windows installer, dist/charstudio-setup-<version>.exe, on Linux with NSIS.

    python3 packaging/build_installer.py [--out dist]

Needs makensis (Debian package nsis) and pip (to fetch uv's Windows wheel; cached in
build/installer/wheels). Only the standard library is used. Steps:

1. Read the version (pyproject.toml), the uv pin (requirements/uv.txt, a line ``uv==X.Y.Z``) and
   the Python version the app runs on under Windows (``WINDOWS_PYTHON`` in
   charstudio/install/environment.py, read without importing it).
2. Fetch uv's win_amd64 wheel and take uv.exe and uvw.exe out of it.
3. Stage the app: the files git knows (committed or added) under charstudio/, resources/ and
   requirements/, plus pyproject.toml, README.md and packaging/windows/start.pyw as start.pyw.
4. Build the launcher (packaging/windows/launcher.nsi -> charstudio.exe), then the installer
   (packaging/windows/installer.nsi).
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WINDOWS_DIR = ROOT / "packaging" / "windows"
ENVIRONMENT_PY = Path("charstudio", "install", "environment.py")
UV_PIN_FILE = Path("requirements", "uv.txt")
START_PYW = WINDOWS_DIR / "start.pyw"

# What goes into the install folder's app\ (folders end with "/").
APP_SOURCES = ("charstudio/", "resources/", "requirements/", "pyproject.toml", "README.md")
# Never shipped, whatever git or the walk finds.
SKIPPED_PARTS = frozenset({"__pycache__", ".venv", ".git", "build", "dist"})
SKIPPED_SUFFIXES = (".pyc", ".pyo")
# The installed app cannot start without these (paths inside app\).
REQUIRED_APP_FILES = (
    "charstudio/__init__.py",
    "pyproject.toml",
    "requirements/lock.txt",
    "requirements/uv.txt",
    "start.pyw",
)


class BuildError(Exception):
    """A problem the person building can fix; printed without a traceback."""


def read_version(root: Path) -> str:
    with (root / "pyproject.toml").open("rb") as f:
        version = tomllib.load(f)["project"]["version"]
    if not re.fullmatch(r"[0-9][0-9A-Za-z.+-]*", version):
        raise BuildError(f"pyproject.toml: unexpected version {version!r}")
    return version


def version_quad(version: str) -> str:
    """The four numbers Windows file versions need: 0.1.0 -> 0.1.0.0, 1.2rc1 -> 1.2.0.0."""
    numbers = re.match(r"[0-9]+(?:\.[0-9]+)*", version)
    parts = numbers.group(0).split(".")[:4] if numbers else []
    return ".".join(parts + ["0"] * (4 - len(parts)))


def read_uv_pin(root: Path) -> str:
    path = root / UV_PIN_FILE
    if not path.is_file():
        raise BuildError(f"{UV_PIN_FILE} is missing: it pins uv, as one line uv==X.Y.Z")
    lines = [
        line.strip()
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    pins = [m.group(1) for line in lines if (m := re.fullmatch(r"uv==([0-9][0-9A-Za-z.]*)", line))]
    if len(lines) != 1 or len(pins) != 1:
        raise BuildError(f"{UV_PIN_FILE} must hold exactly one line uv==X.Y.Z; it holds {lines}")
    return pins[0]


def read_windows_python(root: Path) -> str:
    """``WINDOWS_PYTHON`` from charstudio/install/environment.py, parsed (not imported)."""
    path = root / ENVIRONMENT_PY
    if not path.is_file():
        raise BuildError(f"{ENVIRONMENT_PY} is missing: it defines WINDOWS_PYTHON")
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    values = []
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "WINDOWS_PYTHON" for t in targets):
            if not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
                raise BuildError(f"{ENVIRONMENT_PY}: WINDOWS_PYTHON must be a plain string")
            values.append(value.value)
    if len(values) != 1:
        raise BuildError(
            f"{ENVIRONMENT_PY} must assign WINDOWS_PYTHON exactly once at module level "
            f"(found {len(values)})"
        )
    if not re.fullmatch(r"3\.[0-9]+(\.[0-9]+)?", values[0]):
        raise BuildError(f"{ENVIRONMENT_PY}: WINDOWS_PYTHON = {values[0]!r} is not like '3.11'")
    return values[0]


def fetch_uv(pin: str, wheels_dir: Path) -> tuple[bytes, bytes]:
    """uv.exe and uvw.exe from uv's win_amd64 wheel, downloaded once into wheels_dir."""
    pattern = f"uv-{pin}-*win_amd64.whl"
    wheels = sorted(wheels_dir.glob(pattern))
    if not wheels:
        print(f"Downloading uv {pin} for Windows (x64)...", flush=True)
        command = [
            sys.executable, "-m", "pip", "download", f"uv=={pin}",
            "--platform", "win_amd64", "--only-binary=:all:", "--no-deps",
            "--disable-pip-version-check", "-d", str(wheels_dir),
        ]  # fmt: skip
        try:
            result = subprocess.run(command, capture_output=True, text=True)
        except OSError as e:
            raise BuildError(f"could not run pip: {e}") from e
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            if "No module named pip" in output:
                raise BuildError("pip is needed to fetch uv: install Debian package python3-pip")
            raise BuildError(f"downloading uv {pin} failed:\n{output}")
        wheels = sorted(wheels_dir.glob(pattern))
        if not wheels:
            raise BuildError(f"pip finished but {wheels_dir} holds no {pattern}")
    with zipfile.ZipFile(wheels[-1]) as wheel:
        scripts = {
            Path(name).name: name
            for name in wheel.namelist()
            if re.fullmatch(r"[^/]+\.data/scripts/uvw?\.exe", name)
        }
        missing = {"uv.exe", "uvw.exe"} - scripts.keys()
        if missing:
            raise BuildError(f"{wheels[-1].name} lacks {', '.join(sorted(missing))}")
        return wheel.read(scripts["uv.exe"]), wheel.read(scripts["uvw.exe"])


def _wanted(relative: str) -> bool:
    parts = relative.split("/")
    if SKIPPED_PARTS.intersection(parts) or relative.endswith(SKIPPED_SUFFIXES):
        return False
    return any(
        relative.startswith(source) if source.endswith("/") else relative == source
        for source in APP_SOURCES
    )


def _git_files(root: Path) -> list[str] | None:
    """Files in git's index (committed or added), or None when git can't tell."""
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached"],
            capture_output=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return [name for name in result.stdout.decode("utf-8").split("\0") if name]


def _walked_files(root: Path) -> list[str]:
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in SKIPPED_PARTS]
        for name in files:
            found.append((Path(directory) / name).relative_to(root).as_posix())
    return found


def app_files(root: Path) -> list[str]:
    """The repository's files that go into app\\, relative, sorted."""
    listed = _git_files(root)
    if listed is None:
        print("git is not available here: taking the app files from the folder", flush=True)
        listed = _walked_files(root)
    files = []
    for relative in sorted(listed):
        if not _wanted(relative):
            continue
        if not (root / relative).is_file():
            print(f"warning: {relative} is in git's index but not on disk; left out", flush=True)
            continue
        files.append(relative)
    return files


def stage(root: Path, stage_dir: Path, files: list[str], uv: bytes, uvw: bytes) -> None:
    if stage_dir.exists():
        shutil.rmtree(stage_dir)
    app = stage_dir / "app"
    for relative in files:
        target = app / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / relative, target)
    if not START_PYW.is_file():
        raise BuildError(
            f"{START_PYW.relative_to(ROOT)} is missing: the installed app starts from it "
            "(it runs the first-run setup, then charstudio)"
        )
    shutil.copy2(START_PYW, app / "start.pyw")
    (stage_dir / "uv").mkdir(parents=True)
    (stage_dir / "uv" / "uv.exe").write_bytes(uv)
    (stage_dir / "uv" / "uvw.exe").write_bytes(uvw)
    missing = [name for name in REQUIRED_APP_FILES if not (app / name).is_file()]
    if missing:
        raise BuildError(
            "the installer would lack "
            + ", ".join(missing)
            + " (only files git knows are shipped: is each one committed or git-added?)"
        )


def require_makensis() -> None:
    if shutil.which("makensis") is None:
        raise BuildError("makensis was not found: install Debian package nsis")


def makensis(script: Path, defines: dict[str, str]) -> None:
    command = ["makensis", "-V2", "-WX", "-INPUTCHARSET", "UTF8"]  # warnings are errors
    command += [f"-D{name}={value}" for name, value in defines.items()]
    command.append(str(script))
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise BuildError(f"makensis {script.name} failed:\n{output}")


def build(out_dir: Path, build_dir: Path) -> Path:
    require_makensis()
    version = read_version(ROOT)
    uv_pin = read_uv_pin(ROOT)
    windows_python = read_windows_python(ROOT)
    uv, uvw = fetch_uv(uv_pin, build_dir / "wheels")
    stage_dir = build_dir / "stage"
    stage(ROOT, stage_dir, app_files(ROOT), uv, uvw)

    quad = version_quad(version)
    makensis(
        WINDOWS_DIR / "launcher.nsi",
        {
            "VERSION": version,
            "VERSION_QUAD": quad,
            "WINDOWS_PYTHON": windows_python,
            "OUTFILE": str(stage_dir / "charstudio.exe"),
        },
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    installer = out_dir / f"charstudio-setup-{version}.exe"
    makensis(
        WINDOWS_DIR / "installer.nsi",
        {
            "VERSION": version,
            "VERSION_QUAD": quad,
            "STAGE": str(stage_dir),
            "OUTFILE": str(installer),
        },
    )
    return installer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output folder (dist)")
    parser.add_argument(
        "--build-dir", type=Path, default=ROOT / "build" / "installer",
        help="staging and download cache (build/installer)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        installer = build(args.out.resolve(), args.build_dir.resolve())
    except BuildError as e:
        print(f"build_installer: {e}", file=sys.stderr)
        return 1
    print(installer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
