"""File > Model Folders…: the folders searched for checkpoints, LoRAs and embeddings, with Add
and Remove. A passive view over charstudio.engine.model_folders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from charstudio.catalog import Project
from charstudio.engine.model_folders import (
    FOLDER_KINDS,
    FolderEntry,
    add_folder,
    folder_entries,
    remove_folder,
)
from charstudio.ui.dialog_folders import start_folder

ENTRY_ROLE = Qt.UserRole + 1


class ModelFoldersDialog(QDialog):
    """Lists every searched folder by kind; ``changed`` runs after each add or remove."""

    def __init__(
        self, project: Project, changed: Callable[[], None], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Model Folders")
        self.project = project
        self.changed = changed
        self.tree = QTreeWidget()
        self.tree.setHeaderHidden(True)
        self.tree.setRootIsDecorated(False)
        self.tree.itemSelectionChanged.connect(self._update_buttons)
        hint = QLabel(
            "charstudio searches the project's own folders and these, e.g. an AUTOMATIC1111 "
            "install's models/Stable-diffusion, models/Lora and embeddings folders. Removing a "
            "folder here never deletes it."
        )
        hint.setWordWrap(True)
        self.add_buttons = {}
        buttons = QHBoxLayout()
        for kind, setting, _own in FOLDER_KINDS:
            button = QPushButton(f"Add {kind} Folder…")
            button.clicked.connect(lambda _=False, s=setting: self._choose(s))
            self.add_buttons[setting] = button
            buttons.addWidget(button)
        self.remove_button = QPushButton("Remove")
        self.remove_button.clicked.connect(self.remove_selected)
        buttons.addStretch(1)
        buttons.addWidget(self.remove_button)
        close = QDialogButtonBox(QDialogButtonBox.Close)
        close.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(hint)
        layout.addWidget(self.tree, 1)
        layout.addLayout(buttons)
        layout.addWidget(close)
        self.resize(720, 420)
        self.reload()

    def reload(self) -> None:
        self.tree.clear()
        heading: str | None = None
        for entry in folder_entries(self.project):
            if entry.kind != heading:
                heading = entry.kind
                title = QTreeWidgetItem([f"{entry.kind}s"])
                title.setFlags(Qt.ItemIsEnabled)
                font = title.font(0)
                font.setBold(True)
                title.setFont(0, font)
                self.tree.addTopLevelItem(title)
            text = str(entry.path)
            if entry.own:
                text += "  (this project's own folder)"
            if not entry.exists:
                text += "  (missing)"
            item = QTreeWidgetItem([text])
            item.setData(0, ENTRY_ROLE, entry)
            if entry.own:
                item.setFlags(Qt.ItemIsEnabled)  # shown, not selectable: it cannot be removed
            self.tree.addTopLevelItem(item)
        self._update_buttons()

    def entries(self) -> list[FolderEntry]:
        items = (self.tree.topLevelItem(i) for i in range(self.tree.topLevelItemCount()))
        return [e for item in items if (e := item.data(0, ENTRY_ROLE)) is not None]

    def select(self, path: Path) -> None:
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            entry = item.data(0, ENTRY_ROLE)
            item.setSelected(entry is not None and entry.path == path and not entry.own)

    def _selected(self) -> FolderEntry | None:
        for item in self.tree.selectedItems():
            entry = item.data(0, ENTRY_ROLE)
            if entry is not None and not entry.own:
                return entry
        return None

    def _update_buttons(self) -> None:
        self.remove_button.setEnabled(self._selected() is not None)

    def _choose(self, setting: str) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder", start_folder())
        if folder:
            self.add(setting, Path(folder))

    def add(self, setting: str, folder: Path) -> None:
        if add_folder(self.project, setting, folder):
            self.changed()
        self.reload()

    def remove_selected(self) -> None:
        entry = self._selected()
        if entry is not None and remove_folder(self.project, entry.setting, entry.path):
            self.changed()
        self.reload()
