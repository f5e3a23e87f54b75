"""Lowerings of the on-chip OOD scores (kernels in mf_ood.c; what they compute: reference/ood.py).
The tables, means and weights are op options made by robust.ood.onchip; here they become flash arrays."""

from __future__ import annotations

import numpy as np

from microforge.codegen.lowering import Call, EmitContext, lowering
from microforge.codegen.ops.activations import reference_check, struct_name
from microforge.graph.ir import Op

SOURCES = ("mf_ood.c",)


@lowering("MF_OOD_MAXLOGIT")
def lower_maxlogit(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    src = op.inputs[0]
    return Call(f"mf_ood_maxlogit({src.size}, {src.zero_point}, {ctx.tensor(src)}, {ctx.tensor(op.outputs[0])});",
                SOURCES)


@lowering("MF_OOD_MSP", "MF_OOD_ENERGY")
def lower_softmax_score(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    src = op.inputs[0]
    table = np.asarray(op.options["exp_table"], dtype=np.uint16)
    p = ctx.struct("mf_ood_softmax_params", struct_name(op, "ood"), {
        "count": src.size, "zero_point": src.zero_point, "table_length": len(table),
        "exp_table": ctx.constant(f"op{op.index}_exp_table", table, "uint16_t"),
        "log_weight": int(op.options.get("log_weight", 0)),
    })
    fn = "mf_ood_msp" if op.type == "MF_OOD_MSP" else "mf_ood_energy"
    return Call(f"{fn}({p}, {ctx.tensor(src)}, {ctx.tensor(op.outputs[0])});", SOURCES)


@lowering("MF_OOD_DISTANCE")
def lower_distance(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    src = op.inputs[0]
    means = np.asarray(op.options["means"], dtype=np.int16)
    p = ctx.struct("mf_ood_distance_params", struct_name(op, "ood"), {
        "classes": means.shape[0], "features": means.shape[1],
        "means": ctx.constant(f"op{op.index}_means", means, "int16_t"),
        "weights": ctx.constant(f"op{op.index}_weights", np.asarray(op.options["weights"], np.uint16), "uint16_t"),
        "shift": int(op.options["shift"]),
    })
    return Call(f"mf_ood_distance({p}, {ctx.tensor(src)}, {ctx.tensor(op.outputs[0])});", SOURCES)


@lowering("MF_OOD_COSINE")
def lower_cosine(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    src = op.inputs[0]
    weights = np.asarray(op.options["weights"], dtype=np.int8)
    p = ctx.struct("mf_ood_cosine_params", struct_name(op, "ood"), {
        "classes": weights.shape[0], "features": weights.shape[1], "zero_point": src.zero_point,
        "weights": ctx.constant(f"op{op.index}_weights", weights, "int8_t"),
        "norms": ctx.constant(f"op{op.index}_norms", np.asarray(op.options["norms"], np.uint32), "uint32_t"),
    })
    return Call(f"mf_ood_cosine({p}, {ctx.tensor(src)}, {ctx.tensor(op.outputs[0])});", SOURCES)


@lowering("MF_OOD_SQUARED_ERROR")
def lower_squared_error(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    a, b = op.inputs
    return Call(f"mf_ood_squared_error({a.size}, {ctx.tensor(a)}, {ctx.tensor(b)}, {ctx.tensor(op.outputs[0])});",
                SOURCES)


@lowering("MF_OOD_FLAG")
def lower_flag(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    threshold = int(op.options["threshold"])
    return Call(f"mf_ood_flag({threshold if threshold != -2**31 else '(-2147483647 - 1)'}, "
                f"{ctx.tensor(op.inputs[0])}, {ctx.tensor(op.outputs[0])});", SOURCES)
