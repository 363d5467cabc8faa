"""Face-aware crops of training images (optional, as FaceChain prepares its photos).

Each image's largest confident face (MTCNN, :mod:`charstudio.analysis.detection`) is cut out as
a square around the face box with ``margin`` of the face's size on every side (hair and chin
stay in), turned upright so the eyes lie level (the angle of the line between MTCNN's two eye
landmarks), and resized to the training size: one affine resampling does rotation, crop and
scaling at once, so the picture is resampled only once. A square reaching past the image is
moved inside it, then made smaller (never below the face plus a tenth): the face is then off
centre rather than framed by a filled border the model would learn. Only when even that does
not fit is the rest filled with the image's mean colour, and the crop says so.

Images with no face, or with several faces, are flagged (:attr:`FaceCrop.problem`) so the
trainer or the Train panel can show them before training starts; with several faces the
largest is still cropped, since the artist may accept it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

    from charstudio.analysis.detection import Detection, FaceDetector

__all__ = [
    "DEFAULT_MARGIN",
    "NO_FACE",
    "SEVERAL_FACES",
    "FaceCrop",
    "crop_face",
    "face_crops",
    "problems_report",
    "save_face_crops",
]

DEFAULT_MARGIN = 0.6  # of the face box's size, on each side: the square is 2.2 faces wide
MIN_CONFIDENCE = 0.9  # the analysis flags' threshold (charstudio.analysis.flags)
NO_FACE = "no face"
SEVERAL_FACES = "several faces"


@dataclass
class FaceCrop:
    """The crop of one image, or why there is none."""

    source: str  # the image's path (or a label)
    faces: int  # confident faces found
    image: Image.Image | None = None  # the crop; None when no face was found
    angle: float = 0.0  # degrees the face was turned to stand upright
    center: tuple[float, float] | None = None  # the crop's centre in the source image
    side: float = 0.0  # the crop's side in source pixels
    padded: bool = False  # the square reached past the image's edges

    @property
    def problem(self) -> str | None:
        """``NO_FACE``, ``SEVERAL_FACES`` or None."""
        if self.faces == 0:
            return NO_FACE
        if self.faces > 1:
            return SEVERAL_FACES
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "faces": self.faces,
            "problem": self.problem,
            "angle": round(self.angle, 2),
            "padded": self.padded,
        }


def eye_angle(detection: Detection) -> float:
    """The tilt of the eye line in degrees (image coordinates: positive when the eye on the
    image's right is lower). MTCNN lists the image-left eye first."""
    (lx, ly), (rx, ry) = detection.landmarks[0], detection.landmarks[1]
    return math.degrees(math.atan2(ry - ly, rx - lx))


def crop_face(
    image: Image.Image,
    detection: Detection,
    size: int,
    *,
    margin: float = DEFAULT_MARGIN,
) -> tuple[Image.Image, float, tuple[float, float], float, bool]:
    """(crop, angle, centre, side, padded): the ``size``-pixel square around ``detection``."""
    from PIL import Image, ImageStat

    x1, y1, x2, y2 = detection.box
    face = max(x2 - x1, y2 - y1)
    side = face * (1 + 2 * margin)
    angle = eye_angle(detection) if len(detection.landmarks) >= 2 else 0.0
    theta = math.radians(angle)
    cos, sin = math.cos(theta), math.sin(theta)
    # The turned square's extent around its centre: shift it (then shrink it, down to the
    # face plus a tenth) to stay inside the picture, since a filled border would be learnt.
    reach = (abs(cos) + abs(sin)) / 2
    side = max(min(side, min(image.width, image.height) / (2 * reach)), min(side, face * 1.1))
    half_extent = side * reach
    cx = _clamp((x1 + x2) / 2, half_extent, image.width - half_extent)
    cy = _clamp((y1 + y2) / 2, half_extent, image.height - half_extent)
    k = side / size
    half = size / 2
    # Output pixel (u, v) samples the source at centre + R(theta) · k (u - half, v - half):
    # the crop's x axis runs along the eye line, so the face comes out upright.
    coefficients = (
        k * cos, -k * sin, cx - k * half * (cos - sin),
        k * sin, k * cos, cy - k * half * (sin + cos),
    )  # fmt: skip
    eps = 1e-6
    padded = (
        cx - half_extent < -eps
        or cy - half_extent < -eps
        or cx + half_extent > image.width + eps
        or cy + half_extent > image.height + eps
    )
    fill = tuple(round(v) for v in ImageStat.Stat(image).mean[:3])
    crop = image.transform(
        (size, size),
        Image.Transform.AFFINE,
        coefficients,
        resample=Image.Resampling.BICUBIC,
        fillcolor=fill,
    )
    return crop, angle, (cx, cy), side, padded


def _clamp(value: float, low: float, high: float) -> float:
    """``value`` within [low, high]; the middle when the range is empty (too big to fit)."""
    if low > high:
        return (low + high) / 2
    return min(max(value, low), high)


def face_crops(
    images: Sequence[Path | str | Image.Image],
    *,
    size: int = 512,
    margin: float = DEFAULT_MARGIN,
    detector: FaceDetector | None = None,
) -> list[FaceCrop]:
    """A :class:`FaceCrop` per image, in order (files are read upright, in RGB)."""
    from PIL import Image

    from charstudio.analysis.detection import FaceDetector
    from charstudio.analysis.job import load_rgb

    if size < 8:
        raise ValueError(f"crop size {size}: must be at least 8 pixels")
    if margin < 0:
        raise ValueError(f"margin {margin}: must not be negative")
    detector = detector or FaceDetector()
    loaded: list[tuple[str, Image.Image]] = []
    for item in images:
        if isinstance(item, Image.Image):
            loaded.append(("image", item.convert("RGB") if item.mode != "RGB" else item))
        else:
            try:
                loaded.append((str(item), load_rgb(item)))
            except OSError as exc:
                raise ValueError(f"{item}: cannot be read as an image ({exc})") from exc
    found = detector.detect_batch([image for _, image in loaded])
    out: list[FaceCrop] = []
    for (label, image), detections in zip(loaded, found, strict=True):
        confident = [d for d in detections if d.probability >= MIN_CONFIDENCE]
        if not confident:
            out.append(FaceCrop(label, 0))
            continue
        crop, angle, center, side, padded = crop_face(image, confident[0], size, margin=margin)
        out.append(FaceCrop(label, len(confident), crop, angle, center, side, padded))
    return out


def problems_report(crops: Sequence[FaceCrop]) -> list[str]:
    """One line per image to look at before training: no face, several faces, padded."""
    lines = []
    for crop in crops:
        name = Path(crop.source).name
        if crop.problem == NO_FACE:
            lines.append(f"{name}: no face found; it would be trained on as it is")
        elif crop.problem == SEVERAL_FACES:
            lines.append(f"{name}: {crop.faces} faces; the largest was cropped")
        elif crop.padded:
            lines.append(f"{name}: the face is near the edge; the crop was filled out")
    return lines


def save_face_crops(crops: Sequence[FaceCrop], folder: Path | str) -> list[Path]:
    """Write each crop as ``<source stem>.png`` in ``folder`` (atomically); images without a
    face are skipped. Returns the files written."""
    import io

    from charstudio.atomic_files import write_bytes_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index, crop in enumerate(crops):
        if crop.image is None:
            continue
        stem = Path(crop.source).stem if crop.source != "image" else f"face-{index:04d}"
        buffer = io.BytesIO()
        crop.image.save(buffer, format="PNG")
        target = folder / f"{stem}.png"
        write_bytes_atomic(target, buffer.getvalue())
        written.append(target)
    return written
