"""The grid's right-click menu, as Lightroom's: flag, rating and label submenus built from the
window's culling actions (so they show the same shortcuts and do the same thing), then
reveal in the file manager, copy the generation parameters and "Send to Generate"."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QAction, QDesktopServices
from PySide6.QtWidgets import QMenu, QWidget


def _submenu(menu: QMenu, title: str, actions: Sequence[QAction]) -> None:
    sub = menu.addMenu(title)
    for action in actions:
        sub.addAction(action)


def build_image_menu(
    parent: QWidget,
    cull_actions: Sequence[QAction],
    *,
    count: int,
    reveal: Callable[[], None],
    copy_parameters: Callable[[], None] | None,
    send_to_generate: Callable[[], None] | None,
) -> QMenu:
    """``copy_parameters``/``send_to_generate`` None: the image has no generation settings
    (the entries show, disabled, so the artist learns why nothing happens)."""
    menu = QMenu(parent)
    by_kind: dict[str, list[QAction]] = {"flag": [], "stars": [], "color": [], "reason": []}
    for action in cull_actions:
        fields = action.data() or {}
        kind = next((k for k in ("flag", "stars", "color") if k in fields), "reason")
        by_kind[kind].append(action)
    images = f"{count} images" if count > 1 else "image"
    menu.addSection(f"Selected {images}" if count > 1 else "")
    _submenu(menu, "Set Flag", by_kind["flag"] + by_kind["reason"])
    _submenu(menu, "Set Rating", by_kind["stars"])
    _submenu(menu, "Set Color Label", by_kind["color"])
    menu.addSeparator()
    menu.addAction(reveal_label(), reveal)
    copy = menu.addAction("Copy Generation Parameters")
    send = menu.addAction("Send to Generate")
    for action, slot in ((copy, copy_parameters), (send, send_to_generate)):
        action.setEnabled(slot is not None)
        if slot is not None:
            action.triggered.connect(slot)
        else:
            action.setToolTip("This image has no generation settings (an imported photo)")
    return menu


def reveal_label() -> str:
    if sys.platform == "win32":
        return "Show in Explorer"
    if sys.platform == "darwin":
        return "Reveal in Finder"
    return "Show in Folder"


def reveal_in_file_manager(path: Path) -> None:
    """Open the file manager at ``path`` with the file selected where the platform can."""
    if sys.platform == "win32":
        # explorer.exe parses its own command line: /select, and the path must be one argument.
        subprocess.Popen(["explorer", f"/select,{path}"])
    elif sys.platform == "darwin":
        subprocess.Popen(["open", "-R", str(path)])
    else:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(path.parent)))
