"""Lowering of MEAN (kernels in mf_reduce.c): the reduced and kept dimensions are merged into groups
with their input strides here; int8 multipliers are computed as the reference (TFLM's QuantizedMeanOrSum)."""

from __future__ import annotations

import numpy as np

from microforge.codegen.lowering import Call, EmitContext, lowering
from microforge.codegen.ops.activations import reference_check, struct_name
from microforge.errors import UnsupportedError
from microforge.graph.ir import Op
from microforge.reference.checks import constant_ints, multiplier_for, resolve_axis
from microforge.reference.fixedpoint import wrap_int32

MAX_DIMS = 8  # MF_REDUCE_MAX_DIMS


def dimension_groups(shape: tuple[int, ...], axes: set[int]):
    """([(size, stride)] kept, [(size, stride)] reduced): size-1 dimensions dropped, neighbours of the
    same role merged (they are contiguous in the input)."""
    strides = [1] * len(shape)
    for d in range(len(shape) - 2, -1, -1):
        strides[d] = strides[d + 1] * shape[d + 1]
    groups: dict[bool, list[list[int]]] = {True: [], False: []}
    last_role = None
    for d, n in enumerate(shape):
        if n == 1:
            continue
        role = d in axes
        group = groups[role]
        if last_role == role and group:
            group[-1][0] *= n
            group[-1][1] = strides[d]
        else:
            group.append([n, strides[d]])
        last_role = role
    return groups[False] or [[1, 0]], groups[True] or [[1, 0]]


@lowering("MEAN", int16=True)
@lowering("MEAN")
def lower_mean(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    src, out = op.inputs[0], op.outputs[0]
    axes = {resolve_axis(op, int(a), len(src.shape), src) for a in constant_ints(op, 1, "axis")}
    kept, reduced = dimension_groups(src.shape, axes)
    if max(len(kept), len(reduced)) > MAX_DIMS:
        raise UnsupportedError(f"{op.where}: MEAN over {len(src.shape)} alternating dimensions is not supported")
    if out.size == 0:
        return Call("/* empty MEAN */")
    count = int(np.prod([src.shape[d] for d in axes], dtype=np.int64))
    multiplier = shift = zp_count = out_zp = 0
    if src.dtype in (np.int8, np.int16):
        multiplier, shift = multiplier_for(op, float(src.scale) / float(out.scale), "input/output scale ratio")
        pre_shift = min(count.bit_length() - 1, 32, 31 + shift)
        multiplier = (multiplier << pre_shift) // count
        shift -= pre_shift
        zp_count = int(wrap_int32(src.zero_point * count))
        out_zp = out.zero_point
    def pad(values) -> list[int]:
        values = [int(v) for v in values]
        return values + [0] * (MAX_DIMS - len(values))

    p = ctx.struct("mf_mean_params", struct_name(op, "mean"), {
        "kept_rank": len(kept), "reduced_rank": len(reduced),
        "kept_dims": pad(n for n, _ in kept), "kept_strides": pad(s for _, s in kept),
        "reduced_dims": pad(n for n, _ in reduced), "reduced_strides": pad(s for _, s in reduced),
        "in_zp_times_count": zp_count, "multiplier": multiplier, "shift": shift, "out_zero_point": out_zp,
        "count": float(np.float32(count)),
    })
    fn = {np.dtype(np.int8): "mf_mean_s8", np.dtype(np.int16): "mf_mean_s16"}.get(src.dtype, "mf_mean_f32")
    return Call(f"{fn}({p}, {ctx.tensor(src)}, {ctx.tensor(out)});", ("mf_reduce.c",))
