"""Opening a catalog file: version check, forward migration, connection settings."""

from __future__ import annotations

import sqlite3
import urllib.parse
from pathlib import Path, PurePath

import sqlite_utils

from charstudio.atomic_files import write_bytes_atomic
from charstudio.catalog.errors import CatalogError, CatalogTooNewError
from charstudio.catalog.schema import MIGRATIONS, SCHEMA_VERSION

BUSY_TIMEOUT_MS = 10_000


def sqlite_uri(path: PurePath, mode: str = "ro") -> str:
    """A SQLite ``file:`` URI for an absolute path, as SQLite reads them: a drive path
    (``file:///C:/...``), a Windows network share (``file:////server/share/...``; the
    ``file://server/...`` that ``Path.as_uri`` gives is an error to SQLite), and spaces,
    ``#``, ``?``, ``%`` and non-ASCII characters percent-encoded as UTF-8."""
    text = path.as_posix()
    if not text.startswith("/"):
        text = "/" + text  # C:/Users/... -> /C:/Users/...
    return f"file://{urllib.parse.quote(text, safe='/:')}?mode={mode}"


def read_schema_version(path: Path) -> int:
    """Schema version of an existing catalog, read without writing anything to it."""
    try:
        conn = sqlite3.connect(sqlite_uri(path.resolve()), uri=True)
        try:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise CatalogError(f"{path}: not a charstudio catalog or damaged ({exc})") from exc


def _backup(path: Path, dest: Path) -> None:
    """A whole copy of the catalog at ``dest``, written atomically. Read through SQLite, so
    transactions still in the ``-wal`` file (after a crash) are in it: a copy of the main file
    alone would miss them."""
    conn = sqlite3.connect(sqlite_uri(path.resolve()), uri=True)
    try:
        data = conn.serialize()
    finally:
        conn.close()
    write_bytes_atomic(dest, data)


def connect(path: Path, *, migrate: bool = True) -> sqlite_utils.Database:
    """Open (creating if needed) the catalog at ``path``, migrated to ``SCHEMA_VERSION``.

    A catalog from a newer charstudio is refused before anything is written to it. Before
    migrating an existing catalog, a copy is kept beside it as ``<name>.v<old>.bak``.
    """
    existed = path.exists() and path.stat().st_size > 0
    version = read_schema_version(path) if existed else 0
    if version > SCHEMA_VERSION:
        raise CatalogTooNewError(
            f"{path}: this catalog has schema version {version}, but this charstudio only "
            f"knows versions up to {SCHEMA_VERSION}. Update charstudio to open it; the "
            "catalog was not modified."
        )
    if existed and 0 < version < SCHEMA_VERSION and migrate:
        _backup(path, path.with_name(f"{path.name}.v{version}.bak"))

    conn = sqlite3.connect(path, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    db = sqlite_utils.Database(conn)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        if db.journal_mode != "wal":
            db.enable_wal()
        # In WAL mode NORMAL stays consistent after a crash and avoids an fsync per commit.
        conn.execute("PRAGMA synchronous = NORMAL")
        if migrate:
            migrate_to(conn, SCHEMA_VERSION)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise CatalogError(f"{path}: cannot open the catalog ({exc})") from exc
    return db


def migrate_to(conn: sqlite3.Connection, target: int) -> None:
    """Apply the migrations after the connection's current version, each in one transaction."""
    current = int(conn.execute("PRAGMA user_version").fetchone()[0])
    for version in range(current + 1, target + 1):
        script = MIGRATIONS[version - 1]
        try:
            conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {version};\nCOMMIT;")
        except sqlite3.DatabaseError:
            if conn.in_transaction:
                conn.rollback()
            raise
