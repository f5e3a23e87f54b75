"""CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED, bit-exact with TFLite Micro's reference kernels.

Layouts are TFLite's: activations NHWC; conv weights [out, kh, kw, in / groups]; depthwise weights
[1, kh, kw, in * depth_multiplier]; fully-connected weights [out, in].

int8: the accumulator is a float64 matrix product of (x - input_zero_point) with the int8 weights. Every
partial sum is an integer far below 2**53, so float64 holds TFLM's int32 accumulator exactly while BLAS does
the work. It is then requantized with TFLite's fixed-point rules, so outputs are byte-identical to TFLM.
int16x8 (int16 activations with zero point 0, int8 weights): the same float64 sums (exact: products are
below 2^22), an int64 or int32 bias and TFLM's matching requantization (see _int16x8_arithmetic).
float32: computed in float64 and rounded to float32 once; TFLM sums in float32 in its own order, so the two
agree to a few ulps, not bit for bit.

The window helpers here (geometry, taps, checks) are shared with pool.py and pad.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from microforge.errors import ModelError, UnsupportedError
from microforge.graph.ir import Op, Tensor
from microforge.reference.checks import (
    fully_connected_geometry,
    batched_arg,
    check_output_shape,
    clamp_float,
    constant_data,
    io_tensors,
    optional_input,
    per_tensor_quant,
    positive_option,
    quantized_activation_range,
)
from microforge.reference.fixedpoint import (
    multiply_by_quantized_multiplier,
    multiply_by_quantized_multiplier_int64,
    quantize_multipliers,
    wrap_int32,
)
from microforge.reference.registry import kernel

# TFLite's GetQuantizedConvolutionMultipler rejects a bias scale further than this (relative to the output
# scale) from input_scale * weight_scale.
BIAS_SCALE_TOLERANCE = 0.02
PATCH_BYTES = 64 << 20  # im2col memory bound per chunk of samples


def exact_float(terms: int):
    """The float type whose sums of `terms` int8 products are exact: each product is at most 255 * 128
    in magnitude, so float32 (24-bit significand) is exact while terms * 32640 < 2^24; float64 beyond."""
    return np.float32 if terms * 255 * 128 < 1 << 24 else np.float64


@dataclass(frozen=True)
class Window:
    """A 2-D sliding window: kernel size, strides, dilations, output size and leading padding."""

    kh: int
    kw: int
    stride_h: int
    stride_w: int
    dilation_h: int
    dilation_w: int
    out_h: int
    out_w: int
    pad_top: int
    pad_left: int


def _out_size_and_pad(op: Op, padding: str, size: int, kernel_size: int, stride: int, dilation: int,
                      axis: str) -> tuple[int, int]:
    # TFLite's ComputeOutSize and ComputePaddingWithOffset: the odd padding element goes after.
    effective = (kernel_size - 1) * dilation + 1
    out = (size + stride - 1) // stride if padding == "SAME" else (size + stride - effective) // stride
    if out <= 0:
        raise ModelError(f"{op.where}: window of {effective} does not fit the input {axis} {size} "
                         f"with {padding} padding")
    total = max(0, (out - 1) * stride + effective - size)
    return out, total // 2


def window(op: Op, in_h: int, in_w: int, kh: int, kw: int, dilated: bool) -> Window:
    """The window of a conv (dilated=True) or pool op from its options, as TFLite computes it."""
    padding = op.options.get("padding")
    if padding not in ("SAME", "VALID"):
        raise ModelError(f"{op.where}: padding {padding!r} must be 'SAME' or 'VALID'")
    if kh <= 0 or kw <= 0:
        raise ModelError(f"{op.where}: window {kh}x{kw} must be at least 1x1")
    sh, sw = positive_option(op, "stride_h"), positive_option(op, "stride_w")
    dh = positive_option(op, "dilation_h_factor") if dilated else 1
    dw = positive_option(op, "dilation_w_factor") if dilated else 1
    out_h, pad_top = _out_size_and_pad(op, padding, in_h, kh, sh, dh, "height")
    out_w, pad_left = _out_size_and_pad(op, padding, in_w, kw, sw, dw, "width")
    return Window(kh, kw, sh, sw, dh, dw, out_h, out_w, pad_top, pad_left)


def window_taps(x: np.ndarray, win: Window, pad_value) -> Iterator[tuple[int, int, np.ndarray]]:
    """For each kernel tap (i, j): the (M, out_h, out_w, C) view of x (M, H, W, C) it reads.

    Positions outside the input read `pad_value`; TFLM skips them instead, so callers pick a value that
    changes nothing (0 for sums of zero-point-shifted values, the lowest value for max).
    """
    _, h, w, _ = x.shape
    need_h = (win.out_h - 1) * win.stride_h + (win.kh - 1) * win.dilation_h + 1
    need_w = (win.out_w - 1) * win.stride_w + (win.kw - 1) * win.dilation_w + 1
    bottom = max(0, need_h - win.pad_top - h)
    right = max(0, need_w - win.pad_left - w)
    xp = np.pad(x, ((0, 0), (win.pad_top, bottom), (win.pad_left, right), (0, 0)), constant_values=pad_value)
    span_h = (win.out_h - 1) * win.stride_h + 1
    span_w = (win.out_w - 1) * win.stride_w + 1
    for i in range(win.kh):
        for j in range(win.kw):
            r, c = i * win.dilation_h, j * win.dilation_w
            yield i, j, xp[:, r:r + span_h:win.stride_h, c:c + span_w:win.stride_w, :]


# ---------------------------------------------------------------------------------------------------------
# Quantization parameters of the weight ops


def _weight_scales(op: Op, weights: Tensor, channels: int, axis: int) -> np.ndarray:
    """The per-output-channel scales of symmetric int8 weights (a per-tensor scale is broadcast)."""
    q = weights.quant
    if q is None:
        raise ModelError(f"{op.where}: int8 weights '{weights.name}' have no quantization parameters")
    if q.scale.size not in (1, channels) or q.zero_point.size != q.scale.size:
        raise ModelError(f"{op.where}: weights '{weights.name}' have {q.scale.size} scales and "
                         f"{q.zero_point.size} zero points for {channels} output channels")
    if q.scale.size > 1 and q.axis != axis:
        raise ModelError(f"{op.where}: weights '{weights.name}' are quantized along axis {q.axis}, "
                         f"expected {axis}")
    if np.any(q.zero_point != 0):
        raise ModelError(f"{op.where}: int8 weights '{weights.name}' must be symmetric (zero point 0)")
    if not np.all(np.isfinite(q.scale) & (q.scale > 0)):
        raise ModelError(f"{op.where}: weights '{weights.name}' have a non-positive scale")
    return np.broadcast_to(q.scale, (channels,))


def _multipliers(op: Op, real_multipliers: list[float]) -> tuple[np.ndarray, np.ndarray]:
    try:
        return quantize_multipliers(real_multipliers)
    except ModelError as err:
        raise ModelError(f"{op.where}: {err}") from None


def _int32_bias(op: Op, channels: int, input_scale: float, weight_scales: np.ndarray,
                output_scale: float) -> np.ndarray | None:
    """The int32 bias of an int8 op (None when absent), as int64 values."""
    bias = _quantized_bias(op, channels, input_scale, weight_scales, output_scale, (np.int32,))
    return None if bias is None else bias[0]


def _quantized_bias(op: Op, channels: int, input_scale: float, weight_scales: np.ndarray, output_scale: float,
                    dtypes: tuple) -> tuple[np.ndarray, np.dtype] | None:
    """(bias values as int64, the bias dtype) of a quantized op whose bias may have one of `dtypes`."""
    bias = optional_input(op, 2)
    if bias is None:
        return None
    data = constant_data(op, bias, "bias")
    if bias.dtype not in dtypes:
        kind = "an int8" if op.inputs[0].dtype == np.int8 else f"a {op.inputs[0].dtype} {op.type}"
        raise UnsupportedError(f"{op.where}: bias '{bias.name}' of {kind} op must be "
                               f"{' or '.join(np.dtype(d).name for d in dtypes)}, not {bias.dtype}")
    if data.size != channels:
        raise ModelError(f"{op.where}: bias '{bias.name}' has {data.size} values for {channels} channels")
    if bias.quant is not None:
        # The kernel adds the bias to input_scale * weight_scale units; TFLite checks the scales agree.
        if bias.quant.scale.size not in (1, channels):
            raise ModelError(f"{op.where}: bias '{bias.name}' has {bias.quant.scale.size} scales "
                             f"for {channels} channels")
        product = input_scale * weight_scales.astype(np.float64)
        diff = np.abs(product - bias.quant.scale.astype(np.float64)) / output_scale
        if np.any(diff > BIAS_SCALE_TOLERANCE):
            raise ModelError(f"{op.where}: bias '{bias.name}' scale is not input_scale * weight_scale")
    return data.reshape(channels).astype(np.int64), bias.dtype


def _float_bias(op: Op, channels: int) -> np.ndarray | None:
    bias = optional_input(op, 2)
    if bias is None:
        return None
    data = constant_data(op, bias, "bias")
    if bias.dtype != np.float32:
        raise UnsupportedError(f"{op.where}: bias '{bias.name}' of a float32 op must be float32, "
                               f"not {bias.dtype}")
    if data.size != channels:
        raise ModelError(f"{op.where}: bias '{bias.name}' has {data.size} values for {channels} channels")
    return data.reshape(channels).astype(np.float64)


def _float_weights(op: Op, weights: Tensor, axis: int) -> np.ndarray:
    """float32 weights, or hybrid int8 weights dequantized to float32 (scale * (q - zero_point))."""
    data = constant_data(op, weights, "weights")
    if weights.dtype == np.float32:
        return data.astype(np.float64)
    q = weights.quant
    if weights.dtype != np.int8 or q is None:
        raise UnsupportedError(f"{op.where}: weights '{weights.name}' of a float32 op must be float32 or "
                               f"quantized int8, not {weights.dtype}")
    channels = weights.shape[axis]
    if q.zero_point.size != q.scale.size or (q.scale.size > 1 and (q.scale.size != channels or q.axis != axis)):
        raise ModelError(f"{op.where}: weights '{weights.name}' have {q.scale.size} scales along axis "
                         f"{q.axis}; expected one or {weights.shape[axis]} along axis {axis}")
    shape = [1] * data.ndim
    shape[axis] = q.scale.size
    scale = q.scale.astype(np.float64).reshape(shape)
    zero_point = q.zero_point.reshape(shape)
    return (scale * (data.astype(np.int64) - zero_point)).astype(np.float32).astype(np.float64)


def _kind(op: Op, x: Tensor, weights: Tensor, out: Tensor) -> str:
    """'int8', 'int16x8' or 'float32': the arithmetic the op uses; UnsupportedError for other type
    combinations (TFLM has no int16 kernel with int8 or float output, nor int16 weights)."""
    if x.dtype == np.int8 and weights.dtype == np.int8 and out.dtype == np.int8:
        return "int8"
    if x.dtype == np.int16 and weights.dtype == np.int8 and out.dtype == np.int16:
        return "int16x8"
    if x.dtype == np.float32 and weights.dtype in (np.float32, np.int8) and out.dtype == np.float32:
        return "float32"
    raise UnsupportedError(f"{op.where}: {x.dtype} input '{x.name}' with {weights.dtype} weights and "
                           f"{out.dtype} output is not supported (int8, int16 with int8 weights, or float32)")


def _arithmetic(op: Op, x: Tensor, weights: Tensor, out: Tensor, channels: int, axis: int):
    """What the op computes with: (weights as float64, input zero point, finish: accumulator -> output).

    int8: the accumulator is the exact sum of (x - input_zero_point) * weights; `finish` adds the int32 bias
    and requantizes per channel as TFLM does. float32: `finish` adds the bias and clamps.
    """
    kind = _kind(op, x, weights, out)
    if kind == "float32":
        w = _float_weights(op, weights, axis)
        bias = _float_bias(op, channels)
        return w, 0, lambda acc: clamp_float(op, acc if bias is None else acc + bias)
    if kind == "int16x8":
        return _int16x8_arithmetic(op, x, weights, out, channels, axis)
    in_scale, in_zp = per_tensor_quant(op, x, "input")
    out_scale, out_zp = per_tensor_quant(op, out, "output")
    w_scales = _weight_scales(op, weights, channels, axis)
    bias = _int32_bias(op, channels, in_scale, w_scales, out_scale)
    # PopulateConvolutionQuantizationParams: (double)input_scale * (double)weight_scale / (double)output_scale.
    multiplier, shift = _multipliers(op, [in_scale * float(s) / out_scale for s in w_scales])
    lo, hi = quantized_activation_range(op, out_scale, out_zp)

    def requantize(acc: np.ndarray) -> np.ndarray:
        acc = acc.astype(np.int64)
        if bias is not None:
            acc += bias
        # An accumulator beyond int32 wraps inside multiply_by_quantized_multiplier, as TFLM's int32 would.
        y = multiply_by_quantized_multiplier(acc, multiplier, shift) + out_zp
        return np.clip(y, lo, hi).astype(np.int8)

    return constant_data(op, weights, "weights"), in_zp, requantize


def int16x8_constants(op: Op, x: Tensor, weights: Tensor, out: Tensor, channels: int, axis: int):
    """An int16x8 op's (bias as (values, dtype) or None, multipliers, shifts, (clamp lo, hi)), checked as
    TFLM checks them; shared with the C backend's lowering."""
    in_scale, _ = per_tensor_quant(op, x, "input")
    out_scale, _ = per_tensor_quant(op, out, "output")
    w_scales = _weight_scales(op, weights, channels, axis)
    dtypes = (np.int64,) if op.type == "DEPTHWISE_CONV_2D" else (np.int64, np.int32)
    bias = _quantized_bias(op, channels, in_scale, w_scales, out_scale, dtypes)
    # PopulateConvolutionQuantizationParams: (double)input_scale * (double)weight_scale / (double)output_scale
    # (per-tensor FULLY_CONNECTED too: the tests show the TFLM package computes it so).
    multiplier, shift = _multipliers(op, [in_scale * float(s) / out_scale for s in w_scales])
    if not (bias is not None and bias[1] == np.int32) and np.any(shift > 7):
        raise UnsupportedError(f"{op.where}: a requantization multiplier input_scale * weight_scale / "
                               "output_scale of 128 or more is beyond TFLM's int16 kernels")
    return bias, multiplier, shift, quantized_activation_range(op, out_scale, 0, np.int16)


def _int16x8_arithmetic(op: Op, x: Tensor, weights: Tensor, out: Tensor, channels: int, axis: int):
    """int16 activations, int8 weights: (weights, input zero point 0, finish), bit-exact with TFLM.

    Zero points must be 0 (TFLM's int16 convolutions ignore them). The bias is int64 (DEPTHWISE_CONV_2D
    reads nothing else) or, for CONV_2D and FULLY_CONNECTED, int32. With an int64 bias or none, TFLM
    sums in int64 and requantizes with the int64 MultiplyByQuantizedMultiplier (Q15 multiplier, one
    rounding shift); with an int32 bias it sums in int32 (wrapping) and uses the int32 rule of int8 ops.
    Without a bias TFLM picks by the options' quantized_bias_type, which microforge does not read: its
    default (and what the writer emits) selects the int64 path.
    """
    bias, multiplier, shift, (lo, hi) = int16x8_constants(op, x, weights, out, channels, axis)
    int32_accumulator = bias is not None and bias[1] == np.int32

    def requantize(acc: np.ndarray) -> np.ndarray:
        acc = acc.astype(np.int64)
        if bias is not None:
            acc += bias[0]
        if int32_accumulator:
            y = multiply_by_quantized_multiplier(wrap_int32(acc), multiplier, shift)
        else:
            y = multiply_by_quantized_multiplier_int64(acc, multiplier, shift)
        return np.clip(y, lo, hi).astype(np.int16)

    return constant_data(op, weights, "weights"), 0, requantize


def _accumulator_dtype(x: Tensor, terms: int):
    """The float type that holds the op's sums exactly: int16 products need float64 beyond a few terms."""
    if x.dtype == np.int8:
        return exact_float(terms)
    return np.float64


# ---------------------------------------------------------------------------------------------------------
# Kernels


def _conv_sum(x: np.ndarray, w: np.ndarray, win: Window, groups: int) -> np.ndarray:
    """sum over taps and input channels of x (M, H, W, C) * w (O, kh, kw, C / groups), in float64.

    im2col: one matrix product per group of (positions, kh * kw * C / groups) patches with the weights.
    Samples go through in chunks so the patch matrix stays within PATCH_BYTES.
    """
    m, _, _, c = x.shape
    per_sample = win.out_h * win.out_w * win.kh * win.kw * c * 8
    step = max(1, PATCH_BYTES // max(1, per_sample))
    if m > step:
        return np.concatenate([_conv_sum(x[s:s + step], w, win, groups) for s in range(0, m, step)])
    out_channels, _, _, group_in = w.shape
    group_out = out_channels // groups
    # (M, out_h, out_w, taps, C) with taps in (kh, kw) order, matching the weights' layout.
    taps = [tap for _, _, tap in window_taps(x, win, 0.0)]
    patches = taps[0][:, :, :, np.newaxis] if len(taps) == 1 else np.stack(taps, axis=3)
    patches = patches.reshape(-1, win.kh * win.kw, groups, group_in)
    acc = np.empty((patches.shape[0], out_channels))
    for g in range(groups):
        cols = patches[:, :, g, :].reshape(patches.shape[0], -1)
        w_group = w[g * group_out:(g + 1) * group_out].reshape(group_out, -1)
        acc[:, g * group_out:(g + 1) * group_out] = cols @ w_group.T
    return acc.reshape(m, win.out_h, win.out_w, out_channels)


@kernel("CONV_2D", dtypes=("int8", "int16", "float32"))
def conv_2d(op: Op, args: list) -> np.ndarray:
    """2-D convolution. Input NHWC, weights [out, kh, kw, in / groups], optional bias [out], output NHWC.

    int8 (byte-identical to TFLM): per-tensor or per-channel symmetric weights, int32 bias, per-channel
    requantization with multipliers computed in double. int16x8 likewise with an int64 or int32 bias.
    Grouped convolution when in is a multiple of the weights' input depth. float32 (few-ulp agreement):
    float32 weights, or hybrid int8 weights dequantized.
    """
    (x_t, w_t), out_t = io_tensors(op, 2)
    x = batched_arg(op, args, 0)
    if x.ndim != 5 or len(w_t.shape) != 4:
        raise ModelError(f"{op.where}: input '{x_t.name}' and weights '{w_t.name}' must be 4-D")
    n, batch, h, width, c = x.shape
    out_channels, kh, kw, group_in = w_t.shape
    if group_in == 0 or c % group_in or out_channels % (c // group_in):
        raise ModelError(f"{op.where}: input '{x_t.name}' has {c} channels, weights '{w_t.name}' take "
                         f"{group_in} per group for {out_channels} outputs")
    win = window(op, h, width, kh, kw, dilated=True)
    check_output_shape(op, (batch, win.out_h, win.out_w, out_channels))
    w, x_zero_point, finish = _arithmetic(op, x_t, w_t, out_t, out_channels, axis=0)
    dtype = _accumulator_dtype(x_t, kh * kw * group_in)
    acc = _conv_sum(x.reshape(n * batch, h, width, c).astype(dtype) - dtype(x_zero_point), w.astype(dtype), win,
                    c // group_in)
    return finish(acc).reshape((n,) + out_t.shape)


@kernel("DEPTHWISE_CONV_2D", dtypes=("int8", "int16", "float32"))
def depthwise_conv_2d(op: Op, args: list) -> np.ndarray:
    """Depthwise convolution. Input NHWC, weights [1, kh, kw, in * depth_multiplier], output NHWC.

    Output channel c * depth_multiplier + m reads input channel c. int8 exact like CONV_2D (weights
    quantized along axis 3), int16x8 with an int64 bias only; float32 and hybrid weights as CONV_2D.
    """
    (x_t, w_t), out_t = io_tensors(op, 2)
    x = batched_arg(op, args, 0)
    if x.ndim != 5 or len(w_t.shape) != 4 or w_t.shape[0] != 1:
        raise ModelError(f"{op.where}: input '{x_t.name}' must be 4-D and weights '{w_t.name}' "
                         f"[1, kh, kw, channels], got {list(w_t.shape)}")
    n, batch, h, width, c = x.shape
    _, kh, kw, out_channels = w_t.shape
    depth_multiplier = positive_option(op, "depth_multiplier")
    if c * depth_multiplier != out_channels:
        raise ModelError(f"{op.where}: input '{x_t.name}' has {c} channels and depth_multiplier "
                         f"{depth_multiplier}, but weights '{w_t.name}' have {out_channels} channels")
    win = window(op, h, width, kh, kw, dilated=True)
    check_output_shape(op, (batch, win.out_h, win.out_w, out_channels))
    w, x_zero_point, finish = _arithmetic(op, x_t, w_t, out_t, out_channels, axis=3)
    dtype = _accumulator_dtype(x_t, kh * kw)
    x = x.reshape(n * batch, h, width, c).astype(dtype) - dtype(x_zero_point)
    w = w.astype(dtype)
    acc = np.zeros((n * batch, win.out_h, win.out_w, out_channels), dtype=dtype)
    product = np.empty_like(acc)
    for i, j, tap in window_taps(x, win, 0.0):
        if depth_multiplier > 1:  # repeating each input channel lines it up with its output channels
            tap = np.repeat(tap, depth_multiplier, axis=-1)
        acc += np.multiply(tap, w[0, i, j], out=product)
    return finish(acc).reshape((n,) + out_t.shape)


@kernel("FULLY_CONNECTED", dtypes=("int8", "int16", "float32"))
def fully_connected(op: Op, args: list) -> np.ndarray:
    """Fully connected layer. Weights [out, in]; the input, of any rank, is read as rows [-1, in].

    Output [rows, out], or with keep_num_dims the input's shape with its last dimension replaced by out.
    int8 exact, per-tensor or per-channel symmetric weights, int32 bias; the multiplier is computed in double
    (TFLM's per-tensor path gives the same as its per-channel one). int16x8 with an int64 or int32 bias.
    float32 and hybrid weights as CONV_2D.
    """
    (x_t, w_t), out_t = io_tensors(op, 2)
    x = batched_arg(op, args, 0)
    rows, in_features, out_features = fully_connected_geometry(op, x_t, w_t)
    w, x_zero_point, finish = _arithmetic(op, x_t, w_t, out_t, out_features, axis=0)
    n = x.shape[0]
    dtype = _accumulator_dtype(x_t, in_features)
    acc = (x.reshape(n * rows, in_features).astype(dtype) - dtype(x_zero_point)) @ w.astype(dtype).T
    return finish(acc).reshape((n,) + out_t.shape)
