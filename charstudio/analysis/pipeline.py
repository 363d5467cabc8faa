"""Analyze decoded images: detect, measure, embed and hash, a batch at a time.

This is the per-image work of the analysis job without files, threads or progress, so that
tests, the benchmark and single-image tools can use it directly. Numbers are rounded when
results are built (boxes to 1/100 px, embeddings to 6 decimals) so that the stored JSON is
compact and a JSON round trip gives back an equal object.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from charstudio.analysis.duplicates import perceptual_hash
from charstudio.analysis.flags import DEFAULT_THRESHOLDS
from charstudio.analysis.results import Face, FaceAnalysis
from charstudio.analysis.sharpness import face_sharpness

if TYPE_CHECKING:
    from PIL import Image

    from charstudio.analysis.detection import Detection, FaceDetector
    from charstudio.analysis.recognition import Recognizer

__all__ = ["EMBED_MIN_CONFIDENCE", "analyze_batch", "analyze_image"]

# The face that gets an embedding is the largest one a default-threshold flag would count.
EMBED_MIN_CONFIDENCE = DEFAULT_THRESHOLDS.min_confidence


def _face(detection: Detection, gray: Image.Image) -> Face:
    width, height = gray.size
    x1, y1, x2, y2 = (round(v, 2) for v in detection.box)
    return Face(
        box=(x1, y1, x2, y2),
        probability=round(detection.probability, 6),
        landmarks=tuple((round(x, 2), round(y, 2)) for x, y in detection.landmarks),
        area_ratio=round(max(0.0, x2 - x1) * max(0.0, y2 - y1) / (width * height), 5),
        height_ratio=round((y2 - y1) / height, 5),
        sharpness=_rounded(face_sharpness(gray, (x1, y1, x2, y2))),
    )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _embedding_face(faces: Sequence[Face]) -> int | None:
    """Index of the largest face at or above :data:`EMBED_MIN_CONFIDENCE`."""
    candidates = [i for i, face in enumerate(faces) if face.probability >= EMBED_MIN_CONFIDENCE]
    return max(candidates, key=lambda i: faces[i].area) if candidates else None


def analyze_batch(
    images: Sequence[tuple[str, Image.Image]],
    *,
    detector: FaceDetector,
    recognizer: Recognizer | None = None,
    with_phash: bool = True,
) -> list[FaceAnalysis]:
    """One :class:`FaceAnalysis` per ``(sha256, RGB image)``, in order.

    Detection runs batched; the embedding crops of the whole batch go through the recognizer
    together. Pass ``recognizer=None`` (or one that is not available) for no embeddings.
    """
    from charstudio.analysis.recognition import face_crop

    detections = detector.detect_batch([image for _, image in images])
    faces_per_image: list[tuple[Face, ...]] = []
    for (_, image), found in zip(images, detections, strict=True):
        gray = image.convert("L")
        faces_per_image.append(tuple(_face(d, gray) for d in found))

    use_recognizer = recognizer is not None and recognizer.available()
    chosen = [_embedding_face(faces) if use_recognizer else None for faces in faces_per_image]
    vectors: dict[int, tuple[float, ...]] = {}
    if use_recognizer and recognizer is not None:
        wanted = [(i, face) for i, face in enumerate(chosen) if face is not None]
        crops = [face_crop(images[i][1], faces_per_image[i][face].box) for i, face in wanted]
        if crops:
            embedded = recognizer.embed_crops(crops)
            for (i, _), vector in zip(wanted, embedded, strict=True):
                vectors[i] = tuple(round(float(v), 6) for v in vector)

    results = []
    for i, (sha256, image) in enumerate(images):
        results.append(
            FaceAnalysis(
                sha256=sha256,
                width=image.width,
                height=image.height,
                faces=faces_per_image[i],
                embedding=vectors.get(i),
                embedding_face=chosen[i] if i in vectors else None,
                embedding_model=recognizer.model_id if i in vectors and recognizer else None,
                phash=perceptual_hash(image) if with_phash else None,
            )
        )
    return results


def analyze_image(
    image: Image.Image,
    *,
    detector: FaceDetector,
    recognizer: Recognizer | None = None,
    sha256: str = "",
    with_phash: bool = True,
) -> FaceAnalysis:
    """The analysis of one decoded image (converted to RGB when needed)."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    return analyze_batch(
        [(sha256, image)], detector=detector, recognizer=recognizer, with_phash=with_phash
    )[0]
