"""Culling flags derived from a stored :class:`FaceAnalysis`.

:func:`face_flags` is a pure function of the stored result and a :class:`FlagThresholds`, so the
artist can move a threshold and see the flags change at once, without detecting again. The
flags mirror the first culling passes of the workflow: face off-screen, several people, face
too small for the character to read, a soft or smeared face.

``cut-off``, ``small-face`` and ``blurry-face`` judge the *main* face: the largest face at or
above ``min_confidence``. ``several-faces`` counts every face at or above it.
"""

from __future__ import annotations

from dataclasses import dataclass

from charstudio.analysis.results import Face, FaceAnalysis

__all__ = [
    "ALL_FLAGS",
    "BLURRY_FACE",
    "CUT_OFF",
    "DEFAULT_THRESHOLDS",
    "NO_FACE",
    "SEVERAL_FACES",
    "SMALL_FACE",
    "FlagThresholds",
    "face_flags",
    "is_cut_off",
]

NO_FACE = "no-face"
SEVERAL_FACES = "several-faces"
CUT_OFF = "cut-off"
SMALL_FACE = "small-face"
BLURRY_FACE = "blurry-face"
ALL_FLAGS = (NO_FACE, SEVERAL_FACES, CUT_OFF, SMALL_FACE, BLURRY_FACE)


@dataclass(frozen=True)
class FlagThresholds:
    """Thresholds behind the flags, with the defaults the app ships.

    * ``min_confidence`` 0.90: MTCNN's final-stage probability for a detection to count as a
      face (MTCNN itself keeps candidates from 0.7). 0.9 is also facenet-pytorch's own default
      for its "largest over threshold" selection. A clear portrait face scores above 0.999
      (the astronaut: 0.99999); spurious detections on hair, fabric or texture score lower.
    * ``border_margin`` 0.01: the main face is ``cut-off`` when its box comes within 1 % of the
      image's width/height of an edge (or passes it), or a landmark lies outside the image. MTCNN
      boxes span roughly brow to chin, so a box touching the frame means face is missing.
    * ``min_face_height`` 0.15: ``small-face`` below 15 % of the image height (77 px at 512). SD
      1.5 draws faces in a 64×64 latent; a face under about 10 latent pixels tall comes out
      mangled and is too small to teach an embedding the character.
    * ``min_sharpness`` 15: ``blurry-face`` below this variance of Laplacian (128-px crop).
      Calibrated on scikit-image's astronaut (sharp ≈ 200; Gaussian σ 1 px at crop scale ≈ 25,
      σ 1.5 ≈ 10): it flags blur clearly stronger than about σ 1.2 px per 128 px of face, i.e.
      visibly smeared faces, and leaves SD's slightly soft VAE output alone.
    """

    min_confidence: float = 0.90
    border_margin: float = 0.01
    min_face_height: float = 0.15
    min_sharpness: float = 15.0


DEFAULT_THRESHOLDS = FlagThresholds()


def is_cut_off(face: Face, width: int, height: int, margin: float) -> bool:
    """The face box reaches within ``margin`` (fraction of the image side) of an edge, or a
    landmark lies outside the image."""
    x1, y1, x2, y2 = face.box
    mx, my = margin * width, margin * height
    if x1 < mx or y1 < my or x2 > width - mx or y2 > height - my:
        return True
    return any(not (0 <= x <= width and 0 <= y <= height) for x, y in face.landmarks)


def face_flags(
    analysis: FaceAnalysis, thresholds: FlagThresholds = DEFAULT_THRESHOLDS
) -> tuple[str, ...]:
    """The flags that apply to ``analysis``, in :data:`ALL_FLAGS` order.

    An error entry (unreadable file) has no flags: there is nothing known about its content.
    """
    if not analysis.ok:
        return ()
    faces = analysis.confident_faces(thresholds.min_confidence)
    if not faces:
        return (NO_FACE,)
    flags: list[str] = []
    if len(faces) > 1:
        flags.append(SEVERAL_FACES)
    main = max(faces, key=lambda f: f.area)
    if is_cut_off(main, analysis.width, analysis.height, thresholds.border_margin):
        flags.append(CUT_OFF)
    if main.height_ratio < thresholds.min_face_height:
        flags.append(SMALL_FACE)
    if main.sharpness is not None and main.sharpness < thresholds.min_sharpness:
        flags.append(BLURRY_FACE)
    return tuple(flags)
