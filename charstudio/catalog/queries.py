"""Filtering, sorting and counting the catalog's images (the grid's and the CLI's queries)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from typing import Any

from charstudio.catalog.records import COLORS, REJECT_REASONS

VIEWS = ("all", "unreviewed", "picked", "rejected", "training")
SORTS = {"time": "i.added_at", "seed": "i.seed", "stars": "d.stars", "name": "i.path"}
# Sorts the face analysis computes after the query (see charstudio.analysis.view); the SQL
# part of the filter then returns images by time.
LOOKALIKE_SORT = "look-alike"
SORT_KEYS = (*SORTS, LOOKALIKE_SORT)
# Face filters, answered from the analysis cache after the query: any image, any culling
# flag, one flag (the names of charstudio.analysis.flags.ALL_FLAGS), or analyzed and clean.
FACE_FILTERS = (
    "any",
    "flagged",
    "no-face",
    "several-faces",
    "cut-off",
    "small-face",
    "blurry-face",
    "unflagged",
)


@dataclass(frozen=True)
class ImageFilter:
    """What the grid shows: a view (all/unreviewed/picked/rejected, optionally one reject
    reason, or the newest training set), minimum stars, a colour label, sweep axis values,
    prompt text, and a sort.

    ``face`` (one of :data:`FACE_FILTERS`), ``identity`` (1-based number of an identity group)
    and the ``look-alike`` sort come from the face analysis, so :meth:`sql` ignores them and
    :mod:`charstudio.analysis.view` applies them to the query's result.
    """

    view: str = "all"
    reject_reason: str | None = None
    min_stars: int = 0
    color: str | None = None
    sweep: dict[str, str] = field(default_factory=dict)
    text: str = ""
    sort: str = "time"
    descending: bool = False
    face: str = "any"
    identity: int | None = None

    def __post_init__(self) -> None:
        if self.view not in VIEWS:
            raise ValueError(f"unknown view {self.view!r}; expected one of {', '.join(VIEWS)}")
        if self.reject_reason is not None and self.reject_reason not in REJECT_REASONS:
            raise ValueError(f"unknown reject reason {self.reject_reason!r}")
        if self.color is not None and self.color not in COLORS:
            raise ValueError(f"unknown colour label {self.color!r}")
        if self.sort not in SORT_KEYS:
            raise ValueError(f"unknown sort {self.sort!r}; expected one of {', '.join(SORT_KEYS)}")
        if self.face not in FACE_FILTERS:
            raise ValueError(f"unknown face filter {self.face!r}")
        if self.identity is not None and (not isinstance(self.identity, int) or self.identity < 1):
            raise ValueError(f"an identity group is numbered from 1, not {self.identity!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: Any) -> ImageFilter:
        """A filter from stored settings; anything unreadable falls back to the default."""
        if not isinstance(value, dict):
            return cls()
        known = {k: v for k, v in value.items() if k in cls.__dataclass_fields__}
        try:
            return cls(**known)
        except (TypeError, ValueError):
            pass
        # An analysis field that no longer fits should not cost the rest of the filter.
        for key in ("face", "identity"):
            known.pop(key, None)
        if known.get("sort") not in SORTS:
            known.pop("sort", None)
        try:
            return cls(**known)
        except (TypeError, ValueError):
            return cls()

    def sql(self) -> tuple[str, list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        if self.view == "unreviewed":
            where.append("d.flag = 'none'")
        elif self.view == "picked":
            where.append("d.flag = 'pick'")
        elif self.view == "rejected":
            where.append("d.flag = 'reject'")
            if self.reject_reason:
                where.append("d.reject_reason = ?")
                args.append(self.reject_reason)
        elif self.view == "training":
            where.append(
                "i.id IN (SELECT image_id FROM training_set_images "
                "WHERE set_id = (SELECT max(id) FROM training_sets))"
            )
        if self.min_stars:
            where.append("d.stars >= ?")
            args.append(self.min_stars)
        if self.color:
            where.append("d.color = ?")
            args.append(self.color)
        for axis, value in self.sweep.items():
            where.append("json_extract(i.sweep, ?) = ?")
            args += [f"$.{json.dumps(axis)}", value]
        for word in self.text.split():
            where.append("(i.prompt LIKE ? ESCAPE '\\' OR i.path LIKE ? ESCAPE '\\')")
            pattern = "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            args += [pattern, pattern]
        direction = "DESC" if self.descending and self.sort in SORTS else "ASC"
        order = f"{SORTS.get(self.sort, SORTS['time'])} {direction}, i.id {direction}"
        query = "SELECT i.id FROM images i JOIN decisions d ON d.image_id = i.id"
        if where:
            query += " WHERE " + " AND ".join(where)
        return f"{query} ORDER BY {order}", args


def image_ids(conn: sqlite3.Connection, image_filter: ImageFilter) -> list[int]:
    query, args = image_filter.sql()
    return [row[0] for row in conn.execute(query, args)]


def stats(conn: sqlite3.Connection) -> dict[str, Any]:
    counts = dict(conn.execute("SELECT flag, count(*) FROM decisions GROUP BY flag").fetchall())
    reasons = dict(
        conn.execute(
            "SELECT coalesce(reject_reason, 'unspecified'), count(*) FROM decisions "
            "WHERE flag = 'reject' GROUP BY 1"
        ).fetchall()
    )
    return {
        "total": sum(counts.values()),
        "picked": counts.get("pick", 0),
        "rejected": counts.get("reject", 0),
        "unreviewed": counts.get("none", 0),
        "rejected_by_reason": {r: reasons.get(r, 0) for r in (*REJECT_REASONS, "unspecified")},
        "training_set": conn.execute(
            "SELECT count(*) FROM training_set_images WHERE set_id = "
            "(SELECT max(id) FROM training_sets)"
        ).fetchone()[0],
    }


def sweep_axes(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """Every sweep axis with its values, in the order images were made."""
    axes: dict[str, dict[str, None]] = {}
    for (sweep,) in conn.execute("SELECT sweep FROM images WHERE sweep != '{}' ORDER BY id"):
        for axis, value in json.loads(sweep).items():
            axes.setdefault(axis, {})[str(value)] = None
    return {axis: list(values) for axis, values in axes.items()}
