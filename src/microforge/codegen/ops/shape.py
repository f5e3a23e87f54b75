"""Lowerings of RESHAPE, SQUEEZE, EXPAND_DIMS (a memmove, or nothing when the planner let input and output
share storage) and CONCATENATION (each input's slices copied into place, kernel in mf_shape.c)."""

from __future__ import annotations

import numpy as np

from microforge.codegen.lowering import Call, EmitContext, lowering
from microforge.codegen.ops.activations import reference_check
from microforge.graph.ir import Op
from microforge.reference.checks import resolve_axis


@lowering("RESHAPE", "SQUEEZE", "EXPAND_DIMS")
def lower_reshape(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    src, dst = ctx.tensor(op.inputs[0]), ctx.tensor(op.outputs[0])
    if src == dst:
        return Call(f"/* {op.type}: output shares the input's storage */")
    if op.inputs[0].nbytes == 0:
        return Call(f"/* empty {op.type} */")
    return Call(f"memmove({dst}, {src}, {op.inputs[0].nbytes});")


@lowering("CONCATENATION")
def lower_concatenation(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    out = op.outputs[0]
    axis = resolve_axis(op, int(op.options.get("axis", 0)), len(out.shape), out)
    itemsize = out.dtype.itemsize
    outer = int(np.prod(out.shape[:axis], dtype=np.int64))
    out_stride = int(np.prod(out.shape[axis:], dtype=np.int64)) * itemsize
    base = ctx.tensor(out)
    statements, offset = [], 0
    for t in op.inputs:
        slice_bytes = int(np.prod(t.shape[axis:], dtype=np.int64)) * itemsize
        if slice_bytes and outer:
            statements.append(f"mf_copy_slices({ctx.tensor(t)}, (uint8_t *){base} + {offset}, {outer}, "
                              f"{slice_bytes}, {out_stride});")
        offset += slice_bytes
    if not statements:
        return Call("/* empty CONCATENATION */")
    return Call("\n    ".join(statements), ("mf_shape.c",))
