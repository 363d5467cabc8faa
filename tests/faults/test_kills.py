"""kill -9 at a random moment: what was acknowledged stays, every row is whole, and the next
run picks up where the killed one stopped. One kill each here; benchmarks/faults.py repeats
them many times at random moments."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from charstudio.catalog import CATALOG_NAME, ImageRecord, Project
from charstudio.catalog.importer import ImportReport, import_images
from charstudio.jobs import run_job

from .conftest import assert_no_traceback, assert_whole_rows, charstudio, child_env, needs_sigkill

pytestmark = needs_sigkill

# A child that decides as fast as it can and prints each decision once decide() returned
# (acknowledged): "ack ID STARS". It announces the one in flight first: "try ID STARS".
_DECIDER = """
import random, sys
from charstudio.catalog import Project
rng = random.Random(int(sys.argv[2]))
with Project.open(sys.argv[1]) as project:
    ids = [r.id for r in project.catalog.images()]
    while True:
        image, stars = rng.choice(ids), rng.randrange(6)
        print("try", image, stars, flush=True)
        project.catalog.decide([image], "decide", stars=stars)
        print("ack", image, stars, flush=True)
"""


def _project_with_images(root: Path, count: int) -> Path:
    with Project.create(root, "Anna") as project:
        for n in range(1, count + 1):
            project.catalog.add_image(
                ImageRecord(
                    path=f"images/{n}.png",
                    sha256=f"{n:064x}",
                    file_size=1,
                    file_mtime=0.0,
                    width=8,
                    height=8,
                    format="PNG",
                )
            )
    return root


def kill_decider(root: Path, seed: int, acks: int) -> tuple[dict[int, int], tuple[int, int] | None]:
    """Run the decider until ``acks`` decisions were acknowledged, kill -9 it; return the last
    acknowledged stars per image and the decision that was in flight (if any)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _DECIDER, str(root), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=child_env(),
    )
    assert proc.stdout is not None
    acked: dict[int, int] = {}
    in_flight: tuple[int, int] | None = None
    count = 0
    deadline = time.monotonic() + 60
    while count < acks and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        kind, image, stars = line.split()
        if kind == "try":
            in_flight = (int(image), int(stars))
        else:
            acked[int(image)] = int(stars)
            in_flight = None
            count += 1
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Lines printed between the last read and the kill: still acknowledged.
    for line in proc.stdout.read().splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue  # a line cut by the kill
        if parts[0] == "try":
            in_flight = (int(parts[1]), int(parts[2]))
        else:
            acked[int(parts[1])] = int(parts[2])
            in_flight = None
    proc.stdout.close()
    assert count >= acks, "the decider stopped before it was killed"
    return acked, in_flight


def test_kill_9_while_deciding_loses_no_acknowledged_decision(tmp_path: Path) -> None:
    root = _project_with_images(tmp_path / "p", 20)
    acked, in_flight = kill_decider(root, seed=7, acks=random.Random(13).randrange(50, 300))
    with Project.open(root) as project:
        assert project.catalog.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for image, stars in acked.items():
            found = project.catalog.decision(image).stars
            # The decision in flight when the kill came may or may not have been committed.
            assert found == stars or (image, found) == in_flight, (image, found, stars)
        # The history is whole: the next action and its undo work.
        project.catalog.decide([1], "after the kill", stars=5)
        assert project.catalog.undo() == [1]


def _import(project: Project, *paths: Path, **kwargs) -> ImportReport:
    return run_job(import_images(project, list(paths), **kwargs))


@pytest.mark.parametrize("copy", [True, False], ids=["copy", "in-place"])
def test_killed_mid_import_leaves_only_whole_rows(project, make_png, tmp_path, copy) -> None:
    folder = tmp_path / "big"
    total = 1000  # enough that the import is still running when it is killed
    for n in range(total):
        make_png(folder / f"{n:04}.png", seed=n, size=96)
    project.close()
    catalog = project.root / CATALOG_NAME
    args = [str(project.root), str(folder), *(["--copy"] if copy else [])]
    proc = subprocess.Popen(
        [sys.executable, "-m", "charstudio", "import", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=child_env(),
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        conn = sqlite3.connect(catalog, timeout=10)
        count = conn.execute("SELECT count(*) FROM images").fetchone()[0]
        conn.close()
        if count >= 20:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    with Project.open(project.root) as reopened:
        conn = reopened.catalog.conn
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        n_images = reopened.catalog.image_count()
        assert 20 <= n_images < total
        # Every row is whole: it has its decision and its file.
        assert conn.execute("SELECT count(*) FROM decisions").fetchone()[0] == n_images
        assert reopened.missing_image_ids() == []
        report = _import(reopened, folder, copy=copy)
        assert report.failed == []
        assert report.added + report.duplicates == total
        assert reopened.catalog.image_count() == total
    assert assert_whole_rows(project.root) == total


# -- interrupted jobs ------------------------------------------------------------------------


def _wait_for_rows(catalog: Path, table: str, at_least: int, proc: subprocess.Popen) -> int:
    deadline = time.monotonic() + 240
    count = 0
    while time.monotonic() < deadline and proc.poll() is None:
        conn = sqlite3.connect(catalog, timeout=10)
        try:
            count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        except sqlite3.OperationalError:
            count = 0
        conn.close()
        if count >= at_least:
            return count
        time.sleep(0.05)
    pytest.fail(f"the child never wrote {at_least} {table} rows (exit {proc.poll()})")


@pytest.mark.slow
@pytest.mark.timeout(900)  # two processes that load torch and a model: slow on a busy machine
def test_a_killed_generate_job_is_finished_by_the_queue(tmp_path: Path, model_dir: Path) -> None:
    root = tmp_path / "p"
    Project.create(root, "Anna").close()
    tiny = ["--width", "32", "--height", "32", "--steps", "2", "--seed", "5"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "charstudio", "generate", str(root), "--model", str(model_dir),
         "--prompt", "a photo of a woman", "--batch-count", "4", "--no-grid", *tiny],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=child_env(),
    )  # fmt: skip
    _wait_for_rows(root / CATALOG_NAME, "images", 1, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    result = charstudio("jobs", str(root), "--run", "--json", timeout=300)
    assert_no_traceback(result)
    assert result.returncode == 0, result.stderr
    (job,) = json.loads(result.stdout)
    assert (job["kind"], job["status"]) == ("generate", "done")
    # Each of the 4 seeds has exactly one whole row; nothing was generated twice.
    assert assert_whole_rows(root) == 4


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_training_killed_then_resumed_finishes_the_same_run(
    tmp_path: Path, model_dir: Path, make_png
) -> None:
    root = tmp_path / "p"
    with Project.create(root, "Anna", token="4nna") as project:
        make_png(tmp_path / "in" / "a.png", seed=1)
        make_png(tmp_path / "in" / "b.png", seed=2)
        _import(project, tmp_path / "in")
        project.catalog.decide([r.id for r in project.catalog.images()], "pick", flag="pick")

    steps = 6
    proc = subprocess.Popen(
        [sys.executable, "-m", "charstudio", "train-ti", str(root), "--model", str(model_dir),
         "--steps", str(steps), "--save-every", "1", "--preview-every", "0",
         "--width", "32", "--height", "32"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=child_env(),
    )  # fmt: skip
    killed_after = _wait_for_rows(root / CATALOG_NAME, "checkpoints", 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    # The queue re-runs the interrupted job: the same run resumes from its newest good state.
    result = charstudio("jobs", str(root), "--run", "--json", timeout=300)
    assert_no_traceback(result)
    assert result.returncode == 0, result.stderr
    (job,) = json.loads(result.stdout)
    assert (job["kind"], job["status"]) == ("train-ti", "done")
    conn = sqlite3.connect(root / CATALOG_NAME)
    runs = conn.execute("SELECT id, status FROM runs").fetchall()
    saved = [s for (s,) in conn.execute("SELECT step FROM checkpoints ORDER BY step")]
    conn.close()
    assert [status for _, status in runs] == ["done"]  # one run, not a second one
    assert saved == list(range(1, steps + 1))  # every step saved once, before and after the kill
    assert killed_after < steps
