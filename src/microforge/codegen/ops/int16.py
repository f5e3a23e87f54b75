"""Lowerings of int16x8 ops (int16 activations, int8 weights) to mf_s16.c.

As in ops/conv.py, everything constant is computed here with the reference kernels' own helpers
(reference/conv.py, int16x8_constants), so the C does integer work only and is bit-exact with the
reference interpreter and TFLite Micro:

  FULLY_CONNECTED       -> mf_fc_s16 (dot products on SMLAD with the DSP extension)
  CONV_2D (any groups)  -> mf_conv_s16 (each pixel's patch gathered, 0 outside the input, then the same
                           dot products)
  DEPTHWISE_CONV_2D     -> mf_dwconv_s16 (each pixel's taps inside the input listed, then summed per channel)

Both requantize as mf_requant_s16 says. With an int64 bias (or none) the kernel sums in int64 and applies
TFLite's int64 requantization, whose Q15 significand and total right shift are precomputed here; with an
int32 bias it sums in int32 (wrapping) and uses the int32 rule of the int8 kernels.
"""

from __future__ import annotations

import numpy as np

from microforge.codegen.emit import c_value
from microforge.codegen.lowering import Call, EmitContext, lowering
from microforge.codegen.ops.activations import reference_check
from microforge.codegen.ops.conv import gathered_safe_distance
from microforge.errors import UnsupportedError
from microforge.graph.ir import Op, Tensor
from microforge.reference.checks import constant_data, fully_connected_geometry, io_tensors
from microforge.reference.conv import _kind, int16x8_constants, window
from microforge.reference.fixedpoint import q15_multiplier

SOURCES = ("mf_s16.c",)


def _requant(op: Op, ctx: EmitContext, x: Tensor, w: Tensor, out: Tensor, channels: int, axis: int) -> dict:
    """The op's mf_requant_s16 fields: bias, multipliers and clamp, from the reference's own helpers."""
    # The reference's own constants and checks (zero points, bias type and scale, multipliers TFLM
    # accepts): the C is generated for exactly the ops the reference runs.
    bias, significand, shift, (lo, hi) = int16x8_constants(op, x, w, out, channels, axis)
    constant_data(op, w, "weights")  # the kernel reads the weights from flash
    int32_accumulator = bias is not None and bias[1] == np.int32
    if not int32_accumulator:
        significand, shift = q15_multiplier(significand, shift)
    if bias is not None and not int32_accumulator and np.any(bias[0] == np.iinfo(np.int64).min):
        # C has no literal for INT64_MIN; such a bias means nothing in a real model.
        raise UnsupportedError(f"{op.where}: an int64 bias of -2^63 is not supported by the C kernel")
    per_channel = not (np.all(significand == significand[0]) and np.all(shift == shift[0]))
    if not per_channel:
        significand, shift = significand[:1], shift[:1]
    name = out.name
    q = dict(int32_accumulator=int(int32_accumulator), bias64="0", bias32="0",
             multiplier=ctx.constant(f"{name}_mult", significand.astype(np.int32), "int32_t"),
             shift=ctx.constant(f"{name}_shift", shift.astype(np.int32), "int32_t"),
             per_channel=int(per_channel), act_min=lo, act_max=hi)
    if int32_accumulator:
        q["bias32"] = ctx.constant(f"{name}_bias", bias[0].astype(np.int32), "int32_t")
    elif bias is not None:
        q["bias64"] = ctx.constant(f"{name}_bias", bias[0].astype(np.int64), "int64_t")
    return q


def _struct_field(fields: dict) -> str:
    """A nested struct's initializer, for ctx.struct."""
    return "{" + ", ".join(f".{k} = {c_value(v)}" for k, v in fields.items()) + "}"


@lowering("FULLY_CONNECTED", int16=True)
def lower_fully_connected_s16(op: Op, ctx: EmitContext) -> Call:
    (x, w), out = io_tensors(op, 2)
    rows, in_features, out_features = fully_connected_geometry(op, x, w)
    if _kind(op, x, w, out) != "int16x8":
        raise UnsupportedError(f"{op.where}: the int16 FULLY_CONNECTED kernel needs int16 input and output "
                               f"with int8 weights")
    q = _requant(op, ctx, x, w, out, out_features, axis=0)
    params = ctx.struct("mf_fc_s16_params", f"{out.name}_fc16", dict(
        weights=ctx.tensor(w), rows=rows, in_features=in_features, out_features=out_features,
        q=_struct_field(q)))
    return Call(f"mf_fc_s16({params}, {ctx.tensor(x)}, {ctx.tensor(out)});", SOURCES)


@lowering("CONV_2D", "DEPTHWISE_CONV_2D", int16=True)
def lower_conv_s16(op: Op, ctx: EmitContext) -> Call:
    reference_check(op)  # shapes, options and types exactly as the interpreter checks them
    (x, w), out = io_tensors(op, 2)
    batches, in_h, in_w, in_c = x.shape
    _, kh, kw, w_depth = w.shape
    out_c = out.shape[-1]
    depthwise = op.type == "DEPTHWISE_CONV_2D"
    win = window(op, in_h, in_w, kh, kw, dilated=True)
    q = _requant(op, ctx, x, w, out, out_c, axis=3 if depthwise else 0)
    params = ctx.struct("mf_conv_s16_params", f"{out.name}_conv16", dict(
        weights=ctx.tensor(w), batches=batches, in_h=in_h, in_w=in_w, in_c=in_c,
        out_h=win.out_h, out_w=win.out_w, out_c=out_c, kh=kh, kw=kw,
        stride_h=win.stride_h, stride_w=win.stride_w, dilation_h=win.dilation_h, dilation_w=win.dilation_w,
        pad_top=win.pad_top, pad_left=win.pad_left, groups=1 if depthwise else in_c // w_depth,
        depth_multiplier=out_c // in_c if depthwise else 0, q=_struct_field(q)))
    # Each output pixel is written after everything its window reads (a group's patch: with groups, a
    # later group would be read after the pixel's first outputs are written).
    overlaps = {0: gathered_safe_distance(win, in_h, in_w, 2 * in_c, 2 * out_c, block=1)} \
        if batches == 1 and (depthwise or w_depth == in_c) else {}
    if depthwise:
        if kh * kw > 256:
            raise UnsupportedError(f"{op.where}: the int16 depthwise kernel sums at most 256 taps in int32")
        return Call(f"mf_dwconv_s16({params}, {ctx.tensor(x)}, {ctx.tensor(out)}, (int32_t *){ctx.scratch()});",
                    SOURCES, scratch_bytes=8 * kh * kw, overlaps=overlaps)
    return Call(f"mf_conv_s16({params}, {ctx.tensor(x)}, {ctx.tensor(out)}, (int16_t *){ctx.scratch()});",
                SOURCES, scratch_bytes=2 * kh * kw * w_depth, overlaps=overlaps)
