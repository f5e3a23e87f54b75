"""Lowerings of the dynamic fixed-point ops (kernels in mf_dfp.c; rules in reference/dynamic.py).

Every dynamic activation's exponent is an int32_t of the model (ctx.exponent), outside the arena. Ops
that only move values (pools, reshapes) are the int8 lowerings of the same op at a stand-in scale of 1,
followed by an exponent copy: TFLM's integer arithmetic on q is the rule for them.
"""

from __future__ import annotations

import numpy as np

from microforge.codegen.lowering import LOWERINGS, Call, EmitContext, lowering
from microforge.codegen.ops import conv
from microforge.codegen.ops.activations import softmax_parameters, struct_name
from microforge.errors import ModelError, UnsupportedError
from microforge.graph.ir import Op
from microforge.reference.checks import constant_data, fully_connected_geometry
from microforge.reference.conv import window
from microforge.reference.dynamic import _with_scale, power_of_two_exponent, softmax_exponents, visits_in_reverse

SOURCES = ("mf_dfp.c", "mf_conv.c", "mf_activations.c")  # mf_dfp.c calls mf_conv.c's accumulator kernels and
# the int8 softmax of mf_activations.c
ACTIVATIONS = {"NONE": 0, "RELU": 1, "RELU6": 2}


def _activation(op: Op) -> int:
    name = op.options.get("fused_activation_function", "NONE")
    if name not in ACTIVATIONS:
        raise UnsupportedError(f"{op.where}: fused {name} is not supported in dynamic fixed point")
    return ACTIVATIONS[name]


def _output(op: Op, ctx: EmitContext, depth: int) -> str:
    """The layer's mf_dfp_output: its bias and exponents, activation and segment depth."""
    w, bias = op.inputs[1], op.inputs[2] if len(op.inputs) > 2 else None
    if w.dtype != np.int8 or (bias is not None and bias.dtype != np.int32):
        raise UnsupportedError(f"{op.where}: dynamic fixed point needs int8 weights and int32 biases")
    return ctx.struct("mf_dfp_output", struct_name(op, "dfp_out"), dict(
        bias=ctx.tensor(bias) if bias is not None else "0",
        weight_exponent=power_of_two_exponent(op, w, "weights"),
        bias_exponent=power_of_two_exponent(op, bias, "bias") if bias is not None else 0,
        activation=_activation(op), depth=depth, reverse=int(visits_in_reverse(op))))


def _call(kernel: str, output: str, params: str, op: Op, ctx: EmitContext, scratch_bytes: int,
          extra: str = "", **call) -> Call:
    x, out = op.inputs[0], op.outputs[0]
    return Call(f"{kernel}({output}, {params}, {ctx.tensor(x)}, {ctx.exponent(x)}, {ctx.tensor(out)}, "
                f"&{ctx.exponent(out)}, (int32_t *){ctx.scratch()}{extra});", SOURCES, scratch_bytes=scratch_bytes,
                **call)


# The Cortex-M4/M7 layers run mf_conv.c's accumulator kernels (the int8 kernels' inner loops and weight
# layouts, conv.accumulator_*), so they read the input in the same order and allow the same overlaps of
# output and input. Scratch: the aligned biases (4 bytes per channel; none for a single row, aligned value
# by value) and the kernel's block of accumulators, then the kernel's own.

def _dsp_pointwise(op: Op, ctx: EmitContext, w_data: np.ndarray, rows: int) -> Call:
    outs = w_data.shape[0]
    layer = conv.accumulator_matrix(ctx, struct_name(op, "dfp"), w_data, rows, "{ 0 }")
    biases = 0 if rows == 1 else 4 * outs
    kernel_scratch = "0" if layer.narrow else f"(int32_t *)({ctx.scratch()} + {biases + layer.acc_bytes})"
    return _call("mf_dfp_fc_dsp", _output(op, ctx, outs), layer.params, op, ctx,
                 biases + layer.acc_bytes + layer.kernel_bytes, f", {kernel_scratch}", notes=layer.notes,
                 overlaps=layer.overlaps)


def _dsp_conv(op: Op, ctx: EmitContext, w_data: np.ndarray, win) -> Call:
    x, out = op.inputs[0], op.outputs[0]
    layer = conv.accumulator_conv(ctx, struct_name(op, "dfp"), x, out, win, w_data, "{ 0 }", 0)
    return _call("mf_dfp_conv_dsp", _output(op, ctx, out.shape[3]), layer.params, op, ctx,
                 4 * out.shape[3] + layer.acc_bytes + layer.kernel_bytes, notes=layer.notes, overlaps=layer.overlaps)


def _dsp_depthwise(op: Op, ctx: EmitContext, w_data: np.ndarray, win) -> Call:
    x, out = op.inputs[0], op.outputs[0]
    # the kernel runs in the order the rule visits the segments: backward for a reversed op
    direction = "backward" if visits_in_reverse(op) else "forward"
    layer = conv.accumulator_depthwise(ctx, struct_name(op, "dfp"), x, out, win, w_data, "{ 0 }", 0, direction)
    return _call("mf_dfp_dwconv_3x3_dsp", _output(op, ctx, x.shape[3]), layer.params, op, ctx,
                 4 * x.shape[3] + layer.acc_bytes, notes=layer.notes, overlaps=layer.overlaps)


@lowering("CONV_2D", "DEPTHWISE_CONV_2D", dynamic=True)
def lower_conv(op: Op, ctx: EmitContext) -> Call:
    x, w, out = op.inputs[0], op.inputs[1], op.outputs[0]
    if len(x.shape) != 4 or len(w.shape) != 4 or x.shape[0] != 1:
        raise UnsupportedError(f"{op.where}: dynamic fixed point runs 4-D convolutions of one image")
    _, h, width, c = x.shape
    depthwise = op.type == "DEPTHWISE_CONV_2D"
    kh, kw = w.shape[1:3]
    if not depthwise and w.shape[3] != c:
        raise UnsupportedError(f"{op.where}: grouped convolution is not supported in dynamic fixed point")
    win = window(op, h, width, kh, kw, dilated=True)
    out_c = out.shape[3]
    if out.shape != (1, win.out_h, win.out_w, out_c):
        raise ModelError(f"{op.where}: output '{out.name}' is declared {list(out.shape)}")
    multiplier = int(op.options.get("depth_multiplier", 1)) if depthwise else 0
    if ctx.target in conv.DSP_TARGETS:
        w_data = constant_data(op, w, "weights")
        if not depthwise and kh == kw == 1 and win.stride_h == win.stride_w == 1:
            return _dsp_pointwise(op, ctx, w_data.reshape(out_c, c), h * width)
        if not depthwise:
            return _dsp_conv(op, ctx, w_data, win)
        if kh == kw == 3 and multiplier == 1 and c % 4 == 0:
            return _dsp_depthwise(op, ctx, np.ascontiguousarray(w_data.reshape(9, out_c).T), win)
    params = ctx.struct("mf_dfp_conv_params", struct_name(op, "dfp"), dict(
        weights=ctx.tensor(w), in_h=h, in_w=width, in_c=c, out_h=win.out_h, out_w=win.out_w, out_c=out_c,
        kh=kh, kw=kw, stride_h=win.stride_h, stride_w=win.stride_w, dilation_h=win.dilation_h,
        dilation_w=win.dilation_w, pad_top=win.pad_top, pad_left=win.pad_left, depth_multiplier=multiplier))
    return _call("mf_dfp_conv", _output(op, ctx, out_c), params, op, ctx, 8 * out_c)


@lowering("FULLY_CONNECTED", dynamic=True)
def lower_fully_connected(op: Op, ctx: EmitContext) -> Call:
    rows, in_features, out_features = fully_connected_geometry(op, op.inputs[0], op.inputs[1])
    if ctx.target in conv.DSP_TARGETS:
        w_data = constant_data(op, op.inputs[1], "weights")
        return _dsp_pointwise(op, ctx, w_data.reshape(out_features, in_features), rows)
    params = ctx.struct("mf_dfp_fc_params", struct_name(op, "dfp"), dict(
        weights=ctx.tensor(op.inputs[1]), rows=rows, in_features=in_features, out_features=out_features))
    return _call("mf_dfp_fc", _output(op, ctx, out_features), params, op, ctx, 8 * out_features)


@lowering("ADD", dynamic=True)
def lower_add(op: Op, ctx: EmitContext) -> Call:
    a, b, out = op.inputs[0], op.inputs[1], op.outputs[0]
    if not a.size == b.size == out.size:  # other shapes of one size: the same order (reference/dynamic.py)
        raise UnsupportedError(f"{op.where}: broadcasting ADD is not supported in dynamic fixed point")
    depth = out.shape[-1] if out.shape else 1
    return Call(f"mf_dfp_add({ctx.tensor(a)}, {ctx.exponent(a)}, {ctx.tensor(b)}, {ctx.exponent(b)}, "
                f"{ctx.tensor(out)}, &{ctx.exponent(out)}, {out.size}, {depth}, {_activation(op)}, "
                f"(int32_t *){ctx.scratch()});", SOURCES, scratch_bytes=4 * depth,
                overlaps={0: 0, 1: 0})  # each segment is read whole before it is written


@lowering("AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN", "PAD", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", dynamic=True)
def lower_same_exponent(op: Op, ctx: EmitContext) -> Call:
    if op.options.get("fused_activation_function", "NONE") not in ("NONE", "RELU"):
        raise UnsupportedError(f"{op.where}: fused {op.options['fused_activation_function']} is not supported "
                               "in dynamic fixed point")
    call = LOWERINGS[op.type](_with_scale(op, 1.0), ctx)  # the same kernel: its overlaps hold
    call.statement += f"\n    {ctx.exponent(op.outputs[0])} = {ctx.exponent(op.inputs[0])};"
    return call


@lowering("SOFTMAX", dynamic=True)
def lower_softmax(op: Op, ctx: EmitContext) -> Call:
    x = op.inputs[0]
    if not x.shape or x.size == 0:
        raise ModelError(f"{op.where}: input '{x.name}' must have at least one value")
    lowest, highest = softmax_exponents(op)
    rows = [softmax_parameters(_with_scale(op, float(np.ldexp(1.0, -e)))) for e in range(lowest, highest + 1)]
    table = ctx.constant(struct_name(op, "dfp_rows"), np.asarray(rows, np.int32), "int32_t")
    depth = x.shape[-1]
    params = ctx.struct("mf_dfp_softmax_params", struct_name(op, "dfp"), dict(
        rows=table, lowest=lowest, highest=highest, rows_count=x.size // depth, depth=depth))
    return Call(f"mf_dfp_softmax({params}, {ctx.tensor(x)}, {ctx.exponent(x)}, {ctx.tensor(op.outputs[0])}, "
                f"(int32_t *){ctx.scratch()});", SOURCES, scratch_bytes=4 * 256)


@lowering("QUANTIZE", dynamic=True)
def lower_quantize(op: Op, ctx: EmitContext) -> Call:
    x, out = op.inputs[0], op.outputs[0]
    if x.dtype != np.float32 or out.dtype != np.int8:
        raise UnsupportedError(f"{op.where}: dynamic QUANTIZE reads float32 and writes int8")
    return Call(f"mf_dfp_quantize({ctx.tensor(x)}, {x.size}, {ctx.tensor(out)}, &{ctx.exponent(out)});", SOURCES)


@lowering("DEQUANTIZE", dynamic=True)
def lower_dequantize(op: Op, ctx: EmitContext) -> Call:
    x, out = op.inputs[0], op.outputs[0]
    return Call(f"mf_dfp_dequantize({ctx.tensor(x)}, {ctx.exponent(x)}, {x.size}, {ctx.tensor(out)});", SOURCES)
