"""Lowerings of ADD, MUL, SUB, MAXIMUM, MINIMUM, SQUARED_DIFFERENCE and PRELU (kernels in mf_elementwise.c).

Broadcasting is planned here: output dimensions of size 1 are dropped and neighbours that broadcast
alike are merged, so same-shape inputs become one flat loop, a per-channel constant becomes [outer, C]
with the constant's stride 0 on the outer dimension, and a scalar becomes stride 0. A constant input is
made the second operand (both ops are commutative in TFLM's arithmetic: each input keeps its own
rescaling); for int8 ADD it is stored already centred, shifted and rescaled as int32, which saves two of
the three requantizations per element. A same-shape int8 ADD reads both rescalings from 256-entry tables
and requantizes the sum in one SMMLAR, a form checked exhaustively at generation time (_add_tables).
int16 ADD (int16x8) is TFLM's general path, left shift 15, on both inputs as they are.
int8 SUB takes ADD's paths with the second input's rescaled values negated (a constant one stored so, a
same-shape one through a negated table), else its own kernel; it keeps its operands in order. MAXIMUM,
MINIMUM, SQUARED_DIFFERENCE and PRELU run through the same broadcast plan with kernels of their own.
"""

from __future__ import annotations

import numpy as np

from microforge.codegen.lowering import Call, EmitContext, lowering
from microforge.codegen.ops.activations import reference_check, struct_name
from microforge.errors import UnsupportedError
from microforge.graph.ir import Op, Tensor
from microforge.reference.checks import activation_of
from microforge.reference.elementwise import ADD_LEFT_SHIFT as LEFT_SHIFTS
from microforge.reference.elementwise import (
    SQUARED_DIFFERENCE_LEFT_SHIFT,
    prelu_multipliers,
    squared_difference_multipliers,
    sub_multipliers,
)
from microforge.reference.fixedpoint import (
    activation_range_float,
    activation_range_quantized,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
)

MAX_DIMS = 8  # MF_BCAST_MAX_DIMS
ADD_LEFT_SHIFT = LEFT_SHIFTS["int8"]
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _row_major_strides(shape: tuple[int, ...]) -> list[int]:
    strides = [1] * len(shape)
    for d in range(len(shape) - 2, -1, -1):
        strides[d] = strides[d + 1] * shape[d + 1]
    return strides


def broadcast_plan(a_shape: tuple[int, ...], b_shape: tuple[int, ...], out_shape: tuple[int, ...]):
    """(dims, a_strides, b_strides) in elements, size-1 output dimensions dropped, alike neighbours merged."""
    rank = len(out_shape)
    dims: list[int] = []
    a_strides: list[int] = []
    b_strides: list[int] = []
    lifted = []
    for shape in (a_shape, b_shape):
        padded = (1,) * (rank - len(shape)) + tuple(shape)
        lifted.append((padded, _row_major_strides(padded)))
    for d, n in enumerate(out_shape):
        if n == 1:
            continue
        sa = lifted[0][1][d] if lifted[0][0][d] == n else 0
        sb = lifted[1][1][d] if lifted[1][0][d] == n else 0
        if dims and a_strides[-1] == sa * n and b_strides[-1] == sb * n:
            dims[-1] *= n  # contiguous (or broadcast) across both dimensions for both inputs: one dimension
            a_strides[-1], b_strides[-1] = sa, sb
        else:
            dims.append(n)
            a_strides.append(sa)
            b_strides.append(sb)
    if not dims:
        return [1], [1], [1]
    return dims, a_strides, b_strides


def _bcast(op: Op, ctx: EmitContext, a: Tensor, b: Tensor, out: Tensor):
    """A function emitting the op's mf_bcast and returning it, to be called only by the kernels that take it
    (unused constants fail -Werror)."""
    dims, sa, sb = broadcast_plan(a.shape, b.shape, out.shape)
    if len(dims) > MAX_DIMS:
        raise UnsupportedError(f"{op.where}: broadcasting over {len(dims)} alternating dimensions "
                               f"(at most {MAX_DIMS} are supported)")

    def pad(values) -> list[int]:
        values = [int(v) for v in values]
        return values + [0] * (MAX_DIMS - len(values))

    return lambda: ctx.struct("mf_bcast", struct_name(op, "bcast"),
                              {"rank": len(dims), "dims": pad(dims), "a_strides": pad(sa), "b_strides": pad(sb)})


def _add_multipliers(a: Tensor, b: Tensor, out: Tensor, left_shift: int) -> tuple[int, int, int, int, int, int]:
    """TFLM's ADD rescalings: each input to twice the larger input scale, the sum to the output."""
    twice_max_scale = 2.0 * max(a.scale, b.scale)
    ma, sha = quantize_multiplier(a.scale / twice_max_scale)
    mb, shb = quantize_multiplier(b.scale / twice_max_scale)
    mo, sho = quantize_multiplier(twice_max_scale / ((1 << left_shift) * out.scale))
    return ma, sha, mb, shb, mo, sho


@lowering("ADD", int16=True)
def lower_add_int16(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    a, b = op.inputs
    out = op.outputs[0]
    if out.size == 0:
        return Call("/* empty ADD */")
    bcast = _bcast(op, ctx, a, b, out)
    left_shift = LEFT_SHIFTS["int16"]
    ma, sha, mb, shb, mo, sho = _add_multipliers(a, b, out, left_shift)
    act_min, act_max = activation_range_quantized(op.options.get("fused_activation_function", "NONE"),
                                                  out.scale, out.zero_point, np.int16)
    p = ctx.struct("mf_add_s8_params", struct_name(op, "add"), {
        "a_offset": -a.zero_point, "b_offset": -b.zero_point, "left_shift": left_shift,
        "a_multiplier": ma, "a_shift": sha, "b_multiplier": mb, "b_shift": shb,
        "out_multiplier": mo, "out_shift": sho, "out_offset": out.zero_point,
        "act_min": act_min, "act_max": act_max})
    same = a.shape == b.shape == out.shape  # one sequential loop: the output may sit on either input
    return Call(f"mf_add_s16({p}, {bcast()}, {ctx.tensor(a)}, {ctx.tensor(b)}, {ctx.tensor(out)});",
                ("mf_elementwise.c",), overlaps={0: 0, 1: 0} if same else {})


@lowering("ADD", "MUL")
def lower_binary(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    a, b = op.inputs
    out = op.outputs[0]
    if a.is_constant and not b.is_constant:
        a, b = b, a
    if out.size == 0:
        return Call(f"/* empty {op.type} */")
    bcast = _bcast(op, ctx, a, b, out)

    x, z = ctx.tensor(a), ctx.tensor(out)
    act = op.options.get("fused_activation_function", "NONE")
    kind = op.type.lower()
    if out.dtype == np.float32:
        lo, hi = activation_range_float(activation_of(op))
        p = ctx.struct("mf_binary_f32_params", struct_name(op, kind),
                       {"f_min": max(lo, -FLOAT32_MAX), "f_max": min(hi, FLOAT32_MAX)})
        return Call(f"mf_{kind}_f32({p}, {bcast()}, {x}, {ctx.tensor(b)}, {z});", ("mf_elementwise.c",))

    act_min, act_max = activation_range_quantized(act, out.scale, out.zero_point, np.int8)
    if op.type == "MUL":
        multiplier, shift = quantize_multiplier(float(a.scale) * float(b.scale) / float(out.scale))
        p = ctx.struct("mf_mul_s8_params", struct_name(op, kind), {
            "a_offset": -a.zero_point, "b_offset": -b.zero_point, "multiplier": multiplier, "shift": shift,
            "out_offset": out.zero_point, "act_min": act_min, "act_max": act_max})
        return Call(f"mf_mul_s8({p}, {bcast()}, {x}, {ctx.tensor(b)}, {z});", ("mf_elementwise.c",))

    ma, sha, mb, shb, mo, sho = _add_multipliers(a, b, out, ADD_LEFT_SHIFT)
    same = a.shape == b.shape == out.shape
    tables = _add_tables(-a.zero_point, ma, sha, -b.zero_point, mb, shb, mo, sho, out.zero_point, act_min,
                         act_max) if same else None
    if tables is not None:
        a_table, b_table, short = tables
        p = ctx.struct("mf_add_s8_table_params", struct_name(op, "add_tables"), {
            "a_table": ctx.constant(struct_name(op, "a_table"), a_table, "int32_t"),
            "b_table": ctx.constant(struct_name(op, "b_table"), b_table, "int32_t"),
            "count": out.size, **short, "act_min": act_min, "act_max": act_max})
        # element i of both inputs is read before element i is written: the output may sit on either
        return Call(f"mf_add_s8_table({p}, {x}, {ctx.tensor(b)}, {z});", ("mf_elementwise.c",),
                    overlaps={0: 0, 1: 0}, notes=["ADD through per-input tables, one SMMLAR per element"])
    p = ctx.struct("mf_add_s8_params", struct_name(op, kind), {
        "a_offset": -a.zero_point, "b_offset": -b.zero_point, "left_shift": ADD_LEFT_SHIFT,
        "a_multiplier": ma, "a_shift": sha, "b_multiplier": mb, "b_shift": shb,
        "out_multiplier": mo, "out_shift": sho, "out_offset": out.zero_point,
        "act_min": act_min, "act_max": act_max})
    if b.is_constant:
        centred = (np.asarray(b.data, dtype=np.int64).reshape(-1) - b.zero_point) << ADD_LEFT_SHIFT
        scaled = multiply_by_quantized_multiplier(centred, mb, shb).astype(np.int32)
        y = ctx.constant(struct_name(op, "prescaled"), scaled, "int32_t")
        return Call(f"mf_add_s8_prescaled({p}, {bcast()}, {x}, {y}, {z});", ("mf_elementwise.c",))
    # Same shapes: one sequential loop reads element i of both inputs before writing element i, so the
    # output may sit on either dying input (distance 0).
    return Call(f"mf_add_s8({p}, {bcast()}, {x}, {ctx.tensor(b)}, {z});", ("mf_elementwise.c",),
                overlaps={0: 0, 1: 0} if same else {})


def _add_tables(a_offset: int, ma: int, sha: int, b_offset: int, mb: int, shb: int, mo: int, sho: int, out_zp: int,
                lo: int, hi: int, b_sign: int = 1) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """mf_add_s8_table's constants, or None when its short requantization is not exact.

    Each input's rescaled value (TFLM: centre, shift left by 20, requantize) depends on its byte alone: a
    256-entry table per input, indexed by the byte read as unsigned. The sum s is requantized as
        out = clamp(SMMLAR(s << L, multiplier, K + ((s >> 31) & M)) >> E)
    with L = max(shift, 0) + 1, E = max(-shift, 0), M = -1 if E else 0, K = 2^(E-1) (0 if E = 0) plus
    out_zp << E, the form the convolutions use. There are only 65,536 input pairs, so instead of a bound
    every one of them is checked against TFLM's arithmetic (the reference interpreter's functions).
    b_sign=-1 negates the second table: SUB, whose TFLM arithmetic subtracts the second rescaled input."""
    byte = np.arange(256, dtype=np.int64).astype(np.uint8).view(np.int8).astype(np.int64)
    a_table = multiply_by_quantized_multiplier((byte + a_offset) << ADD_LEFT_SHIFT, ma, sha)
    b_table = b_sign * multiply_by_quantized_multiplier((byte + b_offset) << ADD_LEFT_SHIFT, mb, shb)
    sums = (a_table[:, None] + b_table[None, :]).reshape(-1)
    want = np.clip(multiply_by_quantized_multiplier(sums, mo, sho) + out_zp, lo, hi)
    left, right = max(sho, 0) + 1, max(-sho, 0)
    if mo < 0 or right > 31 or np.abs(sums).max() >= 2**(31 - left):
        return None
    k = (1 << (right - 1) if right else 0) + (out_zp << right)
    m = -1 if right else 0
    # SMMLAR's sum K * 2^32 + (s << L) * multiplier + 2^31, shifted right by 32, split so int64 holds it
    top = k + np.where(sums < 0, m, 0) + (((sums << left) * mo + (1 << 31)) >> 32)
    if np.abs(top).max() >= 2**31 or not np.array_equal(np.clip(top >> right, lo, hi), want):
        return None
    short = {"multiplier": mo, "left": left, "right": right, "k": k, "m": m}
    return a_table.astype(np.int32), b_table.astype(np.int32), short


def _same_shapes(a: Tensor, b: Tensor, out: Tensor) -> dict[int, int]:
    """The overlaps of a kernel that reads element i of both inputs before writing element i: with equal
    shapes the output may sit on either dying input (distance 0)."""
    return {0: 0, 1: 0} if a.shape == b.shape == out.shape else {}


@lowering("SUB")
def lower_sub(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    a, b = op.inputs
    out = op.outputs[0]
    if out.size == 0:
        return Call("/* empty SUB */")
    bcast = _bcast(op, ctx, a, b, out)
    x, z = ctx.tensor(a), ctx.tensor(out)
    overlaps = _same_shapes(a, b, out)
    if out.dtype == np.float32:
        lo, hi = activation_range_float(activation_of(op))
        p = ctx.struct("mf_binary_f32_params", struct_name(op, "sub"),
                       {"f_min": max(lo, -FLOAT32_MAX), "f_max": min(hi, FLOAT32_MAX)})
        return Call(f"mf_sub_f32({p}, {bcast()}, {x}, {ctx.tensor(b)}, {z});", ("mf_elementwise.c",),
                    overlaps=overlaps)

    act_min, act_max = activation_range_quantized(activation_of(op), out.scale, out.zero_point, np.int8)
    ma, sha, mb, shb, mo, sho = sub_multipliers(op)
    same = a.shape == b.shape == out.shape
    tables = _add_tables(-a.zero_point, ma, sha, -b.zero_point, mb, shb, mo, sho, out.zero_point, act_min,
                         act_max, b_sign=-1) if same else None
    if tables is not None:
        a_table, b_table, short = tables
        p = ctx.struct("mf_add_s8_table_params", struct_name(op, "sub_tables"), {
            "a_table": ctx.constant(struct_name(op, "a_table"), a_table, "int32_t"),
            "b_table": ctx.constant(struct_name(op, "b_table"), b_table, "int32_t"),
            "count": out.size, **short, "act_min": act_min, "act_max": act_max})
        return Call(f"mf_add_s8_table({p}, {x}, {ctx.tensor(b)}, {z});", ("mf_elementwise.c",), overlaps=overlaps,
                    notes=["SUB through per-input tables (the second negated), one SMMLAR per element"])
    p = ctx.struct("mf_add_s8_params", struct_name(op, "sub"), {
        "a_offset": -a.zero_point, "b_offset": -b.zero_point, "left_shift": ADD_LEFT_SHIFT,
        "a_multiplier": ma, "a_shift": sha, "b_multiplier": mb, "b_shift": shb,
        "out_multiplier": mo, "out_shift": sho, "out_offset": out.zero_point,
        "act_min": act_min, "act_max": act_max})
    if b.is_constant:  # subtracting b is adding its negated rescaled values
        centred = (np.asarray(b.data, dtype=np.int64).reshape(-1) - b.zero_point) << ADD_LEFT_SHIFT
        negated = -multiply_by_quantized_multiplier(centred, mb, shb).astype(np.int32)
        y = ctx.constant(struct_name(op, "prescaled"), negated, "int32_t")
        return Call(f"mf_add_s8_prescaled({p}, {bcast()}, {x}, {y}, {z});", ("mf_elementwise.c",))
    return Call(f"mf_sub_s8({p}, {bcast()}, {x}, {ctx.tensor(b)}, {z});", ("mf_elementwise.c",), overlaps=overlaps)


@lowering("MAXIMUM", "MINIMUM", "SQUARED_DIFFERENCE", "PRELU")
def lower_binary_without_activation(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    a, b = op.inputs
    out = op.outputs[0]
    if out.size == 0:
        return Call(f"/* empty {op.type} */")
    bcast = _bcast(op, ctx, a, b, out)
    kind = op.type.lower()
    dtype = "f32" if out.dtype == np.float32 else "s8"
    tensors = f"{bcast()}, {ctx.tensor(a)}, {ctx.tensor(b)}, {ctx.tensor(out)}"

    def call(params: str) -> Call:
        return Call(f"mf_{kind}_{dtype}({params}, {tensors});", ("mf_elementwise.c",), overlaps=_same_shapes(a, b, out))

    if dtype == "f32" or op.type in ("MAXIMUM", "MINIMUM"):  # int8 MAXIMUM / MINIMUM compare raw bytes
        return call("0")
    if op.type == "PRELU":
        m1, s1, m2, s2 = prelu_multipliers(op)
        return call(ctx.struct("mf_prelu_s8_params", struct_name(op, "prelu"), {
            "input_offset": -a.zero_point, "alpha_offset": -b.zero_point,
            "positive_multiplier": m1, "positive_shift": s1, "negative_multiplier": m2, "negative_shift": s2,
            "out_offset": out.zero_point}))
    ma, sha, mb, shb, mo, sho = squared_difference_multipliers(op)
    return call(ctx.struct("mf_add_s8_params", struct_name(op, "squared_difference"), {
        "a_offset": -a.zero_point, "b_offset": -b.zero_point, "left_shift": SQUARED_DIFFERENCE_LEFT_SHIFT,
        "a_multiplier": ma, "a_shift": sha, "b_multiplier": mb, "b_shift": shb,
        "out_multiplier": mo, "out_shift": sho, "out_offset": out.zero_point, "act_min": -128, "act_max": 127}))
