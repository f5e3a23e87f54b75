"""Reference kernels QUANTIZE and DEQUANTIZE, as TFLite Micro's reference kernels compute them.

QUANTIZE float32 -> int8 or int16 divides in float32 by the output scale and rounds half away from zero;
QUANTIZE between int8 and int16 (either way, or to the same type) requantizes with TFLM's int32
MultiplyByQuantizedMultiplier and clamps to the output type; DEQUANTIZE int8 or int16 computes
scale * (q - zp) in double and casts the result to float32. int16 tensors must have zero point 0.
"""

from __future__ import annotations

import numpy as np

from microforge.errors import UnsupportedError
from microforge.graph.ir import Op
from microforge.reference.checks import (
    check_arity,
    check_output_shape,
    check_per_tensor,
    multiplier_for,
)
from microforge.reference.fixedpoint import multiply_by_quantized_multiplier
from microforge.reference.registry import kernel

INT8_MIN, INT8_MAX = -128, 127
INTEGER = (np.int8, np.int16)


def round_half_away_array(x) -> np.ndarray:
    """Elementwise std::round (halves away from zero) of a float array, returned as float64.

    Works in float64, where adding 0.5 to a float32 value is exact, so values just below a half (such as
    0.49999997f) are not rounded up the way a float32 `floor(|x| + 0.5)` would.
    """
    x = np.asarray(x, dtype=np.float64)
    return np.copysign(np.floor(np.abs(x) + 0.5), x)


@kernel("QUANTIZE", dtypes=("float32", "int8", "int16"))
def quantize(op: Op, args: list) -> np.ndarray:
    """QUANTIZE to int8 or int16: from float32 (TFLM's AffineQuantize) or from int8 or int16 (TFLM's
    Requantize)."""
    check_arity(op, 1)
    src, out = op.inputs[0], op.outputs[0]
    if out.dtype not in INTEGER or src.dtype not in INTEGER + (np.float32,):
        raise UnsupportedError(f"{op.where}: QUANTIZE {src.dtype} -> {out.dtype} is not supported "
                               "(supported: float32, int8 or int16 -> int8 or int16)")
    lowest, highest = int(np.iinfo(out.dtype).min), int(np.iinfo(out.dtype).max)
    check_output_shape(op, src.shape)
    check_per_tensor(op, [out])
    if src.dtype == np.float32:
        # TFLM divides in float32 (the scale is stored as double and cast back) and rounds the float.
        scaled = args[0].astype(np.float32) / np.float32(out.scale)
        # Beyond the int32 range (and for NaN) TFLM's cast to int32 is undefined in C: x86 gives INT32_MIN,
        # Arm (the targets) saturates and maps NaN to 0. We do as Arm does.
        rounded = np.nan_to_num(round_half_away_array(scaled), nan=0.0)
        q = np.clip(rounded, -(2.0 ** 31), 2.0 ** 31 - 1) + out.zero_point
        return np.clip(q, lowest, highest).astype(out.dtype)
    check_per_tensor(op, [src])
    multiplier, shift = multiplier_for(op, float(src.scale) / float(out.scale), "input/output scale ratio")
    q = multiply_by_quantized_multiplier(args[0].astype(np.int64) - src.zero_point, multiplier, shift)
    return np.clip(q + out.zero_point, lowest, highest).astype(out.dtype)


@kernel("DEQUANTIZE", dtypes=("int8", "int16"))
def dequantize(op: Op, args: list) -> np.ndarray:
    """DEQUANTIZE int8 or int16 -> float32: float(double(scale) * (q - zero_point)), as TFLM does."""
    check_arity(op, 1)
    src, out = op.inputs[0], op.outputs[0]
    if src.dtype not in INTEGER or out.dtype != np.float32:
        raise UnsupportedError(f"{op.where}: DEQUANTIZE {src.dtype} -> {out.dtype} is not supported "
                               "(supported: int8 or int16 -> float32)")
    check_output_shape(op, src.shape)
    check_per_tensor(op, [src])
    centred = args[0].astype(np.float64) - src.zero_point
    return (float(src.scale) * centred).astype(np.float32)
