"""Reference kernels that select, reorder or make values without arithmetic, as TFLite Micro's do:
TRANSPOSE, SLICE, STRIDED_SLICE, SPLIT, SPLIT_V, PACK, UNPACK, GATHER, ARG_MAX, ARG_MIN, ZEROS_LIKE, SHAPE
and FILL.

None of them rescales: where int8/int16 values are copied, input and output must share one quantization
(ModelError otherwise). Their parameters (permutations, begins, sizes, axes, counts) must be constants, so
every shape is known when the model is loaded. SPLIT, SPLIT_V and UNPACK return one array per output.
"""

from __future__ import annotations

import numpy as np

from microforge.errors import ModelError, UnsupportedError
from microforge.graph.ir import Op, Tensor
from microforge.reference.checks import (
    batch_size,
    check_dtypes,
    constant_ints,
    resolve_axis,
)
from microforge.reference.registry import kernel

MOVING_DTYPES = ("int8", "int16", "int32", "float32")  # the data-movement kernels TFLM has for all four
ARG_DTYPES = ("int8", "float32")
MAX_RANK = 5  # TFLM's SLICE and TRANSPOSE kernels stop at 5-D
MAX_STRIDED_SLICE_RANK = 4  # its STRIDED_SLICE at 4-D
TRANSPOSE_DTYPES = ("int8", "int16", "float32")  # TFLM's TRANSPOSE fails on int32
ZEROS_LIKE_DTYPES = ("int8", "int32", "float32")  # TFLM's ZEROS_LIKE has no int16
FILL_DTYPES = ("int8", "int32", "float32")  # nor its FILL
GATHER_DTYPES = ("int8", "float32")  # TFLM's GATHER moves only these


# ----------------------------------------------------------------------------------------------------------
# Shared checks


def _inputs(op: Op, count: int | tuple[int, ...], outputs: int | None = 1) -> None:
    """The op has `count` inputs, all present, and `outputs` outputs (None: at least one)."""
    allowed = (count,) if isinstance(count, int) else count
    if len(op.inputs) not in allowed or any(t is None for t in op.inputs):
        raise ModelError(f"{op.where}: expects {' or '.join(map(str, allowed))} inputs, "
                         f"got {[t.name if t is not None else '-' for t in op.inputs]}")
    if (outputs is not None and len(op.outputs) != outputs) or not op.outputs:
        raise ModelError(f"{op.where}: expects {outputs if outputs is not None else 'at least 1'} output(s), "
                         f"got {len(op.outputs)}")


def _declared(op: Op, out: Tensor, shape) -> None:
    shape = tuple(int(d) for d in shape)
    if shape != out.shape:
        raise ModelError(f"{op.where}: output '{out.name}' is declared {list(out.shape)} but the op computes "
                         f"{list(shape)}")


def same_quantization(op: Op, sources: list[Tensor], targets: list[Tensor]) -> None:
    """Quantized values are copied raw, so every source and target must share one scale and zero point."""
    for src in sources:
        if src.dtype not in (np.int8, np.int16):
            continue
        for t in targets:
            if src.quant is None and t.quant is None:
                continue
            if src.quant is None or t.quant is None or not src.quant.equals(t.quant):
                def describe(q):
                    return "none" if q is None else f"scale {q.scale.tolist()}, zero point {q.zero_point.tolist()}"
                raise ModelError(f"{op.where}: input '{src.name}' ({describe(src.quant)}) and output '{t.name}' "
                                 f"({describe(t.quant)}) must have the same quantization: {op.type} copies "
                                 f"values and never rescales")


def _rank_at_most(op: Op, t: Tensor, limit: int = MAX_RANK) -> None:
    if len(t.shape) > limit:
        raise UnsupportedError(f"{op.where}: '{t.name}' has rank {len(t.shape)}; {op.type} supports at most "
                               f"{limit} dimensions (as TFLM)")


def _vector(op: Op, index: int, what: str, length: int) -> np.ndarray:
    values = constant_ints(op, index, what)
    if values.size != length:
        raise ModelError(f"{op.where}: {what} '{op.inputs[index].name}' must hold {length} values, "
                         f"got {values.tolist()}")
    return values


def _one_axis(op: Op, index: int, rank: int, tensor: Tensor) -> int:
    axis = constant_ints(op, index, "axis")
    if axis.size != 1:
        raise ModelError(f"{op.where}: axis '{op.inputs[index].name}' must hold one value, got {axis.tolist()}")
    return resolve_axis(op, int(axis[0]), rank, tensor)


def _batched(args: list, index: int) -> np.ndarray:
    """args[index] with the batch of the whole call (constants carry a batch of 1)."""
    a = np.asarray(args[index])
    n = batch_size([x for x in args if x is not None])
    return np.broadcast_to(a, (n,) + a.shape[1:])


# ----------------------------------------------------------------------------------------------------------
# Reordering and slicing


def transpose_perm(op: Op) -> tuple[int, ...]:
    """TRANSPOSE's constant permutation, checked."""
    _inputs(op, 2)
    x = op.inputs[0]
    _rank_at_most(op, x)
    perm = _vector(op, 1, "permutation", len(x.shape))
    perm = [int(p) for p in perm]
    if sorted(perm) != list(range(len(x.shape))):  # TFLite refuses negative entries too
        written = constant_ints(op, 1, "permutation").tolist()
        raise ModelError(f"{op.where}: permutation '{op.inputs[1].name}' {written} is not a permutation of the "
                         f"{len(x.shape)} dimensions of '{x.name}'")
    return tuple(perm)


@kernel("TRANSPOSE", dtypes=TRANSPOSE_DTYPES)
def transpose(op: Op, args: list) -> np.ndarray:
    """Output dimension d is input dimension perm[d]."""
    perm = transpose_perm(op)
    x_t, out = op.inputs[0], op.outputs[0]
    check_dtypes(op, TRANSPOSE_DTYPES)
    same_quantization(op, [x_t], [out])
    _declared(op, out, [x_t.shape[p] for p in perm])
    return np.ascontiguousarray(np.transpose(args[0], (0,) + tuple(p + 1 for p in perm)))


def slice_indices(op: Op) -> list[np.ndarray]:
    """The input indices each output dimension reads, for SLICE and STRIDED_SLICE (checked)."""
    x = op.inputs[0]
    rank = len(x.shape)
    _rank_at_most(op, x, MAX_RANK if op.type == "SLICE" else MAX_STRIDED_SLICE_RANK)
    if op.type == "SLICE":
        _inputs(op, 3)
        begin, size = _vector(op, 1, "begin", rank), _vector(op, 2, "size", rank)
        indices = []
        for d, (b, s, n) in enumerate(zip(begin.tolist(), size.tolist(), x.shape)):
            end = n if s == -1 else b + s
            if not (0 <= b <= n and s >= -1 and b <= end <= n):
                raise ModelError(f"{op.where}: begin {b} and size {s} of dimension {d} lie outside '{x.name}' "
                                 f"{list(x.shape)}")
            indices.append(np.arange(b, end))
        return indices
    _inputs(op, 4)
    for mask in ("ellipsis_mask", "new_axis_mask"):
        if op.options.get(mask, 0):
            raise UnsupportedError(f"{op.where}: {mask} {op.options[mask]} is not supported (TFLM refuses it)")
    if op.options.get("offset", False):
        raise UnsupportedError(f"{op.where}: the offset option is not supported")
    begin, end, strides = (_vector(op, k, what, rank) for k, what in ((1, "begin"), (2, "end"), (3, "strides")))
    begin_mask, end_mask = int(op.options.get("begin_mask", 0)), int(op.options.get("end_mask", 0))
    shrink = int(op.options.get("shrink_axis_mask", 0))
    indices = []
    for d, n in enumerate(x.shape):
        stride = int(strides[d])
        if stride == 0:
            raise ModelError(f"{op.where}: stride of dimension {d} is 0")
        # TFLM's StartForAxis/StopForAxis: masks, then negative indices, then clamping to the dimension
        start = (-(2**31) if stride > 0 else 2**31 - 1) if begin_mask >> d & 1 else int(begin[d])
        start = start + n if start < 0 else start
        start = min(max(start, 0), n) if stride > 0 else min(max(start, -1), n - 1)
        if shrink >> d & 1:
            if stride < 0:  # measured: TFLM's result is then read from outside the input
                raise UnsupportedError(f"{op.where}: shrinking dimension {d} with a negative stride is not "
                                       f"supported (TFLM reads outside the input)")
            if not 0 <= start < n:
                raise ModelError(f"{op.where}: begin {int(begin[d])} of shrunk dimension {d} lies outside "
                                 f"'{x.name}' {list(x.shape)}")
            indices.append(np.array([start]))
            continue
        stop = (2**31 - 1 if stride > 0 else -(2**31)) if end_mask >> d & 1 else int(end[d])
        stop = stop + n if stop < 0 else stop
        stop = min(max(stop, 0), n) if stride > 0 else min(max(stop, -1), n - 1)
        indices.append(np.arange(start, stop, stride))
    return indices


def slice_output_shape(op: Op, indices: list[np.ndarray]) -> tuple[int, ...]:
    shrink = int(op.options.get("shrink_axis_mask", 0)) if op.type == "STRIDED_SLICE" else 0
    return tuple(len(ix) for d, ix in enumerate(indices) if not shrink >> d & 1)


@kernel("SLICE", "STRIDED_SLICE", dtypes=MOVING_DTYPES)
def slice_(op: Op, args: list) -> np.ndarray:
    """SLICE (begin, size with -1 for the rest) and STRIDED_SLICE (begin, end, strides and TFLM's masks)."""
    indices = slice_indices(op)
    x_t, out = op.inputs[0], op.outputs[0]
    check_dtypes(op, MOVING_DTYPES)
    same_quantization(op, [x_t], [out])
    _declared(op, out, slice_output_shape(op, indices))
    x = args[0]
    y = x[np.ix_(np.arange(x.shape[0]), *indices)] if indices else x
    return np.ascontiguousarray(y.reshape((x.shape[0],) + out.shape))


def split_sizes(op: Op) -> tuple[Tensor, int, list[int]]:
    """(input, axis, size of each output along the axis) of SPLIT or SPLIT_V, checked."""
    if op.type == "SPLIT":
        _inputs(op, 2, outputs=None)
        x = op.inputs[1]
        axis = _one_axis(op, 0, len(x.shape), x)
        count = int(op.options.get("num_splits", len(op.outputs)))
        if count != len(op.outputs) or count <= 0 or x.shape[axis] % count:
            raise ModelError(f"{op.where}: cannot split dimension {axis} of '{x.name}' {list(x.shape)} into "
                             f"{count} equal parts with {len(op.outputs)} outputs")
        return x, axis, [x.shape[axis] // count] * count
    _inputs(op, 3, outputs=None)
    x = op.inputs[0]
    axis = _one_axis(op, 2, len(x.shape), x)
    sizes = _vector(op, 1, "size_splits", len(op.outputs)).tolist()
    if sizes.count(-1) > 1 or any(s < -1 for s in sizes):
        raise ModelError(f"{op.where}: size_splits {sizes} may hold one -1 and no other negative value")
    if -1 in sizes:
        sizes[sizes.index(-1)] = x.shape[axis] - sum(s for s in sizes if s != -1)
    if sum(sizes) != x.shape[axis] or min(sizes) < 0:
        raise ModelError(f"{op.where}: size_splits {_vector(op, 1, 'size_splits', len(op.outputs)).tolist()} do "
                         f"not add up to dimension {axis} of '{x.name}' {list(x.shape)}")
    return x, axis, sizes


@kernel("SPLIT", "SPLIT_V", dtypes=MOVING_DTYPES)
def split(op: Op, args: list) -> list[np.ndarray]:
    """Consecutive pieces of the input along the axis, one per output (SPLIT: equal ones)."""
    x_t, axis, sizes = split_sizes(op)
    check_dtypes(op, MOVING_DTYPES, [x_t] + list(op.outputs))
    same_quantization(op, [x_t], list(op.outputs))
    x = _batched(args, op.inputs.index(x_t))
    pieces, start = [], 0
    for out, size in zip(op.outputs, sizes):
        shape = list(x_t.shape)
        shape[axis] = size
        _declared(op, out, shape)
        pieces.append(np.ascontiguousarray(np.take(x, np.arange(start, start + size), axis=axis + 1)))
        start += size
    return pieces


def pack_axis(op: Op) -> int:
    if not op.inputs or any(t is None for t in op.inputs) or len(op.outputs) != 1:
        raise ModelError(f"{op.where}: expects inputs and one output")
    first = op.inputs[0]
    count = int(op.options.get("values_count", len(op.inputs)))
    if count != len(op.inputs):
        raise ModelError(f"{op.where}: values_count {count} but {len(op.inputs)} inputs")
    for t in op.inputs:
        if t.shape != first.shape:
            raise ModelError(f"{op.where}: cannot pack '{t.name}' {list(t.shape)} with '{first.name}' "
                             f"{list(first.shape)}")
    return resolve_axis(op, int(op.options.get("axis", 0)), len(first.shape) + 1, op.outputs[0])


@kernel("PACK", dtypes=MOVING_DTYPES)
def pack(op: Op, args: list) -> np.ndarray:
    """Stack the equally shaped inputs along a new dimension at `axis`."""
    axis = pack_axis(op)
    out = op.outputs[0]
    check_dtypes(op, MOVING_DTYPES, list(op.inputs) + [out])
    same_quantization(op, list(op.inputs), [out])
    shape = list(op.inputs[0].shape)
    shape.insert(axis, len(op.inputs))
    _declared(op, out, shape)
    return np.ascontiguousarray(np.stack([_batched(args, k) for k in range(len(args))], axis=axis + 1))


def unpack_axis(op: Op) -> int:
    _inputs(op, 1, outputs=None)
    x = op.inputs[0]
    axis = resolve_axis(op, int(op.options.get("axis", 0)), len(x.shape), x)
    num = int(op.options.get("num", x.shape[axis]))
    if num != x.shape[axis] or len(op.outputs) != num:
        raise ModelError(f"{op.where}: unpacking dimension {axis} of '{x.name}' {list(x.shape)} gives "
                         f"{x.shape[axis]} outputs, but num is {num} and the op has {len(op.outputs)}")
    return axis


@kernel("UNPACK", dtypes=MOVING_DTYPES)
def unpack(op: Op, args: list) -> list[np.ndarray]:
    """One output per index of `axis`, that dimension removed."""
    axis = unpack_axis(op)
    x_t = op.inputs[0]
    check_dtypes(op, MOVING_DTYPES, [x_t] + list(op.outputs))
    same_quantization(op, [x_t], list(op.outputs))
    shape = x_t.shape[:axis] + x_t.shape[axis + 1:]
    pieces = []
    for k, out in enumerate(op.outputs):
        _declared(op, out, shape)
        pieces.append(np.ascontiguousarray(np.take(args[0], k, axis=axis + 1)))
    return pieces


# ----------------------------------------------------------------------------------------------------------
# GATHER


def gather_geometry(op: Op) -> tuple[int, int, tuple[int, ...]]:
    """(axis, batch_dims, output shape) of GATHER, checked as TFLM checks them. With constant indices an
    index outside the gathered dimension is a ModelError here, when the model is loaded (TFLM fails)."""
    _inputs(op, 2)
    params, indices = op.inputs
    if indices.dtype != np.int32:
        raise UnsupportedError(f"{op.where}: indices '{indices.name}' must be int32, not {indices.dtype}")
    rank = len(params.shape)
    axis = resolve_axis(op, int(op.options.get("axis", 0)), rank, params)
    batch_dims = int(op.options.get("batch_dims", 0))
    if batch_dims < 0:
        batch_dims += len(indices.shape)
    if not 0 <= batch_dims <= min(axis, len(indices.shape)):
        raise ModelError(f"{op.where}: batch_dims {op.options.get('batch_dims', 0)} must lie in [0, axis {axis}] "
                         f"and within the rank of indices '{indices.name}'")
    if params.shape[:batch_dims] != indices.shape[:batch_dims]:
        raise ModelError(f"{op.where}: the first {batch_dims} dimensions of '{params.name}' {list(params.shape)} "
                         f"and '{indices.name}' {list(indices.shape)} must agree (batch_dims)")
    if indices.is_constant:
        data = np.asarray(indices.data)
        bad = data[(data < 0) | (data >= params.shape[axis])]
        if bad.size:
            raise ModelError(f"{op.where}: index {int(bad[0])} of '{indices.name}' lies outside dimension {axis} "
                             f"of '{params.name}' {list(params.shape)}")
    shape = params.shape[:axis] + indices.shape[batch_dims:] + params.shape[axis + 1:]
    return axis, batch_dims, shape


@kernel("GATHER", dtypes=GATHER_DTYPES, prepare=gather_geometry)
def gather(op: Op, args: list) -> np.ndarray:
    """Output[batch, outer, index position, inner] = params[batch, outer, indices[batch, position], inner].

    Runtime indices outside the dimension, where TFLM fails the inference, select zeros (the zero point
    for quantized values: real 0.0), in the C too."""
    axis, batch_dims, shape = gather_geometry(op)
    params_t, indices_t = op.inputs
    out = op.outputs[0]
    check_dtypes(op, GATHER_DTYPES, [params_t, out])
    same_quantization(op, [params_t], [out])
    _declared(op, out, shape)
    n = batch_size([a for a in args if a is not None])
    batches = int(np.prod(params_t.shape[:batch_dims], dtype=np.int64))
    outer = int(np.prod(params_t.shape[batch_dims:axis], dtype=np.int64))
    size = params_t.shape[axis]
    inner = int(np.prod(params_t.shape[axis + 1:], dtype=np.int64))
    p = _batched(args, 0).reshape(n, batches, outer, size, inner).transpose(0, 1, 3, 2, 4)
    idx = _batched(args, 1).reshape(n, batches, -1)
    valid = (idx >= 0) & (idx < size)
    picked = p[np.arange(n)[:, None, None], np.arange(batches)[None, :, None], np.where(valid, idx, 0)]
    zero = out.zero_point if out.dtype in (np.int8, np.int16) and out.quant is not None else 0
    picked = np.where(valid[..., None, None], picked, np.array(zero, out.dtype))
    return np.ascontiguousarray(picked.transpose(0, 1, 3, 2, 4).astype(out.dtype)).reshape((n,) + shape)


# ----------------------------------------------------------------------------------------------------------
# ARG_MAX, ARG_MIN


def arg_axis(op: Op) -> int:
    _inputs(op, 2)
    x, out = op.inputs[0], op.outputs[0]
    axis = _one_axis(op, 1, len(x.shape), x)
    if out.dtype != np.int32:
        raise UnsupportedError(f"{op.where}: output '{out.name}' must be int32, not {out.dtype}")
    wanted = op.options.get("output_type", "INT32")
    if wanted != "INT32":
        raise UnsupportedError(f"{op.where}: output_type {wanted} is not supported (INT32 only)")
    return axis


@kernel("ARG_MAX", "ARG_MIN", dtypes=ARG_DTYPES)
def arg_max_min(op: Op, args: list) -> np.ndarray:
    """The index of the largest (smallest) value along the axis; the first such index on ties, as TFLM."""
    axis = arg_axis(op)
    x_t, out = op.inputs[0], op.outputs[0]
    check_dtypes(op, ARG_DTYPES, [x_t])
    _declared(op, out, x_t.shape[:axis] + x_t.shape[axis + 1:])
    x = np.moveaxis(args[0], axis + 1, 0)
    best, at = x[0].copy(), np.zeros(x.shape[1:], np.int32)
    for k in range(1, x.shape[0]):  # strict comparison from the first on, as TFLM (NaN never wins)
        better = x[k] > best if op.type == "ARG_MAX" else x[k] < best
        best, at = np.where(better, x[k], best), np.where(better, np.int32(k), at)
    return at


# ----------------------------------------------------------------------------------------------------------
# Values that do not depend on the input's values


@kernel("ZEROS_LIKE", dtypes=ZEROS_LIKE_DTYPES)
def zeros_like(op: Op, args: list) -> np.ndarray:
    """Zeros of the input's shape and type: raw 0, as TFLM writes them (for int8 not the zero point)."""
    _inputs(op, 1)
    x_t, out = op.inputs[0], op.outputs[0]
    check_dtypes(op, ZEROS_LIKE_DTYPES)
    _declared(op, out, x_t.shape)
    return np.zeros((batch_size(args),) + out.shape, out.dtype)


@kernel("SHAPE", dtypes=("int8", "int16", "int32", "float32"))
def shape(op: Op, args: list) -> np.ndarray:
    """The input's TFLite shape as int32 (a constant once the model is loaded)."""
    _inputs(op, 1)
    x_t, out = op.inputs[0], op.outputs[0]
    if out.dtype != np.int32 or op.options.get("out_type", "INT32") != "INT32":
        raise UnsupportedError(f"{op.where}: output '{out.name}' must be int32 (TFLM's SHAPE writes int32 only)")
    _declared(op, out, (len(x_t.shape),))
    return np.broadcast_to(np.array(x_t.shape, np.int32), (batch_size(args), len(x_t.shape))).copy()


def fill_value(op: Op) -> tuple[tuple[int, ...], np.ndarray]:
    """FILL's constant dims and its one value, checked."""
    _inputs(op, 2)
    dims_t, value_t = op.inputs
    out = op.outputs[0]
    dims = constant_ints(op, 0, "dims")
    if np.any(dims < 0):
        raise ModelError(f"{op.where}: dims '{dims_t.name}' {dims.tolist()} must not be negative")
    if not value_t.is_constant:
        raise UnsupportedError(f"{op.where}: the value '{value_t.name}' must be a constant")
    if value_t.size != 1 or len(value_t.shape) != 0:
        raise ModelError(f"{op.where}: value '{value_t.name}' must be a scalar, got shape {list(value_t.shape)}")
    if value_t.dtype != out.dtype or out.dtype.name not in FILL_DTYPES:
        raise UnsupportedError(f"{op.where}: value '{value_t.name}' {value_t.dtype} and output '{out.name}' "
                               f"{out.dtype} must share one type of {', '.join(FILL_DTYPES)} (as TFLM)")
    same_quantization(op, [value_t], [out])
    _declared(op, out, dims.tolist())
    return tuple(int(d) for d in dims), np.asarray(value_t.data, out.dtype).reshape(())


@kernel("FILL", dtypes=("int32", "int64"))  # the type of dims; the value: FILL_DTYPES
def fill(op: Op, args: list) -> np.ndarray:
    """Every element the value (its raw bytes: the value shares the output's quantization)."""
    dims, value = fill_value(op)
    return np.full((batch_size(args),) + dims, value, op.outputs[0].dtype)
