"""Shared by the fault tests: the ``faults`` marker, a command-line runner that fails a hang
instead of blocking, and the checks every fault must pass (no traceback, whole rows only).

Fault tests elsewhere, because they share their module's fixtures: malicious and damaged
checkpoints in tests/test_model_loading.py, embeddings in tests/test_embeddings.py, LoRAs in
tests/test_loras.py; damaged image bytes (every format, fuzzed) in tests/test_imagefile.py;
a newer and a non-SQLite catalog in tests/test_catalog.py; training resume after a crash in
tests/test_train_ti.py; interrupted jobs in process in tests/test_job_queue.py; undo across
sessions in tests/test_decisions.py.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
REPO = HERE.parent.parent

posix_only = pytest.mark.skipif(os.name != "posix", reason="needs POSIX links, FIFOs, bytes names")
needs_sigkill = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "faults: fault injection (kills, bad files, damaged catalogs, fuzzing)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.faults)


def child_env() -> dict[str, str]:
    """The environment of a charstudio child process: offline, offscreen, importable."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, HF_HUB_OFFLINE="1", QT_QPA_PLATFORM="offscreen", PYTHONPATH=path)


def charstudio(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``charstudio ARGS`` in a child process; a hang raises TimeoutExpired (a failure)."""
    return subprocess.run(
        [sys.executable, "-m", "charstudio", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
        check=False,
    )


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    """What the artist sees is a plain message: never a Python traceback."""
    for stream in (result.stdout, result.stderr):
        assert "Traceback" not in stream, stream


def assert_whole_rows(root: Path) -> int:
    """Every image row has its file and every file in images/ its row (no half rows); the
    database is intact. Returns the number of images."""
    conn = sqlite3.connect(root / "charstudio.sqlite")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        paths = [p for (p,) in conn.execute("SELECT path FROM images")]
        decisions = conn.execute("SELECT count(*) FROM decisions").fetchone()[0]
    finally:
        conn.close()
    assert decisions == len(paths)
    missing = [
        p for p in paths if not (root / p if not Path(p).is_absolute() else Path(p)).is_file()
    ]
    assert missing == []
    images = root / "images"
    on_disk = {
        f"images/{p.relative_to(images).as_posix()}"
        for p in images.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }
    assert on_disk - set(paths) == set()
    return len(paths)
