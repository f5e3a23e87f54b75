"""Reference activation kernels: SOFTMAX, LOGISTIC, HARD_SWISH, RELU, RELU6, TANH, LEAKY_RELU, RSQRT (int8 and
float32; SOFTMAX, RELU and RELU6 also int16).

The int8 kernels reproduce TFLite Micro's reference kernels bit for bit. SOFTMAX and LOGISTIC use
gemmlowp's fixed-point exp and 1/(1+x) (TFLM's kernels/internal/fixedpoint.h), written here over int64
numpy arrays holding int32 values, and TANH gemmlowp's tanh on the same functions; RSQRT uses TFLite's
fixed-point inverse square root (GetInvSqrtQuantizedMultiplierExp); HARD_SWISH uses TFLM's int16
fixed-point steps. int16 SOFTMAX uses TFLM's two 513-entry interpolated tables of exp and 1/(1+x), built
here by TFLM's float32 recipe. int16 LOGISTIC is not supported: TFLM reads a hard-coded 256-entry sigmoid
table that no simple formula reproduces.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from microforge.errors import ModelError, UnsupportedError
from microforge.graph.ir import Op, Tensor
from microforge.reference.checks import (
    check_arity,
    check_dtypes,
    check_output_shape,
    check_per_tensor,
    multiplier_for,
)
from microforge.reference.fixedpoint import (
    INT32_MAX,
    INT32_MIN,
    multiply_by_quantized_multiplier,
    quantize_in_float32,
    round_half_away,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
    wrap_int32,
)
from microforge.reference.quantize import round_half_away_array
from microforge.reference.registry import kernel

INT8_MIN, INT8_MAX = -128, 127
INT16_MIN, INT16_MAX = -(2**15), 2**15 - 1
srdhm = saturating_rounding_doubling_high_mul

# ----------------------------------------------------------------------------------------------------------
# gemmlowp fixed point on int64 arrays holding int32 raw values. A Qm value has m integer bits.


def _multiply_by_pot(x: np.ndarray, exponent: int) -> np.ndarray:
    """gemmlowp SaturatingRoundingMultiplyByPOT: saturating left shift, or rounding right shift."""
    if exponent < 0:
        return rounding_divide_by_pot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, x << exponent))


def _rounding_half_sum(a: np.ndarray, b) -> np.ndarray:
    """gemmlowp RoundingHalfSum for int32: (a + b + sign) / 2 with C's truncating division."""
    total = a + b + np.where(a + b >= 0, 1, -1)
    return np.where(total >= 0, total // 2, -((-total) // 2))


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a: np.ndarray) -> np.ndarray:
    """exp(a) for Q0 a in [-1/4, 0): a Taylor expansion around -1/8."""
    constant_term = 1895147668  # exp(-1/8) in Q0
    one_third = 715827883
    x = a + (1 << 28)  # x = a + 1/8
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    poly = rounding_divide_by_pot(srdhm(x4_over_4 + x3, one_third) + x2, 1)  # x^4/24 + x^3/6 + x^2/2
    return constant_term + srdhm(constant_term, x + poly)


# exp(-2^k) in Q0 for the barrel shifter of exp_on_negative_values, k = -2 .. 4.
_EXP_OF_MINUS_POWERS_OF_TWO = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
                               (2, 39332535), (3, 720401), (4, 242))


def _exp_on_negative_values(a: np.ndarray, integer_bits: int) -> np.ndarray:
    """gemmlowp exp_on_negative_values: Q`integer_bits` a <= 0 -> Q0 exp(a)."""
    fractional_bits = 31 - integer_bits
    one_quarter = 1 << (fractional_bits - 2)
    a_mod_quarter_minus_quarter = (a & (one_quarter - 1)) - one_quarter
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        _multiply_by_pot(a_mod_quarter_minus_quarter, integer_bits))  # Rescale to Q0
    remainder = a_mod_quarter_minus_quarter - a
    for exponent, multiplier in _EXP_OF_MINUS_POWERS_OF_TWO:
        if integer_bits > exponent:
            bit = 1 << (fractional_bits + exponent)
            result = np.where(remainder & bit, srdhm(result, multiplier), result)
    if integer_bits > 5:  # below -32 the result is flushed to zero
        result = np.where(a < -(1 << (36 - integer_bits)), 0, result)
    return np.where(a == 0, INT32_MAX, result)


def _one_over_one_plus_x_for_x_in_0_1(a: np.ndarray) -> np.ndarray:
    """gemmlowp one_over_one_plus_x_for_x_in_0_1: Q0 a -> Q0 1/(1+a), by Newton-Raphson in Q2."""
    half_denominator = _rounding_half_sum(a, INT32_MAX)
    x = 1515870810 + srdhm(half_denominator, -1010580540)  # 48/17 - 32/17 * d, in Q2
    for _ in range(3):
        one_minus_half_denominator_times_x = (1 << 29) - srdhm(half_denominator, x)  # 1.0 in Q2
        x = x + _multiply_by_pot(srdhm(x, one_minus_half_denominator_times_x), 2)  # Q4 -> Q2
    return _multiply_by_pot(x, 1)  # x / 2 in Q1, rescaled to Q0


def _logistic(a: np.ndarray, integer_bits: int) -> np.ndarray:
    """gemmlowp logistic: Q`integer_bits` a -> Q0 1/(1+exp(-a))."""
    positive = a > 0
    magnitude = np.where(positive, a, -a)
    if_positive = _one_over_one_plus_x_for_x_in_0_1(_exp_on_negative_values(-magnitude, integer_bits))
    result = np.where(positive, if_positive, INT32_MAX - if_positive)
    return np.where(a == 0, 1 << 30, result)


def _count_leading_zeros32(x: np.ndarray) -> np.ndarray:
    """Leading zero bits of int32 values seen as uint32 (frexp's exponent is exact for them)."""
    return np.where(x < 0, 0, 32 - np.frexp(x.astype(np.float64))[1].astype(np.int64))


# ----------------------------------------------------------------------------------------------------------
# Shared checks


def _check_unary(op: Op, supported: tuple[str, ...] = ("int8", "float32")) -> str:
    check_arity(op, 1)
    dtype = check_dtypes(op, supported)
    check_output_shape(op, op.inputs[0].shape)
    if dtype in ("int8", "int16"):
        check_per_tensor(op, [op.inputs[0], op.outputs[0]])
    return dtype


def _require_output_1_over_256(op: Op) -> None:
    """TFLM's int8 SOFTMAX and LOGISTIC write probabilities with scale 1/256 and zero point -128."""
    out = op.outputs[0]
    if np.float32(out.scale) != np.float32(1.0 / 256) or out.zero_point != -128:
        raise UnsupportedError(f"{op.where}: int8 output '{out.name}' must have scale 1/256 and zero point -128 "
                               f"(TFLM requires it); it has scale {out.scale} and zero point {out.zero_point}")


# ----------------------------------------------------------------------------------------------------------
# Kernels


def _lut_int16(transform, input_min, input_max, output_min, output_max) -> np.ndarray:
    """TFLite's LUTPopulateInt16 (float32 arithmetic): 512 samples of `transform` over [input_min,
    input_max] plus the end point, each sample lowered by half the error that linear interpolation
    would make at the midpoint of its step, so the interpolated lookup is accurate there too."""
    f32 = np.float32
    step = f32((input_max - input_min) / f32(512))
    half_step = step / f32(2)
    inverse = f32(65536) / f32(output_max - output_min)
    i = np.arange(512, dtype=f32)

    def rounded(v):  # TfLiteRound on float32 values; exact in float64
        return round_half_away_array(v).astype(f32)

    start = input_min + i * step
    value = transform(start)
    sample = rounded(value * inverse)
    interpolated = rounded((transform(input_min + (i + f32(1)) * step) * inverse + sample) / f32(2))
    bias = rounded((interpolated - rounded(transform(start + half_step) * inverse)) / f32(2))
    last = rounded(transform(np.array([input_max], dtype=f32)) * inverse)
    table = np.concatenate([sample - bias, last])
    return np.clip(table, INT16_MIN, INT16_MAX).astype(np.int64)


def _expf(x: np.ndarray) -> np.ndarray:
    """float32 exp as libm's expf: the float64 exp rounded to float32 (numpy's float32 exp is its own
    approximation and can differ by an ulp)."""
    return np.exp(x.astype(np.float64)).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _softmax_int16_luts() -> tuple[np.ndarray, np.ndarray]:
    """TFLM's int16 softmax tables: exp on [-10, 0] and 1/(1+x) on [0, 1], both into Q0.15 over [-1, 1)."""
    f32 = np.float32
    span = f32(65535)
    exp_scale, out_scale = f32(10) / span, f32(2) / span
    out_min, out_max = out_scale * f32(INT16_MIN), out_scale * f32(INT16_MAX)
    exp_lut = _lut_int16(_expf, exp_scale * f32(INT16_MIN - INT16_MAX), exp_scale * f32(0), out_min, out_max)
    recip_scale = f32(1) / span
    recip_lut = _lut_int16(lambda v: f32(1) / (f32(1) + v), recip_scale * f32(0),
                           recip_scale * f32(INT16_MAX - INT16_MIN), out_min, out_max)
    return exp_lut, recip_lut


def _lut_lookup(value: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """TFLite's LUTLookup for int16: the top 9 bits pick a table step, the low 7 interpolate linearly
    with rounding ((slope * offset + 64) >> 7); int16 arithmetic wraps as in C."""
    index = 256 + (value >> 7)
    base = lut[index]
    slope = ((lut[index + 1] - base - INT16_MIN) & 0xFFFF) + INT16_MIN
    result = base + ((slope * (value & 0x7F) + 64) >> 7)
    return ((result - INT16_MIN) & 0xFFFF) + INT16_MIN


def _require_output_scale(op: Op, scale: float, zero_point: int) -> None:
    """TFLM's TF_LITE_ENSURE_NEAR on the output scale (within 0.1%, in float32) and its zero point."""
    out = op.outputs[0]
    f32 = np.float32
    delta = abs(f32(out.scale) - f32(scale))
    if delta > f32(0.001) * f32(scale) or out.zero_point != zero_point:
        raise UnsupportedError(f"{op.where}: {out.dtype} output '{out.name}' must have scale {scale} and zero point "
                               f"{zero_point} (TFLM requires it); it has scale {out.scale} and zero point "
                               f"{out.zero_point}")


def _softmax_int16(op: Op, x: np.ndarray) -> np.ndarray:
    """int16 -> int16 SOFTMAX as TFLM's SoftmaxInt16.

    Differences to the row maximum are rescaled (beta * input_scale / (10 / 65535)) so [-10, 0] spans
    65535 steps, recentred, saturated to int16 and looked up in the exp table (Q0.15). The int32 sum of
    exps is normalised by its leading zeros to a 16-bit x + 1, the 1/(1+x) table gives the reciprocal,
    and each exp times it is shifted back with rounding (half up) into [0, 32767].
    """
    _require_output_scale(op, 1.0 / 32768, 0)
    beta = float(np.float32(op.options.get("beta", 1.0)))
    multiplier, shift = multiplier_for(op, float(op.inputs[0].scale) * beta / (10.0 / 65535.0),
                                       "input multiplier beta * scale")
    exp_lut, recip_lut = _softmax_int16_luts()
    x = x.astype(np.int64)
    scaled = multiply_by_quantized_multiplier(x - x.max(axis=-1, keepdims=True), multiplier, shift)
    exps = _lut_lookup(np.clip(scaled + INT16_MAX, INT16_MIN, INT16_MAX), exp_lut)
    total = exps.sum(axis=-1, keepdims=True)
    if np.any(total > INT32_MAX):
        raise UnsupportedError(f"{op.where}: rows of {op.inputs[0].shape[-1]} values overflow the int32 sum of "
                               "TFLM's int16 softmax")
    headroom_plus_one = _count_leading_zeros32(total)
    shifted = ((total << (headroom_plus_one - 1)) + (1 << 13)) >> 14
    reciprocal = _lut_lookup(np.clip(shifted - ((1 << 15) + (1 << 16)), INT16_MIN, INT16_MAX), recip_lut)
    right_shift = 31 - headroom_plus_one
    y = (exps * reciprocal + (np.int64(1) << (right_shift - 1))) >> right_shift
    return np.clip(y, 0, INT16_MAX).astype(np.int16)


def _softmax_int8(op: Op, x: np.ndarray, out_dtype) -> np.ndarray:
    """int8 -> int8 or int16 SOFTMAX as TFLM: gemmlowp exp and reciprocal; the output's bit width sets the
    final shift and the offset (its lowest value)."""
    bits = np.iinfo(out_dtype).bits
    lowest, highest = int(np.iinfo(out_dtype).min), int(np.iinfo(out_dtype).max)
    beta = np.float32(op.options.get("beta", 1.0))  # stored as float32 in the model
    scaled_diff_integer_bits = 5
    real = min(float(beta) * op.inputs[0].scale * (1 << (31 - scaled_diff_integer_bits)), (1 << 31) - 1.0)
    if not real > 1.0:
        raise UnsupportedError(f"{op.where}: beta * input scale = {float(beta) * op.inputs[0].scale!r} is too "
                               "small for TFLM's int8 softmax")
    multiplier, left_shift = multiplier_for(op, real, "input multiplier beta * scale")
    radius = ((1 << scaled_diff_integer_bits) - 1) * (1 << (31 - scaled_diff_integer_bits)) / (1 << left_shift)
    diff_min = -math.floor(radius)

    diff = x.astype(np.int64) - x.max(axis=-1, keepdims=True)
    used = diff >= diff_min
    exps = _exp_on_negative_values(multiply_by_quantized_multiplier(diff, multiplier, left_shift),
                                   scaled_diff_integer_bits)
    accumulation_integer_bits = 12
    sum_of_exps = wrap_int32(np.sum(np.where(used, rounding_divide_by_pot(exps, accumulation_integer_bits), 0),
                                    axis=-1, keepdims=True))
    headroom_plus_one = _count_leading_zeros32(sum_of_exps)
    num_bits_over_unit = accumulation_integer_bits - headroom_plus_one
    shifted_sum_minus_one = (sum_of_exps << headroom_plus_one) - (1 << 31)
    reciprocal = _one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one)
    exponent = num_bits_over_unit + 31 - bits
    # TFLM's TFLITE_CHECK(0 <= exponent <= 31) fails (and aborts) for int8 output once a row's sum of exps
    # reaches 512 (in Q12.19), i.e. rows of over 512 values close to their maximum, or when the int32 sum wraps.
    if np.any((exponent < 0) | (exponent > 31)):
        limit = "of 512 or more" if bits == 8 else "beyond int32"
        raise UnsupportedError(f"{op.where}: a row of {op.inputs[0].shape[-1]} values has a sum of exponentials "
                               f"{limit}, which TFLM's int8 softmax cannot represent (it aborts)")
    out = rounding_divide_by_pot(srdhm(reciprocal, exps), exponent) + lowest
    return np.where(used, np.clip(out, lowest, highest), lowest).astype(out_dtype)


@kernel("SOFTMAX", dtypes=("int8", "int16", "float32"))
def softmax(op: Op, args: list) -> np.ndarray:
    """SOFTMAX over the last axis with option beta.

    int8 -> int8 as TFLM: input differences to the row maximum are scaled by beta * input_scale into Q5.26
    (differences below diff_min count as zero), exponentiated and summed in fixed point, and each exp is
    multiplied by the fixed-point reciprocal of the sum. The output must be scale 1/256, zero point -128.
    int8 -> int16 the same, output scale 1/65536, zero point -32768. int16 -> int16 with TFLM's lookup
    tables (see _softmax_int16), output scale 1/32768, zero point 0.
    """
    src, out = op.inputs[0], op.outputs[0]
    if src.dtype == np.int8 and out.dtype == np.int16:
        check_arity(op, 1)
        check_output_shape(op, src.shape)
        check_per_tensor(op, [src])
        _require_output_scale(op, 1.0 / 65536, INT16_MIN)
        return _softmax_int8(op, args[0], np.int16)
    dtype = _check_unary(op, ("int8", "int16", "float32"))
    if not src.shape:
        raise ModelError(f"{op.where}: input '{src.name}' must have at least one dimension")
    x = args[0]
    if dtype == "float32":
        beta = np.float32(op.options.get("beta", 1.0))
        x = x.astype(np.float32)
        exps = np.exp((x - x.max(axis=-1, keepdims=True)) * beta)
        total = np.cumsum(exps, axis=-1, dtype=np.float32)[..., -1:]  # TFLM sums in order, in float32
        return (exps / total).astype(np.float32)
    if dtype == "int16":
        return _softmax_int16(op, x)
    _require_output_1_over_256(op)
    return _softmax_int8(op, x, np.int8)


Q4_INTEGER_BITS = 4  # int8 LOGISTIC and TANH compute on the input rescaled to Q4.27


def _q4_input(src, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """TFLM's int8 LOGISTIC/TANH input stage: (x - zero point, that rescaled to Q4.27, the input radius
    beyond which the output saturates)."""
    fraction, left_shift = math.frexp(src.scale * (1 << (31 - Q4_INTEGER_BITS)))
    multiplier = round_half_away(fraction * (1 << 31))  # TFLM rounds this one itself, unchecked
    radius = math.floor(((1 << Q4_INTEGER_BITS) - 1) * (1 << (31 - Q4_INTEGER_BITS)) / 2.0 ** left_shift)
    centred = x.astype(np.int64) - src.zero_point
    return centred, multiply_by_quantized_multiplier(centred, multiplier, left_shift), radius


@kernel("LOGISTIC")
def logistic(op: Op, args: list) -> np.ndarray:
    """LOGISTIC (sigmoid). int8 as TFLM: the centred input is rescaled to Q4.27 and fed to gemmlowp's
    fixed-point logistic; inputs beyond the range radius saturate. Output scale 1/256, zero point -128."""
    dtype = _check_unary(op)
    x = args[0]
    if dtype == "float32":
        x = x.astype(np.float32)
        with np.errstate(over="ignore"):  # exp overflows only where the other branch is taken
            mid = np.float32(1) / (np.float32(1) + np.exp(-x))
            low = np.exp(x)
        return np.where(x > np.float32(16.619047164916992188), np.float32(1),
                        np.where(x < np.float32(-9), low, mid)).astype(np.float32)

    _require_output_1_over_256(op)
    centred, in_q4, radius = _q4_input(op.inputs[0], x)
    out = rounding_divide_by_pot(_logistic(in_q4, Q4_INTEGER_BITS), 31 - 8) + INT8_MIN
    out = np.clip(out, INT8_MIN, INT8_MAX)
    return np.where(centred <= -radius, INT8_MIN, np.where(centred >= radius, INT8_MAX, out)).astype(np.int8)


def _down_scale_to_int16(multiplier: int) -> int:
    """TFLM's DownScaleInt32ToInt16Multiplier: round a Q31 multiplier to Q15, saturating."""
    if multiplier >= INT32_MAX - (1 << 15):
        return INT16_MAX
    return (multiplier + (1 << 15)) >> 16


def _saturating_left_shift16(x: np.ndarray, amount: int) -> np.ndarray:
    return np.clip(x * (1 << amount), INT16_MIN, INT16_MAX)


def _saturating_doubling_high_mul16(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SQDMULH on int16: (a * b) / 2^15 truncated toward zero, saturating -1 * -1."""
    product = a * b
    high = np.where(product >= 0, product >> 15, -((-product) >> 15))
    return np.where((a == INT16_MIN) & (b == INT16_MIN), INT16_MAX, high)


@kernel("HARD_SWISH")
def hard_swish(op: Op, args: list) -> np.ndarray:
    """HARD_SWISH x * relu6(x + 3) / 6. int8 as TFLM: int16 fixed point, with the input on a 2^7 finer
    scale, a "reluish" factor in [0, 1] from x / 3 and a truncating final multiply."""
    dtype = _check_unary(op)
    x = args[0]
    if dtype == "float32":
        x = x.astype(np.float32)
        relu6 = np.minimum(np.float32(6), np.maximum(np.float32(0), x + np.float32(3)))
        return (x * relu6 / np.float32(6)).astype(np.float32)

    src, out = op.inputs[0], op.outputs[0]
    # TFLM computes these scales in float32, then widens the ratios to double.
    hires_input_scale = np.float32(1.0 / 128.0) * np.float32(src.scale)
    reluish_scale = np.float32(3.0 / 32768.0)
    out_m32, out_exponent = multiplier_for(op, float(hires_input_scale / np.float32(out.scale)),
                                           "output multiplier")
    relu_m32, relu_exponent = multiplier_for(op, float(hires_input_scale / reluish_scale), "reluish multiplier")
    # TFLM requires the output multiplier below 1; int16 right shifts past 15 bits are beyond its care.
    if out_exponent > 0 or out_exponent < -15 or relu_exponent < -15:
        raise UnsupportedError(f"{op.where}: scales of '{src.name}' ({src.scale}) and '{out.name}' "
                               f"({out.scale}) are outside what TFLM's int8 HARD_SWISH supports")
    out_m16, relu_m16 = _down_scale_to_int16(out_m32), _down_scale_to_int16(relu_m32)

    hires = (x.astype(np.int64) - src.zero_point) * (1 << 7)
    on_preshift_output_scale = srdhm(hires, out_m16, bits=16)
    # The relu-ish factor: rescale so that 3.0 maps to 2^15 (saturating), then map [-1, 1] to [0, 1].
    reluish = hires
    if relu_exponent > 0:
        reluish = _saturating_left_shift16(reluish, relu_exponent - 1)
    reluish = srdhm(reluish, relu_m16, bits=16)
    if relu_exponent > 0:
        reluish = _saturating_left_shift16(reluish, 1)
    if relu_exponent < 0:
        reluish = rounding_divide_by_pot(reluish, -relu_exponent)
    reluish = (reluish + (1 << 15)) >> 1
    preshift_output = _saturating_doubling_high_mul16(reluish, on_preshift_output_scale)
    result = rounding_divide_by_pot(preshift_output, -out_exponent) + out.zero_point
    result = ((result - INT16_MIN) & 0xFFFF) + INT16_MIN  # TFLM adds the zero point in int16
    return np.clip(result, INT8_MIN, INT8_MAX).astype(np.int8)


@kernel("RELU", dtypes=("int8", "int16", "float32"))
def relu(op: Op, args: list) -> np.ndarray:
    """RELU max(x, 0). int8 and int16 as TFLM: requantize from the input to the output scale, then clamp
    below at the output's zero. The scale ratio is divided in double (what the TFLM package computes)."""
    dtype = _check_unary(op, ("int8", "int16", "float32"))
    x = args[0]
    if dtype == "float32":
        x = x.astype(np.float32)
        return np.where(x < 0, np.float32(0), x).astype(np.float32)

    src, out = op.inputs[0], op.outputs[0]
    multiplier, shift = multiplier_for(op, float(src.scale) / float(out.scale), "input/output scale ratio")
    raw = multiply_by_quantized_multiplier(x.astype(np.int64) - src.zero_point, multiplier, shift) + out.zero_point
    info = np.iinfo(out.dtype)
    return np.clip(raw, max(int(info.min), out.zero_point), int(info.max)).astype(out.dtype)


@kernel("RELU6", dtypes=("int8", "int16", "float32"))
def relu6(op: Op, args: list) -> np.ndarray:
    """RELU6 min(max(x, 0), 6). int8 and int16 as TFLM: clamp the raw input to its own quantized 0 and 6.

    TFLM does not requantize here: the output is read with the input's scale and zero point, whatever
    the output tensor declares (TFLite's converters give both the same quantization).
    """
    dtype = _check_unary(op, ("int8", "int16", "float32"))
    x = args[0]
    if dtype == "float32":
        x = x.astype(np.float32)
        return np.where(x > 6, np.float32(6), np.where(x < 0, np.float32(0), x)).astype(np.float32)

    src: Tensor = op.inputs[0]
    info = np.iinfo(src.dtype)
    six = min(max(quantize_in_float32(6.0, src.scale, src.zero_point), int(info.min)), int(info.max))
    return np.clip(x, src.zero_point, six).astype(src.dtype)


# ----------------------------------------------------------------------------------------------------------
# TANH, LEAKY_RELU, RSQRT


def _one_minus_x_over_one_plus_x_for_x_in_0_1(a: np.ndarray) -> np.ndarray:
    """gemmlowp one_minus_x_over_one_plus_x_for_x_in_0_1: Q0 a -> Q0 (1-a)/(1+a); the same Newton-Raphson
    division as _one_over_one_plus_x_for_x_in_0_1, then x - 1 (in Q2) rescaled to Q0."""
    half_denominator = _rounding_half_sum(a, INT32_MAX)
    x = 1515870810 + srdhm(half_denominator, -1010580540)
    for _ in range(3):
        one_minus_half_denominator_times_x = (1 << 29) - srdhm(half_denominator, x)
        x = x + _multiply_by_pot(srdhm(x, one_minus_half_denominator_times_x), 2)
    return _multiply_by_pot(x - (1 << 29), 2)


def _tanh(a: np.ndarray, integer_bits: int) -> np.ndarray:
    """gemmlowp tanh: Q`integer_bits` a -> Q0 tanh(a), as (1 - exp(-2|a|)) / (1 + exp(-2|a|)) with a's sign.
    exp(-2|a|) reads the raw value of -|a| with one more integer bit (an exact doubling)."""
    negative = a < 0
    minus_magnitude = np.where(negative, a, -a)
    t = _one_minus_x_over_one_plus_x_for_x_in_0_1(_exp_on_negative_values(minus_magnitude, integer_bits + 1))
    return np.where(a == 0, 0, np.where(negative, -t, t))


@kernel("TANH")
def tanh(op: Op, args: list) -> np.ndarray:
    """TANH. int8 as TFLM: the centred input is rescaled to Q4.27 (multiplier from frexp, as LOGISTIC) and fed
    to gemmlowp's fixed-point tanh, whose Q0 result is rounded to Q7; inputs beyond the range radius
    saturate to -128 / 127. TFLM writes the output as scale 1/128, zero point 0 without checking what the
    output tensor declares (TFLite's converters always declare that), and so does this kernel."""
    dtype = _check_unary(op)
    x = args[0]
    if dtype == "float32":
        return np.tanh(x.astype(np.float64)).astype(np.float32)  # libm's tanhf, rounded once

    centred, in_q4, radius = _q4_input(op.inputs[0], x)
    out = np.clip(rounding_divide_by_pot(_tanh(in_q4, Q4_INTEGER_BITS), 31 - 7), INT8_MIN, INT8_MAX)
    return np.where(centred <= -radius, INT8_MIN, np.where(centred >= radius, INT8_MAX, out)).astype(np.int8)


def _multiply_signed(x: np.ndarray, significand: int, shift: int) -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplier for a significand of either sign (a negative LEAKY_RELU alpha
    gives a negative one): the same doubling high multiply and rounding shift, which are odd functions."""
    shifted = wrap_int32(np.asarray(x, dtype=np.int64) << max(shift, 0))
    return rounding_divide_by_pot(srdhm(shifted, significand), max(-shift, 0))


def signed_multiplier(op: Op, real: float, what: str) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier for a real of either sign: the significand carries the sign."""
    significand, shift = multiplier_for(op, abs(real), what)
    return (-significand if real < 0 else significand), shift


def leaky_relu_alpha(op: Op) -> np.float32:
    """The option alpha, stored as float32 in the model."""
    alpha = op.options.get("alpha", 0.2)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not math.isfinite(alpha):
        raise ModelError(f"{op.where}: option alpha={alpha!r} must be a finite number")
    return np.float32(alpha)


def leaky_relu_multipliers(op: Op) -> tuple[tuple[int, int], tuple[int, int]]:
    """TFLM's two LEAKY_RELU rescalings, (identity, alpha): s_in / s_out and s_in * alpha / s_out, both
    computed in float32 as TFLM does, then widened to double."""
    src, out = op.inputs[0], op.outputs[0]
    f32 = np.float32
    alpha = leaky_relu_alpha(op)
    identity = multiplier_for(op, float(f32(src.scale) / f32(out.scale)), "input/output scale ratio")
    sloped = signed_multiplier(op, float(f32(src.scale) * alpha / f32(out.scale)), "multiplier alpha * s_in / s_out")
    return identity, sloped


@kernel("LEAKY_RELU")
def leaky_relu(op: Op, args: list) -> np.ndarray:
    """LEAKY_RELU x if x > 0 else alpha * x (option alpha, any sign or size). int8 as TFLM: the centred input
    is requantized to the output with the identity multiplier where it is >= 0 and with the alpha
    multiplier where it is below, then offset by the output zero point and saturated."""
    dtype = _check_unary(op)
    alpha = leaky_relu_alpha(op)
    x = args[0]
    if dtype == "float32":
        x = x.astype(np.float32)
        return np.where(x > 0, x, x * alpha).astype(np.float32)

    src, out = op.inputs[0], op.outputs[0]
    (m_identity, s_identity), (m_alpha, s_alpha) = leaky_relu_multipliers(op)
    centred = x.astype(np.int64) - src.zero_point
    raw = np.where(centred >= 0, multiply_by_quantized_multiplier(centred, m_identity, s_identity),
                   _multiply_signed(centred, m_alpha, s_alpha))
    return np.clip(raw + out.zero_point, INT8_MIN, INT8_MAX).astype(np.int8)


def _inverse_sqrt_multiplier(value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TFLite's GetInvSqrtQuantizedMultiplierExp for int32 values >= 0 (kReverseShift): 1/sqrt(value) as a
    Q31 significand and a left shift. The value is normalised by pairs of bits into [2^27, 2^29), read as
    Q3 (halved), and 1/sqrt of it found by five Newton-Raphson steps in Q3 from 1.0, times sqrt(2)/2.
    Values 0 and 1 give (INT32_MAX, 0)."""
    value = np.asarray(value, dtype=np.int64)
    small = value <= 1
    v = np.where(small, 4, value)  # any value > 1 keeps the arithmetic below defined; replaced at the end
    shift = np.full(v.shape, 11, dtype=np.int64)
    while np.any(v >= 1 << 29):  # only for inputs of 2^29 or more, kept for completeness
        big = v >= 1 << 29
        v = np.where(big, v // 4, v)
        shift = shift + big
    left_shift_bit_pairs = (_count_leading_zeros32(v) - 1) // 2 - 1
    shift = shift - left_shift_bit_pairs
    v = v << (2 * left_shift_bit_pairs)
    half_input = rounding_divide_by_pot(v >> 1, 1)
    half_three = (1 << 28) + (1 << 27)  # 1.5 in Q3
    x = np.full(v.shape, 1 << 28, dtype=np.int64)  # 1.0 in Q3
    for _ in range(5):
        x3 = _multiply_by_pot(srdhm(srdhm(x, x), x), 6)  # Q9 -> Q3
        x = _multiply_by_pot(srdhm(half_three, x) - srdhm(half_input, x3), 3)  # Q6 -> Q3
    x = srdhm(x, 1518500250)  # times sqrt(2)/2 in Q0
    x = np.where(shift < 0, wrap_int32(x << np.maximum(-shift, 0)), x)
    shift = np.maximum(shift, 0)
    return np.where(small, INT32_MAX, x), np.where(small, 0, -shift)


def rsqrt_output_multiplier(op: Op) -> tuple[int, int]:
    """TFLM's RSQRT output rescaling 1 / (sqrt(s_in) * s_out), in double."""
    src, out = op.inputs[0], op.outputs[0]
    return multiplier_for(op, 1.0 / (math.sqrt(float(src.scale)) * float(out.scale)),
                          "output multiplier 1 / (sqrt(s_in) * s_out)")


@kernel("RSQRT")
def rsqrt(op: Op, args: list) -> np.ndarray:
    """RSQRT 1 / sqrt(x). float32 as 1.0f / sqrtf(x). int8 as TFLM: the centred input's inverse square root as
    a fixed-point multiplier (GetInvSqrtQuantizedMultiplierExp) applied to 1 << 20, then rescaled by
    1 / (sqrt(s_in) * s_out) (the 2^20 taken back) and offset; a centred 0 gives 127 (TFLM takes values
    close to 0 to mean the largest output).

    TFLM fails the whole inference when an int8 input lies below its zero point (a negative real). This
    kernel stays defined there instead and treats such inputs as 0 (127), what quantization noise around
    0 (a variance, a mean of squares) calls for: refusing data here would refuse every random input the
    memory planner and `validate` run. TFLM has no output to be exact with for those inputs.
    """
    dtype = _check_unary(op)
    x = args[0]
    if dtype == "float32":
        x = x.astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):  # sqrt(0) = 0 and sqrt(-1) = NaN, as in C
            return (np.float32(1) / np.sqrt(x)).astype(np.float32)

    src, out = op.inputs[0], op.outputs[0]
    multiplier, shift = rsqrt_output_multiplier(op)
    shift_to_keep_integer = 20
    centred = np.maximum(x.astype(np.int64) - src.zero_point, 0)
    inv_multiplier, inv_shift = _inverse_sqrt_multiplier(centred)
    data = multiply_by_quantized_multiplier(np.ones_like(centred), inv_multiplier, inv_shift + shift_to_keep_integer)
    raw = multiply_by_quantized_multiplier(data, multiplier, shift - shift_to_keep_integer) + out.zero_point
    return np.where(centred == 0, INT8_MAX, np.clip(raw, INT8_MIN, INT8_MAX)).astype(np.int8)
