"""Reference kernels ADD and MUL (int8, int16 and float32), bit-exact with TFLite Micro's reference kernels.

Both broadcast their inputs numpy-style (shapes aligned at the trailing dimensions) and apply the fused
activation. int8 ADD follows TFLM's add_common.cc: both inputs are shifted left by 20 bits, rescaled to
twice the larger input scale, summed, and rescaled to the output. int8 MUL multiplies the centred
inputs and rescales once by s1 * s2 / s_out. int16 (zero points 0) does the same with a 15-bit shift for
ADD: TFLM always takes this general path for int16 ADD, whatever pot_scale_int16 says (TFLite's
power-of-two path is not in TFLM), so the option is accepted and ignored.
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
