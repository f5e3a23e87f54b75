"""AVERAGE_POOL_2D, MAX_POOL_2D, PAD and PADV2 reference kernels against TFLite Micro.

int8 outputs must be byte-identical to TFLM's; float32 ones agree to float32 rounding (max pooling and
padding exactly).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from oracle import run_both

from microforge.errors import ModelError, UnsupportedError
from microforge.graph.builder import GraphBuilder
from microforge.reference.registry import KERNELS

BATCH = 16
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ACTIVATIONS = ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]




def assert_same(ours, theirs, exact=True):
    if exact:
        diff = np.flatnonzero(ours != theirs)
        assert diff.size == 0, f"{diff.size} of {ours.size} values differ, e.g. ours {ours.flat[diff[0]]} " \
                               f"vs TFLM {theirs.flat[diff[0]]}"
    else:
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)


def random_input(rng, shape, dtype):
    if dtype == np.int8:
        x = rng.integers(-128, 128, (BATCH,) + shape, dtype=np.int8)
        x[0] = rng.choice([-128, 127])
        return x
    return rng.normal(0, 2, (BATCH,) + shape).astype(np.float32)


def out_size(size, k, s, padding):
    return -(-size // s) if padding == "SAME" else (size - k) // s + 1


@st.composite
def pool_cases(draw, op_type, dtype):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    fh, fw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padding = draw(st.sampled_from(["SAME", "VALID"]))
    h, w, c = draw(st.integers(1, 12)), draw(st.integers(1, 12)), draw(st.integers(1, 5))
    if padding == "VALID":
        assume(h >= fh and w >= fw)
    oh, ow = out_size(h, fh, sh, padding), out_size(w, fw, sw, padding)
    quant = {}
    if dtype == np.int8:
        quant = dict(scale=np.float32(rng.uniform(0.005, 0.1)), zero_point=int(rng.integers(-128, 128)))
    b = GraphBuilder()
    x = b.input("x", (1, h, w, c), dtype, **quant)
    y = b.activation("y", (1, oh, ow, c), dtype, **quant)
    op = b.op(op_type, [x], [y], padding=padding, stride_h=sh, stride_w=sw, filter_height=fh, filter_width=fw,
              fused_activation_function=draw(st.sampled_from(ACTIVATIONS)))
    b.output(y)
    return b.build(), op, [random_input(rng, x.shape, dtype)]


@SETTINGS
@given(pool_cases("AVERAGE_POOL_2D", np.int8))
def test_average_pool_int8_matches_tflm(case):
    assert_same(*run_both(*case))


@SETTINGS
@given(pool_cases("MAX_POOL_2D", np.int8))
def test_max_pool_int8_matches_tflm(case):
    assert_same(*run_both(*case))


@settings(max_examples=40, deadline=None)
@given(pool_cases("AVERAGE_POOL_2D", np.float32))
def test_average_pool_float_matches_tflm(case):
    assert_same(*run_both(*case), exact=False)


@settings(max_examples=40, deadline=None)
@given(pool_cases("MAX_POOL_2D", np.float32))
def test_max_pool_float_matches_tflm(case):
    assert_same(*run_both(*case))


def test_average_pool_rounds_halves_away_from_zero():
    """Windows of two values whose sums are odd: x.5 rounds away from zero on both signs."""
    b = GraphBuilder()
    x = b.input("x", (1, 1, 8, 1), np.int8, scale=0.1, zero_point=0)
    y = b.activation("y", (1, 1, 4, 1), np.int8, scale=0.1, zero_point=0)
    op = b.op("AVERAGE_POOL_2D", [x], [y], filter_width=2, stride_w=2)
    b.output(y)
    xs = np.array([3, 4, -3, -4, 127, 126, -128, -127], np.int8).reshape(1, 1, 1, 8, 1)
    ours, theirs = run_both(b.build(), op, [xs])
    assert_same(ours, theirs)
    assert ours.ravel().tolist() == [4, -4, 127, -128]


@st.composite
def pad_cases(draw, dtype):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rank = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=rank, max_size=rank)))
    paddings = np.array(draw(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)),
                                      min_size=rank, max_size=rank)), np.int32).reshape(rank, 2)
    op_type = draw(st.sampled_from(["PAD", "PADV2"]))
    quant = {}
    if dtype == np.int8:
        quant = dict(scale=np.float32(rng.uniform(0.005, 0.1)), zero_point=int(rng.integers(-128, 128)))
    b = GraphBuilder()
    x = b.input("x", shape, dtype, **quant)
    p = b.constant("paddings", paddings)
    inputs = [x, p]
    if op_type == "PADV2":
        value = rng.integers(-128, 128) if dtype == np.int8 else rng.normal()
        inputs.append(b.constant("value", np.array([value], dtype), **quant))
    y = b.activation("y", tuple(np.add(shape, paddings.sum(1))), dtype, **quant)
    op = b.op(op_type, inputs, [y])
    b.output(y)
    return b.build(), op, [random_input(rng, shape, dtype)]


@SETTINGS
@given(pad_cases(np.int8))
def test_pad_int8_matches_tflm(case):
    assert_same(*run_both(*case))


@settings(max_examples=40, deadline=None)
@given(pad_cases(np.float32))
def test_pad_float_matches_tflm(case):
    assert_same(*run_both(*case))


def test_pad_accepts_int64_paddings():
    b = GraphBuilder()
    x = b.input("x", (1, 3, 2), np.int8, scale=0.1, zero_point=-7)
    p = b.constant("paddings", np.array([[0, 0], [1, 2], [0, 1]], np.int64))
    y = b.activation("y", (1, 6, 3), np.int8, scale=0.1, zero_point=-7)
    op = b.op("PAD", [x, p], [y])
    xs = np.arange(12, dtype=np.int8).reshape(2, 1, 3, 2)
    out = KERNELS["PAD"].fn(op, [xs, p.data[None]])
    assert np.array_equal(out, np.pad(xs, ((0, 0), (0, 0), (1, 2), (0, 1)), constant_values=-7))


# --- malformed ops raise ModelError / UnsupportedError naming the op --------------------------------------

def _pool(out_shape=(1, 2, 2, 3), x_dtype=np.int8, out_quant=(0.1, 0), **options):
    b = GraphBuilder()
    x = b.input("x", (1, 4, 4, 3), x_dtype, scale=0.1, zero_point=0)
    y = b.activation("y", out_shape, x_dtype, scale=out_quant[0], zero_point=out_quant[1])
    opts = dict(filter_height=2, filter_width=2, stride_h=2, stride_w=2)
    opts.update(options)
    op = b.op("AVERAGE_POOL_2D", [x], [y], **opts)
    b.build()
    return op, [np.zeros((2,) + x.shape, x_dtype)]


@pytest.mark.parametrize("kwargs, error, text", [
    (dict(out_shape=(1, 3, 3, 3)), ModelError, "'y'"),
    (dict(stride_w=-1), ModelError, "stride_w"),
    (dict(filter_height=0), ModelError, "filter_height"),
    (dict(padding="REFLECT"), ModelError, "padding"),
    (dict(filter_height=5, out_shape=(1, 0, 2, 3)), ModelError, "does not fit"),
    (dict(out_quant=(0.2, 0)), ModelError, "same quantization"),
    (dict(out_quant=(0.1, 3)), ModelError, "same quantization"),
    (dict(x_dtype=np.int32), UnsupportedError, "int32"),
    (dict(fused_activation_function="SIGN_BIT"), UnsupportedError, "SIGN_BIT"),
])
def test_malformed_pool_is_reported(kwargs, error, text):
    op, args = _pool(**kwargs)
    with pytest.raises(error, match="op 0") as info:
        KERNELS[op.type].fn(op, args)
    assert text in str(info.value)


@pytest.mark.parametrize("paddings, out_shape, text", [
    ([[0, 0], [1, 1], [0, 0]], (1, 4, 2), "'y'"),
    ([[0, 0], [1, 1]], (1, 5, 2), "shape [3, 2]"),
    ([[0, 0], [-1, 1], [0, 0]], (1, 3, 2), "negative"),
])
def test_malformed_pad_is_reported(paddings, out_shape, text):
    b = GraphBuilder()
    x = b.input("x", (1, 3, 2), np.float32)
    p = b.constant("paddings", np.array(paddings, np.int32))
    y = b.activation("y", out_shape, np.float32)
    op = b.op("PAD", [x, p], [y])
    b.build()
    with pytest.raises(ModelError, match="op 0") as info:
        KERNELS["PAD"].fn(op, [np.zeros((2, 1, 3, 2), np.float32), p.data[None]])
    assert text in str(info.value)


def test_pad_constant_in_another_quantization_is_reported():
    b = GraphBuilder()
    x = b.input("x", (1, 3), np.int8, scale=0.1, zero_point=2)
    p = b.constant("paddings", np.array([[0, 0], [1, 1]], np.int32))
    v = b.constant("value", np.array([5], np.int8), scale=0.2, zero_point=2)
    y = b.activation("y", (1, 5), np.int8, scale=0.1, zero_point=2)
    op = b.op("PADV2", [x, p, v], [y])
    b.build()
    with pytest.raises(ModelError, match="op 0 .*'value'"):
        KERNELS["PADV2"].fn(op, [np.zeros((2, 1, 3), np.int8), p.data[None], v.data[None]])
