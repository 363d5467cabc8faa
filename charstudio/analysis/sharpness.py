"""Face sharpness: variance of the Laplacian of a grayscale face crop at a fixed size.

The Laplacian responds to edges and fine texture; blur removes both, so its variance drops
steeply as blur grows. The crop is resized to ``SHARPNESS_EDGE`` × ``SHARPNESS_EDGE`` first so
that a large and a small face of the same crispness score alike (measured on scikit-image's
astronaut: the same face at 1× and 2× scale scores 200 and 174). Faces much smaller than the
fixed size are upscaled and read as softer, which they are for the artist's purposes.

Values are on the 0–255 gray scale. The reference figures behind the default flag threshold
(:class:`charstudio.analysis.flags.FlagThresholds`): the astronaut's face scores about 200;
Gaussian blur of σ = 0.5, 1, 1.5, 2 px (at crop scale) brings it to about 100, 25, 10, 5.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

    from charstudio.analysis.results import Box

__all__ = ["SHARPNESS_EDGE", "face_sharpness", "laplacian_variance"]

SHARPNESS_EDGE = 128


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian over the interior of a 2-D array."""
    a = np.asarray(gray, dtype=np.float32)
    if a.ndim != 2 or min(a.shape) < 3:
        raise ValueError(f"need a 2-D array of at least 3×3, not shape {a.shape}")
    lap = a[1:-1, :-2] + a[1:-1, 2:] + a[:-2, 1:-1] + a[2:, 1:-1] - 4.0 * a[1:-1, 1:-1]
    return float(lap.var(dtype=np.float64))


def face_sharpness(gray_image: Image.Image, box: Box, edge: int = SHARPNESS_EDGE) -> float | None:
    """Sharpness of the part of ``box`` inside ``gray_image`` (mode "L"), or ``None`` when
    that part is too thin to judge (a face almost entirely outside the frame)."""
    from PIL import Image

    width, height = gray_image.size
    left, top = max(0, round(box[0])), max(0, round(box[1]))
    right, bottom = min(width, round(box[2])), min(height, round(box[3]))
    if right - left < 3 or bottom - top < 3:
        return None
    crop = gray_image.crop((left, top, right, bottom))
    # Bilinear with Pillow's antialiasing: a fair area average when shrinking.
    crop = crop.resize((edge, edge), Image.Resampling.BILINEAR)
    return laplacian_variance(np.asarray(crop))
