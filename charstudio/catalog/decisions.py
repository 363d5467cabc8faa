"""Decisions on images with an unlimited, persisted undo/redo history.

Each user action (one key press over a selection) is a row in ``decision_actions`` with one
``decision_changes`` row per image holding the decision before and after. Undo restores the
"before" states of the newest action that is not undone; redo re-applies the oldest undone
one. A new action discards the undone ones, as every editor's undo stack does.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from charstudio.catalog.records import COLORS, FLAGS, REJECT_REASONS, Decision, utc_now

_UNSET: Any = object()


def validate(decision: Decision) -> None:
    if decision.flag not in FLAGS:
        raise ValueError(f"unknown flag {decision.flag!r}; expected one of {', '.join(FLAGS)}")
    if not 0 <= decision.stars <= 5:
        raise ValueError(f"stars must be 0–5, not {decision.stars}")
    if decision.color is not None and decision.color not in COLORS:
        raise ValueError(f"unknown colour label {decision.color!r}; expected {', '.join(COLORS)}")
    if decision.reject_reason is not None and decision.reject_reason not in REJECT_REASONS:
        raise ValueError(
            f"unknown reject reason {decision.reject_reason!r}; "
            f"expected one of {', '.join(REJECT_REASONS)}"
        )


def changed(
    current: Decision,
    *,
    flag: str = _UNSET,
    stars: int = _UNSET,
    color: str | None = _UNSET,
    reject_reason: str | None = _UNSET,
) -> Decision:
    """``current`` with the given fields changed. A reject reason implies the reject flag;
    picking or unflagging clears the reason (it only explains a rejection)."""
    new = current
    if flag is not _UNSET:
        new = replace(new, flag=flag, reject_reason=None if flag != "reject" else new.reject_reason)
    if reject_reason is not _UNSET:
        new = replace(new, reject_reason=reject_reason)
        if reject_reason is not None:
            new = replace(new, flag="reject")
    if stars is not _UNSET:
        new = replace(new, stars=stars)
    if color is not _UNSET:
        new = replace(new, color=color)
    validate(new)
    return new


def read(conn: sqlite3.Connection, image_id: int) -> Decision:
    row = conn.execute(
        "SELECT flag, stars, color, reject_reason FROM decisions WHERE image_id = ?", (image_id,)
    ).fetchone()
    return Decision(*row) if row else Decision()


def _write(conn: sqlite3.Connection, image_id: int, decision: Decision, now: str) -> None:
    conn.execute(
        "INSERT INTO decisions (image_id, flag, stars, color, reject_reason, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (image_id) DO UPDATE SET flag = excluded.flag, "
        "stars = excluded.stars, color = excluded.color, "
        "reject_reason = excluded.reject_reason, updated_at = excluded.updated_at",
        (image_id, decision.flag, decision.stars, decision.color, decision.reject_reason, now),
    )


def apply(
    conn: sqlite3.Connection, image_ids: Iterable[int], label: str, **fields: Any
) -> int | None:
    """Change the decision of every image in one undoable action, committed at once.

    Returns the action's id, or None when nothing changed (no history entry is made).
    """
    now = utc_now()
    with conn:
        changes: list[tuple[int, Decision, Decision]] = []
        for image_id in dict.fromkeys(image_ids):
            if conn.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone() is None:
                raise KeyError(f"no image with id {image_id}")
            before = read(conn, image_id)
            after = changed(before, **fields)
            if after != before:
                changes.append((image_id, before, after))
        if not changes:
            return None
        conn.execute("DELETE FROM decision_actions WHERE undone = 1")
        action_id = conn.execute(
            "INSERT INTO decision_actions (label, created_at) VALUES (?, ?)", (label, now)
        ).lastrowid
        for image_id, before, after in changes:
            _write(conn, image_id, after, now)
            conn.execute(
                "INSERT INTO decision_changes (action_id, image_id, before, after) "
                "VALUES (?, ?, ?, ?)",
                (action_id, image_id, json.dumps(before.as_dict()), json.dumps(after.as_dict())),
            )
        return action_id


def _replay(conn: sqlite3.Connection, action_id: int, side: str, undone: int) -> list[int]:
    now = utc_now()
    rows = conn.execute(
        f"SELECT image_id, {side} FROM decision_changes WHERE action_id = ? ORDER BY id",
        (action_id,),
    ).fetchall()
    for image_id, state in rows:
        _write(conn, image_id, Decision(**json.loads(state)), now)
    conn.execute("UPDATE decision_actions SET undone = ? WHERE id = ?", (undone, action_id))
    return [image_id for image_id, _ in rows]


def undo(conn: sqlite3.Connection) -> list[int] | None:
    """Undo the newest action; returns the ids of the images it touched, None if none left."""
    with conn:
        row = conn.execute(
            "SELECT id FROM decision_actions WHERE undone = 0 ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return _replay(conn, row[0], "before", 1) if row else None


def redo(conn: sqlite3.Connection) -> list[int] | None:
    """Redo the oldest undone action; returns the touched image ids, None if none left."""
    with conn:
        row = conn.execute(
            "SELECT id FROM decision_actions WHERE undone = 1 ORDER BY id LIMIT 1"
        ).fetchone()
        return _replay(conn, row[0], "after", 0) if row else None


def history(conn: sqlite3.Connection, image_id: int) -> list[dict[str, Any]]:
    """The effective (not undone) changes of one image, oldest first."""
    rows = conn.execute(
        "SELECT a.label, a.created_at, c.before, c.after FROM decision_changes c "
        "JOIN decision_actions a ON a.id = c.action_id "
        "WHERE c.image_id = ? AND a.undone = 0 ORDER BY c.id",
        (image_id,),
    ).fetchall()
    return [
        {"label": label, "at": at, "before": json.loads(b), "after": json.loads(a)}
        for label, at, b, a in rows
    ]
