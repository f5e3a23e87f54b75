"""Reference kernels ADD and MUL (int8, int16 and float32), SUB, MAXIMUM, MINIMUM, SQUARED_DIFFERENCE and PRELU
(int8 and float32), bit-exact with TFLite Micro's reference kernels.

Both broadcast their inputs numpy-style (shapes aligned at the trailing dimensions) and apply the fused
activation. int8 ADD follows TFLM's add_common.cc: both inputs are shifted left by 20 bits, rescaled to
twice the larger input scale, summed, and rescaled to the output. int8 MUL multiplies the centred
inputs and rescales once by s1 * s2 / s_out. int16 (zero points 0) does the same with a 15-bit shift for
ADD: TFLM always takes this general path for int16 ADD, whatever pot_scale_int16 says (TFLite's
power-of-two path is not in TFLM), so the option is accepted and ignored. The other ops (below) broadcast
alike; each docstring says how its int8 arithmetic follows TFLM.
"""

from __future__ import annotations

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
    activation_range_float,
    activation_range_quantized,
    multiply_by_quantized_multiplier,
)
from microforge.reference.registry import kernel

ADD_LEFT_SHIFT = {"int8": 20, "int16": 15}  # TFLM's headroom for ADD; 15 keeps int16 << 15 inside int32
DTYPES = ("int8", "int16", "float32")
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _broadcast_inputs(op: Op, args: list) -> tuple[np.ndarray, np.ndarray]:
    """Check the inputs broadcast to the declared output; return both with equal rank for numpy.

    Each argument keeps its own batch axis (N, or 1 for a constant) and gets size-1 dimensions inserted
    after it, so a rank-2 input lines up with the trailing dimensions of a rank-4 one.
    """
    a, b = op.inputs
    try:
        shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ModelError(f"{op.where}: inputs '{a.name}' {list(a.shape)} and '{b.name}' {list(b.shape)} "
                         "do not broadcast") from None
    check_output_shape(op, shape)

    def lift(x: np.ndarray, t: Tensor) -> np.ndarray:
        return x.reshape((x.shape[0],) + (1,) * (len(shape) - len(t.shape)) + t.shape)

    return lift(args[0], a), lift(args[1], b)


def _multiplier_below_one(op: Op, real: float, what: str) -> tuple[int, int]:
    """TFLM's QuantizeMultiplierSmallerThanOneExp, which aborts unless 0 < real < 1."""
    if not 0.0 < real < 1.0:
        raise UnsupportedError(f"{op.where}: the {what} rescaling factor {real!r} is not below 1, "
                               "which TFLM's quantized ADD requires")
    return multiplier_for(op, real, what + " rescaling factor")


def _activation_range(op: Op, range_fn, *args):
    """The clamp of the op's fused activation; UnsupportedError naming the op for others (e.g. TANH)."""
    try:
        return range_fn(op.options.get("fused_activation_function", "NONE"), *args)
    except ModelError as exc:
        raise UnsupportedError(f"{op.where}: {exc}") from None


def _float_op(op: Op, fn, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """fn in float32, then the fused activation: TFLM clamps to the finite floats even for NONE."""
    lo, hi = _activation_range(op, activation_range_float)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is what float32 does
        result = fn(x.astype(np.float32), y.astype(np.float32))
    return np.clip(result, max(lo, -FLOAT32_MAX), min(hi, FLOAT32_MAX)).astype(np.float32)


def _quantized_clamp(op: Op, out: Tensor, raw: np.ndarray) -> np.ndarray:
    lo, hi = _activation_range(op, activation_range_quantized, out.scale, out.zero_point, out.dtype)
    return np.clip(raw, lo, hi).astype(out.dtype)


@kernel("ADD", dtypes=DTYPES)
def add(op: Op, args: list) -> np.ndarray:
    """ADD with broadcasting and fused activation; int8 or int16 with TFLM's per-input rescaling
    (int32 arithmetic, left shift 20 or 15), or float32."""
    check_arity(op, 2)
    dtype = check_dtypes(op, DTYPES, [op.inputs[0], op.inputs[1], op.outputs[0]])
    x, y = _broadcast_inputs(op, args)
    if dtype == "float32":
        return _float_op(op, np.add, x, y)

    in1, in2, out = op.inputs[0], op.inputs[1], op.outputs[0]
    check_per_tensor(op, [in1, in2, out])
    twice_max_scale = 2.0 * max(in1.scale, in2.scale)
    m1, s1 = _multiplier_below_one(op, in1.scale / twice_max_scale, f"'{in1.name}'")
    m2, s2 = _multiplier_below_one(op, in2.scale / twice_max_scale, f"'{in2.name}'")
    left_shift = ADD_LEFT_SHIFT[dtype]
    mo, so = _multiplier_below_one(op, twice_max_scale / ((1 << left_shift) * out.scale), "output")
    # Shifting left first keeps the precision of the smaller-scale input through the rescaling.
    scaled1 = multiply_by_quantized_multiplier((x.astype(np.int64) - in1.zero_point) << left_shift, m1, s1)
    scaled2 = multiply_by_quantized_multiplier((y.astype(np.int64) - in2.zero_point) << left_shift, m2, s2)
    raw = multiply_by_quantized_multiplier(scaled1 + scaled2, mo, so) + out.zero_point
    return _quantized_clamp(op, out, raw)


@kernel("MUL", dtypes=DTYPES)
def mul(op: Op, args: list) -> np.ndarray:
    """MUL with broadcasting and fused activation; int8 or int16 (int32 product) rescaled once by
    s1 * s2 / s_out, or float32."""
    check_arity(op, 2)
    dtype = check_dtypes(op, DTYPES, [op.inputs[0], op.inputs[1], op.outputs[0]])
    x, y = _broadcast_inputs(op, args)
    if dtype == "float32":
        return _float_op(op, np.multiply, x, y)

    in1, in2, out = op.inputs[0], op.inputs[1], op.outputs[0]
    check_per_tensor(op, [in1, in2, out])
    multiplier, shift = multiplier_for(op, float(in1.scale) * float(in2.scale) / float(out.scale),
                                       "rescaling factor s1 * s2 / s_out")
    product = (x.astype(np.int64) - in1.zero_point) * (y.astype(np.int64) - in2.zero_point)
    raw = multiply_by_quantized_multiplier(product, multiplier, shift) + out.zero_point
    return _quantized_clamp(op, out, raw)


# ----------------------------------------------------------------------------------------------------------
# SUB, MAXIMUM, MINIMUM, SQUARED_DIFFERENCE, PRELU (int8 and float32)

BINARY_DTYPES = ("int8", "float32")
SQUARED_DIFFERENCE_LEFT_SHIFT = 7  # TFLM's: 255^2 * 2^14 still fits int32


def _check_binary(op: Op) -> str:
    check_arity(op, 2)
    return check_dtypes(op, BINARY_DTYPES, [op.inputs[0], op.inputs[1], op.outputs[0]])


def _check_rank(op: Op, limit: int) -> None:
    """TFLM's PRELU extends every shape to 4 dimensions (and aborts on more)."""
    for t in (*op.inputs, op.outputs[0]):
        if len(t.shape) > limit:
            raise UnsupportedError(f"{op.where}: '{t.name}' has rank {len(t.shape)}; TFLM's {op.type} supports "
                                   f"at most {limit} dimensions")


def sub_multipliers(op: Op) -> tuple[int, int, int, int, int, int]:
    """TFLM's SUB rescalings (sub_common.cc): each input to twice the larger input scale, the difference to
    the output, like ADD but with the ratios computed in float32 before they are widened to double."""
    in1, in2, out = op.inputs[0], op.inputs[1], op.outputs[0]
    f32 = np.float32
    twice_max_scale = f32(2) * max(f32(in1.scale), f32(in2.scale))
    m1, s1 = _multiplier_below_one(op, float(f32(in1.scale) / twice_max_scale), f"'{in1.name}'")
    m2, s2 = _multiplier_below_one(op, float(f32(in2.scale) / twice_max_scale), f"'{in2.name}'")
    output = float(twice_max_scale / (f32(1 << ADD_LEFT_SHIFT["int8"]) * f32(out.scale)))
    mo, so = _multiplier_below_one(op, output, "output")
    return m1, s1, m2, s2, mo, so


@kernel("SUB", dtypes=BINARY_DTYPES)
def sub(op: Op, args: list) -> np.ndarray:
    """SUB with broadcasting and fused activation; int8 as TFLM's sub: ADD's arithmetic (inputs centred,
    shifted left by 20 and rescaled to twice the larger input scale) with the rescaled second input
    subtracted, or float32."""
    dtype = _check_binary(op)
    x, y = _broadcast_inputs(op, args)
    if dtype == "float32":
        return _float_op(op, np.subtract, x, y)

    in1, in2, out = op.inputs[0], op.inputs[1], op.outputs[0]
    check_per_tensor(op, [in1, in2, out])
    m1, s1, m2, s2, mo, so = sub_multipliers(op)
    left_shift = ADD_LEFT_SHIFT["int8"]
    scaled1 = multiply_by_quantized_multiplier((x.astype(np.int64) - in1.zero_point) << left_shift, m1, s1)
    scaled2 = multiply_by_quantized_multiplier((y.astype(np.int64) - in2.zero_point) << left_shift, m2, s2)
    raw = multiply_by_quantized_multiplier(scaled1 - scaled2, mo, so) + out.zero_point
    return _quantized_clamp(op, out, raw)


def _check_same_quantization(op: Op) -> None:
    """int8 MAXIMUM / MINIMUM compare raw bytes, which means the real comparison only when both inputs and
    the output share one scale and zero point (TFLite's converters guarantee it; TFLM assumes it)."""
    in1, in2, out = op.inputs[0], op.inputs[1], op.outputs[0]
    check_per_tensor(op, [in1, in2, out])
    for t in (in2, out):
        if np.float32(t.scale) != np.float32(in1.scale) or t.zero_point != in1.zero_point:
            raise ModelError(f"{op.where}: '{t.name}' has scale {t.scale} and zero point {t.zero_point}, "
                             f"'{in1.name}' scale {in1.scale} and zero point {in1.zero_point}: int8 {op.type} "
                             "needs one quantization for its inputs and output")


@kernel("MAXIMUM", "MINIMUM", dtypes=BINARY_DTYPES)
def maximum_minimum(op: Op, args: list) -> np.ndarray:
    """MAXIMUM / MINIMUM with broadcasting: TFLM's el1 > el2 ? el1 : el2 (el1 < el2 for MINIMUM) on the raw
    values, int8 (one quantization for all three tensors) or float32 (a NaN in the first input loses)."""
    dtype = _check_binary(op)
    x, y = _broadcast_inputs(op, args)
    if dtype == "int8":
        _check_same_quantization(op)
    first_wins = (x > y) if op.type == "MAXIMUM" else (x < y)
    return np.where(first_wins, x, y).astype(op.outputs[0].dtype)


def squared_difference_multipliers(op: Op) -> tuple[int, int, int, int, int, int]:
    """TFLM's SQUARED_DIFFERENCE rescalings: each input to twice the larger input scale (below one), the
    squared difference by (2 * max scale)^2 / (2^14 * s_out) (any size; 2^14 * s_out in float32)."""
    in1, in2, out = op.inputs[0], op.inputs[1], op.outputs[0]
    twice_max_scale = 2.0 * float(max(np.float32(in1.scale), np.float32(in2.scale)))
    m1, s1 = _multiplier_below_one(op, float(in1.scale) / twice_max_scale, f"'{in1.name}'")
    m2, s2 = _multiplier_below_one(op, float(in2.scale) / twice_max_scale, f"'{in2.name}'")
    denominator = float(np.float32(1 << (2 * SQUARED_DIFFERENCE_LEFT_SHIFT)) * np.float32(out.scale))
    mo, so = multiplier_for(op, twice_max_scale * twice_max_scale / denominator, "output rescaling factor")
    return m1, s1, m2, s2, mo, so


@kernel("SQUARED_DIFFERENCE", dtypes=BINARY_DTYPES)
def squared_difference(op: Op, args: list) -> np.ndarray:
    """SQUARED_DIFFERENCE (x - y)^2 with broadcasting. int8 as TFLM: both inputs
    centred, shifted left by 7 and rescaled to twice the larger input scale; their difference squared in
    int32 and rescaled to the output. float32: (x - y) * (x - y), no clamp."""
    dtype = _check_binary(op)
    x, y = _broadcast_inputs(op, args)
    if dtype == "float32":
        with np.errstate(over="ignore", invalid="ignore"):
            difference = x.astype(np.float32) - y.astype(np.float32)
            return (difference * difference).astype(np.float32)

    in1, in2, out = op.inputs[0], op.inputs[1], op.outputs[0]
    check_per_tensor(op, [in1, in2, out])
    m1, s1, m2, s2, mo, so = squared_difference_multipliers(op)
    shift = SQUARED_DIFFERENCE_LEFT_SHIFT
    scaled1 = multiply_by_quantized_multiplier((x.astype(np.int64) - in1.zero_point) << shift, m1, s1)
    scaled2 = multiply_by_quantized_multiplier((y.astype(np.int64) - in2.zero_point) << shift, m2, s2)
    difference = scaled1 - scaled2
    raw = multiply_by_quantized_multiplier(difference * difference, mo, so) + out.zero_point
    return np.clip(raw, -128, 127).astype(np.int8)


def prelu_multipliers(op: Op) -> tuple[int, int, int, int]:
    """TFLM's two PRELU rescalings (double): s_in / s_out for x >= 0, s_in * s_alpha / s_out for x < 0."""
    src, alpha, out = op.inputs[0], op.inputs[1], op.outputs[0]
    m1, s1 = multiplier_for(op, float(src.scale) / float(out.scale), "output multiplier s_in / s_out")
    m2, s2 = multiplier_for(op, float(src.scale) * float(alpha.scale) / float(out.scale),
                            "output multiplier s_in * s_alpha / s_out")
    return m1, s1, m2, s2


@kernel("PRELU", dtypes=BINARY_DTYPES)
def prelu(op: Op, args: list) -> np.ndarray:
    """PRELU x if x >= 0 else alpha * x, alpha (the second input, usually a constant) broadcast against the
    input, at most 4-D as TFLM. int8 as TFLM: a centred x >= 0 is rescaled by s_in / s_out, a negative one
    times the centred alpha by s_in * s_alpha / s_out; then offset and saturated. float32 likewise."""
    dtype = _check_binary(op)
    x, alpha = _broadcast_inputs(op, args)
    _check_rank(op, 4)
    if dtype == "float32":
        x = x.astype(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            return np.where(x >= 0, x, x * alpha.astype(np.float32)).astype(np.float32)

    src, slope, out = op.inputs[0], op.inputs[1], op.outputs[0]
    check_per_tensor(op, [src, slope, out])
    m1, s1, m2, s2 = prelu_multipliers(op)
    centred = x.astype(np.int64) - src.zero_point
    product = centred * (alpha.astype(np.int64) - slope.zero_point)
    raw = np.where(centred >= 0, multiply_by_quantized_multiplier(centred, m1, s1),
                   multiply_by_quantized_multiplier(product, m2, s2))
    return np.clip(raw + out.zero_point, -128, 127).astype(np.int8)
