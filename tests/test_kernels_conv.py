"""CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED reference kernels against TFLite Micro.

Each example builds a one-op graph with random shapes and options, runs our kernel on a batch and TFLM on
the written model sample by sample: int8 outputs must be byte-identical, float32 ones agree to float32
rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from oracle import run_both, tflm_run

from microforge.errors import ModelError, UnsupportedError
from microforge.frontend.writer import write_tflite
from microforge.graph.builder import GraphBuilder
from microforge.reference.fixedpoint import multiply_by_quantized_multiplier, quantize_multipliers
from microforge.reference.registry import KERNELS

BATCH = 8
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ACTIVATIONS = ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]




def assert_same(ours, theirs):
    if ours.dtype == np.int8:
        diff = np.flatnonzero(ours != theirs)
        assert diff.size == 0, f"{diff.size} of {ours.size} values differ, e.g. ours {ours.flat[diff[0]]} " \
                               f"vs TFLM {theirs.flat[diff[0]]}"
    else:
        np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=2e-5 * max(1.0, float(np.abs(theirs).max())))


def random_input(rng, shape, dtype):
    if dtype == np.int8:
        x = rng.integers(-128, 128, (BATCH,) + shape, dtype=np.int8)
        x[0] = rng.choice([-128, 127])  # a saturated sample exercises the accumulator extremes
        return x
    return rng.normal(0, 1, (BATCH,) + shape).astype(np.float32)


def out_scale_for(rng, in_scale, in_zp, w_scales, depth):
    """An output scale that makes the outputs use (and sometimes clip) the int8 range, as trained models do."""
    acc_std = np.sqrt(depth) * np.sqrt(74.0**2 + in_zp**2) * 73.0 * in_scale * float(np.mean(w_scales))
    return np.float32(acc_std * rng.uniform(0.3, 3.0) / 64.0)


def weights_and_bias(b, rng, shape, axis, per_channel, with_bias, in_scale, float_op=False, hybrid=False):
    """Constant weights (int8 symmetric, per channel along `axis` or per tensor) and an optional bias."""
    channels = shape[axis]
    if float_op and not hybrid:
        w = b.constant("w", rng.normal(0, 0.5, shape).astype(np.float32))
        bias = b.constant("bias", rng.normal(0, 1, channels).astype(np.float32)) if with_bias else None
        return w, bias, None
    scales = rng.uniform(0.002, 0.02, channels if per_channel else 1).astype(np.float32)
    w = b.constant("w", rng.integers(-127, 128, shape, dtype=np.int8), scale=scales, zero_point=0, axis=axis)
    bias = None
    if with_bias:
        if float_op:
            bias = b.constant("bias", rng.normal(0, 1, channels).astype(np.float32))
        else:
            bias_scales = (np.float32(in_scale) * np.broadcast_to(scales, (channels,))).astype(np.float32)
            bias = b.constant("bias", rng.integers(-20000, 20000, channels).astype(np.int32),
                              scale=bias_scales, zero_point=0)
    return w, bias, scales


def quant_params(rng):
    return np.float32(rng.uniform(0.005, 0.1)), int(rng.integers(-128, 128))


@st.composite
def windows(draw, max_kernel=4):
    """(h, w, kh, kw, stride_h, stride_w, dil_h, dil_w, padding) that give a non-empty output."""
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.sampled_from([1, 1, 2, 3])), draw(st.sampled_from([1, 1, 2]))
    padding = draw(st.sampled_from(["SAME", "VALID"]))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    if padding == "VALID":
        assume(h >= (kh - 1) * dh + 1 and w >= (kw - 1) * dw + 1)
    return h, w, kh, kw, sh, sw, dh, dw, padding


def out_size(size, k, s, d, padding):
    return -(-size // s) if padding == "SAME" else (size - (k - 1) * d - 1) // s + 1


@st.composite
def conv_cases(draw, depthwise=False, float_op=False, hybrid=False):
    h, w, kh, kw, sh, sw, dh, dw, padding = draw(windows())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    per_channel = draw(st.booleans())
    # TFLM's depthwise Prepare crashes without a bias (it frees the absent bias tensor): always give one.
    with_bias = depthwise or draw(st.booleans())
    act = draw(st.sampled_from(ACTIVATIONS))
    if depthwise:
        c = draw(st.integers(1, 6))
        mult = draw(st.sampled_from([1, 1, 2, 3]))
        out_c, w_shape, axis, depth = c * mult, (1, kh, kw, c * mult), 3, kh * kw
    else:
        groups = draw(st.sampled_from([1, 1, 1, 2]))
        c = groups * draw(st.integers(1, 6))
        out_c = groups * draw(st.integers(1, 6))
        w_shape, axis, depth = (out_c, kh, kw, c // groups), 0, kh * kw * c // groups
    oh, ow = out_size(h, kh, sh, dh, padding), out_size(w, kw, sw, dw, padding)
    dtype = np.float32 if float_op else np.int8
    b = GraphBuilder()
    if float_op:
        x = b.input("x", (1, h, w, c), dtype)
        wt, bias, _ = weights_and_bias(b, rng, w_shape, axis, per_channel, with_bias, None, True, hybrid)
        y = b.activation("y", (1, oh, ow, out_c), dtype)
    else:
        in_scale, in_zp = quant_params(rng)
        x = b.input("x", (1, h, w, c), dtype, scale=in_scale, zero_point=in_zp)
        wt, bias, scales = weights_and_bias(b, rng, w_shape, axis, per_channel, with_bias, in_scale)
        y = b.activation("y", (1, oh, ow, out_c), dtype, scale=out_scale_for(rng, in_scale, in_zp, scales, depth),
                         zero_point=int(rng.integers(-128, 128)))
    options = dict(padding=padding, stride_h=sh, stride_w=sw, dilation_h_factor=dh, dilation_w_factor=dw,
                   fused_activation_function=act)
    if depthwise:
        options["depth_multiplier"] = mult
    op = b.op("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D", [x, wt, bias], [y], **options)
    b.output(y)
    return b.build(), op, [random_input(rng, x.shape, dtype)]


@st.composite
def fc_cases(draw, float_op=False, hybrid=False):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    in_features = draw(st.integers(1, 40))
    out_features = draw(st.integers(1, 16))
    keep = draw(st.booleans())
    lead = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    in_shape = (1,) + lead + (in_features,)
    if not keep and draw(st.booleans()):  # a feature map read as one row, as after a flatten
        in_shape = (1, draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 3)))
        in_features = int(np.prod(in_shape))
    rows = int(np.prod(in_shape)) // in_features
    out_shape = in_shape[:-1] + (out_features,) if keep else (rows, out_features)
    per_channel = draw(st.booleans())
    with_bias = draw(st.booleans())
    act = draw(st.sampled_from(ACTIVATIONS))
    dtype = np.float32 if float_op else np.int8
    b = GraphBuilder()
    if float_op:
        x = b.input("x", in_shape, dtype)
        wt, bias, _ = weights_and_bias(b, rng, (out_features, in_features), 0, per_channel, with_bias, None,
                                       True, hybrid)
        y = b.activation("y", out_shape, dtype)
    else:
        in_scale, in_zp = quant_params(rng)
        x = b.input("x", in_shape, dtype, scale=in_scale, zero_point=in_zp)
        wt, bias, scales = weights_and_bias(b, rng, (out_features, in_features), 0, per_channel, with_bias,
                                            in_scale)
        y = b.activation("y", out_shape, dtype, scale=out_scale_for(rng, in_scale, in_zp, scales, in_features),
                         zero_point=int(rng.integers(-128, 128)))
    op = b.op("FULLY_CONNECTED", [x, wt, bias], [y], fused_activation_function=act, keep_num_dims=keep)
    b.output(y)
    return b.build(), op, [random_input(rng, in_shape, dtype)]


@SETTINGS
@given(conv_cases())
def test_conv_int8_matches_tflm(case):
    assert_same(*run_both(*case))


@SETTINGS
@given(conv_cases(depthwise=True))
def test_depthwise_int8_matches_tflm(case):
    assert_same(*run_both(*case))


@SETTINGS
@given(fc_cases())
def test_fully_connected_int8_matches_tflm(case):
    assert_same(*run_both(*case))


@settings(max_examples=40, deadline=None)
@given(conv_cases(float_op=True))
def test_conv_float_matches_tflm(case):
    assert_same(*run_both(*case))


@settings(max_examples=40, deadline=None)
@given(conv_cases(depthwise=True, float_op=True))
def test_depthwise_float_matches_tflm(case):
    assert_same(*run_both(*case))


@settings(max_examples=40, deadline=None)
@given(fc_cases(float_op=True))
def test_fully_connected_float_matches_tflm(case):
    assert_same(*run_both(*case))


def _dequantized_copy(graph, op):
    """TFLM cannot run hybrid ops: the same graph with the int8 weights dequantized to float32 constants."""
    w = op.inputs[1]
    shape = [1] * w.data.ndim
    shape[w.quant.axis] = w.quant.scale.size
    w_float = (w.quant.scale.astype(np.float64).reshape(shape) * w.data).astype(np.float32)
    saved = (w.data, w.dtype, w.quant)
    w.data, w.dtype, w.quant = w_float, np.dtype(np.float32), None
    try:
        return write_tflite(graph)
    finally:
        w.data, w.dtype, w.quant = saved


@settings(max_examples=40, deadline=None)
@given(st.one_of(conv_cases(float_op=True, hybrid=True), conv_cases(depthwise=True, float_op=True, hybrid=True),
                 fc_cases(float_op=True, hybrid=True)))
def test_hybrid_weights_are_dequantized(case):
    graph, op, feeds = case
    args = [None if t is None else t.data[None] if t.is_constant else feeds[0] for t in op.inputs]
    ours = KERNELS[op.type].fn(op, args)
    theirs = tflm_run(_dequantized_copy(graph, op), feeds)[0].reshape(ours.shape)
    assert_same(ours, theirs)


def test_fully_connected_per_tensor_multiplier_is_computed_in_double():
    """TFLM computes the per-tensor multiplier in double, not from the float32 product of the scales.

    Find scales whose two multipliers differ, and accumulators on which that changes the output byte;
    a one-input FC with unit weights puts those accumulators in the bias.
    """
    rng = np.random.default_rng(1)
    mbqm = multiply_by_quantized_multiplier
    for _ in range(2000):
        in_scale, w_scale = np.float32(rng.uniform(0.01, 0.1)), np.float32(rng.uniform(0.001, 0.01))
        out_scale = np.float32(float(in_scale) * float(w_scale) * rng.uniform(1000, 8000))
        single = quantize_multipliers([float(np.float32(in_scale * w_scale)) / float(out_scale)])
        double = quantize_multipliers([float(in_scale) * float(w_scale) / float(out_scale)])
        if single[0][0] == double[0][0]:
            continue
        accs = np.arange(-120 * 8000, 120 * 8000)
        hits = accs[np.clip(mbqm(accs, *single), -128, 127) != np.clip(mbqm(accs, *double), -128, 127)]
        if hits.size:
            break
    else:
        pytest.fail("found no scales whose float32 and double multipliers give different outputs")
    targets = np.resize(hits, 8).astype(np.int32)
    b = GraphBuilder()
    x = b.input("x", (1, 1), np.int8, scale=in_scale, zero_point=0)
    w = b.constant("w", np.ones((8, 1), np.int8), scale=w_scale, zero_point=0)
    bias = b.constant("bias", targets, scale=np.float32(in_scale * w_scale), zero_point=0)
    y = b.activation("y", (1, 8), np.int8, scale=out_scale, zero_point=0)
    op = b.op("FULLY_CONNECTED", [x, w, bias], [y])
    b.output(y)
    ours, theirs = run_both(b.build(), op, [np.zeros((1, 1, 1), np.int8)])
    assert_same(ours, theirs)
    assert np.array_equal(ours.ravel(), np.clip(mbqm(targets, *double), -128, 127))
    assert not np.array_equal(ours.ravel(), np.clip(mbqm(targets, *single), -128, 127))


def test_large_batch_is_fast():
    """A KWS-sized first layer on 1000 samples: vectorised, well under a second."""
    import time

    rng = np.random.default_rng(0)
    b = GraphBuilder()
    x = b.input("x", (1, 49, 10, 1), np.int8, scale=0.1, zero_point=-10)
    w = b.constant("w", rng.integers(-127, 128, (64, 10, 4, 1), dtype=np.int8),
                   scale=rng.uniform(0.002, 0.02, 64).astype(np.float32), zero_point=0, axis=0)
    y = b.activation("y", (1, 25, 5, 64), np.int8, scale=0.5, zero_point=-128)
    op = b.op("CONV_2D", [x, w, None], [y], padding="SAME", stride_h=2, stride_w=2, fused_activation_function="RELU")
    xs = rng.integers(-128, 128, (1000, 1, 49, 10, 1), dtype=np.int8)
    start = time.perf_counter()
    KERNELS["CONV_2D"].fn(op, [xs, w.data[None], None])
    assert time.perf_counter() - start < 5.0


# --- malformed ops raise ModelError / UnsupportedError naming the op --------------------------------------

def _int8_conv(op_type="CONV_2D", out_shape=(1, 4, 4, 2), w_shape=(2, 3, 3, 3), scales=(0.01, 0.02),
               x_dtype=np.int8, bias_size=None, **options):
    b = GraphBuilder()
    x = b.input("x", (1, 6, 6, 3), x_dtype, scale=0.05, zero_point=0)
    axis = 3 if op_type == "DEPTHWISE_CONV_2D" else 0
    w = b.constant("w", np.ones(w_shape, np.int8), scale=np.array(scales, np.float32), zero_point=0, axis=axis)
    bias = None
    if bias_size is not None:
        bias = b.constant("bias", np.zeros(bias_size, np.int32))
    y = b.activation("y", out_shape, x_dtype, scale=0.1, zero_point=0)
    op = b.op(op_type, [x, w, bias], [y], **options)
    b.build()
    x_batch = np.zeros((2,) + x.shape, x_dtype)
    return op, [x_batch, w.data[None], None if bias is None else bias.data[None]]


@pytest.mark.parametrize("kwargs, error, text", [
    (dict(out_shape=(1, 5, 5, 2)), ModelError, "'y'"),
    (dict(stride_h=0), ModelError, "stride_h"),
    (dict(padding="FULL"), ModelError, "padding"),
    (dict(scales=(0.01, 0.02, 0.03)), ModelError, "'w'"),
    (dict(w_shape=(2, 3, 3, 2)), ModelError, "channels"),
    (dict(w_shape=(2, 7, 7, 3), out_shape=(1, 0, 0, 2)), ModelError, "does not fit"),
    (dict(bias_size=3), ModelError, "'bias'"),
    (dict(fused_activation_function="TANH"), UnsupportedError, "TANH"),
    (dict(x_dtype=np.int32), UnsupportedError, "int32"),
    (dict(op_type="DEPTHWISE_CONV_2D", w_shape=(1, 3, 3, 6), scales=(0.01,) * 6, out_shape=(1, 4, 4, 6),
          depth_multiplier=3), ModelError, "depth_multiplier"),
])
def test_malformed_conv_is_reported(kwargs, error, text):
    op, args = _int8_conv(**kwargs)
    with pytest.raises(error, match="op 0") as info:
        KERNELS[op.type].fn(op, args)
    assert text in str(info.value)


def test_malformed_fully_connected_is_reported():
    b = GraphBuilder()
    x = b.input("x", (1, 10), np.int8, scale=0.05, zero_point=0)
    w = b.constant("w", np.ones((4, 3), np.int8), scale=0.01, zero_point=0)
    y = b.activation("y", (1, 4), np.int8, scale=0.1, zero_point=0)
    op = b.op("FULLY_CONNECTED", [x, w, None], [y])
    b.build()
    with pytest.raises(ModelError, match="op 0 .*'x'"):
        KERNELS[op.type].fn(op, [np.zeros((2, 1, 10), np.int8), w.data[None], None])
    w_nonconst = b.activation("w2", (4, 10), np.int8, scale=0.01, zero_point=0)
    op.inputs[1] = w_nonconst
    with pytest.raises(UnsupportedError, match="constant"):
        KERNELS[op.type].fn(op, [np.zeros((2, 1, 10), np.int8), np.zeros((2, 4, 10), np.int8), None])
