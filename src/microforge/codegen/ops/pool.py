"""Lowerings of AVERAGE_POOL_2D and MAX_POOL_2D (kernels in mf_pool.c): the window geometry and the
fused-activation clamp are computed here, as the reference kernel computes them."""

from __future__ import annotations

import numpy as np

from microforge.codegen.lowering import Call, EmitContext, lowering
from microforge.codegen.ops.activations import reference_check, struct_name
from microforge.graph.ir import Op
from microforge.reference.checks import activation_of, quantized_activation_range
from microforge.reference.conv import window
from microforge.reference.fixedpoint import activation_range_float


@lowering("AVERAGE_POOL_2D", "MAX_POOL_2D")
def lower_pool(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    src, out = op.inputs[0], op.outputs[0]
    batches, h, w, c = src.shape
    win = window(op, h, w, int(op.options["filter_height"]), int(op.options["filter_width"]), dilated=False)
    int8 = src.dtype == np.int8
    act_min, act_max, f_min, f_max = -128, 127, 0.0, 0.0
    if int8:
        act_min, act_max = quantized_activation_range(op, out.scale, out.zero_point)
    else:
        f_min, f_max = activation_range_float(activation_of(op))
    if out.size == 0:
        return Call(f"/* empty {op.type} */")
    p = ctx.struct("mf_pool_params", struct_name(op, "pool"), {
        "batches": batches, "in_h": h, "in_w": w, "channels": c, "out_h": win.out_h, "out_w": win.out_w,
        "filter_h": win.kh, "filter_w": win.kw, "stride_h": win.stride_h, "stride_w": win.stride_w,
        "pad_top": win.pad_top, "pad_left": win.pad_left, "act_min": act_min, "act_max": act_max,
        "f_min": f_min, "f_max": f_max,
    })
    fn = ("mf_avg_pool" if op.type == "AVERAGE_POOL_2D" else "mf_max_pool") + ("_s8" if int8 else "_f32")
    return Call(f"{fn}({p}, {ctx.tensor(src)}, {ctx.tensor(out)});", ("mf_pool.c",))
