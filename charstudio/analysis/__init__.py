"""Image analysis for culling: faces, culling flags, identity look-alikes, near duplicates.

* :mod:`~charstudio.analysis.detection` — MTCNN face detection (boxes, landmarks, scores).
* :mod:`~charstudio.analysis.sharpness` — variance of Laplacian of a face crop.
* :mod:`~charstudio.analysis.results` — :class:`FaceAnalysis`, the JSON-cacheable result.
* :mod:`~charstudio.analysis.flags` — ``no-face``, ``several-faces``, ``cut-off``,
  ``small-face``, ``blurry-face`` as a pure function of a result and :class:`FlagThresholds`.
* :mod:`~charstudio.analysis.weights` / :mod:`~charstudio.analysis.recognition` — FaceNet
  (VGGFace2) identity embeddings from a checked weights file.
* :mod:`~charstudio.analysis.similarity` / :mod:`~charstudio.analysis.clustering` — look-alike
  ranking against the picks and identity groups (numpy, scipy).
* :mod:`~charstudio.analysis.duplicates` — pHash stacks and the best image of each stack.
* :mod:`~charstudio.analysis.pipeline` / :mod:`~charstudio.analysis.job` — the analysis of
  decoded images, and the incremental, cancellable ``analyze`` job over files.

Importing any of these is cheap: torch, facenet-pytorch, imagehash, Pillow and scipy load
inside the functions that use them.
"""

from charstudio.analysis.clustering import DEFAULT_IDENTITY_DISTANCE, cluster_identities
from charstudio.analysis.detection import Detection, FaceDetector, default_device
from charstudio.analysis.duplicates import (
    DEFAULT_MAX_DISTANCE,
    duplicate_stacks,
    hamming_distance,
    perceptual_hash,
    rejects_from_stacks,
)
from charstudio.analysis.flags import ALL_FLAGS, FlagThresholds, face_flags
from charstudio.analysis.job import AnalysisReport, analyze_images, is_stale
from charstudio.analysis.pipeline import analyze_batch, analyze_image
from charstudio.analysis.recognition import Recognizer, RecognizerUnavailable
from charstudio.analysis.results import ANALYSIS_VERSION, Face, FaceAnalysis
from charstudio.analysis.similarity import EmbeddingSet, lookalike_scores, rank_by_similarity
from charstudio.analysis.weights import download_weights, weights_path

__all__ = [
    "ALL_FLAGS",
    "ANALYSIS_VERSION",
    "DEFAULT_IDENTITY_DISTANCE",
    "DEFAULT_MAX_DISTANCE",
    "AnalysisReport",
    "Detection",
    "EmbeddingSet",
    "Face",
    "FaceAnalysis",
    "FaceDetector",
    "FlagThresholds",
    "Recognizer",
    "RecognizerUnavailable",
    "analyze_batch",
    "analyze_image",
    "analyze_images",
    "cluster_identities",
    "default_device",
    "download_weights",
    "duplicate_stacks",
    "face_flags",
    "hamming_distance",
    "is_stale",
    "lookalike_scores",
    "perceptual_hash",
    "rank_by_similarity",
    "rejects_from_stacks",
    "weights_path",
]
