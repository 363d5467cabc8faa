"""The files of a training run folder, each written so that a crash never leaves half a file.

``runs/<run>/`` holds:

* ``NAME-<step>.pt`` (A1111 format) and ``NAME-<step>.safetensors`` (``emb_params``): the
  embedding after ``step`` optimizer steps. (A1111 names its copies ``steps done + 1``, so its
  ``NAME-40.pt`` holds 39 steps; here the number in the name is the number of steps in it.)
* ``state/state-<step>.pt``: what a resume needs (vectors, optimizer, random streams, data
  order, loss history); the two newest are kept.
* ``loss.csv``: ``step,loss,learning_rate,images_per_s``, one row per optimizer step.
* ``previews/NAME-<step>.png``: preview images with A1111 infotext.
* ``settings.json``: the run's settings, model and images, as started.
* ``PAUSE``: present while a pause is requested (see :mod:`charstudio.training.pause`).

Every file is written under a temporary name, flushed to disk and renamed; checkpoint files are
on disk before their catalog row is committed.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charstudio.atomic_files import remove_file, write_bytes_atomic

if TYPE_CHECKING:
    import torch

__all__ = [
    "LOSS_CSV",
    "LOSS_FIELDS",
    "SETTINGS_JSON",
    "SavedCheckpoint",
    "latest_state",
    "newest_state_step",
    "read_loss_rows",
    "save_checkpoint",
    "save_state",
    "sha256_file",
    "write_atomic_bytes",
    "write_loss_rows",
]

LOSS_CSV = "loss.csv"
LOSS_FIELDS = ("step", "loss", "learning_rate", "images_per_s")
SETTINGS_JSON = "settings.json"
STATE_FOLDER = "state"
PREVIEW_FOLDER = "previews"
KEEP_STATES = 2
_STATE_NAME = re.compile(r"state-(\d+)\.pt")


def write_atomic_bytes(path: Path, data: bytes) -> Path:
    """Write via a hidden temporary file, flush it to disk, rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_bytes_atomic(path, data)


def write_json(path: Path, value: Any) -> Path:
    text = json.dumps(value, ensure_ascii=False, indent=2) + "\n"
    return write_atomic_bytes(path, text.encode("utf-8"))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- embeddings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SavedCheckpoint:
    step: int
    pt: Path
    safetensors: Path
    sha256: str  # of the .pt, the file A1111 users share

    @property
    def shorthash(self) -> str:
        """A1111's short hash of an embedding (``TI hashes`` in infotext)."""
        return self.sha256[:12]


def checkpoint_stem(name: str, step: int) -> str:
    return f"{name}-{step}"


def save_checkpoint(
    folder: Path,
    name: str,
    step: int,
    vectors: torch.Tensor,
    *,
    model_hash: str | None,
    model_name: str | None,
) -> SavedCheckpoint:
    """Write ``NAME-<step>.pt`` and ``.safetensors`` with the engine's writers (which flush
    them to disk before renaming them into place) and return the .pt's sha256. The files' own
    ``name`` is the file stem, as A1111's."""
    from charstudio.engine.embeddings import save_a1111_pt, save_safetensors

    stem = checkpoint_stem(name, step)
    pt = save_a1111_pt(
        folder / f"{stem}.pt",
        stem,
        vectors,
        step=step,
        checkpoint_hash=model_hash,
        checkpoint_name=model_name,
    )
    metadata = {"name": stem, "step": str(step), "sd_checkpoint_name": model_name or ""}
    if model_hash:
        metadata["sd_checkpoint"] = model_hash
    tensors = save_safetensors(folder / f"{stem}.safetensors", vectors, metadata)
    return SavedCheckpoint(step, pt, tensors, sha256_file(pt))


# -- resume state ----------------------------------------------------------------------------


def save_state(folder: Path, step: int, state: dict[str, Any]) -> Path:
    """Write ``state/state-<step>.pt`` and keep only the newest few. Like every ``.pt`` the app
    writes, its zip holds only the entries A1111's safe loader accepts."""
    from charstudio.engine.pt_files import torch_save_bytes

    path = folder / STATE_FOLDER / f"state-{step:06d}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = torch_save_bytes(state, path.stem)
    write_bytes_atomic(path, payload)
    for old in _state_files(folder)[KEEP_STATES:]:
        # One held open elsewhere (antivirus) is left for the next save to remove.
        with contextlib.suppress(OSError):
            remove_file(old[1])
    return path


def _state_files(folder: Path) -> list[tuple[int, Path]]:
    """State files, newest first."""
    states = folder / STATE_FOLDER
    if not states.is_dir():
        return []
    found = []
    for path in states.iterdir():
        match = _STATE_NAME.fullmatch(path.name)
        if match:
            found.append((int(match[1]), path))
    return sorted(found, reverse=True)


def newest_state_step(folder: Path) -> int:
    """The step of the newest state file by its name (0 without one): for progress reports
    before the state is loaded."""
    states = _state_files(folder)
    return states[0][0] if states else 0


def latest_state(folder: Path) -> dict[str, Any] | None:
    """The newest state file that loads (an unreadable one is skipped), or None."""
    from charstudio.engine.pt_files import RefusedPickle, UnreadableTorchFile, load_weights_only

    for _step, path in _state_files(folder):
        try:
            return load_weights_only(path)
        except (RefusedPickle, UnreadableTorchFile):  # damaged: try the one before
            continue
    return None


# -- loss log --------------------------------------------------------------------------------


def read_loss_rows(path: Path) -> list[dict[str, str]]:
    """The complete rows of a loss CSV (a row cut short by a crash is dropped)."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [r for r in rows if all(r.get(k) not in (None, "") for k in LOSS_FIELDS)]


def write_loss_rows(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Rewrite the loss CSV with ``rows`` (on resume: the rows up to the resumed step)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=LOSS_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in LOSS_FIELDS})
    write_atomic_bytes(path, out.getvalue().encode("utf-8"))


def append_loss_row(path: Path, step: int, loss: float, rate: float, images_per_s: float) -> None:
    """One row, written in one call so a cancel never leaves half a line."""
    line = f"{step},{loss:.7f},{rate:.6g},{images_per_s:.3f}\n"
    with open(path, "a", encoding="utf-8", newline="") as fh:
        fh.write(line)
