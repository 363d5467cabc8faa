"""File > New Project: the character's name, its trigger token and where the folder goes."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from charstudio.catalog.project import default_token, project_folder_name
from charstudio.ui.dialog_folders import start_folder


class NewProjectDialog(QDialog):
    def __init__(self, parent_folder: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("New character project")
        self.name = QLineEdit()
        self.name.setPlaceholderText("e.g. French Lady")
        self.token = QLineEdit()
        self.token.setPlaceholderText("from the name")
        self.token.setToolTip(
            "The word that will stand for the character in prompts, e.g. fr3nchl4dy. "
            "Pick something the model does not already know."
        )
        self.location = QLineEdit(str(parent_folder))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.location, 1)
        row.addWidget(browse)
        self.folder_label = QLabel()
        self.folder_label.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow("Character name", self.name)
        form.addRow("Trigger token", self.token)
        form.addRow("Create in", row)
        form.addRow("", self.folder_label)
        form.addRow(self.buttons)
        for edit in (self.name, self.token, self.location):
            edit.textChanged.connect(self._update)
        self.resize(520, self.sizeHint().height())
        self._update()

    def project_folder(self) -> Path:
        return Path(self.location.text()).expanduser() / project_folder_name(self.name.text())

    def token_text(self) -> str:
        return self.token.text().strip() or default_token(self.name.text())

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Create the project in", start_folder(self.location.text())
        )
        if folder:
            self.location.setText(folder)

    def _update(self) -> None:
        ok = bool(self.name.text().strip())
        self.buttons.button(QDialogButtonBox.Ok).setEnabled(ok)
        self.folder_label.setText(
            f"Folder: {self.project_folder()}\nToken: {self.token_text()}" if ok else ""
        )
