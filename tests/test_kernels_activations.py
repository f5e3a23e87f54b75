"""SOFTMAX, LOGISTIC, HARD_SWISH, RELU and RELU6 reference kernels against TFLite Micro.

Each example builds a one-op graph with random shapes, scales, zero points (and beta for SOFTMAX), runs our
kernel on a batch and TFLM on the written model sample by sample: int8 outputs must be byte-identical,
float32 outputs agree to float32 rounding (numpy's exp may differ from libm's expf by an ulp).
"""

from __future__ import annotations

import functools

import numpy as np
import oracle
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import run_both, tflm_run

from microforge.errors import ModelError, UnsupportedError
from microforge.frontend.writer import write_tflite
from microforge.graph.builder import GraphBuilder
from microforge.reference.registry import KERNELS

BATCH = 8
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
UNARY = ["LOGISTIC", "HARD_SWISH", "RELU", "RELU6"]
shapes = st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple)




assert_same = functools.partial(oracle.assert_same, rtol=1e-5, atol=1e-7)


def int8_batch(rng, shape):
    x = rng.integers(-128, 128, (BATCH,) + shape, dtype=np.int8)
    x[0] = rng.choice([-128, 127])  # a constant row: every difference to the maximum is 0
    x[1] = rng.integers(-3, 3, shape)  # values close together
    return x


def one_op(op_type, shape, dtype, in_quant=None, out_quant=None, **options):
    b = GraphBuilder()
    x = b.input("x", shape, dtype, **(in_quant or {}))
    y = b.activation("y", shape, dtype, **(out_quant or {}))
    op = b.op(op_type, [x], [y], **options)
    b.output(y)
    return b.build(), op


def log_uniform(rng, lo, hi):
    return float(np.float32(10 ** rng.uniform(np.log10(lo), np.log10(hi))))


SOFTMAX_OUT = dict(scale=1.0 / 256, zero_point=-128)


@SETTINGS
@given(shape=shapes, beta=st.sampled_from([1.0, 0.5, 2.0, 0.1, 0.731]), seed=st.integers(0, 2**32 - 1))
def test_softmax_int8_matches_tflm(shape, beta, seed):
    rng = np.random.default_rng(seed)
    in_quant = dict(scale=log_uniform(rng, 0.004, 0.5), zero_point=int(rng.integers(-128, 128)))
    graph, op = one_op("SOFTMAX", shape, np.int8, in_quant, SOFTMAX_OUT, beta=beta)
    assert_same(*run_both(graph, op, [int8_batch(rng, shape)]))


def test_softmax_int8_long_rows_and_tiny_scales():
    """Long rows (up to the sum of exps TFLM can hold) and scales where diff_min cuts most values."""
    rng = np.random.default_rng(3)
    for depth, scale, beta in [(1000, 0.2, 1.0), (500, 0.004, 1.0), (17, 1.0, 0.05), (10, 2.0, 1.0)]:
        graph, op = one_op("SOFTMAX", (1, depth), np.int8, dict(scale=scale, zero_point=0), SOFTMAX_OUT, beta=beta)
        x = int8_batch(rng, (1, depth)) if depth <= 512 else rng.integers(-128, 128, (BATCH, 1, depth), np.int8)
        assert_same(*run_both(graph, op, [x]))


@SETTINGS
@given(shape=shapes, beta=st.sampled_from([1.0, 0.5, 2.0]), seed=st.integers(0, 2**32 - 1))
def test_softmax_float32_matches_tflm(shape, beta, seed):
    rng = np.random.default_rng(seed)
    graph, op = one_op("SOFTMAX", shape, np.float32, beta=beta)
    assert_same(*run_both(graph, op, [rng.normal(0, 4, (BATCH,) + shape).astype(np.float32)]))


def unary_quant(rng, op_type, in_scale, in_zp):
    """Output quantization as a converter would choose it for the op's output range."""
    if op_type == "LOGISTIC":
        return dict(scale=1.0 / 256, zero_point=-128)
    if op_type == "RELU6" and rng.random() < 0.7:
        return dict(scale=in_scale, zero_point=in_zp)
    low = {"HARD_SWISH": -0.375, "RELU": 0.0, "RELU6": 0.0}[op_type]
    high = in_scale * (127 - in_zp) * rng.uniform(0.3, 1.5)
    high = min(high, 6.0) if op_type == "RELU6" else high
    scale = max(high - low, 1e-3) / 255
    if op_type == "HARD_SWISH":
        scale = max(scale, in_scale / 100)  # TFLM needs in_scale / 128 < out_scale
    return dict(scale=float(np.float32(scale)), zero_point=int(np.clip(round(-128 - low / scale), -128, 127)))


@SETTINGS
@given(op_type=st.sampled_from(UNARY), shape=shapes, seed=st.integers(0, 2**32 - 1))
def test_unary_int8_matches_tflm(op_type, shape, seed):
    rng = np.random.default_rng(seed)
    in_quant = dict(scale=log_uniform(rng, 0.003, 0.3), zero_point=int(rng.integers(-128, 128)))
    out_quant = unary_quant(rng, op_type, in_quant["scale"], in_quant["zero_point"])
    graph, op = one_op(op_type, shape, np.int8, in_quant, out_quant)
    assert_same(*run_both(graph, op, [int8_batch(rng, shape)]))


@pytest.mark.parametrize("op_type", UNARY)
def test_unary_int8_every_input_value(op_type):
    """All 256 int8 inputs for a spread of scales, so every table entry and saturation edge is seen."""
    rng = np.random.default_rng(11)
    every = np.arange(-128, 128, dtype=np.int8).reshape(BATCH, 1, 32)
    for in_scale, in_zp in [(0.01, 0), (0.02, -128), (0.05, 30), (0.1, -5), (0.25, 127), (0.5, 64), (1.0, 0)]:
        out_quant = unary_quant(rng, op_type, in_scale, in_zp)
        graph, op = one_op(op_type, (1, 32), np.int8, dict(scale=in_scale, zero_point=in_zp), out_quant)
        assert_same(*run_both(graph, op, [every]))


@SETTINGS
@given(op_type=st.sampled_from(UNARY), shape=shapes, seed=st.integers(0, 2**32 - 1))
def test_unary_float32_matches_tflm(op_type, shape, seed):
    rng = np.random.default_rng(seed)
    graph, op = one_op(op_type, shape, np.float32)
    x = rng.normal(0, 6, (BATCH,) + shape).astype(np.float32)
    x[0].flat[:4] = [-20.0, 20.0, -3.0, 3.0][: x[0].size]  # past the logistic cutoffs and hard-swish knees
    assert_same(*run_both(graph, op, [x]))


def test_relu6_keeps_the_input_quantization_like_tflm():
    """TFLM's int8 RELU6 clamps the raw input at its own quantized 0 and 6, ignoring the output's."""
    graph, op = one_op("RELU6", (1, 32), np.int8, dict(scale=0.05, zero_point=-10),
                       dict(scale=0.03, zero_point=-128))
    every = np.arange(-128, 128, dtype=np.int8).reshape(BATCH, 1, 32)
    ours, theirs = run_both(graph, op, [every])
    assert_same(ours, theirs)
    assert ours.min() == -10 and ours.max() == 110  # round(6 / 0.05) - 10


# ----------------------------------------------------------------------------------------------------------
# Models TFLM refuses, and malformed ops


@pytest.mark.parametrize("op_type", ["SOFTMAX", "LOGISTIC"])
def test_int8_output_must_be_1_over_256(op_type):
    graph, op = one_op(op_type, (1, 4), np.int8, dict(scale=0.1, zero_point=0), dict(scale=0.01, zero_point=-128))
    with pytest.raises(UnsupportedError, match=r"op 0 \(" + op_type + r"\).*'y'"):
        KERNELS[op_type].fn(op, [np.zeros((2, 1, 4), np.int8)])


def test_hard_swish_output_scale_tflm_refuses():
    """TFLM's int8 HARD_SWISH refuses models whose input scale / 128 is not below the output scale."""
    graph, op = one_op("HARD_SWISH", (1, 4), np.int8, dict(scale=0.25, zero_point=127),
                       dict(scale=0.0015, zero_point=127))
    with pytest.raises(UnsupportedError, match=r"op 0 \(HARD_SWISH\).*'x'.*'y'"):
        KERNELS["HARD_SWISH"].fn(op, [np.zeros((2, 1, 4), np.int8)])
    with pytest.raises(RuntimeError):
        tflm_run(write_tflite(graph), [np.zeros((1, 1, 4), np.int8)])


@pytest.mark.parametrize("depth", [513, 5000])
def test_softmax_sum_of_exps_beyond_tflm_is_refused(depth):
    """A sum of exps of 512 or more fails TFLM's exponent check (TFLM aborts); over 4096 the sum wraps."""
    graph, op = one_op("SOFTMAX", (1, depth), np.int8, dict(scale=0.2, zero_point=0), SOFTMAX_OUT)
    x = np.zeros((2, 1, depth), np.int8)
    x[0, 0, :-1] = -128  # fine: the others are too far below the maximum to count
    with pytest.raises(UnsupportedError, match="512 or more"):
        KERNELS["SOFTMAX"].fn(op, [x])
    assert KERNELS["SOFTMAX"].fn(op, [x[:1]])[0, 0, -1] == 127


@pytest.mark.parametrize("op_type", ["SOFTMAX"] + UNARY)
def test_malformed_ops(op_type):
    graph, op = one_op(op_type, (1, 4), np.float32)
    op.outputs[0].shape = (1, 5)
    with pytest.raises(ModelError, match="'y'"):
        KERNELS[op_type].fn(op, [np.zeros((2, 1, 4), np.float32)])
    graph, op = one_op(op_type, (1, 4), np.int32, dict(scale=0.1, zero_point=0), dict(scale=0.1, zero_point=0))
    with pytest.raises(UnsupportedError, match="int32"):
        KERNELS[op_type].fn(op, [np.zeros((2, 1, 4), np.int32)])
    graph, op = one_op(op_type, (1, 4), np.int8)  # no quantization parameters
    with pytest.raises(UnsupportedError, match="per-tensor quantization"):
        KERNELS[op_type].fn(op, [np.zeros((2, 1, 4), np.int8)])
    op.inputs.append(op.inputs[0])
    with pytest.raises(ModelError, match="expects 1 inputs"):
        KERNELS[op_type].fn(op, [np.zeros((2, 1, 4), np.int8)] * 2)
