"""The fixed-point helpers against plain scalar transcriptions of gemmlowp's definitions."""

import numpy as np

from microforge.reference import fixedpoint as fp


def srdhm_scalar(a: int, b: int, bits: int = 32) -> int:
    lowest = -(1 << (bits - 1))
    if a == lowest and b == lowest:
        return (1 << (bits - 1)) - 1
    product = a * b
    nudge = (1 << (bits - 2)) if product >= 0 else 1 - (1 << (bits - 2))
    total = product + nudge
    quotient = abs(total) // (1 << (bits - 1))  # C division truncates toward zero
    return quotient if total >= 0 else -quotient


def rdbp_scalar(x: int, exponent: int) -> int:
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def test_doubling_high_mul_matches_gemmlowp_definition():
    rng = np.random.default_rng(0)
    for bits in (32, 16):
        lo, hi = -(1 << (bits - 1)), 1 << (bits - 1)
        a = np.concatenate([rng.integers(lo, hi, 3000), [lo, lo, hi - 1, 0, -1, 1 << (bits - 2)]])
        b = np.concatenate([rng.integers(lo, hi, 3000), [lo, hi - 1, lo, lo, lo, -1]])
        got = fp.saturating_rounding_doubling_high_mul(a, b, bits)
        assert got.tolist() == [srdhm_scalar(int(x), int(y), bits) for x, y in zip(a, b)]


def test_rounding_divide_by_pot_matches_gemmlowp_definition():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.integers(-(2**31), 2**31, 3000), np.arange(-40, 41)])
    e = np.concatenate([rng.integers(0, 31, 3000), np.arange(81) % 6])
    assert fp.rounding_divide_by_pot(x, e).tolist() == [rdbp_scalar(int(v), int(k)) for v, k in zip(x, e)]


def test_quantize_multiplier_round_trips_and_rounds_half_away():
    for m in (0.0, 1e-12, 0.0013301224037636943, 0.5, 0.75, 0.999999999999, 1.0, 3.5):
        q, shift = fp.quantize_multiplier(m)
        if m == 0.0 or m < 2.0**-32:
            assert (q, shift) == (0, 0)
            continue
        assert 1 << 30 <= q < 1 << 31
        assert abs(q * 2.0 ** (shift - 31) - m) <= 2.0 ** (shift - 32)
    assert fp.round_half_away(2.5) == 3 and fp.round_half_away(-2.5) == -3


def test_multiply_by_quantized_multiplier_per_channel_and_left_shift():
    x = np.array([[1000, -1000], [123456, -7]], dtype=np.int64)
    significand = np.array([1 << 30, (1 << 30) + 12345])
    shift = np.array([2, -3])
    got = fp.multiply_by_quantized_multiplier(x, significand, shift)
    for (i, j), v in np.ndenumerate(x):
        left, right = max(shift[j], 0), max(-shift[j], 0)
        want = rdbp_scalar(srdhm_scalar(int(v) * (1 << left), int(significand[j])), right)
        assert got[i, j] == want
