"""Progress wording shared by every panel, without a QApplication."""

from __future__ import annotations

from charstudio.jobs import Progress
from charstudio.presenters.progress_text import (
    generate_progress_text,
    grid_progress_text,
    job_dialog_text,
    speed_text,
    train_progress_text,
)


def test_speed_switches_to_seconds_per_iteration_below_one() -> None:
    assert speed_text(5.31) == "5.3 it/s"
    assert speed_text(0.25) == "4.0 s/it"
    assert speed_text(0) is None and speed_text(None) is None and speed_text(True) is None


def test_each_job_kind_reads_the_same_way() -> None:
    images = Progress(12, 288, "", 20.0, {"images_done": 12, "images_total": 288, "it_per_s": 5.3})
    assert generate_progress_text(images) == "Image 12/288 · 5.3 it/s · ETA 07:40"
    loading = Progress(0, 150, "Loading v1-5-pruned-emaonly", 0.5, {})
    assert train_progress_text(loading) == "Loading v1-5-pruned-emaonly"
    nan = Progress(3, 10, "", 1.0, {"loss": float("nan")})
    assert train_progress_text(nan).startswith("Step 3/10 · loss nan")
    assert grid_progress_text(Progress(2, 8, "Cell 3 of 8", 4.0, {})) == "Cell 3 of 8 · ETA 00:12"
    assert job_dialog_text("Import images", Progress(120, 600, "", 2.0, {})) == (
        "Import images: 120 of 600\n60/s · ETA 00:08"
    )
    assert job_dialog_text("Export picks", Progress(0, None, "", 0.0, {})) == (
        "Export picks: 0 of ?\nETA --:--"
    )
