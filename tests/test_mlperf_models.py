"""The MLPerf Tiny reference models: int8 bit-identical with TFLite Micro, float within tolerance."""

import numpy as np
import pytest
from conftest import FLOAT_MODELS, INT8_MODELS, KWS_SAMPLE, shared_model
from oracle import tflm_run

import microforge

RANDOM_INPUTS = 100


def random_int8_batch(tensor, count, seed):
    return np.random.default_rng(seed).integers(-128, 128, size=(count,) + tensor.shape, dtype=np.int8)


def ours(graph, batch):
    """Our interpreter on (N, *shape) inputs, returned as (N, *shape) like the oracle's."""
    out = microforge.run(graph, batch.reshape((len(batch),) + graph.inputs[0].shape[1:]))
    return out.reshape((len(batch),) + graph.outputs[0].shape)


def test_kws_sample_is_bit_exact_and_predicts_on():
    model = INT8_MODELS["kws"].read_bytes()
    graph = microforge.load(model)
    x = np.frombuffer(KWS_SAMPLE.read_bytes(), dtype=np.int8).reshape((1,) + graph.inputs[0].shape)
    got = ours(graph, x)
    assert np.array_equal(got, tflm_run(model, [x])[0])
    assert int(np.argmax(got)) == 5  # "on", TFLM's top-1 for the shipped sample


@pytest.mark.parametrize("name", list(INT8_MODELS))
def test_int8_model_is_bit_exact_on_random_inputs(name):
    model = INT8_MODELS[name].read_bytes()
    graph = microforge.load(model)
    x = random_int8_batch(graph.inputs[0], RANDOM_INPUTS, seed=len(name))
    got, want = ours(graph, x), tflm_run(model, [x])[0]
    mismatches = int(np.sum(np.any(got.reshape(len(x), -1) != want.reshape(len(x), -1), axis=1)))
    assert mismatches == 0, f"{mismatches} of {len(x)} samples differ from TFLM"
    assert len(np.unique(want)) > 2, "inputs must exercise more than a saturated output"


FLOAT_INPUT_SPREAD = {"kws": 20.0, "vww": 0.5, "ic": 60.0, "ad": 5.0}


def litert_run(model: bytes, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    lite = Interpreter(model_content=model, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    lite.allocate_tensors()
    outs = []
    for sample in x:
        lite.set_tensor(lite.get_input_details()[0]["index"], sample)
        lite.invoke()
        outs.append(lite.get_tensor(lite.get_output_details()[0]["index"]).copy())
    return np.stack(outs)


def float_batch(graph, name, count=20):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((count,) + graph.inputs[0].shape) * FLOAT_INPUT_SPREAD[name]).astype(np.float32)
    return np.abs(x) if name in ("vww", "ic") else x


@pytest.mark.parametrize("name", ["vww", "ic", "ad"])
def test_float_model_agrees_with_tflm(name):
    model = shared_model(FLOAT_MODELS[name]).read_bytes()
    graph = microforge.load(model)
    x = float_batch(graph, name)
    want = tflm_run(model, [x])[0]
    got = ours(graph, x)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * float(np.max(np.abs(want))))


def test_hybrid_kws_model_agrees_with_litert():
    """The KWS 'float' model is hybrid: int8 weights on float ops. TFLM refuses to allocate it; LiteRT runs
    it by quantizing each input to int8 on the fly. We dequantize the weights and compute in float instead,
    so the two agree on the class and within the error of LiteRT's dynamic input quantization."""
    model = shared_model(FLOAT_MODELS["kws"]).read_bytes()
    graph = microforge.load(model)
    x = float_batch(graph, "kws")
    want, got = litert_run(model, x), ours(graph, x)
    assert np.array_equal(np.argmax(got, axis=-1), np.argmax(want, axis=-1))
    assert float(np.max(np.abs(got - want))) < 0.1
