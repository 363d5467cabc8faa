"""File > Model Folders and F5: the folders searched for checkpoints, LoRAs and embeddings,
added, listed and removed, and files copied into them found again without a restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QComboBox

from charstudio.catalog import Project
from charstudio.engine.model_folders import (
    add_folder,
    folder_entries,
    remove_folder,
)
from charstudio.engine.runner import LORA_FOLDERS_SETTING, MODEL_FOLDERS_SETTING, find_checkpoints
from charstudio.ui.main_window import MainWindow
from charstudio.ui.model_folders_dialog import ModelFoldersDialog


@pytest.fixture
def project(tmp_path: Path):
    with Project.create(tmp_path / "proj", "Anna") as project:
        yield project


def test_folders_are_added_listed_and_removed_without_touching_files(
    project: Project, tmp_path: Path
) -> None:
    a1111 = tmp_path / "stable-diffusion-webui" / "models" / "Stable-diffusion"
    a1111.mkdir(parents=True)
    (a1111 / "deliberate_v2.safetensors").write_bytes(b"x")
    assert [(e.kind, e.own) for e in folder_entries(project)] == [
        ("Checkpoint", True),
        ("LoRA", True),
        ("Embedding", True),
    ]
    assert add_folder(project, MODEL_FOLDERS_SETTING, a1111)
    assert not add_folder(project, MODEL_FOLDERS_SETTING, a1111)  # already searched
    assert not add_folder(project, MODEL_FOLDERS_SETTING, project.root / "models")
    assert add_folder(project, LORA_FOLDERS_SETTING, tmp_path / "gone")
    entries = folder_entries(project)
    checkpoints = [e for e in entries if e.kind == "Checkpoint"]
    assert [(e.path, e.own, e.exists) for e in checkpoints] == [
        (project.root / "models", True, True),
        (a1111, False, True),
    ]
    assert [e.exists for e in entries if e.kind == "LoRA"] == [True, False]
    assert [p.name for p in find_checkpoints(project)] == ["deliberate_v2.safetensors"]
    assert remove_folder(project, MODEL_FOLDERS_SETTING, a1111)
    assert not remove_folder(project, MODEL_FOLDERS_SETTING, a1111)
    assert find_checkpoints(project) == []
    assert (a1111 / "deliberate_v2.safetensors").exists()  # removing never deletes


@pytest.mark.gui
def test_the_dialog_lists_and_removes_folders_and_f5_finds_new_files(qtbot, tmp_path: Path) -> None:
    Project.create(tmp_path / "proj", "Anna").close()
    window = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat))
    qtbot.addWidget(window)
    assert window.open_project(tmp_path / "proj")
    combo = window.generate_panel.model_combo
    assert isinstance(combo, QComboBox)

    def choices() -> list[str]:
        return [combo.itemText(i) for i in range(combo.count())]

    a1111 = tmp_path / "webui" / "models" / "Stable-diffusion"
    a1111.mkdir(parents=True)
    window.show_model_folders()
    dialog = window.model_folders_dialog
    assert isinstance(dialog, ModelFoldersDialog)
    dialog.add(MODEL_FOLDERS_SETTING, a1111)
    assert [e.path for e in dialog.entries() if e.kind == "Checkpoint"][-1] == a1111
    assert not dialog.remove_button.isEnabled()

    # A file copied into a model folder shows up after F5, as with A1111's refresh button.
    (a1111 / "portrait-plus.safetensors").write_bytes(b"x")
    assert not any("portrait-plus" in c for c in choices())
    window.refresh_models_action.trigger()
    assert any("portrait-plus" in c for c in choices())
    assert "1 checkpoint" in window.statusBar().currentMessage()

    dialog.select(a1111)
    assert dialog.remove_button.isEnabled()
    dialog.remove_button.click()
    assert a1111 not in [e.path for e in dialog.entries()]
    assert "0 checkpoints" in window.statusBar().currentMessage()  # searched again at once
    dialog.select(tmp_path / "proj" / "models")  # the project's own folder cannot be removed
    assert not dialog.remove_button.isEnabled()
    window.close()
