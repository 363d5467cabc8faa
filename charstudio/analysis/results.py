"""What the analysis stores about one image: faces, identity embedding, perceptual hash.

A :class:`FaceAnalysis` belongs to a file's *content* (its sha256), not to a catalog row, so the
catalog can cache it and recompute only when the file changes or :data:`ANALYSIS_VERSION` moves.
It keeps every face MTCNN returned (MTCNN's own stage thresholds apply, nothing stricter), so
the culling flags, which apply their own confidence threshold, can be recomputed from the stored
result whenever the artist changes a threshold. Everything round-trips through JSON
(:meth:`FaceAnalysis.to_json` / :meth:`FaceAnalysis.from_json`) exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["ANALYSIS_VERSION", "Box", "Face", "FaceAnalysis", "Point"]

# Bump when detection, sharpness, cropping or hashing change so that cached results are redone.
ANALYSIS_VERSION = 1

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels; may pass the border
Point = tuple[float, float]


@dataclass(frozen=True)
class Face:
    """One detected face, in the coordinates of the full-size image."""

    box: Box
    probability: float
    # MTCNN's five points: left eye, right eye, nose, left and right mouth corner (as seen).
    landmarks: tuple[Point, ...]
    area_ratio: float  # box area / image area
    height_ratio: float  # box height / image height
    sharpness: float | None = None  # variance of Laplacian; see charstudio.analysis.sharpness

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    def to_json(self) -> dict[str, Any]:
        return {
            "box": list(self.box),
            "probability": self.probability,
            "landmarks": [list(p) for p in self.landmarks],
            "area_ratio": self.area_ratio,
            "height_ratio": self.height_ratio,
            "sharpness": self.sharpness,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Face:
        x1, y1, x2, y2 = (float(v) for v in data["box"])
        return cls(
            box=(x1, y1, x2, y2),
            probability=float(data["probability"]),
            landmarks=tuple((float(x), float(y)) for x, y in data.get("landmarks", ())),
            area_ratio=float(data["area_ratio"]),
            height_ratio=float(data["height_ratio"]),
            sharpness=None if data.get("sharpness") is None else float(data["sharpness"]),
        )


@dataclass(frozen=True)
class FaceAnalysis:
    """The analysis of one image file, keyed by the file's sha256.

    ``faces`` is sorted largest first. ``embedding`` is the 512-d L2-normalized identity vector
    of ``faces[embedding_face]`` (the largest confident face) made by ``embedding_model``; it is
    ``None`` without a usable face or without recognizer weights. An unreadable file gives an
    entry with ``error`` set and nothing else; such entries describe a failure, not the content,
    so callers should not cache them.
    """

    sha256: str
    width: int = 0
    height: int = 0
    faces: tuple[Face, ...] = ()
    embedding: tuple[float, ...] | None = None
    embedding_face: int | None = None
    embedding_model: str | None = None
    phash: str | None = None
    error: str | None = None
    version: int = field(default=ANALYSIS_VERSION)

    @property
    def ok(self) -> bool:
        return self.error is None

    def confident_faces(self, min_confidence: float) -> list[Face]:
        """Faces with a detection probability of at least ``min_confidence``, largest first."""
        return [face for face in self.faces if face.probability >= min_confidence]

    def face_count(self, min_confidence: float) -> int:
        return len(self.confident_faces(min_confidence))

    def main_face(self, min_confidence: float) -> Face | None:
        """The largest face at or above ``min_confidence``: the one the flags judge."""
        faces = self.confident_faces(min_confidence)
        return max(faces, key=lambda f: f.area) if faces else None

    def embedding_array(self) -> np.ndarray | None:
        if self.embedding is None:
            return None
        import numpy as np

        return np.asarray(self.embedding, dtype=np.float32)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "sha256": self.sha256,
            "width": self.width,
            "height": self.height,
            "faces": [face.to_json() for face in self.faces],
            "embedding": None if self.embedding is None else list(self.embedding),
            "embedding_face": self.embedding_face,
            "embedding_model": self.embedding_model,
            "phash": self.phash,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FaceAnalysis:
        embedding: Sequence[float] | None = data.get("embedding")
        return cls(
            sha256=str(data["sha256"]),
            width=int(data.get("width", 0)),
            height=int(data.get("height", 0)),
            faces=tuple(Face.from_json(f) for f in data.get("faces", ())),
            embedding=None if embedding is None else tuple(float(v) for v in embedding),
            embedding_face=data.get("embedding_face"),
            embedding_model=data.get("embedding_model"),
            phash=data.get("phash"),
            error=data.get("error"),
            # Entries written before versioning existed count as stale (version 0).
            version=int(data.get("version", 0)),
        )

    def is_current(self) -> bool:
        """Made by this version of the analysis (otherwise the caller should redo it)."""
        return self.version == ANALYSIS_VERSION
