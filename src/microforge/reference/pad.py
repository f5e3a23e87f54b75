"""PAD and PADV2 (int8, int16, float32), exact (a copy) like TFLite Micro's reference kernel.

paddings is a constant int32 or int64 tensor of shape [rank, 2]: (before, after) per dimension of the input,
any rank. The padding value is PADV2's constant_values input when given; otherwise 0 for float32 and the
output zero point (the quantized 0.0) for int8, and 0 for int16 (TFLM ignores its zero point; microforge
requires it to be 0).
"""

from __future__ import annotations

import numpy as np

from microforge.errors import ModelError, UnsupportedError
from microforge.graph.ir import Op
from microforge.reference.checks import (
    batched_arg,
    check_output_shape,
    constant_data,
    io_tensors,
    optional_input,
    per_tensor_quant,
)
from microforge.reference.registry import kernel

# TFLM requires input and output of a quantized PAD to share their quantization (the data is copied raw).
SCALE_TOLERANCE = 1e-6
QUANTIZED = (np.int8, np.int16)


def _paddings(op: Op) -> np.ndarray:
    inputs, _ = io_tensors(op, 2)
    x_t, p_t = inputs
    data = constant_data(op, p_t, "paddings")
    if p_t.dtype not in (np.int32, np.int64):
        raise ModelError(f"{op.where}: paddings '{p_t.name}' must be int32 or int64, not {p_t.dtype}")
    if data.shape != (len(x_t.shape), 2):
        raise ModelError(f"{op.where}: paddings '{p_t.name}' must have shape [{len(x_t.shape)}, 2], "
                         f"got {list(data.shape)}")
    if np.any(data < 0):
        raise ModelError(f"{op.where}: paddings '{p_t.name}' has negative values")
    return data.astype(np.int64)


def _pad_value(op: Op, args: list) -> np.ndarray:
    """The padding value per sample: shape (N or 1,)."""
    x_t, out_t = op.inputs[0], op.outputs[0]
    value_t = optional_input(op, 2)
    if value_t is None:
        return np.array([out_t.zero_point if x_t.dtype == np.int8 else 0], dtype=x_t.dtype)
    if value_t.dtype != x_t.dtype or value_t.size != 1:
        raise ModelError(f"{op.where}: constant_values '{value_t.name}' must be one {x_t.dtype} value, "
                         f"got {value_t.dtype} of shape {list(value_t.shape)}")
    if x_t.dtype in QUANTIZED:
        # The value is written raw, so it must be in the output's quantization.
        q, out_q = value_t.quant, out_t.quant
        if q is None or out_q is None or not (np.array_equal(q.scale, out_q.scale)
                                              and np.array_equal(q.zero_point, out_q.zero_point)):
            raise ModelError(f"{op.where}: constant_values '{value_t.name}' must have the quantization of "
                             f"output '{out_t.name}'")
    value = batched_arg(op, args, 2)
    return value.reshape(value.shape[0])


@kernel("PAD", "PADV2", dtypes=("int8", "int16", "float32"))
def pad(op: Op, args: list) -> np.ndarray:
    """Pad every dimension with (before, after) elements of the padding value. Any layout and rank."""
    (x_t, _), out_t = io_tensors(op, 2)
    if x_t.dtype not in QUANTIZED + (np.float32,) or out_t.dtype != x_t.dtype:
        raise UnsupportedError(f"{op.where}: {x_t.dtype} input '{x_t.name}' with {out_t.dtype} output is not "
                               f"supported (int8, int16 or float32, the same in and out)")
    paddings = _paddings(op)
    check_output_shape(op, tuple(int(d) for d in np.add(x_t.shape, paddings.sum(axis=1))))
    if x_t.dtype in QUANTIZED:
        in_scale, in_zp = per_tensor_quant(op, x_t, "input")
        out_scale, out_zp = per_tensor_quant(op, out_t, "output")
        if abs(in_scale - out_scale) > SCALE_TOLERANCE or in_zp != out_zp:
            raise ModelError(f"{op.where}: input '{x_t.name}' and output '{out_t.name}' must have the same "
                             f"quantization (scale {in_scale} vs {out_scale}, zero point {in_zp} vs {out_zp})")
    x = batched_arg(op, args, 0)
    value = _pad_value(op, args)
    y = np.empty((x.shape[0],) + out_t.shape, dtype=x_t.dtype)
    y[...] = value.reshape((-1,) + (1,) * len(out_t.shape))
    inner = tuple(slice(int(before), int(before) + size) for (before, _), size in zip(paddings, x_t.shape))
    y[(slice(None),) + inner] = x
    return y
