"""TANH, LEAKY_RELU, RSQRT, SUB, MAXIMUM, MINIMUM, SQUARED_DIFFERENCE and PRELU through every layer.

Each case is a one-op model built with GraphBuilder and written with write_tflite: random shapes (the binary
ops with numpy broadcasting, a constant or a second model input), scales, zero points, alphas, fused
activations, int8 and float32. Our reference kernel must equal TFLite Micro byte for byte (float32 TANH
within float32 rounding: numpy's and libm's tanh may differ by an ulp); the generated C on the host must
equal the reference byte for byte (float32 TANH: within rounding), and one model of every op runs on
qemu-m4. The planner's TFLM arena matches what TFLM reports, the reader reads back what the writer wrote,
and malformed or unsupported ops fail with our errors, naming the op and the tensor.
"""

from __future__ import annotations

import functools

import numpy as np
import oracle
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from oracle import run_both, tflm_run
from test_codegen_ops import Case, check_cases, check_merged_on_qemu, merge
from tflm_arena import tflm_reported_head_bytes

import microforge
from microforge.codegen import generate
from microforge.errors import ModelError, UnsupportedError
from microforge.frontend.reader import read_tflite
from microforge.frontend.writer import write_tflite
from microforge.graph.builder import GraphBuilder
from microforge.graph.ir import Graph
from microforge.plan.tflm import tflm_arena_bytes
from microforge.reference.registry import KERNELS

BATCH = 8
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
UNARY = ["TANH", "LEAKY_RELU", "RSQRT"]
BINARY = ["SUB", "MAXIMUM", "MINIMUM", "SQUARED_DIFFERENCE", "PRELU"]
ACTIVATIONS = ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]
ALPHAS = [0.01, 0.1, 0.2, 0.3, 0.5, 1.0, 1.7, -0.25]
seeds = st.integers(0, 2**32 - 1)
shapes = st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple)

assert_same = functools.partial(oracle.assert_same, rtol=0, atol=0)  # float32 too, except TANH
assert_close = functools.partial(oracle.assert_same, rtol=2e-7, atol=1e-30)


def log_uniform(rng, lo, hi):
    return float(np.float32(10 ** rng.uniform(np.log10(lo), np.log10(hi))))


def int8_batch(rng, shape, low=-128):
    x = rng.integers(low, 128, (BATCH,) + tuple(shape), dtype=np.int8)
    x[0] = rng.choice([low, 127])  # a saturated sample reaches the ends of every range
    return x


def float_batch(rng, shape, op_type):
    x = rng.normal(0, 3, (BATCH,) + tuple(shape)).astype(np.float32)
    if op_type == "RSQRT":  # a NaN's payload is the FPU's own (x86 and Arm differ): positive inputs only
        x = np.abs(x) + np.float32(1e-3)
    return x


# ----------------------------------------------------------------------------------------------------------
# One-op models


def unary_quant(rng, op_type, alpha):
    """(input, output) quantization a converter would choose for the op's output range."""
    in_scale, in_zp = log_uniform(rng, 0.003, 0.3), int(rng.integers(-128, 128))
    if op_type == "TANH":
        return dict(scale=in_scale, zero_point=in_zp), dict(scale=1.0 / 128, zero_point=0)
    if op_type == "RSQRT":
        in_zp = -128 if rng.random() < 0.5 else in_zp
        largest = 1.0 / np.sqrt(in_scale)  # at the smallest positive input
        scale = largest / 255 * rng.uniform(0.3, 1.5)
        return dict(scale=in_scale, zero_point=in_zp), dict(scale=float(np.float32(scale)), zero_point=-128)
    low, high = in_scale * (-128 - in_zp), in_scale * (127 - in_zp)
    ends = [low, high, alpha * low, alpha * high]
    lo, hi = min(ends + [0.0]), max(ends + [0.0])
    scale = max(hi - lo, 1e-3) / 255 * rng.uniform(0.5, 1.5)
    zero_point = int(np.clip(round(-128 - lo / scale), -128, 127))
    return dict(scale=in_scale, zero_point=in_zp), dict(scale=float(np.float32(scale)), zero_point=zero_point)


def unary_case(op_type, dtype, shape, rng, alpha=None):
    """(graph, op, feeds) for one unary op."""
    alpha = float(rng.choice(ALPHAS)) if alpha is None else alpha
    in_quant, out_quant = unary_quant(rng, op_type, alpha) if dtype == np.int8 else ({}, {})
    b = GraphBuilder()
    x = b.input("x", shape, dtype, **in_quant)
    y = b.activation("y", shape, dtype, **out_quant)
    options = {"alpha": alpha} if op_type == "LEAKY_RELU" else {}
    op = b.op(op_type, [x], [y], **options)
    b.output(y)
    if dtype == np.int8:
        feed = int8_batch(rng, shape, low=in_quant["zero_point"] if op_type == "RSQRT" else -128)
    else:
        feed = float_batch(rng, shape, op_type)
    return b.build(), op, [feed]


@st.composite
def broadcast_shapes(draw, max_rank=5):
    """An output shape and two input shapes that broadcast to it (ranks may differ; the second may be 0)."""
    out_rank = draw(st.integers(1, max_rank))
    out_shape = tuple(draw(st.lists(st.integers(1, 4), min_size=out_rank, max_size=out_rank)))
    shapes = []
    for lowest_rank in (1, 0):
        rank = draw(st.integers(lowest_rank, out_rank))
        tail = out_shape[out_rank - rank:]
        shapes.append(tuple(d if draw(st.booleans()) else 1 for d in tail))
    return shapes, tuple(np.broadcast_shapes(*shapes))


def binary_quant(rng, op_type):
    """(first input, second input, output) quantization for the op's output range."""
    if op_type in ("MAXIMUM", "MINIMUM"):  # one quantization throughout, as TFLite's converters write it
        return [dict(scale=log_uniform(rng, 0.005, 0.3), zero_point=int(rng.integers(-128, 128)))] * 3
    q = [dict(scale=log_uniform(rng, 0.002, 0.5), zero_point=int(rng.integers(-128, 128))) for _ in range(3)]
    s1, s2 = q[0]["scale"], q[1]["scale"]
    if op_type == "SUB":
        out = (s1 + s2) * rng.uniform(0.3, 2.0)
    elif op_type == "SQUARED_DIFFERENCE":
        out = max(s1, s2) ** 2 * 255 * rng.uniform(0.2, 3.0)
        q[2]["zero_point"] = int(rng.integers(-128, -100))  # squares are >= 0
    else:  # PRELU: alpha near [-0.5, 0.5], output about the input's range
        q[1]["scale"] = log_uniform(rng, 0.001, 0.01)
        out = s1 * rng.uniform(0.5, 2.0)
    q[2]["scale"] = float(np.float32(out))
    return q


def binary_case(op_type, dtype, shapes, out_shape, constant_second, rng, activation="NONE"):
    """(graph, op, feeds) for one binary op; the second input is a constant or a model input."""
    constant_second = constant_second or shapes[1] == ()  # the oracle cannot feed rank-0 model inputs
    q = binary_quant(rng, op_type) if dtype == np.int8 else [{}, {}, {}]
    b = GraphBuilder()
    x = b.input("x", shapes[0], dtype, **q[0])
    if constant_second:
        data = int8_batch(rng, shapes[1])[1] if dtype == np.int8 else float_batch(rng, shapes[1], op_type)[1]
        y = b.constant("c", data, **q[1])
    else:
        y = b.input("y", shapes[1], dtype, **q[1])
    out = b.activation("out", out_shape, dtype, **q[2])
    options = {"fused_activation_function": activation} if op_type == "SUB" else {}
    op = b.op(op_type, [x, y], [out], **options)
    b.output(out)
    make = int8_batch if dtype == np.int8 else functools.partial(float_batch, op_type=op_type)
    feeds = [make(rng, shapes[0])]
    if not constant_second:
        feeds.append(make(rng, shapes[1]))
    return b.build(), op, feeds


def check_tflm(graph, op, feeds):
    ours, theirs = run_both(graph, op, feeds)
    if ours.dtype == np.float32 and op.type == "TANH":
        assert_close(ours, theirs)
    else:
        assert_same(ours, theirs)


# ----------------------------------------------------------------------------------------------------------
# Reference against TFLite Micro


@SETTINGS
@given(op_type=st.sampled_from(UNARY), shape=shapes, seed=seeds)
def test_unary_int8_matches_tflm(op_type, shape, seed):
    check_tflm(*unary_case(op_type, np.int8, shape, np.random.default_rng(seed)))


@pytest.mark.parametrize("op_type", UNARY)
def test_unary_int8_every_input_value(op_type):
    """All 256 int8 inputs (RSQRT: those from the zero point up) for a spread of scales and alphas."""
    rng = np.random.default_rng(5)
    for k in range(12):
        graph, op, _ = unary_case(op_type, np.int8, (1, 256), rng, alpha=ALPHAS[k % len(ALPHAS)])
        low = op.inputs[0].zero_point if op_type == "RSQRT" else -128
        every = np.arange(low, 128, dtype=np.int8)
        every = np.pad(every, (0, 256 - every.size), mode="wrap").reshape(1, 1, 256)
        check_tflm(graph, op, [every])


@SETTINGS
@given(op_type=st.sampled_from(UNARY), shape=shapes, seed=seeds)
def test_unary_float32_matches_tflm(op_type, shape, seed):
    check_tflm(*unary_case(op_type, np.float32, shape, np.random.default_rng(seed)))


@SETTINGS
@given(op_type=st.sampled_from(BINARY), case=broadcast_shapes(), constant_second=st.booleans(),
       activation=st.sampled_from(ACTIVATIONS), seed=seeds)
def test_binary_int8_matches_tflm(op_type, case, constant_second, activation, seed):
    shapes, out_shape = case
    assume(op_type != "PRELU" or len(out_shape) <= 4)  # TFLM's PRELU aborts beyond 4-D (we refuse it)
    rng = np.random.default_rng(seed)
    check_tflm(*binary_case(op_type, np.int8, shapes, out_shape, constant_second, rng, activation))


@SETTINGS
@given(op_type=st.sampled_from(BINARY), case=broadcast_shapes(max_rank=4), constant_second=st.booleans(),
       activation=st.sampled_from(ACTIVATIONS), seed=seeds)
def test_binary_float32_matches_tflm(op_type, case, constant_second, activation, seed):
    shapes, out_shape = case
    rng = np.random.default_rng(seed)
    check_tflm(*binary_case(op_type, np.float32, shapes, out_shape, constant_second, rng, activation))


def test_sub_on_every_input_pair():
    """TFLM's SUB divides the scales in float32 (its ADD in double), so its multipliers differ from ADD's in
    the last bits, which changes an output only rarely: every one of the 65,536 input pairs is checked."""
    rng = np.random.default_rng(0)
    every = np.arange(-128, 128, dtype=np.int8)
    x, y = np.repeat(every, 256).reshape(1, 1, 65536), np.tile(every, 256).reshape(1, 1, 65536)
    for _ in range(6):
        q = binary_quant(rng, "SUB")
        b = GraphBuilder()
        a, c = b.input("x", (1, 65536), np.int8, **q[0]), b.input("y", (1, 65536), np.int8, **q[1])
        out = b.activation("out", (1, 65536), np.int8, **q[2])
        op = b.op("SUB", [a, c], [out])
        b.output(out)
        check_tflm(b.build(), op, [x, y])


# ----------------------------------------------------------------------------------------------------------
# Generated C against the reference: host, sanitizers, qemu-m4


def host_cases(op_type, dtype, seed, count=6) -> list[Case]:
    """`count` random one-op cases of `op_type`: same shapes, per-channel, scalar and general broadcasts,
    constant and model second inputs (binary ops), random alphas (LEAKY_RELU)."""
    rng = np.random.default_rng(seed)
    exact = not (dtype == np.float32 and op_type == "TANH")
    cases = []
    for k in range(count):
        if op_type in UNARY:
            shape = tuple(int(d) for d in rng.integers(1, 6, int(rng.integers(1, 5))))
            graph, _, feeds = unary_case(op_type, dtype, shape, rng)
        else:
            shapes = [[(1, 4, 5, 6), (1, 4, 5, 6)], [(1, 4, 5, 6), (6,)], [(2, 1, 3), (4, 1)], [(1, 3, 4), ()],
                      [(3, 1, 5), (1, 2, 1)], [(7,), (7,)]][k % 6]
            out_shape = tuple(np.broadcast_shapes(*shapes))
            graph, _, feeds = binary_case(op_type, dtype, shapes, out_shape, k % 2 == 1, rng,
                                          ACTIVATIONS[k % len(ACTIVATIONS)])
        cases.append(Case(graph, feeds, exact=exact))
    return cases


@pytest.mark.parametrize("dtype", [np.int8, np.float32], ids=["int8", "float32"])
@pytest.mark.parametrize("op_type", UNARY + BINARY)
def test_generated_c_matches_reference_on_host(op_type, dtype):
    check_cases(host_cases(op_type, dtype, seed=len(op_type)))


def test_unary_tables_hold_the_reference_on_every_input():
    """The int8 tables of the generated C are the reference on all 256 bytes (RSQRT's below its zero point
    too, where TFLM fails the inference and both give 127)."""
    every = np.arange(-128, 128, dtype=np.int8).reshape(1, 1, 256)
    cases = []
    for op_type in UNARY:
        graph, _, _ = unary_case(op_type, np.int8, (1, 256), np.random.default_rng(2), alpha=-0.25)
        cases.append(Case(graph, [every]))
    check_cases(cases)


def test_sub_takes_the_table_and_prescaled_paths(tmp_path):
    """Same-shape int8 SUB reads negated tables, SUB of a constant adds its negated rescaled values."""
    rng = np.random.default_rng(3)
    same = binary_case("SUB", np.int8, [(1, 16), (1, 16)], (1, 16), False, rng)
    constant = binary_case("SUB", np.int8, [(1, 4, 8), (8,)], (1, 4, 8), True, rng)
    general = binary_case("SUB", np.int8, [(2, 1, 8), (3, 1)], (2, 3, 8), False, rng)
    cases = [Case(g, feeds) for g, _, feeds in (same, constant, general)]
    check_cases(cases)
    generate(merge(cases), tmp_path, target="host")
    source = (tmp_path / "model.c").read_text()
    assert "mf_add_s8_table(" in source and "mf_add_s8_prescaled(" in source and "mf_sub_s8(" in source


def all_ops_graph(dtype, seed=0):
    """One case of every op and a broadcasting one of every binary op, to be merged into one graph."""
    cases = [host_cases(op_type, dtype, seed, count=1)[0] for op_type in UNARY + BINARY]
    for k, op_type in enumerate(BINARY):  # a broadcast for each binary op too
        cases += [host_cases(op_type, dtype, seed + k, count=3)[2]]
    return cases


def test_all_ops_under_sanitizers():
    check_cases(all_ops_graph(np.int8, seed=1) + all_ops_graph(np.float32, seed=1), sanitize=True)


def test_every_op_on_qemu_m4():
    """One model of every op, int8 and float32, in one firmware: int8 byte for byte, float32 too except
    TANH (newlib's tanhf)."""
    check_merged_on_qemu(all_ops_graph(np.int8, seed=2) + all_ops_graph(np.float32, seed=2))


# ----------------------------------------------------------------------------------------------------------
# Planner, reader


@pytest.mark.parametrize("op_type", UNARY + BINARY)
def test_tflm_arena_plan_matches_tflm(op_type):
    """None of these kernels asks TFLM for scratch: our reproduction of TFLM's plan is its head, exactly."""
    rng = np.random.default_rng(4)
    if op_type in UNARY:
        graph, _, _ = unary_case(op_type, np.int8, (1, 5, 7), rng)
    else:
        graph, _, _ = binary_case(op_type, np.int8, [(1, 5, 7), (7,)], (1, 5, 7), False, rng)
    assert tflm_arena_bytes(graph) == tflm_reported_head_bytes(write_tflite(graph))


def test_reader_reads_back_what_the_writer_wrote():
    rng = np.random.default_rng(6)
    graph, _, feeds = unary_case("LEAKY_RELU", np.int8, (1, 9), rng, alpha=-0.25)
    again = read_tflite(write_tflite(graph))
    assert again.ops[0].type == "LEAKY_RELU" and again.ops[0].options["alpha"] == np.float32(-0.25)
    assert np.array_equal(microforge.run(again, *feeds), microforge.run(graph, *feeds))
    for op_type in BINARY:
        graph, _, feeds = binary_case(op_type, np.int8, [(1, 3, 4), (4,)], (1, 3, 4), True, rng, "RELU6")
        again = read_tflite(write_tflite(graph))
        assert again.ops[0].type == op_type
        activation = again.ops[0].options.get("fused_activation_function", "NONE")
        assert activation == ("RELU6" if op_type == "SUB" else "NONE")
        assert np.array_equal(microforge.run(again, *feeds), microforge.run(graph, *feeds))


# ----------------------------------------------------------------------------------------------------------
# Malformed and unsupported ops fail with our errors, naming the op and the tensor


def one_op(op_type, shapes, out_shape, dtypes=(np.int8, np.int8, np.int8), quant=True, **options):
    """An op whose inputs have `shapes` (one or two) and the arguments of a 2-sample batch for it."""
    b = GraphBuilder()
    q = dict(scale=0.05, zero_point=0) if quant else {}
    names = ["x", "y"]
    inputs = [b.input(names[k], s, dtypes[k], **q) for k, s in enumerate(shapes)]
    out = b.activation("out", out_shape, dtypes[-1], **q)
    op = b.op(op_type, inputs, [out], **options)
    b.output(out)
    b.build()
    return op, [np.zeros((2,) + s, d) for s, d in zip(shapes, dtypes)]


def raises_in_reference_and_generator(op, args, error, match, tmp_path, generator_match=None):
    """The reference kernel and the C generator refuse the op alike (`generator_match`: in other words)."""
    with pytest.raises(error, match=match):
        KERNELS[op.type].fn(op, args)
    graph = Graph(list(op.inputs + op.outputs), [op], list(op.inputs), list(op.outputs))
    with pytest.raises(error, match=generator_match or match):
        generate(graph, tmp_path / op.type, target="host")


@pytest.mark.parametrize("op_type", UNARY + BINARY)
def test_wrong_arity(op_type, tmp_path):
    arity = 1 if op_type in UNARY else 2
    shapes = [(1, 4)] * (3 - arity)  # two inputs for a unary op, one for a binary op
    op, args = one_op(op_type, shapes, (1, 4), dtypes=(np.int8,) * (len(shapes) + 1))
    raises_in_reference_and_generator(op, args, ModelError, rf"op 0 \({op_type}\): expects {arity} inputs", tmp_path)


@pytest.mark.parametrize("op_type", BINARY)
def test_shapes_that_do_not_broadcast(op_type, tmp_path):
    op, args = one_op(op_type, [(1, 3, 4), (1, 2, 4)], (1, 3, 4))
    raises_in_reference_and_generator(op, args, ModelError, rf"op 0 \({op_type}\).*'x' \[1, 3, 4\].*'y' \[1, 2, 4\]",
                                      tmp_path)


@pytest.mark.parametrize("op_type", UNARY + BINARY)
def test_wrong_declared_output_shape(op_type, tmp_path):
    shapes = [(1, 4)] if op_type in UNARY else [(1, 4), (4,)]
    op, args = one_op(op_type, shapes, (1, 5), dtypes=(np.int8,) * (len(shapes) + 1))
    raises_in_reference_and_generator(op, args, ModelError, rf"op 0 \({op_type}\).*'out'", tmp_path)


@pytest.mark.parametrize("dtype", [np.int16, np.int32])
@pytest.mark.parametrize("op_type", UNARY + BINARY)
def test_unsupported_dtypes(op_type, dtype, tmp_path):
    shapes = [(1, 4)] if op_type in UNARY else [(1, 4), (1, 4)]
    op, args = one_op(op_type, shapes, (1, 4), dtypes=(dtype,) * (len(shapes) + 1))
    # the generator lists int16 ops as int16x8 ops without C
    name = np.dtype(dtype).name
    raises_in_reference_and_generator(op, args, UnsupportedError,
                                      rf"op 0 \({op_type}\): type {name} of 'x' is not supported", tmp_path,
                                      generator_match=rf"op 0 \({op_type}\).*{name}")


@pytest.mark.parametrize("op_type", BINARY)
def test_mixed_types_and_missing_quantization(op_type, tmp_path):
    op, args = one_op(op_type, [(1, 4), (1, 4)], (1, 4), dtypes=(np.int8, np.float32, np.int8))
    raises_in_reference_and_generator(op, args, UnsupportedError, rf"op 0 \({op_type}\): mixed types.*'y' float32",
                                      tmp_path / "mixed")
    op, args = one_op(op_type, [(1, 4), (1, 4)], (1, 4), quant=False)
    raises_in_reference_and_generator(op, args, UnsupportedError, r"int8 'x' needs per-tensor quantization",
                                      tmp_path / "unquantized")


@pytest.mark.parametrize("op_type", UNARY)
def test_unary_without_quantization(op_type, tmp_path):
    op, args = one_op(op_type, [(1, 4)], (1, 4), dtypes=(np.int8, np.int8), quant=False)
    raises_in_reference_and_generator(op, args, UnsupportedError, rf"op 0 \({op_type}\).*'x' needs per-tensor",
                                      tmp_path)


@pytest.mark.parametrize("op_type", ["MAXIMUM", "MINIMUM"])
def test_maximum_minimum_need_one_quantization(op_type, tmp_path):
    op, args = one_op(op_type, [(1, 4), (1, 4)], (1, 4))
    op.outputs[0].quant.zero_point[:] = 3
    raises_in_reference_and_generator(op, args, ModelError, rf"op 0 \({op_type}\): 'out' has scale .* zero point 3",
                                      tmp_path / "zero_point")
    op, args = one_op(op_type, [(1, 4), (1, 4)], (1, 4))
    op.inputs[1].quant.scale[:] = 0.1
    raises_in_reference_and_generator(op, args, ModelError, rf"op 0 \({op_type}\): 'y' has scale 0.1",
                                      tmp_path / "scale")


def test_prelu_beyond_4d_is_refused(tmp_path):
    op, args = one_op("PRELU", [(1, 2, 2, 2, 3), (3,)], (1, 2, 2, 2, 3))
    raises_in_reference_and_generator(op, args, UnsupportedError, r"op 0 \(PRELU\): 'x' has rank 5.*at most 4",
                                      tmp_path)


def test_rsqrt_of_negative_values():
    """TFLM fails the inference when an int8 RSQRT input lies below its zero point; the reference and the C
    stay defined and give such inputs the output of 0 (127), and match TFLM on all other inputs."""
    graph, op, _ = unary_case("RSQRT", np.int8, (1, 4), np.random.default_rng(0))
    op.inputs[0].quant.zero_point[:] = 10
    x = np.array([[[10, 11, 127, 9]], [[-128, 12, 50, 10]]], np.int8)
    with pytest.raises(RuntimeError):
        tflm_run(write_tflite(graph), [x[:1]])
    ours = KERNELS["RSQRT"].fn(op, [x])
    assert ours[0, 0, 3] == ours[1, 0, 0] == ours[0, 0, 0] == 127
    fine = np.where(x < 10, np.int8(10), x)
    assert_same(ours, run_both(graph, op, [fine])[1])
    check_cases([Case(graph, [x])])


def test_bad_options(tmp_path):
    op, args = one_op("LEAKY_RELU", [(1, 4)], (1, 4), dtypes=(np.float32, np.float32), quant=False,
                      alpha=float("nan"))
    raises_in_reference_and_generator(op, args, ModelError, r"op 0 \(LEAKY_RELU\): option alpha=nan", tmp_path / "a")
    op, args = one_op("SUB", [(1, 4), (1, 4)], (1, 4), fused_activation_function="TANH")
    raises_in_reference_and_generator(op, args, UnsupportedError, r"op 0 \(SUB\).*TANH", tmp_path / "b")
