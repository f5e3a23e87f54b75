"""Lowerings of AVERAGE_POOL_2D and MAX_POOL_2D, int8, int16 and float32 (kernels in mf_pool.c): the window
geometry and the fused-activation clamp are computed here, as the reference kernel computes them."""

from __future__ import annotations

import numpy as np

from microforge.codegen.lowering import Call, EmitContext, lowering
from microforge.codegen.ops.activations import reference_check, struct_name
from microforge.graph.ir import Op
from microforge.reference.checks import activation_of, quantized_activation_range
from microforge.reference.conv import window
from microforge.reference.fixedpoint import activation_range_float


@lowering("AVERAGE_POOL_2D", "MAX_POOL_2D")
@lowering("AVERAGE_POOL_2D", "MAX_POOL_2D", int16=True)
def lower_pool(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    src, out = op.inputs[0], op.outputs[0]
    batches, h, w, c = src.shape
    win = window(op, h, w, int(op.options["filter_height"]), int(op.options["filter_width"]), dilated=False)
    suffix = {np.dtype(np.int8): "_s8", np.dtype(np.int16): "_s16"}.get(src.dtype, "_f32")
    act_min, act_max, f_min, f_max = -128, 127, 0.0, 0.0
    if suffix != "_f32":
        act_min, act_max = quantized_activation_range(op, out.scale, out.zero_point, src.dtype.type)
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
    fn = ("mf_avg_pool" if op.type == "AVERAGE_POOL_2D" else "mf_max_pool") + suffix
    return Call(f"{fn}({p}, {ctx.tensor(src)}, {ctx.tensor(out)});", ("mf_pool.c",))
