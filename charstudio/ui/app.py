"""Starting the GUI."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from charstudio.ui.main_window import MainWindow
from charstudio.ui.theme import apply_dark_theme


def run_app(project: Path | None = None) -> int:
    app = QApplication.instance() or QApplication(sys.argv)
    app.setApplicationName("charstudio")
    app.setOrganizationName("charstudio")
    apply_dark_theme(app)
    window = MainWindow(QSettings("charstudio", "charstudio"))
    if project is not None:
        window.open_project(project)
    else:
        last = window.settings.value("last_project", "")
        if last and Path(str(last)).is_dir():
            window.open_project(Path(str(last)))
    window.show()
    return app.exec()
