"""int16x8 ops in C other than the convolutions: QUANTIZE and DEQUANTIZE (the conversions of int16x8 and mixed
models) and the pools. The generated code equals the reference interpreter (bit-exact with TFLM,
tests/test_kernels_int16.py) byte for byte on the host, under sanitizers, and on the emulated Cortex-M4."""

import numpy as np
import pytest

import microforge
from microforge.codegen import compile_host
from microforge.codegen.validate import validate_target
from microforge.graph.builder import GraphBuilder


def conversion_chain(seed: int):
    """float32 -> int16 -> int8 -> int16 -> int16 (another scale) -> float32: every int16 conversion kernel."""
    rng = np.random.default_rng(seed)
    shape = (1, 5, 7)
    b = GraphBuilder()
    x = b.input("x", shape, np.float32)
    s16 = float(rng.uniform(1e-4, 1e-3))
    a = b.activation("a16", shape, np.int16, scale=s16, zero_point=0)
    b.op("QUANTIZE", [x], [a])
    c = b.activation("c8", shape, np.int8, scale=float(rng.uniform(0.01, 0.05)), zero_point=int(rng.integers(-50, 50)))
    b.op("QUANTIZE", [a], [c])
    d = b.activation("d16", shape, np.int16, scale=s16 * float(rng.uniform(0.3, 3.0)), zero_point=0)
    b.op("QUANTIZE", [c], [d])
    e = b.activation("e16", shape, np.int16, scale=s16 * float(rng.choice([0.25, 1.7, 40.0])), zero_point=0)
    b.op("QUANTIZE", [d], [e])
    y = b.activation("y", shape, np.float32)
    b.op("DEQUANTIZE", [e], [y])
    b.output(y)
    return b.build(), s16


def chain_inputs(seed: int, s16: float, count: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed + 100)
    x = rng.normal(scale=40000 * s16, size=(count, 1, 5, 7)).astype(np.float32)
    x[0, 0, 0, :4] = [np.nan, np.inf, -np.inf, 1e30]  # NaN reads as 0, infinities and huge values saturate
    x[1, 0] = np.float32(s16) * (np.arange(35).reshape(5, 7) - 17 + 0.5)  # exact halves: rounding direction
    return x


@pytest.mark.parametrize("seed", range(4))
def test_int16_conversions_on_the_host(seed):
    graph, s16 = conversion_chain(seed)
    x = chain_inputs(seed, s16)
    np.testing.assert_array_equal(compile_host(graph, sanitize=seed == 0).run(x).view(np.uint32),
                                  microforge.run(graph, x).view(np.uint32))


def test_int16_conversions_on_cortex_m4():
    graph, s16 = conversion_chain(7)
    report = validate_target(graph, "qemu-m4", batches=[chain_inputs(7, s16)])
    assert report["bit_exact"], report


def pool_graph(seed: int):
    """int16 average and max pooling side by side on one input: SAME or VALID windows, fused activations."""
    rng = np.random.default_rng(seed)
    h, w, c = (int(v) for v in rng.integers(2, 9, 3))
    fh, fw, stride = int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 3))
    padding = ["SAME", "VALID"][seed % 2]
    out_h = -(-h // stride) if padding == "SAME" else (h - fh) // stride + 1
    out_w = -(-w // stride) if padding == "SAME" else (w - fw) // stride + 1
    scale = float(rng.uniform(1e-4, 1e-3))
    b = GraphBuilder()
    x = b.input("x", (1, h, w, c), np.int16, scale=scale, zero_point=0)
    options = dict(filter_height=fh, filter_width=fw, stride_h=stride, stride_w=stride, padding=padding,
                   fused_activation_function=["NONE", "RELU", "RELU6", "RELU_N1_TO_1"][seed % 4])
    for op_type in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        y = b.activation(op_type.lower(), (1, out_h, out_w, c), np.int16, scale=scale, zero_point=0)
        b.op(op_type, [x], [y], **options)
        b.output(y)
    return b.build()


def pool_inputs(graph, seed: int, count: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed + 200)
    x = rng.integers(-32768, 32768, (count,) + graph.inputs[0].shape, dtype=np.int16)
    x[0], x[1] = -32768, 32767  # window sums at the extremes
    return x


@pytest.mark.parametrize("seed", range(6))
def test_int16_pools_on_the_host(seed):
    graph = pool_graph(seed)
    x = pool_inputs(graph, seed)
    ours, theirs = compile_host(graph, sanitize=seed == 0).run(x), microforge.run(graph, x)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)


def test_int16_pools_on_cortex_m4():
    graph = pool_graph(3)
    report = validate_target(graph, "qemu-m4", batches=[pool_inputs(graph, 3)])
    assert report["bit_exact"], report


def add_graph(seed: int):
    """int16 ADD of two activations of one shape, then of a per-channel constant (broadcast), each with its own
    scales and fused activation."""
    rng = np.random.default_rng(seed)
    shape = (1, int(rng.integers(1, 5)), int(rng.integers(1, 6)), int(rng.integers(1, 9)))
    scale = lambda: float(rng.uniform(1e-4, 1e-3))  # noqa: E731
    activation = ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]
    b = GraphBuilder()
    x1 = b.input("x1", shape, np.int16, scale=scale(), zero_point=0)
    x2 = b.input("x2", shape, np.int16, scale=scale(), zero_point=0)
    s = b.activation("sum", shape, np.int16, scale=scale(), zero_point=0)
    b.op("ADD", [x1, x2], [s], fused_activation_function=activation[seed % 4])
    bias = b.constant("bias", rng.integers(-32768, 32768, (shape[-1],), dtype=np.int16), scale=scale(), zero_point=0)
    y = b.activation("y", shape, np.int16, scale=scale(), zero_point=0)
    b.op("ADD", [s, bias], [y], fused_activation_function=activation[(seed + 1) % 4])
    b.output(y)
    return b.build()


@pytest.mark.parametrize("seed", range(5))
def test_int16_add_on_the_host(seed):
    graph = add_graph(seed)
    rng = np.random.default_rng(seed + 300)
    x = [rng.integers(-32768, 32768, (5,) + t.shape, dtype=np.int16) for t in graph.inputs]
    x[0][0], x[1][0] = 32767, 32767
    x[0][1], x[1][1] = -32768, -32768
    np.testing.assert_array_equal(compile_host(graph, sanitize=seed == 0).run(*x), microforge.run(graph, *x))


def test_int16_add_on_cortex_m4():
    graph = add_graph(2)
    report = validate_target(graph, "qemu-m4", count=4)
    assert report["bit_exact"], report


@pytest.mark.parametrize("seed", range(4))
def test_int16_softmax_on_the_host_and_cortex_m4(seed):
    rng = np.random.default_rng(seed + 400)
    depth = [1, 10, 12, 37][seed]
    b = GraphBuilder()
    x = b.input("x", (1, int(rng.integers(1, 4)), depth), np.int16, scale=float(rng.uniform(1e-4, 2e-3)), zero_point=0)
    y = b.activation("y", x.shape, np.int16, scale=1.0 / 32768, zero_point=0)
    b.op("SOFTMAX", [x], [y], beta=float(rng.choice([1.0, 0.5, 2.0])))
    b.output(y)
    graph = b.build()
    feed = rng.integers(-32768, 32768, (6,) + x.shape, dtype=np.int16)
    feed[0], feed[1] = 0, -32768  # equal values: every exp is exp(0)
    feed[2].flat[::2] = 32767
    np.testing.assert_array_equal(compile_host(graph, sanitize=seed == 0).run(feed), microforge.run(graph, feed))
    if seed == 3:
        report = validate_target(graph, "qemu-m4", batches=[feed])
        assert report["bit_exact"], report


@pytest.mark.parametrize("op_type", ["RELU", "RELU6"])
def test_int16_relu_on_the_host_and_cortex_m4(op_type):
    rng = np.random.default_rng(500)
    b = GraphBuilder()
    x = b.input("x", (1, 3, 11), np.int16, scale=6.0 / 20000, zero_point=0)
    out_scale = 6.0 / 20000 if op_type == "RELU6" else 6.0 / 20000 * 0.7  # RELU requantizes
    y = b.activation("y", x.shape, np.int16, scale=out_scale, zero_point=0)
    b.op(op_type, [x], [y])
    b.output(y)
    graph = b.build()
    feed = rng.integers(-32768, 32768, (5,) + x.shape, dtype=np.int16)
    feed[0], feed[1] = -32768, 32767
    np.testing.assert_array_equal(compile_host(graph, sanitize=True).run(feed), microforge.run(graph, feed))
    report = validate_target(graph, "qemu-m4", batches=[feed])
    assert report["bit_exact"], report


def pad_mean_graph(seed: int):
    """int16 PAD (zeros around the image) then MEAN over the spatial axes (MobileNetV2's head), and a MEAN
    over the channels at another output scale."""
    rng = np.random.default_rng(seed)
    h, w, c = int(rng.integers(2, 6)), int(rng.integers(2, 6)), int(rng.integers(1, 5))
    s = float(rng.uniform(1e-4, 1e-3))
    b = GraphBuilder()
    x = b.input("x", (1, h, w, c), np.int16, scale=s, zero_point=0)
    pads = b.constant("pads", np.array([[0, 0], [1, 2], [0, 1], [0, 0]], np.int32))
    padded = b.activation("padded", (1, h + 3, w + 1, c), np.int16, scale=s, zero_point=0)
    b.op("PAD", [x, pads], [padded])
    spatial = b.constant("spatial", np.array([1, 2], np.int32))
    y = b.output(b.activation("y", (1, 1, 1, c), np.int16, scale=s * float(rng.uniform(0.2, 2.0)), zero_point=0))
    b.op("MEAN", [padded, spatial], [y], keep_dims=True)
    channels = b.constant("channels", np.array([-1], np.int32))
    z = b.output(b.activation("z", (1, h + 3, w + 1), np.int16, scale=s * 0.7, zero_point=0))
    b.op("MEAN", [padded, channels], [z], keep_dims=False)
    return b.build()


@pytest.mark.parametrize("seed", range(4))
def test_int16_pad_and_mean_on_the_host(seed):
    graph = pad_mean_graph(seed)
    rng = np.random.default_rng(seed + 7)
    x = rng.integers(-32768, 32768, (5,) + graph.inputs[0].shape, dtype=np.int16)
    x[0] = 32767
    ours, theirs = compile_host(graph, sanitize=seed == 0).run(x), microforge.run(graph, x)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)
