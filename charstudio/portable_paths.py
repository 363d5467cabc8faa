"""Names and path lengths that Windows accepts, decided by pure functions.

charstudio ships to Windows, so a name it makes from the artist's text (an embedding name, an
exported file, a run folder, a project folder) must be one Windows can create, and a path it
writes must fit Windows' limit of 259 characters unless long paths are enabled on the PC.

Windows refuses, in any file or folder name:

* the characters ``< > : " / \\ | ? *`` and control characters;
* a name ending in a dot or a space (Windows silently drops them, so the file gets another name);
* the device names ``CON PRN AUX NUL COM0-9 LPT0-9`` (and ``COM¹²³``, ``LPT¹²³``), in any case
  and with any extension: ``con.pt`` and ``Nul.txt`` are devices, not files.

Every function takes the platform as an argument (default: this one), so the Windows rules are
tested on any OS.
"""

from __future__ import annotations

import errno
import functools
import ntpath
import os
import posixpath
import sys
from pathlib import Path

__all__ = [
    "MAX_NAME_LENGTH",
    "WINDOWS_MAX_FOLDER",
    "WINDOWS_MAX_PATH",
    "PathTooLongError",
    "check_path_length",
    "current_platform",
    "folder_room_problem",
    "is_windows_reserved",
    "path_length_problem",
    "portable_name",
    "windows_long_paths_enabled",
    "windows_name_problem",
]

WINDOWS_MAX_PATH = 259  # MAX_PATH (260) less the terminating NUL
WINDOWS_MAX_FOLDER = 247  # a folder leaves room for an 8.3 name in it: 248 less the NUL
MAX_NAME_LENGTH = 255  # one file or folder name: NTFS counts UTF-16 units, ext4 bytes

_INVALID_CHARS = frozenset('<>:"/\\|?*')
_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{port}{n}" for port in ("COM", "LPT") for n in (*"0123456789", "¹", "²", "³")]
)
_EXTENDED_PREFIX = "\\\\?\\"


class PathTooLongError(OSError):
    """A path longer than Windows allows here; ``str()`` is the message for the artist."""

    def __init__(self, message: str, path: str | os.PathLike[str]) -> None:
        super().__init__(errno.ENAMETOOLONG, message, os.fspath(path))

    def __str__(self) -> str:
        return str(self.strerror)


def current_platform() -> str:
    """``sys.platform``; one place for the functions below (and tests) to ask."""
    return sys.platform


def _is_invalid_char(char: str) -> bool:
    return char in _INVALID_CHARS or ord(char) < 32


def _device_part(name: str) -> str:
    # Windows matches the part before the first dot, ignoring spaces before the dot.
    return name.split(".", 1)[0].rstrip(" ").upper()


def is_windows_reserved(name: str) -> bool:
    """Whether Windows treats ``name`` as a device (``CON``, ``nul.txt``, ``COM1.pt`` …)."""
    return _device_part(name) in _DEVICES


def windows_name_problem(name: str, *, what: str = "name") -> str | None:
    """Why ``name`` cannot be a file or folder name on Windows, in plain words; None when it
    can. ``what`` says what the name is for ("embedding name", "file name")."""
    if not name or not name.strip():
        return f"the {what} is empty"
    if name in (".", ".."):
        return f"{what} {name!r} is not a usable name"
    bad = sorted({c for c in name if _is_invalid_char(c)})
    if bad:
        shown = " ".join(c if ord(c) >= 32 else f"\\x{ord(c):02x}" for c in bad)
        return (
            f"{what} {name!r} contains {shown}, which Windows does not allow in file names "
            f'(< > : " / \\ | ? * are not allowed)'
        )
    if name[-1] in ". ":
        ending = "a dot" if name[-1] == "." else "a space"
        return f"{what} {name!r} ends with {ending}, which Windows drops from file names"
    if is_windows_reserved(name):
        return (
            f"{what} {name!r} cannot be used: Windows reserves {_device_part(name)} for a "
            "device (as it does CON, PRN, AUX, NUL, COM1-9 and LPT1-9, with any extension); "
            "choose another name"
        )
    if len(name) > MAX_NAME_LENGTH or len(name.encode("utf-8")) > MAX_NAME_LENGTH:
        return f"{what} {name[:40]!r}… is longer than {MAX_NAME_LENGTH} characters"
    return None


def _cut(text: str, length: int) -> str:
    """At most ``length`` characters and ``MAX_NAME_LENGTH`` UTF-8 bytes."""
    text = text[: max(0, length)]
    while len(text.encode("utf-8")) > MAX_NAME_LENGTH:
        text = text[:-1]
    return text


def portable_name(
    text: str, *, max_length: int = 120, fallback: str = "untitled", keep_suffix: bool = True
) -> str:
    """``text`` made into a file or folder name Windows (and every other OS) accepts.

    Characters Windows refuses become ``_``, trailing dots and spaces go, a device name gets a
    ``_`` after it (``CON.txt`` → ``CON_.txt``) and the name is cut to ``max_length``
    characters, keeping a short extension when ``keep_suffix``; surrounding spaces go too.
    An empty result is ``fallback``. A fine name short enough comes back unchanged.
    """
    name = "".join("_" if _is_invalid_char(c) else c for c in text).strip()
    stem, dot, suffix = name.rpartition(".") if keep_suffix else ("", "", "")
    if not dot or not stem or len(suffix) > 16 or " " in suffix:
        stem, suffix = name, ""
    suffix = f".{suffix}" if suffix else ""
    stem = _cut(stem, max_length - len(suffix))
    if not suffix:
        stem = stem.rstrip(". ")  # only the end of the whole name matters
    if not stem.strip(". "):
        stem = fallback
    if is_windows_reserved(stem + suffix):
        head, dot, tail = stem.partition(".")
        stem = f"{head.rstrip(' ')}_{dot}{tail}"
    return stem + suffix


@functools.cache
def windows_long_paths_enabled() -> bool:
    """Whether this Windows PC allows paths past 259 characters (the ``LongPathsEnabled``
    policy; Python itself is long-path aware). False on other systems and when unreadable."""
    if sys.platform != "win32":
        return False
    try:
        import winreg

        with winreg.OpenKey(
            winreg.HKEY_LOCAL_MACHINE, r"SYSTEM\CurrentControlSet\Control\FileSystem"
        ) as key:
            value, _kind = winreg.QueryValueEx(key, "LongPathsEnabled")
    except OSError:
        return False
    return value == 1


def _absolute(path: str | os.PathLike[str]) -> str:
    text = os.fspath(path)
    if ntpath.isabs(text) or posixpath.isabs(text):
        return text
    return os.path.abspath(text)


def path_length_problem(
    path: str | os.PathLike[str],
    *,
    folder: bool = False,
    platform: str | None = None,
    long_paths: bool | None = None,
) -> str | None:
    """Why ``path`` is too long for Windows, in plain words naming it; None when it fits.

    Only Windows without long paths has the limit: 259 characters for a file, 247 for a folder
    (``folder``). ``platform`` defaults to this one, ``long_paths`` to this PC's setting.
    """
    platform = platform if platform is not None else current_platform()
    if platform != "win32":
        return None
    if long_paths is None:
        long_paths = windows_long_paths_enabled()
    text = _absolute(path)
    if long_paths or text.startswith(_EXTENDED_PREFIX):
        return None
    limit = WINDOWS_MAX_FOLDER if folder else WINDOWS_MAX_PATH
    if len(text) <= limit:
        return None
    return (
        f"{text}: this path is {len(text)} characters long, but Windows allows only {limit} "
        "(long paths are not enabled on this PC). Choose a folder nearer the top of the drive "
        "or a shorter name"
    )


def folder_room_problem(
    folder: str | os.PathLike[str],
    inner: str,
    *,
    platform: str | None = None,
    long_paths: bool | None = None,
) -> str | None:
    """Why ``folder`` is too deep for Windows to hold files ``inner`` (a relative path, the
    deepest the app makes there) deeper still, in plain words naming it; None when they fit."""
    base = _absolute(folder)
    deepest = base.rstrip("/\\") + "/" + inner
    if path_length_problem(deepest, platform=platform, long_paths=long_paths) is None:
        return None
    allowed = WINDOWS_MAX_PATH - (len(deepest) - len(base))
    return (
        f"{base}: this folder is too deep for Windows: charstudio keeps files in it whose paths "
        f"would be {len(deepest)} characters long, but Windows allows only {WINDOWS_MAX_PATH} "
        f"(long paths are not enabled on this PC). Choose a folder whose path is at most "
        f"{allowed} characters long"
    )


def check_path_length(
    path: str | os.PathLike[str],
    *,
    folder: bool = False,
    platform: str | None = None,
    long_paths: bool | None = None,
) -> Path:
    """``path`` itself; raises :class:`PathTooLongError` when :func:`path_length_problem`
    finds it too long."""
    problem = path_length_problem(path, folder=folder, platform=platform, long_paths=long_paths)
    if problem:
        raise PathTooLongError(problem, path)
    return Path(path)
