"""What a training run shows: its loss log, previews over the steps and saved checkpoints.

Read from the run's folder and the catalog, for the Train panel's summary and the centre
run view (as OneTrainer's sample viewer: every preview side by side, the loss full size).
Works for any run kind: TI and LoRA runs keep the same files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from charstudio.catalog import Project
from charstudio.presenters.train import run_row
from charstudio.training import records
from charstudio.training.run_files import LOSS_CSV, PREVIEW_FOLDER, read_loss_rows

__all__ = ["RunSnapshot", "SavedFile", "loss_points", "previews", "run_snapshot", "sample_label"]

_STEP_SUFFIX = re.compile(r"-(\d+)$")
# A LoRA run's samples: NAME-<epoch, six digits>-<prompt index>.png
_EPOCH_SAMPLE = re.compile(r"-(\d{6})-(\d+)$")


@dataclass(frozen=True)
class SavedFile:
    step: int
    path: Path  # absolute
    loss: float | None = None
    label: str = ""  # how a preview is captioned; "" means "step N"

    @property
    def caption(self) -> str:
        return self.label or f"step {self.step}"


def sample_label(path: Path) -> str:
    """A preview's caption from its file name: ``epoch 3 · 2`` for a LoRA run's second sample
    prompt after epoch 3, ``step 40`` for a TI preview."""
    lora = _EPOCH_SAMPLE.search(path.stem)
    if lora:
        return f"epoch {int(lora[1])} · {int(lora[2]) + 1}"
    ti = _STEP_SUFFIX.search(path.stem)
    return f"step {int(ti[1])}" if ti else path.stem


@dataclass(frozen=True)
class RunSnapshot:
    run_id: int
    kind: str
    title: str  # "anna · ti-003 · done"
    status: str
    error: str | None
    step: int  # the newest saved step
    end_step: int | None
    loss: list[tuple[int, float]]
    previews: list[SavedFile]  # by step
    checkpoints: list[SavedFile]  # by step, with the loss at that step

    @property
    def newest_preview(self) -> SavedFile | None:
        return self.previews[-1] if self.previews else None

    @property
    def newest_checkpoint(self) -> SavedFile | None:
        return self.checkpoints[-1] if self.checkpoints else None


def loss_points(path: Path) -> list[tuple[int, float]]:
    """(step, loss) from a run's loss CSV; unreadable rows are skipped."""
    points = []
    for row in read_loss_rows(path):
        try:
            points.append((int(row["step"]), float(row["loss"])))
        except (KeyError, ValueError, TypeError):
            continue
    return points


def previews(folder: Path) -> list[SavedFile]:
    """The run's preview images (``NAME-STEP.png``) in step order."""
    found = []
    preview_dir = folder / PREVIEW_FOLDER
    for path in preview_dir.glob("*.png") if preview_dir.is_dir() else ():
        lora = _EPOCH_SAMPLE.search(path.stem)
        if lora:  # ordered by epoch, then prompt
            found.append(SavedFile(int(lora[1]), path, label=sample_label(path)))
            continue
        match = _STEP_SUFFIX.search(path.stem)
        if match:
            found.append(SavedFile(int(match[1]), path))
    return sorted(found, key=lambda f: (f.step, f.path.name))


def run_snapshot(project: Project, run_id: int) -> RunSnapshot | None:
    """The run as it is on disk now; None when the catalog has no such run."""
    try:
        run = records.get_run(project.catalog, run_id)
    except KeyError:
        return None
    folder = project.root / run.folder
    points = loss_points(folder / LOSS_CSV)
    row = run_row(project, run)
    step = row.step or (points[-1][0] if points else 0)
    checkpoints = [
        SavedFile(c.step, project.file_path(c.path), c.loss)
        for c in records.run_checkpoints(project.catalog, run_id)
        if c.step >= 0  # a LoRA run's averaged epochs are recorded with negative steps
    ]
    title = f"{run.name} · {Path(run.folder).name} · {run.status}"
    return RunSnapshot(
        run.id,
        run.kind,
        title,
        run.status,
        run.error,
        step,
        row.end_step,
        points,
        previews(folder),
        checkpoints,
    )
