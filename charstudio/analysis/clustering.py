"""Identity groups: which images show the same person, by agglomerative clustering.

Average linkage on cosine distance (1 − cosine similarity): two groups merge while the mean
distance between their members stays below ``threshold``. Average linkage is less prone than
single linkage to chaining through in-between faces, and less strict than complete linkage
about one odd image in a large group.

Default threshold, :data:`DEFAULT_IDENTITY_DISTANCE` = 0.55. For unit vectors the squared
Euclidean distance is twice the cosine distance. Verification thresholds typical of
FaceNet-style embeddings lie around squared distance 1.0–1.2 (OpenFace measured 0.99 on LFW),
i.e. cosine distance 0.5–0.6, and same-identity pairs generally stay under cosine distance
0.6–0.7. The threshold here applies to *mean* distances between groups, which sit between the
closest and the farthest pair, so the lower part of that range is used: one SD prompt produces
many look-alike strangers, and they should stay apart. The value is a calibrated guess from
published figures, not a measurement on SD images (the reference weights could not be
fetched when it was chosen); it is a parameter, meant to be exposed as a slider.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TypeVar

import numpy as np

from charstudio.analysis.similarity import EmbeddingSet

__all__ = ["DEFAULT_IDENTITY_DISTANCE", "cluster_identities", "cosine_distances"]

K = TypeVar("K", bound=Hashable)

DEFAULT_IDENTITY_DISTANCE = 0.55


def cosine_distances(vectors: np.ndarray) -> np.ndarray:
    """The square matrix of cosine distances between unit rows, clipped to [0, 2]."""
    sims = np.asarray(vectors, dtype=np.float64) @ np.asarray(vectors, dtype=np.float64).T
    dist = np.clip(1.0 - sims, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    return dist


def cluster_identities(
    embeddings: EmbeddingSet[K], *, threshold: float = DEFAULT_IDENTITY_DISTANCE
) -> list[list[K]]:
    """Groups of ids that show the same identity, largest group first; every id with an
    embedding is in exactly one group (a singleton when it resembles no other image). Within a
    group, and between groups of equal size, the set's order is kept."""
    n = len(embeddings)
    if n == 0:
        return []
    if n == 1:
        return [[embeddings.ids[0]]]
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    condensed = squareform(cosine_distances(embeddings.vectors), checks=False)
    tree = linkage(condensed, method="average")
    labels = fcluster(tree, t=threshold, criterion="distance")
    groups: dict[int, list[K]] = {}
    for key, label in zip(embeddings.ids, labels, strict=True):
        groups.setdefault(int(label), []).append(key)
    # dicts keep insertion order (first member's position), and sorted() is stable.
    return sorted(groups.values(), key=len, reverse=True)
