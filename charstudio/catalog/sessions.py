"""Undo sessions: one per open catalog, named so that a later one can tell whether the
process behind it is gone.

A session id is ``<host>:<pid>:<random>``. A session that closes hands its actions on (see
``decisions.end_session``); one whose process was killed never does, and another session on
the same computer notices that its process no longer runs. A session from another computer
(a project on a network share) is never taken for gone: its process cannot be checked.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid


def new_session_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"


def is_gone(session: str) -> bool:
    """Whether the process that opened ``session`` has certainly ended."""
    parts = session.split(":")
    if len(parts) < 3 or not parts[-2].isdigit():
        return False  # not a session id this charstudio made: leave it alone
    host, pid = ":".join(parts[:-2]), int(parts[-2])
    if host != socket.gethostname() or pid == os.getpid():
        return False
    return not _running(pid)


def _running(pid: int) -> bool:
    if sys.platform == "win32":
        return _running_windows(pid)
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, owned by another user
    return True


def _running_windows(pid: int) -> bool:
    # os.kill(pid, 0) would send Ctrl+C on Windows: ask for the process's exit code instead.
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    query_limited_information, still_active, no_such_process = 0x1000, 259, 87
    handle = kernel32.OpenProcess(query_limited_information, False, pid)
    if not handle:  # refused (another user's protected process) unless it does not exist
        return ctypes.get_last_error() != no_such_process  # type: ignore[attr-defined]
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == still_active
    finally:
        kernel32.CloseHandle(handle)
