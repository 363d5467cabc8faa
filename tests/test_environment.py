"""The environment the README's two commands build: exactly the pinned lock, made only when
something changed, and a lock with no download locations in it."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
import types
from collections.abc import Sequence
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement

import bootstrap
import relock
from charstudio.install import environment
from charstudio.install.environment import (
    LOCK_FILE,
    EnvironmentSpec,
    ensure_environment,
    is_current,
    setup_steps,
)

ROOT = Path(__file__).resolve().parents[1]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_pins(text: str) -> dict[str, str]:
    """name -> version for the lock's lines that apply to this interpreter and platform."""
    pins = {}
    for line in text.splitlines():
        requirement, _, marker = line.split("#", 1)[0].partition(";")
        if "==" not in requirement:
            continue
        if marker.strip() and not Marker(marker.strip()).evaluate():
            continue
        name, _, version = requirement.partition("==")
        pins[normalize(name.strip())] = version.strip()
    return pins


# -- the real environment and the committed lock ------------------------------------------


def test_this_environment_holds_exactly_the_locked_set() -> None:
    spec = EnvironmentSpec(venv=Path(sys.prefix), python="")
    stamp = environment.read_stamp(spec.venv)
    if stamp is None:
        pytest.skip("not running in an environment built by bootstrap.py or the first run")
    installed = {
        normalize(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions()
    }
    pins = locked_pins(LOCK_FILE.read_text(encoding="utf-8"))
    wrong = {n: (installed.get(n), v) for n, v in pins.items() if installed.get(n) != v}
    extra = sorted(set(installed) - set(pins))
    assert not wrong, f"installed vs locked versions differ: {wrong}"
    assert not extra, f"installed but not in the lock: {extra}"
    assert stamp["lock_sha256"] == spec.fingerprint()["lock_sha256"]


def test_the_lock_pins_every_dependency_and_names_no_location() -> None:
    assert relock.location_problems(LOCK_FILE) == []
    text = LOCK_FILE.read_text(encoding="utf-8")
    assert "://" not in text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    pinned = {
        normalize(line.partition("==")[0].strip()): line
        for line in text.splitlines()
        if "==" in line and not line.startswith("#")
    }
    for spec in wanted:
        requirement = Requirement(spec)
        line = pinned.get(normalize(requirement.name))
        assert line is not None, f"{requirement.name} is not pinned"
        version = line.split(";")[0].partition("==")[2].strip()
        assert requirement.specifier.contains(version), f"{line} breaks {spec}"
    assert re.fullmatch(r"uv==\d+\.\d+\.\d+\n", (ROOT / "requirements/uv.txt").read_text())


def test_location_problems_are_found(tmp_path: Path) -> None:
    lock = tmp_path / "lock.txt"
    lock.write_text(
        "numpy==2.4.6\n"
        "--find-links wheels\n"  # an index option
        "torch @ wheels/torch.whl\n"  # a direct reference
        "./vendored/pkg\n"
        "regex==2026.12.2 ; sys_platform == 'win32'\n",
        encoding="utf-8",
    )
    found = relock.location_problems(lock)
    assert [p.split(" names")[0] for p in found] == [
        "lock.txt line 2",
        "lock.txt line 3",
        "lock.txt line 4",
    ]


def test_the_install_package_needs_only_the_standard_library() -> None:
    # It runs before the environment exists: -S keeps site-packages (and their .pth hooks) out.
    code = (
        "import importlib, pkgutil, sys\n"
        "import charstudio.install as package\n"
        "for module in pkgutil.iter_modules(package.__path__):\n"
        "    importlib.import_module('charstudio.install.' + module.name)\n"
        "print(' '.join(sorted({n.split('.')[0] for n in sys.modules}"
        " - set(sys.stdlib_module_names) - {'charstudio', '__main__'})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.split() == []


# -- making an environment ----------------------------------------------------------------


class FakeUv:
    """Stands in for uv: records commands and makes the files a real ``uv venv`` makes."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.commands: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, argv: Sequence[str]) -> int:
        self.commands.append(list(argv))
        if self.fail_on and self.fail_on in argv:
            return 2
        if argv[1] == "venv":
            venv = Path(argv[2])
            (venv / "bin").mkdir(parents=True, exist_ok=True)
            (venv / "bin" / "python").write_text("")
            (venv / "lib" / "python3.11" / "site-packages").mkdir(parents=True, exist_ok=True)
        return 0

    def verbs(self) -> list[str]:
        return [" ".join(c[1:3]) if c[1] == "pip" else c[1] for c in self.commands]


@pytest.fixture
def spec(tmp_path: Path) -> EnvironmentSpec:
    lock = tmp_path / "app dir é" / "requirements" / "lock.txt"
    lock.parent.mkdir(parents=True)
    lock.write_text("numpy==2.4.6\n", encoding="utf-8")
    (lock.parent / "uv.txt").write_text("uv==0.13.10\n", encoding="utf-8")
    return EnvironmentSpec(
        venv=tmp_path / "env", python="/usr/bin/python3.11", lock=lock, app_root=lock.parents[1]
    )


def test_a_fresh_environment_is_created_synced_and_stamped(spec: EnvironmentSpec) -> None:
    uv = FakeUv()
    assert not is_current(spec)
    assert ensure_environment(spec, "uv", uv) == 0
    assert uv.verbs() == ["venv", "pip sync"]
    assert uv.commands[1][3] == str(spec.lock)
    assert is_current(spec)
    pth = spec.venv / "lib/python3.11/site-packages" / environment.PTH_NAME
    # site.py executes it (read in any code page: it is ASCII); it appends the app folder.
    fake_sys = types.SimpleNamespace(path=[])
    line = pth.read_text(encoding="ascii").replace("import sys; ", "")
    exec(line, {"sys": fake_sys})
    assert fake_sys.path == [str(spec.app_root)]
    assert json.loads(spec.stamp.read_text())["python"] == "/usr/bin/python3.11"


def test_a_current_environment_runs_nothing(spec: EnvironmentSpec) -> None:
    ensure_environment(spec, "uv", FakeUv())
    uv = FakeUv()
    assert ensure_environment(spec, "uv", uv) == 0
    assert uv.commands == []


def test_a_new_lock_is_synced_into_the_existing_environment(spec: EnvironmentSpec) -> None:
    ensure_environment(spec, "uv", FakeUv())
    spec.lock.write_text("numpy==2.5.5\n", encoding="utf-8")  # a newer version was installed
    assert not is_current(spec)
    uv = FakeUv()
    assert ensure_environment(spec, "uv", uv) == 0
    assert uv.verbs() == ["pip sync"]  # no new venv: unchanged packages stay
    assert is_current(spec)


def test_another_interpreter_or_torch_build_rebuilds(spec: EnvironmentSpec) -> None:
    ensure_environment(spec, "uv", FakeUv())
    other = EnvironmentSpec(**{**spec.__dict__, "python": "/opt/python3.12"})
    assert not is_current(other)
    venv_step = setup_steps(other, "uv")[0].argv
    assert venv_step[1] == "venv" and "--clear" in venv_step
    cuda = EnvironmentSpec(**{**spec.__dict__, "torch_backend": "cu128"})
    assert not is_current(cuda)
    steps = setup_steps(cuda, "uv")
    assert [s.argv[1] for s in steps] == ["pip"]
    assert steps[0].argv[-6:] == [
        *("--torch-backend", "cu128"),
        *("--reinstall-package", "torch", "--reinstall-package", "torchvision"),
    ]  # the same torch version in another build: uv must be told to replace it
    managed = EnvironmentSpec(
        **{**spec.__dict__, "venv": spec.venv.parent / "new", "managed_python": True}
    )
    assert "--managed-python" in setup_steps(managed, "uv")[0].argv


def test_a_failed_step_leaves_no_stamp(spec: EnvironmentSpec) -> None:
    uv = FakeUv(fail_on="sync")
    assert ensure_environment(spec, "uv", uv) == 2
    assert not spec.stamp.exists()
    assert not is_current(spec)
    assert ensure_environment(spec, "uv", FakeUv()) == 0  # the next run finishes the job
    assert is_current(spec)


def test_the_uv_pin_is_read_from_its_file(tmp_path: Path) -> None:
    pin = tmp_path / "uv.txt"
    pin.write_text("# the installer of the lock\nuv==0.13.10  # pinned\n")
    assert environment.uv_version(pin) == "0.13.10"
    pin.write_text("ruff==1.0\n")
    with pytest.raises(ValueError, match=r"uv\.txt"):
        environment.uv_version(pin)


def test_launching_with_a_current_environment_never_looks_for_uv(
    spec: EnvironmentSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_environment(spec, "uv", FakeUv())

    def no_uv() -> str:
        raise AssertionError("uv was looked for although the environment is current")

    monkeypatch.setattr(bootstrap, "find_uv", no_uv)
    assert bootstrap.ensure_env(spec) == spec.venv / "bin" / "python"
