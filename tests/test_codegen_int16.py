"""The int16x8 C kernels (mf_s16.c) against the reference interpreter, byte for byte.

One-op (and one chained) FULLY_CONNECTED graphs with int16 input and output, int8 weights per tensor or
per channel, an int64, int32 or no bias, every fused activation, multipliers above one and far below
one, one row or several; inputs start with samples at the int16 extremes. They run as host C, once
under the address and undefined-behaviour sanitizers, and once on the emulated Cortex-M4. The convolutions
(CONV_2D with groups, DEPTHWISE_CONV_2D with a depth multiplier, strides, dilations, padding) run here one
op at a time, and inside the four MLPerf Tiny models quantized int16x8 by our quantizer, which run whole as
host C (and the keyword model on the emulated Cortex-M4). int16 ops without C are refused by name.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FLOAT_MODELS, shared_model

import microforge
from microforge import robust
from microforge.codegen import compile_host
from microforge.codegen.validate import validate_target
from microforge.graph.builder import GraphBuilder

ACTIVATIONS = ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]
BATCH = 6


def int16_input(rng, shape, limit=32768):
    """Uniform int16 samples within +-limit; the first all at one extreme, the second alternating both."""
    x = rng.integers(-limit, limit, (BATCH,) + tuple(shape), dtype=np.int16)
    x[0] = rng.choice([-32768, 32767])
    x[1].flat[:] = np.where(np.arange(x[1].size) % 2, 32767, -32768)
    return x


def add_fc(b, rng, x, in_scale, in_shape, out_features, bias_kind, per_channel, act, ratio, name):
    """Append an int16x8 FULLY_CONNECTED reading x; returns (output tensor, its scale)."""
    in_features = in_shape[-1]
    scales = rng.uniform(0.002, 0.02, out_features if per_channel else 1).astype(np.float32)
    w_scales = np.broadcast_to(scales, (out_features,))
    w = b.constant(f"{name}_w", rng.integers(-127, 128, (out_features, in_features), dtype=np.int8),
                   scale=scales, zero_point=0, axis=0)
    bias = None
    if bias_kind is not None:
        magnitude = 64 if ratio == "large" else 2**23
        values = rng.integers(-magnitude, magnitude, out_features, dtype=np.int64)
        if bias_kind == "int64" and out_features > 1 and ratio != "large":
            values[-1] = rng.choice([-1, 1]) * 2**34  # beyond int32: only the int64 path holds it
        bias = b.constant(f"{name}_b", values.astype(np.int32 if bias_kind == "int32" else np.int64),
                          scale=(np.float32(in_scale) * w_scales).astype(np.float32), zero_point=0)
    product = float(in_scale) * float(np.mean(w_scales))
    if ratio == "large":  # multipliers above one
        out_scale = np.float32(product / rng.uniform(1.5, 10.0))
    elif ratio == "small":  # long right shifts
        out_scale = np.float32(product * rng.uniform(2.0**18, 2.0**22))
    else:  # outputs spread over the int16 range
        out_scale = np.float32(np.sqrt(in_features) * 18918.0 * 73.0 * product * rng.uniform(0.3, 3.0) / 16384)
    keep = len(in_shape) == 3
    out_shape = in_shape[:-1] + (out_features,) if keep else (in_shape[0], out_features)
    y = b.activation(f"{name}_y", out_shape, np.int16, scale=out_scale, zero_point=0)
    b.op("FULLY_CONNECTED", [x, w, bias], [y], fused_activation_function=act, keep_num_dims=keep)
    return y, out_scale, out_shape


def fc_graph(seed, bias_kind="int64", per_channel=True, ratio="typical"):
    rng = np.random.default_rng(seed)
    rows = int(rng.integers(1, 4))
    in_features, out_features = int(rng.integers(1, 60)), int(rng.integers(1, 12))
    in_shape = (1, rows, in_features) if seed % 2 else (rows, in_features)
    b = GraphBuilder()
    in_scale = np.float32(rng.uniform(1e-4, 2e-3))
    x = b.input("x", in_shape, np.int16, scale=in_scale, zero_point=0)
    y, _, _ = add_fc(b, rng, x, in_scale, in_shape, out_features, bias_kind, per_channel,
                     ACTIVATIONS[seed % 4], ratio, "fc")
    b.output(y)
    return b.build(), int16_input(rng, in_shape, limit=8 if ratio == "large" else 32768)


def fc_chain(seed=0):
    """Three int16x8 FULLY_CONNECTED layers: int64, int32 and no bias; per channel and per tensor."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    shape, scale = (2, 24), np.float32(1e-3)
    x = b.input("x", shape, np.int16, scale=scale, zero_point=0)
    for i, (bias_kind, per_channel, act) in enumerate([("int64", True, "RELU"), ("int32", False, "NONE"),
                                                        (None, True, "RELU6")]):
        x, scale, shape = add_fc(b, rng, x, scale, shape, int(rng.integers(8, 20)), bias_kind, per_channel,
                                 act, "typical", f"fc{i}")
    b.output(x)
    return b.build(), int16_input(rng, (2, 24))


EMULATE_DSP = ["-O2", "-DMF_CONV_EMULATE_DSP"]  # the Cortex-M4/M7 SMLAD paths, emulated in C


def assert_host_matches(graph, x, sanitize=False, dsp=True):
    """The portable C, and (`dsp`) the same C on its DSP paths with the instructions emulated."""
    expected = microforge.run(graph, x)
    for cflags in [None] + ([EMULATE_DSP] if dsp else []):
        got = compile_host(graph, sanitize=sanitize, cflags=cflags).run(x)
        assert got.dtype == np.int16
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("bias_kind", ["int64", "int32", None])
@pytest.mark.parametrize("per_channel", [False, True])
def test_fully_connected_s16_is_bit_exact(bias_kind, per_channel):
    for seed in range(4):  # one of each fused activation
        assert_host_matches(*fc_graph(300 + seed, bias_kind, per_channel))


@pytest.mark.parametrize("ratio", ["large", "small"])
def test_fully_connected_s16_extreme_multipliers_are_bit_exact(ratio):
    for seed in range(4):
        assert_host_matches(*fc_graph(400 + seed, "int64" if seed % 2 else "int32", bool(seed % 2), ratio))


def test_fully_connected_s16_chain_is_clean_under_the_sanitizers():
    assert_host_matches(*fc_chain(), sanitize=True)


def test_fully_connected_s16_chain_is_bit_exact_on_the_emulated_cortex_m4():
    graph, _ = fc_chain(1)
    report = validate_target(graph, "qemu-m4", count=4)
    assert report["bit_exact"], report



def int16x8_model(name: str, count: int = 4):
    """An MLPerf Tiny float model quantized int16x8 by our quantizer, and int16 inputs for it (the first
    saturated)."""
    path = shared_model(FLOAT_MODELS[name])
    graph = microforge.load(path)
    rng = np.random.default_rng(0)
    floats = rng.normal(0.0, 1.0, (8 + count,) + graph.inputs[0].shape[1:]).astype(np.float32)
    model = robust.quantize(path, floats[:8], scheme="int16x8")
    x_t = model.graph.inputs[0]
    assert x_t.dtype == np.int16
    scale = float(x_t.quant.scale[0])
    x = np.clip(np.round(floats[8:] / scale), -32768, 32767).astype(np.int16)
    x[0] = 32767
    return model.graph, x.reshape((len(x),) + tuple(x_t.shape))


@pytest.mark.parametrize("name", ["ad", "kws", "ic", "vww"])
def test_int16x8_mlperf_models_are_bit_exact_as_host_c(name):
    graph, x = int16x8_model(name)
    assert_host_matches(graph, x, dsp=name in ("kws", "ad"))


def test_deep_int16_dot_products_keep_every_bit():
    """A fully connected layer over 1,030 inputs, all at the extremes (each product 2^22): the DSP path
    sums 256 products per int32 before it moves them to int64, so nothing wraps."""
    rng = np.random.default_rng(5)
    b = GraphBuilder()
    in_scale = np.float32(1e-3)
    x = b.input("x", (1, 1030), np.int16, scale=in_scale, zero_point=0)
    y, _, _ = add_fc(b, rng, x, in_scale, (1, 1030), 6, "int64", True, "NONE", "typical", "deep")
    b.output(y)
    graph = b.build()
    graph.ops[0].inputs[1].data[...] = -128
    x = int16_input(rng, (1, 1030))
    x[2] = -32768
    assert_host_matches(graph, x)


def test_int16x8_keyword_model_is_bit_exact_on_the_emulated_cortex_m4():
    graph, x = int16x8_model("kws", 2)
    report = validate_target(graph, "qemu-m4", batches=[x])
    assert report["bit_exact"], report


@pytest.mark.parametrize("seed", range(6))
def test_convolutions_s16_on_the_host(seed):
    """CONV_2D (groups 1 or 2, dilation) and DEPTHWISE_CONV_2D (depth multiplier 1 or 2), SAME and VALID."""
    rng = np.random.default_rng(700 + seed)
    depthwise = seed % 2 == 1
    h, w = int(rng.integers(3, 8)), int(rng.integers(3, 8))
    in_c = int(rng.choice([2, 4]))
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    stride, dilation = int(rng.integers(1, 3)), int(rng.choice([1, 2])) if seed >= 2 else 1
    padding = ["SAME", "VALID"][(seed // 2) % 2]
    groups = 1 if depthwise else int(rng.choice([1, 2]))
    out_c = in_c * int(rng.choice([1, 2])) if depthwise else 2 * int(rng.integers(1, 4))
    eff_h, eff_w = (kh - 1) * dilation + 1, (kw - 1) * dilation + 1
    out_h = -(-h // stride) if padding == "SAME" else (h - eff_h) // stride + 1
    out_w = -(-w // stride) if padding == "SAME" else (w - eff_w) // stride + 1
    if out_h < 1 or out_w < 1:
        out_h, out_w, padding = -(-h // stride), -(-w // stride), "SAME"
    in_scale = float(rng.uniform(1e-4, 1e-3))
    b = GraphBuilder()
    x = b.input("x", (1, h, w, in_c), np.int16, scale=in_scale, zero_point=0)
    w_shape = (1, kh, kw, out_c) if depthwise else (out_c, kh, kw, in_c // groups)
    w_scales = rng.uniform(0.002, 0.02, out_c).astype(np.float32)
    weights = b.constant("w", rng.integers(-127, 128, w_shape, dtype=np.int8), scale=w_scales, zero_point=0,
                         axis=3 if depthwise else 0)
    bias = b.constant("b", rng.integers(-2**20, 2**20, out_c, dtype=np.int64),
                      scale=(np.float32(in_scale) * w_scales).astype(np.float32), zero_point=0)
    y = b.activation("y", (1, out_h, out_w, out_c), np.int16,
                     scale=in_scale * float(np.mean(w_scales)) * kh * kw * in_c * 30, zero_point=0)
    options = dict(padding=padding, stride_h=stride, stride_w=stride, dilation_h_factor=dilation,
                   dilation_w_factor=dilation, fused_activation_function=ACTIVATIONS[seed % 4])
    if depthwise:
        options["depth_multiplier"] = out_c // in_c
    b.op("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D", [x, weights, bias], [y], **options)
    b.output(y)
    graph = b.build()
    assert_host_matches(graph, int16_input(rng, x.shape), sanitize=seed == 0)


def test_int16_ops_without_c_are_refused_by_name(tmp_path):
    from microforge.codegen import generate
    from microforge.errors import UnsupportedError

    b = GraphBuilder()
    x = b.input("x", (1, 4, 4, 3), np.int16, scale=1e-3, zero_point=0)
    m = b.activation("m", (1, 4, 4, 3), np.int16, scale=1e-3, zero_point=0)
    b.op("MUL", [x, x], [m])
    y = b.activation("y", (1, 4, 4, 3), np.int16, scale=1e-3, zero_point=0)
    b.op("MUL", [m, x], [y])
    b.output(y)
    with pytest.raises(UnsupportedError, match=r"(?s)op 0 \(MUL\): no C kernel for int16.*op 1 \(MUL\): no C kernel for int16"):
        generate(b.build(), tmp_path)
