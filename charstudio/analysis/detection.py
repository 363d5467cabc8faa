"""Face detection with facenet-pytorch's MTCNN (its weights ship inside the package).

Detection runs on a copy whose longest side is ``detect_edge`` (320 by default) and the boxes
and landmarks are scaled back to the full image. MTCNN's cost grows with its image pyramid,
i.e. with the ratio of image size to ``min_face_size``. On 2 CPU cores a 512×512 portrait
takes about 47 ms at full size and 28 ms at 320 px (``benchmarks/analyze_bench.py``), with
boxes within a few pixels of each other. At 320 px with ``min_face_size`` 20 the smallest
detectable face is 6 % of the longest side, far below the ``small-face`` flag's 15 %.

Images of equal size are detected in batches (MTCNN stacks them into one tensor), which
saved about 20 % per image at 320 px (34 → 27 ms on the astronaut photograph). torch and
facenet-pytorch load on first use.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

    from charstudio.analysis.results import Box, Point

__all__ = [
    "DEFAULT_DETECT_EDGE",
    "DEFAULT_MIN_FACE_SIZE",
    "Detection",
    "FaceDetector",
    "default_device",
]

DEFAULT_DETECT_EDGE = 320
DEFAULT_MIN_FACE_SIZE = 20  # pixels at detection size; MTCNN's own default
DEFAULT_BATCH_SIZE = 8


@dataclass(frozen=True)
class Detection:
    box: Box
    probability: float
    landmarks: tuple[Point, ...]

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


def default_device() -> str:
    """``"cuda"`` when a CUDA GPU is usable, else ``"cpu"``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def detection_size(size: tuple[int, int], edge: int | None) -> tuple[int, int]:
    """The size an image of ``size`` is detected at: longest side ``edge``, never enlarged."""
    width, height = size
    if edge is None or max(width, height) <= edge:
        return width, height
    scale = edge / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


class FaceDetector:
    """MTCNN with ``keep_all=True`` on CUDA when available, else the CPU.

    Not thread-safe for concurrent calls from several threads; one job uses one detector.
    """

    def __init__(
        self,
        *,
        device: str | None = None,
        detect_edge: int | None = DEFAULT_DETECT_EDGE,
        min_face_size: int = DEFAULT_MIN_FACE_SIZE,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, not {batch_size}")
        self._device = device
        self.detect_edge = detect_edge
        self.min_face_size = min_face_size
        self.batch_size = batch_size
        self._mtcnn: Any = None
        self._lock = threading.Lock()

    @property
    def device(self) -> str:
        if self._device is None:
            self._device = default_device()
        return self._device

    def _model(self) -> Any:
        with self._lock:
            if self._mtcnn is None:
                from facenet_pytorch import MTCNN

                self._mtcnn = MTCNN(
                    keep_all=True, min_face_size=self.min_face_size, device=self.device
                ).eval()
            return self._mtcnn

    def detect(self, image: Image.Image) -> list[Detection]:
        """Faces in one RGB image, largest first."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        """Faces in each of ``images`` (RGB), largest first, in full-image coordinates.

        Images are downscaled for detection and grouped by detection size into batches.
        """
        from PIL import Image

        results: list[list[Detection]] = [[] for _ in images]
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        small: list[Image.Image] = []
        for index, image in enumerate(images):
            if image.mode != "RGB":
                raise ValueError(f"detection needs RGB images, not mode {image.mode!r}")
            size = detection_size(image.size, self.detect_edge)
            small.append(
                image if size == image.size else image.resize(size, Image.Resampling.BILINEAR)
            )
            # MTCNN's pyramid is empty (and it fails) below its smallest face: nothing to find.
            if min(size) >= self.min_face_size:
                groups[size].append(index)
        model = self._model()
        for size, indices in groups.items():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                boxes, probs, points = model.detect([small[i] for i in chunk], landmarks=True)
                for slot, index in enumerate(chunk):
                    sx = images[index].width / size[0]
                    sy = images[index].height / size[1]
                    results[index] = _detections(boxes[slot], probs[slot], points[slot], sx, sy)
        return results


def _detections(boxes: Any, probs: Any, points: Any, sx: float, sy: float) -> list[Detection]:
    """MTCNN's per-image arrays (``None`` when nothing was found), scaled by (sx, sy)."""
    if boxes is None:
        return []
    import numpy as np

    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 5, 2)
    found = [
        Detection(
            box=(float(box[0] * sx), float(box[1] * sy), float(box[2] * sx), float(box[3] * sy)),
            probability=float(prob),
            landmarks=tuple((float(x * sx), float(y * sy)) for x, y in pts),
        )
        for box, prob, pts in zip(boxes, probs, points, strict=True)
    ]
    found.sort(key=lambda d: d.area, reverse=True)
    return found
