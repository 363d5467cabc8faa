"""Windows' rules for names and paths, checked on any OS; and a project whose folders and files
have spaces and non-ASCII names, driven through the command line as an artist on Windows would.

The Windows-only rules are pure functions of the platform, so tests pass ``platform="win32"``
or make :func:`charstudio.portable_paths.current_platform` answer "win32".
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path, PureWindowsPath

import pytest

from charstudio import portable_paths
from charstudio.atomic_files import write_bytes_atomic
from charstudio.catalog import CatalogError, Project
from charstudio.cli import main
from charstudio.portable_paths import (
    WINDOWS_MAX_FOLDER,
    WINDOWS_MAX_PATH,
    PathTooLongError,
    path_length_problem,
    portable_name,
    windows_name_problem,
)

REAL_REPLACE = os.replace


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> object:
    code, out, err = cli(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.fixture
def on_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """The core's checks believe they run on Windows without long paths enabled."""
    monkeypatch.setattr(portable_paths, "current_platform", lambda: "win32")


def deep_folder(base: Path, length: int) -> Path:
    """A folder under ``base`` whose absolute path is exactly ``length`` characters long."""
    folder = base
    while length - len(str(folder)) > 100:
        folder = folder / ("d" * 60)
    rest = length - len(str(folder)) - 1
    assert rest >= 1, (base, length)
    return folder / ("e" * rest)


# -- reserved and invalid names -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["CON", "con", "Con.pt", "nul.tar.gz", "PRN", "aux.txt", "COM1", "com9.safetensors",
     "LPT1", "lpt9.png", "CON .txt", "COM¹", "conout$"],
)  # fmt: skip
def test_device_names_are_refused_with_any_extension(name: str) -> None:
    problem = windows_name_problem(name, what="embedding name")
    assert problem is not None and "Windows reserves" in problem and repr(name) in problem


@pytest.mark.parametrize(
    "name", ["CONSOLE", "con1", "com10", "lpt", "nul-1.png", "fr3nchl4dy", "Renée Müller", "山田"]
)
def test_ordinary_names_pass(name: str) -> None:
    assert windows_name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("a<b", "does not allow"),
        ("what?", "does not allow"),
        ('say "hi"', "does not allow"),
        ("a/b", "does not allow"),
        ("a\\b", "does not allow"),
        ("a:b", "does not allow"),
        ("a|b*", "does not allow"),
        ("tab\there", "\\x09"),
        ("name.", "ends with a dot"),
        ("name ", "ends with a space"),
        ("", "empty"),
        ("..", "not a usable name"),
        ("x" * 256, "longer than 255"),
    ],
)
def test_invalid_names_are_explained(name: str, words: str) -> None:
    problem = windows_name_problem(name)
    assert problem is not None and words in problem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("portrait été 01.png", "portrait été 01.png"),  # unchanged when fine
        ("CON.png", "CON_.png"),
        ("nul", "nul_"),
        ("com1.tar.gz", "com1_.tar.gz"),
        ('a<b>:"c"|d?*.png', "a_b___c__d__.png"),
        ("trailing. . ", "trailing"),
        ("  ", "untitled"),
        ("...", "untitled"),
        ("x" * 300 + ".png", "x" * 116 + ".png"),
    ],
)
def test_portable_name_makes_a_name_windows_accepts(text: str, expected: str) -> None:
    assert portable_name(text) == expected
    assert windows_name_problem(expected) is None


def test_portable_name_counts_bytes_for_linux_too() -> None:
    name = portable_name("山" * 200, max_length=250)
    assert len(name.encode("utf-8")) <= 255 and windows_name_problem(name) is None


def test_an_embedding_name_windows_reserves_is_refused() -> None:
    from charstudio.training.token_names import token_name_problems

    for name in ("con", "NUL", "com1", "lpt9", "aux"):
        [problem] = token_name_problems(name)
        assert "Windows reserves" in problem
    assert token_name_problems("console") == []


def test_a_project_token_windows_reserves_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="Windows reserves NUL"):
        Project.create(tmp_path / "p", "Nul", token="nul")
    with pytest.raises(CatalogError, match="longer than 64"):
        Project.create(tmp_path / "p", "Anna", token="a" * 65)


def test_default_tokens_and_folder_names_avoid_device_names(tmp_path: Path) -> None:
    from charstudio.catalog.project import default_token, project_folder_name

    assert default_token("Con") == "con_char"
    assert default_token("Com 1") == "com1_char"
    assert default_token("Léa") == "la"
    assert project_folder_name("Con") == "Con_"
    assert project_folder_name("Renée Müller") == "Renée-Müller"
    assert project_folder_name("Émilie: the <best>?") == "Émilie-the-best"
    assert project_folder_name("?!") == "character"
    assert len(project_folder_name("Anna " * 40)) <= 48
    with Project.create(tmp_path / project_folder_name("Con"), "Con") as project:
        assert project.token == "con_char" and project.root.name == "Con_"


def test_exported_picks_get_names_windows_accepts(make_png, tmp_path: Path) -> None:
    from charstudio.catalog.export import export_images
    from charstudio.catalog.importer import import_images
    from charstudio.jobs import run_job

    with Project.create(tmp_path / "p", "Anna") as project:
        # Names a Linux or macOS folder (a network share, a USB stick) may hold.
        for n, name in enumerate(["CON.png", "what?.png", "a:b.png", "dots...png"]):
            make_png(project.images_dir / name, seed=n)
        (project.images_dir / "CON.txt").write_text("anna, woman", encoding="utf-8")
        report = run_job(import_images(project, [project.images_dir]))
        dest = tmp_path / "out"
        exported = run_job(export_images(project, report.image_ids, dest))
    # Every image goes with its training caption (the sidecar, else derived from its prompt).
    assert (exported.copied, exported.captions, exported.failed) == (4, 4, [])
    names = sorted(p.name for p in dest.iterdir())
    images = ["CON_.png", "a_b.png", "dots...png", "what_.png"]
    assert names == sorted([*images, *(str(Path(n).with_suffix(".txt")) for n in images)])
    assert all(windows_name_problem(name) is None for name in names)


# -- long paths ------------------------------------------------------------------------------


def test_path_length_is_only_limited_on_windows_without_long_paths() -> None:
    path = "C:\\Users\\Renée Müller\\" + "x" * (WINDOWS_MAX_PATH - 21)
    assert len(path) == WINDOWS_MAX_PATH + 1
    problem = path_length_problem(path, platform="win32", long_paths=False)
    assert problem is not None
    assert problem.startswith(path) and f"{WINDOWS_MAX_PATH + 1} characters" in problem
    assert f"allows only {WINDOWS_MAX_PATH}" in problem
    assert path_length_problem(path[:-1], platform="win32", long_paths=False) is None
    assert path_length_problem(path, platform="linux", long_paths=False) is None
    assert path_length_problem(path, platform="darwin", long_paths=False) is None
    assert path_length_problem(path, platform="win32", long_paths=True) is None
    assert path_length_problem("\\\\?\\" + path, platform="win32", long_paths=False) is None
    folder = path[: WINDOWS_MAX_FOLDER + 1]
    assert path_length_problem(folder, platform="win32", long_paths=False, folder=True)
    assert path_length_problem(folder, platform="win32", long_paths=False) is None


def test_a_write_past_the_limit_names_the_path_and_writes_nothing(
    tmp_path: Path, on_windows: None
) -> None:
    folder = deep_folder(tmp_path, WINDOWS_MAX_PATH - 10)
    folder.mkdir(parents=True)
    target = folder / "fr3nchl4dy-150.pt"
    with pytest.raises(PathTooLongError) as caught:
        write_bytes_atomic(target, b"x")
    assert str(caught.value).startswith(str(target)) and "Windows allows only 259" in str(
        caught.value
    )
    assert isinstance(caught.value, OSError) and caught.value.errno == errno.ENAMETOOLONG
    assert list(folder.iterdir()) == []


def test_a_file_just_under_the_limit_is_written_with_a_short_temporary_name(
    tmp_path: Path, on_windows: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = deep_folder(tmp_path, WINDOWS_MAX_PATH - len("/fr3nch-150.pt"))
    folder.mkdir(parents=True)
    target = folder / "fr3nch-150.pt"  # 259 characters: fits, but ".fr3nch-150.pt.xxxx.tmp" not
    assert len(str(target)) == WINDOWS_MAX_PATH
    temps: list[str] = []
    monkeypatch.setattr(os, "replace", lambda a, b: (temps.append(a), REAL_REPLACE(a, b)))
    write_bytes_atomic(target, b"x")
    assert target.read_bytes() == b"x"
    assert len(str(temps[0])) <= WINDOWS_MAX_PATH


def test_a_project_too_deep_for_windows_is_refused_when_created(
    tmp_path: Path, on_windows: None
) -> None:
    folder = deep_folder(tmp_path, 200)
    with pytest.raises(CatalogError) as caught:
        Project.create(folder, "Anna")
    message = str(caught.value)
    assert message.startswith(str(folder)) and "too deep for Windows" in message
    assert "at most 166 characters" in message  # what room the thumbnail cache needs
    assert not folder.exists()
    with Project.create(deep_folder(tmp_path, 166), "Anna"):
        pass


def test_thumbnails_past_the_limit_fail_with_a_plain_error(
    tmp_path: Path, make_png, monkeypatch: pytest.MonkeyPatch
) -> None:
    from charstudio.metadata.thumbcache import ensure_thumbnail

    root = deep_folder(tmp_path, 190)  # a project moved deeper after it was made
    source = make_png(root / "a.png")
    monkeypatch.setattr(portable_paths, "current_platform", lambda: "win32")
    with pytest.raises(OSError, match="Windows allows only 259") as caught:
        ensure_thumbnail(root, source, "ab" * 32)
    assert "thumbnails" in str(caught.value)


def _trainable(project: Project, make_png) -> dict[str, object]:
    image = make_png(project.images_dir / "a.png")
    return {
        "settings": {"name": "n" * 64, "max_steps": 150},
        "model": "any-model",
        "images": [str(image)],
    }


def test_training_refuses_a_run_whose_files_would_be_too_long(
    tmp_path: Path, make_png, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    from charstudio.training import ti

    root = deep_folder(tmp_path, 150)
    with Project.create(root, "Anna") as project:
        params = _trainable(project, make_png)
        monkeypatch.setattr(portable_paths, "current_platform", lambda: "win32")
        problems, _warnings = ti.check_train_params(project, params)
        [problem] = problems
        assert "Windows allows only 259" in problem and "shorter embedding name" in problem
        assert str(root / "runs") in problem and f"{'n' * 64}-150.png" in problem
        params["settings"] = {"name": "n" * 20, "max_steps": 150}
        assert ti.run_path_problem(project.root, "runs/ti-999-" + "n" * 20, "n" * 20, 150) is None


def test_run_folder_names_are_bounded() -> None:
    from charstudio.training import ti

    assert ti._run_folder(3, "n" * 64) == "runs/ti-003-" + "n" * ti.RUN_FOLDER_NAME_LENGTH
    assert ti._run_folder(12, "fr3nchl4dy") == "runs/ti-012-fr3nchl4dy"


# -- the catalog -------------------------------------------------------------------------------


def test_sqlite_uris_for_windows_drives_and_network_shares(tmp_path: Path) -> None:
    from charstudio.catalog.database import read_schema_version, sqlite_uri

    share = PureWindowsPath(r"\\nas\art\Renée Müller\charstudio.sqlite")
    # Path.as_uri() gives file://nas/..., which SQLite refuses ("invalid uri authority").
    assert (
        sqlite_uri(share) == "file:////nas/art/Ren%C3%A9e%20M%C3%BCller/charstudio.sqlite?mode=ro"
    )
    drive = PureWindowsPath(r"C:\Users\Renée Müller\#1 50%\charstudio.sqlite")
    assert sqlite_uri(drive) == (
        "file:///C:/Users/Ren%C3%A9e%20M%C3%BCller/%231%2050%25/charstudio.sqlite?mode=ro"
    )
    # And on this machine: a catalog in a folder with URI characters in its name opens.
    folder = tmp_path / "Renée #1 ? 50% & co"
    with Project.create(folder, "Renée") as project:
        project.catalog.set_setting("note", "été")
    assert read_schema_version(folder / "charstudio.sqlite") > 0
    with Project.open(folder) as project:
        assert project.catalog.get_setting("note") == "été"


def test_the_migration_backup_holds_what_is_still_in_the_wal(tmp_path: Path) -> None:
    from charstudio.catalog.database import connect, migrate_to

    path = tmp_path / "charstudio.sqlite"
    crashed = sqlite3.connect(path)  # a session that died before SQLite checkpointed
    crashed.execute("PRAGMA journal_mode = WAL")
    crashed.execute("PRAGMA wal_autocheckpoint = 0")
    migrate_to(crashed, 1)
    crashed.execute("INSERT INTO settings (key, value) VALUES ('name', '\"Renée\"')")
    crashed.commit()
    assert (tmp_path / "charstudio.sqlite-wal").stat().st_size > 0
    connect(path).conn.close()
    backup = sqlite3.connect(tmp_path / "charstudio.sqlite.v1.bak")
    try:
        assert backup.execute("SELECT value FROM settings").fetchall() == [('"Renée"',)]
        assert backup.execute("PRAGMA user_version").fetchone()[0] == 1
    finally:
        backup.close()
        crashed.close()


def test_a_project_that_fails_to_open_closes_its_catalog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from charstudio.catalog.catalog import Catalog

    Project.create(tmp_path / "p", "Anna").close()
    (tmp_path / "p" / "images").rmdir()
    closed: list[Path] = []
    real_close = Catalog.close
    monkeypatch.setattr(Catalog, "close", lambda self: (closed.append(self.path), real_close(self)))
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        if self.name == "images":
            raise PermissionError(errno.EACCES, "Access is denied", str(self))
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(PermissionError):
        Project.open(tmp_path / "p")
    assert closed == [tmp_path / "p" / "charstudio.sqlite"]


# -- moves across drives ---------------------------------------------------------------------


def test_import_copy_and_exports_work_between_drives(
    tmp_path: Path, make_png, capsys, two_drives
) -> None:
    torch = pytest.importorskip("torch")
    from charstudio.engine.embeddings import load_embedding, save_a1111_pt
    from charstudio.training import records

    project = str(tmp_path / "p")
    cli_json(capsys, "new", project, "--name", "Anna")
    make_png(tmp_path / "D" / "a.png", seed=1)
    report = cli_json(capsys, "import", project, str(tmp_path / "D"), "--copy")
    assert report["added"] == 1  # type: ignore[index]
    cli_json(capsys, "decide", project, "1", "--flag", "pick")
    out = cli_json(capsys, "export-picks", project, str(tmp_path / "E"))
    assert out["copied"] == 1 and (tmp_path / "E" / "a.png").is_file()  # type: ignore[index]
    with Project.open(Path(project)) as opened:
        run_id = records.create_run(
            opened.catalog, name="anna", folder="runs/ti-001-anna", params={}, job_id=None
        )
        saved = save_a1111_pt(
            opened.root / "runs/ti-001-anna/anna-5.pt", "anna-5", torch.ones(1, 8)
        )
        records.record_checkpoint(opened.catalog, run_id, 5, "runs/ti-001-anna/anna-5.pt", 0.1, "")
    exported = cli_json(
        capsys, "export", project, "--run", str(run_id), "--step", "5", "--to", str(tmp_path / "F")
    )
    assert len(exported["files"]) == 4  # type: ignore[index]
    vectors = load_embedding(tmp_path / "F" / "anna.pt", width=None).vectors
    assert torch.equal(vectors, torch.ones(1, 8))
    assert saved.is_file() and two_drives == []  # every rename stayed within one folder


# -- a Windows user's folders: spaces and non-ASCII names, through the command line ------------


UNICODE_PROMPT = "photo of Renée Müller, café au lait, 山田花子, (neutral gray background:1.3)"


def infotext(seed: int) -> str:
    return (
        f"{UNICODE_PROMPT}\nNegative prompt: flou, 模糊\n"
        f"Steps: 30, Sampler: DPM++ 2M, CFG scale: 7, Seed: {seed}, Size: 64x64"
    )


def _subprocess_cli(*args: str, encoding: str = "cp1252") -> subprocess.CompletedProcess[bytes]:
    """``python -m charstudio`` with stdout a pipe in a Windows code page, as when a script
    or a bug report captures it on Windows."""
    env = {**os.environ, "PYTHONIOENCODING": encoding}
    env.pop("PYTHONUTF8", None)
    return subprocess.run(
        [sys.executable, "-X", "utf8=0", "-m", "charstudio", *args], capture_output=True, env=env
    )


def test_a_project_under_a_non_ascii_user_folder_end_to_end(
    tmp_path: Path, make_png, capsys
) -> None:
    from PIL import Image

    from charstudio.metadata.thumbcache import ensure_thumbnail

    home = tmp_path / "Users" / "Renée Müller" / "My Pictures"
    project = home / "Projets été" / "Héroïne 山田"
    created = cli_json(capsys, "new", str(project), "--name", "Héroïne 山田")
    assert created == {
        "project": str(project.resolve()),
        "name": "Héroïne 山田",
        "token": "hrone",
    }

    downloads = home / "Téléchargements" / "sortie #1 (50%)"
    names = ["portrait été 01.png", "山田 花子 #2.png", "Zoë's «best» shot.png"]
    for n, name in enumerate(names):
        make_png(downloads / name, seed=n, infotext=infotext(n))
    report = cli_json(capsys, "import", str(project), str(downloads), "--copy")
    assert (report["added"], report["failed"]) == (3, [])  # type: ignore[index]
    caption = project / "images" / "portrait été 01.txt"
    caption.write_text("hrone, femme, été", encoding="utf-8")

    rows = cli_json(capsys, "list", str(project))
    assert sorted(Path(r["path"]).name for r in rows) == sorted(names)  # type: ignore[union-attr]
    assert all(r["prompt"] == UNICODE_PROMPT for r in rows)  # type: ignore[union-attr]
    ids = [str(r["id"]) for r in rows if not r["path"].endswith(names[2])]  # type: ignore[union-attr]
    cli_json(capsys, "decide", str(project), *ids, "--flag", "pick")
    cli_json(capsys, "decide", str(project), f"images/{names[2]}", "--flag", "pick")

    with Project.open(project) as opened:
        for record in opened.catalog.images():
            thumb = ensure_thumbnail(opened.root, opened.file_path(record.path), record.sha256)
            with Image.open(thumb) as image:
                assert max(image.size) == 64

    dest = tmp_path / "Clé USB" / "Exports été"
    exported = cli_json(capsys, "export-picks", str(project), str(dest))
    assert (exported["copied"], exported["captions"], exported["failed"]) == (3, 3, [])  # type: ignore[index]
    captions = [Path(name).with_suffix(".txt").name for name in names]
    assert sorted(p.name for p in dest.iterdir()) == sorted([*names, *captions])
    assert (dest / "portrait été 01.txt").read_text(encoding="utf-8") == "hrone, femme, été"

    files = [str(dest / name) for name in names]
    result = _subprocess_cli("info", *files, "--json")
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")
    infos = json.loads(result.stdout.decode("utf-8"))
    assert [i["file"] for i in infos] == files
    assert [i["prompt"] for i in infos] == [UNICODE_PROMPT] * 3
    assert [i["seed"] for i in infos] == [0, 1, 2]

    result = _subprocess_cli("list", str(project), "--json")
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")
    assert {r["flag"] for r in json.loads(result.stdout.decode("utf-8"))} == {"pick"}

    result = _subprocess_cli("info", files[1])  # text for a person, in the console's code page
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")
    text = result.stdout.decode("cp1252")
    assert "Renée Müller" in text and "\\u5c71\\u7530" in text  # 山田 escaped, not a crash


def _project_with_a_run(capsys, project: Path) -> int:
    """A project with run ``anna`` holding a checkpoint at step 5; returns the run's id."""
    torch = pytest.importorskip("torch")
    from charstudio.engine.embeddings import save_a1111_pt
    from charstudio.training import records

    cli_json(capsys, "new", str(project), "--name", "Anna")
    with Project.open(project) as opened:
        run_id = records.create_run(
            opened.catalog, name="anna", folder="runs/ti-001-anna", params={}, job_id=None
        )
        save_a1111_pt(opened.root / "runs/ti-001-anna/anna-5.pt", "anna-5", torch.ones(1, 8))
        records.record_checkpoint(opened.catalog, run_id, 5, "runs/ti-001-anna/anna-5.pt", 0.1, "")
    return run_id


def test_a_file_held_open_is_a_plain_command_line_error(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .test_atomic_files import HeldOpen

    project = tmp_path / "Renée Müller" / "p"
    run_id = _project_with_a_run(capsys, project)
    (project / "embeddings" / "anna.pt").write_bytes(b"the one A1111 has open")
    HeldOpen(monkeypatch).hold(project / "embeddings" / "anna.pt")
    code, _out, err = cli(capsys, "export", str(project), "--run", str(run_id), "--step", "5")
    assert code == 2
    assert err.startswith(f"charstudio: error: {project / 'embeddings' / 'anna.pt'}: cannot")
    assert "another program has it open" in err and "Traceback" not in err
    assert (project / "embeddings" / "anna.pt").read_bytes() == b"the one A1111 has open"


def test_export_refuses_a_name_windows_reserves(tmp_path: Path, capsys) -> None:
    project = tmp_path / "p"
    run_id = _project_with_a_run(capsys, project)
    for name, words in (("con", "Windows reserves CON"), ("a/b", "does not allow"),
                        ("anna.", "ends with a dot")):  # fmt: skip
        code, _out, err = cli(
            capsys, "export", str(project), "--run", str(run_id), "--step", "5", "--name", name
        )
        assert code == 2 and words in err, err
    assert not (project / "embeddings" / "con.pt").exists()
    assert sorted(p.name for p in (project / "embeddings").iterdir()) == []
