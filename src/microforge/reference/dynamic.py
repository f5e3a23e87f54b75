"""Dynamic fixed point: int8 tensors whose power-of-two scale is chosen at run time, per inference.

A dynamic tensor holds int8 values q and one integer exponent e per inference: real = q * 2^-e. Weights are
int8 with one static power-of-two scale per layer, 2^-ew; biases int32 with a static exponent eb. The rules
(the C kernels follow them to the bit):

QUANTIZE (float32 in): m = max|x| over the tensor's finite values; with m = f * 2^k (0.5 <= f < 1),
    e = 7 - k, less one if f * 128 >= 127.5 (so the largest value rounds to at most 127); e = 0 when m = 0.
    q = round(x * 2^e), halves away from zero (the product is exact in float32), clamped to int8; NaN
    reads as 0, infinities clamp. e is clamped to [-24, 40].
CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED: the accumulator has exponent ea = e_in + ew:
    A = sum(q_in * q_w) + bias aligned to ea (rounding shift right by eb - ea, or saturating shift left),
    in int32 with C's wrap-around. Fused RELU clamps A at 0; RELU6 also at round(6 * 2^ea).
ADD: both inputs move to ea = min(max(e1, e2), min(e1, e2) + 23) (shift left, or rounding shift right),
    A is their sum; activations as above.
From A to int8 (the same for every op with an accumulator): the output is cut into segments, each one
    pixel's channels or one row's features (the last axis), visited in memory order. Segment r needs shift
    s_r = max(0, bits(max|A_r|) - 7), bits(v) being the number of binary digits of v; the running shift is
    S_r = max(S_(r-1), s_r), and the segment is written as clamp(round(A_r / 2^S_r)) at once (halves away
    from zero). When the tensor is complete, S = S_last and every segment is shifted again by S - S_r
    (rounding), so all share one exponent e_out = ea - S. The C kernels need no accumulator buffer for
    this, only a block of segments of int32 and a list of where S grew.
    A DEPTHWISE_CONV_2D marked dynamic_reverse (frontend.schema.REVERSE_OPTION) visits its segments from
    the last to the first, the same rule in that order: its C then runs backward over the input, so that
    its output can be planned over the upper part of its input, as TFLM-style int8 kernels alternate.
AVERAGE_POOL_2D, MAX_POOL_2D, MEAN, PAD (with zeros), RESHAPE: TFLM's integer arithmetic on q; the
    exponent passes through.
SOFTMAX: TFLM's int8 softmax with input scale 2^-e, e clamped to the range where TFLM has a multiplier
    for beta * 2^-e (for beta = 1: -3 to 25); its output is static int8 (1/256, -128).
DEQUANTIZE: float32(q * 2^-e), exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from microforge.errors import ModelError, UnsupportedError
from microforge.frontend.schema import REVERSE_OPTION
from microforge.graph.ir import Op, Quantization, Tensor
from microforge.reference.checks import check_output_shape, fully_connected_geometry
from microforge.reference.conv import _conv_sum, exact_float, window, window_taps
from microforge.reference.fixedpoint import INT32_MAX, INT32_MIN, rounding_divide_by_pot, wrap_int32
from microforge.reference.registry import KERNELS, kernel

EXPONENT_MIN, EXPONENT_MAX = -24, 40
ADD_ALIGN_LIMIT = 23  # the most an ADD operand is shifted left: 2 * 128 * 2^23 keeps the sum inside int32
SOFTMAX_EXPONENTS = (-31, 25)


@dataclass
class DynamicValue:
    """A batch of one dynamic tensor: values (N, *shape) int8 and exponent (N,) int64: real = q * 2^-e."""

    values: np.ndarray
    exponent: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return self.values.shape

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index) -> "DynamicValue":
        return DynamicValue(self.values[index], self.exponent[index])

    def real(self) -> np.ndarray:
        e = self.exponent.reshape((-1,) + (1,) * (self.values.ndim - 1))
        return np.ldexp(self.values.astype(np.float64), -e)


def is_dynamic(op: Op) -> bool:
    return bool(op.options.get("dynamic_fixed_point"))


def check_runs_on_tflm(graph, what: str) -> None:
    """Refuse to make `what` for TFLite Micro from a model it cannot run (dynamic fixed point)."""
    dynamic = [op for op in graph.ops if is_dynamic(op)]
    if dynamic:
        raise UnsupportedError(f"cannot write {what}: the model uses microforge's dynamic fixed point "
                               f"({len(dynamic)} ops, first {dynamic[0].where}), which TFLite Micro cannot run")


def exponent_for(magnitude, bits: int = 8) -> np.ndarray:
    """The largest e with round(magnitude * 2^e) <= 2^(bits-1) - 1 (see QUANTIZE); 0 for magnitude 0."""
    m = np.asarray(magnitude, dtype=np.float64)
    fraction, k = np.frexp(m)
    top = float(1 << (bits - 1))
    e = (bits - 1) - k - (fraction * top >= top - 0.5)
    return np.where(m > 0, np.clip(e, EXPONENT_MIN, EXPONENT_MAX), 0).astype(np.int64)


def shift_to(values: np.ndarray, shift) -> np.ndarray:
    """values * 2^-shift in int32: a rounding shift right for shift > 0, a saturating shift left otherwise."""
    values = np.asarray(values, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    right = rounding_divide_by_pot(values, np.clip(shift, 0, 62))
    left = np.clip(values << np.clip(-shift, 0, 31), INT32_MIN, INT32_MAX)
    return np.where(shift > 0, right, left)


def _bits(magnitude: np.ndarray) -> np.ndarray:
    return np.frexp(magnitude.astype(np.float64))[1].astype(np.int64)  # exact below 2^53; 0 for 0


def to_int8(acc: np.ndarray, exponent: np.ndarray, reverse: bool = False) -> DynamicValue:
    """Accumulators (N, ..., C) with exponent (N,) -> int8 with one exponent per sample (the segment rule;
    `reverse`: the segments are visited from the last to the first)."""
    n = len(acc)
    segments = acc.reshape(n, -1, acc.shape[-1]).astype(np.int64)
    need = np.maximum(0, _bits(np.abs(segments).max(axis=2)) - 7)
    running = np.maximum.accumulate(need[:, ::-1], axis=1)[:, ::-1] if reverse else np.maximum.accumulate(need, axis=1)
    written = np.clip(rounding_divide_by_pot(segments, running[:, :, None]), -128, 127)
    final = running[:, 0] if reverse else running[:, -1]
    values = rounding_divide_by_pot(written, (final[:, None] - running)[:, :, None])
    return DynamicValue(values.reshape(acc.shape).astype(np.int8), exponent - final)


def _fused_clamp(op: Op, acc: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    activation = op.options.get("fused_activation_function", "NONE")
    if activation == "NONE":
        return acc
    if activation not in ("RELU", "RELU6"):
        raise UnsupportedError(f"{op.where}: fused {activation} is not supported in dynamic fixed point")
    acc = np.maximum(acc, 0)
    if activation == "RELU6":
        six = shift_to(np.full(len(acc), 6), -exponent).reshape((-1,) + (1,) * (acc.ndim - 1))
        acc = np.minimum(acc, six)
    return acc


def _dynamic_input(op: Op, args: list, position: int = 0) -> DynamicValue:
    value = args[position]
    if not isinstance(value, DynamicValue):
        raise UnsupportedError(f"{op.where}: input '{op.inputs[position].name}' is not a dynamic fixed-point "
                               "tensor (only the model's QUANTIZE may read real values)")
    return value


def power_of_two_exponent(op: Op, t: Tensor, what: str) -> int:
    """The static exponent of a weight or bias tensor: its one scale must be 2^-e."""
    if t.quant is None or t.quant.per_channel or np.any(t.quant.zero_point != 0):
        raise ModelError(f"{op.where}: {what} '{t.name}' needs one power-of-two scale and zero point 0")
    mantissa, k = np.frexp(t.quant.single_scale)
    if mantissa != 0.5:
        raise ModelError(f"{op.where}: {what} '{t.name}' has scale {t.quant.single_scale}, not a power of two")
    return int(1 - k)


def _accumulate(op: Op, x: DynamicValue, weights: Tensor) -> np.ndarray:
    """sum(q_in * q_w) as int64, shaped like the output batch."""
    n = len(x)
    out = op.outputs[0]
    w = weights.data
    if op.type == "FULLY_CONNECTED":
        rows, in_features, _ = fully_connected_geometry(op, op.inputs[0], weights)
        dtype = exact_float(in_features)
        acc = x.values.reshape(n * rows, in_features).astype(dtype) @ w.astype(dtype).T
    else:
        _, batch, h, width, c = x.values.shape
        kh, kw = w.shape[1:3]
        win = window(op, h, width, kh, kw, dilated=True)
        xs = x.values.reshape(n * batch, h, width, c)
        if op.type == "CONV_2D":
            dtype = exact_float(kh * kw * w.shape[3])
            acc = _conv_sum(xs.astype(dtype), w.astype(dtype), win, c // w.shape[3])
        else:
            multiplier = int(op.options.get("depth_multiplier", 1))
            acc = 0
            for i, j, tap in window_taps(xs.astype(np.int64), win, 0):
                acc = acc + (np.repeat(tap, multiplier, axis=-1) if multiplier > 1 else tap) * w[0, i, j]
        check_output_shape(op, (batch, win.out_h, win.out_w, w.shape[0] if op.type == "CONV_2D" else w.shape[3]))
    return np.asarray(acc).astype(np.int64).reshape((n,) + out.shape)


@kernel("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", dtypes=("int8",), dynamic=True)
def weighted(op: Op, args: list) -> DynamicValue:
    x = _dynamic_input(op, args)
    weights = op.inputs[1]
    exponent = x.exponent + power_of_two_exponent(op, weights, "weights")
    acc = _accumulate(op, x, weights)
    bias = op.inputs[2] if len(op.inputs) > 2 else None
    if bias is not None:
        aligned = shift_to(bias.data.astype(np.int64)[None, :], power_of_two_exponent(op, bias, "bias")
                           - exponent[:, None])
        acc = wrap_int32(acc + aligned.reshape((len(acc),) + (1,) * (acc.ndim - 2) + (-1,)))
    return to_int8(_fused_clamp(op, acc, exponent), exponent, visits_in_reverse(op))


def visits_in_reverse(op: Op) -> bool:
    """Whether the op visits its output segments from the last to the first (REVERSE_OPTION)."""
    reverse = bool(op.options.get(REVERSE_OPTION))
    if reverse and op.type != "DEPTHWISE_CONV_2D":
        raise ModelError(f"{op.where}: only a DEPTHWISE_CONV_2D may visit its segments in reverse")
    return reverse


@kernel("ADD", dtypes=("int8",), dynamic=True)
def add(op: Op, args: list) -> DynamicValue:
    a, b = _dynamic_input(op, args, 0), _dynamic_input(op, args, 1)
    out = op.outputs[0]
    if not op.inputs[0].size == op.inputs[1].size == out.size:
        raise UnsupportedError(f"{op.where}: broadcasting ADD is not supported in dynamic fixed point")
    # Operands of one size but other shapes ((1, 1, 1, C) and (C,), as converters write the 1x1 stages of
    # residual networks) hold their values in the same order: the sum is elementwise.
    n = len(a)
    a = DynamicValue(a.values.reshape((n,) + out.shape), a.exponent)
    b = DynamicValue(b.values.reshape((n,) + out.shape), b.exponent)
    exponent = np.minimum(np.maximum(a.exponent, b.exponent), np.minimum(a.exponent, b.exponent) + ADD_ALIGN_LIMIT)

    def aligned(v: DynamicValue) -> np.ndarray:
        return shift_to(v.values, (v.exponent - exponent).reshape((-1,) + (1,) * (v.values.ndim - 1)))

    return to_int8(_fused_clamp(op, aligned(a) + aligned(b), exponent), exponent)


def _with_scale(op: Op, scale: float) -> Op:
    """The op with its input re-quantized at `scale` (zero point 0) and its output too, for TFLM's kernels."""
    def rescaled(t: Tensor) -> Tensor:
        return Tensor(t.name, t.shape, t.dtype, Quantization([scale], [0]), t.data, t.index)

    outputs = [rescaled(t) if op.type != "SOFTMAX" else t for t in op.outputs]
    return Op(op.type, [rescaled(op.inputs[0])] + op.inputs[1:], outputs,
              {k: v for k, v in op.options.items() if k != "dynamic_fixed_point"}, op.index, op.version)


def _per_exponent(op: Op, x: DynamicValue, rest: list):
    """Run the op's TFLM kernel once per distinct exponent in the batch (its scale is 2^-e)."""
    pieces = np.empty((len(x),) + op.outputs[0].shape, dtype=np.int8)
    for e in np.unique(x.exponent):
        pick = x.exponent == e
        pieces[pick] = KERNELS[op.type].fn(_with_scale(op, float(np.ldexp(1.0, -int(e)))), [x.values[pick]] + rest)
    return pieces


@kernel("AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN", "PAD", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", dtypes=("int8",),
        dynamic=True)
def same_exponent(op: Op, args: list) -> DynamicValue:
    """Integer arithmetic on q as TFLM does it for equal input and output scales; e passes through."""
    x = _dynamic_input(op, args)
    if op.options.get("fused_activation_function", "NONE") not in ("NONE", "RELU"):
        raise UnsupportedError(f"{op.where}: fused {op.options['fused_activation_function']} is not supported "
                               "in dynamic fixed point")
    return DynamicValue(_per_exponent(op, x, args[1:]), x.exponent.copy())


@kernel("SOFTMAX", dtypes=("int8",), dynamic=True)
def softmax(op: Op, args: list) -> np.ndarray:
    """TFLM's int8 softmax at input scale 2^-e, e clamped to softmax_exponents (beyond them TFLM has no
    multiplier for beta * scale); the output is static int8 (1/256, -128)."""
    x = _dynamic_input(op, args)
    clamped = DynamicValue(x.values, np.clip(x.exponent, *softmax_exponents(op)))
    return _per_exponent(op, clamped, [])


def softmax_exponents(op: Op) -> tuple[int, int]:
    """The input exponents TFLM's int8 softmax can take for the op's beta: those where its real multiplier
    beta * 2^-e * 2^26 lies in (1, 2^30), i.e. has a significand and a non-negative shift of at most 30."""
    beta = float(np.float32(op.options.get("beta", 1.0)))
    valid = [e for e in range(SOFTMAX_EXPONENTS[0], SOFTMAX_EXPONENTS[1] + 1) if 1.0 < beta * 2.0 ** (26 - e) < 2.0 ** 30]
    if not valid:
        raise UnsupportedError(f"{op.where}: beta {beta} leaves TFLM's int8 softmax no input scale")
    return valid[0], valid[-1]


@kernel("QUANTIZE", dtypes=("float32",), dynamic=True)
def quantize(op: Op, args: list) -> DynamicValue:
    x = args[0].astype(np.float32)
    n = len(x)
    finite = np.where(np.isfinite(x), np.abs(x), 0).reshape(n, -1)  # NaN and infinities take no part
    exponent = exponent_for(finite.max(axis=1))
    scaled = x * np.ldexp(np.float32(1.0), exponent.astype(np.int32)).astype(np.float32).reshape(
        (-1,) + (1,) * (x.ndim - 1))
    scaled = np.nan_to_num(scaled.astype(np.float64), nan=0.0, posinf=127.0, neginf=-128.0)  # NaN reads as 0
    q = np.copysign(np.floor(np.abs(scaled) + 0.5), scaled)
    return DynamicValue(np.clip(q, -128, 127).astype(np.int8), exponent)


@kernel("DEQUANTIZE", dtypes=("int8",), dynamic=True)
def dequantize(op: Op, args: list) -> np.ndarray:
    return _dynamic_input(op, args).real().astype(np.float32)
