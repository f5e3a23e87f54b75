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
On Cortex-M4/M7 the same C uses the DSP extension (SMLAD) by itself (`__ARM_FEATURE_DSP`), and for those
targets, where the requantization constants of the *_dsp kernels are proven exact (_dsp_requant):
  CONV_2D 1x1 stride 1 / FULLY_CONNECTED -> mf_fc_s8_dsp (rows widened to int16 once, 4 rows x 1 channel
                                            a pass; a single row: 1 row x 4 channels)
  CONV_2D with one group                 -> mf_conv_s8_dsp (four patches widened, then the same product)
  DEPTHWISE_CONV_2D 3x3, multiplier 1,   -> mf_dwconv_3x3_s8_dsp (SMLABB/SMLATT, int16 weights scaled by
    channels a multiple of 4                2^L, taps in assembly)
with weights re-laid-out here (a stream of int32 words of int8 weights and requantization constants,
dsp_stream; int16 pairs for the depthwise). Where the short requantization is not provably exact (a bias
near 2^30, as trained models' near-dead channels have), the same SMLAD loops run in accumulator mode and
mf_fc_s8_exact_dsp, mf_conv_s8_exact_dsp and mf_dwconv_3x3_s8_exact_dsp requantize in full
(accumulator_*: the layers' parameters, shared with dynamic fixed point, ops/dfp.py).
float32 (float weights, or hybrid int8 weights dequantized here): mf_conv_f32 (depthwise as one group per
channel) / mf_fc_f32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from microforge.codegen.lowering import Call, EmitContext, lowering
from microforge.errors import ModelError, UnsupportedError
from microforge.graph.ir import Op, Tensor
from microforge.plan.lifetimes import SafeDistance
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
from microforge.reference.fixedpoint import activation_range_float, multiply_by_quantized_multiplier, wrap_int32

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


def _dsp_requant(w_data: np.ndarray, bias32: np.ndarray, significand: np.ndarray, shift: np.ndarray, out_zp: int,
                 lo: int, hi: int, channels: int) -> np.ndarray | None:
    """The constants of the Cortex-M4/M7 kernels' requantization (mf_requant_s8.dq, [channels][6]
    {bias, multiplier, L, E, K, M}), or None when it would not be exact for every input:

        out = clamp(SMMLAR(acc << L, multiplier, K + ((acc >> 31) & M)) >> E),   K = H + (out_zp << E)

    with the accumulator acc starting at the bias, and L, E, H, M those of _fast_requant (exact while
    |acc| << L < 2^31). SMMLAR adds K to r = SMMULR(acc << L, multiplier) in its 64-bit sum, so the result
    is r + K exactly when that fits in int32; adding out_zp << E before the shift is adding out_zp after it
    (floor division by 2^E). The sign of acc replaces that of r: the multiplier is non-negative, so they
    agree unless r = 0 with acc < 0, and then both give (H - 1 or H) >> E = 0.

    A channel whose weights are all zero has one output whatever the input (a trained model's dead
    channels often come with a huge bias that no bound would admit): it gets bias 0, multiplier 0 and
    K = that output."""
    sig = np.broadcast_to(np.asarray(significand, np.int64), (channels,))
    sh = np.broadcast_to(np.asarray(shift, np.int64), (channels,))
    w64 = np.abs(w_data.reshape(channels, -1).astype(np.int64))
    dead = w64.sum(axis=1) == 0
    bias = bias32.astype(np.int64)
    constant = np.clip(multiply_by_quantized_multiplier(bias, sig, sh) + out_zp, lo, hi)
    live = ~dead
    left = np.maximum(sh, 0) + 1
    right = np.maximum(-sh, 0)
    if np.any(sig[live] < 0) or np.any(left[live] > 31) or np.any(right[live] > 31):
        return None
    left, right = np.where(live, left, 0), np.where(live, right, 0)
    bound = np.abs(bias) + 128 * w64.sum(axis=1)
    if np.any(live & (bound >= (np.int64(1) << (31 - left)))):
        return None
    half = np.where(right > 0, np.int64(1) << np.maximum(right - 1, 0), 0)
    zp_shifted = np.int64(out_zp) << right
    r_max = ((bound << left) * sig >> 32) + 1  # |SMMULR(acc << L, multiplier)|
    k = half + zp_shifted
    if np.any(live & ((np.abs(zp_shifted) >= 2**31) | (r_max + np.abs(k) + 1 >= 2**31))):
        return None
    rows = np.stack([bias, sig, left, right, k, np.where(right > 0, -1, 0)], axis=1)
    rows[dead] = np.stack([0 * constant, 0 * constant, 0 * constant, 0 * constant, constant, 0 * constant],
                          axis=1)[dead]
    return rows.astype(np.int32).reshape(-1)


DSP_TARGETS = ("cortex-m4", "cortex-m7")


@dataclass
class _Requant:
    """An int8 op's requantization constants (see mf_requant_s8); dq: the Cortex-M4/M7 kernels' [out][6]
    (None when not asked for or not provably exact)."""

    name: str
    bias32: np.ndarray
    significand: np.ndarray
    shift: np.ndarray
    per_channel: bool
    out_zp: int
    lo: int
    hi: int
    fast: np.ndarray | None
    dq: np.ndarray | None

    def c(self, ctx: EmitContext, dq: np.ndarray | None = None, in_stream: bool = False) -> str:
        """The C initializer of the mf_requant_s8: for a *_dsp kernel (given its dq) only dq and the clamp,
        the other tables are left out of flash; `in_stream`: the clamp only (the matrix product's constants
        are in its weight stream, dsp_stream)."""
        n = self.name
        if dq is not None or in_stream:
            fields = {"bias": "0", "multiplier": "0", "shift": "0", "per_channel": 0, "fq": "0",
                      "dq": "0" if in_stream else ctx.constant(f"{n}_dq", dq.astype(np.int32), "int32_t")}
        else:
            sig, shift = (self.significand, self.shift) if self.per_channel else (self.significand[:1],
                                                                                  self.shift[:1])
            fields = {
                "bias": ctx.constant(f"{n}_bias", self.bias32.astype(np.int32), "int32_t"),
                "multiplier": ctx.constant(f"{n}_mult", sig.astype(np.int32), "int32_t"),
                "shift": ctx.constant(f"{n}_shift", shift.astype(np.int32), "int32_t"),
                "per_channel": int(self.per_channel),
                "fq": ctx.constant(f"{n}_fq", self.fast, "int32_t") if self.fast is not None else "0",
                "dq": "0",
            }
        fields.update(output_offset=self.out_zp, act_min=self.lo, act_max=self.hi)
        return "{ " + ", ".join(f".{k} = {v}" for k, v in fields.items()) + " }"


def _requant(op: Op, x: Tensor, w: Tensor, out: Tensor, w_data: np.ndarray, channels: int, axis: int,
             dsp: bool = False) -> _Requant:
    """The requantization of an int8 op, with the Cortex-M4/M7 constants if `dsp`; w_data is
    [channels, depth] (int8)."""
    in_scale, in_zp = per_tensor_quant(op, x, "input")
    out_scale, out_zp = per_tensor_quant(op, out, "output")
    w_scales = _weight_scales(op, w, channels, axis)
    bias = _int32_bias(op, channels, in_scale, w_scales, out_scale)
    significand, shift = _multipliers(op, [in_scale * float(s) / out_scale for s in w_scales])
    lo, hi = quantized_activation_range(op, out_scale, out_zp)
    sums = w_data.reshape(channels, -1).astype(np.int64).sum(axis=1)
    folded = (bias if bias is not None else np.zeros(channels, np.int64)) - in_zp * sums
    per_channel = not (np.all(significand == significand[0]) and np.all(shift == shift[0]))
    bias32 = wrap_int32(folded)
    fast = _fast_requant(w_data, bias32, significand, shift, channels)
    dq = _dsp_requant(w_data, bias32, significand, shift, out_zp, lo, hi, channels) if dsp else None
    return _Requant(op.outputs[0].name, bias32, np.asarray(significand), np.asarray(shift), per_channel, out_zp,
                    lo, hi, fast, dq)


def _dsp_depthwise(w_data: np.ndarray, dq: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The weight words and constants of mf_dwconv_3x3_s8_dsp from w_data [channels][9] and the [channels][6]
    dq {bias, multiplier, L, E, K, M}, or None if the weights scaled by 2^L do not fit int16.

    Channel c's weights and bias are multiplied by 2^L_c here, so the kernel's accumulator is acc << L
    already (|acc| << L < 2^31 was proven). Per group of 4 channels: the words (w_c0, w_c2) and (w_c1, w_c3)
    of each tap ([groups][9][2] int16 pairs); constants [groups][20]: the 4 biases, then {multiplier, E,
    K, M} of each channel."""
    channels = w_data.shape[0]
    f = dq.reshape(channels, 6).astype(np.int64)
    left = f[:, 2]
    weights = dsp_depthwise_words(w_data, left)
    if weights is None:
        return None
    per = f[:, [1, 3, 4, 5]].reshape(channels // 4, 16)
    bias = (f[:, 0] << left).reshape(channels // 4, 4)  # still inside int32: |bias| <= bound
    consts = np.concatenate([bias, per], axis=1).astype(np.int32).reshape(-1)
    return weights, consts


def dsp_depthwise_words(w_data: np.ndarray, left: np.ndarray | int = 0) -> np.ndarray | None:
    """The int16 weight pairs of the Cortex-M4/M7 3x3 depthwise kernels from w_data [channels][9], channel c
    scaled by 2^left[c]: per group of 4 channels and tap the words (w_c0, w_c2), (w_c1, w_c3); None if a
    scaled weight leaves int16."""
    channels = w_data.shape[0]
    scaled = w_data.astype(np.int64) << np.broadcast_to(np.asarray(left, np.int64), (channels,))[:, None]
    if np.any(np.abs(scaled) > 32767):
        return None
    halves = (scaled & 0xFFFF).astype(np.uint32).reshape(channels // 4, 4, 9)  # [group][c][tap]
    words = np.stack([halves[:, 0] | (halves[:, 2] << 16), halves[:, 1] | (halves[:, 3] << 16)], axis=2)
    return np.ascontiguousarray(words).reshape(-1).view(np.int32)  # [group][tap][2]


def _float_fields(op: Op, ctx: EmitContext, channels: int) -> dict:
    bias = _float_bias(op, channels)
    lo, hi = activation_range_float(activation_of(op))
    name = op.outputs[0].name
    return {
        "fbias": ctx.constant(f"{name}_bias", bias.astype(np.float32), "float") if bias is not None else "0",
        "fmin": float(lo),
        "fmax": float(hi),
    }


def conv_geometry(x: Tensor, out: Tensor, win: Window) -> dict:
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


def widened_rows_safe_distance(rows: int, in_features: int, out_features: int, narrow: bool = False) -> int:
    """mf_fc_s8_dsp widens each block of four input rows (a short last block repeats its last row) into
    scratch before it writes the block's output rows: after the block ending at row e, outputs
    < e * out_features are written and inputs >= e * in_features are still to be read (none after the
    last block). A single row is widened whole first too, unless `narrow`: then every pass reads all of it
    while the outputs are written, so they must end below it."""
    if narrow:
        return max(0, out_features)
    return max([0] + [e * (out_features - in_features) for e in range(4, rows, 4)])


def dsp_stream(w_data: np.ndarray, dq: np.ndarray | None, cols: bool = False) -> np.ndarray:
    """[out][depth] int8 weights and their [out][6] dq {bias, multiplier, L, E, K, M} -> the int32 stream of
    the Cortex-M4/M7 matrix product (see mf_conv.c): weight words of int8 depths 4g .. 4g + 3, zeros past the
    depth up to an even number of groups. Rows kernel (mf_mm_rows4): per channel its bias 4 times, its
    words, then {multiplier, L, E, K, M}. Cols kernel (`cols`, mf_mm_cols4): per block of 4 channels (the
    last channel repeated to fill the last block) the 4 biases, per group the 4 channels' words, then the
    4 channels' {multiplier, L, E, K, M}. dq None: the accumulator kernels' stream (zero biases, no
    constants)."""
    outs, depth = w_data.shape
    words = dsp_words(w_data).astype(np.int64)  # [out][groups]
    groups = words.shape[1]
    f = dq.reshape(outs, 6).astype(np.int64) if dq is not None else np.zeros((outs, 1), np.int64)
    bias, rest = f[:, :1], f[:, 1:]
    if not cols:
        return np.concatenate([np.repeat(bias, 4, axis=1), words, rest], axis=1).astype(np.int32).reshape(-1)
    order = np.concatenate([np.arange(outs), np.full(-outs % 4, outs - 1)])
    blocks = len(order) // 4
    block_words = words[order].reshape(blocks, 4, groups).transpose(0, 2, 1).reshape(blocks, 4 * groups)
    return np.concatenate([bias[order].reshape(blocks, 4), block_words,
                           rest[order].reshape(blocks, 4 * rest.shape[1])],
                          axis=1).astype(np.int32).reshape(-1)


def dsp_words(w_data: np.ndarray) -> np.ndarray:
    """[out][depth] int8 -> [out][groups] int32 words of depths 4g .. 4g + 3, zeros past the depth up to an
    even number of groups: the weights of dsp_stream without its constants (the split stream of shared
    weights, mf_mm_rows4s)."""
    outs, depth = w_data.shape
    groups = 2 * -(-depth // 8)
    padded = np.zeros((outs, groups * 4), np.int8)
    padded[:, :depth] = w_data
    return padded.view("<i4").reshape(outs, groups)


def dsp_fc_scratch(rows: int, depth: int, outs: int) -> tuple[bool, int]:
    """Whether mf_fc_s8_dsp reads a single row narrow (no scratch), and the bytes of its widened rows.

    A single row whose widened copy would outweigh its input and output is widened again in every pass
    instead (2 more instructions per 16 MACs, no scratch): AD's 640 -> 128 layer keeps 1,280 bytes out of
    the arena. So is a short row (up to 32 deep: hello_world's 16 -> 16), whose few MACs gain less than its
    scratch costs. The kernel then reads whole words: only for depths of whole groups of 8. Otherwise the
    widened rows are one (16 bytes per 8 depths), or a block of four."""
    narrow = rows == 1 and depth % 8 == 0 and (depth > outs or depth <= 32)
    return narrow, 0 if narrow else (16 if rows == 1 else 64) * -(-depth // 8)


def _dsp_fc(ctx: EmitContext, name: str, w_data: np.ndarray, rows: int, rq: "_Requant", x_ptr: str, y_ptr: str,
            notes: list[str]) -> Call:
    """mf_fc_s8_dsp for rows x in_features (int8) times w_data [out][in] (rq.dq set)."""
    outs, depth = w_data.shape
    weights = ctx.constant(f"{name}_wdsp", dsp_stream(w_data, rq.dq, cols=rows == 1), "int32_t")
    params = ctx.struct("mf_fc_params", f"{name}_mm", dict(
        weights=weights, rows=rows, in_features=depth, out_features=outs, q=rq.c(ctx, in_stream=True)))
    narrow, scratch_bytes = dsp_fc_scratch(rows, depth, outs)
    scratch = "(int32_t *)0" if narrow else f"(int32_t *){ctx.scratch()}"
    return Call(f"mf_fc_s8_dsp({params}, {x_ptr}, {y_ptr}, {scratch});", SOURCES,
                scratch_bytes=scratch_bytes, notes=notes,
                overlaps={0: widened_rows_safe_distance(rows, depth, outs, narrow)})


def dsp_patch_weights(w_data: np.ndarray, kh: int, kw: int, c: int) -> tuple[np.ndarray, int]:
    """Convolution weights [out][kh * kw * c] laid out as mf_conv_s8_dsp's patches: each kernel row's
    kw * c values zero-padded to `run` whole words (mf_conv_widen_patch). Returns [out][kh * 4 * run], run."""
    out_c = w_data.shape[0]
    run = -(-kw * c // 4)
    rows = np.zeros((out_c, kh, 4 * run), np.int8)
    rows[:, :, :kw * c] = w_data.reshape(out_c, kh, kw * c)
    return rows.reshape(out_c, kh * 4 * run), run


def dsp_conv_scratch(depth: int, run: int) -> int:
    """Bytes of mf_conv_s8_dsp's scratch: four widened patches of `depth` and a gathered kernel row."""
    return 64 * -(-depth // 8) + 4 * run


@dataclass
class AccumulatorLayer:
    """One layer on mf_conv.c's accumulator kernels (mf_fc_acc_dsp and co): the params struct (C pointer),
    the bytes of its block of accumulators and of the kernel's own scratch, and how its output may
    overlap its input. Shared by the exact int8 path and dynamic fixed point (ops/dfp.py)."""

    params: str
    acc_bytes: int
    kernel_bytes: int
    narrow: bool
    overlaps: dict
    notes: list[str]


def accumulator_matrix(ctx: EmitContext, name: str, w_data: np.ndarray, rows: int, q: str) -> AccumulatorLayer:
    """rows x in_features times w_data [out][in] (1x1 convolutions and fully connected layers)."""
    outs, depth = w_data.shape
    weights = ctx.constant(f"{name}_wacc", dsp_stream(w_data, None, cols=rows == 1), "int32_t")
    params = ctx.struct("mf_fc_params", f"{name}_acc", dict(
        weights=weights, rows=rows, in_features=depth, out_features=outs, q=q))
    narrow, kernel_bytes = dsp_fc_scratch(rows, depth, outs)
    acc_bytes = 4 * (-(-outs // 4) * 4 if rows == 1 else 4 * outs)
    # every input row is read before the output stage gets its block
    return AccumulatorLayer(params, acc_bytes, kernel_bytes, narrow,
                            {0: widened_rows_safe_distance(rows, depth, outs)},
                            ["matrix product, SMLAD on widened rows"])


def accumulator_conv(ctx: EmitContext, name: str, x: Tensor, out: Tensor, win: Window, w_data: np.ndarray, q: str,
                     zero_point: int) -> AccumulatorLayer:
    """A convolution of one image with one group on widened patches (zero_point read outside the input)."""
    _, h, width, c = x.shape
    out_c = out.shape[3]
    patch_weights, run = dsp_patch_weights(w_data, win.kh, win.kw, c)
    weights = ctx.constant(f"{name}_wacc", dsp_stream(patch_weights, None), "int32_t")
    params = ctx.struct("mf_conv_params", f"{name}_acc", dict(
        weights=weights, **conv_geometry(x, out, win), groups=1, depth_multiplier=1, input_zero_point=zero_point,
        q=q))
    return AccumulatorLayer(params, 16 * out_c, dsp_conv_scratch(patch_weights.shape[1], run), False,
                            {0: gathered_safe_distance(win, h, width, c, out_c)},
                            ["convolution on widened patches, SMLAD"])


def accumulator_depthwise(ctx: EmitContext, name: str, x: Tensor, out: Tensor, win: Window, w_data: np.ndarray,
                          q: str, zero_point: int, direction: str) -> AccumulatorLayer:
    """A 3x3 depthwise convolution of one image, multiplier 1, channels a multiple of 4, w_data [c][9].
    direction: "either" (the plan picks: backward over the upper part of the input), "forward" or
    "backward" (fixed)."""
    _, h, width, c = x.shape
    fields = {}
    if window_leaves_input(win, h, width):  # the taps outside read the zero point from flash
        fields["zero_row"] = ctx.constant(f"{name}_zero_row", np.full(c, zero_point, np.int8), "int8_t")
    backward = direction == "backward" or (direction == "either" and ctx.runs_backward(x, out))
    params = ctx.struct("mf_conv_params", f"{name}_acc", dict(
        weights=ctx.constant(f"{name}_wacc", dsp_depthwise_words(w_data), "int32_t"), **conv_geometry(x, out, win),
        groups=1, depth_multiplier=1, input_zero_point=zero_point, q=q, backward=int(backward), **fields))
    distance = depthwise_safe_distance(win, h, width, c)
    overlap = {"either": distance, "forward": SafeDistance(below=distance.below),
               "backward": SafeDistance(above=distance.above)}[direction]
    return AccumulatorLayer(params, 4 * c, 0, False, {0: overlap}, ["3x3 depthwise, taps unrolled"])


def _exact_call(kernel: str, layer: AccumulatorLayer, ctx: EmitContext, x: Tensor, out: Tensor) -> Call:
    """An int8 layer on the accumulator kernels with TFLite's requantization in full."""
    scratch = ctx.scratch()
    kernel_scratch = "" if kernel == "mf_dwconv_3x3_s8_exact_dsp" else \
        ", (int32_t *)0" if layer.narrow else f", (int32_t *)({scratch} + {layer.acc_bytes})"
    return Call(f"{kernel}({layer.params}, {_c_in(ctx, x, 'int8_t')}, {ctx.tensor(out)}, (int32_t *){scratch}"
                f"{kernel_scratch});", SOURCES, scratch_bytes=layer.acc_bytes + layer.kernel_bytes,
                overlaps=layer.overlaps,
                notes=layer.notes + ["full requantization (the short one is not exact for every input)"])


def _window_reach(win: Window, in_h: int, in_w: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output pixel in raster order, the first and the last input pixel (raster index) its window
    reads: the top-left and bottom-right taps, clipped into the input. Clipping can only widen the range
    a window seems to read, so distances computed from it stay safe."""
    oy, ox = np.arange(win.out_h), np.arange(win.out_w)
    top = np.clip(oy * win.stride_h - win.pad_top, 0, in_h - 1)
    bottom = np.clip(oy * win.stride_h - win.pad_top + (win.kh - 1) * win.dilation_h, 0, in_h - 1)
    left = np.clip(ox * win.stride_w - win.pad_left, 0, in_w - 1)
    right = np.clip(ox * win.stride_w - win.pad_left + (win.kw - 1) * win.dilation_w, 0, in_w - 1)
    return ((top[:, None] * in_w + left[None, :]).ravel().astype(np.int64),
            (bottom[:, None] * in_w + right[None, :]).ravel().astype(np.int64))


def window_leaves_input(win: Window, in_h: int, in_w: int) -> bool:
    """True when some window reaches past the input on any side: padding is read somewhere."""
    reach_h = (win.out_h - 1) * win.stride_h - win.pad_top + (win.kh - 1) * win.dilation_h
    reach_w = (win.out_w - 1) * win.stride_w - win.pad_left + (win.kw - 1) * win.dilation_w
    return win.pad_top > 0 or win.pad_left > 0 or reach_h >= in_h or reach_w >= in_w


def gathered_safe_distance(win: Window, in_h: int, in_w: int, in_c: int, out_c: int,
                            in_place: bool = False, block: int = 2) -> int:
    """mf_conv_s8 takes the patches of two output pixels (raster order) into scratch, then writes those
    two pixels (mf_conv_s8_dsp four: every block end of four is one of two, so this distance holds). After
    writing pixels < e they still read input pixels from the first one a later window reads, so the
    outputs may land on input pixels below that. `in_place`: mf_conv_s8 with one-row kernels reads a patch
    that is one run of the input where it lies while it writes the block's outputs: then the block's own
    windows count too. `block`: pixels read before they are written (1 for the int16 kernels); in_c and
    out_c are the bytes of an input and an output pixel."""
    first, _ = _window_reach(win, in_h, in_w)
    pixels = len(first)
    later_first = np.minimum.accumulate(first[::-1])[::-1]  # [q]: the lowest input pixel read from q on
    starts = np.arange(0, pixels, block)
    ends = np.minimum(starts + block, pixels)
    if in_place:
        need = ends * out_c - later_first[starts] * in_c
    else:
        ends = ends[ends < pixels]  # after the last block nothing more is read
        need = ends * out_c - later_first[ends] * in_c
    return int(max(0, need.max(initial=0)))


def depthwise_safe_distance(win: Window, in_h: int, in_w: int, channels: int) -> SafeDistance:
    """The 3x3 depthwise kernels write each pixel's channels (in increasing order, one or four at a time)
    right after reading them from all its taps. Forward (raster order), the write of channel c of pixel i
    may land on channel c of the first pixel its window reads, or lower, if no later window reads there.
    Backward (last pixel first, channels still increasing), a whole pixel must land beyond every pixel
    read so far and by the windows still to come: beyond the last pixel of any window up to its own."""
    first, last = _window_reach(win, in_h, in_w)
    pixel = np.arange(len(first))
    later_first = np.minimum.accumulate(first[::-1])[::-1]
    below = max(int(((pixel - first) * channels).max()),
                int(((pixel[:-1] + 1 - later_first[1:]) * channels).max(initial=0)))
    above = int(((np.maximum.accumulate(last) + 1 - pixel) * channels).max())
    return SafeDistance(below=max(0, below), above=max(0, above))


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
            weights=weights, **conv_geometry(x, out, win), groups=groups, depth_multiplier=1,
            **_float_fields(op, ctx, out_c)))
        return Call(f"mf_conv_f32({params}, {_c_in(ctx, x, 'float')}, {ctx.tensor(out)});", SOURCES)
    w_data = constant_data(op, w, "weights")
    _check_depth(op, kh * kw * group_in)
    pointwise = kh == 1 and kw == 1 and win.stride_h == 1 and win.stride_w == 1 and groups == 1
    shared = ctx.shared_weights(w)
    if shared is not None:
        if not pointwise and (tuple(shared.shape[1:]) != tuple(w.shape[1:]) or groups != 1):
            raise UnsupportedError(f"{op.where}: weights '{w.name}' {list(w.shape)} take fewer input channels than "
                                   f"the shared {list(shared.shape)}: only 1x1 convolutions can share those")
        rq = _requant(op, x, w, out, w_data, out_c, axis=0, dsp=ctx.target in DSP_TARGETS and batches == 1)
        if rq.dq is not None and (batches * h * width > 1 or not pointwise):
            return _split_conv(ctx, x, out, shared, win, pointwise, w_data, rq)
    else:
        rq = _requant(op, x, w, out, w_data, out_c, axis=0, dsp=ctx.target in DSP_TARGETS)
    if shared is None and pointwise and rq.dq is not None:
        return _dsp_fc(ctx, name, w_data.reshape(out_c, c), batches * h * width, rq,
                       _c_in(ctx, x, "int8_t"), ctx.tensor(out),
                       ["1x1 convolution as a matrix product, SMLAD on widened rows"])
    if shared is None and rq.dq is not None and groups == 1:
        patch_weights, run = dsp_patch_weights(w_data, kh, kw, c)
        depth = patch_weights.shape[1]
        weights = ctx.constant(f"{name}_wdsp", dsp_stream(patch_weights, rq.dq), "int32_t")
        params = ctx.struct("mf_conv_params", f"{name}_conv", dict(
            weights=weights, **conv_geometry(x, out, win), groups=1, depth_multiplier=1,
            input_zero_point=x.zero_point, q=rq.c(ctx, in_stream=True)))
        # the block's patches are widened before any of its outputs is written, as in mf_conv_s8
        overlaps = {0: gathered_safe_distance(win, h, width, c, out_c)} if batches == 1 else {}
        return Call(f"mf_conv_s8_dsp({params}, {_c_in(ctx, x, 'int8_t')}, {ctx.tensor(out)}, "
                    f"(int32_t *){ctx.scratch()});", SOURCES,
                    scratch_bytes=dsp_conv_scratch(depth, run), overlaps=overlaps,
                    notes=["convolution on widened patches, SMLAD"])
    q = rq.c(ctx)
    if shared is None and ctx.target in DSP_TARGETS and groups == 1 and batches == 1:
        if pointwise:
            layer = accumulator_matrix(ctx, name, w_data.reshape(out_c, c), h * width, q)
            return _exact_call("mf_fc_s8_exact_dsp", layer, ctx, x, out)
        layer = accumulator_conv(ctx, name, x, out, win, w_data, q, x.zero_point)
        return _exact_call("mf_conv_s8_exact_dsp", layer, ctx, x, out)
    # [out][kh][kw][in/groups]: TFLite's layout is the kernel's; a shared member reads the widest member's
    weights = ctx.tensor(w if shared is None else shared)
    if pointwise:  # a shared member's rows are the first columns of the widest member's
        pitch = {} if shared is None else {"weight_pitch": shared.shape[-1]}
        params = ctx.struct("mf_fc_params", f"{name}_pw", dict(
            weights=weights, rows=batches * h * width, in_features=c, out_features=out_c, **pitch, q=q))
        return Call(f"mf_fc_s8({params}, {_c_in(ctx, x, 'int8_t')}, {ctx.tensor(out)});", SOURCES,
                    notes=["1x1 convolution as a matrix product"],
                    overlaps={0: _rows_safe_distance(batches * h * width, c, out_c)})
    params = ctx.struct("mf_conv_params", f"{name}_conv", dict(
        weights=weights, **conv_geometry(x, out, win), groups=groups, depth_multiplier=1, input_zero_point=x.zero_point,
        q=q))
    if _contiguous_patches(win, h, width, groups):
        scratch, scratch_bytes = "(int8_t *)0", 0
    else:
        scratch_bytes = 2 * kh * kw * group_in
        scratch = f"(int8_t *){ctx.scratch()}"
    # one-row kernels (kh == 1) read unpadded patches in place (mf_conv_patch); with groups, a later
    # group's patch would be read after an earlier group's outputs were written
    overlaps = {0: gathered_safe_distance(win, h, width, c, out_c, in_place=kh == 1)} \
        if groups == 1 and batches == 1 else {}
    return Call(f"mf_conv_s8({params}, {_c_in(ctx, x, 'int8_t')}, {ctx.tensor(out)}, {scratch});", SOURCES,
                scratch_bytes=scratch_bytes, overlaps=overlaps)


def _split_conv(ctx: EmitContext, x: Tensor, out: Tensor, shared: Tensor, win: Window, pointwise: bool,
                w_data: np.ndarray, rq: _Requant) -> Call:
    """A CONV_2D of a weight-shared family's member on Cortex-M4/M7 (rq.dq: the short requantization is
    exact): the split streams of mf_fc_s8_split_dsp / mf_conv_s8_split_dsp, the widest member's weight
    words apart from this member's constants (1x1: the wider rows' words skipped; otherwise this member's
    channels are a prefix)."""
    batches, h, width, c = x.shape
    out_c = out.shape[3]
    x_ptr, y_ptr = _c_in(ctx, x, "int8_t"), ctx.tensor(out)
    full = shared.data.reshape(shared.shape[0], -1)
    split = ctx.constant(f"{out.name}_split", rq.dq.astype(np.int32), "int32_t")
    if pointwise:
        rows = batches * h * width
        params = ctx.struct("mf_fc_params", f"{out.name}_mm", dict(
            weights=ctx.constant_once(shared, f"{shared.name}_words", lambda: dsp_words(full)), rows=rows,
            in_features=c, out_features=out_c, weight_pitch=full.shape[1], split=split,
            q=rq.c(ctx, in_stream=True)))
        _, scratch_bytes = dsp_fc_scratch(rows, c, out_c)
        return Call(f"mf_fc_s8_split_dsp({params}, {x_ptr}, {y_ptr}, (int32_t *){ctx.scratch()});", SOURCES,
                    scratch_bytes=scratch_bytes, notes=["1x1 convolution on shared weights, SMLAD on widened rows"],
                    overlaps={0: widened_rows_safe_distance(rows, c, out_c, False)})
    patch_weights, run = dsp_patch_weights(w_data, win.kh, win.kw, c)
    params = ctx.struct("mf_conv_params", f"{out.name}_conv", dict(
        weights=ctx.constant_once(shared, f"{shared.name}_words", lambda: dsp_words(
            dsp_patch_weights(full, win.kh, win.kw, c)[0])),
        **conv_geometry(x, out, win), groups=1, depth_multiplier=1, input_zero_point=x.zero_point, split=split,
        q=rq.c(ctx, in_stream=True)))
    return Call(f"mf_conv_s8_split_dsp({params}, {x_ptr}, {y_ptr}, (int32_t *){ctx.scratch()});", SOURCES,
                scratch_bytes=dsp_conv_scratch(patch_weights.shape[1], run),
                overlaps={0: gathered_safe_distance(win, h, width, c, out_c)},
                notes=["convolution on shared weights, SMLAD on widened patches"])


def _shared_depthwise_words(ctx: EmitContext, shared: Tensor, dq: np.ndarray, taps: int) -> str | None:
    """mf_dwconv_3x3_s8_dsp's words of the widest member's weights scaled by 2^L, one array for every
    member whose channels all have that L (they do whenever no requantization shift is positive: L = 1);
    None when this member's channels differ in L or the scaled words leave int16."""
    left = sorted(set(dq.reshape(-1, 6)[:, 2].tolist()))
    full = np.ascontiguousarray(shared.data.reshape(taps, shared.shape[3]).T)
    words = dsp_depthwise_words(full, left[0]) if len(left) == 1 else None
    if words is None:
        return None
    return ctx.constant_once(shared, f"{shared.name}_wdsp_L{left[0]}", lambda: words)


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
    geometry = conv_geometry(x, out, win)
    if kind == "float32":
        w_float = _float_weights(op, w, 3).reshape(kh * kw, out_c).T  # -> [out_c][kh * kw]
        weights = ctx.constant(f"{name}_w", np.ascontiguousarray(w_float).astype(np.float32), "float")
        # a depthwise convolution is a grouped one with a group per input channel: [out_c][kh * kw] is
        # exactly mf_conv_f32's weight layout then, and it sums the taps in the same order
        params = ctx.struct("mf_conv_params", f"{name}_dw", dict(
            weights=weights, **geometry, groups=c, depth_multiplier=mult, **_float_fields(op, ctx, out_c)))
        return Call(f"mf_conv_f32({params}, {_c_in(ctx, x, 'float')}, {ctx.tensor(out)});", SOURCES)
    w_data = constant_data(op, w, "weights").reshape(kh * kw, out_c).T  # -> [out_c][kh * kw]
    _check_depth(op, kh * kw)
    fast = kh == 3 and kw == 3 and mult == 1
    shared = ctx.shared_weights(w)
    rq = _requant(op, x, w, out, w_data, out_c, axis=3, dsp=ctx.target in DSP_TARGETS and fast and c % 4 == 0)
    dsp = _dsp_depthwise(w_data, rq.dq) if rq.dq is not None else None
    fields = {}
    if dsp is not None:
        weights = _shared_depthwise_words(ctx, shared, rq.dq, kh * kw) if shared is not None else None
        weights = weights or ctx.constant(f"{name}_wdsp", dsp[0], "int32_t")
        q = rq.c(ctx, dsp[1])
        kernel = "mf_dwconv_3x3_s8_dsp"
        if window_leaves_input(win, h, width):  # the taps outside read the zero point from flash
            fields["zero_row"] = ctx.constant(f"{name}_zero_row", np.full(c, x.zero_point, np.int8), "int8_t")
    elif shared is not None:
        # [channels][kh * kw] of the widest member: every narrower member's channels are a prefix of it
        weights = ctx.constant_once(shared, f"{shared.name}_w", lambda: np.ascontiguousarray(
            shared.data.reshape(kh * kw, shared.shape[3]).T).astype(np.int8))
        q = rq.c(ctx)
        kernel = "mf_dwconv_3x3_s8" if fast else "mf_dwconv_s8"
    elif ctx.target in DSP_TARGETS and fast and c % 4 == 0 and batches == 1:
        layer = accumulator_depthwise(ctx, name, x, out, win, np.ascontiguousarray(w_data), rq.c(ctx), x.zero_point,
                                      "either")
        return _exact_call("mf_dwconv_3x3_s8_exact_dsp", layer, ctx, x, out)
    else:
        weights = ctx.constant(f"{name}_w", np.ascontiguousarray(w_data).astype(np.int8), "int8_t")
        q = rq.c(ctx)
        kernel = "mf_dwconv_3x3_s8" if fast else "mf_dwconv_s8"
    params = ctx.struct("mf_conv_params", f"{name}_dw", dict(
        weights=weights, **geometry, groups=1, depth_multiplier=mult, input_zero_point=x.zero_point, q=q,
        backward=int(fast and ctx.runs_backward(x, out)), **fields))
    overlaps = {0: depthwise_safe_distance(win, h, width, c)} if fast and batches == 1 else {}
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
    shared = ctx.shared_weights(w)  # a shared member reads the widest member's rows with their pitch
    # a single row of fewer than 8 inputs (TFLM's hello_world: 1 -> 16) takes the portable loop: the DSP
    # kernel would widen it into 16 bytes of scratch for a handful of MACs
    dsp = ctx.target in DSP_TARGETS and shared is None and not (rows == 1 and in_features < 8)
    rq = _requant(op, x, w, out, w_data, out_features, axis=0, dsp=dsp)
    if rq.dq is not None:
        return _dsp_fc(ctx, name, w_data.reshape(out_features, in_features), rows, rq,
                       _c_in(ctx, x, "int8_t"), ctx.tensor(out), [])
    q = rq.c(ctx)
    if dsp:
        layer = accumulator_matrix(ctx, name, w_data.reshape(out_features, in_features), rows, q)
        return _exact_call("mf_fc_s8_exact_dsp", layer, ctx, x, out)
    pitch = {} if shared is None else {"weight_pitch": shared.shape[-1]}
    params = ctx.struct("mf_fc_params", f"{name}_fc", dict(weights=ctx.tensor(w if shared is None else shared),
                                                           **shape, **pitch, q=q))
    return Call(f"mf_fc_s8({params}, {_c_in(ctx, x, 'int8_t')}, {ctx.tensor(out)});", SOURCES,
                overlaps={0: _rows_safe_distance(rows, in_features, out_features)})
