"""One dark look for the whole window, as Lightroom and A1111's dark mode have.

The grid and the loupe were dark while docks, toolbar and dialogs kept the platform's light
grey; the eye keeps readjusting. Fusion draws every widget from the palette, so one palette
makes docks, forms, menus and dialogs match the image views on Windows and Linux alike.
"""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

# Neutral greys: a tinted grey would shift how the artist reads skin tones next to it.
WINDOW = "#2b2b2e"
BASE = "#1e1e22"  # the grid's and the loupe's background
ALTERNATE = "#26262a"
BUTTON = "#36363b"
TEXT = "#dcdcdc"
MUTED = "#8a8a8f"
HIGHLIGHT = "#3d7bd9"
LINK = "#6aa6ff"


def dark_palette() -> QPalette:
    palette = QPalette()
    role, group = QPalette.ColorRole, QPalette.ColorGroup
    for r, color in (
        (role.Window, WINDOW),
        (role.WindowText, TEXT),
        (role.Base, BASE),
        (role.AlternateBase, ALTERNATE),
        (role.ToolTipBase, BUTTON),
        (role.ToolTipText, TEXT),
        (role.PlaceholderText, MUTED),
        (role.Text, TEXT),
        (role.Button, BUTTON),
        (role.ButtonText, TEXT),
        (role.BrightText, "#ffffff"),
        (role.Highlight, HIGHLIGHT),
        (role.HighlightedText, "#ffffff"),
        (role.Link, LINK),
        (role.Light, "#4a4a50"),
        (role.Midlight, "#404046"),
        (role.Mid, "#303035"),
        (role.Dark, "#18181b"),
        (role.Shadow, "#0c0c0e"),
    ):
        palette.setColor(r, QColor(color))
    for r in (role.WindowText, role.Text, role.ButtonText, role.HighlightedText):
        palette.setColor(group.Disabled, r, QColor("#6a6a70"))
    palette.setColor(group.Disabled, role.Highlight, QColor("#3a3a40"))
    return palette


def apply_dark_theme(app: QApplication) -> None:
    app.setStyle("Fusion")
    app.setPalette(dark_palette())
    # Tooltips are separate top-level windows: the palette alone leaves them light on some
    # platforms.
    app.setStyleSheet(
        f"QToolTip {{ color: {TEXT}; background: {BUTTON}; border: 1px solid #4a4a50; }}"
    )
