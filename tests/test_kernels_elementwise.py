"""ADD and MUL reference kernels against TFLite Micro.

Each example builds a one-op graph (random broadcasting shapes, ranks, a constant or a second model input,
scales, zero points, fused activation), runs our kernel on a batch and TFLM on the written model sample by
sample: int8 outputs must be byte-identical, float32 outputs equal to float32 rounding.
"""

from __future__ import annotations

import functools

import numpy as np
import oracle
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import run_both

from microforge.errors import ModelError, UnsupportedError
from microforge.graph.builder import GraphBuilder
from microforge.reference.registry import KERNELS

BATCH = 8
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ACTIVATIONS = ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]




assert_same = functools.partial(oracle.assert_same, rtol=1e-6, atol=1e-30)


def random_values(rng, shape, dtype, batch=BATCH):
    if dtype == np.int8:
        x = rng.integers(-128, 128, (batch,) + shape, dtype=np.int8)
        x[0] = rng.choice([-128, 127])  # a saturated sample reaches the extremes of every step
        return x
    return (rng.normal(0, 2, (batch,) + shape)).astype(np.float32)


@st.composite
def broadcast_case(draw):
    """An output shape and two input shapes that broadcast to it (ranks may differ; the second may be 0)."""
    out_rank = draw(st.integers(1, 5))
    out_shape = tuple(draw(st.lists(st.integers(1, 4), min_size=out_rank, max_size=out_rank)))
    shapes = []
    for lowest_rank in (1, 0):
        rank = draw(st.integers(lowest_rank, out_rank))
        tail = out_shape[out_rank - rank:]
        shapes.append(tuple(d if draw(st.booleans()) else 1 for d in tail))
    return shapes, tuple(np.broadcast_shapes(*shapes))  # drops the dims neither input reaches


def build(op_type, dtype, shapes, out_shape, constant_second, activation, rng, quant):
    """A graph with one `op_type` op; `quant` gives ((s1, z1), (s2, z2), (so, zo)) for int8."""
    constant_second = constant_second or shapes[1] == ()  # the oracle cannot feed rank-0 model inputs
    b = GraphBuilder()
    q = [dict(scale=s, zero_point=z) for s, z in quant] if dtype == np.int8 else [{}, {}, {}]
    x = b.input("x", shapes[0], dtype, **q[0])
    if constant_second:
        data = (rng.integers(-128, 128, shapes[1], dtype=np.int8) if dtype == np.int8
                else rng.normal(0, 2, shapes[1]).astype(np.float32))
        y = b.constant("c", data, **q[1])
    else:
        y = b.input("y", shapes[1], dtype, **q[1])
    out = b.activation("out", out_shape, dtype, **q[2])
    op = b.op(op_type, [x, y], [out], fused_activation_function=activation)
    b.output(out)
    feeds = [random_values(rng, shapes[0], dtype)]
    if not constant_second:
        feeds.append(random_values(rng, shapes[1], dtype))
    return b.build(), op, feeds


def log_uniform(rng, lo, hi):
    return float(np.float32(10 ** rng.uniform(np.log10(lo), np.log10(hi))))


def int8_quant(rng, op_type):
    s1, s2 = log_uniform(rng, 0.002, 0.5), log_uniform(rng, 0.002, 0.5)
    if op_type == "ADD":
        so = (s1 + s2) * rng.uniform(0.3, 2.0)  # the sum's range, sometimes clipped
    else:
        so = s1 * s2 * 128 * rng.uniform(0.2, 3.0)  # the product's range, sometimes clipped
    zps = rng.integers(-128, 128, 3)
    return ((s1, int(zps[0])), (s2, int(zps[1])), (float(np.float32(so)), int(zps[2])))


@SETTINGS
@given(case=broadcast_case(), op_type=st.sampled_from(["ADD", "MUL"]), constant_second=st.booleans(),
       activation=st.sampled_from(ACTIVATIONS), seed=st.integers(0, 2**32 - 1))
def test_int8_matches_tflm(case, op_type, constant_second, activation, seed):
    rng = np.random.default_rng(seed)
    shapes, out_shape = case
    graph, op, feeds = build(op_type, np.int8, shapes, out_shape, constant_second, activation, rng,
                             int8_quant(rng, op_type))
    assert_same(*run_both(graph, op, feeds))


@SETTINGS
@given(case=broadcast_case(), op_type=st.sampled_from(["ADD", "MUL"]), constant_second=st.booleans(),
       activation=st.sampled_from(ACTIVATIONS), seed=st.integers(0, 2**32 - 1))
def test_float32_matches_tflm(case, op_type, constant_second, activation, seed):
    rng = np.random.default_rng(seed)
    shapes, out_shape = case
    graph, op, feeds = build(op_type, np.float32, shapes, out_shape, constant_second, activation, rng, None)
    assert_same(*run_both(graph, op, feeds))


@pytest.mark.parametrize("op_type", ["ADD", "MUL"])
def test_equal_scales_and_extreme_zero_points(op_type):
    """Same input scales (multipliers exactly 1/2) and zero points at the ends of the int8 range."""
    rng = np.random.default_rng(7)
    quant = ((0.05, -128), (0.05, 127), (0.1 if op_type == "ADD" else 0.05 * 0.05 * 64, 0))
    for activation in ACTIVATIONS:
        graph, op, feeds = build(op_type, np.int8, [(1, 3, 4, 5), (1, 3, 4, 5)], (1, 3, 4, 5), False,
                                 activation, rng, quant)
        assert_same(*run_both(graph, op, feeds))


# ----------------------------------------------------------------------------------------------------------
# Malformed and unsupported ops fail with our errors, naming the op


def one_op(op_type, shapes, out_shape, dtypes=(np.int8, np.int8, np.int8), quant=True, **options):
    b = GraphBuilder()
    q = dict(scale=0.05, zero_point=0) if quant else {}
    x = b.input("x", shapes[0], dtypes[0], **q)
    y = b.input("y", shapes[1], dtypes[1], **q)
    out = b.activation("out", out_shape, dtypes[2], **q)
    op = b.op(op_type, [x, y], [out], **options)
    b.output(out)
    b.build()
    args = [np.zeros((2,) + s, d) for s, d in zip(shapes, dtypes)]
    return op, args


@pytest.mark.parametrize("op_type", ["ADD", "MUL"])
def test_shapes_that_do_not_broadcast(op_type):
    op, args = one_op(op_type, [(1, 3, 4), (1, 2, 4)], (1, 3, 4))
    with pytest.raises(ModelError, match=r"op 0 \(" + op_type + r"\).*'x'.*'y'"):
        KERNELS[op_type].fn(op, args)


@pytest.mark.parametrize("op_type", ["ADD", "MUL"])
def test_wrong_declared_output_shape(op_type):
    op, args = one_op(op_type, [(1, 3, 4), (4,)], (1, 3, 5))
    with pytest.raises(ModelError, match="'out'"):
        KERNELS[op_type].fn(op, args)


@pytest.mark.parametrize("op_type", ["ADD", "MUL"])
def test_int32_and_mixed_types_are_unsupported(op_type):
    op, args = one_op(op_type, [(1, 4), (1, 4)], (1, 4), dtypes=(np.int32, np.int32, np.int32))
    with pytest.raises(UnsupportedError, match=op_type):
        KERNELS[op_type].fn(op, args)
    op, args = one_op(op_type, [(1, 4), (1, 4)], (1, 4), dtypes=(np.int8, np.float32, np.int8))
    with pytest.raises(UnsupportedError, match="mixed"):
        KERNELS[op_type].fn(op, args)


def test_missing_input_and_quantization():
    op, args = one_op("ADD", [(1, 4), (1, 4)], (1, 4))
    op.inputs = op.inputs[:1]
    with pytest.raises(ModelError, match="expects 2 inputs"):
        KERNELS["ADD"].fn(op, args[:1])
    op, args = one_op("MUL", [(1, 4), (1, 4)], (1, 4), quant=False)
    with pytest.raises(UnsupportedError, match="per-tensor quantization"):
        KERNELS["MUL"].fn(op, args)


@pytest.mark.parametrize("dtype", [np.int8, np.float32])
def test_unsupported_fused_activation(dtype):
    op, args = one_op("MUL", [(1, 4), (1, 4)], (1, 4), dtypes=(dtype,) * 3, fused_activation_function="TANH")
    with pytest.raises(UnsupportedError, match=r"op 0 \(MUL\).*TANH"):
        KERNELS["MUL"].fn(op, args)


def test_add_output_scale_too_small_for_tflm():
    """TFLM aborts unless 2 * max input scale / (2^20 * output scale) < 1; we refuse the op instead."""
    op, args = one_op("ADD", [(1, 4), (1, 4)], (1, 4))
    op.outputs[0].quant.scale[:] = 1e-8
    with pytest.raises(UnsupportedError, match="output"):
        KERNELS["ADD"].fn(op, args)
