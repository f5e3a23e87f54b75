"""AVERAGE_POOL_2D and MAX_POOL_2D, bit-exact with TFLite Micro's reference kernels for int8 and int16.

Layout NHWC; the window is filter_height x filter_width with SAME or VALID padding. Padded positions are
never part of a window: average pooling divides by the number of in-bounds elements.
"""

from __future__ import annotations

import numpy as np

from microforge.errors import ModelError, UnsupportedError
from microforge.graph.ir import Op
from microforge.reference.checks import (
    batched_arg,
    check_output_shape,
    clamp_float,
    io_tensors,
    per_tensor_quant,
    positive_option,
    quantized_activation_range,
)
from microforge.reference.conv import window, window_taps
from microforge.reference.fixedpoint import wrap_int32
from microforge.reference.registry import kernel

# TFLM's pooling Prepare: int8 input and output must share their quantization (within this scale tolerance).
SCALE_TOLERANCE = 1e-6
QUANTIZED = (np.int8, np.int16)


def _prepare(op: Op, args: list):
    """Checked input as (N * batch, H, W, C), N, the window, and the int8 clamp (lo, hi)."""
    (x_t,), out_t = io_tensors(op, 1)
    if x_t.dtype != out_t.dtype or x_t.dtype not in QUANTIZED + (np.float32,):
        raise UnsupportedError(f"{op.where}: {x_t.dtype} input '{x_t.name}' with {out_t.dtype} output is not "
                               f"supported (int8, int16 or float32, the same in and out)")
    x = batched_arg(op, args, 0)
    if x.ndim != 5:
        raise ModelError(f"{op.where}: input '{x_t.name}' must be 4-D NHWC, got {list(x_t.shape)}")
    n, batch, h, w, c = x.shape
    win = window(op, h, w, positive_option(op, "filter_height"), positive_option(op, "filter_width"),
                 dilated=False)
    check_output_shape(op, (batch, win.out_h, win.out_w, c))
    lo = hi = None
    if x_t.dtype in QUANTIZED:
        in_scale, in_zp = per_tensor_quant(op, x_t, "input")
        out_scale, out_zp = per_tensor_quant(op, out_t, "output")
        # The kernels copy or average raw int8 values, which is only right if both sides mean the same.
        if abs(in_scale - out_scale) > SCALE_TOLERANCE or in_zp != out_zp:
            raise ModelError(f"{op.where}: input '{x_t.name}' and output '{out_t.name}' must have the same "
                             f"quantization (scale {in_scale} vs {out_scale}, zero point {in_zp} vs {out_zp})")
        lo, hi = quantized_activation_range(op, out_scale, out_zp, x_t.dtype)
    return x.reshape(n * batch, h, w, c), n, win, lo, hi


@kernel("AVERAGE_POOL_2D", dtypes=("int8", "int16", "float32"))
def average_pool_2d(op: Op, args: list) -> np.ndarray:
    """Average of the in-bounds elements of each window. NHWC in and out.

    int8 and int16 (byte-identical to TFLM): int32 sum divided by the element count, rounding halves away
    from zero, then the fused-activation clamp. float32: float64 sum / count rounded to float32 once.
    """
    x, n, win, lo, hi = _prepare(op, args)
    # How many in-bounds elements each window holds: the same taps over a mask of ones.
    mask = np.ones((1,) + x.shape[1:3] + (1,), dtype=np.int32)
    count = sum(tap for _, _, tap in window_taps(mask, win, 0))
    if np.any(count == 0):
        raise ModelError(f"{op.where}: a pooling window lies entirely in the padding")
    if x.dtype in QUANTIZED:
        total = wrap_int32(sum(tap.astype(np.int64) for _, _, tap in window_taps(x, win, 0)))  # TFLM's int32
        half = count // 2
        # C integer division truncates toward zero: round half away from zero on either sign.
        y = np.where(total > 0, (total + half) // count, -((half - total) // count))
        y = np.clip(y, lo, hi).astype(x.dtype)
    else:
        total = sum(tap.astype(np.float64) for _, _, tap in window_taps(x, win, 0.0))
        y = clamp_float(op, total / count)
    return y.reshape((n,) + op.outputs[0].shape)


@kernel("MAX_POOL_2D", dtypes=("int8", "int16", "float32"))
def max_pool_2d(op: Op, args: list) -> np.ndarray:
    """Maximum of the in-bounds elements of each window, then the fused-activation clamp. NHWC in and out.

    Exact for int8, int16 and float32 (no arithmetic).
    """
    x, n, win, lo, hi = _prepare(op, args)
    # TFLM starts from the type's lowest value and skips padding: padding with that value is the same.
    lowest = np.iinfo(x.dtype).min if x.dtype in QUANTIZED else np.finfo(np.float32).min
    y = None
    for _, _, tap in window_taps(x, win, lowest):
        y = tap.copy() if y is None else np.maximum(y, tap, out=y)
    if x.dtype in QUANTIZED:
        y = np.clip(y, lo, hi).astype(x.dtype)
    else:
        y = clamp_float(op, y)
    return y.reshape((n,) + op.outputs[0].shape)
