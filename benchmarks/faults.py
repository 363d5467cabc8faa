"""Fault injection: kill -9 at random moments, bad files, malicious checkpoints, damaged
catalogs and two writers, each run many times; prints what each fault cost.

    python benchmarks/faults.py [--decisions 20] [--imports 10] [--jobs 2] [--trainings 1]
                                [--seed 1] [--json]

Every figure is measured, not assumed:

* data lost: decisions the child printed as acknowledged (after ``decide()`` returned) that
  are not in the catalog after the kill; images lost by a recovery; checkpoints that were in
  the catalog before the kill and are gone after the resume; catalog files a refusal changed;
  payloads that ran (a marker file written by the unpickled object).
* half rows: image rows whose file is missing, and files in images/ with no row (after the
  recovery: a ``--copy`` import killed between copying and committing may leave one, which
  the next import reuses), and databases failing ``PRAGMA integrity_check``.
* errors surfaced: faults answered with a plain message (a failed entry, a ``charstudio:
  error:`` line, a refused load naming the file).
* hangs: a command past its timeout. tracebacks shown: "Traceback" in any command's output.

The tests in tests/faults/ run each scenario once; this runs them at random moments.
"""

from __future__ import annotations

import argparse
import builtins
import json
import os
import pickle
import platform
import random
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from charstudio.catalog import CATALOG_NAME, ImageRecord, Project  # noqa: E402

CLI_TIMEOUT = 300.0


@dataclass
class Row:
    scenario: str
    runs: int = 0
    faults: int = 0
    lost: int = 0
    half_rows: int = 0
    errors_surfaced: int = 0
    hangs: int = 0
    tracebacks: int = 0
    notes: list[str] = field(default_factory=list)


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, HF_HUB_OFFLINE="1", QT_QPA_PLATFORM="offscreen", PYTHONPATH=path)


def cli(row: Row, *args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run ``charstudio ARGS``; count a hang or a traceback against ``row``."""
    try:
        result = subprocess.run(
            [sys.executable, "-m", "charstudio", *args],
            capture_output=True,
            encoding="utf-8",
            errors="replace",  # a file name that is not UTF-8 comes back as it is on disk
            timeout=timeout,
            env=_env(),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        row.hangs += 1
        return subprocess.CompletedProcess(exc.cmd, -1, str(exc.stdout or ""), "timeout")
    if "Traceback" in result.stdout or "Traceback" in result.stderr:
        row.tracebacks += 1
        row.notes.append("traceback: " + result.stderr.strip().splitlines()[-1][:120])
    return result


def popen(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *args],
        env=_env(),
        encoding="utf-8",
        errors="replace",
        stderr=subprocess.PIPE,
        **kwargs,
    )


def kill(proc: subprocess.Popen[str], row: Row) -> None:
    """kill -9, and note a traceback the child printed before it (none is expected)."""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    err = proc.stderr.read() if proc.stderr else ""
    if "Traceback" in err:
        row.tracebacks += 1
        row.notes.append("child traceback: " + err.strip().splitlines()[-1][:120])
    row.faults += 1


def rows_and_files(root: Path) -> tuple[bool, list[str], set[str]]:
    conn = sqlite3.connect(root / CATALOG_NAME, timeout=30)
    try:
        ok = conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        paths = [p for (p,) in conn.execute("SELECT path FROM images")]
    finally:
        conn.close()
    images = root / "images"
    files = {
        f"images/{p.relative_to(images).as_posix()}"
        for p in images.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }
    return ok, paths, files


def half_rows(root: Path, *, orphans: bool = True, files_exist: bool = True) -> int:
    ok, paths, files = rows_and_files(root)
    if not files_exist:  # rows made without files: only the database's integrity counts
        return 0 if ok else 1
    missing = [p for p in paths if not (Path(p) if Path(p).is_absolute() else root / p).is_file()]
    return (0 if ok else 1) + len(missing) + (len(files - set(paths)) if orphans else 0)


def count(root: Path, sql: str) -> int:
    conn = sqlite3.connect(root / CATALOG_NAME, timeout=30)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def wait_for(root: Path, sql: str, at_least: int, proc: subprocess.Popen[str], row: Row) -> bool:
    deadline = time.monotonic() + CLI_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False  # finished before the kill came
        try:
            if count(root, sql) >= at_least:
                return True
        except sqlite3.OperationalError:
            pass
        time.sleep(0.01)
    row.hangs += 1
    return False


def images_project(root: Path, n: int) -> Path:
    with Project.create(root, "Anna") as project:
        for i in range(1, n + 1):
            project.catalog.add_image(
                ImageRecord(
                    path=f"images/{i}.png",
                    sha256=f"{i:064x}",
                    file_size=1,
                    file_mtime=0.0,
                    width=8,
                    height=8,
                    format="PNG",
                )
            )
    return root


# -- decisions -------------------------------------------------------------------------------------

# Decides as fast as it can, printing "try ID STARS" before and "ack ID STARS" after each
# decide() returned; a plain error (e.g. busy) prints "err" and goes on.
DECIDER = """
import random, sys
from charstudio.catalog import CatalogError, Project
rng = random.Random(int(sys.argv[2]))
ids = [int(i) for i in sys.argv[3].split(",")]
with Project.open(sys.argv[1]) as project:
    while True:
        image, stars = rng.choice(ids), rng.randrange(6)
        print("try", image, stars, flush=True)
        try:
            project.catalog.decide([image], "decide", stars=stars)
        except CatalogError as exc:
            print("err", image, stars, flush=True)
            continue
        print("ack", image, stars, flush=True)
"""


class Decider:
    def __init__(self, root: Path, seed: int, ids: list[int]) -> None:
        self.proc = popen(
            "-c", DECIDER, str(root), str(seed), ",".join(map(str, ids)), stdout=subprocess.PIPE
        )
        self.acked: dict[int, int] = {}
        self.in_flight: tuple[int, int] | None = None
        self.acks = 0
        self.errors = 0

    def feed(self, line: str) -> None:
        parts = line.split()
        if len(parts) != 3:
            return  # cut by the kill
        kind, image, stars = parts[0], int(parts[1]), int(parts[2])
        if kind == "try":
            self.in_flight = (image, stars)
        elif kind == "ack":
            self.acked[image] = stars
            self.in_flight = None
            self.acks += 1
        else:
            self.errors += 1
            self.in_flight = None

    def run_until(self, acks: int) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        while self.acks < acks and time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.feed(line)

    def finish(self, row: Row) -> None:
        kill(self.proc, row)
        assert self.proc.stdout is not None
        for line in self.proc.stdout.read().splitlines():
            self.feed(line)

    def lost(self, root: Path) -> int:
        with Project.open(root) as project:
            return sum(
                1
                for image, stars in self.acked.items()
                if project.catalog.decision(image).stars != stars
                and (image, project.catalog.decision(image).stars) != self.in_flight
            )


def scenario_decisions(runs: int, rng: random.Random, work: Path) -> Row:
    row = Row("kill -9 while deciding")
    acked = 0
    for n in range(runs):
        root = images_project(work / f"decide-{n}", 30)
        decider = Decider(root, rng.randrange(1 << 30), list(range(1, 31)))
        decider.run_until(rng.randrange(1, 400))
        decider.finish(row)
        acked += decider.acks
        row.lost += decider.lost(root)
        row.half_rows += half_rows(root, files_exist=False)
        cli(row, "stats", str(root))
        row.runs += 1
    row.notes.append(f"{acked} acknowledged decisions checked")
    return row


def scenario_two_writers(runs: int, rng: random.Random, work: Path) -> Row:
    row = Row("two writers, both killed")
    acked = errors = 0
    for n in range(runs):
        root = images_project(work / f"two-{n}", 30)
        a = Decider(root, rng.randrange(1 << 30), list(range(1, 31, 2)))
        b = Decider(root, rng.randrange(1 << 30), list(range(2, 31, 2)))
        target = rng.randrange(1, 300)
        deadline = time.monotonic() + 60
        while min(a.acks, b.acks) < target and time.monotonic() < deadline:
            for d in (a, b):  # read both pipes in turn so neither child blocks on a full one
                if d.acks < target:
                    d.run_until(d.acks + 1)
        a.finish(row)
        b.finish(row)
        acked += a.acks + b.acks
        errors += a.errors + b.errors
        row.lost += a.lost(root) + b.lost(root)
        row.half_rows += half_rows(root, files_exist=False)
        row.runs += 1
    row.errors_surfaced += errors
    row.notes.append(f"{acked} acknowledged decisions checked; {errors} plain busy errors")
    return row


# -- imports ---------------------------------------------------------------------------------------


def make_pngs(folder: Path, n: int) -> Path:
    from PIL import Image, PngImagePlugin

    folder.mkdir(parents=True)
    rng = random.Random(0)
    for i in range(n):
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", f"a photo\nSteps: 30, Sampler: Euler a, Seed: {i}, Size: 96x96")
        image = Image.frombytes("RGB", (96, 96), rng.randbytes(96 * 96 * 3))
        image.save(folder / f"{i:04}.png", pnginfo=info)
    return folder


def scenario_import(runs: int, rng: random.Random, work: Path, source: Path, copy: bool) -> Row:
    row = Row(f"kill -9 during import{' --copy' if copy else ''}")
    total = len(list(source.iterdir()))
    flag = ["--copy"] if copy else []
    for n in range(runs):
        root = work / f"import-{int(copy)}-{n}"
        cli(row, "new", str(root), "--name", "Anna")
        proc = popen("-m", "charstudio", "import", str(root), str(source), *flag)
        if wait_for(root, "SELECT count(*) FROM images", rng.randrange(0, total - 50), proc, row):
            kill(proc, row)
            before = set(rows_and_files(root)[1])
            row.half_rows += half_rows(root, orphans=False)  # rows without files, right away
        else:
            proc.wait()
            before = set()
        again = cli(row, "import", str(root), str(source), *flag, "--json")
        report = json.loads(again.stdout) if again.returncode == 0 else {"failed": ["?"]}
        paths = rows_and_files(root)[1]
        row.lost += len(before - set(paths)) + max(0, total - len(paths))
        row.half_rows += half_rows(root)  # orphans too, after the recovery
        row.errors_surfaced += len(report["failed"])
        row.runs += 1
    return row


# -- jobs: generate and training -------------------------------------------------------------------


def tiny_model(work: Path) -> Path:
    from tests.tiny_sd import tiny_components, write_diffusers_folder

    return write_diffusers_folder(work / "tiny-sd", tiny_components(5))


TINY = ["--width", "32", "--height", "32"]


def scenario_generate(runs: int, rng: random.Random, work: Path, model: Path) -> Row:
    row = Row("kill -9 during a generate job")
    batches = 8
    for n in range(runs):
        root = work / f"gen-{n}"
        cli(row, "new", str(root), "--name", "Anna")
        proc = popen("-m", "charstudio", "generate", str(root), "--model", str(model),
                     "--prompt", "a photo of a woman", "--batch-count", str(batches),
                     "--steps", "2", "--seed", "5", "--no-grid", *TINY,
                     stdout=subprocess.DEVNULL)  # fmt: skip
        if wait_for(root, "SELECT count(*) FROM images", rng.randrange(1, batches), proc, row):
            kill(proc, row)
        else:
            proc.wait()
        before = set(rows_and_files(root)[1])
        row.half_rows += half_rows(root, orphans=False)
        result = cli(row, "jobs", str(root), "--run", "--json")
        jobs = json.loads(result.stdout) if result.returncode == 0 else []
        if not jobs or jobs[0]["status"] != "done":
            row.notes.append(f"generate job not finished: {result.stderr.strip()[-120:]}")
        paths = set(rows_and_files(root)[1])
        row.lost += len(before - paths) + max(0, batches - len(paths))
        row.half_rows += half_rows(root) + max(0, len(paths) - batches)  # none made twice
        row.runs += 1
    return row


def scenario_training(runs: int, rng: random.Random, work: Path, model: Path) -> Row:
    row = Row("kill -9 during training, then resume")
    steps = 8
    for n in range(runs):
        root = work / f"train-{n}"
        cli(row, "new", str(root), "--name", "Anna", "--token", "4nna")
        made = cli(row, "generate", str(root), "--model", str(model), "--prompt", "a woman",
                   "--batch-size", "2", "--steps", "1", "--no-grid", "--json", *TINY)  # fmt: skip
        ids = [str(i["id"]) for i in json.loads(made.stdout)["images"]]
        cli(row, "decide", str(root), *ids, "--flag", "pick")
        proc = popen("-m", "charstudio", "train-ti", str(root), "--model", str(model),
                     "--steps", str(steps), "--save-every", "1", "--preview-every", "0", *TINY,
                     stdout=subprocess.DEVNULL)  # fmt: skip
        if wait_for(root, "SELECT count(*) FROM checkpoints", rng.randrange(1, steps), proc, row):
            kill(proc, row)
        else:
            proc.wait()
        conn = sqlite3.connect(root / CATALOG_NAME)
        before = {s for (s,) in conn.execute("SELECT step FROM checkpoints")}
        conn.close()
        result = cli(row, "jobs", str(root), "--run", "--json")
        conn = sqlite3.connect(root / CATALOG_NAME)
        after = [s for (s,) in conn.execute("SELECT step FROM checkpoints ORDER BY step")]
        runs_done = conn.execute("SELECT status FROM runs").fetchall()
        conn.close()
        row.lost += len(before - set(after)) + (0 if after == list(range(1, steps + 1)) else 1)
        if runs_done != [("done",)] or result.returncode != 0:
            row.notes.append(f"resume ended {runs_done}: {result.stderr.strip()[-120:]}")
            row.lost += 1
        row.notes.append(f"killed at {len(before)}/{steps} steps")
        row.runs += 1
    return row


# -- bad files -------------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def make_zoo(folder: Path, good: Path) -> int:
    """The bad-file zoo beside ``good``; returns how many bad entries it holds."""
    import io

    from PIL import Image

    folder.mkdir(parents=True)
    shutil.copy(good, folder / "good.png")
    png = good.read_bytes()
    out = io.BytesIO()
    Image.new("RGB", (64, 64), "blue").save(out, "PNG")  # no text chunk of its own
    plain = out.getvalue()
    out = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(out, "JPEG")
    jpeg = out.getvalue()
    out = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(out, "WEBP")
    webp = out.getvalue()
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"")
    huge = plain[:-12] + _png_chunk(b"tEXt", b"parameters\0" + b"x" * (8 << 20)) + plain[-12:]
    bad_itxt = (
        plain[:-12]
        + _png_chunk(b"iTXt", b"parameters\0\0\0\0\0a \xff\xc0 b\nSteps: 1, Seed: 2, Size: 1x1")
        + plain[-12:]
    )
    files = {
        "empty.png": b"",
        "notes.png": b"just some text, not an image\n",
        "truncated.png": png[: len(png) // 2],
        "truncated.jpg": jpeg[:-200],
        "truncated.webp": webp[: len(webp) // 2],
        "bomb.png": bomb + _png_chunk(b"IEND", b""),
        # imported without their text, with a warning:
        "huge-chunk.png": huge,
        "bad-utf8-itxt.png": bad_itxt,
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    bad = len(files)
    if os.name == "posix":
        (folder / "loop.png").symlink_to("loop.png")
        (folder / "dangling.png").symlink_to(folder / "nowhere.png")
        os.mkfifo(folder / "fifo.png")
        (folder / os.fsdecode(b"bad\xff.png")).write_bytes(png)  # refused in place
        bad += 4
    return bad


def scenario_zoo(work: Path) -> Row:
    row = Row("bad-file zoo import")
    source = make_pngs(work / "zoo-src", 1)
    zoo = work / "zoo"
    bad = make_zoo(zoo, source / "0000.png")
    root = work / "zoo-project"
    cli(row, "new", str(root), "--name", "Anna")
    result = cli(row, "import", str(root), str(zoo), "--json")
    report = json.loads(result.stdout)
    row.runs = 1
    row.faults = bad
    row.errors_surfaced = len([f for f in report["failed"] if f["error"]]) + len(report["warnings"])
    with Project.open(root) as project:
        imported = {Path(r.path).name for r in project.catalog.images()}
    expected = {"good.png", "huge-chunk.png", "bad-utf8-itxt.png"}
    row.lost = len(expected - imported)
    row.half_rows = half_rows(root)
    info = cli(row, "info", *(str(p) for p in sorted(zoo.iterdir()) if p.name != "fifo.png"))
    row.notes.append(
        f"added {report['added']}, failed {len(report['failed'])}, "
        f"warnings {len(report['warnings'])}; info exit {info.returncode}"
    )
    row.notes.append("bad UTF-8 is read with U+FFFD replacements (no message needed)")
    return row


# -- malicious checkpoints -------------------------------------------------------------------------


class WritesMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (builtins.open, (str(self.marker), "w"))


def scenario_malicious(work: Path, model: Path) -> Row:
    import torch

    from charstudio.engine.embeddings import EmbeddingError, load_embedding
    from charstudio.engine.loras import LoraError, load_lora
    from charstudio.engine.model_loading import UnsafeCheckpointError, read_state_dict

    row = Row("malicious checkpoints (payload writes a file)")
    marker = work / "evil" / "ran.txt"
    loaders = [
        ("checkpoint", read_state_dict, UnsafeCheckpointError),
        ("lora", load_lora, LoraError),
        ("embedding", load_embedding, EmbeddingError),
    ]
    for kind, load, error in loaders:
        for suffix in (".ckpt", ".pt", ".bin"):
            for form in ("zip", "legacy"):
                path = work / "evil" / kind / f"evil-{form}{suffix}"
                path.parent.mkdir(parents=True, exist_ok=True)
                payload = {"w": torch.zeros(2), "x": WritesMarker(marker)}
                if form == "zip":
                    torch.save(payload, path)
                else:
                    path.write_bytes(pickle.dumps(payload, protocol=2))
                row.faults += 1
                row.runs += 1
                try:
                    load(path)
                except error as exc:
                    if path.name in str(exc) and "Traceback" not in str(exc):
                        row.errors_surfaced += 1
                except Exception as exc:  # another class: a bug, counted as not surfaced
                    row.notes.append(f"{kind} {path.name}: {type(exc).__name__}: {exc}"[:160])
    # Through the command line, as an artist would: a checkpoint and a LoRA by name.
    root = work / "evil-project"
    cli(row, "new", str(root), "--name", "Anna")
    evil = work / "evil" / "checkpoint" / "evil-zip.ckpt"
    shutil.copy(work / "evil" / "lora" / "evil-zip.pt", root / "loras" / "evil.pt")
    for args in (
        ["--model", str(evil), "--prompt", "a woman"],
        ["--model", str(model), "--prompt", "a woman <lora:evil:1>"],
    ):
        result = cli(row, "generate", str(root), *args, "--steps", "1", *TINY)
        row.runs += 1
        row.faults += 1
        if result.returncode != 0 and "evil" in result.stderr + result.stdout:
            row.errors_surfaced += 1
    ran = marker.exists()
    row.lost = int(ran)
    row.notes.append(f"payloads run: {int(ran)}")
    return row


# -- catalog damage, locks, read-only --------------------------------------------------------------


def scenario_catalog(work: Path) -> Row:
    from charstudio.catalog.schema import SCHEMA_VERSION

    row = Row("damaged / newer / empty catalog")

    def damaged(name: str, damage: Any) -> None:
        root = images_project(work / f"cat-{name}", 20)
        path = root / CATALOG_NAME
        damage(path)
        before = path.read_bytes()
        result = cli(row, "stats", str(root))
        row.runs += 1
        row.faults += 1
        if result.returncode == 2 and result.stderr.startswith("charstudio: error:"):
            row.errors_surfaced += 1
        else:
            row.notes.append(f"{name}: exit {result.returncode} {result.stderr.strip()[:100]}")
        row.lost += int(path.read_bytes() != before)

    def newer(path: Path) -> None:
        conn = sqlite3.connect(path)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.commit()
        conn.close()

    def flip_pages(path: Path) -> None:
        data = bytearray(path.read_bytes())
        for offset in range(4096 + 100, len(data), 4096):  # every page after the first
            data[offset : offset + 64] = bytes(64)
            data[offset + 8] ^= 0xFF
        path.write_bytes(bytes(data))

    damaged("newer", newer)
    damaged("empty", lambda p: p.write_bytes(b""))
    damaged("truncated", lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 3]))
    damaged("not-sqlite", lambda p: p.write_bytes(b"not a database " * 400))
    damaged("damaged-pages", flip_pages)
    return row


def scenario_lock_and_read_only(work: Path) -> Row:
    row = Row("held write lock / read-only project")
    root = images_project(work / "locked", 5)
    other = sqlite3.connect(root / CATALOG_NAME, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    result = cli(row, "decide", str(root), "1", "--flag", "pick")
    waited = time.monotonic() - started
    other.execute("ROLLBACK")
    other.close()
    row.runs += 1
    row.faults += 1
    row.errors_surfaced += int(result.returncode == 2 and "busy" in result.stderr)
    row.lost += count(root, "SELECT count(*) FROM decisions WHERE flag != 'none'")  # half-done
    row.notes.append(f"busy answered in {waited:.1f} s")
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        os.chmod(root, 0o555)
        try:
            result = cli(row, "decide", str(root), "1", "--flag", "pick")
        finally:
            os.chmod(root, 0o755)
        row.runs += 1
        row.faults += 1
        row.errors_surfaced += int(result.returncode == 2 and "viewing only" in result.stderr)
    else:
        row.notes.append("read-only: as root every file is writable (tests simulate it)")
    return row


# -- report ----------------------------------------------------------------------------------------

COLUMNS = [
    ("scenario", "scenario"),
    ("runs", "runs"),
    ("faults", "faults injected"),
    ("lost", "data lost"),
    ("half_rows", "half rows"),
    ("errors_surfaced", "errors surfaced"),
    ("hangs", "hangs"),
    ("tracebacks", "tracebacks shown"),
]


def print_table(rows: list[Row]) -> None:
    print("| " + " | ".join(title for _, title in COLUMNS) + " |")
    print("|" + "|".join("---" for _ in COLUMNS) + "|")
    for row in rows:
        print("| " + " | ".join(str(getattr(row, key)) for key, _ in COLUMNS) + " |")
    print()
    for row in rows:
        for note in row.notes:
            print(f"- {row.scenario}: {note}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decisions", type=int, default=20, help="kills while deciding")
    parser.add_argument("--writers", type=int, default=5, help="two-writer kills")
    parser.add_argument("--imports", type=int, default=5, help="kills per import kind")
    parser.add_argument("--images", type=int, default=400, help="files per killed import")
    parser.add_argument("--jobs", type=int, default=2, help="kills of a generate job")
    parser.add_argument("--trainings", type=int, default=1, help="kills of a training run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    started = time.monotonic()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="charstudio-faults-") as tmp:
        work = Path(tmp)
        rows.append(scenario_decisions(args.decisions, rng, work))
        rows.append(scenario_two_writers(args.writers, rng, work))
        source = make_pngs(work / "source", args.images)
        rows.append(scenario_import(args.imports, rng, work, source, copy=False))
        rows.append(scenario_import(args.imports, rng, work, source, copy=True))
        rows.append(scenario_zoo(work))
        rows.append(scenario_catalog(work))
        rows.append(scenario_lock_and_read_only(work))
        needs_model = args.jobs or args.trainings
        model = tiny_model(work) if needs_model else None
        if model is not None:
            rows.append(scenario_malicious(work, model))
        if args.jobs and model is not None:
            rows.append(scenario_generate(args.jobs, rng, work, model))
        if args.trainings and model is not None:
            rows.append(scenario_training(args.trainings, rng, work, model))
    elapsed = time.monotonic() - started
    machine = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    if args.json:
        out = {"machine": machine, "seconds": round(elapsed), "rows": [asdict(r) for r in rows]}
        print(json.dumps(out, indent=2))
    else:
        print(f"machine: {machine}; {elapsed:.0f} s\n")
        print_table(rows)
    bad = sum(r.lost + r.half_rows + r.hangs + r.tracebacks for r in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
