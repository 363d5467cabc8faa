"""Tracebacks go to the log file (the Windows app has no console), not to the artist."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, logs: Path) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter (its own hooks and handlers), logging into ``logs``."""
    env = {"CHARSTUDIO_LOG_DIR": str(logs), "PATH": ""}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env
    )


def test_uncaught_exceptions_land_in_the_log_file(tmp_path: Path) -> None:
    logs = tmp_path / "logs é"
    code = (
        "import sys, threading\n"
        "from charstudio import app_log\n"
        "print(app_log.install())\n"
        "app_log.install()\n"  # twice: still one handler
        "t = threading.Thread(target=lambda: 1 / 0, name='worker'); t.start(); t.join()\n"
        "raise KeyError('main thread failure')\n"
    )
    result = run_python(code, logs)
    assert result.returncode == 1
    log = logs / "charstudio.log"
    assert result.stdout.strip() == str(log)
    text = log.read_text(encoding="utf-8")
    assert "uncaught exception in thread worker" in text
    assert "ZeroDivisionError" in text
    assert "KeyError: 'main thread failure'" in text
    assert text.count("ZeroDivisionError: division by zero") == 1
    # The console gets one line that names the log, never the traceback.
    assert "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        == f"charstudio: unexpected error: 'main thread failure' (details in {log})"
    )


def test_a_failed_job_logs_its_traceback_and_records_one_line(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    code = (
        "from charstudio import app_log\n"
        "from charstudio.catalog import Project\n"
        "from charstudio.jobs import run_job\n"
        "from charstudio.jobs.queue import JobQueue\n"
        "app_log.install()\n"
        f"project = Project.create({str(tmp_path / 'p')!r}, 'P', None)\n"
        "def broken(project, params, cancel, job_id):\n"
        "    raise ValueError('the model file is damaged')\n"
        "    yield\n"
        "queue = JobQueue(project, kinds={'broken': broken})\n"
        "job = run_job(queue.run_next(job_id=queue.submit('broken', {})))\n"
        "print(job.error)\n"
    )
    result = run_python(code, logs)
    assert result.stdout.strip() == "the model file is damaged", result.stderr
    assert "Traceback" not in result.stderr
    log = (logs / "charstudio.log").read_text(encoding="utf-8")
    assert "failed: the model file is damaged" in log and "Traceback" in log
