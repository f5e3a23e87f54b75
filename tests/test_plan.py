"""The memory planner: valid plans, never larger than TFLM's, at the lower bound where it is reachable."""

import itertools
import json

import numpy as np
import pytest
from conftest import INT8_MODELS
from typer.testing import CliRunner

import microforge
from microforge.cli import app
from microforge.errors import PlanError
from microforge.graph.builder import GraphBuilder
from microforge.graph.random_graph import random_graph
from microforge.plan import STRATEGIES, plan
from microforge.plan.lifetimes import buffers_for, check_schedule, lower_bound
from microforge.plan.placement import check_placement, place_best_fit
from microforge.plan.schedule import best_schedule
from microforge.plan.validate import validate_by_execution

# Layer-wise lower bounds at 16-byte alignment, which the planner must reach.
MLPERF_LOWER_BOUNDS = {"kws": 16_000, "vww": 55_296, "ic": 49_152, "ad": 768}


@pytest.mark.parametrize("name", list(INT8_MODELS))
def test_mlperf_models_are_planned_at_the_lower_bound(name):
    p = plan(microforge.load(INT8_MODELS[name]))
    assert p.lower_bound_bytes == MLPERF_LOWER_BOUNDS[name]
    assert p.arena_bytes == p.lower_bound_bytes and p.proven_optimal
    assert p.arena_bytes <= p.tflm_bytes


def test_vww_beats_tflm_by_a_quarter():
    p = plan(microforge.load(INT8_MODELS["vww"]))
    assert (p.tflm_bytes, p.arena_bytes) == (73_728, 55_296)


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES])
def test_every_strategy_gives_a_valid_plan(strategy):
    graph = microforge.load(INT8_MODELS["vww"])
    p = plan(graph, strategy=strategy, seconds=5)
    check_placement(p.buffers, p.offsets)
    assert p.arena_bytes >= p.lower_bound_bytes
    if strategy == "tflm":
        assert p.arena_bytes == p.tflm_bytes


def test_never_larger_than_tflm_on_random_graphs():
    for seed in range(40):
        graph = random_graph(seed)
        p = plan(graph, seconds=2)
        assert p.arena_bytes <= p.tflm_bytes, f"seed {seed}"
        assert p.arena_bytes >= p.lower_bound_bytes


def test_overlapping_placement_is_refused():
    graph = microforge.load(INT8_MODELS["kws"])
    p = plan(graph)
    offsets = list(p.offsets)
    a, b = next((x, y) for x in p.buffers for y in p.buffers if x is not y and x.overlaps_in_time(y))
    offsets[b.index] = offsets[a.index]
    with pytest.raises(PlanError, match="overlap"):
        check_placement(p.buffers, offsets)


def test_execution_catches_a_wrong_lifetime():
    """A lifetime cut short passes the static check (the plan agrees with the wrong lifetimes), but the
    buffer is reused while a later op still reads it, and running in the arena exposes it."""
    graph = microforge.load(INT8_MODELS["ic"])  # residual adds read tensors long after they are written
    buffers = buffers_for(graph)
    long_lived = max(buffers, key=lambda b: b.last - b.first)
    long_lived.last = long_lived.first + 1
    offsets = place_best_fit(buffers)
    check_placement(buffers, offsets)  # consistent with the (wrong) lifetimes
    tensor_offsets = {t.index: offsets[b.index] for b in buffers for t in b.tensors}
    arena = max(offsets[b.index] + b.size for b in buffers)
    with pytest.raises(PlanError, match="differs"):
        validate_by_execution(graph, list(range(len(graph.ops))), tensor_offsets, arena)


def two_branch_graph():
    """x -> (wide conv -> narrow conv) twice -> concat: running one branch to its end before starting the
    other keeps only one wide tensor alive; the stored order runs both wide convs first."""
    b = GraphBuilder()
    x = b.input("x", (1, 8, 8, 2), np.int8, scale=0.1, zero_point=0)
    rng = np.random.default_rng(0)

    def conv(inp, channels, name):
        w = b.constant(f"{name}_w", rng.integers(-127, 128, (channels, 1, 1, inp.shape[3]), dtype=np.int8),
                       scale=0.01, zero_point=0)
        y = b.activation(name, (1, 8, 8, channels), np.int8, scale=0.05, zero_point=0)
        b.op("CONV_2D", [inp, w, None], [y])
        return y

    wide_a, wide_b = conv(x, 64, "wide_a"), conv(x, 64, "wide_b")
    narrow_a, narrow_b = conv(wide_a, 2, "narrow_a"), conv(wide_b, 2, "narrow_b")
    out = b.activation("out", (1, 8, 8, 4), np.int8, scale=0.05, zero_point=0)
    b.op("CONCATENATION", [narrow_a, narrow_b], [out], axis=3)
    b.output(out)
    return b.build()


def test_schedule_search_finds_the_better_branch_order():
    graph = two_branch_graph()
    order, finished = best_schedule(graph)
    assert finished
    check_schedule(graph, order)
    stored, searched = lower_bound(buffers_for(graph)), lower_bound(buffers_for(graph, order))
    assert searched < stored
    p = plan(graph)
    assert p.schedule == order and p.arena_bytes == searched


def topological_orders(graph):
    producers = graph.producers()
    deps = [{producers[t.index].index for t in op.inputs if t is not None and t.index in producers}
            for op in graph.ops]
    for perm in itertools.permutations(range(len(graph.ops))):
        seen = set()
        ok = True
        for i in perm:
            if not deps[i] <= seen:
                ok = False
                break
            seen.add(i)
        if ok:
            yield list(perm)


def test_schedule_search_matches_brute_force_on_small_graphs():
    checked = 0
    for seed in range(200):
        graph = random_graph(seed, blocks=2, with_head=False)
        if len(graph.ops) > 8:
            continue
        order, _ = best_schedule(graph)
        brute = min(lower_bound(buffers_for(graph, o)) for o in topological_orders(graph))
        assert lower_bound(buffers_for(graph, order)) == brute, f"seed {seed}"
        checked += 1
    assert checked >= 20


def test_plan_json_from_the_command_line():
    result = CliRunner().invoke(app, ["plan", str(INT8_MODELS["vww"]), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["arena_bytes"] == 55_296 and report["tflm_bytes"] == 73_728
    assert report["lower_bound_bytes"] == 55_296
    assert {"tensor", "offset", "size", "first_op", "last_op"} <= set(report["buffers"][0])
    assert sorted(report["schedule"]) == list(range(31))
    assert report["generated_c_arena_bytes"] == 36_880  # the C kernels' overlaps go below the bound


def test_unknown_strategy_is_a_clear_error():
    result = CliRunner().invoke(app, ["plan", str(INT8_MODELS["kws"]), "--strategy", "magic"])
    assert result.exit_code == 2 and "unknown strategy 'magic'" in result.output


def test_written_tflm_plan_shrinks_tflm_arena_and_keeps_outputs(tmp_path):
    from oracle import tflm_run
    from tflm_arena import tflm_reported_head_bytes

    out = tmp_path / "vww_planned.tflite"
    result = CliRunner().invoke(app, ["plan", str(INT8_MODELS["vww"]), "--write-tflm-plan", str(out)])
    assert result.exit_code == 0, result.output
    original = INT8_MODELS["vww"].read_bytes()
    assert tflm_reported_head_bytes(original) == 73_728
    assert tflm_reported_head_bytes(out.read_bytes()) == 55_296
    x = np.random.default_rng(4).integers(-128, 128, size=(3, 1, 96, 96, 3), dtype=np.int8)
    assert np.array_equal(tflm_run(out.read_bytes(), [x])[0], tflm_run(original, [x])[0])


def test_exact_strategy_survives_tensorflow_loaded_first():
    """OR-Tools' solver crashes when TensorFlow was loaded before it; microforge must step aside instead."""
    import subprocess
    import sys

    script = ("import tensorflow, microforge\n"
              "from microforge.plan import plan\n"
              f"p = plan(microforge.load({str(INT8_MODELS['vww'])!r}), strategy='exact', seconds=3)\n"
              "print('arena', p.arena_bytes)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "arena" in done.stdout


def test_safe_distances_open_gaps_below_and_above():
    """An output that may start >= 32 bytes below its dying input or >= 48 bytes above it: placements
    inside that window clash, those outside it do not, whichever of the two is placed first."""
    from microforge.plan.lifetimes import Buffer
    from microforge.plan.placement import conflicts, forbidden_starts

    source = Buffer("in", 128, 0, 1, index=0)
    out = Buffer("out", 128, 1, 2, index=1, below={0: 32}, above={0: 48})
    assert forbidden_starts(out, source, 256) == (256 - 32, 256 + 48)
    assert forbidden_starts(source, out, 256) == (256 - 48, 256 + 32)
    for start, clash in [(256 - 32, False), (256 - 31, True), (256, True), (256 + 47, True), (256 + 48, False)]:
        assert bool(conflicts([source, out], [256, start])) == clash, start
    assert place_best_fit([source, out]) in ([0, 48], [32, 0])  # a gap opened by a distance is used


def test_strided_convolution_outputs_overlap_their_input():
    """VWW's first layer (3x3, stride 2, 96x96x3 -> 48x48x8) writes its outputs over the input it has
    finished with, so the 27,648-byte input and 18,432-byte output share most of their bytes."""
    from microforge.codegen.emit import kernel_memory

    graph = microforge.load(INT8_MODELS["vww"])
    scratch, overlaps = kernel_memory(graph, "cortex-m4")
    first_conv = overlaps[0][0]
    assert 0 < first_conv <= 128
    arena = plan(graph, scratch=scratch, overlaps=overlaps).arena_bytes
    assert arena <= 40 * 1024 < 27_648 + 18_432
