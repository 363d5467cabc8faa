"""Decisions on images with an unlimited, persisted undo/redo history.

Each user action (one key press over a selection) is a row in ``decision_actions`` with one
``decision_changes`` row per image holding the decision before and after. The history of an
image is its actions that are not undone; nothing acknowledged is ever dropped from it except
by the undo of the session that made it.

Several processes may decide on one project at once (the app and ``charstudio decide``, or
two windows). Each open catalog is a *session* with its own undo stack:

- undo takes back this session's newest action, and once those are used up, the newest
  action of a session that has ended (closed its catalog; that is how undo survives a
  restart, and how the app can undo what a finished command decided);
- redo re-applies what this session undid, newest undo first;
- a new action discards only this session's redo branch, never another session's.

An undo or redo changes only the fields the action changed (flag with its reject reason,
stars, colour) and only where the image still holds what the action left: a field that
another session has changed since keeps that newer value, and the step reports the image as
kept. An artist expects Ctrl+Z to take back their own last key press, not to wipe what a
script or another window decided since; refusing the whole undo instead would leave their
undo stack stuck. Every step reads and writes inside one ``BEGIN IMMEDIATE`` transaction, so
what it read cannot change before it writes.

A session whose process was killed never hands its actions on; another session on the same
computer takes them over once it finds that process gone (``sessions.is_gone``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from charstudio.catalog.records import COLORS, FLAGS, REJECT_REASONS, Decision, utc_now
from charstudio.catalog.sessions import is_gone

_UNSET: Any = object()

# The parts of a decision that undo/redo restore as a whole: a reject reason only exists
# with the reject flag, so the two travel together.
_PARTS: tuple[tuple[str, ...], ...] = (("flag", "reject_reason"), ("stars",), ("color",))


@dataclass(frozen=True)
class Step:
    """What one undo or redo did."""

    label: str
    image_ids: list[int]  # every image of the action
    kept: list[int]  # images where another session's newer decision was left as it is

    def message(self, verb: str) -> str:
        """A status line: ``Undone "pick" (3 images)`` and what was kept and why."""
        count = len(self.image_ids)
        text = f'{verb} "{self.label}" ({count} image{"s" if count != 1 else ""})'
        if self.kept:
            kept = len(self.kept)
            text += (
                f"; {kept} image{'s' if kept != 1 else ''} kept a newer decision made "
                "elsewhere (another window or a command) since"
            )
        return text


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


@contextmanager
def _write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One transaction that holds the write lock from its first read: Python's sqlite3 only
    begins a transaction at the first INSERT/UPDATE/DELETE, so reads made before it (the
    decision an action starts from, the action an undo takes back) could be stale by the
    time the write commits, and another process's commit in between would be overwritten."""
    if conn.in_transaction:  # inside a caller's transaction: its lock, its commit
        yield
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.commit()
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise


def apply(
    conn: sqlite3.Connection, image_ids: Iterable[int], label: str, session: str, **fields: Any
) -> int | None:
    """Change the decision of every image in one undoable action of ``session``, committed
    at once. Returns the action's id, or None when nothing changed (no history entry)."""
    now = utc_now()
    wanted = list(dict.fromkeys(image_ids))
    with _write_transaction(conn):
        changes: list[tuple[int, Decision, Decision]] = []
        for image_id in wanted:
            if conn.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone() is None:
                raise KeyError(f"no image with id {image_id}")
            before = read(conn, image_id)
            after = changed(before, **fields)
            if after != before:
                changes.append((image_id, before, after))
        if not changes:
            return None
        # A new action ends this session's redo branch; other sessions' undos stay redoable.
        conn.execute("DELETE FROM decision_actions WHERE session = ? AND undone = 1", (session,))
        action_id = conn.execute(
            "INSERT INTO decision_actions (label, created_at, session) VALUES (?, ?, ?)",
            (label, now, session),
        ).lastrowid
        for image_id, before, after in changes:
            _write(conn, image_id, after, now)
            conn.execute(
                "INSERT INTO decision_changes (action_id, image_id, before, after) "
                "VALUES (?, ?, ?, ?)",
                (action_id, image_id, json.dumps(before.as_dict()), json.dumps(after.as_dict())),
            )
        return action_id


def _replayed(current: Decision, old: Decision, new: Decision) -> tuple[Decision, bool]:
    """``current`` with each part that the action changed from ``old`` to ``new`` set to
    ``new``'s value, and whether some such part was left alone because the image no longer
    holds ``old`` there (another session changed it since: its newer decision wins)."""
    result, theirs = current.as_dict(), current.as_dict()
    ours, target = old.as_dict(), new.as_dict()
    kept = False
    for part in _PARTS:
        if all(ours[f] == target[f] for f in part):
            continue  # the action did not change this part
        if all(theirs[f] == ours[f] for f in part):
            result.update({f: target[f] for f in part})
        else:
            kept = True
    return Decision(**result), kept


def _replay(conn: sqlite3.Connection, action_id: int, undo: bool) -> Step:
    """Take back (``undo``) or re-apply one action's changes, part by part."""
    now = utc_now()
    (label,) = conn.execute(
        "SELECT label FROM decision_actions WHERE id = ?", (action_id,)
    ).fetchone()
    rows = conn.execute(
        "SELECT image_id, before, after FROM decision_changes WHERE action_id = ? ORDER BY id",
        (action_id,),
    ).fetchall()
    kept: list[int] = []
    for image_id, before_json, after_json in rows:
        before = Decision(**json.loads(before_json))
        after = Decision(**json.loads(after_json))
        current = read(conn, image_id)
        result, conflict = _replayed(current, *((after, before) if undo else (before, after)))
        if conflict:
            kept.append(image_id)
        if result != current:
            _write(conn, image_id, result, now)
    return Step(label=label, image_ids=[r[0] for r in rows], kept=kept)


def _release_gone_sessions(conn: sqlite3.Connection, session: str) -> None:
    """Hand on the actions of sessions whose process was killed before it could."""
    others = conn.execute(
        "SELECT DISTINCT session FROM decision_actions "
        "WHERE session IS NOT NULL AND session != ? AND undone = 0",
        (session,),
    ).fetchall()
    for (other,) in others:
        if is_gone(other):
            conn.execute("UPDATE decision_actions SET session = NULL WHERE session = ?", (other,))


def undo(conn: sqlite3.Connection, session: str) -> Step | None:
    """Undo ``session``'s newest action, or when it has none left, the newest action of a
    session that has ended (which this session then owns: its redo is this session's).
    None when there is nothing to undo."""
    with _write_transaction(conn):
        row = conn.execute(
            "SELECT id FROM decision_actions WHERE undone = 0 AND session = ? "
            "ORDER BY id DESC LIMIT 1",
            (session,),
        ).fetchone()
        if row is None:
            _release_gone_sessions(conn, session)
            row = conn.execute(
                "SELECT id FROM decision_actions WHERE undone = 0 AND session IS NULL "
                "ORDER BY id DESC LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        step = _replay(conn, row[0], undo=True)
        # undo_order: this session's redo stack, newest undo on top.
        conn.execute(
            "UPDATE decision_actions SET undone = 1, session = ?, undo_order = "
            "(SELECT coalesce(max(undo_order), 0) + 1 FROM decision_actions WHERE session = ?) "
            "WHERE id = ?",
            (session, session, row[0]),
        )
        return step


def redo(conn: sqlite3.Connection, session: str) -> Step | None:
    """Redo what ``session`` undid last; None when it has nothing to redo."""
    with _write_transaction(conn):
        row = conn.execute(
            "SELECT id FROM decision_actions WHERE undone = 1 AND session = ? "
            "ORDER BY undo_order DESC, id LIMIT 1",
            (session,),
        ).fetchone()
        if row is None:
            return None
        step = _replay(conn, row[0], undo=False)
        conn.execute(
            "UPDATE decision_actions SET undone = 0, undo_order = NULL WHERE id = ?", (row[0],)
        )
        return step


def end_session(conn: sqlite3.Connection, session: str) -> None:
    """Hand ``session``'s actions to whichever session opens the project next: they become
    undoable there. Its redo branch ends with it (kept as undone rows, redone by no one)."""
    with _write_transaction(conn):
        conn.execute("UPDATE decision_actions SET session = NULL WHERE session = ?", (session,))


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
