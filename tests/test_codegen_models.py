"""The C backend end to end: MLPerf Tiny models and random graphs through the generated C."""

import json
import shutil
import subprocess

import numpy as np
import pytest
from conftest import INT8_MODELS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import microforge
from microforge.cli import app
from microforge.codegen import compile_host, generate
from microforge.codegen.validate import validate_target
from microforge.graph.random_graph import random_graph
from microforge.plan.validate import random_inputs
from microforge.reference.interpreter import run_batched

ARM_FLAGS = {
    "cortex-m4": ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"],
    "cortex-m7": ["-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"],
    "cortex-m0plus": ["-mcpu=cortex-m0plus", "-mthumb"],
}


@pytest.mark.parametrize("name", list(INT8_MODELS))
def test_mlperf_model_is_bit_exact_on_host(name):
    graph = microforge.load(INT8_MODELS[name])
    batches = random_inputs(graph, 100, seed=3)
    model = compile_host(graph)
    got, want = model.run_batched(batches), run_batched(graph, batches)
    assert all(np.array_equal(g, w) for g, w in zip(got, want))
    # Scratch is planned with the activations; outputs may overlap dying inputs where the kernels declare
    # a safe distance, so the arena is at most the layer-wise bound (and below it where overlaps pay).
    assert model.generated.arena_bytes <= model.generated.plan.lower_bound_bytes


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1))
def test_random_graph_is_bit_exact_under_sanitizers(seed):
    graph = random_graph(seed)
    batches = random_inputs(graph, 3, seed=seed)
    got = compile_host(graph, sanitize=True).run_batched(batches)
    want = run_batched(graph, batches)
    assert all(np.array_equal(g, w) for g, w in zip(got, want)), f"seed {seed}"


@pytest.mark.parametrize("target", list(ARM_FLAGS))
def test_generated_code_compiles_warning_free_for_cortex_m(target, tmp_path):
    compiler = shutil.which("arm-none-eabi-gcc")
    assert compiler, "arm-none-eabi-gcc is missing: scripts/setup.sh installs gcc-arm-none-eabi"
    generated = generate(microforge.load(INT8_MODELS["kws"]), tmp_path, target=target)
    for source in generated.sources:
        done = subprocess.run([compiler, *ARM_FLAGS[target], "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror",
                               "-c", source, "-o", "/dev/null"], cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_generated_folder_is_self_contained(tmp_path):
    generated = generate(microforge.load(INT8_MODELS["ic"]), tmp_path, target="portable")
    files = {p.name for p in tmp_path.iterdir()}
    assert {"model.h", "model.c", "Makefile", "CMakeLists.txt", "README.md", "mf_common.h"} <= files
    done = subprocess.run(["make", "-s"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    header = (tmp_path / "model.h").read_text()
    assert f"#define MF_ARENA_BYTES {generated.arena_bytes}" in header
    assert "#define MF_INPUT0_SHAPE {1, 32, 32, 3}" in header
    assert "malloc" not in (tmp_path / "model.c").read_text()


def test_validate_command_on_host():
    result = CliRunner().invoke(app, ["validate", str(INT8_MODELS["kws"]), "--target", "host", "--inputs", "20",
                                      "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["bit_exact"] and report["mismatches"] == 0 and report["samples"] == 20
    assert report["arena_bytes"] == 8_448  # below the 16,000-byte layer-wise bound: outputs overlap inputs


@pytest.mark.parametrize("board", ["qemu-m4", "qemu-m7"])
@pytest.mark.parametrize("name", list(INT8_MODELS))
def test_mlperf_model_is_bit_exact_on_emulated_cortex_m(name, board):
    graph = microforge.load(INT8_MODELS[name])
    report = validate_target(graph, board, count=3)
    assert report["bit_exact"], report
    assert report["instructions_per_inference"] > 0 and report["stack_bytes"] > 0
    assert report["flash_bytes"] >= sum(t.nbytes for t in graph.constants)  # the weights are in the ELF


def test_ops_without_c_are_listed_all_at_once(tmp_path):
    """An int8 SOFTMAX whose output is not scale 1/256 (TFLM refuses it) and an op type without any C
    kernel: both offending ops are named in one error."""
    from microforge.errors import UnsupportedError
    from microforge.graph.builder import GraphBuilder

    b = GraphBuilder()
    x = b.input("x", (1, 4), np.int8, scale=0.1, zero_point=0)
    y = b.activation("y", (1, 4), np.int8, scale=0.1, zero_point=0)
    z = b.activation("z", (1, 4), np.int8, scale=0.1, zero_point=0)
    b.op("SOFTMAX", [x], [y])
    b.op("SIN", [y], [z])
    b.output(z)
    with pytest.raises(UnsupportedError) as info:
        generate(b.build(), tmp_path)
    assert "op 0 (SOFTMAX)" in str(info.value) and "op 1 (SIN)" in str(info.value)


# Measured: with the kernels' safe distances the arena drops below the layer-wise lower bound.
BELOW_LAYER_BOUND = {"kws": (8_448, 16_000), "vww": (36_880, 55_296), "ic": (33_584, 49_440)}


@pytest.mark.parametrize("name", list(BELOW_LAYER_BOUND))
def test_overlapping_outputs_go_below_the_layer_bound(name):
    graph = microforge.load(INT8_MODELS[name])
    report = validate_target(graph, "host", count=20)
    assert report["bit_exact"]
    arena, layer_bound = BELOW_LAYER_BOUND[name]
    assert report["arena_bytes"] <= arena < layer_bound


def test_a_wrong_safe_distance_is_caught(monkeypatch):
    """Declaring that 1x1 convolutions may write their output right over their input (distance 0) is
    wrong: the kernel still reads a row for later channels after writing earlier ones. The planner uses
    the lie to shrink the arena, and running the C against the reference exposes the corruption."""
    from microforge.codegen.ops import conv

    graph = microforge.load(INT8_MODELS["vww"])  # where the lie pays: 8 -> 16 channels at 48x48
    honest = validate_target(graph, "host", count=10)
    monkeypatch.setattr(conv, "_rows_safe_distance", lambda rows, cin, cout, block=2: 0)
    lying = validate_target(graph, "host", count=10)
    assert honest["bit_exact"] and lying["arena_bytes"] < honest["arena_bytes"]
    assert not lying["bit_exact"] and lying["mismatches"] > 0


def test_depthwise_runs_backward_where_the_plan_needs_it(tmp_path):
    """KWS alternates 3x3 depthwise layers that write over their input from below (raster order) and from
    above (reverse order), so its 8,000-byte activations do not drift through the arena layer by layer."""
    graph = microforge.load(INT8_MODELS["kws"])
    generated = generate(graph, tmp_path, target="cortex-m4")
    source = (tmp_path / "model.c").read_text()
    assert ".backward = 1" in source and ".backward = 0" in source
    # one buffer plus the larger of one backward distance (7 pixels) and the 1x1 convolutions' scratch
    # (mf_fc_s8_dsp: four rows of 64 channels widened to int16)
    assert generated.arena_bytes <= 8_000 + max(7 * 64, 4 * 64 * 2)


def test_a_wrong_backward_distance_is_caught(monkeypatch):
    """Declaring that a backward depthwise pass may write its output right over its input (above = 0) is
    wrong: pixel i's output then lands on input pixel i, which pixel i - 1 (computed next) still reads."""
    from microforge.codegen.ops import conv
    from microforge.plan.lifetimes import SafeDistance

    graph = microforge.load(INT8_MODELS["kws"])
    honest = validate_target(graph, "host", count=10)
    real = conv.depthwise_safe_distance
    monkeypatch.setattr(conv, "depthwise_safe_distance",
                        lambda *args: SafeDistance(below=real(*args).below, above=0))
    lying = validate_target(graph, "host", count=10)
    assert honest["bit_exact"] and lying["arena_bytes"] < honest["arena_bytes"]
    assert not lying["bit_exact"] and lying["mismatches"] > 0
