"""Writing, copying, moving and deleting files so that neither a crash nor Windows loses one.

* **Atomic writes.** The bytes go to a hidden temporary file in the target's own folder (so the
  final rename never crosses drives), are flushed to disk and renamed over the target with
  ``os.replace``: a crash leaves the old file or the new one, never half of one. On any failure
  the temporary file is removed and the old target is left as it was.
* **Files that are open elsewhere.** On Windows a file another program has open (an image
  viewer, antivirus, Explorer making a preview, charstudio itself) cannot be replaced or deleted
  for a moment. Renames and deletes are retried for about two seconds; then
  :class:`FileInUseError` says so in plain words and names the file.
* **Moves between drives.** :func:`move_file` renames when it can; across drives (``EXDEV``,
  Windows' ``ERROR_NOT_SAME_DEVICE``) it copies beside the target, renames the copy into place,
  then deletes the source.
* Temporary files are created with mode 0o666, so the umask decides permissions as for any
  other file the app writes, and get unique names, so concurrent writers never share one. Their
  names start with a dot and end in ``.tmp``; the importer and the embedding scanner skip them.

Standard library only: the core's lowest layer, below catalog, metadata, engine and training.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from charstudio.portable_paths import check_path_length, path_length_problem

__all__ = [
    "RETRY_SECONDS",
    "FileInUseError",
    "atomic_write",
    "copy_file_atomic",
    "move_file",
    "remove_file",
    "replace_file",
    "write_bytes_atomic",
]

RETRY_SECONDS = 2.0  # how long a rename or delete of a file held open is retried
_FIRST_DELAY_S = 0.02
_MAX_DELAY_S = 0.25
# Windows errors for a file held open elsewhere: access denied (what a rename over an open
# file gets), sharing violation, lock violation (PermissionError in Python), and a file mapped
# into some process's memory (ERROR_USER_MAPPED_FILE).
_IN_USE_WINERRORS = frozenset({5, 32, 33, 1224})
_NOT_SAME_DEVICE = 17  # Windows' ERROR_NOT_SAME_DEVICE (Python's errno for it is EXDEV)
_TEMP_NAME_PART = 80  # characters of the target's name kept in its temporary file's name

PathLike = str | os.PathLike[str]


class FileInUseError(PermissionError):
    """A file that could not be replaced or deleted because it stayed open elsewhere (on
    Windows). ``str()`` is the message for the artist; ``filename`` is the file."""

    def __init__(self, path: PathLike, action: str, cause: OSError | None = None) -> None:
        readonly = getattr(cause, "winerror", None) == 5
        message = (
            f"{os.fspath(path)}: cannot {action} this file because another program has it open "
            "(an image viewer, antivirus, Explorer's preview, or charstudio itself)"
            + (" or it is read-only" if readonly else "")
            + ". Close it there (or wait a moment) and try again"
        )
        super().__init__(errno.EACCES, message, os.fspath(path))

    def __str__(self) -> str:
        return str(self.strerror)


def _in_use(error: OSError) -> bool:
    return getattr(error, "winerror", None) in _IN_USE_WINERRORS


def _cross_device(error: OSError) -> bool:
    return error.errno == errno.EXDEV or getattr(error, "winerror", None) == _NOT_SAME_DEVICE


def _retrying(action: Callable[[], None], path: PathLike, what: str) -> None:
    """Run ``action``; while it fails because the file is open elsewhere, retry with a short
    backoff for :data:`RETRY_SECONDS`, then raise :class:`FileInUseError`."""
    deadline = time.monotonic() + RETRY_SECONDS
    delay = _FIRST_DELAY_S
    while True:
        try:
            action()
            return
        except OSError as error:
            if not _in_use(error):
                raise
            if time.monotonic() >= deadline:
                raise FileInUseError(path, what, error) from error
        time.sleep(delay)
        delay = min(delay * 2, _MAX_DELAY_S)


def replace_file(source: PathLike, target: PathLike, *, keep_existing: bool = False) -> None:
    """``os.replace(source, target)``, retried while ``target`` (or ``source``) is open
    elsewhere. With ``keep_existing``, a target that exists but is open is kept as it is and
    ``source`` is deleted instead: for caches, whose file for a name never changes."""
    if keep_existing:
        try:
            os.replace(source, target)
            return
        except OSError as error:
            if not _in_use(error):
                raise
            if os.path.isfile(target):
                _discard(Path(source))
                return
    _retrying(lambda: os.replace(source, target), target, "replace")


def remove_file(path: PathLike, *, missing_ok: bool = True) -> bool:
    """Delete ``path``, retried while it is open elsewhere; False when it did not exist (and
    ``missing_ok``). Raises :class:`FileInUseError` when it stays open."""
    removed = True

    def unlink() -> None:
        nonlocal removed
        try:
            os.unlink(path)
        except FileNotFoundError:
            if not missing_ok:
                raise
            removed = False

    _retrying(unlink, path, "delete")
    return removed


def _discard(tmp: Path) -> None:
    """Remove a temporary file on the way out of a failure, never hiding that failure."""
    with contextlib.suppress(OSError):
        remove_file(tmp)


def _temp_path(target: Path) -> Path:
    tag = secrets.token_hex(4)
    tmp = target.with_name(f".{target.name[:_TEMP_NAME_PART]}.{tag}.tmp")
    if path_length_problem(tmp) and not path_length_problem(target):
        tmp = target.with_name(f".{tag}.tmp")  # Windows: keep the temporary name short
    return tmp


def _open_temp(target: Path) -> tuple[Path, int]:
    # O_EXCL: never write into a file someone else made; 0o666: the umask decides.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(8):
        tmp = check_path_length(_temp_path(target))
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", os.fspath(target))


def _write_replace(
    target: PathLike,
    write: Callable[[BinaryIO], object],
    *,
    durable: bool,
    keep_existing: bool,
    finish: Callable[[Path], object] | None = None,
) -> Path:
    target = check_path_length(target)
    tmp, fd = _open_temp(target)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        if finish is not None:
            finish(tmp)
        replace_file(tmp, target, keep_existing=keep_existing)
    except BaseException:
        _discard(tmp)
        raise
    return target


def atomic_write(
    target: PathLike,
    write: Callable[[BinaryIO], object],
    *,
    durable: bool = True,
    keep_existing: bool = False,
) -> Path:
    """Write ``target`` atomically: ``write(fh)`` fills a temporary file beside it (opened for
    binary writing), which is flushed, fsynced (unless ``durable`` is False: caches) and
    renamed over ``target``. Returns ``target``.

    On any failure, ``write``'s own included, the temporary file is removed and ``target`` is
    left intact. Raises :class:`FileInUseError` when ``target`` stays open elsewhere (see
    :func:`replace_file` for ``keep_existing``) and
    :class:`~charstudio.portable_paths.PathTooLongError` when the path is too long for Windows.
    """
    return _write_replace(target, write, durable=durable, keep_existing=keep_existing)


def write_bytes_atomic(target: PathLike, data: bytes, *, durable: bool = True) -> Path:
    """:func:`atomic_write` of ``data``."""
    return _write_replace(target, lambda fh: fh.write(data), durable=durable, keep_existing=False)


def copy_file_atomic(source: PathLike, target: PathLike, *, durable: bool = True) -> Path:
    """Copy ``source`` to ``target`` atomically, with its permission bits and times (as
    ``shutil.copy2``): ``target`` is either absent or whole, never a partial copy."""

    def copy(fh: BinaryIO) -> None:
        with open(source, "rb") as src:
            shutil.copyfileobj(src, fh, 1 << 20)

    return _write_replace(
        target,
        copy,
        durable=durable,
        keep_existing=False,
        finish=lambda tmp: shutil.copystat(source, tmp),
    )


def move_file(source: PathLike, target: PathLike) -> Path:
    """Move ``source`` to ``target``, replacing it: a rename on the same drive; across drives a
    copy beside ``target`` renamed into place, then ``source`` deleted. Returns ``target``."""
    target = check_path_length(target)
    try:
        replace_file(source, target)
    except OSError as error:
        if not _cross_device(error):
            raise
        copy_file_atomic(source, target)
        remove_file(source)
    return target
