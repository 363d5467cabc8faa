"""The folders a project searches for checkpoints, LoRAs and embeddings (File > Model Folders).

Each kind has the project's own folder (``models/``, ``loras/``, ``embeddings/``), which is
always searched, plus folders the artist added, typically an A1111 install's
``models/Stable-diffusion``, ``models/Lora`` and ``embeddings``; those are a JSON list in a
project setting. Qt-free: the dialog and the command line share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from charstudio.catalog import Project
from charstudio.engine.runner import (
    EMBEDDING_FOLDERS_SETTING,
    LORA_FOLDERS_SETTING,
    MODEL_FOLDERS_SETTING,
)

# (what the artist calls it, the project setting, the project's own folder)
FOLDER_KINDS: tuple[tuple[str, str, str], ...] = (
    ("Checkpoint", MODEL_FOLDERS_SETTING, "models"),
    ("LoRA", LORA_FOLDERS_SETTING, "loras"),
    ("Embedding", EMBEDDING_FOLDERS_SETTING, "embeddings"),
)


@dataclass(frozen=True)
class FolderEntry:
    kind: str  # "Checkpoint", "LoRA" or "Embedding"
    setting: str
    path: Path
    own: bool  # the project's own folder: always searched, cannot be removed
    exists: bool


def added_folders(project: Project, setting: str) -> list[str]:
    value = project.catalog.get_setting(setting, []) or []
    return [folder for folder in value if isinstance(folder, str)]


def folder_entries(project: Project) -> list[FolderEntry]:
    """Every folder searched, kind by kind, the project's own first."""
    entries = []
    for kind, setting, own in FOLDER_KINDS:
        paths = [
            (project.root / own, True),
            *((Path(f), False) for f in added_folders(project, setting)),
        ]
        entries += [
            FolderEntry(kind, setting, path, is_own, path.is_dir()) for path, is_own in paths
        ]
    return entries


def add_folder(project: Project, setting: str, folder: Path) -> bool:
    """Search ``folder`` too; False when it is already searched."""
    folders = added_folders(project, setting)
    own = {project.root / name for _kind, key, name in FOLDER_KINDS if key == setting}
    if str(folder) in folders or folder in own:
        return False
    project.catalog.set_setting(setting, [*folders, str(folder)])
    return True


def remove_folder(project: Project, setting: str, folder: Path) -> bool:
    """Stop searching ``folder`` (the folder and its files stay); False when it was not added."""
    folders = added_folders(project, setting)
    if str(folder) not in folders:
        return False
    project.catalog.set_setting(setting, [f for f in folders if f != str(folder)])
    return True
