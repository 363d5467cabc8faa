"""The culling keys: one table that makes the actions, the shortcuts and the cheat sheet.

Lightroom habits: P pick, X reject, U unflag, 0–5 stars, 6–9 colour labels; charstudio adds
one key per culling pass's reject reason. Shift with any of them applies and advances.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from charstudio.ui.grid_delegate import REASON_TEXT


@dataclass(frozen=True)
class CullKey:
    key: str
    label: str
    fields: dict[str, Any]


CULL_KEYS: list[CullKey] = [
    CullKey("P", "Pick", {"flag": "pick"}),
    CullKey("X", "Reject", {"flag": "reject"}),
    CullKey("U", "Unflag", {"flag": "none"}),
    *(CullKey(str(n), f"{n} stars" if n != 1 else "1 star", {"stars": n}) for n in range(6)),
    CullKey("6", "Red label", {"color": "red"}),
    CullKey("7", "Yellow label", {"color": "yellow"}),
    CullKey("8", "Green label", {"color": "green"}),
    CullKey("9", "Blue label", {"color": "blue"}),
    CullKey("O", f"Reject: {REASON_TEXT['off-prompt']}", {"reject_reason": "off-prompt"}),
    CullKey("Q", f"Reject: {REASON_TEXT['poor-quality']}", {"reject_reason": "poor-quality"}),
    CullKey("L", f"Reject: {REASON_TEXT['off-look']}", {"reject_reason": "off-look"}),
    CullKey("B", f"Reject: {REASON_TEXT['not-best']}", {"reject_reason": "not-best"}),
]

# Keys that are not decisions, for the cheat sheet.
NAVIGATION_KEYS: list[tuple[str, str]] = [
    ("Arrows, Home/End, PageUp/PageDown", "Move in the grid"),
    ("Shift + a decision key", "Apply and advance to the next image"),
    ("Caps Lock / toolbar", "Auto-advance after every decision"),
    ("E or Enter", "Loupe: the image large (Esc back to the grid)"),
    ("C", "Compare: the two selected images side by side"),
    ("Compare: Left / Right", "Previous / next image of the grid as the candidate"),
    ("Compare: Up / Down", "Make the candidate the select / swap the two"),
    ("N", "Survey: up to 8 selected images side by side"),
    ("G", "Back to the grid"),
    ("Z", "Loupe/survey: toggle fit and 1:1 at the cursor"),
    ("Wheel / drag", "Loupe/survey: zoom at the cursor / pan (Shift unlinks panes)"),
    ("I", "Loupe/survey: cycle the info overlay"),
    ("Ctrl + wheel", "Grid: thumbnail size"),
    ("S", "Grid: expand/collapse the focused image's stack of near-duplicates"),
    ("Ctrl+Shift+S", "Sort by similarity (look-alike) to the selected images"),
    ("Ctrl+Z / Ctrl+Shift+Z", "Undo / redo your decisions (unlimited, kept on disk)"),
    ("?", "This cheat sheet"),
]


def cheat_sheet_html() -> str:
    rows = "".join(f"<tr><td><b>{c.key}</b></td><td>{c.label}</td></tr>" for c in CULL_KEYS)
    rows += "".join(f"<tr><td><b>{k}</b></td><td>{text}</td></tr>" for k, text in NAVIGATION_KEYS)
    return f"<table cellspacing='4'>{rows}</table>"
