"""Dynamic fixed point in C: the generated code equals the reference interpreter byte for byte, on the host
(also under sanitizers) and on the emulated Cortex-M4, with exponents that differ per inference."""

import numpy as np
import pytest
from conftest import FLOAT_MODELS, shared_model
from graphs import dequantized

import microforge
from microforge import robust
from microforge.codegen import compile_host
from microforge.codegen.validate import validate_target
from microforge.graph.random_graph import random_graph

NO_CONCATENATION = [2, 3, 10, 11, 14, 16, 19, 20]  # random graphs dynamic fixed point can run


def spread_inputs(graph, count: int, seed: int) -> np.ndarray:
    """Inputs whose magnitudes span 10^-3 .. 10^3 from sample to sample, so every inference gets its own
    exponents and later segments of a tensor raise the shift of earlier ones."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count,) + graph.inputs[0].shape[1:])
    x *= 10.0 ** rng.uniform(-3, 3, size=(count,) + (1,) * (x.ndim - 1))
    ramp = np.linspace(0.1, 1.0, x.shape[1]).reshape((1, -1) + (1,) * (x.ndim - 2))
    return (x * ramp).astype(np.float32)


def dynamic_model(float_graph, seed: int = 0):
    return robust.quantize(float_graph, spread_inputs(float_graph, 8, seed), scheme="dynamic").graph


@pytest.mark.parametrize("name", ["kws", "vww", "ic", "ad"])
def test_mlperf_models_on_the_host(name):
    float_graph = microforge.load(shared_model(FLOAT_MODELS[name]))
    graph = dynamic_model(float_graph)
    x = spread_inputs(float_graph, 6, 1)
    ours = microforge.run(graph, x)
    np.testing.assert_array_equal(compile_host(graph).run(x).view(np.uint32), ours.view(np.uint32))


@pytest.mark.parametrize("seed", NO_CONCATENATION)
def test_random_graphs_on_the_host(seed):
    float_graph = dequantized(random_graph(seed))
    graph = dynamic_model(float_graph, seed)
    x = spread_inputs(float_graph, 10, seed + 1)
    np.testing.assert_array_equal(compile_host(graph).run(x).view(np.uint32),
                                  microforge.run(graph, x).view(np.uint32))


@pytest.mark.parametrize("seed", NO_CONCATENATION)
def test_cortex_m_kernels_on_the_host(seed):
    """The Cortex-M4/M7 layers (the int8 kernels' inner loops feeding the dynamic output stage, their
    weight layouts and overlapping plan), built for the host with the DSP instructions emulated in C."""
    float_graph = dequantized(random_graph(seed))
    graph = dynamic_model(float_graph, seed)
    x = spread_inputs(float_graph, 6, seed + 2)
    model = compile_host(graph, target="cortex-m4", cflags=["-O2", "-DMF_CONV_EMULATE_DSP"])
    np.testing.assert_array_equal(model.run(x).view(np.uint32), microforge.run(graph, x).view(np.uint32))


@pytest.mark.parametrize("name", ["kws", "ic"])
def test_cortex_m_kernels_of_mlperf_models_are_sanitizer_clean(name):
    float_graph = microforge.load(shared_model(FLOAT_MODELS[name]))
    graph = dynamic_model(float_graph)
    x = spread_inputs(float_graph, 2, 5)
    model = compile_host(graph, target="cortex-m4", sanitize=True, cflags=["-O1", "-DMF_CONV_EMULATE_DSP"])
    np.testing.assert_array_equal(model.run(x).view(np.uint32), microforge.run(graph, x).view(np.uint32))


def test_sanitizers_find_nothing():
    float_graph = dequantized(random_graph(19))
    graph = dynamic_model(float_graph)
    x = spread_inputs(float_graph, 4, 2)
    x[0, 0] = np.nan  # NaN reads as 0; an infinity clamps
    x[1, 0] = np.inf
    np.testing.assert_array_equal(compile_host(graph, sanitize=True).run(x).view(np.uint32),
                                  microforge.run(graph, x).view(np.uint32))


@pytest.mark.parametrize("name", ["kws", "ad"])
def test_mlperf_models_on_qemu_m4(name):
    float_graph = microforge.load(shared_model(FLOAT_MODELS[name]))
    graph = dynamic_model(float_graph)
    x = spread_inputs(float_graph, 3, 3)
    report = validate_target(graph, "qemu-m4", batches=[x.reshape((3,) + graph.inputs[0].shape)])
    assert report["bit_exact"], report
    assert report["instructions_per_inference"] > 0


def test_random_graph_on_qemu_m4_and_m7():
    float_graph = dequantized(random_graph(16))
    graph = dynamic_model(float_graph)
    x = spread_inputs(float_graph, 3, 4).reshape((3,) + graph.inputs[0].shape)
    for target in ("qemu-m4", "qemu-m7"):
        assert validate_target(graph, target, batches=[x])["bit_exact"]
