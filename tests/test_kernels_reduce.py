"""MEAN reference kernel against TFLite Micro.

Each example builds a one-op graph with a random input shape (rank 1-5), a random set of axes (negative
and repeated entries too), keep_dims, and int8 quantization equal to or different from the output's; our
kernel runs on a batch, TFLM on the written model sample by sample. int8 outputs must be byte-identical,
float32 outputs agree to float32 rounding.

TFLM's reduce kernels keep the resolved axes in a 2-entry stack array, so TFLM itself is only compared
on at most two distinct axes; more axes are checked against the equivalent single-axis MEAN.
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




def run_ours(op, feeds):
    remaining = iter(feeds)
    args = [None if t is None else t.data[None] if t.is_constant else next(remaining) for t in op.inputs]
    ours = KERNELS[op.type].fn(op, args)
    assert ours.shape == (len(feeds[0]),) + op.outputs[0].shape
    assert ours.dtype == op.outputs[0].dtype
    return ours


assert_same = functools.partial(oracle.assert_same, rtol=1e-6, atol=1e-7)


def mean_graph(shape, axes, keep_dims, dtype, in_quant=None, out_quant=None):
    b = GraphBuilder()
    x = b.input("x", shape, dtype, **(in_quant or {}))
    axis = b.constant("axis", np.array(axes, dtype=np.int32))
    reduced = {a % len(shape) for a in axes}
    out_shape = tuple(1 if d in reduced else n for d, n in enumerate(shape) if keep_dims or d not in reduced)
    y = b.activation("y", out_shape, dtype, **(out_quant or {}))
    op = b.op("MEAN", [x, axis], [y], keep_dims=keep_dims)
    b.output(y)
    return b.build(), op


@st.composite
def mean_case(draw, max_distinct_axes=2):
    rank = draw(st.integers(1, 5))
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=rank, max_size=rank)))
    distinct = draw(st.lists(st.integers(0, rank - 1), min_size=1, max_size=min(rank, max_distinct_axes),
                             unique=True))
    # Spell each axis positive or negative, sometimes twice (TFLM ignores repeats).
    axes = [a - rank if draw(st.booleans()) else a for a in distinct]
    if draw(st.booleans()):
        axes.append(axes[0])
    return shape, axes, draw(st.booleans())


def int8_batch(rng, shape):
    x = rng.integers(-128, 128, (BATCH,) + shape, dtype=np.int8)
    x[0] = rng.choice([-128, 127])  # sums at the extremes
    return x


@SETTINGS
@given(case=mean_case(), same_quantization=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_int8_matches_tflm(case, same_quantization, seed):
    rng = np.random.default_rng(seed)
    shape, axes, keep_dims = case
    in_quant = dict(scale=float(np.float32(rng.uniform(0.005, 0.2))), zero_point=int(rng.integers(-128, 128)))
    if same_quantization:
        out_quant = in_quant
    else:  # a mean's range is narrower than its input's: converters pick smaller or similar scales
        out_quant = dict(scale=float(np.float32(in_quant["scale"] * rng.uniform(0.1, 1.5))),
                         zero_point=int(rng.integers(-128, 128)))
    graph, op = mean_graph(shape, axes, keep_dims, np.int8, in_quant, out_quant)
    assert_same(*run_both(graph, op, [int8_batch(rng, shape)]))


@SETTINGS
@given(case=mean_case(), seed=st.integers(0, 2**32 - 1))
def test_float32_matches_tflm(case, seed):
    rng = np.random.default_rng(seed)
    shape, axes, keep_dims = case
    graph, op = mean_graph(shape, axes, keep_dims, np.float32)
    assert_same(*run_both(graph, op, [rng.normal(0, 3, (BATCH,) + shape).astype(np.float32)]))


@pytest.mark.parametrize("dtype", [np.int8, np.float32])
@pytest.mark.parametrize("axes", [[1, 2], [2, 1], [-3, -2]])
def test_global_average_pool_case(dtype, axes):
    """The common MEAN of 4-D NHWC over H and W (TFLM has a float special case for it)."""
    rng = np.random.default_rng(5)
    shape = (1, 7, 9, 16)
    q = dict(scale=0.04, zero_point=-7) if dtype == np.int8 else {}
    out_q = dict(scale=0.02, zero_point=3) if dtype == np.int8 else {}
    for keep_dims in (True, False):
        graph, op = mean_graph(shape, axes, keep_dims, dtype, q, out_q)
        x = int8_batch(rng, shape) if dtype == np.int8 else rng.normal(0, 3, (BATCH,) + shape).astype(np.float32)
        assert_same(*run_both(graph, op, [x]))


@SETTINGS
@given(rank=st.integers(3, 5), keep_dims=st.booleans(), same_quantization=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_many_axes_equal_the_flattened_mean(rank, keep_dims, same_quantization, seed):
    """MEAN over the trailing k >= 3 axes == MEAN over the last axis of the input with those merged:
    the same elements summed in the same order and divided by the same count."""
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(1, 5, rank))
    k = int(rng.integers(3, rank + 1))
    merged = shape[:rank - k] + (int(np.prod(shape[rank - k:])),)
    for dtype in (np.int8, np.float32):
        q = dict(scale=0.05, zero_point=-3) if dtype == np.int8 else {}
        out_q = q if same_quantization or dtype == np.float32 else dict(scale=0.03, zero_point=10)
        _, many = mean_graph(shape, list(range(rank - k, rank)), keep_dims, dtype, q, out_q)
        _, one = mean_graph(merged, [-1], keep_dims, dtype, q, out_q)
        x = int8_batch(rng, shape) if dtype == np.int8 else rng.normal(0, 3, (BATCH,) + shape).astype(np.float32)
        ours = run_ours(many, [x])
        reference = run_ours(one, [x.reshape((BATCH,) + merged)])
        np.testing.assert_array_equal(ours.reshape(reference.shape[:1] + (-1,)),
                                      reference.reshape(reference.shape[:1] + (-1,)))


# ----------------------------------------------------------------------------------------------------------
# Malformed and unsupported ops


def test_bad_axis_and_output_shape():
    graph, op = mean_graph((1, 4, 4, 3), [1, 2], False, np.float32)
    x = np.zeros((2, 1, 4, 4, 3), np.float32)
    op.inputs[1].data = np.array([1, 4], np.int32)
    with pytest.raises(ModelError, match=r"op 0 \(MEAN\): axis 4 .*'x'"):
        KERNELS["MEAN"].fn(op, [x, op.inputs[1].data[None]])
    op.inputs[1].data = np.array([1, 2], np.int32)
    op.options["keep_dims"] = True  # the output was declared without the reduced dimensions
    with pytest.raises(ModelError, match="'y'"):
        KERNELS["MEAN"].fn(op, [x, op.inputs[1].data[None]])


def test_axis_must_be_a_constant_and_types_supported():
    b = GraphBuilder()
    x = b.input("x", (1, 4), np.float32)
    axis = b.input("axis", (1,), np.int32)
    y = b.activation("y", (1,), np.float32)
    op = b.op("MEAN", [x, axis], [y])
    b.build()
    with pytest.raises(UnsupportedError, match="constant"):
        KERNELS["MEAN"].fn(op, [np.zeros((2, 1, 4), np.float32), np.ones((2, 1), np.int32)])
    graph, op = mean_graph((1, 4), [1], False, np.int32, dict(scale=0.1, zero_point=0), dict(scale=0.1, zero_point=0))
    with pytest.raises(UnsupportedError, match="int32"):
        KERNELS["MEAN"].fn(op, [np.zeros((2, 1, 4), np.int32), op.inputs[1].data[None]])
    op.inputs = op.inputs[:1]
    with pytest.raises(ModelError, match="expects 2 inputs"):
        KERNELS["MEAN"].fn(op, [np.zeros((2, 1, 4), np.int32)])
