"""The project's persistent job queue.

Jobs are rows of the catalog's ``jobs`` table, so queued work survives a restart. One
worker serves the queue (the GPU is one resource): ``run_next`` claims the oldest queued
job, runs it and records how it ended. Jobs are written to be re-run safely (an import skips
what it already added, training resumes from its last checkpoint): ``recover`` puts jobs a
crash left ``running`` back in the queue (``charstudio jobs --run``); the GUI asks the artist
first, and may ``hold`` them (the schema's ``paused`` status: queued work the worker never
picks), ``resume`` them or ``discard`` them (canceled; what they made stays).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from charstudio import finite_json
from charstudio.catalog.catalog import Catalog
from charstudio.catalog.project import Project
from charstudio.jobs.protocol import CancelToken, Job, JobCanceled, job_error_message

_log = logging.getLogger(__name__)

# How long a canceled job may take to stop on its own and report what it finished.
CANCEL_GRACE_S = 10.0

# kind → function(project, params, cancel, job_id) returning the job generator; the job id
# lets a job tag what it creates (generated images) and find it again when it is re-run.
JobFactory = Callable[[Project, dict[str, Any], CancelToken, int], Job[Any]]

# A held job waits for the artist: it is never claimed until ``resume`` puts it back in the
# queue. The catalog's ``paused`` status (a CHECK constraint lists the statuses) stores it.
HELD = "paused"
# Jobs that have not ended: waiting, held, or left running by a crash.
UNFINISHED = ("queued", "running", HELD)


def _import_factory(
    project: Project, params: dict[str, Any], cancel: CancelToken, job_id: int
) -> Job[Any]:
    from charstudio.catalog.importer import import_images

    report = yield from import_images(
        project, params["paths"], copy=bool(params.get("copy")), cancel=cancel, job_id=job_id
    )
    return report.to_json()


def _export_factory(
    project: Project, params: dict[str, Any], cancel: CancelToken, job_id: int
) -> Job[Any]:
    from pathlib import Path

    from charstudio.catalog.export import export_images

    report = yield from export_images(
        project, [int(i) for i in params["image_ids"]], Path(params["dest"]), cancel=cancel
    )
    return report.to_json()


def _generate_factory(
    project: Project, params: dict[str, Any], cancel: CancelToken, job_id: int
) -> Job[Any]:
    from charstudio.engine.generate import generate_job

    result = yield from generate_job(project, params, cancel, job_id)
    return result.to_json()


def _analyze_factory(
    project: Project, params: dict[str, Any], cancel: CancelToken, job_id: int
) -> Job[Any]:
    from charstudio.analysis.project import analyze_project

    ids = params.get("image_ids")
    return (yield from analyze_project(project, cancel=cancel, image_ids=ids))


def _train_ti_factory(
    project: Project, params: dict[str, Any], cancel: CancelToken, job_id: int
) -> Job[Any]:
    from charstudio.training.ti import train_ti_job

    result = yield from train_ti_job(project, params, cancel, job_id)
    return result.to_json()


def _train_lora_factory(
    project: Project, params: dict[str, Any], cancel: CancelToken, job_id: int
) -> Job[Any]:
    from charstudio.training.lora import train_lora_job

    result = yield from train_lora_job(project, params, cancel, job_id)
    return result.to_json()


def _grid_factory(
    project: Project, params: dict[str, Any], cancel: CancelToken, job_id: int
) -> Job[Any]:
    from charstudio.training.checkpoint_grid import checkpoint_grid_job

    result = yield from checkpoint_grid_job(project, params, cancel, job_id)
    return result.to_json()


BUILTIN_KINDS: dict[str, JobFactory] = {
    "grid": _grid_factory,
    "train-ti": _train_ti_factory,
    "train-lora": _train_lora_factory,
    "import": _import_factory,
    "export": _export_factory,
    "generate": _generate_factory,
    "analyze": _analyze_factory,
}


@dataclass(frozen=True)
class QueuedJob:
    id: int
    kind: str
    params: dict[str, Any]
    status: str
    created_at: str
    error: str | None = None
    progress: float | None = None  # 0..1, as far as it got
    started_at: str | None = None
    result: dict[str, Any] | None = None  # what a finished job returned (its JSON form)


def job_result(project: Project, job: QueuedJob) -> dict[str, Any]:
    """What a finished job returned: the one it carries, else the catalog's copy (a job the
    command line or an earlier session ran); {} when there is none or it is unreadable."""
    if job.result is not None:
        return job.result
    from sqlite_utils.db import NotFoundError

    try:
        stored = project.catalog.job(job.id).get("result")
        result = json.loads(stored) if stored else {}
    except (NotFoundError, ValueError, TypeError):  # no such row, or no JSON in it
        return {}
    return result if isinstance(result, dict) else {}


class JobQueue:
    def __init__(self, project: Project, kinds: Mapping[str, JobFactory] | None = None) -> None:
        self.project = project
        self.kinds = dict(BUILTIN_KINDS if kinds is None else kinds)

    @property
    def _catalog(self) -> Catalog:
        return self.project.catalog

    def submit(self, kind: str, params: dict[str, Any]) -> int:
        if kind not in self.kinds:
            raise ValueError(f"unknown job kind {kind!r}; known: {', '.join(sorted(self.kinds))}")
        json.dumps(params)  # parameters must survive being stored
        return self._catalog.create_job(kind, params, status="queued")

    def jobs(self, statuses: tuple[str, ...] | None = None) -> list[QueuedJob]:
        query = "SELECT id, kind, params, status, created_at, error, progress, started_at FROM jobs"
        args: list[Any] = []
        if statuses:
            query += f" WHERE status IN ({','.join('?' * len(statuses))})"
            args = list(statuses)
        with self._catalog.transaction() as conn:
            rows = conn.execute(query + " ORDER BY id", args).fetchall()
        return [QueuedJob(r[0], r[1], json.loads(r[2]), *r[3:]) for r in rows]

    def pending(self) -> list[QueuedJob]:
        return self.jobs(("queued",))

    def held(self) -> list[QueuedJob]:
        return self.jobs((HELD,))

    def _set_unfinished(
        self, job_ids: list[int], sets: str, args: tuple[Any, ...] = ()
    ) -> list[int]:
        """Apply ``sets`` to those of ``job_ids`` that have not ended; returns their ids. For
        jobs no worker serves now (the one it runs is stopped through its cancel token)."""
        if not job_ids:
            return []
        marks = ",".join("?" * len(job_ids))
        where = f"id IN ({marks}) AND status IN ({','.join('?' * len(UNFINISHED))})"
        with self._catalog.transaction() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    f"SELECT id FROM jobs WHERE {where} ORDER BY id", (*job_ids, *UNFINISHED)
                )
            ]
            conn.execute(f"UPDATE jobs SET {sets} WHERE {where}", (*args, *job_ids, *UNFINISHED))
        return ids

    def hold(self, job_ids: list[int]) -> list[int]:
        """Keep unfinished jobs from starting until ``resume``; returns the ids held."""
        return self._set_unfinished(job_ids, f"status = '{HELD}', started_at = NULL")

    def resume(self, job_ids: list[int]) -> list[int]:
        """Put held (or interrupted) jobs back in the queue; returns their ids."""
        return self._set_unfinished(
            job_ids, "status = 'queued', started_at = NULL, finished_at = NULL"
        )

    def discard(self, job_ids: list[int]) -> list[int]:
        """Mark unfinished jobs canceled. Nothing they made is deleted: saved checkpoints,
        generated images and imported files stay where they are."""
        from charstudio.catalog.records import utc_now

        return self._set_unfinished(job_ids, "status = 'canceled', finished_at = ?", (utc_now(),))

    def recover(self) -> list[int]:
        """Put jobs a crash left ``running``, and held (``paused``) ones, back in the queue."""
        with self._catalog.transaction() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM jobs WHERE status IN ('running', 'paused') ORDER BY id"
                )
            ]
            conn.executemany(
                "UPDATE jobs SET status = 'queued', started_at = NULL WHERE id = ?",
                [(i,) for i in ids],
            )
        return ids

    def requeue(self, job_id: int) -> None:
        """Put a job that was stopped (not canceled by the artist) back in the queue, e.g.
        when the app closes while it runs."""
        with self._catalog.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET status = 'queued', started_at = NULL, finished_at = NULL "
                "WHERE id = ?",
                (job_id,),
            )

    def cancel_queued(self, job_id: int) -> bool:
        with self._catalog.transaction() as conn:
            changed = conn.execute(
                "UPDATE jobs SET status = 'canceled' WHERE id = ? AND status = 'queued'",
                (job_id,),
            ).rowcount
        return bool(changed)

    def _claim(self, job_id: int | None = None) -> QueuedJob | None:
        """Mark the oldest queued job (or ``job_id`` if it is queued) running, in one
        transaction (one worker at a time)."""
        from charstudio.catalog.records import utc_now

        where = "status = 'queued'" + (" AND id = ?" if job_id is not None else "")
        args = [job_id] if job_id is not None else []
        with self._catalog.transaction() as conn:
            row = conn.execute(
                f"SELECT id, kind, params, status, created_at FROM jobs WHERE {where} "
                "ORDER BY id LIMIT 1",
                args,
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET status = 'running', started_at = ?, error = NULL WHERE id = ?",
                (utc_now(), row[0]),
            )
        return QueuedJob(row[0], row[1], json.loads(row[2]), "running", row[4])

    def run_next(
        self, cancel: CancelToken | None = None, *, job_id: int | None = None
    ) -> Job[QueuedJob | None]:
        """Run the oldest queued job (or the queued job ``job_id``); yields its progress,
        returns it with its final status (None when there is no such queued job). A failing
        job is recorded, never raised."""
        job = self._claim(job_id)
        if job is None:
            return None
        cancel = cancel or CancelToken()
        try:
            factory = self.kinds[job.kind]
            gen = factory(self.project, job.params, cancel, job.id)
            canceled_at: float | None = None
            while True:
                try:
                    event = next(gen)
                except StopIteration as stop:
                    result = stop.value
                    break
                if event.fraction is not None:
                    self._catalog.update_job(job.id, progress=event.fraction)
                yield event
                # A job sees the cancel at its next step and returns what it finished (a
                # generate job: the images it kept); one that goes on past the grace is stopped.
                if cancel.canceled:
                    canceled_at = canceled_at or time.monotonic()
                    if time.monotonic() - canceled_at > CANCEL_GRACE_S:
                        gen.close()
                        raise JobCanceled()
        except JobCanceled:
            self._catalog.update_job(job.id, status="canceled")
            return QueuedJob(job.id, job.kind, job.params, "canceled", job.created_at)
        except Exception as exc:  # recorded for the artist; the worker keeps serving the queue
            message = job_error_message(exc)
            self._catalog.update_job(job.id, status="failed", error=message)
            # The artist sees the one-line message; the traceback goes to the log file.
            _log.exception("job %s (%s) failed: %s", job.id, job.kind, message)
            return QueuedJob(job.id, job.kind, job.params, "failed", job.created_at, message)
        # A job may stop early on its own when canceled and still return what it finished.
        status = "canceled" if cancel.canceled else "done"
        self._catalog.update_job(job.id, status=status, progress=1.0, result=result)
        # As the catalog keeps it: strict JSON (a NaN loss is null), so both copies agree.
        carried = json.loads(finite_json.dumps(result)) if isinstance(result, dict) else None
        return QueuedJob(job.id, job.kind, job.params, status, job.created_at, result=carried)
