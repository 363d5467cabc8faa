"""Near-duplicate stacks from perceptual hashes, and the best image of each stack.

The hash is imagehash's pHash with an 8×8 DCT block: 64 bits, stored as 16 hex characters. It
describes the low-frequency layout of the picture, so re-encoding, resizing and light blur move
only a few bits, while a different seed of the same prompt changes the composition and about
half of them. Thumbnails hash like the full images (pHash shrinks to 32×32 first).

Stacks are the connected components of the graph "Hamming distance ≤ ``max_distance``". The
default, :data:`DEFAULT_MAX_DISTANCE` = 6 bits (of 64), is above what JPEG at quality 70,
resizing and a slight blur cost (0–4 bits, measured on scikit-image's photographs) and far
below the distance between unrelated pictures (typically 24–40), so variations stack and
different seeds do not.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "DEFAULT_MAX_DISTANCE",
    "best_of_stack",
    "duplicate_stacks",
    "hamming_distance",
    "perceptual_hash",
    "rejects_from_stacks",
]

K = TypeVar("K", bound=Hashable)

DEFAULT_MAX_DISTANCE = 6
HASH_SIZE = 8
_BLOCK = 1024  # rows per block of the pairwise comparison: bounded memory for big projects


def perceptual_hash(image: Image.Image) -> str:
    """pHash of ``image`` (any mode, any size) as 16 lowercase hex characters."""
    import imagehash

    return str(imagehash.phash(image, hash_size=HASH_SIZE))


def hamming_distance(a: str, b: str) -> int:
    """Number of differing bits between two hex hashes."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]  # path halving keeps the trees flat
        i = parent[i]
    return i


def duplicate_stacks(
    hashes: Mapping[K, str | None], *, max_distance: int = DEFAULT_MAX_DISTANCE
) -> list[list[K]]:
    """Stacks of two or more ids whose hashes are within ``max_distance`` bits, directly or
    through other members (so a stack can hold a chain of gradual variations). Largest stack
    first; within a stack, and between stacks of equal size, the mapping's order is kept.
    Ids whose hash is ``None`` take no part."""
    ids = [key for key, value in hashes.items() if value]
    n = len(ids)
    if n < 2:
        return []
    bits = np.asarray([int(hashes[key], 16) for key in ids], dtype=np.uint64)  # type: ignore[arg-type]
    parent = list(range(n))
    for start in range(0, n, _BLOCK):
        block = bits[start : start + _BLOCK]
        distance = np.bitwise_count(block[:, None] ^ bits[None, :])
        rows, cols = np.nonzero(distance <= max_distance)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + r
            if c > i:
                root_i, root_c = _find(parent, i), _find(parent, c)
                if root_i != root_c:
                    parent[max(root_i, root_c)] = min(root_i, root_c)
    groups: dict[int, list[K]] = {}
    for index, key in enumerate(ids):
        groups.setdefault(_find(parent, index), []).append(key)
    stacks = [members for members in groups.values() if len(members) > 1]
    return sorted(stacks, key=len, reverse=True)


def best_of_stack(stack: Sequence[K], score: Callable[[K], Any]) -> K:
    """The member with the highest ``score`` (any comparable value, e.g. a tuple
    ``(stars, sharpness)``); on a tie the earlier member wins."""
    if not stack:
        raise ValueError("an empty stack has no best image")
    best = stack[0]
    best_score = score(best)
    for key in stack[1:]:
        value = score(key)
        if value > best_score:
            best, best_score = key, value
    return best


def rejects_from_stacks(stacks: Iterable[Sequence[K]], scores: Mapping[K, Any]) -> list[K]:
    """The ids to reject so that each stack keeps only its best image.

    ``scores[id]`` must be comparable across a stack, e.g. ``(stars, sharpness)`` with numbers
    only; an id without a score (or with ``None``) loses to any id with one.
    """

    def score(key: K) -> tuple[bool, Any]:
        value = scores.get(key)
        # (has a score, score): a scored image beats an unscored one without ever comparing a
        # real score against a placeholder.
        return (True, value) if value is not None else (False, 0)

    rejects: list[K] = []
    for stack in stacks:
        keep = best_of_stack(stack, score)
        rejects.extend(key for key in stack if key != keep)
    return rejects
