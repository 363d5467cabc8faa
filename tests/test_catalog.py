"""Project folders and the catalog: creation, pragmas, version checks, migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from charstudio.catalog import (
    CATALOG_NAME,
    SCHEMA_VERSION,
    SUBFOLDERS,
    CatalogError,
    CatalogTooNewError,
    ImageRecord,
    Project,
)
from charstudio.catalog.database import connect, migrate_to
from charstudio.catalog.schema import MIGRATIONS


def _record(n: int, **fields: object) -> ImageRecord:
    return ImageRecord(
        path=f"images/{n}.png",
        sha256=f"{n:064x}",
        file_size=100,
        file_mtime=1.0,
        width=512,
        height=512,
        format="PNG",
        **fields,  # type: ignore[arg-type]
    )


def test_new_project_has_catalog_and_folders(tmp_path: Path) -> None:
    with Project.create(tmp_path / "lady", "French Lady", "fr3nchl4dy") as project:
        assert project.name == "French Lady"
        assert project.token == "fr3nchl4dy"
    root = tmp_path / "lady"
    assert (root / CATALOG_NAME).is_file()
    for sub in SUBFOLDERS:
        assert (root / sub).is_dir()


def test_default_token_comes_from_the_name(tmp_path: Path) -> None:
    with Project.create(tmp_path / "p", "Anna Maria 2") as project:
        assert project.token == "annamaria2"


@pytest.mark.parametrize("token", ["two words", "a,b", "(x)"])
def test_tokens_that_cannot_be_typed_in_a_prompt_are_refused(tmp_path: Path, token: str) -> None:
    with pytest.raises(CatalogError, match="token"):
        Project.create(tmp_path / "p", "Anna", token)


def test_creating_over_an_existing_project_is_refused(tmp_path: Path) -> None:
    Project.create(tmp_path / "p", "Anna").close()
    with pytest.raises(CatalogError, match="already a charstudio project"):
        Project.create(tmp_path / "p", "Other")


def test_opening_a_folder_that_is_no_project_names_it(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=str(tmp_path)):
        Project.open(tmp_path)


def test_catalog_uses_wal_and_foreign_keys(tmp_path: Path) -> None:
    with Project.create(tmp_path / "p", "Anna") as project:
        conn = project.catalog.conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT INTO decisions (image_id, updated_at) VALUES (999, 'x')")


def test_settings_survive_reopening(tmp_path: Path) -> None:
    with Project.create(tmp_path / "p", "Anna") as project:
        project.catalog.set_setting("filter", {"flag": "pick", "stars": 3})
    with Project.open(tmp_path / "p") as project:
        assert project.catalog.get_setting("filter") == {"flag": "pick", "stars": 3}
        assert project.catalog.get_setting("absent", 5) == 5


def test_image_rows_round_trip_with_generation_parameters(tmp_path: Path) -> None:
    with Project.create(tmp_path / "p", "Anna") as project:
        record = _record(
            1,
            prompt="a photo",
            seed=4240233169,
            sampler="DPM++ 2M",
            schedule_type="Karras",
            cfg_scale=7.0,
            extras={"Version": "v1.10.1"},
            sweep={"X": "front shot"},
        )
        image_id = project.catalog.add_image(record)
        back = project.catalog.image(image_id)
        assert back == record
        assert project.catalog.decision(image_id).flag == "none"


def test_a_newer_catalog_is_refused_and_left_untouched(tmp_path: Path) -> None:
    Project.create(tmp_path / "p", "Anna").close()
    path = tmp_path / "p" / CATALOG_NAME
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(CatalogTooNewError, match=r"newer|only knows"):
        Project.open(tmp_path / "p")
    assert path.read_bytes() == before
    assert not list(path.parent.glob("*.bak"))
    # Not even SQLite's -wal/-shm files appear beside a catalog charstudio cannot open.
    assert sorted(p.name for p in path.parent.glob(CATALOG_NAME + "*")) == [CATALOG_NAME]


def test_a_file_that_is_not_sqlite_is_reported(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / CATALOG_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(CatalogError, match=CATALOG_NAME):
        Project.open(tmp_path / "p")


def _seed_version(path: Path, version: int) -> None:
    """A catalog at an older schema version holding one image and one decision."""
    conn = sqlite3.connect(path)
    migrate_to(conn, version)
    if version >= 1:
        conn.execute(
            "INSERT INTO images (id, path, sha256, file_size, file_mtime, width, height, "
            "format, added_at, prompt) VALUES (7, 'images/a.png', 'abc', 1, 1.0, 512, 512, "
            "'PNG', '2026-01-01', 'old prompt')"
        )
        conn.execute(
            "INSERT INTO decisions (image_id, flag, stars, updated_at) "
            "VALUES (7, 'pick', 4, '2026-01-01')"
        )
        conn.commit()
    conn.close()


@pytest.mark.parametrize("version", range(len(MIGRATIONS)))
def test_every_older_version_migrates_forward_keeping_data(tmp_path: Path, version: int) -> None:
    path = tmp_path / CATALOG_NAME
    _seed_version(path, version)
    db = connect(path)
    assert db.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert db.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    if version >= 1:
        assert db.conn.execute("SELECT prompt FROM images WHERE id = 7").fetchone()[0] == (
            "old prompt"
        )
        assert db.conn.execute("SELECT flag, stars FROM decisions").fetchone() == ("pick", 4)
        # The pre-migration catalog is kept beside the new one.
        assert (tmp_path / f"{CATALOG_NAME}.v{version}.bak").is_file()
    # Every table of the latest schema is there.
    tables = {r[0] for r in db.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"images", "decisions", "decision_actions", "jobs", "runs", "checkpoints", "grids"} <= (
        tables
    )
    db.conn.close()


def test_a_failing_migration_rolls_back_completely(tmp_path: Path) -> None:
    path = tmp_path / CATALOG_NAME
    conn = sqlite3.connect(path)
    migrate_to(conn, 1)
    conn.execute("CREATE TABLE runs (x)")  # collides with migration 2
    conn.commit()
    with pytest.raises(sqlite3.OperationalError):
        migrate_to(conn, 2)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "checkpoints" not in names
    conn.close()


def test_jobs_record_status_and_result(tmp_path: Path) -> None:
    with Project.create(tmp_path / "p", "Anna") as project:
        job_id = project.catalog.create_job("import", {"paths": ["x"]}, status="running")
        project.catalog.update_job(job_id, status="done", result={"added": 3})
        job = project.catalog.job(job_id)
        assert job["status"] == "done"
        assert job["finished_at"]
        assert job["result"] == '{"added": 3}'
