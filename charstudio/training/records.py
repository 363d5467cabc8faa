"""Training runs in the catalog: the ``runs``, ``run_images`` and ``checkpoints`` tables.

A run row is written when a run starts (status ``running``) and updated when it ends
(``done``, ``paused``, ``canceled`` or ``failed`` with its error). A checkpoint row is written
only after its files are on disk, one committed transaction each, so the catalog never points
at a file that is not there; a row for a step that is trained again (after a resume from an
earlier state) is replaced, never duplicated.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from charstudio.catalog.catalog import Catalog
from charstudio.catalog.records import utc_now

__all__ = [
    "CheckpointRecord",
    "RunRecord",
    "add_run_images",
    "create_run",
    "find_run",
    "get_run",
    "list_runs",
    "record_checkpoint",
    "run_checkpoints",
    "run_for_job",
    "run_image_ids",
    "set_run_status",
]

# Run params key: the jobs that trained the run before the one in runs.job_id.
EARLIER_JOBS = "earlier_jobs"
_RUN_COLUMNS = (
    "id, kind, name, folder, params, status, error, created_at, started_at, finished_at, job_id"
)
_ENDED = ("done", "failed", "canceled", "paused")


@dataclass(frozen=True)
class RunRecord:
    id: int
    kind: str
    name: str
    folder: str  # relative to the project: runs/<run>
    params: dict[str, Any]
    status: str
    error: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    job_id: int | None

    @classmethod
    def from_row(cls, row: Any) -> RunRecord:
        values = list(row)
        values[4] = json.loads(values[4] or "{}")
        return cls(*values)


@dataclass(frozen=True)
class CheckpointRecord:
    id: int
    run_id: int
    step: int
    path: str  # relative to the project: runs/<run>/NAME-<step>.pt
    loss: float | None
    sha256: str | None
    created_at: str


def create_run(
    catalog: Catalog,
    *,
    name: str,
    folder: str,
    params: dict[str, Any],
    job_id: int | None,
    kind: str = "ti",
) -> int:
    now = utc_now()
    with catalog.transaction() as conn:
        cursor = conn.execute(
            "INSERT INTO runs (kind, name, folder, params, status, created_at, started_at, job_id)"
            " VALUES (?, ?, ?, ?, 'running', ?, ?, ?)",
            (kind, name, folder, json.dumps(params, ensure_ascii=False), now, now, job_id),
        )
    return int(cursor.lastrowid or 0)


def get_run(catalog: Catalog, run_id: int) -> RunRecord:
    with catalog.transaction() as conn:
        row = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise KeyError(f"no training run with id {run_id}")
    return RunRecord.from_row(row)


def find_run(catalog: Catalog, ref: int | str) -> RunRecord:
    """A run by id, or by its folder (``runs/x`` or just ``x``)."""
    if isinstance(ref, int) or (isinstance(ref, str) and ref.strip().isdigit()):
        return get_run(catalog, int(ref))
    folder = ref.strip().replace("\\", "/").rstrip("/")
    if not folder.startswith("runs/"):
        folder = f"runs/{folder}"
    with catalog.transaction() as conn:
        row = conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE folder = ?", (folder,)
        ).fetchone()
    if row is None:
        raise KeyError(f"no training run {ref!r}")
    return RunRecord.from_row(row)


def run_for_job(catalog: Catalog, job_id: int) -> RunRecord | None:
    """The run a job trains or trained before another job resumed it (newest first), so a
    job re-run after a crash resumes it, or finds it finished."""
    with catalog.transaction() as conn:
        row = conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE job_id = ? OR EXISTS (SELECT 1 FROM "
            f"json_each(runs.params, '$.{EARLIER_JOBS}') WHERE value = ?) ORDER BY id DESC LIMIT 1",
            (job_id, job_id),
        ).fetchone()
    return RunRecord.from_row(row) if row else None


def list_runs(catalog: Catalog, kind: str | None = "ti") -> list[RunRecord]:
    query = f"SELECT {_RUN_COLUMNS} FROM runs"
    args: tuple[Any, ...] = ()
    if kind is not None:
        query += " WHERE kind = ?"
        args = (kind,)
    with catalog.transaction() as conn:
        rows = conn.execute(query + " ORDER BY id", args).fetchall()
    return [RunRecord.from_row(r) for r in rows]


def set_run_status(
    catalog: Catalog,
    run_id: int,
    status: str,
    *,
    error: str | None = None,
    job_id: int | None = None,
    params: dict[str, Any] | None = None,
) -> None:
    """Record a status change: ``running`` stamps started_at, ending statuses finished_at.

    A run resumed by another job (``train-ti --resume``, the Resume button) keeps the ids of
    the jobs that trained it before in its params (``earlier_jobs``), so an interrupted earlier
    job that the queue re-runs finds the run, finished or not, instead of starting a new one.
    """
    with catalog.transaction() as conn:
        if job_id is not None:
            row = conn.execute("SELECT job_id, params FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is not None and row[0] is not None and row[0] != job_id:
                current = params if params is not None else json.loads(row[1] or "{}")
                earlier = [j for j in current.get(EARLIER_JOBS, []) if j not in (row[0], job_id)]
                params = {**current, EARLIER_JOBS: [*earlier, row[0]]}
        sets = ["status = ?", "error = ?"]
        args: list[Any] = [status, error]
        if status == "running":
            sets += ["started_at = ?", "finished_at = NULL"]
            args.append(utc_now())
        elif status in _ENDED:
            sets.append("finished_at = ?")
            args.append(utc_now())
        if job_id is not None:
            sets.append("job_id = ?")
            args.append(job_id)
        if params is not None:
            sets.append("params = ?")
            args.append(json.dumps(params, ensure_ascii=False))
        conn.execute(f"UPDATE runs SET {', '.join(sets)} WHERE id = ?", (*args, run_id))


def add_run_images(catalog: Catalog, run_id: int, image_ids: Iterable[int | None]) -> None:
    ids = sorted({i for i in image_ids if i is not None})
    with catalog.transaction() as conn:
        conn.executemany(
            "INSERT OR IGNORE INTO run_images (run_id, image_id) VALUES (?, ?)",
            [(run_id, i) for i in ids],
        )


def run_image_ids(catalog: Catalog, run_id: int) -> list[int]:
    with catalog.transaction() as conn:
        rows = conn.execute(
            "SELECT image_id FROM run_images WHERE run_id = ? ORDER BY image_id", (run_id,)
        ).fetchall()
    return [r[0] for r in rows]


def record_checkpoint(
    catalog: Catalog, run_id: int, step: int, path: str, loss: float | None, sha256: str
) -> None:
    """Insert (or, for a step trained again after a resume, replace) a checkpoint row."""
    with catalog.transaction() as conn:
        conn.execute(
            "INSERT INTO checkpoints (run_id, step, path, loss, sha256, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET run_id = excluded.run_id, "
            "step = excluded.step, loss = excluded.loss, sha256 = excluded.sha256, "
            "created_at = excluded.created_at",
            (run_id, step, path, loss, sha256, utc_now()),
        )


def run_checkpoints(catalog: Catalog, run_id: int) -> list[CheckpointRecord]:
    with catalog.transaction() as conn:
        rows = conn.execute(
            "SELECT id, run_id, step, path, loss, sha256, created_at FROM checkpoints "
            "WHERE run_id = ? ORDER BY step",
            (run_id,),
        ).fetchall()
    return [CheckpointRecord(*row) for row in rows]
