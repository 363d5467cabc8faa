"""Smoke-test the Windows installer under Wine (64-bit), on Linux.

    python3 packaging/wine_smoke_test.py dist/charstudio-setup-0.1.0.exe

Needs wine64 (Debian package; its wine64 and wineserver64 may live in /usr/lib/wine, which is
searched) and makensis (Debian package nsis). Uses a fresh temporary WINEPREFIX and HOME and no
display. Debian's Wine cannot run the real uv.exe, so a stand-in (packaging/windows/
uv_standin.nsi) takes the place of uv.exe and uvw.exe after the first install and records how
the launcher calls it. Steps:

  a. silent install into a folder whose name has a space and a non-ASCII letter: files,
     shortcuts, the Apps & features entry, the completion sentinel;
  b. the launcher: a failed Python download (exit code, log, no app start); then the first run
     (python install, then uvw run start.pyw with the arguments); a second run (no install);
  c. an update over the first install (no /D: it must find the folder by itself): env\\,
     python\\, cache\\ and the settings survive, a stale file in app\\ goes, uv\\ is replaced;
  d. while charstudio runs, an update and an uninstall both give up (exit code 2) untouched;
  e. the installer refuses a folder with someone else's app\\ in it; the uninstaller refuses a
     folder that is not an install;
  f. silent uninstall: everything the installer and the first run made goes; a project folder
     beside the install, a user's file inside it, the settings and the logs stay.

Exits 0 when every check passes, 1 at the first failure (with what was expected).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path, PureWindowsPath

ROOT = Path(__file__).resolve().parent.parent
STANDIN_NSI = ROOT / "packaging" / "windows" / "uv_standin.nsi"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_installer import read_windows_python  # noqa: E402

UNINSTALL_KEY = r"HKCU\Software\Microsoft\Windows\CurrentVersion\Uninstall\charstudio"
SETTINGS_KEY = r"HKCU\Software\charstudio"
SENTINEL = "install-complete.txt"
INSTALL_FOLDER = "char studio é"  # under %LOCALAPPDATA%\Programs
STEP_TIMEOUT = 180


class Failure(Exception):
    pass


def check(condition: object, message: str) -> None:
    if not condition:
        raise Failure(message)


def _find_tool(env_name: str, candidates: tuple[str, ...]) -> str:
    """$env_name if set, else the first candidate found (a name on PATH, or a full path)."""
    if os.environ.get(env_name):
        return os.environ[env_name]
    for candidate in candidates:
        if "/" not in candidate:
            candidate = shutil.which(candidate) or ""
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise Failure(
        f"{candidates[0]} was not found: install Debian package wine64 (or set {env_name})"
    )


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


class Wine:
    def __init__(self, work: Path) -> None:
        # Debian puts Wine's 64-bit programs in /usr/lib/wine, off the PATH.
        self.wine = _find_tool("WINE", ("wine64", "/usr/lib/wine/wine64", "wine"))
        self.wineserver = _find_tool(
            "WINESERVER",
            (
                "wineserver64",
                "/usr/lib/wine/wineserver64",
                "wineserver",
                "/usr/lib/wine/wineserver",
            ),
        )
        self.prefix = work / "prefix"
        home = work / "home"
        home.mkdir()
        self.env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("DISPLAY", "WAYLAND_DISPLAY") and not key.startswith(("WINE", "LC_"))
        }
        self.env.update(
            WINEPREFIX=str(self.prefix),
            WINEARCH="win64",
            WINEDEBUG="-all",
            # No Mono/Gecko prompts; no menu entries in the host's desktop.
            WINEDLLOVERRIDES="mscoree,mshtml=;winemenubuilder.exe=d",
            HOME=str(home),
            LANG="C.UTF-8",  # arguments with non-ASCII letters reach Windows intact
        )
        self.user = ""

    def run(self, *args: str, timeout: float = STEP_TIMEOUT) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                [self.wine, *args], env=self.env, capture_output=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as e:
            raise Failure(f"wine {' '.join(args)} did not finish in {timeout} s") from e

    def wait(self) -> None:
        """Wait until every Windows process has exited (the uninstaller re-launches itself)."""
        try:
            subprocess.run([self.wineserver, "-w"], env=self.env, timeout=STEP_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            raise Failure(f"Windows programs still running after {STEP_TIMEOUT} s") from e

    def kill(self) -> None:
        subprocess.run([self.wineserver, "-k"], env=self.env, capture_output=True, timeout=60)

    def boot(self) -> None:
        result = self.run("wineboot", "--init")
        self.wait()
        check(result.returncode == 0, f"wineboot failed: {result.stderr.decode(errors='replace')}")
        users = [
            p.name for p in (self.prefix / "drive_c" / "users").iterdir() if p.name != "Public"
        ]
        check(len(users) == 1, f"expected one Wine user folder, found {users}")
        self.user = users[0]

    def unix(self, windows_path: str) -> Path:
        path = PureWindowsPath(windows_path)
        check(path.drive.upper() == "C:", f"not on drive C: {windows_path}")
        return self.prefix.joinpath("drive_c", *path.parts[1:])

    def reg_values(self, key: str) -> dict[str, str] | None:
        """The key's values as text (strings unescaped, dwords as dword:xxxxxxxx), or None."""
        target = rf"C:\users\{self.user}\Temp\export.reg"
        self.unix(target).parent.mkdir(parents=True, exist_ok=True)
        result = self.run("reg", "export", key, target, "/y")
        if result.returncode != 0:
            return None
        text = self.unix(target).read_bytes().decode("utf-16")
        self.unix(target).unlink()
        values = {}
        for line in text.splitlines():
            m = re.fullmatch(
                r'"((?:[^"\\]|\\.)*)"=(?:"((?:[^"\\]|\\.)*)"|(dword:[0-9a-f]{8}))', line
            )
            if m:
                unescape = lambda s: re.sub(r"\\(.)", r"\1", s)  # noqa: E731
                values[unescape(m.group(1))] = (
                    unescape(m.group(2)) if m.group(3) is None else m.group(3)
                )
        return values

    def reg_add(self, key: str, name: str, value: str) -> None:
        result = self.run("reg", "add", key, "/v", name, "/d", value, "/f")
        check(result.returncode == 0, f"reg add {key} failed")


def read_calls(calls_file: Path) -> list[dict[str, str]]:
    """The stand-in's records: one dict per call, in order."""
    if not calls_file.exists():
        return []
    calls, current = [], {}
    for line in calls_file.read_bytes().decode("utf-16").splitlines():
        if line == "end":
            calls.append(current)
            current = {}
        elif "=" in line:
            key, value = line.split("=", 1)
            current[key] = value
    return calls


def build_standin(work: Path) -> Path:
    if shutil.which("makensis") is None:
        raise Failure("makensis was not found: install Debian package nsis")
    out = work / "uv-standin.exe"
    result = subprocess.run(
        ["makensis", "-V2", "-WX", "-INPUTCHARSET", "UTF8", f"-DOUTFILE={out}", str(STANDIN_NSI)],
        capture_output=True,
        text=True,
    )
    check(
        result.returncode == 0, f"building the uv stand-in failed:\n{result.stdout}{result.stderr}"
    )
    return out


class SmokeTest:
    def __init__(self, installer: Path, work: Path) -> None:
        self.installer = installer
        self.work = work
        self.wine = Wine(work)
        m = re.fullmatch(r"charstudio-setup-(.+)\.exe", installer.name)
        self.version = m.group(1) if m else None
        self.python = read_windows_python(ROOT)

    # Paths -------------------------------------------------------------------------------------
    def setup_paths(self) -> None:
        user = rf"C:\users\{self.wine.user}"
        self.local = rf"{user}\AppData\Local"
        self.instdir = rf"{self.local}\Programs\{INSTALL_FOLDER}"
        self.inst = self.wine.unix(self.instdir)
        self.start_menu_lnk = self.wine.unix(
            rf"{user}\AppData\Roaming\Microsoft\Windows\Start Menu\Programs\charstudio.lnk"
        )
        self.desktop_lnk = self.wine.unix(rf"{user}\Desktop\charstudio.lnk")
        self.logs = self.wine.unix(rf"{self.local}\charstudio\logs")
        self.calls_file = self.inst / "uv" / "calls.txt"

    def install(self, *args: str) -> None:
        result = self.wine.run(str(self.installer), "/S", *args)
        self.wine.wait()
        check(result.returncode == 0, f"silent install exited with {result.returncode}")
        sentinel = self.inst / SENTINEL
        check(sentinel.is_file(), f"no {SENTINEL} in {self.inst}: the install did not finish")
        if self.version:
            content = sentinel.read_text(encoding="latin-1")
            check(content == self.version, f"{SENTINEL} holds {content!r}, not {self.version!r}")

    def launch(self, *args: str) -> int:
        result = self.wine.run(str(self.inst / "charstudio.exe"), *args)
        self.wine.wait()
        return result.returncode

    # Steps -------------------------------------------------------------------------------------
    def step_install(self) -> None:
        check("  " not in self.instdir, "the install path must not hold two spaces in a row")
        # NSIS wants /D= last and unquoted; Wine quotes an argument with spaces, so the path goes
        # in as separate words that Wine joins with single spaces.
        self.install(*("/D=" + self.instdir).split(" "))
        for name in (
            "charstudio.exe", "uninstall.exe", r"uv\uv.exe", r"uv\uvw.exe",
            r"app\charstudio\__init__.py", r"app\requirements\lock.txt",
            r"app\requirements\uv.txt", r"app\resources", r"app\pyproject.toml",
            r"app\README.md", r"app\start.pyw",
        ):  # fmt: skip
            check((self.inst / PureWindowsPath(name)).exists(), rf"not installed: {name}")
        pycache = list((self.inst / "app").rglob("__pycache__"))
        check(not pycache, f"__pycache__ folders were installed: {pycache}")
        for dirname in ("python", "cache", "env"):
            check(not (self.inst / dirname).exists(), f"{dirname}\\ exists before the first run")
        check(self.start_menu_lnk.is_file(), f"no Start-menu shortcut {self.start_menu_lnk}")
        check(self.desktop_lnk.is_file(), f"no desktop shortcut {self.desktop_lnk}")
        values = self.wine.reg_values(UNINSTALL_KEY)
        check(values is not None, f"no registry key {UNINSTALL_KEY}")
        expected = {
            "DisplayName": "charstudio",
            "Publisher": "charstudio",
            "InstallLocation": self.instdir,
            "DisplayIcon": rf"{self.instdir}\charstudio.exe",
            "UninstallString": rf'"{self.instdir}\uninstall.exe"',
            "QuietUninstallString": rf'"{self.instdir}\uninstall.exe" /S',
            "NoModify": "dword:00000001",
            "NoRepair": "dword:00000001",
        }
        if self.version:
            expected["DisplayVersion"] = self.version
        for name, value in expected.items():
            check(
                values.get(name) == value,
                f"{UNINSTALL_KEY}\\{name} is {values.get(name)!r}, not {value!r}",
            )
        size = int(values.get("EstimatedSize", "dword:0").split(":")[1], 16)
        check(size > 1000, f"EstimatedSize is {size} KB")
        self.real_uv = hashlib.sha256((self.inst / "uv" / "uv.exe").read_bytes()).hexdigest()

    def step_launcher(self) -> None:
        for name in ("uv.exe", "uvw.exe"):
            shutil.copyfile(self.standin, self.inst / "uv" / name)
        start_pyw = rf"{self.instdir}\app\start.pyw"
        expected_env = {
            "UV_PYTHON_INSTALL_DIR": rf"{self.instdir}\python",
            "UV_CACHE_DIR": rf"{self.instdir}\cache",
            "UV_PYTHON_INSTALL_BIN": "0",
            "UV_PYTHON_INSTALL_REGISTRY": "0",
            "UV_NO_CONFIG": "1",
            "CHARSTUDIO_HOME": self.instdir,
        }
        install_args = f"python install --no-bin --no-registry {self.python}"
        run_args = f'run --no-project --managed-python --python {self.python} "{start_pyw}"'
        setup_log = self.logs / "setup.log"

        # A failed download: the launcher gives up (no display: its Retry/Cancel box can't show)
        # with exit code 1, logs uv's output, and does not start the app.
        exit_code_file = self.inst / "uv" / "python-install-exit-code.txt"
        exit_code_file.write_text("3")
        code = self.launch()
        calls = read_calls(self.calls_file)
        check(code == 1, f"after a failed Python download the launcher exited with {code}, not 1")
        check(
            [c.get("args") for c in calls] == [install_args],
            f"after a failed download expected only `uv {install_args}`, got {calls}",
        )
        log = setup_log.read_text(encoding="utf-8") if setup_log.exists() else ""
        check(
            "error: Failed to download Python (stand-in" in log, f"uv's error is not in {setup_log}"
        )
        check("uv python install failed (exit code 3)" in log, f"the failure is not in {setup_log}")
        check(
            not (self.inst / "python").exists() or not any((self.inst / "python").iterdir()),
            "a failed download left a Python behind",
        )
        exit_code_file.unlink()
        self.calls_file.unlink()

        # The first run: install Python, then start the app with the launcher's arguments.
        code = self.launch("my project é", "--flag")
        calls = read_calls(self.calls_file)
        check(code == 0, f"the launcher exited with {code}")
        check(len(calls) == 2, f"the first run should call uv twice, got {calls}")
        install, run = calls
        check(
            install.get("exe") == "uv.exe" and install.get("args") == install_args,
            f"first call should be `uv.exe {install_args}`, got {install}",
        )
        want = f'{run_args} "my project é" --flag'
        check(
            run.get("exe") == "uvw.exe" and run.get("args") == want,
            f"second call should be `uvw.exe {want}`, got {run}",
        )
        for call in calls:
            for name, value in expected_env.items():
                check(
                    call.get(name) == value,
                    f"{call['exe']} saw {name}={call.get(name)!r}, not {value!r}",
                )
        pythons = list((self.inst / "python").glob("cpython-*/python.exe"))
        check(pythons, "no Python in python\\ after the first run")
        check(
            "Installed Python" in setup_log.read_text(encoding="utf-8"),
            f"uv's output is not in {setup_log}",
        )
        self.calls_file.unlink()

        # Later runs: no install.
        code = self.launch()
        calls = read_calls(self.calls_file)
        check(code == 0, f"the launcher exited with {code} on the second run")
        check(
            len(calls) == 1
            and calls[0].get("exe") == "uvw.exe"
            and calls[0].get("args", "").strip() == run_args,
            f"the second run should only call `uvw.exe {run_args}`, got {calls}",
        )

    def step_update(self) -> None:
        # What app\start.pyw's first run makes (the stand-in doesn't run it), and a file that
        # the new version no longer ships.
        planted = {
            self.inst / "env" / "pyvenv.cfg": "home = x",
            self.inst / "cache" / "CACHEDIR.TAG": "cache",
            self.inst / "setup.lock": "",
            self.inst / "app" / "stale_module.py": "removed in the new version",
        }
        for path, text in planted.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        pythons = sorted((self.inst / "python").rglob("*"))
        self.wine.reg_add(SETTINGS_KEY, "recentProjects", r"C:\projects\ada")
        self.install()  # no /D: the update must find the earlier install by itself
        check(
            not (self.inst / "app" / "stale_module.py").exists(),
            "a stale app\\ file survived the update",
        )
        for path in list(planted)[:3]:
            check(path.is_file(), f"the update removed {path.relative_to(self.inst)}")
        check(sorted((self.inst / "python").rglob("*")) == pythons, "the update changed python\\")
        uv = hashlib.sha256((self.inst / "uv" / "uv.exe").read_bytes()).hexdigest()
        check(uv == self.real_uv, "the update did not replace uv\\uv.exe")
        check(not self.calls_file.exists(), "the update kept uv\\'s old files")
        default = self.wine.unix(rf"{self.local}\Programs\charstudio")
        check(not default.exists(), f"the update installed into {default} instead")
        settings = self.wine.reg_values(SETTINGS_KEY) or {}
        check(settings.get("recentProjects") == r"C:\projects\ada", "the update lost the settings")

    def step_running(self) -> None:
        """Neither the installer nor the uninstaller touches an install that is running."""
        for name in ("uv.exe", "uvw.exe"):  # the update put the real ones back
            shutil.copyfile(self.standin, self.inst / "uv" / name)
        (self.inst / "uv" / "run-seconds.txt").write_text("60")  # uvw.exe lingers like the app
        app_before = tree_digest(self.inst / "app")
        launcher = subprocess.Popen(
            [self.wine.wine, str(self.inst / "charstudio.exe")],
            env=self.wine.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            check(launcher.wait(timeout=60) == 0, "the launcher failed")
            result = self.wine.run(str(self.installer), "/S")
            check(
                result.returncode == 2,
                f"an update over a running charstudio exited with {result.returncode}, not 2",
            )
            # _?= runs the uninstaller in place, so its exit code is the real one. Like /D=, it
            # must come last and unquoted.
            uninstaller = self.inst / "uninstall.exe"
            result = self.wine.run(str(uninstaller), "/S", *("_?=" + self.instdir).split(" "))
            check(
                result.returncode == 2,
                f"uninstalling a running charstudio exited with {result.returncode}, not 2",
            )
        finally:
            launcher.wait(timeout=60)
            self.wine.kill()  # ends the lingering stand-in
            self.wine.wait()
        (self.inst / "uv" / "run-seconds.txt").unlink()
        check((self.inst / SENTINEL).is_file(), "an update over a running charstudio began")
        check(tree_digest(self.inst / "app") == app_before, "app\\ changed while charstudio ran")
        check((self.inst / "uv" / "uvw.exe").is_file(), "uv\\ changed while charstudio ran")
        check(self.wine.reg_values(UNINSTALL_KEY) is not None, "uninstalled while running")

    def step_refusals(self) -> None:
        # A folder holding someone else's app\ (and an uninstall.exe, which alone proves nothing).
        foreign = rf"{self.local}\Other"
        keep = self.wine.unix(rf"{foreign}\app\keep.txt")
        keep.parent.mkdir(parents=True)
        keep.write_text("someone else's")
        uninstaller = self.wine.unix(rf"{foreign}\uninstall.exe")
        shutil.copyfile(self.inst / "uninstall.exe", uninstaller)
        # The installer won't install there...
        result = self.wine.run(str(self.installer), "/S", "/D=" + foreign)
        self.wine.wait()
        check(
            result.returncode == 2,
            f"the installer accepted a folder with a foreign app\\ (exit code {result.returncode})",
        )
        check(keep.is_file(), "the installer deleted a foreign app\\ folder")
        check(
            not self.wine.unix(rf"{foreign}\{SENTINEL}").exists(), "installed over a foreign app\\"
        )
        # ...and the uninstaller won't delete anything there (_?= runs it in place, so its exit
        # code is the real one).
        result = self.wine.run(str(uninstaller), "/S", "_?=" + foreign)
        self.wine.wait()
        check(
            result.returncode == 2,
            f"the uninstaller did not refuse a non-install folder (exit code {result.returncode})",
        )
        check(keep.is_file(), "the uninstaller deleted in a folder that is not an install")
        check(
            self.wine.reg_values(UNINSTALL_KEY) is not None,
            "an uninstaller run elsewhere removed the registered install",
        )

    def step_uninstall(self) -> None:
        project = self.wine.unix(rf"{self.local}\Programs\Ada project")  # beside the install
        (project / "images").mkdir(parents=True)
        (project / "charstudio.sqlite").write_bytes(os.urandom(4096))
        (project / "images" / "00001-1234.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(2048))
        before = tree_digest(project)
        user_file = self.inst / "my notes.txt"
        user_file.write_text("mine")
        check((self.logs / "setup.log").is_file(), "no setup.log to keep")

        result = self.wine.run(str(self.inst / "uninstall.exe"), "/S")
        self.wine.wait()  # the uninstaller runs on from a copy in %TEMP%
        check(result.returncode == 0, f"silent uninstall exited with {result.returncode}")
        for name in (
            "app",
            "uv",
            "env",
            "python",
            "cache",
            "charstudio.exe",
            "uninstall.exe",
            "setup.lock",
            SENTINEL,
        ):
            check(not (self.inst / name).exists(), f"the uninstaller left {name}")
        check(not self.start_menu_lnk.exists(), "the uninstaller left the Start-menu shortcut")
        check(not self.desktop_lnk.exists(), "the uninstaller left the desktop shortcut")
        check(self.wine.reg_values(UNINSTALL_KEY) is None, f"the uninstaller left {UNINSTALL_KEY}")
        check(user_file.is_file(), "the uninstaller removed a user's file in the install folder")
        check(
            sorted(p.name for p in self.inst.iterdir()) == ["my notes.txt"],
            f"the install folder holds {sorted(p.name for p in self.inst.iterdir())}",
        )
        check(
            tree_digest(project) == before, "the uninstaller changed the project folder beside it"
        )
        settings = self.wine.reg_values(SETTINGS_KEY) or {}
        check(
            settings.get("recentProjects") == r"C:\projects\ada",
            "the uninstaller removed the settings",
        )
        check((self.logs / "setup.log").is_file(), "the uninstaller removed the logs")

    def prepare(self) -> None:
        self.wine.boot()
        self.setup_paths()
        self.standin = build_standin(self.work)

    def run(self) -> None:
        steps = [
            ("prepare a Wine prefix and the uv stand-in", self.prepare),
            ("a. silent install into a path with a space and é", self.step_install),
            ("b. launcher: failed download, first run, second run", self.step_launcher),
            ("c. update over the install", self.step_update),
            ("d. no update or uninstall while charstudio runs", self.step_running),
            ("e. installer and uninstaller refuse foreign folders", self.step_refusals),
            ("f. silent uninstall keeps projects, settings, logs", self.step_uninstall),
        ]
        for title, step in steps:
            started = time.monotonic()
            step()
            print(f"ok  {title} ({time.monotonic() - started:.1f} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("installer", type=Path, help="dist/charstudio-setup-<version>.exe")
    parser.add_argument("--keep", action="store_true", help="keep the Wine prefix (prints where)")
    args = parser.parse_args(argv)
    if not args.installer.is_file():
        print(f"wine_smoke_test: no installer at {args.installer}", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="charstudio-wine-"))
    started = time.monotonic()
    test = None
    try:
        test = SmokeTest(args.installer.resolve(), work)
        test.run()
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    finally:
        if test is not None:
            test.wine.kill()
        if args.keep:
            print(f"Wine prefix kept in {work / 'prefix'}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"All Wine smoke checks passed ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
