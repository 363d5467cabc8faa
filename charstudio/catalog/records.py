"""Plain records exchanged with the catalog."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

FLAGS = ("pick", "reject", "none")
COLORS = ("red", "yellow", "green", "blue", "purple")
# The four culling passes of the workflow, in order.
REJECT_REASONS = ("off-prompt", "poor-quality", "off-look", "not-best")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class ImageRecord:
    """One image file with what is known about how it was generated."""

    path: str
    sha256: str
    file_size: int
    file_mtime: float
    width: int
    height: int
    format: str
    prompt: str | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    steps: int | None = None
    sampler: str | None = None
    schedule_type: str | None = None
    cfg_scale: float | None = None
    size: str | None = None
    model: str | None = None
    model_hash: str | None = None
    clip_skip: int | None = None
    infotext: str | None = None
    extras: dict[str, str] = field(default_factory=dict)
    sweep: dict[str, str] = field(default_factory=dict)
    job_id: int | None = None
    added_at: str = field(default_factory=utc_now)
    id: int | None = None

    def to_row(self) -> dict[str, Any]:
        row = {k: v for k, v in self.__dict__.items() if k != "id"}
        row["extras"] = json.dumps(self.extras, ensure_ascii=False)
        row["sweep"] = json.dumps(self.sweep, ensure_ascii=False)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ImageRecord:
        values = dict(row)
        values["extras"] = json.loads(values.get("extras") or "{}")
        values["sweep"] = json.loads(values.get("sweep") or "{}")
        return cls(**{k: values[k] for k in cls.__dataclass_fields__ if k in values})


@dataclass(frozen=True)
class Decision:
    """The artist's verdict on one image (Lightroom's flag, stars and colour label)."""

    flag: str = "none"
    stars: int = 0
    color: str | None = None
    reject_reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "flag": self.flag,
            "stars": self.stars,
            "color": self.color,
            "reject_reason": self.reject_reason,
        }
