"""Lowerings of SOFTMAX, LOGISTIC, HARD_SWISH, RELU, RELU6, TANH, LEAKY_RELU and RSQRT (kernels in
mf_activations.c).

int8 LOGISTIC, HARD_SWISH, RELU, TANH, LEAKY_RELU and RSQRT are 256-entry tables computed here by running
the reference kernel (bit-exact with TFLite Micro) on every int8 value: exact by construction and one load
per element. int8 RELU6 is a clamp. int8 SOFTMAX keeps TFLM's per-row fixed-point arithmetic but reads
gemmlowp's exp of each difference to the row maximum from a 256-entry table computed with the reference's own
fixed-point functions. float32 RELU, RELU6 and HARD_SWISH are direct loops; float32 SOFTMAX and LOGISTIC
follow TFLM's float reference kernels with the C library's expf (the generated code links libm): they agree
with the reference interpreter within a few float32 ulps (its numpy exp rounds differently), not bit for bit;
float32 TANH calls tanhf likewise. float32 LEAKY_RELU and RSQRT are direct loops, bit for bit.

The helpers at the top (`reference_check`, `reference_table`, `struct_name`) are shared by the other
lowering modules of this package.
"""

from __future__ import annotations

import math

import numpy as np

from microforge.codegen.emit import c_value
from microforge.codegen.lowering import Call, EmitContext, lowering
from microforge.errors import MicroforgeError, ModelError, UnsupportedError
from microforge.graph.ir import Op, Tensor
from microforge.reference import activations as ref_activations
from microforge.reference.checks import check_output_shape, multiplier_for
from microforge.reference.fixedpoint import (
    multiply_by_quantized_multiplier,
    quantize_in_float32,
)
from microforge.reference.registry import KERNELS

# Every int8 value, ordered by its byte: index k holds the int8 whose bit pattern is k (table[(uint8_t)x]).
ALL_INT8 = np.arange(256, dtype=np.uint8).view(np.int8)


def struct_name(op: Op, what: str) -> str:
    return f"op{op.index}_{what}"


def _run_reference(op: Op, args: list) -> np.ndarray:
    try:
        return KERNELS[op.type].fn(op, args)
    except MicroforgeError:
        raise
    except Exception as exc:  # an unchecked assumption of the reference kernel: report it against the op
        raise ModelError(f"{op.where}: {type(exc).__name__}: {exc}") from exc


def reference_check(op: Op) -> None:
    """Run the op's reference kernel on one all-zero sample: it raises exactly the ModelError or
    UnsupportedError (naming the op) that the interpreter would for a malformed or unsupported op."""
    if op.type not in KERNELS:
        raise UnsupportedError(f"{op.where}: op type not supported")
    args = []
    for t in op.inputs:
        if t is None:
            args.append(None)
        elif t.is_constant:
            args.append(np.asarray(t.data)[np.newaxis])
        else:
            args.append(np.zeros((1,) + t.shape, dtype=t.dtype))
    _run_reference(op, args)


def stand_in(op: Op, shape: tuple[int, ...]) -> Op:
    """A copy of a one-input op whose input and output have `shape` (same dtype and quantization)."""
    src, out = op.inputs[0], op.outputs[0]
    return Op(op.type, [Tensor(src.name, shape, src.dtype, src.quant)], [Tensor(out.name, shape, out.dtype, out.quant)],
              dict(op.options), index=op.index, version=op.version)


def reference_table(op: Op) -> np.ndarray:
    """The op's output for each of the 256 int8 inputs (elementwise ops), indexed by the input's byte."""
    return _run_reference(stand_in(op, (256,)), [ALL_INT8[np.newaxis]])[0]


def _unary_io(op: Op, ctx: EmitContext) -> tuple[Tensor, Tensor, str, str]:
    src, out = op.inputs[0], op.outputs[0]
    return src, out, ctx.tensor(src), ctx.tensor(out)


def lut_call(op: Op, ctx: EmitContext, table: np.ndarray) -> Call:
    """out[i] = table[(uint8_t)in[i]] over the whole tensor (int8 -> int8)."""
    src, _out, x, y = _unary_io(op, ctx)
    name = ctx.constant(struct_name(op, "lut"), np.asarray(table, dtype=np.int8), "int8_t")
    return Call(f"mf_lut_s8({name}, {x}, {y}, {src.size});", ("mf_activations.c",))


# ----------------------------------------------------------------------------------------------------------


def softmax_parameters(op: Op) -> tuple[int, int, int]:
    """TFLM's int8 softmax constants for the op's input scale and beta: (multiplier, left shift, diff_min)
    of the rescaling of differences to the row maximum into Q5.26. Same arithmetic as
    reference/activations.py softmax."""
    src = op.inputs[0]
    beta = np.float32(op.options.get("beta", 1.0))
    scaled_diff_integer_bits = 5
    real = min(float(beta) * src.scale * (1 << (31 - scaled_diff_integer_bits)), (1 << 31) - 1.0)
    multiplier, left_shift = multiplier_for(op, real, "input multiplier beta * scale")
    radius = ((1 << scaled_diff_integer_bits) - 1) * (1 << (31 - scaled_diff_integer_bits)) / (1 << left_shift)
    return int(multiplier), int(left_shift), -math.floor(radius)


def softmax_exp_table(op: Op) -> np.ndarray:
    """gemmlowp's exp of the rescaled difference -d to the row maximum, d = 0..255 (Q0 int32), with 0 where
    -d is below diff_min (TFLM skips those values: they add nothing and output -128)."""
    multiplier, left_shift, diff_min = softmax_parameters(op)
    diff = -np.arange(256, dtype=np.int64)
    exps = ref_activations._exp_on_negative_values(multiply_by_quantized_multiplier(diff, multiplier, left_shift), 5)
    return np.where(diff >= diff_min, exps, 0).astype(np.int32)


@lowering("SOFTMAX")
def lower_softmax(op: Op, ctx: EmitContext) -> Call:
    if len(op.inputs) != 1 or len(op.outputs) != 1 or op.inputs[0] is None:
        reference_check(op)  # raises the arity error
    src, out = op.inputs[0], op.outputs[0]
    if src.dtype == np.float32:
        return _softmax_f32(op, ctx)
    check_output_shape(op, src.shape)
    if not src.shape:
        raise ModelError(f"{op.where}: input '{src.name}' must have at least one dimension")
    # Checks on a one-value stand-in: a row of zeros longer than 511 would trip the data-dependent check
    # of the reference (TFLM aborts on such rows), which says nothing about the model.
    _run_reference(stand_in(op, (1,)), [np.zeros((1, 1), np.int8)])
    depth = src.shape[-1]
    notes = []
    if depth >= 512:
        notes.append(f"{op.where}: rows of {depth} values can reach a sum of exponentials TFLM aborts on; "
                     "the C stays defined (saturated shift) but is not checked against TFLM there")
    if src.size == 0:
        return Call("/* empty SOFTMAX */")
    exps = softmax_exp_table(op)
    used = int(np.flatnonzero(exps).max()) + 1  # exps[0] > 0; past the last nonzero entry every exp is 0
    table = ctx.constant(struct_name(op, "exp"), exps[:used], "int32_t")
    p = ctx.struct("mf_softmax_s8_params", struct_name(op, "softmax"),
                   {"rows": src.size // depth, "depth": depth, "exp_count": used, "exp_table": table})
    return Call(f"mf_softmax_s8({p}, {ctx.tensor(src)}, {ctx.tensor(out)});", ("mf_activations.c",), notes=notes)


@lowering("SOFTMAX", int16=True)
def lower_softmax_int16(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    src, out = op.inputs[0], op.outputs[0]
    if src.dtype != np.int16 or out.dtype != np.int16:
        raise UnsupportedError(f"{op.where}: SOFTMAX {src.dtype} -> {out.dtype} has no C kernel yet "
                               "(int16 -> int16 has)")
    if src.size == 0:
        return Call("/* empty SOFTMAX */")
    depth = src.shape[-1]
    if depth * 32767 > 2**31 - 1:
        raise UnsupportedError(f"{op.where}: rows of {depth} values can overflow the int32 sum of TFLM's "
                               "int16 softmax")
    beta = float(np.float32(op.options.get("beta", 1.0)))
    multiplier, shift = multiplier_for(op, float(src.scale) * beta / (10.0 / 65535.0), "input multiplier beta * scale")
    exp_lut, recip_lut = ref_activations._softmax_int16_luts()
    p = ctx.struct("mf_softmax_s16_params", struct_name(op, "softmax"), {
        "rows": src.size // depth, "depth": depth, "multiplier": multiplier, "shift": shift,
        "exp_table": ctx.constant(struct_name(op, "exp"), exp_lut.astype(np.int16), "int16_t"),
        "recip_table": ctx.constant(struct_name(op, "recip"), recip_lut.astype(np.int16), "int16_t")})
    return Call(f"mf_softmax_s16({p}, {ctx.tensor(src)}, {ctx.tensor(out)});", ("mf_activations.c",))


def _softmax_f32(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    src, out = op.inputs[0], op.outputs[0]
    if src.size == 0:
        return Call("/* empty SOFTMAX */")
    depth = src.shape[-1]
    p = ctx.struct("mf_softmax_f32_params", struct_name(op, "softmax"),
                   {"rows": src.size // depth, "depth": depth, "beta": np.float32(op.options.get("beta", 1.0))})
    return Call(f"mf_softmax_f32({p}, {ctx.tensor(src)}, {ctx.tensor(out)});", ("mf_activations.c",))


@lowering("RELU", "RELU6", int16=True)
def lower_relu_int16(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    src, out, x, y = _unary_io(op, ctx)
    if src.size == 0:
        return Call(f"/* empty {op.type} */")
    if op.type == "RELU6":
        six = min(max(quantize_in_float32(6.0, src.scale, src.zero_point), -32768), 32767)
        return Call(f"mf_clamp_s16({x}, {y}, {src.size}, {src.zero_point}, {six});", ("mf_activations.c",))
    multiplier, shift = multiplier_for(op, float(src.scale) / float(out.scale), "input/output scale ratio")
    return Call(f"mf_relu_s16({x}, {y}, {src.size}, {multiplier}, {shift}, {max(-32768, out.zero_point)});",
                ("mf_activations.c",))


@lowering("LOGISTIC", "HARD_SWISH", "RELU", "RELU6")
def lower_unary(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)
    src, _out, x, y = _unary_io(op, ctx)
    if src.size == 0:
        return Call(f"/* empty {op.type} */")
    if src.dtype == np.int8:
        if op.type == "RELU6":  # TFLM clamps the raw input to its own quantized 0 and 6
            six = min(max(quantize_in_float32(6.0, src.scale, src.zero_point), -128), 127)
            return Call(f"mf_clamp_s8({x}, {y}, {src.size}, {src.zero_point}, {six});", ("mf_activations.c",))
        return lut_call(op, ctx, reference_table(op))
    fn = {"LOGISTIC": "mf_logistic_f32", "HARD_SWISH": "mf_hard_swish_f32", "RELU": "mf_relu_f32",
          "RELU6": "mf_relu6_f32"}[op.type]
    return Call(f"{fn}({x}, {y}, {src.size});", ("mf_activations.c",))


@lowering("TANH", "LEAKY_RELU", "RSQRT")
def lower_table_or_float_unary(op: Op, ctx: EmitContext) -> Call:
    """int8: a 256-entry table of the reference kernel's outputs. float32: a loop."""
    reference_check(op)
    src, _out, x, y = _unary_io(op, ctx)
    if src.size == 0:
        return Call(f"/* empty {op.type} */")
    if src.dtype == np.int8:
        call = lut_call(op, ctx, reference_table(op))
        if op.type == "RSQRT" and src.zero_point > -128:
            call.notes.append(f"{op.where}: inputs below the zero point {src.zero_point} (negative reals) fail "
                              "TFLM's inference; here, as in the reference interpreter, they count as 0 (127)")
        return call
    if op.type == "LEAKY_RELU":
        alpha = ref_activations.leaky_relu_alpha(op)
        return Call(f"mf_leaky_relu_f32({x}, {y}, {src.size}, {c_value(alpha)});", ("mf_activations.c",))
    return Call(f"mf_{op.type.lower()}_f32({x}, {y}, {src.size});", ("mf_activations.c",))
