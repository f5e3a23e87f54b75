"""Integer requantization exactly as TFLite Micro's reference kernels do it, vectorised over numpy arrays.

TFLite represents a real multiplier M as a 32-bit fixed-point significand in [2^30, 2^31) and a power-of-
two exponent: M = significand * 2^(shift - 31). Applying it to an int32 accumulator takes a doubling
high multiply that rounds half away from zero, then a right shift that rounds half away from zero
("double rounding", the TFLM default). Every function here takes int64 arrays holding int32 values and
returns the same, so the arithmetic never silently wraps in numpy.
"""

from __future__ import annotations

import math

import numpy as np

from microforge.errors import ModelError

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def round_half_away(value: float) -> int:
    """std::round: halves go away from zero (Python's round() goes to even)."""
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def quantize_multiplier(multiplier: float) -> tuple[int, int]:
    """Split a positive real multiplier into (int32 significand, shift) like TFLite's QuantizeMultiplier."""
    if multiplier == 0.0:
        return 0, 0
    if not math.isfinite(multiplier) or multiplier < 0:
        raise ModelError(f"quantization multiplier {multiplier!r} is not a finite non-negative number")
    fraction, shift = math.frexp(multiplier)
    significand = round_half_away(fraction * (1 << 31))
    if significand == 1 << 31:
        significand //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        raise ModelError(f"quantization multiplier {multiplier!r} is too large (needs shift {shift} > 30)")
    return significand, shift


def quantize_multipliers(multipliers) -> tuple[np.ndarray, np.ndarray]:
    """`quantize_multiplier` over a sequence; returns int64 arrays (significands, shifts)."""
    pairs = [quantize_multiplier(float(m)) for m in np.atleast_1d(multipliers)]
    return (np.array([p[0] for p in pairs], dtype=np.int64), np.array([p[1] for p in pairs], dtype=np.int64))


def saturating_rounding_doubling_high_mul(a, b, bits: int = 32) -> np.ndarray:
    """gemmlowp's SaturatingRoundingDoublingHighMul for int32 (bits=32) or int16 (bits=16) operands.

    gemmlowp adds a nudge of +-2^(bits-2) and divides by 2^(bits-1) truncating toward zero; for both signs
    that equals adding 2^(bits-2) and shifting right arithmetically (floor), which numpy does in two passes.
    The one product that overflows (lowest * lowest) saturates.
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    high = (a * b + (1 << (bits - 2))) >> (bits - 1)
    lowest = -(1 << (bits - 1))
    overflow = (a == lowest) & (b == lowest)
    if overflow.any():
        high = np.where(overflow, (1 << (bits - 1)) - 1, high)
    return high


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    """gemmlowp's RoundingDivideByPOT: x / 2^exponent rounded half away from zero.

    gemmlowp compares the remainder with a sign-dependent threshold; adding half minus one for negative x
    and shifting right (floor) gives the same result in fewer passes.
    """
    x = np.asarray(x, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    half = (np.int64(1) << exponent) >> 1
    return (x + half - ((x < 0) & (exponent > 0))) >> exponent


def wrap_int32(x) -> np.ndarray:
    """Two's-complement wrap of int64 values to int32 range, as C int32 arithmetic does."""
    x = np.asarray(x, dtype=np.int64)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def multiply_by_quantized_multiplier(x, significand, shift) -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplier; significand/shift broadcast against x (per channel).

    The hot path of every int8 kernel, so it runs in place on one int64 array: the significands are
    non-negative (quantize_multiplier never makes INT32_MIN), so the doubling high multiply cannot
    saturate and is a multiply, an add and a shift.
    """
    x = np.array(x, dtype=np.int64)  # a copy we may overwrite
    significand = np.asarray(significand, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    if np.any(significand < 0):
        raise ModelError("quantized multipliers must be non-negative")
    if np.any(shift > 0):  # multipliers above one are rare: skip the left-shift pass when there are none
        x = wrap_int32(x << np.maximum(shift, 0))
    x *= significand
    x += 1 << 30
    x >>= 31
    exponent = np.maximum(-shift, 0)
    if np.all(exponent > 0):  # rounding_divide_by_pot, fused: add half minus one for negatives, shift
        negative = x < 0
        x += (np.int64(1) << exponent) >> 1
        x -= negative
        x >>= exponent
        return x
    return rounding_divide_by_pot(x, exponent)


def quantize_in_float32(value: float, scale: float, zero_point: int) -> int:
    """zero_point + round(value / scale) with the division done in float32, as TFLite's kernels do."""
    return zero_point + round_half_away(float(np.float32(value) / np.float32(scale)))


def activation_range_quantized(activation: str, scale: float, zero_point: int, dtype) -> tuple[int, int]:
    """TFLite's CalculateActivationRangeQuantized: the clamp [lo, hi] a fused activation means in int8."""
    info = np.iinfo(dtype)
    lo, hi = int(info.min), int(info.max)
    if activation == "NONE":
        return lo, hi
    if activation == "RELU":
        return max(lo, quantize_in_float32(0.0, scale, zero_point)), hi
    if activation == "RELU6":
        return max(lo, quantize_in_float32(0.0, scale, zero_point)), min(hi, quantize_in_float32(6.0, scale, zero_point))
    if activation == "RELU_N1_TO_1":
        return max(lo, quantize_in_float32(-1.0, scale, zero_point)), min(hi, quantize_in_float32(1.0, scale, zero_point))
    raise ModelError(f"fused activation {activation} is not supported for quantized ops")


def activation_range_float(activation: str) -> tuple[float, float]:
    """The clamp a fused activation means for float32 ops."""
    ranges = {
        "NONE": (-np.inf, np.inf),
        "RELU": (0.0, np.inf),
        "RELU6": (0.0, 6.0),
        "RELU_N1_TO_1": (-1.0, 1.0),
    }
    if activation not in ranges:
        raise ModelError(f"fused activation {activation} is not supported for float ops")
    return ranges[activation]


def q15_multiplier(significand, shift) -> tuple[np.ndarray, np.ndarray]:
    """TFLite's int64-accumulator form of a (Q31 significand, shift) multiplier: the significand rounded to
    Q15 ((m + 2^15) >> 16, saturating at 0x7FFF) and one total right shift of 15 - shift bits."""
    significand = np.asarray(significand, dtype=np.int64)
    reduced = np.where(significand < 0x7FFF0000, (significand + (1 << 15)) >> 16, 0x7FFF)
    return reduced.astype(np.int64), (15 - np.asarray(shift, dtype=np.int64)).astype(np.int64)


def multiply_by_quantized_multiplier_int64(x, significand, shift) -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplier for an int64 accumulator (the int16x8 conv/FC path).

    Not the int32 rule widened: TFLite first rounds the Q31 significand to Q15 ((m + 2^15) >> 16,
    saturating at 0x7FFF), then does a single rounding right shift by 15 - shift bits (adding half,
    flooring: halves go up, not away from zero), and truncates the result to int32 as C's cast does.
    x must lie within +-2^47 and shift below 8 for TFLite's own precondition; numpy's int64 then
    holds x * multiplier exactly.
    """
    x = np.asarray(x, dtype=np.int64)
    significand = np.asarray(significand, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    if np.any(significand < 0) or np.any(shift > 7):
        raise ModelError("int64 quantized multipliers must be non-negative with a shift below 8")
    reduced, total_shift = q15_multiplier(significand, shift)
    return wrap_int32((x * reduced + (np.int64(1) << (total_shift - 1))) >> total_shift)
