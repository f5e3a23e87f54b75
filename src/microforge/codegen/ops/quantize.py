"""Lowerings of QUANTIZE and DEQUANTIZE (kernels in mf_quantize.c and mf_activations.c).

int8 -> int8 QUANTIZE and int8 -> float32 DEQUANTIZE are 256-entry tables computed by the reference
kernel (exact by construction). float32 -> int8 QUANTIZE is a loop: float32 division by the scale and
round-half-away in double, like TFLM and the reference.
"""

from __future__ import annotations

import numpy as np

from microforge.codegen.lowering import Call, EmitContext, lowering
from microforge.codegen.ops.activations import (
    lut_call,
    reference_check,
    reference_table,
    struct_name,
)
from microforge.graph.ir import Op


def float_literal(value: float) -> str:
    """The exact float32 value as a C99 hex literal."""
    return float(np.float32(value)).hex() + "f"


@lowering("QUANTIZE")
def lower_quantize(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    src, out = op.inputs[0], op.outputs[0]
    if src.size == 0:
        return Call("/* empty QUANTIZE */")
    if src.dtype == np.int8:
        return lut_call(op, ctx, reference_table(op))
    return Call(f"mf_quantize_f32_s8({ctx.tensor(src)}, {ctx.tensor(out)}, {src.size}, "
                f"{float_literal(out.scale)}, {out.zero_point});", ("mf_quantize.c",))


@lowering("DEQUANTIZE")
def lower_dequantize(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    src, out = op.inputs[0], op.outputs[0]
    if src.size == 0:
        return Call("/* empty DEQUANTIZE */")
    table = ctx.constant(struct_name(op, "dequant"), reference_table(op).astype(np.float32), "float")
    return Call(f"mf_lut_s8_f32({table}, {ctx.tensor(src)}, {ctx.tensor(out)}, {src.size});", ("mf_quantize.c",))
