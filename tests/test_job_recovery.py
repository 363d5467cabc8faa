"""Unfinished jobs: asked about when a project opens, held or discarded on the artist's word,
and a question before quitting while one runs."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from charstudio.catalog import Project
from charstudio.catalog.records import utc_now
from charstudio.engine.requests import GenerateRequest
from charstudio.engine.sweeps import GenerationSettings
from charstudio.jobs import CancelToken, ProgressClock
from charstudio.jobs.queue import BUILTIN_KINDS, JobQueue
from charstudio.presenters import job_recovery
from charstudio.presenters.job_recovery import (
    JobFacts,
    QuitChoice,
    RecoveryChoice,
    apply_recovery_choice,
    interrupted_jobs,
    interrupted_question,
    quit_question,
    when_text,
)
from charstudio.training import records

NOW = datetime(2026, 12, 8, 15, 0, tzinfo=UTC)
FOLDER = "runs/ti-001-anna"


@pytest.fixture
def project(tmp_path: Path):
    with Project.create(tmp_path / "p", "Anna", "anna") as project:
        yield project


def crashed_training(project: Project, saved: tuple[int, ...] = (600, 1200)) -> int:
    """A train-ti job the app died in: job and run ``running``, checkpoints on disk."""
    settings = {"name": "anna", "max_steps": 3000}
    job_id = project.catalog.create_job("train-ti", {"settings": settings}, status="running")
    project.catalog.update_job(job_id, started_at="2026-12-08T14:05:00.000+00:00", progress=0.45)
    run_id = records.create_run(
        project.catalog, name="anna", folder=FOLDER, params={"settings": settings}, job_id=job_id
    )
    for step in saved:
        path = project.root / FOLDER / f"anna-{step}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"embedding")
        records.record_checkpoint(project.catalog, run_id, step, f"{FOLDER}/{path.name}", 0.1, "")
    return job_id


def generate_job_with_images(project: Project, kept: int) -> int:
    request = GenerateRequest(
        GenerationSettings(prompt="portrait of anna, red coat, city street at night, rain"),
        x="Seed:1,2,3,4",
        y="CFG Scale:5,7",
    )
    job_id = project.catalog.create_job("generate", request.to_params(), status="queued")
    project.catalog.update_job(job_id, started_at="2026-12-07T09:12:00.000+00:00")
    with project.catalog.transaction() as conn:
        for n in range(kept):
            path = project.root / f"images/generated/job-{job_id:05d}/{n:04d}-1.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"png")
            conn.execute(
                "INSERT INTO images (path, sha256, file_size, file_mtime, width, height, format,"
                " added_at, job_id) VALUES (?, ?, 3, 0, 64, 64, 'PNG', ?, ?)",
                (path.relative_to(project.root).as_posix(), f"h{n}", utc_now(), job_id),
            )
    return job_id


# -- the question when a project opens --------------------------------------------------------


def test_interrupted_jobs_are_described_with_how_far_they_got(project: Project) -> None:
    train = crashed_training(project)
    generate = generate_job_with_images(project, kept=3)
    queued = JobQueue(project).submit("analyze", {})
    project.catalog.update_job(queued, created_at="2026-12-08T14:30:00.000+00:00")
    question = interrupted_question(interrupted_jobs(project), now=NOW, tz=UTC)
    assert question is not None
    assert question.job_ids == (train, generate, queued)
    assert question.jobs == (
        "Train TI 'anna' — stopped at step 1,200 of 3,000 (started today 14:05)",
        "Generate sweep 'portrait of anna, red coat, city street…' — 3 of 8 images made "
        "(started yesterday 09:12)",
        "Analyze faces — not started (queued today 14:30)",
    )
    assert "(2 stopped, 1 not started)" in question.text
    labels = {o.choice: o for o in question.options}
    assert [o.label for o in question.options] == ["Resume Now", "Later", "Discard"]
    assert "last saved checkpoint" in labels[RecoveryChoice.RESUME].explanation
    assert "only the images still missing" in labels[RecoveryChoice.RESUME].explanation
    assert "Resume Interrupted Jobs" in labels[RecoveryChoice.LATER].explanation
    assert "Nothing is deleted" in labels[RecoveryChoice.DISCARD].explanation
    assert question.escape is RecoveryChoice.LATER


def test_no_question_without_unfinished_jobs(project: Project) -> None:
    queue = JobQueue(project)
    done = queue.submit("analyze", {})
    project.catalog.update_job(done, status="done")
    assert interrupted_question(interrupted_jobs(project)) is None


def test_dates_are_said_the_way_people_say_them() -> None:
    assert when_text("2026-12-08T14:05:00.000+00:00", NOW, UTC) == "today 14:05"
    assert when_text("2026-12-07T23:59:00.000+00:00", NOW, UTC) == "yesterday 23:59"
    assert when_text("2026-11-03T08:00:00.000+00:00", NOW, UTC) == "3 Nov 08:00"
    assert when_text("2025-11-03T08:00:00.000+00:00", NOW, UTC) == "3 Nov 2025 08:00"
    assert when_text("not a date", NOW, UTC) == ""


def counting_job(project: Project, params: dict[str, Any], cancel: CancelToken, job_id: int):
    clock = ProgressClock(params["n"])
    for i in range(params["n"]):
        cancel.raise_if_canceled()
        yield clock(i + 1)
    return {"counted": params["n"]}


KINDS = {**BUILTIN_KINDS, "count": counting_job}


def test_resume_now_puts_the_jobs_back_in_the_queue(project: Project) -> None:
    queue = JobQueue(project, KINDS)
    job_id = project.catalog.create_job("count", {"n": 2}, status="running")
    facts = interrupted_jobs(project)
    changed, message = apply_recovery_choice(project, facts, RecoveryChoice.RESUME)
    assert changed == [job_id] and message == "Resuming 1 job"
    assert [j.id for j in queue.pending()] == [job_id]
    finished = queue.run_next()
    with pytest.raises(StopIteration) as stop:
        while True:
            next(finished)
    assert stop.value.value.status == "done"


def test_later_holds_the_jobs_so_nothing_starts(project: Project) -> None:
    queue = JobQueue(project, KINDS)
    train = crashed_training(project)
    waiting = queue.submit("count", {"n": 1})
    facts = interrupted_jobs(project)
    changed, message = apply_recovery_choice(project, facts, RecoveryChoice.LATER)
    assert changed == [train, waiting]
    assert "Jobs ▸ Resume Interrupted Jobs" in message
    assert [j.status for j in queue.jobs()] == ["paused", "paused"]
    assert queue.pending() == [] and next(queue.run_next(), None) is None  # nothing to start
    assert interrupted_jobs(project) == []  # not asked again at the next open
    # The run says it is paused (the Train panel offers Resume), not running.
    run = records.run_for_job(project.catalog, train)
    assert run is not None and run.status == "paused"

    held = job_recovery.held_question(job_recovery.held_jobs(project), now=NOW, tz=UTC)
    assert held is not None and held.job_ids == (train, waiting)
    assert held.jobs[0].startswith("Train TI 'anna' — stopped at step 1,200 of 3,000")
    apply_recovery_choice(project, job_recovery.held_jobs(project), RecoveryChoice.RESUME)
    assert [j.id for j in queue.pending()] == [train, waiting]


def test_discard_cancels_and_keeps_what_the_jobs_made(project: Project) -> None:
    train = crashed_training(project)
    generate = generate_job_with_images(project, kept=3)
    files = sorted(p for p in project.root.rglob("*") if p.is_file() and p.suffix != ".sqlite")
    changed, message = apply_recovery_choice(
        project, interrupted_jobs(project), RecoveryChoice.DISCARD
    )
    assert changed == [train, generate]
    assert "what they made is kept" in message
    queue = JobQueue(project)
    assert [j.status for j in queue.jobs()] == ["canceled", "canceled"]
    assert project.catalog.job(train)["finished_at"]
    run = records.run_for_job(project.catalog, train)
    assert run is not None and run.status == "canceled"  # resumable from the Train panel
    assert [c.step for c in records.run_checkpoints(project.catalog, run.id)] == [600, 1200]
    assert all(path.exists() for path in files)
    with project.catalog.transaction() as conn:
        kept = conn.execute("SELECT COUNT(*) FROM images WHERE job_id = ?", (generate,))
        assert kept.fetchone()[0] == 3


def test_a_run_another_job_took_over_is_left_alone(project: Project) -> None:
    train = crashed_training(project)
    run = records.run_for_job(project.catalog, train)
    assert run is not None
    later_job = project.catalog.create_job("train-ti", {"resume_run_id": run.id}, status="done")
    records.set_run_status(project.catalog, run.id, "done", job_id=later_job)
    facts = [f for f in interrupted_jobs(project) if f.job_id == train]
    apply_recovery_choice(project, facts, RecoveryChoice.DISCARD)
    assert records.get_run(project.catalog, run.id).status == "done"


# -- the question when quitting ---------------------------------------------------------------


def test_quitting_during_training_says_which_checkpoint_it_resumes_from(project: Project) -> None:
    train = crashed_training(project)
    job = JobQueue(project).jobs(("running",))[0]
    facts = job_recovery.job_facts(project, job)
    assert facts.job_id == train
    question = quit_question(facts, waiting=2)
    assert question.text == (
        "Train TI 'anna' is running (step 1,350 of 3,000). 2 more jobs are waiting."
    )
    assert "resumed from its last saved checkpoint, step 1,200" in question.consequence
    assert "(the 150 steps after it are trained again)" in question.consequence
    assert [o.choice for o in question.options] == [
        QuitChoice.QUIT,
        QuitChoice.KEEP,
        QuitChoice.CANCEL,
    ]
    assert question.escape is QuitChoice.KEEP and question.default is QuitChoice.KEEP


def test_quitting_a_sweep_keeps_its_images_and_training_before_a_checkpoint_starts_over() -> None:
    sweep = JobFacts(1, "generate", "running", "anna", images_kept=12, images_total=288)
    question = quit_question(sweep)
    assert "(12 of 288 images made)" in question.text
    assert "The 12 images made so far stay; resuming makes the rest." in question.consequence
    early = JobFacts(2, "train-ti", "running", "anna", run_id=4, saved_step=0)
    assert "No checkpoint has been saved yet" in quit_question(early).consequence


# -- the GUI ----------------------------------------------------------------------------------


def _import_left_running(root: Path, source: Path) -> int:
    with Project.open(root) as project:  # as if the app died while importing
        queue = JobQueue(project)
        job_id = queue.submit("import", {"paths": [str(source)], "copy": False})
        job = queue.run_next()
        next(job)
    return job_id


@pytest.mark.gui
@pytest.mark.parametrize("answer", [RecoveryChoice.RESUME, RecoveryChoice.LATER])
def test_opening_a_project_with_an_interrupted_job_asks_before_starting_it(
    qtbot, tmp_path: Path, make_png, monkeypatch, answer: RecoveryChoice
) -> None:
    from PySide6.QtCore import QSettings

    from charstudio.ui import job_recovery_dialog
    from charstudio.ui.main_window import MainWindow

    Project.create(tmp_path / "proj", "Anna").close()
    for n in range(3):
        make_png(tmp_path / "out" / f"{n}.png", seed=n)
    job_id = _import_left_running(tmp_path / "proj", tmp_path / "out")
    asked: list[tuple[str, ...]] = []
    seen: list[tuple[bool, str, int]] = []

    def ask(parent: Any, question: job_recovery.RecoveryQuestion) -> RecoveryChoice:
        assert window.project is not None and window.queue_worker is not None
        status = window.project.catalog.job(job_id)["status"]
        seen.append((window.queue_worker.busy(), status, window.model.rowCount()))
        asked.append(question.jobs)
        return answer

    monkeypatch.setattr(job_recovery_dialog, "ask_recovery", ask)
    window = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat))
    qtbot.addWidget(window)
    try:
        assert window.open_project(tmp_path / "proj")
        assert window.project is not None
        assert window.project.catalog.job(job_id)["status"] == "running"  # not yet asked
        qtbot.waitUntil(lambda: bool(asked), timeout=5000)
        # Not started before the answer: the job had not moved and nothing was imported.
        assert seen == [(False, "running", 0)]
        assert asked[0][0].startswith("Import 'out'")
        if answer is RecoveryChoice.RESUME:
            qtbot.waitUntil(lambda: window.model.rowCount() == 3, timeout=20000)
            assert not window.resume_held_action.isEnabled()
            return
        assert window.project is not None
        assert window.project.catalog.job(job_id)["status"] == "paused"
        assert window.resume_held_action.isEnabled()
        # Another job runs; the held one still waits.
        make_png(tmp_path / "more" / "x.png", seed=9)
        with qtbot.waitSignal(window.queue_worker.jobFinished, timeout=20000) as finished:
            window.start_import([tmp_path / "more"])
        assert finished.args[0].status == "done"
        assert window.project.catalog.job(job_id)["status"] == "paused"
        # Jobs ▸ Resume Interrupted Jobs starts it.
        monkeypatch.setattr(
            job_recovery_dialog, "ask_recovery", lambda parent, q: RecoveryChoice.RESUME
        )
        window.resume_held_action.trigger()
        qtbot.waitUntil(lambda: window.model.rowCount() == 4, timeout=20000)
        assert not window.resume_held_action.isEnabled()
    finally:
        window.close()


def waiting_job(project: Project, params: dict[str, Any], cancel: CancelToken, job_id: int):
    """Runs until canceled, like a long training."""
    clock = ProgressClock(1000)
    for i in range(1000):
        cancel.raise_if_canceled()
        time.sleep(0.01)
        yield clock(i, "waiting")
    return {}


@pytest.mark.gui
@pytest.mark.parametrize(
    ("answers", "status"),
    [((QuitChoice.KEEP, QuitChoice.QUIT), "queued"), ((QuitChoice.CANCEL,), "canceled")],
)
def test_closing_while_a_job_runs_asks_what_to_do(
    qtbot, tmp_path: Path, monkeypatch, answers: tuple[QuitChoice, ...], status: str
) -> None:
    from PySide6.QtCore import QSettings

    from charstudio.ui import job_recovery_dialog
    from charstudio.ui.main_window import MainWindow

    monkeypatch.setitem(BUILTIN_KINDS, "wait", waiting_job)
    Project.create(tmp_path / "proj", "Anna").close()
    window = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat))
    qtbot.addWidget(window)
    window.show()
    assert window.open_project(tmp_path / "proj")
    assert window.project is not None and window.queue_worker is not None
    with qtbot.waitSignal(window.queue_worker.jobStarted, timeout=10000):
        job_id = window.queue_worker.submit(window.project, "wait", {})
    qtbot.waitUntil(lambda: window.project.catalog.job(job_id)["status"] == "running")
    questions: list[job_recovery.QuitQuestion] = []
    replies = list(answers)

    def ask(parent: Any, question: job_recovery.QuitQuestion) -> QuitChoice:
        questions.append(question)
        return replies.pop(0)

    monkeypatch.setattr(job_recovery_dialog, "ask_quit", ask)
    root = tmp_path / "proj"
    if answers[0] is QuitChoice.KEEP:
        assert not window.close()  # kept working: the window stays and the job goes on
        assert window.isVisible() and window.queue_worker.busy()
        assert questions[0].text.startswith("wait is running")
        assert "asks whether to resume" in questions[0].consequence
    assert window.close()
    assert len(questions) == len(answers)
    with Project.open(root) as project:
        assert project.catalog.job(job_id)["status"] == status
