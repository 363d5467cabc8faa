"""One bad file never aborts or hangs an import (issue 13): link loops, dangling links, names
that are not UTF-8, named pipes, unreadable folders, huge text chunks, and what a killed
``--copy`` import leaves behind."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from charstudio.catalog import CATALOG_NAME, Project, importer
from charstudio.catalog.importer import ImportReport
from charstudio.metadata import imagefile
from charstudio.metadata.imagefile import ImageFileError, probe_image
from tests.test_importer import _import

MAX_INFOTEXT_BYTES = 64 * 1024  # the documented cap (README, import paragraph)
posix_only = pytest.mark.skipif(os.name != "posix", reason="needs POSIX links, FIFOs, bytes names")


def _errors(report: ImportReport) -> dict[str, str]:
    return {Path(f["path"]).name: f["error"] for f in report.failed}


# --- links --------------------------------------------------------------------------------------


@posix_only
def test_symlink_loop_is_reported_and_the_import_goes_on(project, make_png, tmp_path) -> None:
    folder = tmp_path / "in"
    make_png(folder / "good.png")
    (folder / "a.png").symlink_to("a.png")
    (folder / "b.png").symlink_to("c.png")
    (folder / "c.png").symlink_to("b.png")
    report = _import(project, folder)
    assert report.added == 1
    errors = _errors(report)
    assert set(errors) == {"a.png", "b.png", "c.png"}
    assert all("loops" in e for e in errors.values())
    # Named directly, too.
    report = _import(project, folder / "a.png")
    assert "loops" in _errors(report)["a.png"]


@posix_only
def test_dangling_link_is_reported(project, make_png, tmp_path) -> None:
    folder = tmp_path / "in"
    make_png(folder / "good.png")
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")
    report = _import(project, folder)
    assert report.added == 1
    assert "target does not exist" in _errors(report)["gone.png"]


# --- names --------------------------------------------------------------------------------------


@posix_only
@pytest.mark.skipif(sys.platform == "darwin", reason="macOS refuses names that are not UTF-8")
@pytest.mark.parametrize("copy", [False, True])
def test_name_that_is_not_utf8(project, make_png, tmp_path, copy: bool) -> None:
    folder = tmp_path / "in"
    make_png(folder / "good.png", seed=1)
    good_bytes = (folder / "good.png").read_bytes()
    bad = os.path.join(os.fsencode(folder), b"bad\xff.png")
    make_png(tmp_path / "src.png", seed=2)
    with open(bad, "wb") as fh:
        fh.write((tmp_path / "src.png").read_bytes())
    report = _import(project, folder, copy=copy)
    # Whatever happened is printable and storable as the job's result.
    json.dumps(report.to_json(), ensure_ascii=False).encode("utf-8")
    if copy:
        # The copy's name is ours to choose: undecodable bytes become "_".
        assert report.failed == []
        assert report.added == 2
        paths = sorted(r.path for r in project.catalog.images())
        assert paths == ["images/bad_.png", "images/good.png"]
        assert (project.images_dir / "good.png").read_bytes() == good_bytes
    else:
        assert report.added == 1
        (failure,) = report.failed
        assert failure["path"].endswith("bad\\xff.png")
        assert "not valid text (UTF-8)" in failure["error"]
        assert [Path(r.path).name for r in project.catalog.images()] == ["good.png"]
    # Committed: another connection sees the rows.
    conn = sqlite3.connect(project.root / CATALOG_NAME)
    assert conn.execute("SELECT count(*) FROM images").fetchone()[0] == report.added
    conn.close()


# --- special files ------------------------------------------------------------------------------


def _charstudio(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", QT_QPA_PLATFORM="offscreen")
    return subprocess.run(
        [sys.executable, "-m", "charstudio", *args],
        capture_output=True,
        text=True,
        timeout=timeout,  # a hang fails the test instead of blocking it
        env=env,
        check=False,
    )


@posix_only
def test_fifo_is_never_opened_by_import_or_info(project, make_png, tmp_path) -> None:
    folder = tmp_path / "in"
    make_png(folder / "good.png")
    os.mkfifo(folder / "x.png")
    (folder / "loop.png").symlink_to("loop.png")
    project.close()

    result = _charstudio("import", str(project.root), str(folder), "--json")
    report = json.loads(result.stdout)
    assert report["added"] == 1
    errors = {Path(f["path"]).name: f["error"] for f in report["failed"]}
    assert "named pipe" in errors["x.png"]
    assert "loops" in errors["loop.png"]

    result = _charstudio("info", str(folder / "x.png"), str(folder / "loop.png"))
    assert result.returncode == 1
    assert "named pipe (FIFO), not a regular file" in result.stdout
    assert "loops back on itself" in result.stdout


@posix_only
def test_probe_refuses_special_files_before_opening_them(tmp_path, monkeypatch) -> None:
    # No FIFO here: should the check regress, reading one in-process would hang the tests
    # (the subprocess test above covers FIFOs).
    import socket

    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "s.png"))
    opened: list[object] = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, *a, **k: opened.append(p) or real_open(p, *a, **k))
    try:
        with pytest.raises(ImageFileError, match="a socket"):
            probe_image(tmp_path / "s.png")
    finally:
        sock.close()
    with pytest.raises(ImageFileError, match="a folder"):
        probe_image(tmp_path)
    if os.path.exists("/dev/null"):
        with pytest.raises(ImageFileError, match="a device"):
            probe_image("/dev/null")
    assert opened == []


# --- folders ------------------------------------------------------------------------------------


def test_unreadable_subfolder_is_listed(project, make_png, tmp_path, monkeypatch) -> None:
    folder = tmp_path / "in"
    make_png(folder / "good.png", seed=1)
    make_png(folder / "locked" / "hidden.png", seed=2)
    locked = str(folder / "locked")
    real_scandir = os.scandir

    def scandir(path=".") -> object:
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    report = _import(project, folder)
    assert report.added == 1
    (failure,) = report.failed
    assert failure["path"] == locked
    assert failure["error"].startswith("cannot read this folder (Permission denied)")


@posix_only
@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads anything")
def test_unreadable_subfolder_really_chmod_000(project, make_png, tmp_path) -> None:
    folder = tmp_path / "in"
    make_png(folder / "good.png", seed=1)
    make_png(folder / "locked" / "hidden.png", seed=2)
    (folder / "locked").chmod(0)
    try:
        report = _import(project, folder)
    finally:
        (folder / "locked").chmod(0o755)
    assert report.added == 1
    assert [Path(f["path"]).name for f in report.failed] == ["locked"]


# --- huge text chunks ---------------------------------------------------------------------------


def _png_with_text(path: Path, make_png, kind: bytes, text: bytes) -> Path:
    """A real PNG with one more text chunk ``parameters`` (raw ``text``) before IEND."""
    make_png(path, infotext=None)
    data = path.read_bytes()
    if kind == b"tEXt":
        body = b"parameters\0" + text
    elif kind == b"zTXt":
        body = b"parameters\0\0" + zlib.compress(text)
    else:  # iTXt, uncompressed
        body = b"parameters\0\0\0\0\0" + text
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    path.write_bytes(data[:-12] + chunk + data[-12:])
    return path


@pytest.mark.parametrize("kind", [b"tEXt", b"zTXt", b"iTXt"])
def test_huge_infotext_is_left_out_with_a_warning(project, make_png, tmp_path, kind) -> None:
    assert imagefile.MAX_INFOTEXT_BYTES == MAX_INFOTEXT_BYTES
    size = 50 * 1024 * 1024 if kind == b"tEXt" else MAX_INFOTEXT_BYTES + 1
    src = _png_with_text(tmp_path / "huge.png", make_png, kind, b"x" * size)
    report = _import(project, src)
    assert report.added == 1
    (warning,) = report.warnings
    assert "over the 64 KB limit" in warning["warning"]
    assert "imported without them" in warning["warning"]
    (record,) = project.catalog.images()
    assert record.infotext is None
    assert record.prompt is None
    probe = probe_image(src)
    assert probe.infotext is None
    assert probe.warnings


def test_infotext_at_the_cap_is_kept(project, make_png, tmp_path) -> None:
    settings = b"\nSteps: 30, Sampler: Euler a, CFG scale: 7, Seed: 7, Size: 512x512"
    text = b"a" * (MAX_INFOTEXT_BYTES - len(settings)) + settings
    src = _png_with_text(tmp_path / "big.png", make_png, b"tEXt", text)
    report = _import(project, src)
    assert report.warnings == []
    (record,) = project.catalog.images()
    assert record.seed == 7


# --- what a killed --copy import leaves -----------------------------------------------------------


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_leftovers_of_a_killed_copy_are_cleaned_and_reused(
    project, make_png, tmp_path, monkeypatch
) -> None:
    src = make_png(tmp_path / "out" / "a.png", seed=1)
    other = make_png(tmp_path / "out2" / "a.png", seed=2)  # same name, other content
    images = project.images_dir
    # As a process killed mid-import leaves them: a finished copy with no catalog row, and
    # half-written temporary files of the atomic writer and of a plain ".part" copier.
    shutil.copy2(src, images / "a.png")
    (images / ".b.png.0123abcd.tmp").write_bytes(b"half")
    (images / ".c.png.part").write_bytes(b"half")
    monkeypatch.setattr(importer, "STALE_TEMP_SECONDS", 0.0)

    report = _import(project, src, other, copy=True)
    assert report.added == 2 and report.failed == []
    assert sorted(p.name for p in images.iterdir() if p.is_file()) == ["a-1.png", "a.png"]
    by_path = {r.path: r.sha256 for r in project.catalog.images()}
    assert by_path == {"images/a.png": _sha(src), "images/a-1.png": _sha(other)}


def test_fresh_temp_files_of_a_running_writer_are_kept(project, make_png, tmp_path) -> None:
    src = make_png(tmp_path / "a.png")
    live = project.images_dir / ".x.png.0123abcd.tmp"
    live.write_bytes(b"being written by another process")
    _import(project, src, copy=True)
    assert live.exists()


def test_orphan_with_other_content_is_not_reused(project, make_png, tmp_path) -> None:
    src = make_png(tmp_path / "a.png", seed=1)
    make_png(project.images_dir / "a.png", seed=2)  # not catalogued, different content
    report = _import(project, src, copy=True)
    assert report.added == 1
    (record,) = project.catalog.images()
    assert record.path == "images/a-1.png"
    assert _sha(project.images_dir / "a-1.png") == _sha(src)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_real_kill_then_reimport_leaves_no_orphans(project, make_png, tmp_path, monkeypatch):
    folder = tmp_path / "big"
    total = 400
    for n in range(total):
        make_png(folder / f"{n:04}.png", seed=n, size=96)
    project.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "charstudio", "import", str(project.root), str(folder), "--copy"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    images = project.root / "images"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(images.glob("*.png"))) < 10:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    monkeypatch.setattr(importer, "STALE_TEMP_SECONDS", 0.0)
    with Project.open(project.root) as reopened:
        report = _import(reopened, folder, copy=True)
        assert report.failed == []
        assert reopened.catalog.image_count() == total
        names = sorted(p.name for p in images.iterdir() if p.is_file())
        assert names == sorted(f"{n:04}.png" for n in range(total))


def test_info_on_a_huge_text_chunk_answers_with_a_warning(make_png, tmp_path, capsys) -> None:
    from charstudio.cli import main

    src = _png_with_text(tmp_path / "huge.png", make_png, b"tEXt", b"x" * (8 * 1024 * 1024))
    assert main(["info", str(src)]) == 0
    out = capsys.readouterr().out
    assert "warning: its generation parameters were not read" in out
    assert "no generation parameters" in out
    assert "xxxx" not in out
