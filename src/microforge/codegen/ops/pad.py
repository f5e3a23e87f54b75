"""Lowerings of PAD and PADV2 (kernels in mf_pad.c).

Any rank: every dimension whose inner neighbour is unpadded is merged into it, so the kernel copies
rows as long as possible into an output pre-filled with the padding value (the output zero point for
int8 PAD, 0.0 for float32 PAD, PADV2's constant_values, read at run time if it is not a constant).
"""

from __future__ import annotations

import numpy as np

from microforge.codegen.lowering import Call, EmitContext, lowering
from microforge.codegen.ops.activations import reference_check, struct_name
from microforge.codegen.ops.quantize import float_literal
from microforge.errors import UnsupportedError
from microforge.graph.ir import Op

MAX_DIMS = 8  # MF_PAD_MAX_DIMS


def merged_dims(shape: tuple[int, ...], paddings: np.ndarray) -> list[tuple[int, int, int]]:
    """(size, before, after) per dimension, each unpadded dimension merged into its outer neighbour."""
    merged: list[tuple[int, int, int]] = []
    for n, (before, after) in zip(shape, paddings.tolist()):
        if merged and before == 0 and after == 0:
            outer = merged[-1]
            merged[-1] = (outer[0] * n, outer[1] * n, outer[2] * n)
        else:
            merged.append((int(n), int(before), int(after)))
    return merged or [(1, 0, 0)]


@lowering("PAD", "PADV2", int16=True)
@lowering("PAD", "PADV2")
def lower_pad(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    src, out = op.inputs[0], op.outputs[0]
    paddings = np.asarray(op.inputs[1].data, dtype=np.int64).reshape(len(src.shape), 2)
    dims = merged_dims(src.shape, paddings)
    if len(dims) > MAX_DIMS:
        raise UnsupportedError(f"{op.where}: padding {len(dims)} separately padded dimensions "
                               f"(at most {MAX_DIMS} are supported)")
    if out.size == 0:
        return Call(f"/* empty {op.type} */")
    itemsize = src.dtype.itemsize
    out_dims = [n + b + a for n, b, a in dims]
    strides = [itemsize] * len(dims)
    for d in range(len(dims) - 2, -1, -1):
        strides[d] = strides[d + 1] * out_dims[d + 1]
    def pad(values) -> list[int]:
        values = [int(v) for v in values]
        return values + [0] * (MAX_DIMS - len(values))

    p = ctx.struct("mf_pad_params", struct_name(op, "pad"), {
        "rank": len(dims),
        "in_dims": pad([n for n, _, _ in dims[:-1]]),
        "out_strides": pad(strides[:-1]),
        "first_offset": sum(b * s for (_, b, _), s in zip(dims, strides)),
        "row_bytes": dims[-1][0] * itemsize if src.size else 0,
        "out_elements": out.size,
    })
    integer = src.dtype in (np.int8, np.int16)
    value_t = op.inputs[2] if len(op.inputs) > 2 else None
    if value_t is None:
        value = str(out.zero_point) if integer else "0.0f"
    elif value_t.is_constant:
        v = np.asarray(value_t.data).reshape(-1)[0]
        value = str(int(v)) if integer else float_literal(v)
    else:
        value = f"{ctx.tensor(value_t)}[0]"
    fn = {np.dtype(np.int8): "mf_pad_s8", np.dtype(np.int16): "mf_pad_s16"}.get(src.dtype, "mf_pad_f32")
    return Call(f"{fn}({p}, {ctx.tensor(src)}, {ctx.tensor(out)}, {value});", ("mf_pad.c",))
