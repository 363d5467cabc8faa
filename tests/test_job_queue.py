"""The persistent job queue: submit, run in order, record outcomes, survive a restart."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from charstudio.catalog import Project
from charstudio.jobs import CancelToken, ProgressClock, run_job
from charstudio.jobs.queue import BUILTIN_KINDS, JobQueue, job_result


def counting_job(project: Project, params: dict[str, Any], cancel: CancelToken, job_id: int):
    clock = ProgressClock(params["n"])
    for i in range(params["n"]):
        cancel.raise_if_canceled()
        if params.get("fail_at") == i:
            raise RuntimeError("CUDA out of memory (simulated)")
        yield clock(i + 1)
    return {"counted": params["n"]}


KINDS = {**BUILTIN_KINDS, "count": counting_job}


@pytest.fixture
def project(tmp_path: Path):
    with Project.create(tmp_path / "p", "Anna") as project:
        yield project


def test_jobs_run_in_submission_order_and_record_results(project: Project) -> None:
    queue = JobQueue(project, KINDS)
    first = queue.submit("count", {"n": 3})
    second = queue.submit("count", {"n": 2})
    assert [j.id for j in queue.pending()] == [first, second]
    done = run_job(queue.run_next())
    assert (done.id, done.status) == (first, "done")
    assert project.catalog.job(first)["result"] == '{"counted": 3}'
    assert project.catalog.job(first)["progress"] == 1.0
    assert [j.id for j in queue.pending()] == [second]
    run_job(queue.run_next())
    assert run_job(queue.run_next()) is None


def test_a_finished_job_carries_its_result_and_the_catalog_keeps_it(project: Project) -> None:
    queue = JobQueue(project, KINDS)
    job_id = queue.submit("count", {"n": 2})
    done = run_job(queue.run_next())
    assert done.result == {"counted": 2} and job_result(project, done) == {"counted": 2}
    # A job another session ran is read back from the catalog; a missing one is {}.
    (stored,) = [j for j in queue.jobs(("done",)) if j.id == job_id]
    assert stored.result is None and job_result(project, stored) == {"counted": 2}
    assert job_result(project, dataclasses.replace(stored, id=999)) == {}


def test_a_failing_job_is_recorded_and_the_queue_goes_on(project: Project) -> None:
    queue = JobQueue(project, KINDS)
    bad = queue.submit("count", {"n": 5, "fail_at": 2})
    good = queue.submit("count", {"n": 1})
    result = run_job(queue.run_next())
    assert result.status == "failed" and "out of memory" in (result.error or "")
    assert project.catalog.job(bad)["status"] == "failed"
    assert run_job(queue.run_next()).id == good


def test_cancel_while_running_and_while_queued(project: Project) -> None:
    queue = JobQueue(project, KINDS)
    running = queue.submit("count", {"n": 10})
    waiting = queue.submit("count", {"n": 1})
    assert queue.cancel_queued(waiting)
    token = CancelToken()
    job = queue.run_next(token)
    next(job)
    token.cancel()
    assert run_job(job).status == "canceled"
    assert project.catalog.job(running)["status"] == "canceled"
    assert queue.pending() == []


def keeping_job(project: Project, params: dict[str, Any], cancel: CancelToken, job_id: int):
    """Like a generate job: checks the cancel between steps and returns what it finished."""
    clock = ProgressClock(params["n"])
    kept = []
    for i in range(params["n"]):
        if cancel.canceled:
            return {"kept": kept, "canceled": True}
        kept.append(i)
        yield clock(i + 1)
    return {"kept": kept, "canceled": False}


def test_a_canceled_job_keeps_the_result_of_what_it_finished(project: Project) -> None:
    queue = JobQueue(project, {"keep": keeping_job})
    job_id = queue.submit("keep", {"n": 10})
    token = CancelToken()
    job = queue.run_next(token)
    next(job), next(job), next(job)
    token.cancel()
    ended = run_job(job)
    assert ended.status == "canceled"
    record = project.catalog.job(job_id)
    assert record["status"] == "canceled"
    assert record["result"] == '{"kept": [0, 1, 2], "canceled": true}'  # "3 kept", not "0"


def test_a_job_that_ignores_cancel_is_stopped_after_the_grace(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    import charstudio.jobs.queue as queue_module

    monkeypatch.setattr(queue_module, "CANCEL_GRACE_S", 0.0)

    def stubborn(project: Project, params: dict[str, Any], cancel: CancelToken, job_id: int):
        clock = ProgressClock(1000)
        for i in range(1000):
            yield clock(i + 1)
        return {}

    queue = JobQueue(project, {"stubborn": stubborn})
    job_id = queue.submit("stubborn", {})
    token = CancelToken()
    job = queue.run_next(token)
    next(job)
    token.cancel()
    assert run_job(job).status == "canceled"
    assert project.catalog.job(job_id)["status"] == "canceled"


def test_queued_and_interrupted_jobs_survive_a_restart(project: Project, tmp_path: Path) -> None:
    queue = JobQueue(project, KINDS)
    interrupted = queue.submit("count", {"n": 3})
    queued = queue.submit("count", {"n": 1})
    job = queue.run_next()
    next(job)  # running... and the app is killed here
    project.close()
    with Project.open(tmp_path / "p") as reopened:
        queue = JobQueue(reopened, KINDS)
        assert queue.recover() == [interrupted]
        assert [j.id for j in queue.pending()] == [interrupted, queued]
        assert run_job(queue.run_next()).status == "done"


def test_held_jobs_are_not_picked_by_the_worker_until_resumed(project: Project) -> None:
    queue = JobQueue(project, KINDS)
    held = queue.submit("count", {"n": 1})
    other = queue.submit("count", {"n": 1})
    assert queue.hold([held]) == [held]
    assert run_job(queue.run_next()).id == other
    assert next(queue.run_next(), None) is None
    assert next(queue.run_next(job_id=held), None) is None  # not even when named
    assert project.catalog.job(held)["status"] == "paused"
    assert [j.id for j in queue.held()] == [held]
    assert queue.resume([held]) == [held] and [j.id for j in queue.pending()] == [held]
    assert queue.discard([other]) == []  # a finished job stays as it ended
    # ``charstudio jobs --run`` is explicit: it runs held and interrupted jobs alike.
    queue.hold([held])
    assert queue.recover() == [held] and [j.id for j in queue.pending()] == [held]


def test_unknown_kinds_and_unstorable_params_are_refused(project: Project) -> None:
    queue = JobQueue(project, KINDS)
    with pytest.raises(ValueError, match="unknown job kind"):
        queue.submit("paint", {})
    with pytest.raises(TypeError):
        queue.submit("count", {"n": object()})


def test_the_import_kind_runs_from_the_queue(project: Project, make_png, tmp_path: Path) -> None:
    make_png(tmp_path / "in" / "a.png", seed=1)
    queue = JobQueue(project)
    job_id = queue.submit("import", {"paths": [str(tmp_path / "in")], "copy": True})
    assert run_job(queue.run_next()).status == "done"
    assert project.catalog.image_count() == 1
    assert '"added": 1' in project.catalog.job(job_id)["result"]


def test_jobs_command_lists_and_runs_the_queue(project, make_png, tmp_path, capsys) -> None:
    import json

    from charstudio.cli import main

    make_png(tmp_path / "in" / "a.png", seed=1)
    JobQueue(project).submit("import", {"paths": [str(tmp_path / "in")]})
    root = str(project.root)
    project.close()
    assert main(["jobs", root, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["status"] == "queued"
    assert main(["jobs", root, "--run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["status"] == "done"


def test_failures_meant_for_the_artist_are_recorded_without_the_class_name() -> None:
    from charstudio.jobs import JobError, job_error_message, readable_job_error

    assert job_error_message(JobError("The GPU ran out of memory")) == "The GPU ran out of memory"
    assert job_error_message(ValueError("X axis: 'a cat' is not in the prompt")).startswith("X")
    assert job_error_message(KeyError("no training run 7")) == "no training run 7"
    # An unexpected error keeps its class: it is a bug to report.
    assert job_error_message(ZeroDivisionError("division by zero")) == (
        "ZeroDivisionError: division by zero"
    )
    # Records from before this rule read the same.
    assert readable_job_error("GenerationError: The GPU ran out") == "The GPU ran out"
    assert readable_job_error(None) == ""
