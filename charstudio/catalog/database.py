"""Opening a catalog file: version check, forward migration, connection settings."""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath

import sqlite_utils

from charstudio.atomic_files import write_bytes_atomic
from charstudio.catalog.errors import (
    CatalogBusyError,
    CatalogError,
    CatalogReadOnlyError,
    CatalogTooNewError,
)
from charstudio.catalog.schema import MIGRATIONS, SCHEMA_VERSION

# How long a write waits for another connection's write lock (read when a catalog is opened).
BUSY_TIMEOUT_MS = 10_000
_SQLITE_MAGIC = b"SQLite format 3\x00"


def write_refusal(path: Path) -> str | None:
    """Why the catalog at ``path`` cannot be written (a read-only project folder or catalog
    file), or None when it can."""
    folder = path.parent
    if not os.access(folder, os.W_OK):
        return f"the project folder {folder} is read-only"
    if path.exists() and not os.access(path, os.W_OK):
        return f"{path.name} is a read-only file"
    return None


def plain_error(exc: sqlite3.Error, path: Path, read_only: str | None = None) -> Exception:
    """The catalog error an SQLite error means, or ``exc`` itself when it is none we know."""
    text = str(exc).lower()
    if "database is locked" in text or "database is busy" in text:
        return CatalogBusyError(
            f"{path}: the project is busy: another charstudio (the app or a command) is "
            "writing to it; try again"
        )
    if "readonly" in text or "read-only" in text:
        why = read_only or f"{path.name} cannot be written"
        return CatalogReadOnlyError(
            f"{path}: the project is open for viewing only ({why}); the change was not saved"
        )
    return exc


@contextmanager
def plain_errors(path: Path, read_only: str | None = None) -> Iterator[None]:
    """Turn a locked or read-only catalog's SQLite error into a plain catalog error."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        error = plain_error(exc, path, read_only)
        if error is exc:
            raise
        raise error from exc


def _header_version(path: Path) -> int | None:
    """The schema version in the file's header, read as bytes: nothing is opened through
    SQLite, so no ``-wal``/``-shm`` file appears beside a catalog that is then refused."""
    try:
        with path.open("rb") as file:
            header = file.read(100)
    except OSError:
        return None
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        return None
    return int.from_bytes(header[60:64], "big", signed=True)


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
        error = exc
    if write_refusal(path) is not None:  # a WAL catalog in a read-only folder: no -shm file
        try:
            conn = sqlite3.connect(sqlite_uri(path.resolve()) + "&immutable=1", uri=True)
            try:
                return int(conn.execute("PRAGMA user_version").fetchone()[0])
            finally:
                conn.close()
        except sqlite3.DatabaseError:
            pass
    raise CatalogError(f"{path}: not a charstudio catalog or damaged ({error})") from error


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


def _too_new(path: Path, version: int) -> CatalogTooNewError:
    return CatalogTooNewError(
        f"{path}: this catalog has schema version {version}, but this charstudio only "
        f"knows versions up to {SCHEMA_VERSION}. Update charstudio to open it; the "
        "catalog was not modified."
    )


def connect(
    path: Path, *, migrate: bool = True, create: bool = True, read_only: str | None = None
) -> sqlite_utils.Database:
    """Open (creating if needed) the catalog at ``path``, migrated to ``SCHEMA_VERSION``.

    A catalog from a newer charstudio is refused before anything is written to it. Before
    migrating an existing catalog, a copy is kept beside it as ``<name>.v<old>.bak``. An
    empty (0-byte) file is refused as damaged unless ``create`` (a new catalog). With
    ``read_only`` (why the catalog cannot be written) it is opened for reading only.
    """
    exists = path.exists()
    if exists and path.stat().st_size == 0 and not create:
        raise CatalogError(
            f"{path}: {path.name} is empty (0 bytes): the catalog is damaged; restore a "
            f"backup of it (your own copy, or a {path.name}.v<N>.bak beside it)"
        )
    existed = exists and path.stat().st_size > 0
    header_version = _header_version(path) if existed else None
    if header_version is not None and header_version > SCHEMA_VERSION:
        raise _too_new(path, header_version)
    version = read_schema_version(path) if existed else 0
    if version > SCHEMA_VERSION:
        raise _too_new(path, version)
    if read_only is not None:
        return _connect_read_only(path, existed=existed, version=version, why=read_only)
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
        error = plain_error(exc, path)
        if error is not exc:
            raise error from exc
        raise CatalogError(f"{path}: cannot open the catalog ({exc})") from exc
    return db


def _connect_read_only(
    path: Path, *, existed: bool, version: int, why: str
) -> sqlite_utils.Database:
    """A connection that only reads: SQLite's ``mode=ro``, or ``immutable`` where even its
    shared-memory file cannot be made (a WAL catalog in a read-only folder)."""
    if not existed:
        raise CatalogReadOnlyError(f"{path}: cannot create the catalog ({why})")
    if version < SCHEMA_VERSION:
        raise CatalogReadOnlyError(
            f"{path}: this catalog must be upgraded to schema version {SCHEMA_VERSION} before "
            f"this charstudio can show it, and it cannot be written ({why})"
        )
    uri = sqlite_uri(path.resolve())
    last: sqlite3.Error | None = None
    for query in ("", "&immutable=1"):
        conn = sqlite3.connect(
            uri + query, uri=True, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            conn.close()
            last = exc
            continue
        return sqlite_utils.Database(conn)
    raise CatalogError(f"{path}: cannot open the catalog ({last})") from last


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
