"""File dialogs open where the artist's files are, never in the app's install folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PySide6.QtWidgets import QFileDialog

from charstudio.ui.dialog_folders import start_folder
from charstudio.ui.widgets import PathCombo, browse_button


def test_the_first_existing_candidate_wins_and_home_is_the_fallback(tmp_path: Path) -> None:
    model = tmp_path / "models" / "v1-5.safetensors"
    model.parent.mkdir()
    model.write_bytes(b"x")
    assert start_folder(None, "", tmp_path / "gone", model) == str(model.parent)
    assert start_folder(tmp_path / "gone", None) == str(Path.home())
    assert start_folder() == str(Path.home())


def test_browse_starts_beside_the_chosen_file_else_at_home(
    qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # stands for the install folder the app runs from
    asked: list[str] = []

    def get_open_file_name(parent, title, folder, filters):
        asked.append(folder)
        return "", ""

    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(get_open_file_name))
    combo = PathCombo(None, "Checkpoint file")
    qtbot.addWidget(combo)
    button = browse_button(combo, combo, "Checkpoint", "Models (*.safetensors)")
    file_action = button.menu().actions()[0]
    file_action.trigger()
    assert asked[-1] == str(Path.home()) != os.getcwd()
    model = tmp_path / "models" / "v1-5.safetensors"
    model.parent.mkdir()
    model.write_bytes(b"x")
    combo.set_path(str(model))
    file_action.trigger()
    assert asked[-1] == str(model.parent)
