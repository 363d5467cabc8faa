"""Tracebacks go to the log file (the Windows app has no console), not to the artist."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_uncaught_exceptions_land_in_the_log_file(tmp_path: Path) -> None:
    logs = tmp_path / "logs é"
    code = (
        "import sys, threading\n"
        "from charstudio import app_log\n"
        "print(app_log.install())\n"
        "app_log.install()\n"  # twice: still one handler
        "t = threading.Thread(target=lambda: 1 / 0, name='worker'); t.start(); t.join()\n"
        "sys.stderr = None\n"  # as under pythonw
        "raise KeyError('main thread failure')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"CHARSTUDIO_LOG_DIR": str(logs), "PATH": ""},
    )
    assert result.returncode == 1
    log = logs / "charstudio.log"
    assert result.stdout.strip() == str(log)
    text = log.read_text(encoding="utf-8")
    assert "uncaught exception in thread worker" in text
    assert "ZeroDivisionError" in text
    assert "KeyError: 'main thread failure'" in text
    assert text.count("ZeroDivisionError: division by zero") == 1
