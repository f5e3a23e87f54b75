"""QUANTIZE, DEQUANTIZE, RESHAPE, SQUEEZE, EXPAND_DIMS and CONCATENATION reference kernels against TFLM.

Each example builds a one-op graph, runs our kernel on a batch and TFLM on the written model sample by
sample; int8 outputs must be byte-identical, float32 outputs equal.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import run_both, tflm_run

from microforge.errors import ModelError, UnsupportedError
from microforge.frontend.writer import write_tflite
from microforge.graph.builder import GraphBuilder
from microforge.reference.registry import KERNELS

BATCH = 8
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)




def assert_same(ours, theirs):
    """Data movement and (de)quantization are exact in both: compare bytes, for float32 too."""
    assert ours.tobytes() == theirs.astype(ours.dtype).tobytes(), \
        f"{np.count_nonzero(ours != theirs)} of {ours.size} values differ"


def values(rng, shape, dtype):
    if dtype == np.int8:
        return rng.integers(-128, 128, (BATCH,) + shape, dtype=np.int8)
    return rng.normal(0, 2, (BATCH,) + shape).astype(np.float32)


def quant(rng):
    return dict(scale=float(np.float32(10 ** rng.uniform(-3, 0))), zero_point=int(rng.integers(-128, 128)))


# ----------------------------------------------------------------------------------------------------------
# QUANTIZE / DEQUANTIZE


def unary(op_type, shape, in_dtype, out_dtype, in_q=None, out_q=None, **options):
    b = GraphBuilder()
    x = b.input("x", shape, in_dtype, **(in_q or {}))
    y = b.activation("y", shape, out_dtype, **(out_q or {}))
    op = b.op(op_type, [x], [y], **options)
    b.output(y)
    return b.build(), op


@SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**32 - 1))
def test_quantize_float_to_int8(shape, seed):
    rng = np.random.default_rng(seed)
    q = quant(rng)
    graph, op = unary("QUANTIZE", shape, np.float32, np.int8, out_q=q)
    x = (rng.normal(0, 1, (BATCH,) + shape) * q["scale"] * rng.uniform(10, 200)).astype(np.float32)
    # Exact halves (round away from zero, unlike numpy), values just below a half, and saturation.
    specials = np.array([0.5, -0.5, 1.5, -2.5, 0.49999997, -0.49999997, 1e6, -1e6, 0.0], np.float32)
    x.flat[:specials.size] = (specials * np.float32(q["scale"])).astype(np.float32)[: x.size]
    assert_same(*run_both(graph, op, [x]))


def test_quantize_rounds_like_std_round():
    """Halves go away from zero; 0.49999997f stays 0 (a float32 floor(x + 0.5) would give 1).

    (Values beyond the int32 range are left out: TFLM's float -> int32 cast is then undefined in C; x86
    gives INT32_MIN, so -128, where Arm saturates. Our kernel saturates: +1e10 -> 127.)
    """
    graph, op = unary("QUANTIZE", (1, 2), np.float32, np.int8, out_q=dict(scale=1.0, zero_point=0))
    x = np.array([0.49999997, -0.49999997, 0.5, -0.5, 2.5, -2.5, 126.5, -127.5,
                  127.5, -128.5, 2e9, -2e9, 1e6, -1e6, 0.0, -0.0], np.float32).reshape(BATCH, 1, 2)
    ours, theirs = run_both(graph, op, [x])
    assert_same(ours, theirs)
    assert ours.reshape(-1).tolist() == [0, 0, 1, -1, 3, -3, 127, -128, 127, -128, 127, -128, 127, -128, 0, 0]


@SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**32 - 1))
def test_quantize_int8_to_int8(shape, seed):
    rng = np.random.default_rng(seed)
    in_q = quant(rng)
    out_q = dict(scale=float(np.float32(in_q["scale"] * rng.uniform(0.2, 5))), zero_point=int(rng.integers(-128, 128)))
    if rng.random() < 0.2:
        out_q = dict(in_q)  # requantizing to the same parameters is the identity
    graph, op = unary("QUANTIZE", shape, np.int8, np.int8, in_q, out_q)
    assert_same(*run_both(graph, op, [values(rng, shape, np.int8)]))


@SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**32 - 1))
def test_dequantize(shape, seed):
    rng = np.random.default_rng(seed)
    graph, op = unary("DEQUANTIZE", shape, np.int8, np.float32, in_q=quant(rng))
    assert_same(*run_both(graph, op, [values(rng, shape, np.int8)]))


def test_quantize_unsupported_types():
    graph, op = unary("QUANTIZE", (1, 4), np.float32, np.int32, out_q=dict(scale=0.1, zero_point=0))
    with pytest.raises(UnsupportedError, match=r"op 0 \(QUANTIZE\)"):
        KERNELS["QUANTIZE"].fn(op, [np.zeros((2, 1, 4), np.float32)])
    graph, op = unary("DEQUANTIZE", (1, 4), np.int32, np.float32, in_q=dict(scale=0.1, zero_point=0))
    with pytest.raises(UnsupportedError, match=r"op 0 \(DEQUANTIZE\)"):
        KERNELS["DEQUANTIZE"].fn(op, [np.zeros((2, 1, 4), np.int32)])
    graph, op = unary("QUANTIZE", (1, 4), np.float32, np.int8)  # output without quantization parameters
    with pytest.raises(UnsupportedError, match="'y'"):
        KERNELS["QUANTIZE"].fn(op, [np.zeros((2, 1, 4), np.float32)])


# ----------------------------------------------------------------------------------------------------------
# RESHAPE / SQUEEZE / EXPAND_DIMS


@st.composite
def reshape_case(draw):
    """An input shape and an output shape with as many elements (a permutation of factors)."""
    factors = draw(st.lists(st.sampled_from([1, 2, 3, 5]), min_size=1, max_size=5))
    cut = sorted(draw(st.lists(st.integers(0, len(factors)), min_size=1, max_size=3)))
    out_factors = draw(st.permutations(factors))
    out_cut = sorted(draw(st.lists(st.integers(0, len(factors)), min_size=1, max_size=4)))

    def group(fs, cuts):
        edges = [0] + cuts + [len(fs)]
        return tuple(int(np.prod(fs[a:b])) for a, b in zip(edges, edges[1:]))

    return group(factors, cut), group(out_factors, out_cut)


@SETTINGS
@given(case=reshape_case(), how=st.sampled_from(["option", "input", "infer"]),
       dtype=st.sampled_from([np.int8, np.float32]), seed=st.integers(0, 2**32 - 1))
def test_reshape(case, how, dtype, seed):
    rng = np.random.default_rng(seed)
    in_shape, out_shape = case
    q = quant(rng) if dtype == np.int8 else {}
    requested = list(out_shape)
    if how == "infer":
        requested[int(rng.integers(len(requested)))] = -1
    b = GraphBuilder()
    x = b.input("x", in_shape, dtype, **q)
    y = b.activation("y", out_shape, dtype, **q)
    if how == "option":
        op = b.op("RESHAPE", [x], [y], new_shape=requested)
    else:
        op = b.op("RESHAPE", [x, b.constant("shape", np.array(requested, np.int32))], [y])
    b.output(y)
    assert_same(*run_both(b.build(), op, [values(rng, in_shape, dtype)]))


def test_reshape_errors():
    graph, op = unary("RESHAPE", (1, 6), np.float32, np.float32, new_shape=[4, -1])
    op.outputs[0].shape = (4, 2)
    with pytest.raises(ModelError, match=r"op 0 \(RESHAPE\): cannot reshape 'x'"):
        KERNELS["RESHAPE"].fn(op, [np.zeros((2, 1, 6), np.float32)])
    op.options["new_shape"] = [2, 2]
    with pytest.raises(ModelError, match="6 elements"):
        KERNELS["RESHAPE"].fn(op, [np.zeros((2, 1, 6), np.float32)])
    op.options["new_shape"] = [-1, -1]
    with pytest.raises(ModelError, match="invalid"):
        KERNELS["RESHAPE"].fn(op, [np.zeros((2, 1, 6), np.float32)])
    op.options["new_shape"] = [3, 2]  # valid, but not what the output declares
    with pytest.raises(ModelError, match="'y' is declared"):
        KERNELS["RESHAPE"].fn(op, [np.zeros((2, 1, 6), np.float32)])


@SETTINGS
@given(in_shape=st.lists(st.integers(1, 3), min_size=1, max_size=5).map(tuple), explicit=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_squeeze(in_shape, explicit, seed):
    rng = np.random.default_rng(seed)
    ones = [d for d, n in enumerate(in_shape) if n == 1]
    if explicit and ones:
        dims = [d - len(in_shape) if rng.random() < 0.5 else d for d in ones if rng.random() < 0.6]
    else:
        dims = []
    drop = {d % len(in_shape) for d in dims} if dims else set(ones)
    q = quant(rng)
    b = GraphBuilder()
    x = b.input("x", in_shape, np.int8, **q)
    y = b.activation("y", tuple(n for d, n in enumerate(in_shape) if d not in drop), np.int8, **q)
    op = b.op("SQUEEZE", [x], [y], squeeze_dims=dims)
    b.output(y)
    assert_same(*run_both(b.build(), op, [values(rng, in_shape, np.int8)]))


@SETTINGS
@given(in_shape=shapes, data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_expand_dims(in_shape, data, seed):
    rng = np.random.default_rng(seed)
    axis = data.draw(st.integers(-len(in_shape) - 1, len(in_shape)))
    position = axis % (len(in_shape) + 1)
    b = GraphBuilder()
    x = b.input("x", in_shape, np.float32)
    y = b.activation("y", in_shape[:position] + (1,) + in_shape[position:], np.float32)
    op = b.op("EXPAND_DIMS", [x, b.constant("axis", np.array([axis], np.int32))], [y])
    b.output(y)
    assert_same(*run_both(b.build(), op, [values(rng, in_shape, np.float32)]))


def test_squeeze_and_expand_dims_errors():
    graph, op = unary("SQUEEZE", (1, 4, 1), np.float32, np.float32, squeeze_dims=[1])
    with pytest.raises(ModelError, match=r"op 0 \(SQUEEZE\): cannot squeeze .*'x'"):
        KERNELS["SQUEEZE"].fn(op, [np.zeros((2, 1, 4, 1), np.float32)])
    op.options["squeeze_dims"] = [3]
    with pytest.raises(ModelError, match="axis 3 is out of range"):
        KERNELS["SQUEEZE"].fn(op, [np.zeros((2, 1, 4, 1), np.float32)])
    b = GraphBuilder()
    x = b.input("x", (1, 4), np.float32)
    y = b.activation("y", (1, 4, 1), np.float32)
    op = b.op("EXPAND_DIMS", [x, b.constant("axis", np.array([3], np.int32))], [y])
    b.build()
    with pytest.raises(ModelError, match="axis 3 is out of range"):
        KERNELS["EXPAND_DIMS"].fn(op, [np.zeros((2, 1, 4), np.float32), np.array([[3]], np.int32)])


# ----------------------------------------------------------------------------------------------------------
# CONCATENATION


@SETTINGS
@given(base=shapes, data=st.data(), dtype=st.sampled_from([np.int8, np.float32]), seed=st.integers(0, 2**32 - 1))
def test_concatenation(base, data, dtype, seed):
    rng = np.random.default_rng(seed)
    rank = len(base)
    axis = data.draw(st.integers(-rank, rank - 1))
    count = data.draw(st.integers(1, 4))
    kinds = data.draw(st.lists(st.booleans(), min_size=count, max_size=count))  # True: a constant
    kinds[0] = False  # at least one model input
    q = quant(rng) if dtype == np.int8 else {}
    b = GraphBuilder()
    inputs, feeds = [], []
    for i, constant in enumerate(kinds):
        in_shape = list(base)
        in_shape[axis] = data.draw(st.integers(1, 4))
        in_shape = tuple(in_shape)
        if constant:
            inputs.append(b.constant(f"c{i}", values(rng, in_shape, dtype)[0], **q))
        else:
            inputs.append(b.input(f"x{i}", in_shape, dtype, **q))
            feeds.append(values(rng, in_shape, dtype))
    out_shape = list(base)
    out_shape[axis] = sum(t.shape[axis] for t in inputs)
    y = b.activation("y", tuple(out_shape), dtype, **q)
    op = b.op("CONCATENATION", inputs, [y], axis=axis)
    b.output(y)
    assert_same(*run_both(b.build(), op, feeds))


def concat_op(shapes_, out_shape, quants=None, **options):
    b = GraphBuilder()
    quants = quants or [dict(scale=0.1, zero_point=0)] * (len(shapes_) + 1)
    xs = [b.input(f"x{i}", s, np.int8, **q) for i, (s, q) in enumerate(zip(shapes_, quants))]
    y = b.activation("y", out_shape, np.int8, **quants[-1])
    op = b.op("CONCATENATION", xs, [y], **options)
    b.output(y)
    return b.build(), op, [np.zeros((2,) + s, np.int8) for s in shapes_]


def test_concatenation_errors():
    graph, op, args = concat_op([(1, 2, 3), (1, 3, 3)], (1, 5, 3), axis=2)
    with pytest.raises(ModelError, match=r"op 0 \(CONCATENATION\): cannot concatenate 'x1'"):
        KERNELS["CONCATENATION"].fn(op, args)
    graph, op, args = concat_op([(1, 2, 3), (1, 3, 3)], (1, 5, 3), axis=3)
    with pytest.raises(ModelError, match="axis 3 is out of range"):
        KERNELS["CONCATENATION"].fn(op, args)
    graph, op, args = concat_op([(1, 2, 3), (1, 3, 3)], (1, 6, 3), axis=1)
    with pytest.raises(ModelError, match="'y' is declared"):
        KERNELS["CONCATENATION"].fn(op, args)
    graph, op, args = concat_op([(1, 2), (1, 3)], (1, 5), axis=1, fused_activation_function="RELU")
    with pytest.raises(UnsupportedError, match="RELU"):
        KERNELS["CONCATENATION"].fn(op, args)


def test_concatenation_needs_equal_int8_quantization_like_tflm():
    quants = [dict(scale=0.1, zero_point=0), dict(scale=0.2, zero_point=0), dict(scale=0.1, zero_point=0)]
    graph, op, args = concat_op([(1, 2), (1, 3)], (1, 5), quants, axis=1)
    with pytest.raises(UnsupportedError, match="'x1'"):
        KERNELS["CONCATENATION"].fn(op, args)
    with pytest.raises(RuntimeError):  # TFLM refuses the model in Prepare
        tflm_run(write_tflite(graph), [a[:1] for a in args])
