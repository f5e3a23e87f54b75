"""TFLite Micro's memory plan reproduced (microforge.plan.tflm) and offline plans handed to it (tflm_export).

The oracle is the tflite-micro package itself: the "Arena allocation head" its recording allocator
prints must equal `tflm_arena_bytes` on the MLPerf Tiny models, on random graphs, on random DAGs built to
stress the planner (many equal sizes, long-lived and stray tensors, several outputs, reduce scratch), and
on models that carry an offline plan; and a model carrying an offline plan must compute exactly what the
original computes.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from conftest import INT8_MODELS
from oracle import tflm_interpreter, tflm_run
from tflm_arena import tflm_reported_head_bytes

from microforge.errors import ModelError, PlanError
from microforge.frontend.reader import read_tflite
from microforge.frontend.writer import write_tflite
from microforge.graph.builder import GraphBuilder
from microforge.graph.ir import Graph
from microforge.graph.random_graph import random_graph
from microforge.plan.lifetimes import Buffer, buffers_for, storage_roots
from microforge.plan.placement import arena_size, check_placement, conflicts
from microforge.plan.tflm import (
    OFFLINE_METADATA,
    fixed_offsets,
    place_tflm,
    scratch_requests,
    tflm_arena_bytes,
    tflm_buffers,
)
from microforge.plan.tflm_export import (
    check_offline_plan,
    offline_plan_bytes,
    with_offline_plan,
)

MLPERF_HEADS = {"kws": 16000, "vww": 73728, "ic": 49152, "ad": 768}  # what TFLM reports today


def assert_head_matches(graph: Graph, model: bytes | None = None) -> int:
    model = write_tflite(graph) if model is None else model
    buffers = tflm_buffers(graph)
    fixed = fixed_offsets(graph, buffers)
    offsets = place_tflm(buffers, fixed)
    roots = storage_roots(graph)
    for a, b in conflicts(buffers, offsets):  # only an offline plan may share bytes, and only along a reshape
        assert a.index in fixed and b.index in fixed and offsets[a.index] == offsets[b.index], (a, b)
        assert roots[a.tensors[0].index] == roots[b.tensors[0].index], (a, b)
    ours = tflm_arena_bytes(graph)
    assert ours == arena_size(buffers, offsets)
    theirs = tflm_reported_head_bytes(model)
    assert ours == theirs, f"our TFLM head {ours} != TFLM's {theirs}"
    return ours


@pytest.mark.parametrize("name", sorted(INT8_MODELS))
def test_mlperf_head_matches_tflm(name):
    model = INT8_MODELS[name].read_bytes()
    assert assert_head_matches(read_tflite(model), model) == MLPERF_HEADS[name]


@pytest.mark.parametrize("seed", range(40))
def test_random_graph_head_matches_tflm(seed):
    assert_head_matches(random_graph(seed))


def stress_graph(seed: int) -> Graph:
    """A random DAG over (1, n) int8 tensors whose sizes repeat (ties in TFLM's size order), whose ops read
    any earlier value (long, overlapping lifetimes), with MEAN scratch, RESHAPE copies, several graph
    outputs (some read again later), and sometimes an unused graph input or a tensor no op mentions."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    sizes = [16, 16, 32, 48, 5, 20, 64, 100]
    q = {"scale": 0.05, "zero_point": 0}
    values = [b.input(f"in{i}", (1, int(rng.choice(sizes))), np.int8, **q) for i in range(int(rng.integers(1, 3)))]
    if rng.random() < 0.3:
        b.input("unused", (1, int(rng.choice(sizes))), np.int8, **q)
    if rng.random() < 0.3:
        b.activation("stray", (1, int(rng.choice(sizes))), np.int8, **q)
    outputs = []
    for k in range(int(rng.integers(3, 14))):
        kind = str(rng.choice(["fc", "concat", "pad", "add", "mean", "reshape"]))
        x = values[int(rng.integers(len(values)))]
        n = x.shape[1]
        if kind == "fc":
            m = int(rng.choice(sizes))
            w = b.constant(f"w{k}", rng.integers(-5, 5, (m, n), dtype=np.int8), scale=0.01, zero_point=0)
            y = b.activation(f"t{k}", (1, m), np.int8, **q)
            b.op("FULLY_CONNECTED", [x, w, None], [y])
        elif kind == "concat":
            z = values[int(rng.integers(len(values)))]
            y = b.activation(f"t{k}", (1, n + z.shape[1]), np.int8, **q)
            b.op("CONCATENATION", [x, z], [y], axis=1)
        elif kind == "pad":
            p = int(rng.integers(0, 20))
            y = b.activation(f"t{k}", (1, n + p), np.int8, **q)
            b.op("PAD", [x, b.constant(f"p{k}", np.array([[0, 0], [0, p]], np.int32))], [y])
        elif kind == "add":
            same = [t for t in values if t.shape == x.shape]
            y = b.activation(f"t{k}", x.shape, np.int8, **q)
            b.op("ADD", [x, same[int(rng.integers(len(same)))]], [y])
        elif kind == "mean":
            y = b.activation(f"t{k}", (1, 1), np.int8, **q)
            b.op("MEAN", [x, b.constant(f"a{k}", np.array([1], np.int32))], [y], keep_dims=True)
        else:
            flat = b.activation(f"t{k}", (n,), np.int8, **q)
            b.op("RESHAPE", [x, b.constant(f"s{k}", np.array([n], np.int32))], [flat])
            y = b.activation(f"t{k}b", (1, n), np.int8, **q)
            b.op("RESHAPE", [flat, b.constant(f"s{k}b", np.array([1, n], np.int32))], [y])
        values.append(y)
        if rng.random() < 0.2:
            outputs.append(y)
    outputs.append(values[-1])
    for t in dict.fromkeys(outputs):
        b.output(t)
    return b.build()


def test_stress_graph_heads_match_tflm():
    for seed in range(150):
        assert_head_matches(stress_graph(seed))


def mean_graph(op_type, dtype, shape, axes, keep_dims):
    b = GraphBuilder()
    q = {"scale": 0.05, "zero_point": 3} if dtype == np.int8 else {}
    x = b.input("x", shape, dtype, **q)
    reduced = {a % len(shape) for a in axes}
    out = tuple(1 if d in reduced else n for d, n in enumerate(shape) if keep_dims or d not in reduced)
    y = b.activation("y", out, dtype, **q)
    b.op(op_type, [x, b.constant("axis", np.array(axes, np.int32))], [y], keep_dims=keep_dims)
    b.output(y)
    return b.build()


@pytest.mark.parametrize("op_type", ["MEAN", "SUM", "REDUCE_MAX"])
@pytest.mark.parametrize("dtype", [np.int8, np.float32])
@pytest.mark.parametrize("shape, axes, keep_dims", [
    ((1, 6, 7, 5), [1, 2], True), ((1, 2, 6, 7, 5), [1], False), ((1, 6, 7, 5), [1, 2, 1, 2, 1, 2, 1, 2, 1], True),
    ((7,), [0], False)])
def test_reduce_scratch_matches_tflm(op_type, dtype, shape, axes, keep_dims):
    graph = mean_graph(op_type, dtype, shape, axes, keep_dims)
    requests = scratch_requests(graph.ops[0])
    assert requests[:2] == [4 * len(shape), 4 * len(axes)]
    assert len(requests) == (3 if op_type != "REDUCE_MAX" and dtype == np.int8 else 2)
    assert_head_matches(graph)


def test_ties_go_to_the_latest_added_buffer():
    # Three 16-byte buffers; 0 and 2 are alive together, 1 overlaps neither. TFLM places 2 first (at 0),
    # then 1 (at 0: no conflict), then 0 above 2.
    buffers = [Buffer("a", 16, 0, 1), Buffer("b", 16, 3, 3), Buffer("c", 16, 1, 2)]
    for i, b in enumerate(buffers):
        b.index = i
    assert place_tflm(buffers) == [16, 0, 0]
    assert place_tflm(buffers, fixed={1: 64}) == [16, 64, 0]


# Offline plans -------------------------------------------------------------------------------------------

def best_fit_by_time(buffers: list[Buffer]) -> list[int]:
    """A plan better than TFLM's greedy on VWW: buffers in order of first use, each in the smallest gap
    that holds it among the placed buffers alive at the same time."""
    offsets = [0] * len(buffers)
    placed: list[Buffer] = []
    for b in sorted(buffers, key=lambda b: (b.first, -b.size, b.index)):
        busy = sorted((offsets[p.index], offsets[p.index] + p.size) for p in placed if p.overlaps_in_time(b))
        best, cursor = None, 0
        for start, end in busy:
            if start - cursor >= b.size and (best is None or start - cursor < best[0]):
                best = (start - cursor, cursor)
            cursor = max(cursor, end)
        offsets[b.index] = best[1] if best else cursor
        placed.append(b)
    check_placement(buffers, offsets)
    return offsets


def plan_by_tensor(graph: Graph) -> tuple[dict[int, int], int]:
    """Tensor index -> offset from `best_fit_by_time` over microforge's buffers (reshapes share one), and
    that plan's arena."""
    buffers = buffers_for(graph)
    offsets = best_fit_by_time(buffers)
    return {t.index: offsets[b.index] for b in buffers for t in b.tensors}, arena_size(buffers, offsets)


def random_inputs(graph: Graph, count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, (count,) + t.shape, dtype=np.int8) for t in graph.inputs]


def assert_same_outputs(original: bytes, planned: bytes, graph: Graph, count: int, seed: int = 0) -> None:
    feeds = random_inputs(graph, count, seed)
    for ours, theirs in zip(tflm_run(planned, feeds), tflm_run(original, feeds)):
        assert ours.dtype == theirs.dtype
        assert np.array_equal(ours, theirs)


def test_offline_plan_shrinks_vww_and_computes_the_same():
    original = INT8_MODELS["vww"].read_bytes()
    graph = read_tflite(original)
    offsets, arena = plan_by_tensor(graph)
    assert arena < MLPERF_HEADS["vww"]
    planned = with_offline_plan(graph, offsets)
    assert OFFLINE_METADATA not in graph.metadata  # the input graph is left alone
    reread = read_tflite(planned)
    assert assert_head_matches(reread, planned) == arena == 55296
    assert_same_outputs(original, planned, graph, count=2)


@pytest.mark.parametrize("seed", range(12))
def test_partial_offline_plan_on_random_graphs(seed):
    """Some tensors fixed by the plan, the rest (and any scratch) placed by TFLM around them."""
    graph = random_graph(seed)
    offsets, arena = plan_by_tensor(graph)
    rng = np.random.default_rng(seed)
    keep = {i: o for i, o in offsets.items() if rng.random() < 0.5}
    original = write_tflite(graph)
    for plan in (offsets, keep):
        planned = with_offline_plan(graph, plan)
        head = assert_head_matches(read_tflite(planned), planned)
        if plan is offsets:
            assert head == arena
        assert_same_outputs(original, planned, graph, count=2, seed=seed)


def test_offline_plan_layout():
    graph = random_graph(3)
    offsets, _ = plan_by_tensor(graph)
    raw = read_tflite(with_offline_plan(graph, offsets)).metadata[OFFLINE_METADATA]
    n = len(graph.tensors)
    assert raw == offline_plan_bytes(graph, offsets)
    assert struct.unpack_from("<3i", raw) == (0, 1, n) and len(raw) == 4 * (3 + n)
    values = struct.unpack_from(f"<{n}i", raw, 12)
    assert all(values[t.index] == -1 for t in graph.constants)
    assert {i: v for i, v in enumerate(values) if v != -1} == offsets


def test_offline_plan_checks():
    graph = random_graph(5)
    offsets, _ = plan_by_tensor(graph)
    first, second = graph.ops[0].inputs[0], graph.ops[0].outputs[0]
    with pytest.raises(PlanError, match="overlaps"):
        check_offline_plan(graph, {first.index: 0, second.index: 8})
    with pytest.raises(PlanError, match="constant"):
        check_offline_plan(graph, {graph.constants[0].index: 0})
    with pytest.raises(PlanError, match="offset -16"):
        check_offline_plan(graph, {first.index: -16})
    with pytest.raises(PlanError, match="tensors"):
        check_offline_plan(graph, {len(graph.tensors): 0})
    check_offline_plan(graph, offsets)


def test_offline_plan_with_the_wrong_tensor_count():
    graph = random_graph(1)
    bad = struct.pack("<4i", 0, 1, 1, 0)
    graph.metadata[OFFLINE_METADATA] = bad
    with pytest.raises(ModelError, match="tensors"):
        tflm_arena_bytes(graph)
    with pytest.raises(RuntimeError, match="allocate"):  # TFLM refuses it too
        tflm_interpreter(write_tflite(graph))
