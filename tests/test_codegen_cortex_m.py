"""The Cortex-M4/M7 kernels' inline assembly, run where it runs: on the emulated cores.

The host tests of test_codegen_conv.py run the same kernels' portable C (with the DSP intrinsics emulated);
the assembly only executes under QEMU. These tests put the kernels' corner shapes and a chain of 3x3
depthwise layers that the planner overlaps (forward and backward) through qemu-m4 and qemu-m7.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_codegen_conv import _dsp_specs, _fixed_specs, build

from microforge.codegen import generate
from microforge.codegen.validate import validate_target
from microforge.graph.builder import GraphBuilder


@pytest.mark.parametrize("board", ["qemu-m4", "qemu-m7"])
def test_kernel_corners_are_bit_exact_on_the_emulated_cores(board):
    graph, feeds = build(_fixed_specs() + _dsp_specs(), seed=1)  # sample 0 saturates every input
    report = validate_target(graph, board, batches=feeds)
    assert report["bit_exact"], report


def depthwise_chain(layers: int = 4, h: int = 6, w: int = 7, c: int = 16) -> GraphBuilder:
    """`layers` 3x3 SAME depthwise convolutions in a row (RELU on every other), int8 per channel."""
    rng = np.random.default_rng(7)
    b = GraphBuilder()
    scale, zp = np.float32(0.05), -3
    x = b.input("x", (1, h, w, c), np.int8, scale=scale, zero_point=zp)
    for i in range(layers):
        w_scales = rng.uniform(0.005, 0.02, c).astype(np.float32)
        weights = b.constant(f"w{i}", rng.integers(-128, 128, (1, 3, 3, c), dtype=np.int8), scale=w_scales,
                             zero_point=0, axis=3)
        bias = b.constant(f"b{i}", rng.integers(-3000, 3000, c).astype(np.int32),
                          scale=(scale * w_scales).astype(np.float32), zero_point=0)
        out_scale, out_zp = np.float32(rng.uniform(0.04, 0.08)), int(rng.integers(-20, 20))
        y = b.activation(f"y{i}", (1, h, w, c), np.int8, scale=out_scale, zero_point=out_zp)
        b.op("DEPTHWISE_CONV_2D", [x, weights, bias], [y], padding="SAME", stride_h=1, stride_w=1,
             depth_multiplier=1, fused_activation_function="RELU" if i % 2 else "NONE")
        x, scale = y, out_scale
    b.output(x)
    return b


def test_overlapped_depthwise_chain_runs_both_ways_on_the_emulated_core(tmp_path):
    """Each layer's output is written over its dying input, from below (raster order) or from above
    (reverse order), so the chain needs about one activation of arena, not two."""
    graph = depthwise_chain().build()
    activation = 6 * 7 * 16
    generated = generate(graph, tmp_path, target="cortex-m4")
    source = (tmp_path / "model.c").read_text()
    assert ".backward = 1" in source
    assert generated.arena_bytes < 2 * activation
    for target in ("host", "qemu-m4"):
        report = validate_target(graph, target, count=4)
        assert report["bit_exact"], report
        assert report["arena_bytes"] < 2 * activation


def add_graph(seed: int, act: str = "NONE") -> tuple:
    """A same-shape int8 ADD fed with every pair of input bytes (65,536 elements), random scales."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    x = b.input("x", (1, 256, 256), np.int8, scale=np.float32(rng.uniform(0.01, 0.2)),
                zero_point=int(rng.integers(-128, 128)))
    y = b.input("y", (1, 256, 256), np.int8, scale=np.float32(rng.uniform(0.01, 0.2)),
                zero_point=int(rng.integers(-128, 128)))
    z = b.activation("z", (1, 256, 256), np.int8, scale=np.float32(rng.uniform(0.02, 0.4)),
                     zero_point=int(rng.integers(-128, 128)))
    b.op("ADD", [x, y], [z], fused_activation_function=act)
    b.output(z)
    every = np.arange(-128, 128, dtype=np.int8)
    return b.build(), [np.repeat(every, 256).reshape(1, 1, 256, 256), np.tile(every, 256).reshape(1, 1, 256, 256)]


@pytest.mark.parametrize("seed, act, target", [(0, "NONE", "host"), (1, "RELU", "host"), (2, "RELU6", "host"),
                                               (3, "NONE", "qemu-m4")])
def test_add_through_tables_is_exact_on_every_input_pair(seed, act, target, tmp_path):
    graph, batches = add_graph(seed, act)
    generate(graph, tmp_path, target="cortex-m4" if target == "qemu-m4" else "host")
    assert "mf_add_s8_table(" in (tmp_path / "model.c").read_text()
    report = validate_target(graph, target, batches=batches)
    assert report["bit_exact"], report


def unprovable_chain(seed: int = 3) -> GraphBuilder:
    """conv 3x3 -> 3x3 depthwise -> 3x3 depthwise -> 1x1 conv -> fully connected, int8 per channel, each
    with a channel whose bias is near 2^30: the kernels' short requantization cannot be proven exact for
    every input, so the Cortex-M code takes the accumulator kernels with TFLite's requantization in full."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    scale, zp = np.float32(0.05), 5
    x = b.input("x", (1, 6, 7, 4), np.int8, scale=scale, zero_point=zp)

    def layer(kind, x, scale, shape, out_shape, i):
        channels = shape[0] if kind != "DEPTHWISE_CONV_2D" else shape[-1]
        w_scales = rng.uniform(0.005, 0.02, channels).astype(np.float32)
        weights = b.constant(f"w{i}", rng.integers(-128, 128, shape, dtype=np.int8), scale=w_scales, zero_point=0,
                             axis=3 if kind == "DEPTHWISE_CONV_2D" else 0)
        values = rng.integers(-3000, 3000, channels).astype(np.int64)
        values[1] = rng.choice([-1, 1]) * (2**30 - int(rng.integers(0, 1000)))
        bias = b.constant(f"b{i}", values.astype(np.int32), scale=(scale * w_scales).astype(np.float32), zero_point=0)
        out_scale, out_zp = np.float32(rng.uniform(0.5, 2.0)), int(rng.integers(-20, 20))
        y = b.activation(f"y{i}", out_shape, np.int8, scale=out_scale, zero_point=out_zp)
        options = {} if kind == "FULLY_CONNECTED" else dict(padding="SAME", stride_h=1, stride_w=1)
        if kind == "DEPTHWISE_CONV_2D":
            options["depth_multiplier"] = 1
        b.op(kind, [x, weights, bias], [y], fused_activation_function="RELU" if i % 2 else "NONE", **options)
        return y, out_scale

    x, scale = layer("CONV_2D", x, scale, (8, 3, 3, 4), (1, 6, 7, 8), 0)
    x, scale = layer("DEPTHWISE_CONV_2D", x, scale, (1, 3, 3, 8), (1, 6, 7, 8), 1)
    x, scale = layer("DEPTHWISE_CONV_2D", x, scale, (1, 3, 3, 8), (1, 6, 7, 8), 2)
    x, scale = layer("CONV_2D", x, scale, (8, 1, 1, 8), (1, 6, 7, 8), 3)
    flat = b.activation("flat", (1, 6 * 7 * 8), np.int8, scale=float(x.scale), zero_point=int(x.zero_point))
    b.op("RESHAPE", [x], [flat], new_shape=[1, 6 * 7 * 8])
    x, scale = layer("FULLY_CONNECTED", flat, scale, (5, 6 * 7 * 8), (1, 5), 4)
    b.output(x)
    return b


def test_layers_without_a_provable_short_requantization_stay_on_the_dsp_kernels(tmp_path):
    from microforge.codegen import compile_host
    import microforge

    graph = unprovable_chain().build()
    generate(graph, tmp_path, target="cortex-m4")
    source = (tmp_path / "model.c").read_text()
    for kernel in ("mf_conv_s8_exact_dsp", "mf_dwconv_3x3_s8_exact_dsp", "mf_fc_s8_exact_dsp"):
        assert kernel in source
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (6,) + graph.inputs[0].shape, dtype=np.int8)
    x[0], x[1] = 127, -128
    expected = microforge.run(graph, x)
    for flags in (["-O2"], ["-O2", "-DMF_CONV_EMULATE_DSP"]):
        got = compile_host(graph, target="cortex-m4", sanitize=True, cflags=flags).run(x)
        np.testing.assert_array_equal(got, expected)
    report = validate_target(graph, "qemu-m4", batches=[x])
    assert report["bit_exact"], report
