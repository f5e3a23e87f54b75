"""Reference kernel MEAN (int8, int16 and float32), bit-exact with TFLite Micro's reduce kernels.

The axes come from the constant int32 second input (negative axes allowed, duplicates ignored);
keep_dims keeps the reduced dimensions with size 1. int8 follows TFLM's QuantizedMeanOrSum, which
current TFLM uses whether or not input and output quantization are equal (older releases divided the raw
sum with truncation when they were): the int32 sum minus zp_in * count, rescaled by s_in / s_out with
1/count folded into the integer multiplier (shifted up by floor(log2(count)) bits first), plus zp_out.
int16 takes the same steps (int32 sum) and clamps to int16.

float32 sums in input order in float32 and divides by the count.
"""

from __future__ import annotations

import numpy as np

from microforge.errors import UnsupportedError
from microforge.graph.ir import Op
from microforge.reference.checks import (
    check_arity,
    check_dtypes,
    check_output_shape,
    check_per_tensor,
    constant_ints,
    multiplier_for,
    resolve_axis,
)
from microforge.reference.fixedpoint import multiply_by_quantized_multiplier, wrap_int32
from microforge.reference.registry import kernel



def _reduced_axes(op: Op) -> list[int]:
    """The distinct axes to reduce over, in [0, rank), in order of first mention (TFLM's ResolveAxis)."""
    src = op.inputs[0]
    axes: list[int] = []
    for a in constant_ints(op, 1, "axis"):
        axis = resolve_axis(op, int(a), len(src.shape), src)
        if axis not in axes:
            axes.append(axis)
    return axes


def _move_reduced_last(x: np.ndarray, axes: list[int]) -> np.ndarray:
    """(B, *shape) -> (B, *kept dims, count): the reduced elements of each output, in input order."""
    kept = [d for d in range(x.ndim - 1) if d not in axes]
    moved = np.transpose(x, [0] + [d + 1 for d in kept] + sorted(d + 1 for d in axes))
    return moved.reshape(moved.shape[:1 + len(kept)] + (-1,))


@kernel("MEAN", dtypes=("int8", "int16", "float32"))
def mean(op: Op, args: list) -> np.ndarray:
    """MEAN over the axes of the constant second input, with keep_dims; int8 or int16 (TFLM's rules) or
    float32."""
    check_arity(op, 2)
    dtype = check_dtypes(op, ("int8", "int16", "float32"))
    src, out = op.inputs[0], op.outputs[0]
    axes = _reduced_axes(op)
    keep_dims = bool(op.options.get("keep_dims", False))
    shape = [1 if d in axes else n for d, n in enumerate(src.shape) if keep_dims or d not in axes]
    check_output_shape(op, tuple(shape))
    count = int(np.prod([src.shape[d] for d in axes], dtype=np.int64))
    if count == 0:
        raise UnsupportedError(f"{op.where}: MEAN over empty dimensions of '{src.name}' is not supported")
    values = _move_reduced_last(args[0], axes)
    batch_shape = (values.shape[0],) + out.shape

    if dtype == "float32":
        # cumsum accumulates strictly in order, like TFLM's loop (np.sum would sum pairwise).
        total = np.cumsum(values, axis=-1, dtype=np.float32)[..., -1]
        return (total / np.float32(count)).astype(np.float32).reshape(batch_shape)

    check_per_tensor(op, [src, out])
    total = wrap_int32(values.astype(np.int64).sum(axis=-1))  # TFLM accumulates in int32
    multiplier, shift = multiplier_for(op, float(src.scale) / float(out.scale), "input/output scale ratio")
    # Fold 1/count into the multiplier; pre-shift by floor(log2(count)) bits (at most 32) to keep precision.
    pre_shift = min(count.bit_length() - 1, 32, 31 + shift)
    multiplier = (multiplier << pre_shift) // count
    shift -= pre_shift
    centred = wrap_int32(total - src.zero_point * count)
    raw = multiply_by_quantized_multiplier(centred, multiplier, shift) + out.zero_point
    info = np.iinfo(out.dtype)
    return np.clip(raw, int(info.min), int(info.max)).astype(out.dtype).reshape(batch_shape)
