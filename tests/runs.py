"""A training run's catalog rows and files as the TI job leaves them, without training."""

from __future__ import annotations

from collections.abc import Iterable

from PIL import Image

from charstudio.catalog import Project
from charstudio.training import records
from charstudio.training.run_files import (
    LOSS_CSV,
    PREVIEW_FOLDER,
    append_loss_row,
    write_loss_rows,
)
from charstudio.training.settings import TrainTISettings


def make_ti_run(
    project: Project, *, steps: int, saved: Iterable[int], status: str = "running"
) -> int:
    """Run ``ti-001-ann4`` trained to ``steps`` (loss 0.3 − step/100) with a preview PNG and a
    checkpoint at each of the ``saved`` steps."""
    run_id = records.create_run(
        project.catalog,
        name="ann4",
        folder="runs/ti-001-ann4",
        params={"settings": TrainTISettings(name="ann4", max_steps=20).to_json()},
        job_id=None,
    )
    if status != "running":
        records.set_run_status(project.catalog, run_id, status)
    folder = project.root / "runs" / "ti-001-ann4"
    (folder / PREVIEW_FOLDER).mkdir(parents=True)
    write_loss_rows(folder / LOSS_CSV, [])
    for step in range(1, steps + 1):
        append_loss_row(folder / LOSS_CSV, step, 0.3 - step / 100, 0.002, 4.0)
    for step in saved:
        image = Image.new("RGB", (32, 32), (step * 10, 80, 80))
        image.save(folder / PREVIEW_FOLDER / f"ann4-{step}.png")
        (folder / f"ann4-{step}.pt").write_bytes(b"pt")
        records.record_checkpoint(
            project.catalog, run_id, step, f"runs/ti-001-ann4/ann4-{step}.pt", 0.3 - step / 100, "0"
        )
    return run_id
