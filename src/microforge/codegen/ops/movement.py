"""Lowerings of TRANSPOSE, SLICE, STRIDED_SLICE, SPLIT, SPLIT_V, PACK, UNPACK (strided copies), GATHER,
ARG_MAX, ARG_MIN, ZEROS_LIKE, SHAPE and FILL; kernels in mf_movement.c.

Every slicing or reordering op is described here as element-level dimensions with input and output
strides; `strided_copy` merges what is contiguous on both sides and hands the rest to one kernel. Forward
SLICE and STRIDED_SLICE declare a safe distance of 0 (their output may overlap their dying input from
below); the other ops copy into outputs of their own, planned as ordinary ops (the planner's aliasing is
whole buffers at one offset, so a SPLIT piece or an UNPACK row cannot be a view of its input's region).
"""

from __future__ import annotations

import numpy as np

from microforge.codegen.lowering import Call, EmitContext, lowering
from microforge.codegen.ops.activations import reference_check, struct_name
from microforge.errors import UnsupportedError
from microforge.graph.ir import Op, Tensor
from microforge.reference.movement import (
    arg_axis,
    fill_value,
    gather_geometry,
    pack_axis,
    slice_indices,
    split_sizes,
    transpose_perm,
    unpack_axis,
)

MAX_DIMS = 6  # MF_MOVE_MAX_DIMS
SOURCES = ("mf_movement.c",)


def contiguous_strides(shape) -> list[int]:
    """Element strides of a C-ordered array of `shape`."""
    strides = [1] * len(shape)
    for d in range(len(shape) - 2, -1, -1):
        strides[d] = strides[d + 1] * int(shape[d + 1])
    return strides


def merged_copy(dims, in_strides, out_strides) -> list[tuple[int, int, int]]:
    """(size, in stride, out stride) per dimension: size-1 ones dropped, a dimension merged into its outer
    neighbour when both sides step over it contiguously."""
    merged: list[tuple[int, int, int]] = []
    for n, s_in, s_out in zip(dims, in_strides, out_strides):
        n = int(n)
        if n == 1:
            continue
        if merged and merged[-1][1] == s_in * n and merged[-1][2] == s_out * n:
            outer = merged[-1]
            merged[-1] = (outer[0] * n, s_in, s_out)
        else:
            merged.append((n, int(s_in), int(s_out)))
    return merged


def strided_copy(op: Op, ctx: EmitContext, src: Tensor, dst: Tensor, dims, in_strides, out_strides,
                 in_offset: int = 0, out_offset: int = 0, hint: str = "copy") -> str | None:
    """The C statement copying the element positions `dims` (element strides on both sides, offsets in
    elements) from `src` to `dst`; None when there is nothing to copy."""
    if int(np.prod(dims, dtype=np.int64)) == 0:
        return None
    item = src.dtype.itemsize
    merged = merged_copy(dims, in_strides, out_strides)
    row = item
    if merged and merged[-1][1] == 1 and merged[-1][2] == 1:  # the innermost run is one memcpy
        row = merged[-1][0] * item
        merged = merged[:-1]
    if len(merged) > MAX_DIMS:
        raise UnsupportedError(f"{op.where}: a copy over {len(merged)} separate dimensions is not supported "
                               f"(at most {MAX_DIMS})")

    def pad(values) -> list[int]:
        values = [int(v) for v in values]
        return values + [0] * (MAX_DIMS - len(values))

    p = ctx.struct("mf_strided_copy_params", struct_name(op, hint), {
        "rank": len(merged),
        "dims": pad([n for n, _, _ in merged]),
        "in_strides": pad([s * item for _, s, _ in merged]),
        "out_strides": pad([s * item for _, _, s in merged]),
        "in_offset": in_offset * item,
        "out_offset": out_offset * item,
        "row_bytes": row,
    })
    return f"mf_strided_copy({p}, {ctx.tensor(src)}, {ctx.tensor(dst)});"


def calls(statements: list[str | None], what: str) -> Call:
    statements = [s for s in statements if s]
    if not statements:
        return Call(f"/* empty {what} */")
    return Call("\n    ".join(statements), SOURCES)


@lowering("TRANSPOSE")
def lower_transpose(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    perm = transpose_perm(op)
    src, out = op.inputs[0], op.outputs[0]
    in_strides = contiguous_strides(src.shape)
    return calls([strided_copy(op, ctx, src, out, out.shape, [in_strides[p] for p in perm],
                               contiguous_strides(out.shape))], op.type)


@lowering("SLICE", "STRIDED_SLICE")
def lower_slice(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    src, out = op.inputs[0], op.outputs[0]
    indices = slice_indices(op)  # arithmetic progressions, one per input dimension (shrunk ones: one index)
    in_strides = contiguous_strides(src.shape)
    counts = [len(ix) for ix in indices]
    steps = [int(ix[1] - ix[0]) if len(ix) > 1 else 1 for ix in indices]
    offset = sum(int(ix[0]) * s for ix, s in zip(indices, in_strides) if len(ix))
    call = calls([strided_copy(op, ctx, src, out, counts, [st * s for st, s in zip(steps, in_strides)],
                               contiguous_strides(counts), in_offset=offset)], op.type)
    if all(st > 0 for st in steps):
        # a forward slice reads input element i >= j for output element j (a subsequence, in order): its
        # output may start at or below its dying input (mf_movement.h)
        call.overlaps = {0: 0}
    return call


@lowering("SPLIT", "SPLIT_V")
def lower_split(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    src, axis, sizes = split_sizes(op)
    in_strides = contiguous_strides(src.shape)
    statements, start = [], 0
    for k, (out, size) in enumerate(zip(op.outputs, sizes)):
        statements.append(strided_copy(op, ctx, src, out, out.shape, in_strides, contiguous_strides(out.shape),
                                       in_offset=start * in_strides[axis], hint=f"split{k}"))
        start += size
    return calls(statements, op.type)


@lowering("UNPACK")
def lower_unpack(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    axis = unpack_axis(op)
    src = op.inputs[0]
    in_strides = contiguous_strides(src.shape)
    kept = in_strides[:axis] + in_strides[axis + 1:]
    return calls([strided_copy(op, ctx, src, out, out.shape, kept, contiguous_strides(out.shape),
                               in_offset=k * in_strides[axis], hint=f"unpack{k}")
                  for k, out in enumerate(op.outputs)], op.type)


@lowering("PACK")
def lower_pack(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    axis = pack_axis(op)
    out = op.outputs[0]
    out_strides = contiguous_strides(out.shape)
    kept = out_strides[:axis] + out_strides[axis + 1:]
    return calls([strided_copy(op, ctx, t, out, t.shape, contiguous_strides(t.shape), kept,
                               out_offset=k * out_strides[axis], hint=f"pack{k}")
                  for k, t in enumerate(op.inputs)], op.type)


@lowering("GATHER")
def lower_gather(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    axis, batch_dims, _ = gather_geometry(op)
    params, indices = op.inputs
    out = op.outputs[0]
    if out.size == 0:
        return Call("/* empty GATHER */")
    shape = params.shape
    zero = out.zero_point if out.dtype in (np.int8, np.int16) and out.quant is not None else 0
    zero_name = ctx.constant(struct_name(op, "zero"), np.array([zero], out.dtype))
    p = ctx.struct("mf_gather_params", struct_name(op, "gather"), {
        "batches": int(np.prod(shape[:batch_dims], dtype=np.int64)),
        "outer": int(np.prod(shape[batch_dims:axis], dtype=np.int64)),
        "axis_size": shape[axis],
        "coords": int(np.prod(indices.shape[batch_dims:], dtype=np.int64)),
        "inner_bytes": int(np.prod(shape[axis + 1:], dtype=np.int64)) * params.dtype.itemsize,
        "item_bytes": params.dtype.itemsize,
    })
    return Call(f"mf_gather({p}, {ctx.tensor(params)}, {ctx.tensor(indices)}, {ctx.tensor(out)}, {zero_name});",
                SOURCES)


@lowering("ARG_MAX", "ARG_MIN")
def lower_arg(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    axis = arg_axis(op)
    src, out = op.inputs[0], op.outputs[0]
    if out.size == 0:
        return Call(f"/* empty {op.type} */")
    p = ctx.struct("mf_arg_params", struct_name(op, "arg"), {
        "outer": int(np.prod(src.shape[:axis], dtype=np.int64)),
        "axis_size": src.shape[axis],
        "inner": int(np.prod(src.shape[axis + 1:], dtype=np.int64)),
    })
    fn = f"mf_{op.type.lower()}_{'s8' if src.dtype == np.int8 else 'f32'}"
    return Call(f"{fn}({p}, {ctx.tensor(src)}, {ctx.tensor(out)});", SOURCES)


@lowering("ZEROS_LIKE")
def lower_zeros_like(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    out = op.outputs[0]
    if out.nbytes == 0:
        return Call("/* empty ZEROS_LIKE */")
    return Call(f"memset({ctx.tensor(out)}, 0, {out.nbytes});")


@lowering("SHAPE")
def lower_shape(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    out = op.outputs[0]
    if out.nbytes == 0:
        return Call("/* SHAPE of a scalar */")
    dims = ctx.constant(struct_name(op, "dims"), np.array(op.inputs[0].shape, np.int32))
    return Call(f"memcpy({ctx.tensor(out)}, {dims}, {out.nbytes});")


@lowering("FILL")
def lower_fill(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    dims, value = fill_value(op)
    out = op.outputs[0]
    if out.size == 0:
        return Call("/* empty FILL */")
    item = ctx.constant(struct_name(op, "value"), np.array([value], out.dtype))
    return Call(f"mf_fill({ctx.tensor(out)}, {item}, {out.dtype.itemsize}, {out.size});", SOURCES)
