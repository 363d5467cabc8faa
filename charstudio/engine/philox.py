"""CUDA's ``torch.randn`` on the CPU: A1111's "NV" random number source.

torch draws normal noise on a CUDA device with curand's Philox4x32-10 counter-based generator:
element ``i`` of a fresh generator's first ``randn`` is computed by the thread with
subsequence ``i`` from the counter ``(offset, 0, i_lo, i_hi)`` under the key
``(seed_lo, seed_hi)``; of the four 32-bit words that come out, the first two become one
normal number by the Box–Muller transform (its sine half). A1111's "NV" option
(``modules/rng_philox.py``) computes exactly that on the CPU, with the offset counting
``randn`` calls, so a seed gives the same noise with or without an NVIDIA GPU. This module
computes what A1111's NV computes, vectorised with numpy: a 4×64×64 latent takes about a
millisecond.

How close is this to the GPU? The integer part is bit-exact; A1111 does the Box–Muller step
in float64 and rounds to float32 while curand does it in float32 with CUDA's ``logf``/
``sinf``, so a value can differ from the GPU's in its last float32 bit or two (about 1e-7):
far too little to change how a picture looks, though pixels need not be bit-identical.
This layout is torch's while the GPU runs one thread per element: 16384 threads (a 512×512
latent) on any CUDA GPU, but a 1024×1024 latent needs 65536, more than small GPUs run at once,
and there torch spreads elements over fewer threads (one reason A1111's "GPU" noise differs
between cards; NV does not).

Importing this module is cheap: numpy loads on first use.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["PhiloxGenerator", "box_muller", "philox4x32_10", "philox_randn"]

_MASK32 = 0xFFFFFFFF
# Philox4x32 round multipliers and Weyl key increments (Salmon et al. 2011, Random123).
_M0, _M1 = 0xD2511F53, 0xCD9E8D57
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_ROUNDS = 10
# A1111's Box–Muller constants: 2**-32 and 2π·2**-32 as float32 literals.
_TWO_POW32_INV = 2.3283064e-10
_TWO_POW32_INV_2PI = 2.3283064e-10 * 6.2831855


def philox4x32_10(
    counter: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | tuple[int, int, int, int],
    key: tuple[np.ndarray, np.ndarray] | tuple[int, int],
    rounds: int = _ROUNDS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Philox4x32 (10 rounds by default) of counter words ``c0..c3`` under key words
    ``k0, k1``; each word is a uint32 array (or an int), all broadcast together."""
    import numpy as np

    c0, c1, c2, c3 = (np.asarray(word, dtype=np.uint64) & _MASK32 for word in counter)
    k0, k1 = (np.asarray(word, dtype=np.uint64) & _MASK32 for word in key)
    for index in range(rounds):
        if index:
            k0 = (k0 + _W0) & _MASK32
            k1 = (k1 + _W1) & _MASK32
        # uint64 holds a 32×32-bit product exactly: high and low words by shift and mask.
        product0 = c0 * _M0
        product1 = c2 * _M1
        c0, c1, c2, c3 = (
            (product1 >> 32) ^ c1 ^ k0,
            product1 & _MASK32,
            (product0 >> 32) ^ c3 ^ k1,
            product0 & _MASK32,
        )
    return tuple(word.astype(np.uint32) for word in (c0, c1, c2, c3))  # type: ignore[return-value]


def box_muller(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """One normal number per pair of uint32 words (the sine half), as A1111's NV source
    computes it: in float64 with float32 constants, rounded to float32 at the end."""
    import numpy as np

    inv = np.float64(np.float32(_TWO_POW32_INV))
    inv_2pi = np.float64(np.float32(_TWO_POW32_INV_2PI))
    # The half-step offsets are halved in float32 (exact), then added in float64.
    u = x.astype(np.float64) * inv + inv / 2
    v = y.astype(np.float64) * inv_2pi + inv_2pi / 2
    return (np.sqrt(-2.0 * np.log(u)) * np.sin(v)).astype(np.float32)


def philox_randn(seed: int, shape: tuple[int, ...], offset: int = 0) -> np.ndarray:
    """float32 normals of ``shape``: the ``offset``-th ``randn`` of a CUDA generator seeded
    ``seed`` (offset 0: its first draw)."""
    import numpy as np

    seed = operator.index(seed)
    offset = operator.index(offset)
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), not {seed}")
    if not 0 <= offset < 2**32:
        raise ValueError(f"offset must be in [0, 2**32), not {offset}")
    count = 1
    for size in shape:
        count *= operator.index(size)
    index = np.arange(count, dtype=np.uint64)
    words = philox4x32_10((offset, 0, index & _MASK32, index >> 32), (seed & _MASK32, seed >> 32))
    return box_muller(words[0], words[1]).reshape(shape)


class PhiloxGenerator:
    """A seeded stream of normal tensors: each :meth:`randn` is the next CUDA draw.

    Like A1111's ``rng_philox.Generator`` (and a CUDA ``torch.Generator`` for tensors that fit
    one pass of the GPU's threads), every call advances the counter's offset word by one.
    """

    def __init__(self, seed: int) -> None:
        seed = operator.index(seed)
        if not 0 <= seed < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), not {seed}")
        self.seed = seed
        self.offset = 0

    def randn(self, shape: tuple[int, ...]) -> np.ndarray:
        noise = philox_randn(self.seed, tuple(shape), self.offset)
        self.offset += 1
        return noise

    def __repr__(self) -> str:
        return f"PhiloxGenerator(seed={self.seed}, offset={self.offset})"
