"""Reference kernels that only move data: RESHAPE, SQUEEZE, EXPAND_DIMS, CONCATENATION."""

from __future__ import annotations

import numpy as np

from microforge.errors import ModelError, UnsupportedError
from microforge.graph.ir import Op
from microforge.reference.checks import (
    batch_size,
    check_arity,
    check_dtypes,
    check_output_shape,
    check_symmetric_int16,
    constant_ints,
    resolve_axis,
)
from microforge.reference.registry import kernel

DATA_DTYPES = ("int8", "int16", "int32", "float32")  # what the pure data-movement kernels accept


# ----------------------------------------------------------------------------------------------------------
# Kernels


def _reshape_target(op: Op) -> tuple[int, ...]:
    """The requested shape: the constant shape input, else a non-empty new_shape option, else the output's."""
    if len(op.inputs) == 2 and op.inputs[1].is_constant:
        return tuple(constant_ints(op, 1, "shape"))
    new_shape = op.options.get("new_shape")
    if new_shape and len(op.inputs) == 1:
        return tuple(int(d) for d in new_shape)
    return op.outputs[0].shape


@kernel("RESHAPE", dtypes=DATA_DTYPES)
def reshape(op: Op, args: list) -> np.ndarray:
    """RESHAPE: same data, new shape. One dimension may be -1 (inferred); element counts must match."""
    check_arity(op, (1, 2))
    check_dtypes(op, DATA_DTYPES)
    src = op.inputs[0]
    target = list(_reshape_target(op))
    if target == [0] and len(op.inputs) == 1 and src.size == 1:
        target = []  # legacy converters wrote [0] for a scalar; TFLM reads it so
    if target.count(-1) > 1 or any(d < -1 for d in target):
        raise ModelError(f"{op.where}: shape {target} for '{op.outputs[0].name}' is invalid")
    known = int(np.prod([d for d in target if d != -1], dtype=np.int64))
    if -1 in target:
        if known == 0 or src.size % known:
            raise ModelError(f"{op.where}: cannot reshape '{src.name}' {list(src.shape)} to {target}")
        target[target.index(-1)] = src.size // known
    if int(np.prod(target, dtype=np.int64)) != src.size:
        raise ModelError(f"{op.where}: cannot reshape '{src.name}' {list(src.shape)} ({src.size} elements) "
                         f"to {target}")
    check_output_shape(op, tuple(target))
    x = args[0]
    return x.reshape((x.shape[0],) + op.outputs[0].shape)


@kernel("SQUEEZE", dtypes=DATA_DTYPES)
def squeeze(op: Op, args: list) -> np.ndarray:
    """SQUEEZE: drop the size-1 dimensions listed in squeeze_dims (all size-1 dimensions if none listed)."""
    check_arity(op, 1)
    check_dtypes(op, DATA_DTYPES)
    src = op.inputs[0]
    dims = op.options.get("squeeze_dims") or []
    if dims:
        drop = {resolve_axis(op, int(d), len(src.shape), src) for d in dims}
        if any(src.shape[d] != 1 for d in drop):
            raise ModelError(f"{op.where}: cannot squeeze dimensions {sorted(drop)} of '{src.name}' "
                             f"{list(src.shape)}: not all have size 1")
    else:
        drop = {d for d, n in enumerate(src.shape) if n == 1}
    check_output_shape(op, tuple(n for d, n in enumerate(src.shape) if d not in drop))
    x = args[0]
    return x.reshape((x.shape[0],) + op.outputs[0].shape)


@kernel("EXPAND_DIMS", dtypes=DATA_DTYPES)
def expand_dims(op: Op, args: list) -> np.ndarray:
    """EXPAND_DIMS: insert a size-1 dimension at the (constant, possibly negative) axis of input 1."""
    check_arity(op, 2)
    check_dtypes(op, DATA_DTYPES)
    src = op.inputs[0]
    axis = constant_ints(op, 1, "axis")
    if axis.size != 1:
        raise ModelError(f"{op.where}: axis '{op.inputs[1].name}' must hold one value, got {axis.tolist()}")
    rank = len(src.shape)
    position = resolve_axis(op, int(axis[0]), rank + 1, src)
    check_output_shape(op, src.shape[:position] + (1,) + src.shape[position:])
    x = args[0]
    return x.reshape((x.shape[0],) + op.outputs[0].shape)


@kernel("CONCATENATION", dtypes=DATA_DTYPES)
def concatenation(op: Op, args: list) -> np.ndarray:
    """CONCATENATION along `axis` (negative counts from the end).

    int8 and int16 inputs must have the output's scale and zero point (TFLM copies, never requantizes;
    it checks this for int8 and zero point 0 for int16); TFLite's converters give them all the output's
    quantization.
    """
    if not op.inputs:
        raise ModelError(f"{op.where}: has no inputs")
    check_arity(op, len(op.inputs))
    check_dtypes(op, DATA_DTYPES, list(op.inputs) + [op.outputs[0]])
    if op.options.get("fused_activation_function", "NONE") != "NONE":
        raise UnsupportedError(f"{op.where}: fused activation "
                               f"{op.options['fused_activation_function']} is not supported (TFLM allows NONE)")
    first = op.inputs[0]
    rank = len(first.shape)
    axis = resolve_axis(op, int(op.options.get("axis", 0)), rank, op.outputs[0])
    for t in op.inputs:
        if len(t.shape) != rank or any(t.shape[d] != first.shape[d] for d in range(rank) if d != axis):
            raise ModelError(f"{op.where}: cannot concatenate '{t.name}' {list(t.shape)} with "
                             f"'{first.name}' {list(first.shape)} along axis {axis}")
    out = op.outputs[0]
    # TFLM copies raw values: int8 inputs must share the output's quantization (TFLM checks it); quantized
    # int16 ones need zero point 0 (TFLM checks) and, since nothing rescales them, the output's scale too.
    # Unquantized int16 (plain integers) is copied as it is.
    tensors = list(op.inputs) + [out]
    if out.dtype == np.int8 or (out.dtype == np.int16 and any(t.quant is not None for t in tensors)):
        for t in tensors:
            check_symmetric_int16(op, t)
        for t in op.inputs:
            if t.quant is None or out.quant is None or not t.quant.equals(out.quant):
                raise UnsupportedError(f"{op.where}: {out.dtype} input '{t.name}' must have the scale and zero "
                                       f"point of the output '{out.name}' (TFLM does not requantize)")
    shape = list(first.shape)
    shape[axis] = sum(t.shape[axis] for t in op.inputs)
    check_output_shape(op, tuple(shape))
    n = batch_size(args)
    parts = [np.broadcast_to(a, (n,) + a.shape[1:]) for a in args]  # constants carry a batch of 1
    # C order whatever the parts' layouts: callers view the bytes of the result
    return np.ascontiguousarray(np.concatenate(parts, axis=axis + 1), dtype=out.dtype)
