"""Generated C of the pool, pad, elementwise, activation, reduce, quantize and shape ops against the
reference interpreter.

Each hypothesis example draws several random single-op graphs of one family (shapes, options, scales,
zero points, constant or model inputs), runs each through the reference interpreter (`microforge.run`),
merges them into one graph (independent ops side by side, so gcc runs once per example) and runs that
through the generated C on the host (`compile_host`). int8 outputs must be byte-identical; float32
outputs too, except average pooling (float32 accumulation as TFLM, where the reference sums in float64).
A subset runs under AddressSanitizer and UndefinedBehaviorSanitizer.
"""

from __future__ import annotations

import os
import re
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import microforge
from microforge.codegen import compile_host
from microforge.codegen.emit import generate
from microforge.codegen.host import HostModel
from microforge.codegen.ops.activations import reference_table, softmax_exp_table
from microforge.codegen.ops.elementwise import broadcast_plan
from microforge.codegen.ops.pad import merged_dims
from microforge.codegen.ops.reduce import dimension_groups
from microforge.errors import MicroforgeError, ModelError, UnsupportedError
from microforge.graph.builder import GraphBuilder
from microforge.graph.ir import Graph

BATCH = 6
OPS_PER_GRAPH = st.integers(2, 5)
# Each example compiles one merged graph (~0.5 s of gcc); raise MICROFORGE_CODEGEN_EXAMPLES for a long soak.
EXAMPLES = int(os.environ.get("MICROFORGE_CODEGEN_EXAMPLES", "5"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 5,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ACTIVATIONS = ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]
seeds = st.integers(0, 2**32 - 1)
# The reference QUANTIZE divides huge floats by small scales on purpose (they saturate).
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")


# ----------------------------------------------------------------------------------------------------------
# Harness: single-op cases -> one merged graph -> generated C vs reference


class Case:
    """One single-op graph, its input batches and the reference interpreter's outputs."""

    def __init__(self, graph: Graph, feeds: list[np.ndarray], exact: bool = True):
        self.graph, self.feeds, self.exact = graph, feeds, exact
        out = microforge.run(graph, *feeds)
        self.expected = out if isinstance(out, list) else [out]


def merge(cases: list[Case]) -> Graph:
    tensors, ops, inputs, outputs = [], [], [], []
    for k, case in enumerate(cases):
        for t in case.graph.tensors:
            if not t.name.startswith(f"g{k}_"):
                t.name = f"g{k}_{t.name}"
        tensors += case.graph.tensors
        ops += case.graph.ops
        inputs += case.graph.inputs
        outputs += case.graph.outputs
    return Graph(tensors, ops, inputs, outputs)


def build_host(graph: Graph, sanitize: bool = False, strategy: str = "auto") -> HostModel:
    if strategy == "auto":
        return compile_host(graph, sanitize=sanitize)
    workdir = tempfile.TemporaryDirectory(prefix="microforge-test-")
    generated = generate(graph, workdir.name, target="host", strategy=strategy)
    return HostModel(graph, generated, workdir, sanitize, ["-O2"])


def assert_same(case: Case, got: list[np.ndarray], where: str) -> None:
    for want, have in zip(case.expected, got):
        assert have.shape == want.shape and have.dtype == want.dtype, where
        if case.exact:
            same = want.reshape(-1).view(np.uint8) == have.reshape(-1).view(np.uint8)
            if not same.all():
                bad = np.flatnonzero(~same)[0] // want.dtype.itemsize
                raise AssertionError(f"{where}: {np.count_nonzero(~same)} bytes differ, first at element {bad}: "
                                     f"reference {want.reshape(-1)[bad]} vs C {have.reshape(-1)[bad]}")
        else:
            np.testing.assert_allclose(have, want, rtol=2e-6, atol=1e-5, err_msg=where)


def check_merged_on_qemu(cases: list[Case], target: str = "qemu-m4") -> dict:
    """All cases merged into one firmware on `target`: every output equal to the reference's, byte for byte
    (a case built with exact=False: within 1e-6). Returns validate_target's report."""
    from microforge.codegen.validate import validate_target

    report = validate_target(merge(cases), target, batches=[f for case in cases for f in case.feeds],
                             keep_outputs=True)
    got = iter(report["outputs"])
    for case in cases:
        for want in case.expected:
            have = next(got).reshape(want.shape)
            if case.exact:
                assert np.array_equal(want.view(np.uint8), have.view(np.uint8)), case.graph.ops[0]
            else:
                np.testing.assert_allclose(have, want, rtol=1e-6, atol=1e-6)
    assert next(got, None) is None and report["target"] == target and report["instructions_per_inference"] > 0
    return report


def check_cases(cases: list[Case], sanitize: bool = False, strategy: str = "auto") -> HostModel:
    graph = merge(cases)
    model = build_host(graph, sanitize=sanitize, strategy=strategy)
    got = model.run(*[f for case in cases for f in case.feeds])
    got = got if isinstance(got, list) else [got]
    pos = 0
    for case in cases:
        n = len(case.expected)
        assert_same(case, got[pos:pos + n], repr(case.graph.ops[0]) + " " + str(case.graph.ops[0].options))
        pos += n
    return model


def valid_case(make, *args) -> Case | None:
    """make(*args) -> Case, or None when the reference refuses the random op (TFLM would too)."""
    try:
        return make(*args)
    except (UnsupportedError, ModelError):
        return None


def int8_values(rng, shape, batch=BATCH):
    x = rng.integers(-128, 128, (batch,) + tuple(shape), dtype=np.int8)
    x[0] = rng.choice([-128, 127])  # a saturated sample: constant rows, extreme sums
    if batch > 1:
        x[1] = rng.integers(-3, 3, shape)  # values close together
    return x


def float_values(rng, shape, scale=2.0, batch=BATCH):
    return rng.normal(0, scale, (batch,) + tuple(shape)).astype(np.float32)


def values(rng, shape, dtype):
    return int8_values(rng, shape) if np.dtype(dtype) == np.int8 else float_values(rng, shape)


def log_uniform(rng, lo, hi):
    return float(np.float32(10 ** rng.uniform(np.log10(lo), np.log10(hi))))


def random_quant(rng, lo=0.005, hi=0.2):
    return {"scale": log_uniform(rng, lo, hi), "zero_point": int(rng.integers(-128, 128))}


# ----------------------------------------------------------------------------------------------------------
# Pooling and padding


def out_size(size, k, s, padding):
    return -(-size // s) if padding == "SAME" else (size - k) // s + 1


@st.composite
def pool_case(draw, dtype):
    rng = np.random.default_rng(draw(seeds))
    op_type = draw(st.sampled_from(["AVERAGE_POOL_2D", "MAX_POOL_2D"]))
    fh, fw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padding = draw(st.sampled_from(["SAME", "VALID"]))
    n, h, w, c = draw(st.integers(1, 2)), draw(st.integers(1, 12)), draw(st.integers(1, 12)), draw(st.integers(1, 5))
    if padding == "VALID":
        assume(h >= fh and w >= fw)
    quant = random_quant(rng) if dtype == np.int8 else {}
    b = GraphBuilder()
    x = b.input("x", (n, h, w, c), dtype, **quant)
    y = b.activation("y", (n, out_size(h, fh, sh, padding), out_size(w, fw, sw, padding), c), dtype, **quant)
    b.op(op_type, [x], [y], padding=padding, stride_h=sh, stride_w=sw, filter_height=fh, filter_width=fw,
         fused_activation_function=draw(st.sampled_from(ACTIVATIONS)))
    b.output(y)
    exact = dtype == np.int8 or op_type == "MAX_POOL_2D"
    return Case(b.build(), [values(rng, x.shape, dtype)], exact=exact)


@st.composite
def pad_case(draw, dtype):
    rng = np.random.default_rng(draw(seeds))
    rank = draw(st.integers(1, 5))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank)))
    paddings = np.array(draw(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)).map(
        lambda p: p if draw(st.booleans()) else (0, 0)), min_size=rank, max_size=rank)), np.int32).reshape(rank, 2)
    op_type = draw(st.sampled_from(["PAD", "PADV2"]))
    quant = random_quant(rng) if dtype == np.int8 else {}
    b = GraphBuilder()
    x = b.input("x", shape, dtype, **quant)
    inputs = [x, b.constant("paddings", paddings if draw(st.booleans()) else paddings.astype(np.int64))]
    feeds = [values(rng, shape, dtype)]
    if op_type == "PADV2":
        value = rng.integers(-128, 128) if dtype == np.int8 else rng.normal()
        if draw(st.booleans()):
            inputs.append(b.constant("value", np.array([value], dtype), **quant))
        else:  # a run-time padding value (a model input)
            inputs.append(b.input("value", (1,), dtype, **quant))
            feeds.append(values(rng, (1,), dtype))
    y = b.activation("y", tuple(np.add(shape, paddings.sum(1))), dtype, **quant)
    b.op(op_type, inputs, [y])
    b.output(y)
    return Case(b.build(), feeds)


@SETTINGS
@given(st.lists(pool_case(np.int8), min_size=3, max_size=8))
def test_pool_int8(cases):
    check_cases(cases)


@settings(SETTINGS, max_examples=max(4, EXAMPLES * 4 // 5))
@given(st.lists(pool_case(np.float32), min_size=2, max_size=6))
def test_pool_float32(cases):
    check_cases(cases)


@SETTINGS
@given(st.lists(st.sampled_from([np.int8, np.float32]).flatmap(pad_case), min_size=3, max_size=8))
def test_pad(cases):
    check_cases(cases)


def test_average_pool_rounds_halves_away_from_zero():
    b = GraphBuilder()
    x = b.input("x", (1, 1, 8, 1), np.int8, scale=0.1, zero_point=0)
    y = b.activation("y", (1, 1, 4, 1), np.int8, scale=0.1, zero_point=0)
    b.op("AVERAGE_POOL_2D", [x], [y], filter_width=2, stride_w=2)
    b.output(y)
    case = Case(b.build(), [np.array([3, 4, -3, -4, 127, 126, -128, -127], np.int8).reshape(1, 1, 8, 1)])
    check_cases([case])
    assert case.expected[0].ravel().tolist() == [4, -4, 127, -128]


def test_pad_merges_unpadded_dimensions():
    assert merged_dims((2, 3, 4, 5), np.array([[0, 0], [1, 1], [0, 0], [0, 0]])) == [(2, 0, 0), (60, 20, 20)]
    assert merged_dims((2, 3), np.array([[0, 0], [0, 0]])) == [(6, 0, 0)]
    assert merged_dims((), np.zeros((0, 2))) == [(1, 0, 0)]


# ----------------------------------------------------------------------------------------------------------
# ADD and MUL


@st.composite
def broadcast_shapes(draw):
    out_rank = draw(st.integers(1, 5))
    out_shape = tuple(draw(st.lists(st.integers(1, 4), min_size=out_rank, max_size=out_rank)))
    shapes = []
    for lowest_rank in (1, 0):
        rank = draw(st.integers(lowest_rank, out_rank))
        tail = out_shape[out_rank - rank:]
        shapes.append(tuple(d if draw(st.booleans()) else 1 for d in tail))
    if draw(st.booleans()):
        shapes.reverse()
    return shapes, tuple(np.broadcast_shapes(*shapes))


def binary_quant(rng, op_type):
    s1, s2 = log_uniform(rng, 0.002, 0.5), log_uniform(rng, 0.002, 0.5)
    so = (s1 + s2) * rng.uniform(0.3, 2.0) if op_type == "ADD" else s1 * s2 * 128 * rng.uniform(0.05, 3.0)
    zps = rng.integers(-128, 128, 3)
    return [{"scale": s1, "zero_point": int(zps[0])}, {"scale": s2, "zero_point": int(zps[1])},
            {"scale": float(np.float32(so)), "zero_point": int(zps[2])}]


@st.composite
def binary_case(draw, dtype):
    rng = np.random.default_rng(draw(seeds))
    op_type = draw(st.sampled_from(["ADD", "MUL"]))
    shapes, out_shape = draw(broadcast_shapes())
    constant = draw(st.sampled_from([None, 0, 1]))  # which input is a constant
    q = binary_quant(rng, op_type) if dtype == np.int8 else [{}, {}, {}]
    b = GraphBuilder()
    inputs, feeds = [], []
    for i, shape in enumerate(shapes):
        if constant == i or shape == ():  # rank-0 tensors become constants
            inputs.append(b.constant(f"c{i}", values(rng, shape, dtype)[2], **q[i]))
        else:
            inputs.append(b.input(f"x{i}", shape, dtype, **q[i]))
            feeds.append(values(rng, shape, dtype))
    assume(feeds)
    out = b.activation("out", out_shape, dtype, **q[2])
    b.op(op_type, inputs, [out], fused_activation_function=draw(st.sampled_from(ACTIVATIONS)))
    b.output(out)
    return valid_case(Case, b.build(), feeds)


@SETTINGS
@given(st.lists(binary_case(np.int8), min_size=3, max_size=7))
def test_add_mul_int8(cases):
    cases = [c for c in cases if c is not None]
    assume(cases)
    check_cases(cases)


@settings(SETTINGS, max_examples=max(4, EXAMPLES * 4 // 5))
@given(st.lists(binary_case(np.float32), min_size=3, max_size=7))
def test_add_mul_float32(cases):
    cases = [c for c in cases if c is not None]
    assume(cases)
    check_cases(cases)


def test_add_mul_extremes_under_sanitizers():
    """Extreme zero points, large MUL multipliers (left shifts that wrap like TFLM's int32), float
    overflow to the clamp, per-channel constants, scalars: under ASan and UBSan."""
    rng = np.random.default_rng(1)
    cases = []
    for op_type, dtype, shapes, quant, constant in [
        ("ADD", np.int8, [(1, 3, 4, 5), (1, 3, 4, 5)], [(0.05, -128), (0.05, 127), (0.1, 0)], None),
        ("ADD", np.int8, [(1, 3, 4, 5), (5,)], [(0.02, 3), (0.3, -7), (0.2, 5)], 1),
        ("ADD", np.int8, [(5,), (1, 3, 4, 5)], [(0.3, -7), (0.02, 3), (0.2, 5)], 0),
        ("ADD", np.int8, [(2, 3, 1), (1, 1, 4)], [(0.3, -7), (0.02, 3), (0.2, 5)], None),
        ("MUL", np.int8, [(1, 4, 6), (6,)], [(0.5, -128), (0.5, 127), (0.0005, 0)], 1),
        ("MUL", np.int8, [(1, 4, 6), (1, 4, 6)], [(0.9, -128), (0.9, -128), (1e-4, 0)], None),
        ("MUL", np.int8, [(1, 4, 6), ()], [(0.1, 0), (0.2, 0), (0.03, 0)], 1),
        ("MUL", np.int8, [(1, 4, 6), (1, 4, 6)], [(1.0, 0), (1.0, 1), (1e-9, 127)], None),  # shift 30: wraps
        # a multiplier 103 below 2^31 with shift 30: products = 2 mod 4 wrap to INT32_MIN and come out at
        # -(2^31 - 103); adding the zero point -128 in int32 would overflow (the C saturates, as the reference)
        ("MUL", np.int8, [(1, 4, 6), (1, 4, 6)], [(1.1238833665847778, 0), (1.1213841438293457, 0),
                                                  (1.1737505412057203e-09, -128)], None),
        ("ADD", np.float32, [(1, 4, 6), (1, 4, 6)], None, None),
        ("MUL", np.float32, [(1, 4, 6), (4, 1)], None, 1),
    ]:
        q = [{"scale": s, "zero_point": z} for s, z in quant] if quant else [{}, {}, {}]
        b = GraphBuilder()
        inputs, feeds = [], []
        for i, shape in enumerate(shapes):
            if constant == i:
                data = values(rng, shape, dtype)[0 if dtype == np.int8 else 2]
                inputs.append(b.constant(f"c{i}", data, **q[i]))
            else:
                inputs.append(b.input(f"x{i}", shape, dtype, **q[i]))
                x = values(rng, shape, dtype)
                if dtype == np.float32:
                    x[0] = 3e38 if i == 0 else 2.0  # overflows to inf, clamped to the float range
                    x[1] = -3e38 if i == 0 else 2.0
                feeds.append(x)
        out = b.activation("out", np.broadcast_shapes(*shapes), dtype, **q[2])
        b.op(op_type, inputs, [out])
        b.output(out)
        cases.append(Case(b.build(), feeds))
    check_cases(cases, sanitize=True)


def test_broadcast_plan_merges_and_specialises():
    assert broadcast_plan((1, 4, 6), (1, 4, 6), (1, 4, 6)) == ([24], [1], [1])  # same shape: one loop
    assert broadcast_plan((1, 3, 4, 5), (5,), (1, 3, 4, 5)) == ([12, 5], [5, 1], [0, 1])  # per channel
    assert broadcast_plan((1, 3, 4, 5), (), (1, 3, 4, 5)) == ([60], [1], [0])  # scalar
    assert broadcast_plan((2, 3, 1), (1, 1, 4), (2, 3, 4)) == ([6, 4], [1, 0], [0, 1])
    assert broadcast_plan((1,), (1, 1), (1, 1)) == ([1], [1], [1])


# ----------------------------------------------------------------------------------------------------------
# Activations

shapes = st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple)
SOFTMAX_OUT = {"scale": 1.0 / 256, "zero_point": -128}


def one_op(op_type, shape, dtype, in_quant=None, out_quant=None, out_dtype=None, **options):
    b = GraphBuilder()
    x = b.input("x", shape, dtype, **(in_quant or {}))
    y = b.activation("y", shape, out_dtype or dtype, **(out_quant or {}))
    b.op(op_type, [x], [y], **options)
    b.output(y)
    return b.build()


def unary_quant(rng, op_type, in_scale, in_zp):
    """Output quantization as a converter would choose it (see test_kernels_activations.py)."""
    if op_type == "LOGISTIC":
        return dict(SOFTMAX_OUT)
    if op_type == "RELU6" and rng.random() < 0.7:
        return {"scale": in_scale, "zero_point": in_zp}
    low = {"HARD_SWISH": -0.375, "RELU": 0.0, "RELU6": 0.0}[op_type]
    high = in_scale * (127 - in_zp) * rng.uniform(0.3, 1.5)
    high = min(high, 6.0) if op_type == "RELU6" else high
    scale = max(high - low, 1e-3) / 255
    if op_type == "HARD_SWISH":
        scale = max(scale, in_scale / 100)
    return {"scale": float(np.float32(scale)), "zero_point": int(np.clip(round(-128 - low / scale), -128, 127))}


@st.composite
def activation_case(draw):
    rng = np.random.default_rng(draw(seeds))
    op_type = draw(st.sampled_from(["SOFTMAX", "LOGISTIC", "HARD_SWISH", "RELU", "RELU6"]))
    shape = draw(shapes)
    in_quant = random_quant(rng, 0.003, 0.5)
    if op_type == "SOFTMAX":
        graph = one_op(op_type, shape, np.int8, in_quant, SOFTMAX_OUT,
                       beta=draw(st.sampled_from([1.0, 0.5, 2.0, 0.1, 0.731])))
    else:
        graph = one_op(op_type, shape, np.int8, in_quant,
                       unary_quant(rng, op_type, in_quant["scale"], in_quant["zero_point"]))
    return valid_case(Case, graph, [int8_values(rng, shape)])


@SETTINGS
@given(st.lists(activation_case(), min_size=3, max_size=8))
def test_activations_int8(cases):
    cases = [c for c in cases if c is not None]
    assume(cases)
    check_cases(cases)


@settings(SETTINGS, max_examples=max(3, EXAMPLES * 3 // 5))
@given(st.lists(st.tuples(st.sampled_from(["HARD_SWISH", "RELU", "RELU6"]), shapes, seeds), min_size=2, max_size=6))
def test_activations_float32(specs):
    cases = []
    for op_type, shape, seed in specs:
        x = float_values(np.random.default_rng(seed), shape, scale=6.0)
        x[0].flat[:4] = [-3.0, 3.0, 6.0, -0.0][: x[0].size]  # the knees, and -0.0 (kept by RELU as TFLM)
        cases.append(Case(one_op(op_type, shape, np.float32), [x]))
    check_cases(cases)


def test_softmax_int8_long_rows_and_tiny_scales_under_sanitizers():
    """Long rows (sum of exps up to what TFLM holds), scales where diff_min cuts most values, beta."""
    rng = np.random.default_rng(3)
    cases = []
    for depth, scale, beta in [(1000, 0.2, 1.0), (500, 0.004, 1.0), (17, 1.0, 0.05), (10, 2.0, 1.0),
                               (300, 0.05, 1.0)]:
        graph = one_op("SOFTMAX", (1, depth), np.int8, {"scale": scale, "zero_point": 0}, SOFTMAX_OUT, beta=beta)
        if depth > 512:  # inputs TFLM can run: most values far below the row maximum
            x = rng.integers(-128, -60, (BATCH, 1, depth), dtype=np.int8)
            x[:, 0, rng.integers(0, depth, BATCH)] = 127
        else:
            x = int8_values(rng, (1, depth))
        cases.append(Case(graph, [x]))
    check_cases(cases, sanitize=True)


def test_unary_tables_hold_the_reference_on_every_input():
    """The 256-entry tables are the reference kernel's outputs, indexed by the input byte."""
    graph = one_op("LOGISTIC", (1, 32), np.int8, {"scale": 0.05, "zero_point": 30}, SOFTMAX_OUT)
    table = reference_table(graph.ops[0])
    every = np.arange(-128, 128, dtype=np.int8)
    expected = microforge.run(graph, every.reshape(8, 32)).reshape(-1)
    assert np.array_equal(table[every.view(np.uint8)], expected)
    graph = one_op("SOFTMAX", (1, 4), np.int8, {"scale": 0.2, "zero_point": 0}, SOFTMAX_OUT)
    exps = softmax_exp_table(graph.ops[0])
    assert exps[0] == 2**31 - 1 and np.all(np.diff(exps) <= 0) and exps[-1] == 0  # exp(0) = 1; cut below diff_min


def test_every_int8_value_through_the_tables():
    """All 256 int8 inputs for a spread of scales: every table entry and saturation edge, one build."""
    rng = np.random.default_rng(11)
    every = np.arange(-128, 128, dtype=np.int8).reshape(8, 1, 32)
    cases = []
    for op_type in ["LOGISTIC", "HARD_SWISH", "RELU", "RELU6"]:
        for in_scale, in_zp in [(0.01, 0), (0.05, 30), (0.25, 127), (1.0, -128)]:
            graph = one_op(op_type, (1, 32), np.int8, {"scale": in_scale, "zero_point": in_zp},
                           unary_quant(rng, op_type, in_scale, in_zp))
            case = valid_case(Case, graph, [every])
            if case is not None:
                cases.append(case)
    assert len(cases) >= 12
    check_cases(cases)


@pytest.mark.parametrize("op_type", ["SOFTMAX", "LOGISTIC"])
def test_float_exp_ops_call_their_kernels(op_type, tmp_path):
    """float32 SOFTMAX and LOGISTIC run on libm's expf, so not byte for byte: their accuracy against the
    reference is tested in test_codegen_float_activations.py."""
    generate(one_op(op_type, (1, 4), np.float32), tmp_path)
    assert f"mf_{op_type.lower()}_f32(" in (tmp_path / "model.c").read_text()


# ----------------------------------------------------------------------------------------------------------
# MEAN


@st.composite
def mean_case(draw, dtype):
    rng = np.random.default_rng(draw(seeds))
    rank = draw(st.integers(1, 5))
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=rank, max_size=rank)))
    distinct = draw(st.lists(st.integers(0, rank - 1), min_size=1, max_size=rank, unique=True))
    axes = [a - rank if draw(st.booleans()) else a for a in distinct]
    if draw(st.booleans()):
        axes.append(axes[0])
    keep_dims = draw(st.booleans())
    in_quant = out_quant = {}
    if dtype == np.int8:
        in_quant = random_quant(rng)
        out_quant = in_quant if draw(st.booleans()) else {
            "scale": float(np.float32(in_quant["scale"] * rng.uniform(0.1, 1.5))), "zero_point": int(rng.integers(-128, 128))}
    b = GraphBuilder()
    x = b.input("x", shape, dtype, **in_quant)
    axis = b.constant("axis", np.array(axes, dtype=np.int32))
    reduced = {a % rank for a in axes}
    out_shape = tuple(1 if d in reduced else n for d, n in enumerate(shape) if keep_dims or d not in reduced)
    y = b.activation("y", out_shape, dtype, **out_quant)
    b.op("MEAN", [x, axis], [y], keep_dims=keep_dims)
    b.output(y)
    return Case(b.build(), [values(rng, shape, dtype)])


@SETTINGS
@given(st.lists(st.sampled_from([np.int8, np.float32]).flatmap(mean_case), min_size=3, max_size=8))
def test_mean(cases):
    check_cases(cases)


def test_mean_global_average_pool_and_long_sums_under_sanitizers():
    """NHWC over H and W (the common case), and sums long enough to need the pre-shift and wrap."""
    rng = np.random.default_rng(5)
    cases = []
    for shape, axes, q_in, q_out in [((1, 7, 9, 16), [1, 2], (0.04, -7), (0.02, 3)),
                                     ((1, 7, 9, 16), [-2, -3], (0.04, -7), (0.04, -7)),
                                     ((1, 128, 130), [1, 2], (0.1, 127), (0.001, -128)),
                                     ((3, 1, 5), [0, 2], (0.1, -128), (0.3, 0))]:
        for dtype in (np.int8, np.float32):
            b = GraphBuilder()
            qi = {"scale": q_in[0], "zero_point": q_in[1]} if dtype == np.int8 else {}
            qo = {"scale": q_out[0], "zero_point": q_out[1]} if dtype == np.int8 else {}
            x = b.input("x", shape, dtype, **qi)
            reduced = {a % len(shape) for a in axes}
            y = b.activation("y", tuple(n for d, n in enumerate(shape) if d not in reduced), dtype, **qo)
            b.op("MEAN", [x, b.constant("axis", np.array(axes, np.int32))], [y])
            b.output(y)
            cases.append(Case(b.build(), [values(rng, shape, dtype)]))
    check_cases(cases, sanitize=True)


def test_mean_dimension_groups():
    assert dimension_groups((1, 7, 9, 16), {1, 2}) == ([[16, 1]], [[63, 16]])
    assert dimension_groups((2, 3, 4), {0, 2}) == ([[3, 4]], [[2, 12], [4, 1]])
    assert dimension_groups((1, 1), {0}) == ([[1, 0]], [[1, 0]])


# ----------------------------------------------------------------------------------------------------------
# QUANTIZE and DEQUANTIZE


@st.composite
def quantize_case(draw):
    rng = np.random.default_rng(draw(seeds))
    kind = draw(st.sampled_from(["float->int8", "int8->int8", "dequantize"]))
    shape = draw(shapes)
    out_quant = random_quant(rng, 0.001, 0.5)
    if kind == "float->int8":
        graph = one_op("QUANTIZE", shape, np.float32, None, out_quant, out_dtype=np.int8)
        x = float_values(rng, shape, scale=out_quant["scale"] * 100)
        specials = np.array([np.nan, np.inf, -np.inf, 3e38, -3e38, 0.5 * out_quant["scale"],
                             -0.5 * out_quant["scale"], 2.5 * out_quant["scale"], -0.0, 1e-40], np.float32)
        x[0].flat[:] = np.resize(specials, x[0].size)
        return Case(graph, [x])
    if kind == "int8->int8":
        graph = one_op("QUANTIZE", shape, np.int8, random_quant(rng, 0.001, 0.5), out_quant)
        return valid_case(Case, graph, [int8_values(rng, shape)])
    graph = one_op("DEQUANTIZE", shape, np.int8, out_quant, None, out_dtype=np.float32)
    return Case(graph, [int8_values(rng, shape)])


@SETTINGS
@given(st.lists(quantize_case(), min_size=3, max_size=8))
def test_quantize_dequantize(cases):
    cases = [c for c in cases if c is not None]
    assume(cases)
    check_cases(cases)


def test_quantize_halves_round_away_from_zero():
    graph = one_op("QUANTIZE", (1, 8), np.float32, None, {"scale": 0.5, "zero_point": 1}, out_dtype=np.int8)
    x = np.array([[0.25, -0.25, 0.75, -0.75, 1e9, -1e9, np.nan, 0.2499999]], np.float32)
    case = Case(graph, [x])
    check_cases([case], sanitize=True)
    assert case.expected[0].ravel().tolist() == [2, 0, 3, -1, 127, -128, 1, 1]


# ----------------------------------------------------------------------------------------------------------
# RESHAPE, SQUEEZE, EXPAND_DIMS, CONCATENATION


@st.composite
def shape_case(draw):
    rng = np.random.default_rng(draw(seeds))
    op_type = draw(st.sampled_from(["RESHAPE", "SQUEEZE", "EXPAND_DIMS", "CONCATENATION"]))
    dtype = np.dtype(draw(st.sampled_from([np.int8, np.float32, np.int32, np.int16])))
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple))
    quant = random_quant(rng) if dtype == np.int8 else {}

    def feed(s):
        return int8_values(rng, s) if dtype == np.int8 else (
            float_values(rng, s) if dtype == np.float32 else rng.integers(-1000, 1000, (BATCH,) + s).astype(dtype))

    # (An op on constants alone is folded, not run: the interpreter gives it a batch of one. The copying
    # path of RESHAPE and friends is covered by test_shape_ops_without_aliasing.)
    b = GraphBuilder()
    x = b.input("x", shape, dtype, **quant)
    feeds = [feed(shape)]
    if op_type == "RESHAPE":
        size = int(np.prod(shape))
        target = list(draw(st.permutations(list(shape)))) + [1] * draw(st.integers(0, 2))
        target = [size] if draw(st.booleans()) else target
        if draw(st.booleans()):
            target[draw(st.integers(0, len(target) - 1))] = -1
        y_shape = tuple(size // -int(np.prod(target)) if d == -1 else d for d in target)
        y = b.activation("y", y_shape, dtype, **quant)
        b.op("RESHAPE", [x, b.constant("shape", np.array(target, np.int32))], [y])
    elif op_type == "SQUEEZE":
        ones = [d for d, n in enumerate(shape) if n == 1]
        dims = draw(st.lists(st.sampled_from(ones), unique=True)) if ones else []
        drop = set(dims) if dims else set(ones)
        y = b.activation("y", tuple(n for d, n in enumerate(shape) if d not in drop), dtype, **quant)
        b.op("SQUEEZE", [x], [y], squeeze_dims=dims)
    elif op_type == "EXPAND_DIMS":
        axis = draw(st.integers(-len(shape) - 1, len(shape)))
        position = axis % (len(shape) + 1)
        y = b.activation("y", shape[:position] + (1,) + shape[position:], dtype, **quant)
        b.op("EXPAND_DIMS", [x, b.constant("axis", np.array([axis], np.int32))], [y])
    else:
        axis = draw(st.integers(-len(shape), len(shape) - 1))
        a = axis % len(shape)
        inputs = [x]
        for i in range(draw(st.integers(0, 3))):
            s = shape[:a] + (draw(st.integers(1, 3)),) + shape[a + 1:]
            # (constant inputs are left to test_all_families_under_sanitizers: the reference's
            # concatenation can return a Fortran-ordered array then, which the planner's check rejects)
            inputs.append(b.input(f"x{i}", s, dtype, **quant))
            feeds.append(feed(s))
        out_shape = shape[:a] + (sum(t.shape[a] for t in inputs),) + shape[a + 1:]
        y = b.activation("y", out_shape, dtype, **quant)
        b.op("CONCATENATION", inputs, [y], axis=axis)
    b.output(y)
    return Case(b.build(), feeds)


@SETTINGS
@given(st.lists(shape_case(), min_size=3, max_size=8))
def test_shape_ops(cases):
    check_cases(cases)


@settings(SETTINGS, max_examples=max(3, EXAMPLES * 3 // 5))
@given(st.lists(shape_case(), min_size=3, max_size=6))
def test_shape_ops_without_aliasing(cases):
    """TFLM's plan gives every tensor its own buffer: RESHAPE and friends copy."""
    check_cases(cases, strategy="tflm")


def test_reshape_aliased_by_the_planner_is_free(tmp_path):
    b = GraphBuilder()
    x = b.input("x", (1, 4, 6), np.int8, scale=0.1, zero_point=0)
    r = b.activation("r", (1, 4, 6), np.int8, scale=0.1, zero_point=0)
    s = b.activation("s", (1, 24), np.int8, scale=0.1, zero_point=0)
    y = b.activation("y", (1, 24), np.int8, scale=0.1, zero_point=0)
    b.op("RELU", [x], [r])
    b.op("RESHAPE", [r, b.constant("shape", np.array([1, 24], np.int32))], [s])
    b.op("RELU6", [s], [y])
    b.output(y)
    graph = b.build()
    rng = np.random.default_rng(0)
    case = Case(graph, [int8_values(rng, (1, 4, 6))])
    aliased = check_cases([case])
    assert "shares the input's storage" in (aliased.generated.directory / "model.c").read_text()
    copied = check_cases([Case(graph, case.feeds)], strategy="tflm")
    assert re.search(r"memmove\(", (copied.generated.directory / "model.c").read_text())


# ----------------------------------------------------------------------------------------------------------
# Everything at once under the sanitizers, and malformed ops


def test_all_families_under_sanitizers():
    rng = np.random.default_rng(2024)
    cases: list[Case] = []
    for op_type in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        for dtype in (np.int8, np.float32):
            q = {"scale": 0.05, "zero_point": -3} if dtype == np.int8 else {}
            b = GraphBuilder()
            x = b.input("x", (1, 9, 7, 3), dtype, **q)
            y = b.activation("y", (1, 5, 4, 3), dtype, **q)
            b.op(op_type, [x], [y], padding="SAME", stride_h=2, stride_w=2, filter_height=4, filter_width=3,
                 fused_activation_function="RELU6")
            b.output(y)
            cases.append(Case(b.build(), [values(rng, (1, 9, 7, 3), dtype)], exact=dtype == np.int8 or
                              op_type == "MAX_POOL_2D"))
    for dtype in (np.int8, np.float32):
        q = {"scale": 0.05, "zero_point": -3} if dtype == np.int8 else {}
        b = GraphBuilder()
        x = b.input("x", (1, 3, 4, 5), dtype, **q)
        y = b.activation("y", (1, 6, 4, 8), dtype, **q)
        b.op("PADV2", [x, b.constant("p", np.array([[0, 0], [1, 2], [0, 0], [3, 0]], np.int32)),
                       b.constant("v", np.array([7], dtype), **q)], [y])
        b.output(y)
        cases.append(Case(b.build(), [values(rng, (1, 3, 4, 5), dtype)]))
    for op_type in ("LOGISTIC", "HARD_SWISH", "RELU", "RELU6"):
        graph = one_op(op_type, (2, 3, 5), np.int8, {"scale": 0.05, "zero_point": 10},
                       unary_quant(rng, op_type, 0.05, 10))
        cases.append(Case(graph, [int8_values(rng, (2, 3, 5))]))
    for op_type in ("HARD_SWISH", "RELU", "RELU6"):
        cases.append(Case(one_op(op_type, (2, 3, 5), np.float32), [float_values(rng, (2, 3, 5), 5.0)]))
    cases.append(Case(one_op("DEQUANTIZE", (1, 40), np.int8, {"scale": 0.3, "zero_point": -9}, None,
                             out_dtype=np.float32), [int8_values(rng, (1, 40))]))
    cases.append(Case(one_op("QUANTIZE", (1, 40), np.int8, {"scale": 0.3, "zero_point": -9},
                             {"scale": 0.07, "zero_point": 4}), [int8_values(rng, (1, 40))]))
    b = GraphBuilder()
    xs = [b.input(f"x{i}", (1, 2, n, 3), np.float32) for i, n in enumerate((1, 4))]
    xs.append(b.constant("k", float_values(rng, (1, 2, 2, 3), batch=1)[0]))
    y = b.activation("y", (1, 2, 7, 3), np.float32)
    b.op("CONCATENATION", xs, [y], axis=-2)
    b.output(y)
    cases.append(Case(b.build(), [float_values(rng, (1, 2, n, 3)) for n in (1, 4)]))
    check_cases(cases, sanitize=True)


def test_malformed_ops_fail_naming_the_op(tmp_path):
    graph = one_op("RELU", (1, 4), np.int8, {"scale": 0.1, "zero_point": 0}, {"scale": 0.1, "zero_point": 0})
    graph.outputs[0].shape = (1, 5)
    with pytest.raises(ModelError, match=r"op 0 \(RELU\).*'y'"):
        generate(graph, tmp_path / "a")
    graph = one_op("LOGISTIC", (1, 4), np.int8, {"scale": 0.1, "zero_point": 0}, {"scale": 0.01, "zero_point": -128})
    with pytest.raises(UnsupportedError, match=r"op 0 \(LOGISTIC\).*1/256"):
        generate(graph, tmp_path / "b")
    b = GraphBuilder()
    x = b.input("x", (1, 4), np.int8, scale=0.1, zero_point=0)
    y = b.activation("y", (1, 4), np.int8, scale=0.1, zero_point=0)
    b.op("ADD", [x, b.input("z", (1, 4), np.int8, scale=1.0, zero_point=0)], [y],
         fused_activation_function="TANH")
    b.output(y)
    with pytest.raises(MicroforgeError, match=r"op 0 \(ADD\)"):
        generate(b.build(), tmp_path / "c")
