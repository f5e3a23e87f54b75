"""TRANSPOSE, SLICE, STRIDED_SLICE, SPLIT, SPLIT_V, PACK, UNPACK, GATHER, ARG_MAX, ARG_MIN, ZEROS_LIKE, SHAPE
and FILL through every layer.

Each case is a one-op model built with GraphBuilder and written with write_tflite: random shapes, ranks up
to 5, permutations, begins, ends, strides and masks, axes (negative too), split sizes with a -1, constant and
run-time GATHER indices with batch_dims, int8 (and int16, int32 where TFLM moves them) and float32. Our
reference must equal TFLite Micro byte for byte on every output (SPLIT, SPLIT_V and UNPACK have several);
the generated C on the host must equal the reference byte for byte, and one model of every op runs on
qemu-m4. The planner's TFLM arena matches what TFLM reports, the reader reads back what the writer wrote,
and malformed or unsupported ops fail with our errors, naming the op and the tensor.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import tflm_run
from test_codegen_ops import Case, check_cases, check_merged_on_qemu
from tflm_arena import tflm_reported_head_bytes

import microforge
from microforge.codegen import generate
from microforge.errors import ModelError, UnsupportedError
from microforge.frontend.reader import read_tflite
from microforge.frontend.writer import write_tflite
from microforge.graph.builder import GraphBuilder
from microforge.graph.ir import Graph
from microforge.plan import plan
from microforge.plan.tflm import tflm_arena_bytes
from microforge.reference.movement import slice_indices, slice_output_shape

BATCH = 5
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MOVING = ["TRANSPOSE", "SLICE", "STRIDED_SLICE", "SPLIT", "SPLIT_V", "PACK", "UNPACK", "GATHER"]
OPS = MOVING + ["ARG_MAX", "ARG_MIN", "ZEROS_LIKE", "SHAPE", "FILL"]
DTYPES = {
    **{op_type: [np.int8, np.int16, np.int32, np.float32] for op_type in MOVING},
    "TRANSPOSE": [np.int8, np.int16, np.float32], "GATHER": [np.int8, np.float32],
    "ARG_MAX": [np.int8, np.float32], "ARG_MIN": [np.int8, np.float32],
    "ZEROS_LIKE": [np.int8, np.int32, np.float32], "SHAPE": [np.int8, np.int16, np.int32, np.float32],
    "FILL": [np.int8, np.int32, np.float32],
}
CASES = [(op_type, np.dtype(dtype).name) for op_type in OPS for dtype in DTYPES[op_type]]
seeds = st.integers(0, 2**32 - 1)


def random_shape(rng, low_rank=1, high_rank=5, high=4):
    return tuple(int(d) for d in rng.integers(1, high + 1, int(rng.integers(low_rank, high_rank + 1))))


def quant_for(rng, dtype):
    """One quantization for input and output (these ops never rescale)."""
    if dtype == np.int8:
        return dict(scale=float(np.float32(rng.uniform(0.01, 0.2))), zero_point=int(rng.integers(-128, 128)))
    if dtype == np.int16:
        return dict(scale=float(np.float32(rng.uniform(1e-4, 1e-2))), zero_point=0)
    return {}


def values(rng, shape, dtype, batch=BATCH):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.normal(0, 3, (batch,) + tuple(shape)).astype(dtype)
    if dtype == np.int8:  # few distinct values: ARG_MAX/ARG_MIN see ties
        return (rng.integers(-128, 128, (batch,) + tuple(shape)) // rng.choice([1, 64])).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, (batch,) + tuple(shape), endpoint=True, dtype=dtype)


# ----------------------------------------------------------------------------------------------------------
# One-op models: (graph, feeds)


def transpose_case(rng, dtype):
    shape = random_shape(rng)
    perm = rng.permutation(len(shape))
    q = quant_for(rng, dtype)
    b = GraphBuilder()
    x = b.input("x", shape, dtype, **q)
    y = b.activation("y", tuple(shape[p] for p in perm), dtype, **q)
    b.op("TRANSPOSE", [x, b.constant("perm", perm.astype(np.int32))], [y])
    b.output(y)
    return b.build(), [values(rng, shape, dtype)]


def slice_like_case(rng, dtype, op_type, options=None):
    """SLICE (up to 5-D) or STRIDED_SLICE (up to 4-D, as TFLM) with random parameters whose result is not
    empty."""
    shape = random_shape(rng, high_rank=5 if op_type == "SLICE" else 4)
    rank = len(shape)
    q = quant_for(rng, dtype)
    while True:
        b = GraphBuilder()
        x = b.input("x", shape, dtype, **q)
        if op_type == "SLICE":
            begin = [int(rng.integers(0, n)) for n in shape]
            size = [-1 if rng.random() < 0.3 else int(rng.integers(1, n - s + 1)) for n, s in zip(shape, begin)]
            index_type = np.int32 if rng.random() < 0.7 else np.int64
            params = [b.constant("begin", np.array(begin, index_type)), b.constant("size", np.array(size, index_type))]
            opts = {}
        else:
            strides = [int(rng.choice([-2, -1, 1, 1, 2, 3])) for _ in shape]
            begin = [int(rng.integers(-n - 1, n + 2)) for n in shape]
            end = [int(rng.integers(-n - 1, n + 2)) for n in shape]
            opts = options if options is not None else dict(
                begin_mask=int(rng.integers(0, 2**rank)), end_mask=int(rng.integers(0, 2**rank)),
                shrink_axis_mask=int(rng.integers(0, 2**rank)) if rng.random() < 0.4 else 0)
            for d, n in enumerate(shape):  # a shrunk dimension needs an index inside it
                if opts.get("shrink_axis_mask", 0) >> d & 1:  # with a positive stride (TFLM's limit)
                    strides[d] = abs(strides[d])
                    begin[d] = int(rng.integers(-n, n))
                    end[d] = begin[d] + 1
            params = [b.constant(name, np.array(v, np.int32)) for name, v in
                      (("begin", begin), ("end", end), ("strides", strides))]
        y = b.activation("y", (1,), dtype, **q)
        op = b.op(op_type, [x] + params, [y], **opts)
        indices = slice_indices(op)
        if all(len(ix) for ix in indices):
            y.shape = slice_output_shape(op, indices)
            b.output(y)
            return b.build(), [values(rng, shape, dtype)]


def split_case(rng, dtype, op_type):
    shape = random_shape(rng)
    axis = int(rng.integers(0, len(shape)))
    n = shape[axis]
    q = quant_for(rng, dtype)
    b = GraphBuilder()
    x = b.input("x", shape, dtype, **q)
    if op_type == "SPLIT":
        count = int(rng.choice([c for c in range(1, n + 1) if n % c == 0]))
        sizes = [n // count] * count
    else:
        cuts = sorted(rng.choice(np.arange(1, n), size=int(rng.integers(0, n)), replace=False).tolist()) if n > 1 \
            else []
        sizes = np.diff([0] + cuts + [n]).tolist()
        count = len(sizes)
    outs = []
    for k, size in enumerate(sizes):
        piece = list(shape)
        piece[axis] = size
        outs.append(b.activation(f"y{k}", piece, dtype, **q))
    written_axis = axis - len(shape) if rng.random() < 0.3 else axis
    axis_t = b.constant("axis", np.array(written_axis, np.int32))
    if op_type == "SPLIT":
        b.op("SPLIT", [axis_t, x], outs, num_splits=count)
    else:
        given_sizes = list(sizes)
        if rng.random() < 0.5:
            given_sizes[int(rng.integers(0, count))] = -1
        b.op("SPLIT_V", [x, b.constant("size_splits", np.array(given_sizes, np.int32)), axis_t], outs,
             num_splits=count)
    for t in outs:
        b.output(t)
    return b.build(), [values(rng, shape, dtype)]


def pack_case(rng, dtype):
    shape = random_shape(rng, high_rank=4)
    count = int(rng.integers(1, 4))
    axis = int(rng.integers(-len(shape) - 1, len(shape) + 1))
    q = quant_for(rng, dtype)
    b = GraphBuilder()
    inputs = [b.input(f"x{k}", shape, dtype, **q) for k in range(count)]
    out_shape = list(shape)
    out_shape.insert(axis % (len(shape) + 1), count)
    y = b.activation("y", out_shape, dtype, **q)
    b.op("PACK", inputs, [y], values_count=count, axis=axis)
    b.output(y)
    return b.build(), [values(rng, shape, dtype) for _ in range(count)]


def unpack_case(rng, dtype):
    shape = random_shape(rng, high_rank=5)
    axis = int(rng.integers(-len(shape), len(shape)))
    q = quant_for(rng, dtype)
    b = GraphBuilder()
    x = b.input("x", shape, dtype, **q)
    a = axis % len(shape)
    outs = [b.activation(f"y{k}", shape[:a] + shape[a + 1:], dtype, **q) for k in range(shape[a])]
    b.op("UNPACK", [x], outs, num=shape[a], axis=axis)
    for t in outs:
        b.output(t)
    return b.build(), [values(rng, shape, dtype)]


def gather_case(rng, dtype, constant=None):
    shape = random_shape(rng, high_rank=4)
    axis = int(rng.integers(0, len(shape)))
    batch_dims = int(rng.integers(0, axis + 1))
    index_shape = shape[:batch_dims] + random_shape(rng, 0, 2, 3)
    constant = rng.random() < 0.5 if constant is None else constant
    constant = constant or index_shape == ()  # the oracle cannot feed rank-0 model inputs
    q = quant_for(rng, dtype)
    b = GraphBuilder()
    x = b.input("x", shape, dtype, **q)
    feeds = [values(rng, shape, dtype)]
    if constant:
        indices = b.constant("indices", rng.integers(0, shape[axis], index_shape).astype(np.int32))
    else:
        indices = b.input("indices", index_shape, np.int32)
        feeds.append(rng.integers(0, shape[axis], (BATCH,) + index_shape).astype(np.int32))
    written_axis = axis - len(shape) if rng.random() < 0.3 else axis
    y = b.activation("y", shape[:axis] + index_shape[batch_dims:] + shape[axis + 1:], dtype, **q)
    b.op("GATHER", [x, indices], [y], axis=written_axis, batch_dims=batch_dims)
    b.output(y)
    return b.build(), feeds


def arg_case(rng, dtype, op_type):
    shape = random_shape(rng, high_rank=4)
    axis = int(rng.integers(-len(shape), len(shape)))
    b = GraphBuilder()
    x = b.input("x", shape, dtype, **quant_for(rng, dtype))
    a = axis % len(shape)
    y = b.activation("y", shape[:a] + shape[a + 1:], np.int32)
    b.op(op_type, [x, b.constant("axis", np.array([axis], np.int32))], [y])
    b.output(y)
    return b.build(), [values(rng, shape, dtype)]


def unary_shape_case(rng, dtype, op_type):
    """ZEROS_LIKE (output like the input) or SHAPE (int32 [rank])."""
    shape = random_shape(rng)
    q = quant_for(rng, dtype)
    b = GraphBuilder()
    x = b.input("x", shape, dtype, **q)
    if op_type == "ZEROS_LIKE":
        y = b.activation("y", shape, dtype, **q)
    else:
        y = b.activation("y", (len(shape),), np.int32)
    b.op(op_type, [x], [y])
    b.output(y)
    return b.build(), [values(rng, shape, dtype)]


def fill_case(rng, dtype):
    """FILL of constant dims and value; the model's input feeds a PACK beside it (a model needs an input)."""
    dims = random_shape(rng)
    q = quant_for(rng, dtype)
    value = values(rng, (), dtype, batch=1)[0]
    b = GraphBuilder()
    x = b.input("x", (2, 3), dtype, **q)
    y = b.activation("y", dims, dtype, **q)
    b.op("FILL", [b.constant("dims", np.array(dims, np.int32)), b.constant("value", np.array(value, dtype), **q)], [y])
    passed = b.activation("x_packed", (1, 2, 3), dtype, **q)
    b.op("PACK", [x], [passed], values_count=1, axis=0)
    b.output(y)
    b.output(passed)
    return b.build(), [values(rng, (2, 3), dtype)]


def make_case(op_type, dtype, rng):
    dtype = np.dtype(dtype)
    if op_type == "TRANSPOSE":
        return transpose_case(rng, dtype)
    if op_type in ("SLICE", "STRIDED_SLICE"):
        return slice_like_case(rng, dtype, op_type)
    if op_type in ("SPLIT", "SPLIT_V"):
        return split_case(rng, dtype, op_type)
    if op_type == "PACK":
        return pack_case(rng, dtype)
    if op_type == "UNPACK":
        return unpack_case(rng, dtype)
    if op_type == "GATHER":
        return gather_case(rng, dtype)
    if op_type in ("ARG_MAX", "ARG_MIN"):
        return arg_case(rng, dtype, op_type)
    if op_type in ("ZEROS_LIKE", "SHAPE"):
        return unary_shape_case(rng, dtype, op_type)
    return fill_case(rng, dtype)


def check_tflm(graph, feeds):
    """Every output of our reference equals TFLM's, byte for byte (float32 too: nothing is computed)."""
    ours = microforge.run(graph, *feeds)
    ours = ours if isinstance(ours, list) else [ours]
    theirs = tflm_run(write_tflite(graph), list(feeds))
    assert len(ours) == len(theirs) == len(graph.outputs)
    for t, want, have in zip(graph.outputs, theirs, ours):
        assert have.dtype == want.dtype == t.dtype, t.name
        assert np.array_equal(have.reshape(want.shape).view(np.uint8), want.view(np.uint8)), \
            f"{t.name}: {graph.ops[0]} {graph.ops[0].options}"


# ----------------------------------------------------------------------------------------------------------
# Reference against TFLite Micro


@SETTINGS
@given(case=st.sampled_from(CASES), seed=seeds)
def test_reference_matches_tflm(case, seed):
    op_type, dtype = case
    check_tflm(*make_case(op_type, dtype, np.random.default_rng(seed)))


@pytest.mark.parametrize("op_type,dtype", CASES)
def test_every_op_and_dtype_matches_tflm(op_type, dtype):
    rng = np.random.default_rng(len(op_type) * 7 + len(dtype))
    for _ in range(3):
        check_tflm(*make_case(op_type, dtype, rng))


@SETTINGS
@given(seed=seeds, masks=st.tuples(st.integers(0, 15), st.integers(0, 15), st.integers(0, 15)))
def test_strided_slice_masks_match_tflm(seed, masks):
    rng = np.random.default_rng(seed)
    options = dict(begin_mask=masks[0], end_mask=masks[1], shrink_axis_mask=masks[2])
    check_tflm(*slice_like_case(rng, np.int8, "STRIDED_SLICE", options))


def test_gather_from_a_constant_table():
    """An embedding lookup: constant params, run-time indices (the model's only input)."""
    rng = np.random.default_rng(12)
    for dtype in (np.int8, np.float32):
        q = quant_for(rng, dtype)
        b = GraphBuilder()
        table = b.constant("table", values(rng, (10, 4), dtype, batch=1)[0], **q)
        indices = b.input("indices", (1, 7), np.int32)
        out = b.activation("y", (1, 7, 4), dtype, **q)
        b.op("GATHER", [table, indices], [out], axis=0)
        b.output(out)
        graph = b.build()
        feeds = [rng.integers(0, 10, (BATCH, 1, 7)).astype(np.int32)]
        check_tflm(graph, feeds)
        check_cases([Case(graph, feeds)])


@pytest.mark.parametrize("constant", [True, False], ids=["constant", "runtime"])
def test_gather_indices_match_tflm(constant):
    rng = np.random.default_rng(11)
    for dtype in (np.int8, np.float32):
        for _ in range(8):
            check_tflm(*gather_case(rng, dtype, constant=constant))


# ----------------------------------------------------------------------------------------------------------
# Generated C against the reference: host, sanitizers, qemu-m4


def host_cases(seed, per_case=2) -> list[Case]:
    rng = np.random.default_rng(seed)
    return [Case(*make_case(op_type, dtype, rng)) for op_type, dtype in CASES for _ in range(per_case)]


def test_generated_c_matches_reference_on_host():
    check_cases(host_cases(seed=1, per_case=3))


def test_generated_c_under_sanitizers():
    check_cases(host_cases(seed=2, per_case=1), sanitize=True)


def test_gather_out_of_range_runtime_indices():
    """TFLM fails the inference on a run-time index outside the dimension; the reference and the C select
    real 0.0 there (the zero point for int8, 0.0 for float32) and agree with TFLM on the valid indices."""
    for dtype, zero in ((np.int8, -7), (np.float32, 0.0)):
        b = GraphBuilder()
        q = dict(scale=0.1, zero_point=zero) if dtype == np.int8 else {}
        params = b.input("x", (4, 3), dtype, **q)
        indices = b.input("indices", (6,), np.int32)
        out = b.activation("y", (6, 3), dtype, **q)
        b.op("GATHER", [params, indices], [out], axis=0)
        b.output(out)
        graph = b.build()
        x = values(np.random.default_rng(3), (4, 3), dtype, batch=2)
        bad = np.array([[0, -1, 3, 4, 2**31 - 1, 1], [-(2**31), 2, 2, 5, 0, 3]], np.int32)
        with pytest.raises(RuntimeError):
            tflm_run(write_tflite(graph), [x[:1], bad[:1]])
        ours = microforge.run(graph, x, bad)
        valid = (bad >= 0) & (bad < 4)
        expected = np.where(valid[..., None], x[np.arange(2)[:, None], np.where(valid, bad, 0)], np.array(zero, dtype))
        assert np.array_equal(ours.view(np.uint8), expected.view(np.uint8))
        fine = np.where(valid, bad, 1).astype(np.int32)
        check_tflm(graph, [x, fine])
        check_cases([Case(graph, [x, bad])], sanitize=True)


def test_every_op_on_qemu_m4():
    """One model of every op and dtype in one firmware, byte for byte."""
    cases = host_cases(seed=4, per_case=1)
    assert all(case.exact for case in cases)
    assert check_merged_on_qemu(cases)["bit_exact"]


# ----------------------------------------------------------------------------------------------------------
# Planner, reader


@pytest.mark.parametrize("op_type", OPS)
def test_tflm_arena_plan_matches_tflm(op_type):
    """None of these kernels asks TFLM for scratch: our reproduction of TFLM's plan is its head, exactly;
    our own plans (copying, several outputs live together) are never larger, and run correctly."""
    rng = np.random.default_rng(5)
    for dtype in DTYPES[op_type][:2]:
        graph, _ = make_case(op_type, dtype, rng)
        tflm = tflm_reported_head_bytes(write_tflite(graph))
        assert tflm_arena_bytes(graph) == tflm
        ours = plan(graph, strategy="auto")  # validated by execution inside the planned arena
        assert ours.arena_bytes <= tflm


def test_reader_reads_back_what_the_writer_wrote():
    rng = np.random.default_rng(6)
    for op_type, dtype in CASES:
        graph, feeds = make_case(op_type, dtype, rng)
        again = read_tflite(write_tflite(graph))
        assert [op.type for op in again.ops] == [op.type for op in graph.ops]
        for key, value in graph.ops[0].options.items():
            assert again.ops[0].options[key] == value, (op_type, key)
        want, have = microforge.run(graph, *feeds), microforge.run(again, *feeds)
        for w, h in zip(want if isinstance(want, list) else [want], have if isinstance(have, list) else [have]):
            assert np.array_equal(w, h)


# ----------------------------------------------------------------------------------------------------------
# Malformed and unsupported ops fail with our errors, naming the op and the tensor


def raises_everywhere(graph: Graph, error, match, tmp_path, feeds=None, generator_match=None):
    """The reference (at load where the check is static, else when run) and the C generator refuse alike
    (`generator_match`: in other words)."""
    with pytest.raises(error, match=match):
        microforge.load(write_tflite(graph)) if feeds is None else microforge.run(graph, *feeds)
    with pytest.raises(error, match=generator_match or match):
        generate(graph, tmp_path / "c", target="host")


def single(op_type, inputs, out_shapes, dtype=np.int8, out_dtype=None, quant=True, **options):
    """A one-op graph: `inputs` are (name, shape) for model inputs or (name, array) for constants."""
    b = GraphBuilder()
    q = dict(scale=0.05, zero_point=3) if quant and np.dtype(dtype) in (np.int8, np.int16) else {}
    ins = []
    for name, spec in inputs:
        if isinstance(spec, tuple):
            ins.append(b.input(name, spec, dtype, **q))
        else:
            ins.append(b.constant(name, spec))
    outs = [b.activation(f"out{k}", s, out_dtype or dtype, **(q if out_dtype is None else {}))
            for k, s in enumerate(out_shapes)]
    b.op(op_type, ins, outs, **options)
    for t in outs:
        b.output(t)
    return b.build()


def test_requantizing_copies_are_refused(tmp_path):
    for op_type, inputs, outs, options in [
        ("TRANSPOSE", [("x", (2, 3)), ("perm", np.array([1, 0], np.int32))], [(3, 2)], {}),
        ("SLICE", [("x", (2, 3)), ("b", np.array([0, 1], np.int32)), ("s", np.array([2, 2], np.int32))], [(2, 2)], {}),
        ("SPLIT", [("axis", np.array(1, np.int32)), ("x", (2, 4))], [(2, 2), (2, 2)], {"num_splits": 2}),
        ("PACK", [("x", (2, 3)), ("x2", (2, 3))], [(2, 2, 3)], {"values_count": 2, "axis": 0}),
        ("UNPACK", [("x", (2, 3))], [(3,), (3,)], {"num": 2, "axis": 0}),
        ("GATHER", [("x", (4, 3)), ("i", np.array([0, 3], np.int32))], [(2, 3)], {}),
    ]:
        graph = single(op_type, inputs, outs, **options)
        graph.outputs[-1].quant.zero_point[:] = 4
        name = graph.outputs[-1].name
        raises_everywhere(graph, ModelError, rf"op 0 \({op_type}\): input '.*' \(scale .*zero point \[3\]\) and "
                          rf"output '{name}' .*zero point \[4\].*same quantization", tmp_path / op_type,
                          feeds=[np.zeros((1,) + t.shape, np.int8) for t in graph.inputs])


def test_constant_gather_index_out_of_range_fails_at_load(tmp_path):
    graph = single("GATHER", [("x", (4, 3)), ("i", np.array([[0, 4]], np.int32))], [(1, 2, 3)])
    raises_everywhere(graph, ModelError, r"op 0 \(GATHER\): index 4 of 'i' lies outside dimension 0 of 'x' \[4, 3\]",
                      tmp_path)
    graph = single("GATHER", [("x", (4, 3)), ("i", np.array([-1], np.int32))], [(1, 3)])
    raises_everywhere(graph, ModelError, r"index -1 of 'i'", tmp_path / "negative")


def test_strided_slice_masks_tflm_refuses(tmp_path):
    inputs = [("x", (2, 3)), ("b", np.array([0, 0], np.int32)), ("e", np.array([2, 3], np.int32)),
              ("s", np.array([1, 1], np.int32))]
    for mask in ("ellipsis_mask", "new_axis_mask"):
        graph = single("STRIDED_SLICE", inputs, [(2, 3)], **{mask: 1})
        raises_everywhere(graph, UnsupportedError, rf"op 0 \(STRIDED_SLICE\): {mask} 1 is not supported",
                          tmp_path / mask, feeds=[np.zeros((1, 2, 3), np.int8)])
    graph = single("STRIDED_SLICE", inputs[:3] + [("s", np.array([1, 0], np.int32))], [(2, 3)])
    raises_everywhere(graph, ModelError, r"op 0 \(STRIDED_SLICE\): stride of dimension 1 is 0", tmp_path / "zero",
                      feeds=[np.zeros((1, 2, 3), np.int8)])


def test_malformed_parameters(tmp_path):
    zeros = [np.zeros((1, 2, 3), np.int8)]
    bad = [
        ("TRANSPOSE", [("x", (2, 3)), ("perm", np.array([0, 0], np.int32))], [(2, 3)], {},
         ModelError, r"permutation 'perm' \[0, 0\] is not a permutation"),
        ("TRANSPOSE", [("x", (2, 3)), ("perm", np.array([-1, 0], np.int32))], [(3, 2)], {},
         ModelError, r"permutation 'perm' \[-1, 0\] is not a permutation"),
        ("TRANSPOSE", [("x", (2, 3)), ("perm", np.array([1, 0], np.int32))], [(2, 3)], {},
         ModelError, r"output 'out0' is declared \[2, 3\] but the op computes \[3, 2\]"),
        ("SLICE", [("x", (2, 3)), ("b", np.array([1, 2], np.int32)), ("s", np.array([1, 2], np.int32))], [(1, 2)],
         {}, ModelError, r"begin 2 and size 2 of dimension 1 lie outside 'x' \[2, 3\]"),
        ("SPLIT", [("axis", np.array(1, np.int32)), ("x", (2, 3))], [(2, 1), (2, 1)], {"num_splits": 2},
         ModelError, r"cannot split dimension 1 of 'x' \[2, 3\] into 2 equal parts"),
        ("SPLIT_V", [("x", (2, 3)), ("sizes", np.array([-1, -1], np.int32)), ("axis", np.array(1, np.int32))],
         [(2, 1), (2, 2)], {"num_splits": 2}, ModelError, r"size_splits \[-1, -1\] may hold one -1"),
        ("SPLIT_V", [("x", (2, 3)), ("sizes", np.array([1, 1], np.int32)), ("axis", np.array(1, np.int32))],
         [(2, 1), (2, 1)], {"num_splits": 2}, ModelError, r"size_splits \[1, 1\] do not add up to dimension 1"),
        ("UNPACK", [("x", (2, 3))], [(2,)] * 2, {"num": 2, "axis": 1},
         ModelError, r"unpacking dimension 1 of 'x' \[2, 3\] gives 3 outputs"),
        ("ARG_MAX", [("x", (2, 3)), ("axis", np.array([2], np.int32))], [(2,)], {"output_type": "INT32"},
         ModelError, r"axis 2 is out of range for 'x'"),
        ("GATHER", [("x", (2, 3)), ("i", np.array([[0]], np.int32))], [(2, 1)], {"axis": 1, "batch_dims": 2},
         ModelError, r"batch_dims 2 must lie in \[0, axis 1\]"),
    ]
    for k, (op_type, inputs, outs, options, error, match) in enumerate(bad):
        graph = single(op_type, inputs, outs, out_dtype=np.int32 if op_type == "ARG_MAX" else None, **options)
        raises_everywhere(graph, error, rf"op 0 \({op_type}\): {match}", tmp_path / str(k), feeds=zeros[:0] + [
            np.zeros((1,) + t.shape, t.dtype) for t in graph.inputs])


def test_unsupported_types_and_ranks(tmp_path):
    x6 = (1, 2, 1, 2, 1, 2)
    graph = single("TRANSPOSE", [("x", x6), ("perm", np.arange(6, dtype=np.int32))], [x6])
    raises_everywhere(graph, UnsupportedError, r"op 0 \(TRANSPOSE\): 'x' has rank 6; TRANSPOSE supports at most 5",
                      tmp_path / "rank", feeds=[np.zeros((1,) + x6, np.int8)])
    graph = single("ARG_MIN", [("x", (2, 3)), ("axis", np.array([1], np.int32))], [(2,)], out_dtype=np.int8)
    raises_everywhere(graph, UnsupportedError, r"op 0 \(ARG_MIN\): output 'out0' must be int32", tmp_path / "arg",
                      feeds=[np.zeros((1, 2, 3), np.int8)])
    graph = single("ARG_MAX", [("x", (2, 3)), ("axis", np.array([1], np.int32))], [(2,)], dtype=np.int16,
                   out_dtype=np.int32)
    raises_everywhere(graph, UnsupportedError, r"op 0 \(ARG_MAX\): input type int16 not supported", tmp_path / "s16",
                      generator_match=r"op 0 \(ARG_MAX\): no C kernel for int16")
    graph = single("GATHER", [("x", (4, 3)), ("i", np.array([1], np.int64))], [(1, 3)])
    raises_everywhere(graph, UnsupportedError, r"op 0 \(GATHER\): indices 'i' must be int32", tmp_path / "i64")


def test_forward_slices_overlap_their_dying_input():
    """A forward SLICE/STRIDED_SLICE declares safe distance 0: its output may be placed over its input when
    the input dies there; a chain of slices then fits in less than layer-wise planning needs, and the C run
    in that arena is still the reference."""
    rng = np.random.default_rng(8)
    b = GraphBuilder()
    q = dict(scale=0.05, zero_point=-2)
    x = b.input("x", (1, 16, 16, 4), np.int8, **q)
    a = b.activation("a", (1, 12, 16, 4), np.int8, **q)
    b.op("SLICE", [x, b.constant("b0", np.array([0, 2, 0, 0], np.int32)),
                   b.constant("s0", np.array([-1, 12, -1, -1], np.int32))], [a])
    c = b.activation("c", (1, 6, 8, 4), np.int8, **q)
    b.op("STRIDED_SLICE", [a, b.constant("b1", np.array([0, 1, 0, 0], np.int32)),
                           b.constant("e1", np.array([1, 12, 16, 4], np.int32)),
                           b.constant("s1", np.array([1, 2, 2, 1], np.int32))], [c])
    b.output(c)
    graph = b.build()
    feeds = [values(rng, x.shape, np.int8)]
    model = check_cases([Case(graph, feeds)], sanitize=True)
    layer_wise = plan(graph, strategy="auto").arena_bytes
    assert model.generated.arena_bytes < layer_wise


def test_keras_style_flatten_chain():
    """What TFLite's converter writes for Flatten with a free batch: SHAPE, STRIDED_SLICE (shrink), PACK with a
    constant, RESHAPE to the packed shape; int32 all the way, then the int8 data. Against TFLM and in C."""
    rng = np.random.default_rng(13)
    q = dict(scale=0.05, zero_point=1)
    b = GraphBuilder()
    x = b.input("x", (1, 3, 4, 2), np.int8, **q)
    dims = b.activation("dims", (4,), np.int32)
    b.op("SHAPE", [x], [dims])
    batch = b.activation("batch", (), np.int32)
    b.op("STRIDED_SLICE", [dims, b.constant("b", np.array([0], np.int32)), b.constant("e", np.array([1], np.int32)),
                           b.constant("s", np.array([1], np.int32))], [batch], shrink_axis_mask=1)
    target = b.activation("target", (2,), np.int32)
    b.op("PACK", [batch, b.constant("rest", np.array(-1, np.int32))], [target], values_count=2, axis=0)
    flat = b.activation("flat", (1, 24), np.int8, **q)
    b.op("RESHAPE", [x, target], [flat])
    b.output(flat)
    graph = b.build()
    feeds = [values(rng, x.shape, np.int8)]
    check_tflm(graph, feeds)
    check_cases([Case(graph, feeds)])
    assert np.array_equal(microforge.run(graph, *feeds).reshape(-1), feeds[0].reshape(-1))
