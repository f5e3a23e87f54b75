"""Lowerings of QUANTIZE and DEQUANTIZE (kernels in mf_quantize.c and mf_activations.c).

int8 -> int8 QUANTIZE and int8 -> float32 DEQUANTIZE are 256-entry tables computed by the reference
kernel (exact by construction). float32 -> int8 QUANTIZE is a loop: float32 division by the scale and
round-half-away (TFLM rounds in double; the C gets the same integer in float32, mf_quantize.c).

int16 (the int16x8 variant, and the conversions of mixed int8/int16x8 models): float32 -> int16 the same
loop; int8 -> int16 a 256-entry int16 table from the reference; int16 -> int8 or int16 a loop of TFLite's
MultiplyByQuantizedMultiplier; int16 -> float32 scale * (q - zp) in double, rounded once to float.
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
from microforge.reference.checks import multiplier_for


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


@lowering("QUANTIZE", int16=True)
def lower_quantize_int16(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    src, out = op.inputs[0], op.outputs[0]
    x, y = ctx.tensor(src), ctx.tensor(out)
    if src.size == 0:
        return Call("/* empty QUANTIZE */")
    if src.dtype == np.float32:
        return Call(f"mf_quantize_f32_s16({x}, {y}, {src.size}, {float_literal(out.scale)}, {out.zero_point});",
                    ("mf_quantize.c",))
    if src.dtype == np.int8:  # int8 -> int16
        table = ctx.constant(struct_name(op, "lut"), reference_table(op).astype(np.int16), "int16_t")
        return Call(f"mf_lut_s8_s16({table}, {x}, {y}, {src.size});", ("mf_quantize.c",))
    multiplier, shift = multiplier_for(op, float(src.scale) / float(out.scale), "input/output scale ratio")
    params = ctx.struct("mf_requantize_params", struct_name(op, "requantize"), {
        "input_zero_point": src.zero_point, "output_zero_point": out.zero_point,
        "multiplier": multiplier, "shift": shift})
    kernel = "mf_requantize_s16_s8" if out.dtype == np.int8 else "mf_requantize_s16_s16"
    return Call(f"{kernel}({x}, {y}, {src.size}, {params});", ("mf_quantize.c",))


@lowering("DEQUANTIZE", int16=True)
def lower_dequantize_int16(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    src, out = op.inputs[0], op.outputs[0]
    if src.size == 0:
        return Call("/* empty DEQUANTIZE */")
    # The scale as an exact double literal: TFLM multiplies in double by the scale the model stores.
    return Call(f"mf_dequantize_s16_f32({ctx.tensor(src)}, {ctx.tensor(out)}, {src.size}, "
                f"{float(src.scale).hex()}, {src.zero_point});", ("mf_quantize.c",))
