"""The checkpoint the Train panel starts on: the one trained on last, else base SD 1.5, else
the one that made the picks."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QSettings

from charstudio.catalog import Project
from charstudio.catalog.importer import import_images
from charstudio.jobs import run_job
from charstudio.training.base_model import base_sd15, suggest_training_model
from charstudio.training.records import create_run
from charstudio.ui.main_window import MainWindow

DELIBERATE = Path("/models/deliberate_v2.safetensors")
BASE = Path("/models/v1-5-pruned-emaonly.safetensors")
BASE_FULL = Path("/models/v1-5-pruned.ckpt")
INPAINT = Path("/models/sd-v1-5-inpainting.ckpt")


def test_base_sd15_is_recognised_by_its_usual_file_names() -> None:
    assert base_sd15([DELIBERATE, BASE_FULL, BASE, INPAINT]) == BASE
    assert base_sd15([DELIBERATE, INPAINT]) is None
    assert base_sd15([Path("/m/stable-diffusion-v1-5")]) == Path("/m/stable-diffusion-v1-5")
    assert base_sd15([Path("/m/sd15.safetensors")]) == Path("/m/sd15.safetensors")


def test_the_suggestion_follows_the_order_artists_expect() -> None:
    found = [DELIBERATE, BASE]
    assert suggest_training_model(found, last_trained="/x/other.safetensors")[0] == (
        "/x/other.safetensors"
    )
    model, why = suggest_training_model(found, pick_models=["deliberate_v2"])
    assert (model, why) == (str(BASE), "base SD 1.5, as the tutorial trains")
    model, why = suggest_training_model([DELIBERATE], pick_models=["deliberate_v2", "x"])
    assert (model, why) == (str(DELIBERATE), "the checkpoint that made the picks")
    assert suggest_training_model([DELIBERATE], pick_models=["unknown"]) == (None, "")


@pytest.mark.gui
@pytest.mark.parametrize("trained_before", [False, True])
def test_the_train_panel_starts_on_the_last_trained_else_base_sd15(
    qtbot, tmp_path: Path, make_png, trained_before: bool
) -> None:
    with Project.create(tmp_path / "proj", "Anna") as project:
        for name in ("deliberate_v2.safetensors", "v1-5-pruned-emaonly.safetensors"):
            (project.root / "models" / name).write_bytes(b"x")
        run_job(import_images(project, [make_png(tmp_path / "in" / "1.png")]))
        other = str(project.root / "models" / "deliberate_v2.safetensors")
        if trained_before:
            params = {"model": other}
            create_run(project.catalog, name="anna", folder="runs/a", params=params, job_id=None)
    window = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat))
    qtbot.addWidget(window)
    try:
        assert window.open_project(tmp_path / "proj")
        path = window.train_panel.model_combo.path()
        tip = window.train_panel.model_combo.toolTip()
        if trained_before:
            assert path == other and "trained on last" in tip
        else:
            assert path is not None and path.endswith("v1-5-pruned-emaonly.safetensors")
            assert "base SD 1.5" in tip
    finally:
        window.close()
