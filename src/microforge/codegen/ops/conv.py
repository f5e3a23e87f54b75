"""Lowerings of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED to the kernels of mf_conv.c.

Everything constant is computed here, with the reference kernels' own helpers so that the C is bit-exact
with them: the window (output size, leading padding), per-channel multipliers and shifts (in double, as
TFLM does), the activation clamp, and the bias with the input zero point folded in,

    bias'[oc] = bias[oc] + input_offset * sum(w[oc])      (input_offset = -input_zero_point),

wrapped to int32. The fold is exact everywhere because the kernels read input_zero_point at positions
outside the image, whose (x + input_offset) * w is 0, which is what TFLM's skipped taps add.

Kernel choice (int8):
  CONV_2D 1x1, stride 1, one group     -> mf_fc_s8 over pixels (a matrix product, no geometry)
  CONV_2D otherwise                     -> mf_conv_s8 (per-pixel patches, 2 pixels x 2 channels at a time;
                                           scratch 2 * kh * kw * in_c/groups bytes unless every patch is
                                           one contiguous run of the input)
  DEPTHWISE_CONV_2D 3x3, multiplier 1   -> mf_dwconv_3x3_s8 (9 taps unrolled inside, general at borders)
  DEPTHWISE_CONV_2D otherwise           -> mf_dwconv_s8
  FULLY_CONNECTED                       -> mf_fc_s8
On Cortex-M4/M7 the same C uses the DSP extension (SMLAD) by itself (`__ARM_FEATURE_DSP`).
float32 (float weights, or hybrid int8 weights dequantized here): mf_conv_f32 / mf_dwconv_f32 / mf_fc_f32.
"""

from __future__ import annotations

import numpy as np

from microforge.codegen.lowering import Call, EmitContext, lowering
from microforge.errors import ModelError, UnsupportedError
from microforge.graph.ir import Op, Tensor
from microforge.reference.checks import (
    fully_connected_geometry,
    activation_of,
    check_output_shape,
    constant_data,
    io_tensors,
    per_tensor_quant,
    positive_option,
    quantized_activation_range,
)
from microforge.reference.conv import (
    Window,
    _float_bias,
    _float_weights,
    _int32_bias,
    _kind,
    _multipliers,
    _weight_scales,
    window,
)
from microforge.reference.fixedpoint import activation_range_float, wrap_int32

SOURCES = ("mf_conv.c",)
# The kernels sum int8 * int8 products (each at most 2^14 in magnitude) in int32.
MAX_DEPTH = (2**31 - 1) // (128 * 128)


def _check_depth(op: Op, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise UnsupportedError(f"{op.where}: {depth} products per output would overflow the int32 "
                               f"accumulator of the C kernel (at most {MAX_DEPTH})")


def _fast_requant(w_data: np.ndarray, bias32: np.ndarray, significand: np.ndarray, shift: np.ndarray,
                  channels: int) -> np.ndarray | None:
    """The per-channel constants of the kernels' short requantization (mf_requant_s8.fq), or None when it
    would not be exact for every input.

    With L = max(shift, 0) + 1 and E = max(-shift, 0), TFLite's requantization of an accumulator a is
        r = SMMULR(a << L, significand);  out = (r + H + ((r >> 31) & M)) >> E
    (H = 2^(E-1) or 0, M = -1 if E > 0 else 0), identical as long as |a| << L stays below 2^31: then the
    doubled product rounds like SaturatingRoundingDoublingHighMul (never saturating, the significand being
    non-negative) and r + H cannot overflow. |a| <= |bias'| + 128 * sum|w| over all int8 inputs."""
    sig = np.broadcast_to(np.asarray(significand, np.int64), (channels,))
    sh = np.broadcast_to(np.asarray(shift, np.int64), (channels,))
    if np.any(sig < 0):
        return None
    bound = np.abs(bias32.astype(np.int64)) + 128 * np.abs(w_data.reshape(channels, -1).astype(np.int64)).sum(axis=1)
    left = np.maximum(sh, 0) + 1
    right = np.maximum(-sh, 0)
    if np.any(left > 31) or np.any(right > 31) or np.any(bound >= (np.int64(1) << (31 - left))):
        return None
    half = np.where(right > 0, np.int64(1) << np.maximum(right - 1, 0), 0)
    mask = np.where(right > 0, -1, 0)
    return np.stack([bias32, sig, left, right, half, mask], axis=1).astype(np.int32).reshape(-1)


def _requant(op: Op, ctx: EmitContext, x: Tensor, w: Tensor, out: Tensor, w_data: np.ndarray, channels: int,
             axis: int) -> str:
    """The C initializer of an mf_requant_s8 for an int8 op; w_data is [channels, depth] (int8)."""
    in_scale, in_zp = per_tensor_quant(op, x, "input")
    out_scale, out_zp = per_tensor_quant(op, out, "output")
    w_scales = _weight_scales(op, w, channels, axis)
    bias = _int32_bias(op, channels, in_scale, w_scales, out_scale)
    significand, shift = _multipliers(op, [in_scale * float(s) / out_scale for s in w_scales])
    lo, hi = quantized_activation_range(op, out_scale, out_zp)
    sums = w_data.reshape(channels, -1).astype(np.int64).sum(axis=1)
    folded = (bias if bias is not None else np.zeros(channels, np.int64)) - in_zp * sums
    per_channel = not (np.all(significand == significand[0]) and np.all(shift == shift[0]))
    name = op.outputs[0].name
    bias32 = wrap_int32(folded)
    fast = _fast_requant(w_data, bias32, significand, shift, channels)
    if not per_channel:
        significand, shift = significand[:1], shift[:1]
    fields = {
        "bias": ctx.constant(f"{name}_bias", bias32.astype(np.int32), "int32_t"),
        "multiplier": ctx.constant(f"{name}_mult", significand.astype(np.int32), "int32_t"),
        "shift": ctx.constant(f"{name}_shift", shift.astype(np.int32), "int32_t"),
        "per_channel": int(per_channel),
        "output_offset": out_zp,
        "act_min": lo,
        "act_max": hi,
        "fq": ctx.constant(f"{name}_fq", fast, "int32_t") if fast is not None else "0",
    }
    return "{ " + ", ".join(f".{k} = {v}" for k, v in fields.items()) + " }"


def _float_fields(op: Op, ctx: EmitContext, channels: int) -> dict:
    bias = _float_bias(op, channels)
    lo, hi = activation_range_float(activation_of(op))
    name = op.outputs[0].name
    return {
        "fbias": ctx.constant(f"{name}_bias", bias.astype(np.float32), "float") if bias is not None else "0",
        "fmin": float(lo),
        "fmax": float(hi),
    }


def _geometry(x: Tensor, out: Tensor, win: Window) -> dict:
    batches, h, w, c = x.shape
    return dict(batches=batches, in_h=h, in_w=w, in_c=c, out_h=win.out_h, out_w=win.out_w, out_c=out.shape[3],
                kh=win.kh, kw=win.kw, stride_h=win.stride_h, stride_w=win.stride_w, dilation_h=win.dilation_h,
                dilation_w=win.dilation_w, pad_top=win.pad_top, pad_left=win.pad_left)


def _c_in(ctx: EmitContext, t: Tensor, ctype: str) -> str:
    return f"(const {ctype} *){ctx.tensor(t)}"


def _rows_safe_distance(rows: int, in_features: int, out_features: int, block: int = 2) -> int:
    """mf_fc_s8 handles `block` rows at a time in increasing order, reading a block's input rows while it
    writes the block's output rows: those may only land on input rows below the block."""
    return max(0, max(min(r + block, rows) * out_features - r * in_features for r in range(0, rows, block)))


def _gathered_safe_distance(pixels: int, in_c: int, out_c: int, reach_back: int) -> int:
    """mf_conv_s8 (stride 1, same size) copies the patches of two output pixels into scratch, then writes
    those two pixels. After writing pixels < q it still reads input pixels >= q - reach_back (a window
    reaches `reach_back` pixels before its own), so outputs may land on input pixels below that."""
    blocks = range(2, pixels, 2)  # after the last block nothing more is read
    return max([0] + [q * out_c - max(0, q - reach_back) * in_c for q in blocks])


def _contiguous_patches(win: Window, in_h: int, in_w: int, groups: int) -> bool:
    """True when every output pixel's patch is one run of the input (mf_conv_s8 then needs no scratch)."""
    return (win.kh == 1 and groups == 1 and (win.kw == 1 or win.dilation_w == 1) and win.pad_top == 0
            and win.pad_left == 0 and (win.out_h - 1) * win.stride_h < in_h
            and (win.out_w - 1) * win.stride_w + (win.kw - 1) * win.dilation_w < in_w)


@lowering("CONV_2D")
def lower_conv_2d(op: Op, ctx: EmitContext) -> Call:
    (x, w), out = io_tensors(op, 2)
    if len(x.shape) != 4 or len(w.shape) != 4 or len(out.shape) != 4:
        raise ModelError(f"{op.where}: input '{x.name}', weights '{w.name}' and output must be 4-D")
    batches, h, width, c = x.shape
    out_c, kh, kw, group_in = w.shape
    if group_in == 0 or c % group_in or out_c % (c // group_in):
        raise ModelError(f"{op.where}: input '{x.name}' has {c} channels, weights '{w.name}' take "
                         f"{group_in} per group for {out_c} outputs")
    groups = c // group_in
    win = window(op, h, width, kh, kw, dilated=True)
    check_output_shape(op, (batches, win.out_h, win.out_w, out_c))
    kind = _kind(op, x, w, out)
    name = out.name
    if kind == "float32":
        weights = ctx.constant(f"{name}_w", _float_weights(op, w, 0).astype(np.float32), "float")
        params = ctx.struct("mf_conv_params", f"{name}_conv", dict(
            weights=weights, **_geometry(x, out, win), groups=groups, depth_multiplier=1,
            **_float_fields(op, ctx, out_c)))
        return Call(f"mf_conv_f32({params}, {_c_in(ctx, x, 'float')}, {ctx.tensor(out)});", SOURCES)
    w_data = constant_data(op, w, "weights")
    _check_depth(op, kh * kw * group_in)
    q = _requant(op, ctx, x, w, out, w_data, out_c, axis=0)
    weights = ctx.tensor(w)  # [out][kh][kw][in/groups]: TFLite's layout is the kernel's
    if kh == 1 and kw == 1 and win.stride_h == 1 and win.stride_w == 1 and groups == 1:
        params = ctx.struct("mf_fc_params", f"{name}_pw", dict(
            weights=weights, rows=batches * h * width, in_features=c, out_features=out_c, q=q))
        return Call(f"mf_fc_s8({params}, {_c_in(ctx, x, 'int8_t')}, {ctx.tensor(out)});", SOURCES,
                    notes=["1x1 convolution as a matrix product"],
                    overlaps={0: _rows_safe_distance(batches * h * width, c, out_c)})
    params = ctx.struct("mf_conv_params", f"{name}_conv", dict(
        weights=weights, **_geometry(x, out, win), groups=groups, depth_multiplier=1, input_zero_point=x.zero_point,
        q=q))
    overlaps = {}
    if _contiguous_patches(win, h, width, groups):
        scratch, scratch_bytes = "(int8_t *)0", 0
    else:
        scratch_bytes = 2 * kh * kw * group_in
        scratch = f"(int8_t *){ctx.scratch()}"
        if groups == 1 and batches == 1 and (win.out_h, win.out_w) == (h, width) and \
                win.stride_h == win.stride_w == 1:
            overlaps = {0: _gathered_safe_distance(h * width, c, out_c, win.pad_top * width + win.pad_left)}
    return Call(f"mf_conv_s8({params}, {_c_in(ctx, x, 'int8_t')}, {ctx.tensor(out)}, {scratch});", SOURCES,
                scratch_bytes=scratch_bytes, overlaps=overlaps)


@lowering("DEPTHWISE_CONV_2D")
def lower_depthwise_conv_2d(op: Op, ctx: EmitContext) -> Call:
    (x, w), out = io_tensors(op, 2)
    if len(x.shape) != 4 or len(w.shape) != 4 or w.shape[0] != 1 or len(out.shape) != 4:
        raise ModelError(f"{op.where}: input '{x.name}' must be 4-D and weights '{w.name}' "
                         f"[1, kh, kw, channels], got {list(w.shape)}")
    batches, h, width, c = x.shape
    _, kh, kw, out_c = w.shape
    mult = positive_option(op, "depth_multiplier")
    if c * mult != out_c:
        raise ModelError(f"{op.where}: input '{x.name}' has {c} channels and depth_multiplier "
                         f"{mult}, but weights '{w.name}' have {out_c} channels")
    win = window(op, h, width, kh, kw, dilated=True)
    check_output_shape(op, (batches, win.out_h, win.out_w, out_c))
    kind = _kind(op, x, w, out)
    name = out.name
    geometry = _geometry(x, out, win)
    if kind == "float32":
        w_float = _float_weights(op, w, 3).reshape(kh * kw, out_c).T  # -> [out_c][kh * kw]
        weights = ctx.constant(f"{name}_w", np.ascontiguousarray(w_float).astype(np.float32), "float")
        params = ctx.struct("mf_conv_params", f"{name}_dw", dict(
            weights=weights, **geometry, groups=1, depth_multiplier=mult, **_float_fields(op, ctx, out_c)))
        return Call(f"mf_dwconv_f32({params}, {_c_in(ctx, x, 'float')}, {ctx.tensor(out)});", SOURCES)
    w_data = constant_data(op, w, "weights").reshape(kh * kw, out_c).T  # -> [out_c][kh * kw]
    _check_depth(op, kh * kw)
    q = _requant(op, ctx, x, w, out, w_data, out_c, axis=3)
    weights = ctx.constant(f"{name}_w", np.ascontiguousarray(w_data).astype(np.int8), "int8_t")
    params = ctx.struct("mf_conv_params", f"{name}_dw", dict(
        weights=weights, **geometry, groups=1, depth_multiplier=mult, input_zero_point=x.zero_point, q=q))
    fast = kh == 3 and kw == 3 and mult == 1
    kernel = "mf_dwconv_3x3_s8" if fast else "mf_dwconv_s8"
    overlaps = {}
    if fast and batches == 1 and out.shape == x.shape and win.stride_h == win.stride_w == 1 and \
            win.dilation_h == win.dilation_w == 1:
        # Raster order, each output pixel's channel written after its 3x3 window was read: the output of
        # pixel i lands on input pixel i - P (its own top-left tap), which no later pixel reads.
        overlaps = {0: (win.pad_top * width + win.pad_left) * c}
    return Call(f"{kernel}({params}, {_c_in(ctx, x, 'int8_t')}, {ctx.tensor(out)});", SOURCES,
                notes=["3x3 depthwise, taps unrolled"] if fast else [], overlaps=overlaps)


@lowering("FULLY_CONNECTED")
def lower_fully_connected(op: Op, ctx: EmitContext) -> Call:
    (x, w), out = io_tensors(op, 2)
    rows, in_features, out_features = fully_connected_geometry(op, x, w)
    kind = _kind(op, x, w, out)
    name = out.name
    shape = dict(rows=rows, in_features=in_features, out_features=out_features)
    if kind == "float32":
        weights = ctx.constant(f"{name}_w", _float_weights(op, w, 0).astype(np.float32), "float")
        params = ctx.struct("mf_fc_params", f"{name}_fc", dict(weights=weights, **shape,
                                                               **_float_fields(op, ctx, out_features)))
        return Call(f"mf_fc_f32({params}, {_c_in(ctx, x, 'float')}, {ctx.tensor(out)});", SOURCES)
    w_data = constant_data(op, w, "weights")
    _check_depth(op, in_features)
    q = _requant(op, ctx, x, w, out, w_data, out_features, axis=0)
    params = ctx.struct("mf_fc_params", f"{name}_fc", dict(weights=ctx.tensor(w), **shape, q=q))
    return Call(f"mf_fc_s8({params}, {_c_in(ctx, x, 'int8_t')}, {ctx.tensor(out)});", SOURCES,
                overlaps={0: _rows_safe_distance(rows, in_features, out_features)})
