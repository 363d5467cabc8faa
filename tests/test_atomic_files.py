"""charstudio.atomic_files, and every writer of the core going through it.

Windows behaviour is simulated: a file "held open by another program" makes ``os.replace`` onto
it fail with ERROR_ACCESS_DENIED and ``os.unlink`` of it with ERROR_SHARING_VIOLATION, as
Windows does; a move between drives fails with EXDEV.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from charstudio import atomic_files
from charstudio.atomic_files import (
    FileInUseError,
    atomic_write,
    copy_file_atomic,
    move_file,
    remove_file,
    replace_file,
    write_bytes_atomic,
)

REAL_REPLACE = os.replace
REAL_UNLINK = os.unlink


def windows_error(winerror: int, path: object) -> PermissionError:
    error = PermissionError(errno.EACCES, "Access is denied", str(path))
    error.winerror = winerror  # type: ignore[attr-defined]  # what Windows' Python sets
    return error


class HeldOpen:
    """Files another program holds open, as Windows treats them. ``release_after`` lets a
    file go after that many refused attempts (a viewer that closes it a moment later)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: dict[str, int | None] = {}
        self.refused: list[str] = []
        monkeypatch.setattr(os, "replace", self._replace)
        monkeypatch.setattr(os, "unlink", self._unlink)
        monkeypatch.setattr(atomic_files, "RETRY_SECONDS", 0.2)

    def hold(self, path: Path, release_after: int | None = None) -> None:
        self.paths[os.path.abspath(path)] = release_after

    def _refuses(self, path: object) -> bool:
        key = os.path.abspath(os.fspath(path))  # type: ignore[arg-type]
        if key not in self.paths:
            return False
        left = self.paths[key]
        if left is not None:
            if left <= 0:
                del self.paths[key]
                return False
            self.paths[key] = left - 1
        self.refused.append(key)
        return True

    def _replace(self, src: object, dst: object, **kw: object) -> None:
        if self._refuses(dst):
            raise windows_error(5, dst)  # ERROR_ACCESS_DENIED: renaming over an open file
        REAL_REPLACE(src, dst, **kw)  # type: ignore[arg-type]

    def _unlink(self, path: object, **kw: object) -> None:
        if self._refuses(path):
            raise windows_error(32, path)  # ERROR_SHARING_VIOLATION
        REAL_UNLINK(path, **kw)  # type: ignore[arg-type]


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> HeldOpen:
    return HeldOpen(monkeypatch)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith("."))


# -- the module ------------------------------------------------------------------------------


def test_atomic_write_uses_a_temporary_file_beside_the_target_and_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    renames: list[tuple[str, str]] = []
    synced: list[int] = []
    monkeypatch.setattr(os, "replace", lambda a, b: (renames.append((a, b)), REAL_REPLACE(a, b)))
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    target = tmp_path / "sub" / "a.bin"
    target.parent.mkdir()
    assert atomic_write(target, lambda fh: fh.write(b"hello")) == target
    assert target.read_bytes() == b"hello"
    [(tmp, dst)] = renames
    assert Path(tmp).parent == target.parent and Path(tmp).name.startswith(".a.bin.")
    assert Path(dst) == target and synced
    assert leftovers(tmp_path) == []


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def half(fh: object) -> None:
        fh.write(b"ne")  # type: ignore[attr-defined]
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write(target, half)
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_permissions_follow_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        write_bytes_atomic(tmp_path / "a.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_file_held_open_for_a_moment_is_replaced_after_retrying(
    tmp_path: Path, held: HeldOpen
) -> None:
    target = tmp_path / "a.png"
    target.write_bytes(b"old")
    held.hold(target, release_after=3)
    write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"new" and len(held.refused) == 3
    assert leftovers(tmp_path) == []


def test_a_file_that_stays_open_gives_a_plain_error_and_keeps_the_old_file(
    tmp_path: Path, held: HeldOpen
) -> None:
    target = tmp_path / "Renée" / "a.png"
    target.parent.mkdir()
    target.write_bytes(b"old")
    held.hold(target)
    started = time.monotonic()
    with pytest.raises(FileInUseError) as caught:
        write_bytes_atomic(target, b"new")
    assert time.monotonic() - started >= 0.2  # retried for RETRY_SECONDS
    message = str(caught.value)
    assert message.startswith(str(target)) and "another program has it open" in message
    assert caught.value.filename == str(target) and isinstance(caught.value, OSError)
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_a_real_permission_error_is_not_retried(tmp_path: Path, monkeypatch) -> None:
    def refuse(src: object, dst: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(dst))  # no winerror

    monkeypatch.setattr(os, "replace", refuse)
    monkeypatch.setattr(time, "sleep", lambda s: pytest.fail("retried"))
    with pytest.raises(PermissionError) as caught:
        write_bytes_atomic(tmp_path / "a", b"x")
    assert not isinstance(caught.value, FileInUseError)
    assert leftovers(tmp_path) == []


def test_keep_existing_keeps_an_open_cache_file(tmp_path: Path, held: HeldOpen) -> None:
    target = tmp_path / "thumb.jpg"
    target.write_bytes(b"same picture")
    held.hold(target)
    atomic_write(target, lambda fh: fh.write(b"same picture, again"), keep_existing=True)
    assert target.read_bytes() == b"same picture" and leftovers(tmp_path) == []
    assert len(held.refused) == 1  # no waiting: the existing file is as good


def test_remove_file_retries_then_names_the_file(tmp_path: Path, held: HeldOpen) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"")
    b.write_bytes(b"")
    held.hold(a, release_after=2)
    assert remove_file(a) and not a.exists()
    assert remove_file(a) is False  # already gone
    with pytest.raises(FileNotFoundError):
        remove_file(a, missing_ok=False)
    held.hold(b)
    with pytest.raises(FileInUseError, match="cannot delete this file because another program"):
        remove_file(b)
    assert b.exists()


def test_copy_keeps_times_and_mode(tmp_path: Path) -> None:
    source = tmp_path / "a.png"
    source.write_bytes(b"x" * 3_000_000)
    os.utime(source, (1_600_000_000, 1_600_000_000))
    target = copy_file_atomic(source, tmp_path / "b.png")
    assert target.read_bytes() == source.read_bytes()
    assert target.stat().st_mtime == 1_600_000_000
    assert target.stat().st_mode == source.stat().st_mode


def test_move_within_a_folder_is_a_rename(tmp_path: Path, two_drives) -> None:
    source = tmp_path / "a.pt"
    source.write_bytes(b"vectors")
    inode = source.stat().st_ino
    moved = move_file(source, tmp_path / "b.pt")
    assert moved.read_bytes() == b"vectors" and moved.stat().st_ino == inode
    assert not source.exists() and two_drives == []


def test_move_across_drives_copies_then_removes_the_source(tmp_path: Path, two_drives) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "d").mkdir()
    source = tmp_path / "c" / "a.pt"
    source.write_bytes(b"vectors")
    os.utime(source, (1_600_000_000, 1_600_000_000))
    (tmp_path / "d" / "a.pt").write_bytes(b"old")
    moved = move_file(source, tmp_path / "d" / "a.pt")
    assert moved.read_bytes() == b"vectors" and moved.stat().st_mtime == 1_600_000_000
    assert not source.exists() and len(two_drives) == 1
    assert leftovers(tmp_path) == []


def test_move_across_drives_on_windows_error_17(tmp_path: Path, monkeypatch) -> None:
    def replace(src: object, dst: object) -> None:
        if Path(os.fspath(src)).parent != Path(os.fspath(dst)).parent:  # type: ignore[arg-type]
            error = OSError(errno.EXDEV, "The system cannot move the file to a different disk")
            error.winerror = 17  # type: ignore[attr-defined]
            raise error
        REAL_REPLACE(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", replace)
    (tmp_path / "c").mkdir()
    source = tmp_path / "c" / "a.pt"
    source.write_bytes(b"v")
    assert move_file(source, tmp_path / "a.pt").read_bytes() == b"v" and not source.exists()


def test_concurrent_writers_of_one_file_never_collide(tmp_path: Path) -> None:
    target = tmp_path / "thumb.jpg"
    errors: list[BaseException] = []
    payloads = [bytes([n]) * 100_000 for n in range(8)]

    def write(data: bytes) -> None:
        try:
            for _ in range(10):
                write_bytes_atomic(target, data, durable=False)
        except BaseException as error:  # pragma: no cover - the assertion shows it
            errors.append(error)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and target.read_bytes() in payloads and leftovers(tmp_path) == []


def test_replace_file_retries_a_held_temporary_file_too(tmp_path: Path, held: HeldOpen) -> None:
    source, target = tmp_path / "s", tmp_path / "t"
    source.write_bytes(b"1")
    held.hold(target, release_after=1)
    replace_file(source, target, keep_existing=True)  # no target yet: retried, not kept
    assert target.read_bytes() == b"1"


# -- every writer of the core goes through it ------------------------------------------------


def _png(path: Path) -> None:
    from PIL import Image

    from charstudio.metadata.imagefile import write_png

    write_png(Image.new("RGB", (8, 8), "gray"), path, "a photo of Renée")


def _embedding_pt(path: Path) -> None:
    import torch

    from charstudio.engine.embeddings import save_a1111_pt

    save_a1111_pt(path, "fr3nch", torch.zeros(2, 768), step=5)


def _embedding_safetensors(path: Path) -> None:
    import torch

    from charstudio.engine.embeddings import save_safetensors

    save_safetensors(path, torch.zeros(2, 768), {"name": "fr3nch"})


def _run_json(path: Path) -> None:
    from charstudio.training.run_files import write_json

    write_json(path, {"name": "fr3nch"})


def _verified_weights(path: Path) -> None:
    import hashlib
    import io

    from charstudio.analysis.weights import save_verified

    data = b"weights"
    save_verified(io.BytesIO(data), path, expected_sha256=hashlib.sha256(data).hexdigest())


def _copied(path: Path) -> None:
    source = path.parent.parent / "source.png"
    source.write_bytes(b"new")
    copy_file_atomic(source, path)


WRITERS: dict[str, Callable[[Path], None]] = {
    "write_png": _png,
    "save_a1111_pt": _embedding_pt,
    "save_safetensors": _embedding_safetensors,
    "run_files.write_json": _run_json,
    "weights.save_verified": _verified_weights,
    "copy_file_atomic": _copied,
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_each_writer_retries_a_held_file_then_says_so(
    name: str, tmp_path: Path, held: HeldOpen
) -> None:
    folder = tmp_path / "Renée Müller"
    folder.mkdir()
    target = folder / "file.out"
    target.write_bytes(b"old")
    held.hold(target, release_after=2)
    WRITERS[name](target)
    assert target.read_bytes() != b"old" and len(held.refused) == 2
    target.write_bytes(b"old")
    held.hold(target)
    with pytest.raises(FileInUseError, match="another program has it open"):
        WRITERS[name](target)
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_the_thumbnail_cache_keeps_a_thumbnail_the_grid_holds_open(
    tmp_path: Path, held: HeldOpen, make_png
) -> None:
    from charstudio.metadata.thumbcache import make_thumbnail, thumbnail_path

    source = make_png(tmp_path / "a.png")
    target = thumbnail_path(tmp_path, "ab" * 32)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"made by another worker thread")
    held.hold(target)
    assert make_thumbnail(source, target) == target
    assert target.read_bytes() == b"made by another worker thread"
    assert leftovers(tmp_path) == []


def test_the_hash_cache_write_goes_through_the_module(tmp_path: Path, held: HeldOpen) -> None:
    from charstudio.engine.model_hash import HashCache

    cache_file = tmp_path / "model_hashes.json"
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"weights")
    held.hold(cache_file, release_after=1)
    HashCache(cache_file).sha256(model)
    assert "entries" in cache_file.read_text(encoding="utf-8") and len(held.refused) == 1
    assert leftovers(tmp_path) == []


def test_old_resume_states_held_open_do_not_stop_training(tmp_path: Path, held: HeldOpen) -> None:
    from charstudio.training.run_files import latest_state, save_state

    for step in (1, 2):
        save_state(tmp_path, step, {"step": step})
    first = tmp_path / "state" / "state-000001.pt"
    held.hold(first)  # antivirus scanning it
    save_state(tmp_path, 3, {"step": 3})
    assert first.exists()  # left for a later save
    assert latest_state(tmp_path) == {"step": 3}
    held.paths.clear()
    save_state(tmp_path, 4, {"step": 4})
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [
        "state-000003.pt",
        "state-000004.pt",
    ]


def test_clearing_a_pause_flag_waits_for_a_moment(tmp_path: Path, held: HeldOpen) -> None:
    from charstudio.training.pause import PAUSE_FILE, clear_pause

    flag = tmp_path / PAUSE_FILE
    flag.write_text("pause requested\n", encoding="utf-8")
    held.hold(flag, release_after=2)
    clear_pause(tmp_path)
    assert not flag.exists()


def _mapped(path: Path) -> bool:
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
        return str(path) in maps.read()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see mappings")
def test_a_loaded_embedding_does_not_keep_its_file_mapped(tmp_path: Path) -> None:
    """Windows cannot replace a file mapped into memory: a cached embedding must not pin the
    .safetensors it came from (re-exporting NAME.safetensors would fail)."""
    import torch

    from charstudio.engine.embeddings import EmbeddingLibrary, save_safetensors

    path = save_safetensors(tmp_path / "fr3nch.safetensors", torch.ones(2, 768))
    library = EmbeddingLibrary([tmp_path])
    embedding = library.get("fr3nch")
    assert embedding is not None and torch.equal(embedding.vectors, torch.ones(2, 768))
    assert not _mapped(path)
    save_safetensors(path, torch.zeros(2, 768))  # the export again, with the library alive
    assert torch.equal(library.get("fr3nch").vectors, torch.zeros(2, 768))  # type: ignore[union-attr]
