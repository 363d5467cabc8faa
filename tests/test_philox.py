"""A1111's "NV" noise source: CUDA's Philox4x32-10 normals computed on the CPU."""

from __future__ import annotations

import math
import struct
import time

import numpy as np
import pytest

from charstudio.engine.philox import PhiloxGenerator, box_muller, philox4x32_10, philox_randn

# Random123's known-answer vectors for Philox4x32-10 (tests/kat_vectors of the Random123
# distribution; the same three are in Random123-Boost's test_philox.cpp and TensorFlow's
# stateful random tests): (counter c0..c3, key k0 k1) -> output words.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize(("counter", "key", "expected"), KAT)
def test_philox4x32_10_matches_random123s_known_answers(
    counter: tuple[int, ...], key: tuple[int, ...], expected: tuple[int, ...]
) -> None:
    words = philox4x32_10(counter, key)  # type: ignore[arg-type]
    assert tuple(int(w) for w in words) == expected
    assert all(w.dtype == np.uint32 for w in words)


def test_philox_is_vectorised_over_counters() -> None:
    counters = [np.array([c[i] for c, _, _ in KAT], dtype=np.uint32) for i in range(4)]
    keys = [np.array([k[i] for _, k, _ in KAT], dtype=np.uint32) for i in range(2)]
    words = philox4x32_10(tuple(counters), tuple(keys))  # type: ignore[arg-type]
    for row, (_, _, expected) in enumerate(KAT):
        assert tuple(int(w[row]) for w in words) == expected


# --- an independent scalar reference: plain Python integers and floats ---------------------

_M = (0xD2511F53, 0xCD9E8D57)
_W = (0x9E3779B9, 0xBB67AE85)


def _reference_philox(counter: list[int], key: list[int]) -> list[int]:
    c, k = list(counter), list(key)
    for round_ in range(10):
        if round_:
            k = [(k[0] + _W[0]) % 2**32, (k[1] + _W[1]) % 2**32]
        hi0, lo0 = divmod(c[0] * _M[0], 2**32)
        hi1, lo1 = divmod(c[2] * _M[1], 2**32)
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0]
    return c


def _f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def _reference_randn(seed: int, count: int, offset: int = 0) -> list[float]:
    # A1111's rng_philox: counter (offset, 0, index, 0), key (seed low, seed high); the first two
    # words through Box–Muller in float64 with float32 constants, kept as float32.
    inv, inv_2pi = _f32(2.3283064e-10), _f32(2.3283064e-10 * 6.2831855)
    out = []
    for index in range(count):
        x, y, _, _ = _reference_philox([offset, 0, index, 0], [seed % 2**32, seed >> 32])
        u = x * inv + inv / 2
        v = y * inv_2pi + inv_2pi / 2
        out.append(_f32(math.sqrt(-2.0 * math.log(u)) * math.sin(v)))
    return out


def test_the_scalar_reference_passes_the_known_answers_too() -> None:
    for counter, key, expected in KAT:
        assert tuple(_reference_philox(list(counter), list(key))) == expected


@pytest.mark.parametrize(
    ("seed", "offset"), [(0, 0), (12345678, 0), (4240233169, 3), (2**40 + 7, 1)]
)
def test_normals_match_the_scalar_reference(seed: int, offset: int) -> None:
    got = philox_randn(seed, (2, 3, 5), offset)
    assert got.dtype == np.float32 and got.shape == (2, 3, 5)
    want = np.array(_reference_randn(seed, 30, offset), dtype=np.float32).reshape(2, 3, 5)
    # numpy's and libm's float64 log/sin may differ in their last bit: at most one float32 ulp.
    np.testing.assert_array_max_ulp(got, want, maxulp=1)


def test_seed_zero_matches_a1111s_documented_nv_output() -> None:
    # The expected output in the docstring of A1111's modules/rng_philox.py for
    # Generator(seed=0).randn((3, 4)) (a generator A1111 describes as producing torch.randn's
    # CUDA outputs on the CPU). That docstring was printed from a Box–Muller with exact float64
    # constants; A1111's code rounds its constants to float32, which moves values by up to ~2e-7.
    documented = [
        [-0.92466259, -0.42534415, -2.6438457, 0.14518388],
        [-0.12086647, -0.57972564, -0.62285122, -0.32838709],
        [-1.07454231, -0.36314407, -1.67105067, 2.26550497],
    ]
    got = PhiloxGenerator(0).randn((3, 4))
    np.testing.assert_allclose(got, documented, rtol=0, atol=5e-7)


def test_generator_offsets_count_draws() -> None:
    g = PhiloxGenerator(77)
    first, second = g.randn((4, 8)), g.randn((4, 8))
    assert g.offset == 2
    assert np.array_equal(first, philox_randn(77, (4, 8), 0))
    assert np.array_equal(second, philox_randn(77, (4, 8), 1))
    assert not np.array_equal(first, second)
    # An element depends on its index only, not on the shape it is drawn in.
    assert np.array_equal(philox_randn(77, (32,)), first.reshape(-1))


def test_a_latent_is_fast_and_standard_normal() -> None:
    philox_randn(1, (4, 64, 64))  # warm up numpy
    start = time.perf_counter()
    noise = philox_randn(4240233169, (4, 64, 64))
    elapsed = time.perf_counter() - start
    assert elapsed < 0.25  # about 2 ms here; generous for loaded CI machines
    assert abs(float(noise.mean())) < 0.03
    assert abs(float(noise.std()) - 1.0) < 0.03
    assert np.isfinite(noise).all()
    # Tails as a normal's: about 4.6% beyond 2 sigma, 0.27% beyond 3.
    assert 0.035 < float(np.mean(np.abs(noise) > 2)) < 0.057
    assert float(np.mean(np.abs(noise) > 3)) < 0.006
    # Different seeds are uncorrelated.
    other = philox_randn(4240233170, (4, 64, 64))
    assert abs(float(np.corrcoef(noise.ravel(), other.ravel())[0, 1])) < 0.03


def test_box_muller_keeps_extreme_words_finite() -> None:
    x = np.array([0, 0xFFFFFFFF, 0, 0xFFFFFFFF], dtype=np.uint32)
    y = np.array([0, 0, 0xFFFFFFFF, 0x40000000], dtype=np.uint32)
    assert np.isfinite(box_muller(x, y)).all()


def test_bad_seeds_are_refused() -> None:
    for bad in (-1, 2**64):
        with pytest.raises(ValueError, match="seed"):
            PhiloxGenerator(bad)
        with pytest.raises(ValueError, match="seed"):
            philox_randn(bad, (2,))


def test_cuda_randn_matches_nv() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    for seed in (0, 12345678, 4240233169):
        generator = torch.Generator("cuda").manual_seed(seed)
        shape = (4, 64, 64)
        cuda = [torch.randn(shape, generator=generator, device="cuda") for _ in range(2)]
        nv = PhiloxGenerator(seed)
        for drawn in cuda:
            # curand's Box–Muller runs in float32: a bit or two of rounding apart.
            np.testing.assert_allclose(drawn.cpu().numpy(), nv.randn(shape), rtol=0, atol=2e-6)
