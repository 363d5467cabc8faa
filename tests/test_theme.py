"""One dark look: docks, forms and dialogs share the grid's dark background."""

from __future__ import annotations

from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication

from charstudio.ui.icons import dice_icon, reuse_icon
from charstudio.ui.theme import BASE, apply_dark_theme


def lightness(color) -> int:
    return color.lightness()


def test_the_whole_app_is_dark_with_readable_text(qapp: QApplication) -> None:
    before = qapp.palette()
    try:
        apply_dark_theme(qapp)
        palette = qapp.palette()
        role = QPalette.ColorRole
        for background, text in (
            (role.Window, role.WindowText),
            (role.Base, role.Text),
            (role.Button, role.ButtonText),
        ):
            assert lightness(palette.color(background)) < 70
            assert lightness(palette.color(text)) - lightness(palette.color(background)) > 120
        # The image grid's own background is the palette's base: no light frame around it.
        assert palette.color(role.Base).name() == BASE
        disabled = palette.color(QPalette.ColorGroup.Disabled, role.ButtonText)
        assert lightness(disabled) < lightness(palette.color(role.ButtonText))
    finally:
        qapp.setPalette(before)
        qapp.setStyleSheet("")


def test_seed_buttons_draw_their_icons_without_emoji_fonts(qapp: QApplication) -> None:
    for icon in (dice_icon(), reuse_icon()):
        image = icon.pixmap(32, 32).toImage()
        painted = sum(
            image.pixelColor(x, y).alpha() > 0 for x in range(image.width()) for y in range(32)
        )
        assert 40 < painted < 32 * 32 // 2  # a drawn symbol, not an empty or filled box
