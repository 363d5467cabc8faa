"""A catalog that cannot be used as usual fails with a plain message, never a traceback:
locked by another writer, read-only, empty, or from a newer charstudio."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from charstudio.catalog import (
    CATALOG_NAME,
    CatalogBusyError,
    CatalogError,
    CatalogReadOnlyError,
    ImageRecord,
    Project,
    database,
)
from charstudio.cli import main


def _project_with_one_image(root: Path) -> Path:
    with Project.create(root, "Anna") as project:
        project.catalog.add_image(
            ImageRecord(
                path="images/1.png",
                sha256="1" * 64,
                file_size=100,
                file_mtime=1.0,
                width=512,
                height=512,
                format="PNG",
            )
        )
    return root


def test_a_write_lock_held_too_long_is_a_plain_busy_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _project_with_one_image(tmp_path / "p")
    monkeypatch.setattr(database, "BUSY_TIMEOUT_MS", 200)
    other = sqlite3.connect(root / CATALOG_NAME, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another charstudio in the middle of a write
        with Project.open(root) as project:
            assert project.name == "Anna"  # reading still works (WAL)
            started = time.monotonic()
            with pytest.raises(CatalogBusyError, match="the project is busy: another charstudio"):
                project.catalog.set_setting("name", "Bea")
            with pytest.raises(CatalogBusyError, match="try again"):
                project.catalog.decide([1], "test", flag="pick")
            assert time.monotonic() - started < 5
        assert main(["decide", str(root), "1", "--flag", "pick"]) == 2
        err = capsys.readouterr().err
        assert "the project is busy" in err and "Traceback" not in err
    finally:
        other.execute("ROLLBACK")
        other.close()
    with Project.open(root) as project:  # nothing half-written
        assert project.name == "Anna"
        assert project.catalog.decision(1).flag == "none"


def _refuse_writes_to(monkeypatch: pytest.MonkeyPatch, target: Path) -> None:
    """Simulated: the tests run as root, which writes through any file mode, so the
    read-only check (os.access) is made to answer "no" for ``target``. What follows is not
    simulated: the catalog is then opened with SQLite's mode=ro, and SQLite itself refuses
    the writes."""
    real_access = os.access

    def access(path: object, mode: int, *args: object, **kwargs: object) -> bool:
        if mode & os.W_OK and Path(str(path)).resolve() == target.resolve():
            return False
        return real_access(path, mode, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(database.os, "access", access)


@pytest.mark.parametrize("read_only", ["folder", "file"])
def test_a_read_only_project_opens_for_viewing_and_refuses_changes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    read_only: str,
) -> None:
    root = _project_with_one_image(tmp_path / "p")
    _refuse_writes_to(monkeypatch, root if read_only == "folder" else root / CATALOG_NAME)
    why = (
        "the project folder .* is read-only"
        if read_only == "folder"
        else "charstudio.sqlite is a read-only file"
    )
    with Project.open(root) as project:
        assert project.read_only is not None
        assert project.name == "Anna"
        assert project.catalog.image_count() == 1
        with pytest.raises(CatalogReadOnlyError, match=f"viewing only \\({why}\\)"):
            project.catalog.set_setting("name", "Bea")
        with pytest.raises(CatalogReadOnlyError, match=why):
            project.catalog.decide([1], "test", flag="pick")
    assert main(["list", str(root)]) == 0
    assert main(["decide", str(root), "1", "--flag", "pick"]) == 2
    err = capsys.readouterr().err
    assert "viewing only" in err and "Traceback" not in err
    monkeypatch.undo()
    with Project.open(root) as project:
        assert project.read_only is None
        assert project.catalog.decision(1).flag == "none"


def test_an_empty_catalog_is_refused_as_damaged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / CATALOG_NAME).write_bytes(b"")
    with pytest.raises(CatalogError, match=r"charstudio.sqlite is empty \(0 bytes\): .*damaged"):
        Project.open(root)
    assert (root / CATALOG_NAME).stat().st_size == 0
    assert main(["stats", str(root)]) == 2
    assert "restore a backup" in capsys.readouterr().err
    # An empty catalog is what an interrupted 'new' leaves behind: 'new' makes it again.
    assert main(["new", str(root), "--name", "Anna"]) == 0
    with Project.open(root) as project:
        assert project.name == "Anna"


def _newer(path: Path) -> None:
    from charstudio.catalog.schema import SCHEMA_VERSION

    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()


def _zero_every_page_but_the_first(path: Path) -> None:
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for offset in range(page, len(data), page):
        data[offset : offset + 64] = b"\xff" * 64  # page headers and cell pointers garbled
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (_newer, "Update charstudio"),
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 3]), "damaged"),
        (_zero_every_page_but_the_first, "damaged"),
        (lambda p: p.write_bytes(b"not a database " * 400), "charstudio.sqlite"),
    ],
    ids=["newer", "truncated", "garbled pages", "not sqlite"],
)
def test_a_damaged_catalog_is_a_plain_error_and_is_left_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage, says: str
) -> None:
    root = _project_with_one_image(tmp_path / "p")
    damage(root / CATALOG_NAME)
    before = (root / CATALOG_NAME).read_bytes()
    for command in (["stats", str(root)], ["decide", str(root), "1", "--flag", "pick"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.startswith("charstudio: error:") and says in err, err
        assert "Traceback" not in err
    assert (root / CATALOG_NAME).read_bytes() == before
