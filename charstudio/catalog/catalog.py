"""The catalog of one project: a SQLite file reached through sqlite-utils."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from charstudio import finite_json
from charstudio.catalog import decisions, queries
from charstudio.catalog.database import connect, plain_errors, write_refusal
from charstudio.catalog.queries import ImageFilter
from charstudio.catalog.records import Decision, ImageRecord, utc_now
from charstudio.catalog.sessions import new_session_id

log = logging.getLogger(__name__)


class Catalog:
    """Reads and writes one ``charstudio.sqlite``. Every write is its own committed
    transaction, so a killed process never leaves half of one behind."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = Path(path)
        # Why changes cannot be saved (a read-only folder or file), or None: such a catalog
        # opens for viewing, and every change is refused with this reason.
        self.read_only: str | None = write_refusal(self.path)
        self.db = connect(self.path, create=create, read_only=self.read_only)
        self.conn: sqlite3.Connection = self.db.conn
        # One connection may be shared by a worker thread and the GUI thread: serialize use.
        self._lock = threading.RLock()
        # This open catalog's own undo stack: another process on the same project (the app,
        # a command) has its own, and neither's undo, redo or new action reaches the other's.
        self.session = new_session_id()
        self._decided = False

    def close(self) -> None:
        with self._lock:
            if self._decided:
                self._end_session()
            self.conn.close()

    def _end_session(self) -> None:
        """Leave this session's actions undoable by the next session. Best effort: a
        catalog that another writer keeps locked still closes; its actions stay in the
        history and become undoable elsewhere once this process has ended."""
        try:
            decisions.end_session(self.conn, self.session)
        except sqlite3.Error as exc:
            log.warning("%s: could not hand on the undo history: %s", self.path, exc)

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._plain_errors(), self.conn:
            yield self.conn

    def _plain_errors(self) -> AbstractContextManager[None]:
        """A locked or read-only catalog's SQLite error, as a plain catalog error."""
        return plain_errors(self.path, self.read_only)

    # -- settings --------------------------------------------------------------------------

    def get_setting(self, key: str, default: Any = None) -> Any:
        with self._lock:
            row = self.conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_setting(self, key: str, value: Any) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value, ensure_ascii=False)),
            )

    # -- images ----------------------------------------------------------------------------

    def add_image(self, record: ImageRecord) -> int:
        """Insert the image and its (empty) decision in one transaction; returns its id."""
        row = record.to_row()
        columns = ", ".join(row)
        marks = ", ".join("?" * len(row))
        # Plain SQL on purpose: sqlite-utils' insert commits on its own, and the image and
        # its decision row must commit together.
        with self.transaction() as conn:
            image_id = conn.execute(
                f"INSERT INTO images ({columns}) VALUES ({marks})", list(row.values())
            ).lastrowid
            conn.execute(
                "INSERT INTO decisions (image_id, updated_at) VALUES (?, ?)",
                (image_id, record.added_at),
            )
        record.id = image_id
        return image_id

    def image(self, image_id: int) -> ImageRecord:
        with self._lock:
            rows = list(self.db.query("SELECT * FROM images WHERE id = ?", [image_id]))
        if not rows:
            raise KeyError(f"no image with id {image_id}")
        return ImageRecord.from_row(rows[0])

    def image_by_sha256(self, sha256: str) -> ImageRecord | None:
        with self._lock:
            rows = list(self.db.query("SELECT * FROM images WHERE sha256 = ?", [sha256]))
        return ImageRecord.from_row(rows[0]) if rows else None

    def image_by_path(self, path: str) -> ImageRecord | None:
        with self._lock:
            rows = list(self.db.query("SELECT * FROM images WHERE path = ?", [path]))
        return ImageRecord.from_row(rows[0]) if rows else None

    def images(self) -> list[ImageRecord]:
        with self._lock:
            rows = list(self.db.query("SELECT * FROM images ORDER BY id"))
        return [ImageRecord.from_row(r) for r in rows]

    def known_sha256(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self.conn.execute("SELECT sha256 FROM images")}

    def relink_image(self, image_id: int, path: str, file_mtime: float) -> None:
        """Point an image whose file went missing at the same file found elsewhere."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE images SET path = ?, file_mtime = ? WHERE id = ?",
                (path, file_mtime, image_id),
            )

    def image_count(self) -> int:
        with self._lock:
            return int(self.conn.execute("SELECT count(*) FROM images").fetchone()[0])

    # -- decisions -------------------------------------------------------------------------

    def decision(self, image_id: int) -> Decision:
        with self._lock:
            return decisions.read(self.conn, image_id)

    def decisions(self, image_ids: Iterable[int] | None = None) -> dict[int, Decision]:
        """Decisions of the given images (all when None), read in one query."""
        query = "SELECT image_id, flag, stars, color, reject_reason FROM decisions"
        with self._lock:
            if image_ids is None:
                rows = self.conn.execute(query).fetchall()
            else:
                wanted = list(image_ids)
                rows = []
                for start in range(0, len(wanted), 500):
                    chunk = wanted[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    rows += self.conn.execute(
                        f"{query} WHERE image_id IN ({marks})", chunk
                    ).fetchall()
        return {row[0]: Decision(*row[1:]) for row in rows}

    def decide(self, image_ids: Iterable[int], label: str, **fields: Any) -> int | None:
        """Apply flag/stars/color/reject_reason to images as one undoable action."""
        with self._lock, self._plain_errors():
            action_id = decisions.apply(self.conn, image_ids, label, self.session, **fields)
            self._decided = self._decided or action_id is not None
            return action_id

    def undo(self) -> list[int] | None:
        """Undo this session's newest action (then earlier sessions'); the images it
        touched, or None when there is nothing to undo. See ``undo_step`` for what was kept."""
        step = self.undo_step()
        return step.image_ids if step else None

    def redo(self) -> list[int] | None:
        step = self.redo_step()
        return step.image_ids if step else None

    def undo_step(self) -> decisions.Step | None:
        """Undo, saying which images kept a newer decision that another session made."""
        with self._lock, self._plain_errors():
            step = decisions.undo(self.conn, self.session)
            self._decided = self._decided or step is not None
            return step

    def redo_step(self) -> decisions.Step | None:
        with self._lock, self._plain_errors():
            return decisions.redo(self.conn, self.session)

    def decision_history(self, image_id: int) -> list[dict[str, Any]]:
        with self._lock:
            return decisions.history(self.conn, image_id)

    def decision_counts(self) -> dict[str, int]:
        with self._lock:
            rows = self.conn.execute("SELECT flag, count(*) FROM decisions GROUP BY flag")
            counts = dict.fromkeys(("pick", "reject", "none"), 0) | dict(rows.fetchall())
        return counts

    def filtered_ids(self, image_filter: ImageFilter) -> list[int]:
        with self._lock:
            return queries.image_ids(self.conn, image_filter)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return queries.stats(self.conn)

    def sweep_axes(self) -> dict[str, list[str]]:
        with self._lock:
            return queries.sweep_axes(self.conn)

    # -- training sets ---------------------------------------------------------------------

    def create_training_set(self, name: str, image_ids: Iterable[int]) -> int:
        ids = list(dict.fromkeys(image_ids))
        if not ids:
            raise ValueError("a training set needs at least one image")
        with self.transaction() as conn:
            set_id = conn.execute(
                "INSERT INTO training_sets (name, created_at) VALUES (?, ?)", (name, utc_now())
            ).lastrowid
            conn.executemany(
                "INSERT INTO training_set_images (set_id, image_id) VALUES (?, ?)",
                [(set_id, i) for i in ids],
            )
        return int(set_id or 0)

    def training_set(self, set_id: int | None = None) -> tuple[int, list[int]] | None:
        """(id, image ids) of a training set; the newest when ``set_id`` is None."""
        with self._lock:
            row = self.conn.execute(
                "SELECT id FROM training_sets WHERE id = coalesce(?, "
                "(SELECT max(id) FROM training_sets))",
                (set_id,),
            ).fetchone()
            if row is None:
                return None
            ids = [
                r[0]
                for r in self.conn.execute(
                    "SELECT image_id FROM training_set_images WHERE set_id = ? ORDER BY image_id",
                    (row[0],),
                )
            ]
        return row[0], ids

    # -- jobs ------------------------------------------------------------------------------

    def create_job(self, kind: str, params: dict[str, Any], status: str = "queued") -> int:
        with self.transaction():
            return int(
                self.db["jobs"]
                .insert(
                    {
                        "kind": kind,
                        "params": json.dumps(params, ensure_ascii=False),
                        "status": status,
                        "created_at": utc_now(),
                        "started_at": utc_now() if status == "running" else None,
                    }
                )
                .last_pk
            )

    def update_job(self, job_id: int, **fields: Any) -> None:
        if "result" in fields and not isinstance(fields["result"], str | None):
            # Strict JSON: a NaN loss or score is stored as null, never as a bare NaN.
            fields["result"] = finite_json.dumps(fields["result"], ensure_ascii=False)
        if fields.get("status") in ("done", "failed", "canceled"):
            fields.setdefault("finished_at", utc_now())
        with self.transaction():
            self.db["jobs"].update(job_id, fields)

    def job(self, job_id: int) -> dict[str, Any]:
        with self._lock:
            return dict(self.db["jobs"].get(job_id))
