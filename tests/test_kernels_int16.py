"""int16x8 quantization (int16 activations with zero point 0, int8 weights, int64 or int32 biases) against
TFLite Micro.

Each case builds a one-op model with a seeded random shape, options and quantization, runs our kernel on a
batch and TFLM on the written model sample by sample: outputs must be byte-identical. Every batch starts
with samples at the int16 extremes. A multi-op graph goes through microforge.run; malformed int16 ops
must raise microforge's errors naming the op.
"""

from __future__ import annotations

import numpy as np
import pytest
from oracle import assert_same, run_both, tflm_run

import microforge
from microforge.errors import MicroforgeError, UnsupportedError
from microforge.frontend.reader import read_tflite
from microforge.frontend.writer import write_tflite
from microforge.graph.builder import GraphBuilder
from microforge.reference.activations import _softmax_int16_luts
from microforge.reference.fixedpoint import multiply_by_quantized_multiplier_int64

BATCH = 6
SEEDS = range(12)
ACTIVATIONS = ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]
INT16_STD = 18918.0  # standard deviation of uniform int16 values


def int16_input(rng, shape, batch=BATCH, limit=32768):
    """Uniform int16 samples (within +-limit); the first is all -32768 or all 32767, the second alternates
    the extremes."""
    x = rng.integers(-limit, limit, (batch,) + tuple(shape), dtype=np.int16)
    x[0] = rng.choice([-32768, 32767])
    if batch > 1:
        x[1].flat[:] = np.where(np.arange(x[1].size) % 2, 32767, -32768)
    return x


def act_scale(rng):
    return np.float32(rng.uniform(1e-4, 2e-3))


def window(rng, max_kernel=4):
    """(h, w, kh, kw, sh, sw, dh, dw, padding, out_h, out_w) with a non-empty output."""
    while True:
        kh, kw = rng.integers(1, max_kernel + 1, 2)
        sh, sw = rng.integers(1, 4, 2)
        dh, dw = rng.choice([1, 1, 2]), rng.choice([1, 1, 2])
        padding = str(rng.choice(["SAME", "VALID"]))
        h, w = rng.integers(1, 10, 2)
        eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
        if padding == "SAME":
            return h, w, kh, kw, sh, sw, dh, dw, padding, -(-h // sh), -(-w // sw)
        if h >= eh and w >= ew:
            return h, w, kh, kw, sh, sw, dh, dw, padding, (h - eh) // sh + 1, (w - ew) // sw + 1


def weights(b, rng, shape, axis, per_channel):
    channels = shape[axis]
    scales = rng.uniform(0.002, 0.02, channels if per_channel else 1).astype(np.float32)
    w = rng.integers(-127, 128, shape, dtype=np.int8)
    return b.constant("w", w, scale=scales, zero_point=0, axis=axis), np.broadcast_to(scales, (channels,))


def bias(b, rng, kind, in_scale, w_scales, magnitude=2**23, huge=True):
    """An int64 bias (one value beyond int32, as int16x8 allows), an int32 one, or None."""
    if kind is None:
        return None
    channels = len(w_scales)
    values = rng.integers(-magnitude, magnitude, channels, dtype=np.int64)
    if kind == "int64" and channels > 1 and huge:
        values[-1] = rng.choice([-1, 1]) * 2**34  # beyond int32: only the int64 path holds it
    values = values.astype(np.int32 if kind == "int32" else np.int64)
    scales = (np.float32(in_scale) * w_scales).astype(np.float32)
    return b.constant("bias", values, scale=scales, zero_point=0)


def output_scale(rng, in_scale, w_scales, depth, ratio="typical"):
    """An int16 output scale making outputs use the range; 'large' gives multipliers above 1, 'small'
    multipliers far below 1 (long right shifts)."""
    product = float(in_scale) * float(np.mean(w_scales))
    if ratio == "large":
        return np.float32(product / rng.uniform(1.5, 10.0))
    if ratio == "small":
        return np.float32(product * rng.uniform(2.0**18, 2.0**22))
    return np.float32(np.sqrt(depth) * INT16_STD * 73.0 * product * rng.uniform(0.3, 3.0) / 16384)


# ---------------------------------------------------------------------------------------------------------
# CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED


def conv_case(seed, depthwise=False, bias_kind="int64", ratio="typical"):
    rng = np.random.default_rng(seed)
    h, w, kh, kw, sh, sw, dh, dw, padding, oh, ow = window(rng)
    per_channel = bool(rng.integers(0, 2)) or seed % 3 == 0
    act = ACTIVATIONS[seed % 4]
    if depthwise:
        c = int(rng.integers(1, 6))
        mult = int(rng.choice([1, 1, 2]))
        out_c, w_shape, axis, depth = c * mult, (1, kh, kw, c * mult), 3, kh * kw
    else:
        groups = int(rng.choice([1, 1, 2]))
        c = groups * int(rng.integers(1, 5))
        out_c = groups * int(rng.integers(1, 5))
        w_shape, axis, depth = (out_c, kh, kw, c // groups), 0, kh * kw * c // groups
    b = GraphBuilder()
    in_scale = act_scale(rng)
    x = b.input("x", (1, h, w, c), np.int16, scale=in_scale, zero_point=0)
    wt, w_scales = weights(b, rng, w_shape, axis, per_channel)
    bs = bias(b, rng, bias_kind, in_scale, w_scales, 2**23 if ratio != "large" else 64)
    y = b.activation("y", (1, oh, ow, out_c), np.int16, scale=output_scale(rng, in_scale, w_scales, depth, ratio),
                     zero_point=0)
    options = dict(padding=padding, stride_h=int(sh), stride_w=int(sw), dilation_h_factor=int(dh),
                   dilation_w_factor=int(dw), fused_activation_function=act)
    if depthwise:
        options["depth_multiplier"] = mult
    op = b.op("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D", [x, wt, bs], [y], **options)
    b.output(y)
    # Multipliers above 1 need small inputs (and biases) for outputs inside the int16 range.
    return b.build(), op, [int16_input(rng, x.shape, limit=8 if ratio == "large" else 32768)]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("bias_kind", ["int64", "int32", None])
def test_conv_int16x8_matches_tflm(seed, bias_kind):
    assert_same(*run_both(*conv_case(seed, bias_kind=bias_kind)))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ratio", ["large", "small"])
def test_conv_int16x8_extreme_multipliers_match_tflm(seed, ratio):
    assert_same(*run_both(*conv_case(100 + seed, bias_kind="int64" if seed % 2 else "int32", ratio=ratio)))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ratio", ["typical", "large"])
def test_depthwise_int16x8_matches_tflm(seed, ratio):
    # TFLM's int16 depthwise reads the bias as int64 only (and its Prepare needs a bias).
    assert_same(*run_both(*conv_case(200 + seed, depthwise=True, ratio=ratio)))


def fc_case(seed, bias_kind="int64", per_channel=None, ratio="typical"):
    rng = np.random.default_rng(seed)
    in_features, out_features = int(rng.integers(1, 60)), int(rng.integers(1, 12))
    keep = bool(seed % 2)
    in_shape = (1, int(rng.integers(1, 3)), in_features) if keep else (1, in_features)
    out_shape = in_shape[:-1] + (out_features,) if keep else (1, out_features)
    per_channel = bool(rng.integers(0, 2)) if per_channel is None else per_channel
    b = GraphBuilder()
    in_scale = act_scale(rng)
    x = b.input("x", in_shape, np.int16, scale=in_scale, zero_point=0)
    wt, w_scales = weights(b, rng, (out_features, in_features), 0, per_channel)
    bs = bias(b, rng, bias_kind, in_scale, w_scales, 2**23 if ratio != "large" else 64)
    y = b.activation("y", out_shape, np.int16, zero_point=0,
                     scale=output_scale(rng, in_scale, w_scales, in_features, ratio))
    op = b.op("FULLY_CONNECTED", [x, wt, bs], [y], fused_activation_function=ACTIVATIONS[seed % 4],
              keep_num_dims=keep)
    b.output(y)
    return b.build(), op, [int16_input(rng, in_shape, limit=8 if ratio == "large" else 32768)]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("bias_kind", ["int64", "int32", None])
@pytest.mark.parametrize("per_channel", [False, True])
def test_fully_connected_int16x8_matches_tflm(seed, bias_kind, per_channel):
    assert_same(*run_both(*fc_case(300 + seed, bias_kind, per_channel)))


@pytest.mark.parametrize("seed", range(4))
def test_fully_connected_int16x8_large_multiplier_matches_tflm(seed):
    assert_same(*run_both(*fc_case(400 + seed, "int64", per_channel=bool(seed % 2), ratio="large")))


def test_int64_multiplier_rounds_through_a_q15_significand():
    # TFLite's int64 MultiplyByQuantizedMultiplier: (m + 2^15) >> 16, then one rounding shift (halves up).
    x = np.array([3, -3, 5, -5, 1 << 40, -(1 << 40)], dtype=np.int64)
    assert multiply_by_quantized_multiplier_int64(x, 1 << 30, -14).tolist() == [
        0, 0, 0, 0, 1 << 25, -(1 << 25)]
    assert multiply_by_quantized_multiplier_int64(x[:4], 1 << 30, -1).tolist() == [
        1, -1, 1, -1]  # 3/4 -> 1, -3/4 -> -1, 5/4 -> 1, -5/4 -> -1
    # -1/2 rounds up to 0 (the int32 rule would give -1); beyond int32 the result wraps as C's cast does.
    assert multiply_by_quantized_multiplier_int64(np.array([4, -4]), 1 << 30, -2).tolist() == [1, 0]
    assert multiply_by_quantized_multiplier_int64(np.array([1 << 40]), 1 << 30, 0).tolist() == [0]
    assert multiply_by_quantized_multiplier_int64(np.array([2]), (1 << 31) - 1, 0).tolist() == [2]


# ---------------------------------------------------------------------------------------------------------
# Pooling


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("op_type", ["AVERAGE_POOL_2D", "MAX_POOL_2D"])
def test_pool_int16_matches_tflm(seed, op_type):
    rng = np.random.default_rng(500 + seed)
    while True:
        h, w, kh, kw, sh, sw, _, _, padding, oh, ow = window(rng, max_kernel=5)
        if padding == "SAME" or (h >= kh and w >= kw):
            break
    c = int(rng.integers(1, 6))
    scale = act_scale(rng)
    b = GraphBuilder()
    x = b.input("x", (1, h, w, c), np.int16, scale=scale, zero_point=0)
    y = b.activation("y", (1, oh, ow, c), np.int16, scale=scale, zero_point=0)
    op = b.op(op_type, [x], [y], padding=padding, stride_h=int(sh), stride_w=int(sw), filter_height=int(kh),
              filter_width=int(kw), fused_activation_function=ACTIVATIONS[seed % 4])
    b.output(y)
    assert_same(*run_both(b.build(), op, [int16_input(rng, x.shape)]))


# ---------------------------------------------------------------------------------------------------------
# ADD, MUL


BROADCASTS = [((1, 4, 5, 3), (1, 4, 5, 3)), ((1, 4, 5, 3), (1, 1, 1, 3)), ((1, 6), (1, 6)),
              ((1, 3, 1, 2), (1, 1, 4, 2)), ((1, 2, 3), (3,)), ((1, 5, 5, 2), (1, 5, 5, 2))]


def binary_case(seed, op_type, pot_scale_int16=False, constant_second=False):
    rng = np.random.default_rng(600 + seed)
    shape1, shape2 = BROADCASTS[seed % len(BROADCASTS)]
    out_shape = np.broadcast_shapes(shape1, shape2)
    s1, s2 = act_scale(rng), act_scale(rng) * np.float32(rng.choice([1.0, 0.01, 30.0]))
    if op_type == "ADD":
        out = np.float32(max(s1, s2) * rng.uniform(0.5, 3.0))
    else:
        out = np.float32(float(s1) * float(s2) * 32768 * rng.uniform(0.05, 2.0))
    b = GraphBuilder()
    x1 = b.input("x1", shape1, np.int16, scale=s1, zero_point=0)
    if constant_second:
        x2 = b.constant("x2", int16_input(rng, shape2, 1)[0], scale=s2, zero_point=0)
    else:
        x2 = b.input("x2", shape2, np.int16, scale=s2, zero_point=0)
    y = b.activation("y", out_shape, np.int16, scale=out, zero_point=0)
    options = dict(fused_activation_function=ACTIVATIONS[seed % 4])
    if op_type == "ADD":
        options["pot_scale_int16"] = pot_scale_int16
    op = b.op(op_type, [x1, x2], [y], **options)
    b.output(y)
    feeds = [int16_input(rng, shape1)] + ([] if constant_second else [int16_input(rng, shape2)])
    return b.build(), op, feeds


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("op_type", ["ADD", "MUL"])
def test_binary_int16_matches_tflm(seed, op_type):
    assert_same(*run_both(*binary_case(seed, op_type, constant_second=seed == 2)))


@pytest.mark.parametrize("seed", range(3))
def test_add_int16_ignores_pot_scale_int16_like_tflm(seed):
    # TFLM's int16 ADD always takes the general rescaling path, whatever pot_scale_int16 says.
    graph, op, feeds = binary_case(seed, "ADD", pot_scale_int16=True)
    assert read_tflite(write_tflite(graph)).ops[0].options["pot_scale_int16"] is True
    assert_same(*run_both(graph, op, feeds))


# ---------------------------------------------------------------------------------------------------------
# SOFTMAX, RELU, RELU6


def softmax_case(seed, in_dtype=np.int16):
    rng = np.random.default_rng(700 + seed)
    shape = [(1, 10), (1, 2, 7), (1, 1, 1, 12), (1, 64), (1, 3), (1, 1)][seed % 6]
    beta = [1.0, 0.5, 2.0, 1.0, 0.3, 1.0][seed % 6]
    b = GraphBuilder()
    if in_dtype == np.int16:
        scale = np.float32(10 ** rng.uniform(-4.5, -2))
        x = b.input("x", shape, np.int16, scale=scale, zero_point=0)
        y = b.activation("y", shape, np.int16, scale=1.0 / 32768, zero_point=0)
        feed = int16_input(rng, shape)
    else:
        x = b.input("x", shape, np.int8, scale=np.float32(rng.uniform(0.02, 0.2)),
                    zero_point=int(rng.integers(-20, 20)))
        y = b.activation("y", shape, np.int16, scale=1.0 / 65536, zero_point=-32768)
        feed = rng.integers(-128, 128, (BATCH,) + shape, dtype=np.int8)
    op = b.op("SOFTMAX", [x], [y], beta=beta)
    b.output(y)
    return b.build(), op, [feed]


@pytest.mark.parametrize("seed", range(8))
def test_softmax_int16_matches_tflm(seed):
    assert_same(*run_both(*softmax_case(seed)))


@pytest.mark.parametrize("seed", range(4))
def test_softmax_int8_to_int16_matches_tflm(seed):
    assert_same(*run_both(*softmax_case(seed, np.int8)))


def test_softmax_luts_match_libm_expf(monkeypatch):
    """The exp table is built from float64 exp rounded to float32; glibc's expf (what the TFLM package
    calls) must give the same table."""
    import ctypes

    from microforge.reference import activations

    try:
        libm = ctypes.CDLL("libm.so.6")
    except OSError:
        pytest.skip("no glibc libm")
    libm.expf.restype, libm.expf.argtypes = ctypes.c_float, [ctypes.c_float]
    exp_lut, recip_lut = _softmax_int16_luts()
    monkeypatch.setattr(activations, "_expf",
                        lambda v: np.array([libm.expf(float(e)) for e in v], dtype=np.float32))
    libm_exp_lut, _ = _softmax_int16_luts.__wrapped__()
    assert np.array_equal(exp_lut, libm_exp_lut)
    assert exp_lut.shape == recip_lut.shape == (513,)
    assert exp_lut[-1] == 32767 and recip_lut[0] == 32767 and recip_lut[-1] == 16384


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("op_type", ["RELU", "RELU6"])
def test_relu_int16_matches_tflm(seed, op_type):
    rng = np.random.default_rng(800 + seed)
    shape = (1, 3, 4, 2)
    s_in = np.float32(rng.uniform(1e-4, 5e-4))
    s_out = s_in if op_type == "RELU6" or seed == 0 else np.float32(s_in * rng.uniform(0.3, 3.0))
    b = GraphBuilder()
    x = b.input("x", shape, np.int16, scale=s_in, zero_point=0)
    y = b.activation("y", shape, np.int16, scale=s_out, zero_point=0)
    op = b.op(op_type, [x], [y])
    b.output(y)
    assert_same(*run_both(b.build(), op, [int16_input(rng, shape)]))


# ---------------------------------------------------------------------------------------------------------
# MEAN, PAD, CONCATENATION, QUANTIZE, DEQUANTIZE, RESHAPE/SQUEEZE/EXPAND_DIMS


@pytest.mark.parametrize("seed", range(4))
def test_mean_int16_matches_tflm(seed):
    rng = np.random.default_rng(900 + seed)
    shape = (1, int(rng.integers(1, 8)), int(rng.integers(1, 8)), int(rng.integers(1, 5)))
    axes, keep = [([1, 2], True), ([1, 2], False), ([2], True), ([-1, 1], False)][seed]
    out_shape = tuple(1 if d in [a % 4 for a in axes] else n for d, n in enumerate(shape)
                      if keep or d not in [a % 4 for a in axes])
    s_in = act_scale(rng)
    s_out = s_in if seed == 0 else np.float32(s_in * rng.uniform(0.3, 3.0))
    b = GraphBuilder()
    x = b.input("x", shape, np.int16, scale=s_in, zero_point=0)
    ax = b.constant("axes", np.array(axes, dtype=np.int32))
    y = b.activation("y", out_shape, np.int16, scale=s_out, zero_point=0)
    op = b.op("MEAN", [x, ax], [y], keep_dims=keep)
    b.output(y)
    assert_same(*run_both(b.build(), op, [int16_input(rng, shape)]))


@pytest.mark.parametrize("op_type", ["PAD", "PADV2"])
def test_pad_int16_matches_tflm(op_type):
    rng = np.random.default_rng(1000)
    shape, paddings = (1, 3, 4, 2), np.array([[0, 0], [1, 2], [0, 3], [1, 0]], dtype=np.int32)
    scale = act_scale(rng)
    b = GraphBuilder()
    x = b.input("x", shape, np.int16, scale=scale, zero_point=0)
    inputs = [x, b.constant("paddings", paddings)]
    if op_type == "PADV2":
        inputs.append(b.constant("value", np.array([-1234], dtype=np.int16), scale=scale, zero_point=0))
    y = b.activation("y", tuple(np.add(shape, paddings.sum(axis=1))), np.int16, scale=scale, zero_point=0)
    op = b.op(op_type, inputs, [y])
    b.output(y)
    assert_same(*run_both(b.build(), op, [int16_input(rng, shape)]))


def test_concatenation_int16_matches_tflm():
    rng = np.random.default_rng(1100)
    scale = act_scale(rng)
    b = GraphBuilder()
    x1 = b.input("x1", (1, 2, 3, 2), np.int16, scale=scale, zero_point=0)
    x2 = b.input("x2", (1, 2, 3, 5), np.int16, scale=scale, zero_point=0)
    y = b.activation("y", (1, 2, 3, 7), np.int16, scale=scale, zero_point=0)
    op = b.op("CONCATENATION", [x1, x2], [y], axis=-1)
    b.output(y)
    assert_same(*run_both(b.build(), op, [int16_input(rng, x1.shape), int16_input(rng, x2.shape)]))


QUANTIZE_CASES = [(np.float32, np.int16), (np.int16, np.int8), (np.int8, np.int16), (np.int16, np.int16)]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("src_dtype,out_dtype", QUANTIZE_CASES)
def test_quantize_int16_matches_tflm(seed, src_dtype, out_dtype):
    rng = np.random.default_rng(1200 + seed)
    shape = (1, 4, 6)
    b = GraphBuilder()

    def quant(dtype):
        if dtype == np.int16:
            return dict(scale=act_scale(rng) * np.float32(rng.choice([1.0, 0.2, 5.0])), zero_point=0)
        return dict(scale=np.float32(rng.uniform(0.01, 0.5)), zero_point=int(rng.integers(-100, 100)))

    if src_dtype == np.float32:
        x = b.input("x", shape, np.float32)
        feed = rng.normal(0, 2.0, (BATCH,) + shape).astype(np.float32)
        feed[0, 0, 0, :3] = [100.0, -100.0, 0.0]  # saturating both ways
    else:
        x = b.input("x", shape, src_dtype, **quant(src_dtype))
        info = np.iinfo(src_dtype)
        feed = rng.integers(int(info.min), int(info.max) + 1, (BATCH,) + shape).astype(src_dtype)
        feed[0] = info.min
        feed[1] = info.max
    y = b.activation("y", shape, out_dtype, **quant(out_dtype))
    op = b.op("QUANTIZE", [x], [y])
    b.output(y)
    assert_same(*run_both(b.build(), op, [feed]))


@pytest.mark.parametrize("seed", range(2))
def test_dequantize_int16_matches_tflm_exactly(seed):
    rng = np.random.default_rng(1300 + seed)
    b = GraphBuilder()
    x = b.input("x", (1, 3, 5), np.int16, scale=act_scale(rng), zero_point=0)
    y = b.activation("y", (1, 3, 5), np.float32)
    op = b.op("DEQUANTIZE", [x], [y])
    b.output(y)
    ours, theirs = run_both(b.build(), op, [int16_input(rng, x.shape)])
    assert ours.tobytes() == theirs.tobytes()


def test_shape_ops_int16_match_tflm():
    rng = np.random.default_rng(1400)
    scale = act_scale(rng)
    cases = [("RESHAPE", (1, 2, 3, 4), (1, 6, 4), [np.array([1, 6, 4], dtype=np.int32)], {}),
             ("SQUEEZE", (1, 1, 5, 1), (1, 5), [], dict(squeeze_dims=[1, 3])),
             ("EXPAND_DIMS", (1, 5), (1, 5, 1), [np.array([2], dtype=np.int32)], {})]
    for op_type, shape, out_shape, constants, options in cases:
        b = GraphBuilder()
        x = b.input("x", shape, np.int16, scale=scale, zero_point=0)
        extra = [b.constant(f"c{i}", c) for i, c in enumerate(constants)]
        y = b.activation("y", out_shape, np.int16, scale=scale, zero_point=0)
        op = b.op(op_type, [x] + extra, [y], **options)
        b.output(y)
        assert_same(*run_both(b.build(), op, [int16_input(rng, shape)]))


# ---------------------------------------------------------------------------------------------------------
# A whole int16x8 graph through microforge.run


def int16x8_graph(rng):
    """float input -> QUANTIZE int16 -> CONV_2D -> DEPTHWISE_CONV_2D -> AVERAGE_POOL_2D -> RESHAPE ->
    FULLY_CONNECTED -> SOFTMAX -> DEQUANTIZE float output, scales chosen as a converter would."""
    b = GraphBuilder()
    x = b.input("x", (1, 8, 8, 2), np.float32)
    s0 = np.float32(4.0 / 32767)
    q = b.activation("q", (1, 8, 8, 2), np.int16, scale=s0, zero_point=0)
    b.op("QUANTIZE", [x], [q])
    w1, ws1 = weights(b, rng, (4, 3, 3, 2), 0, per_channel=True)
    s1 = output_scale(rng, s0, ws1, 18)
    c1 = b.activation("c1", (1, 8, 8, 4), np.int16, scale=s1, zero_point=0)
    b.op("CONV_2D", [q, w1, bias(b, rng, "int64", s0, ws1, 2**16, huge=False)], [c1], padding="SAME",
         fused_activation_function="RELU")
    w2, ws2 = weights(b, rng, (1, 3, 3, 4), 3, per_channel=True)
    s2 = output_scale(rng, s1, ws2, 9)
    c2 = b.activation("c2", (1, 4, 4, 4), np.int16, scale=s2, zero_point=0)
    b.op("DEPTHWISE_CONV_2D", [c1, w2, bias(b, rng, "int64", s1, ws2, 2**16, huge=False)], [c2],
         padding="SAME", stride_h=2, stride_w=2, depth_multiplier=1, fused_activation_function="RELU6")
    p = b.activation("p", (1, 2, 2, 4), np.int16, scale=s2, zero_point=0)
    b.op("AVERAGE_POOL_2D", [c2], [p], filter_height=2, filter_width=2, stride_h=2, stride_w=2)
    r = b.activation("r", (1, 16), np.int16, scale=s2, zero_point=0)
    b.op("RESHAPE", [p, b.constant("shape", np.array([1, 16], dtype=np.int32))], [r])
    w3, ws3 = weights(b, rng, (5, 16), 0, per_channel=False)
    s3 = output_scale(rng, s2, ws3, 16)
    f = b.activation("f", (1, 5), np.int16, scale=s3, zero_point=0)
    b.op("FULLY_CONNECTED", [r, w3, bias(b, rng, "int64", s2, ws3, 2**16, huge=False)], [f])
    sm = b.activation("sm", (1, 5), np.int16, scale=1.0 / 32768, zero_point=0)
    b.op("SOFTMAX", [f], [sm], beta=1.0)
    out = b.activation("out", (1, 5), np.float32)
    b.op("DEQUANTIZE", [sm], [out])
    b.output(out)
    return b.build()


def test_int16x8_graph_runs_bit_exact_through_microforge():
    rng = np.random.default_rng(1500)
    graph = microforge.load(write_tflite(int16x8_graph(rng)))
    x = rng.normal(0, 1.5, (20, 8, 8, 2)).astype(np.float32)
    x[0] = 10.0  # beyond the input range: QUANTIZE saturates
    ours = microforge.run(graph, x)
    theirs = tflm_run(write_tflite(graph), [x[:, None]])[0].reshape(ours.shape)
    assert ours.dtype == np.float32 and ours.tobytes() == theirs.tobytes()
    assert len(np.unique(ours.argmax(axis=-1))) > 1  # the graph is not degenerate


# ---------------------------------------------------------------------------------------------------------
# Refused with microforge's errors, naming the op


def test_int16_conv_with_nonzero_zero_point_is_refused():
    graph, op, feeds = conv_case(0)
    op.inputs[0].quant.zero_point[:] = 7
    with pytest.raises(UnsupportedError, match=r"op 0 \(CONV_2D\).*zero point"):
        run_both(graph, op, feeds)


def test_int16_input_with_int8_output_is_refused():
    graph, op, feeds = conv_case(1)
    out = op.outputs[0]
    out.dtype = np.dtype(np.int8)
    with pytest.raises(UnsupportedError, match=r"CONV_2D.*int16 input.*int8 output"):
        microforge.run(graph, feeds[0][:, 0])


def test_int16_softmax_to_int8_and_int16_logistic_are_refused():
    b = GraphBuilder()
    x = b.input("x", (1, 4), np.int16, scale=1e-3, zero_point=0)
    y = b.activation("y", (1, 4), np.int8, scale=1.0 / 256, zero_point=-128)
    b.op("SOFTMAX", [x], [y])
    z = b.activation("z", (1, 4), np.int16, scale=1.0 / 32768, zero_point=0)
    b.op("LOGISTIC", [x], [z])
    b.output(y)
    b.output(z)
    graph = b.build()
    with pytest.raises(MicroforgeError, match=r"LOGISTIC.*int16"):
        microforge.run(microforge.load(write_tflite(graph)), np.zeros((1, 4), np.int16))
    from microforge.reference.registry import KERNELS

    with pytest.raises(UnsupportedError, match=r"SOFTMAX.*mixed types"):
        KERNELS["SOFTMAX"].fn(graph.ops[0], [np.zeros((1, 1, 4), np.int16)])


def test_int16_depthwise_with_int32_bias_is_refused():
    graph, op, feeds = conv_case(3, depthwise=True, bias_kind="int32")
    with pytest.raises(UnsupportedError, match=r"DEPTHWISE_CONV_2D.*bias.*int64"):
        run_both(graph, op, feeds)


@pytest.mark.parametrize("bias_kind", ["int32", "int64"])
def test_per_tensor_fully_connected_multiplies_scales_in_double_like_tflm(bias_kind):
    """The TFLM package's per-tensor FULLY_CONNECTED multiplier is double(input_scale) * double(weight_scale)
    / output_scale, as per channel (TFLM's source suggests float(input_scale * weight_scale), which the
    package does not do): with scales whose float32 and double products differ, every int16 value through
    one weight tells the two apart (with an int32 bias; the int64 path's Q15 multiplier hides it)."""
    from microforge.reference.fixedpoint import quantize_multiplier

    rng = np.random.default_rng(1600)
    while True:
        s_in, s_w, s_out = (np.float32(v) for v in (rng.uniform(1e-4, 1e-3), rng.uniform(0.002, 0.02),
                                                    rng.uniform(0.002, 0.02)))
        single = quantize_multiplier(float(s_in * s_w) / float(s_out))[0]
        double = quantize_multiplier(float(s_in) * float(s_w) / float(s_out))[0]
        if (single >> 16) != (double >> 16) if bias_kind == "int64" else single != double:
            break
    b = GraphBuilder()
    x = b.input("x", (1, 65536, 1), np.int16, scale=s_in, zero_point=0)
    wt = b.constant("w", np.array([[127]], dtype=np.int8), scale=s_w, zero_point=0)
    bs = b.constant("bias", np.array([3], dtype=np.int32 if bias_kind == "int32" else np.int64),
                    scale=np.float32(s_in * s_w), zero_point=0)
    y = b.activation("y", (65536, 1), np.int16, scale=s_out, zero_point=0)
    op = b.op("FULLY_CONNECTED", [x, wt, bs], [y])
    b.output(y)
    feed = np.arange(-32768, 32768, dtype=np.int16).reshape(1, 1, 65536, 1)
    assert_same(*run_both(b.build(), op, [feed]))


def test_relu_int16_divides_scales_in_double_like_tflm():
    """The TFLM package's RELU multiplier is input_scale / output_scale divided in double (its source reads
    as a float32 division): with scales whose float32 and double quotients differ, every int16 value
    tells the two apart."""
    from microforge.reference.fixedpoint import quantize_multiplier

    rng = np.random.default_rng(1700)
    while True:
        s_in, s_out = np.float32(rng.uniform(1e-4, 1e-3)), np.float32(rng.uniform(1e-4, 1e-3))
        if quantize_multiplier(float(s_in / s_out))[0] != quantize_multiplier(float(s_in) / float(s_out))[0]:
            break
    b = GraphBuilder()
    x = b.input("x", (1, 65536), np.int16, scale=s_in, zero_point=0)
    y = b.activation("y", (1, 65536), np.int16, scale=s_out, zero_point=0)
    op = b.op("RELU", [x], [y])
    b.output(y)
    assert_same(*run_both(b.build(), op, [np.arange(-32768, 32768, dtype=np.int16).reshape(1, 1, 65536)]))


def test_unquantized_int16_concatenation_matches_tflm():
    """Plain int16 data (no quantization parameters) is copied as it is."""
    rng = np.random.default_rng(1800)
    b = GraphBuilder()
    x1 = b.input("x1", (1, 3, 2), np.int16)
    x2 = b.input("x2", (1, 1, 2), np.int16)
    y = b.activation("y", (1, 4, 2), np.int16)
    op = b.op("CONCATENATION", [x1, x2], [y], axis=1)
    b.output(y)
    assert_same(*run_both(b.build(), op, [int16_input(rng, x1.shape), int16_input(rng, x2.shape)]))
