"""The catalog's checkpoint grids: what the grid job stored, read back for the viewer.

Grids (``grids``) and their cells (``grid_cells``: one file per cell, its step, seed, face
count and identity score) are written by :mod:`charstudio.training.checkpoint_grid`; these are
the reads the viewer and the Compare panel need, and the one change the artist makes: the
chosen step.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from charstudio.training.checkpoint_grid import GridSpec

if TYPE_CHECKING:
    from charstudio.catalog.catalog import Catalog

__all__ = [
    "GridRecord",
    "column_labels",
    "grid_for_job",
    "grid_job_state",
    "list_grids",
    "read_cells",
    "read_grid",
    "set_chosen_step",
]


@dataclass(frozen=True)
class GridRecord:
    id: int
    run_id: int | None
    spec: GridSpec | None  # None: params written by another version and unreadable here
    path: str | None  # the job's grid PNG, relative to the project; None until it finished
    chosen_step: int | None
    created_at: str
    job_id: int | None
    cell_count: int = 0


_GRID_COLUMNS = (
    "g.id, g.run_id, g.params, g.path, g.chosen_step, g.created_at, g.job_id, "
    "(SELECT COUNT(*) FROM grid_cells c WHERE c.grid_id = g.id)"
)


def _grid_record(row: Sequence[Any]) -> GridRecord:
    try:
        spec: GridSpec | None = GridSpec.from_json(json.loads(row[2] or "{}"))
    except (ValueError, TypeError):
        spec = None
    return GridRecord(row[0], row[1], spec, row[3], row[4], row[5], row[6], int(row[7] or 0))


def read_grid(catalog: Catalog, grid_id: int) -> GridRecord:
    with catalog.transaction() as conn:
        row = conn.execute(f"SELECT {_GRID_COLUMNS} FROM grids g WHERE g.id = ?", (grid_id,))
        found = row.fetchone()
    if found is None:
        raise KeyError(f"no grid with id {grid_id}")
    return _grid_record(found)


def list_grids(catalog: Catalog, run_id: int) -> list[GridRecord]:
    """The grids of a run, newest first."""
    with catalog.transaction() as conn:
        rows = conn.execute(
            f"SELECT {_GRID_COLUMNS} FROM grids g WHERE g.run_id = ? ORDER BY g.id DESC",
            (run_id,),
        ).fetchall()
    return [_grid_record(r) for r in rows]


def grid_for_job(catalog: Catalog, job_id: int) -> int | None:
    with catalog.transaction() as conn:
        row = conn.execute(
            "SELECT id FROM grids WHERE job_id = ? ORDER BY id DESC LIMIT 1", (job_id,)
        ).fetchone()
    return int(row[0]) if row else None


def read_cells(catalog: Catalog, grid_id: int) -> list[dict[str, Any]]:
    """The cells as the job's progress events carry them: x, y, z, step, seed, path, score,
    faces, error (why a failed cell failed; its path is "" and it has no score)."""
    with catalog.transaction() as conn:
        rows = conn.execute(
            "SELECT x, y, z, step, seed, COALESCE(path, ''), score, faces, error "
            "FROM grid_cells WHERE grid_id = ? ORDER BY z, x, y",
            (grid_id,),
        ).fetchall()
    keys = ("x", "y", "z", "step", "seed", "path", "score", "faces", "error")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def column_labels(catalog: Catalog, run_id: int) -> dict[int, str]:
    """What the viewer writes over a column of the run's grids, by checkpoint step: "epoch N"
    or "average of epochs 4, 6, 8" for a LoRA run, the file name (``NAME-STEP``) for a TI run."""
    from pathlib import Path

    from charstudio.training import records

    run = records.get_run(catalog, run_id)
    if run.kind == "lora":
        from charstudio.training.lora_average import lora_checkpoints

        return {c.step: c.label for c in lora_checkpoints(catalog, run)}
    return {c.step: Path(c.path).stem for c in records.run_checkpoints(catalog, run_id)}


def set_chosen_step(catalog: Catalog, grid_id: int, step: int | None) -> None:
    with catalog.transaction() as conn:
        conn.execute("UPDATE grids SET chosen_step = ? WHERE id = ?", (step, grid_id))


def grid_job_state(catalog: Catalog, job_id: int | None) -> tuple[str | None, dict[str, Any]]:
    """The grid job's status and result (empty while it runs, or when the row is gone)."""
    if job_id is None:
        return None, {}
    with catalog.transaction() as conn:
        row = conn.execute("SELECT status, result FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        return None, {}
    try:
        result = json.loads(row[1]) if row[1] else {}
    except ValueError:
        result = {}
    return row[0], result if isinstance(result, dict) else {}
