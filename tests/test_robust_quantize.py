"""Our post-training quantizer: every model it writes runs in TFLite Micro byte-identical to our interpreter."""

import json

import numpy as np
import pytest
from conftest import FLOAT_MODELS, shared_model
from graphs import dequantized
from oracle import assert_same, tflm_run
from typer.testing import CliRunner

import microforge
from microforge import robust
from microforge.cli import app
from microforge.errors import InputError, ModelError, UnsupportedError
from microforge.frontend.writer import write_tflite
from microforge.graph.builder import GraphBuilder
from microforge.graph.ir import Graph, Tensor
from microforge.graph.random_graph import random_graph
from microforge.robust.assess import quantize_inputs
from microforge.robust.calibrate import affine_parameters, fake_quantize


def float_inputs(graph: Graph, count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.0, size=(count,) + graph.inputs[0].shape[1:]).astype(np.float32)


def assert_tflm_agrees(model: robust.QuantizedModel, x: np.ndarray) -> np.ndarray:
    """Our interpreter and TFLM on the quantized model, byte for byte; returns our outputs."""
    data = model.to_tflite()
    graph = microforge.load(data)
    q = quantize_inputs(graph, x)
    ours = microforge.run(graph, q)
    theirs = tflm_run(data, [q.reshape((len(q),) + graph.inputs[0].shape)])[0]
    assert_same(ours, theirs.reshape(ours.shape))
    return ours


@pytest.mark.parametrize("name", ["kws", "vww", "ic", "ad"])
def test_mlperf_float_models_quantized_run_in_tflm_bit_exact(name):
    path = shared_model(FLOAT_MODELS[name])
    graph = microforge.load(path)
    x = float_inputs(graph, 24)
    model = robust.quantize(path, x[:16])
    assert model.graph.inputs[0].dtype == np.int8 and model.graph.outputs[0].dtype == np.int8
    ours = assert_tflm_agrees(model, x[16:])
    assert len(np.unique(ours)) > 3  # not a constant output: the ranges are sensible
    # and the quantized model tracks the float one
    report = robust.assess(graph, model.graph, x[16:])
    assert report.model["output_mae"] < 0.2 * float(np.abs(microforge.run(graph, x[16:])).mean()) + 0.05


@pytest.mark.parametrize("weights,method", [("per-tensor", "minmax"), ("per-channel", "percentile"),
                                            ("per-channel", "mse")])
def test_weight_modes_and_range_methods(weights, method):
    path = shared_model(FLOAT_MODELS["ic"])
    x = float_inputs(microforge.load(path), 20, seed=1)
    model = robust.quantize(path, x[:12], weights=weights, method=method)
    conv_weights = [op.inputs[1] for op in model.graph.ops if op.type == "CONV_2D"]
    assert all(w.quant.per_channel == (weights == "per-channel") for w in conv_weights)
    assert_tflm_agrees(model, x[12:])
    assert json.loads(model.graph.metadata["microforge_quantization"])["method"] == method


def test_clipping_methods_narrow_the_range_of_a_long_tailed_tensor():
    path = shared_model(FLOAT_MODELS["ad"])
    graph = microforge.load(path)
    name = graph.inputs[0].name
    x = float_inputs(graph, 64, seed=2)
    x[0, 0] = 80.0  # one outlier among 40,960 input values stretches the minmax range
    wide = robust.quantize(path, x, method="minmax").ranges[name]
    assert wide[1] == pytest.approx(80.0)
    low, high = robust.quantize(path, x, method="percentile").ranges[name]
    assert wide[0] <= low < 0 < high < 0.1 * wide[1]
    # a heavy tail (Student's t, 3 degrees of freedom): at 8 bits the squared error is least a little
    # inside the extremes
    x = np.random.default_rng(3).standard_t(3, size=x.shape).astype(np.float32)
    wide = robust.quantize(path, x, method="minmax").ranges[name]
    low, high = robust.quantize(path, x, method="mse").ranges[name]
    assert wide[0] < low < 0 < high < wide[1]

    def error(lo, hi):
        scale, zero_point = affine_parameters(lo, hi, 8, symmetric=False)
        return np.mean((fake_quantize(x.astype(np.float64), scale, zero_point, 8) - x) ** 2)

    assert error(low, high) < error(*wide)


def test_float_io_keeps_quantize_and_dequantize_at_the_edges():
    path = shared_model(FLOAT_MODELS["kws"])  # the hybrid model: int8 weights are dequantized first
    x = float_inputs(microforge.load(path), 12)
    model = robust.quantize(path, x[:8], io="float")
    g = model.graph
    assert g.inputs[0].dtype == np.float32 and g.ops[0].type == "QUANTIZE"
    assert g.outputs[0].dtype == np.float32 and g.ops[-1].type == "DEQUANTIZE"
    ours = microforge.run(microforge.load(model.to_tflite()), x[8:])
    theirs = tflm_run(model.to_tflite(), [x[8:].reshape((4,) + g.inputs[0].shape)])[0]
    np.testing.assert_array_equal(ours, theirs.reshape(ours.shape))  # dequantized int8: exact in float32


@pytest.mark.parametrize("seed", range(6))
def test_random_graphs_quantized_run_in_tflm_bit_exact(seed):
    """Branches, residual adds, concatenations (with requantized inputs), pools and softmax heads."""
    float_graph = dequantized(random_graph(seed))
    x = float_inputs(float_graph, 10, seed)
    model = robust.quantize(float_graph, x[:6])
    assert_tflm_agrees(model, x[6:])
    concats = [op for op in model.graph.ops if op.type == "CONCATENATION"]
    for op in concats:  # CONCATENATION copies bytes: all its inputs share its output's parameters
        assert all(t.quant.equals(op.outputs[0].quant) for t in op.inputs)


def test_generated_c_runs_a_quantized_model_bit_exact():
    from microforge.codegen import compile_host

    float_graph = dequantized(random_graph(3))
    x = float_inputs(float_graph, 8, 3)
    model = robust.quantize(float_graph, x)
    q = quantize_inputs(model.graph, x)
    np.testing.assert_array_equal(compile_host(model.graph).run(q), microforge.run(model.graph, q))


def test_keras_model_is_quantized_through_the_converter(tmp_path):
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((12, 1, 3))
    y = tf.keras.layers.Conv2D(8, (3, 1), use_bias=False)(inputs)
    y = tf.keras.layers.BatchNormalization()(y)  # folded into the convolution by the converter
    y = tf.keras.layers.ReLU()(y)
    y = tf.keras.layers.Flatten()(y)
    y = tf.keras.layers.Dense(4, activation="softmax")(y)
    keras_model = tf.keras.Model(inputs, y)
    keras_model.save(tmp_path / "tiny.keras")
    x = np.random.default_rng(0).normal(size=(20, 12, 1, 3)).astype(np.float32)
    model = robust.quantize(tmp_path / "tiny.keras", x[:12])
    assert [op.type for op in model.graph.ops][:1] == ["CONV_2D"]
    assert not any(op.type == "MUL" for op in model.graph.ops)  # batch norm folded, not a separate op
    assert_tflm_agrees(model, x[12:])


# ---------------------------------------------------------------------------------------------------------
# bad input


def test_already_quantized_model_is_refused(tmp_path):
    from conftest import INT8_MODELS

    with pytest.raises(ModelError, match="already quantized.*input 'input_1' is int8"):
        robust.quantize(INT8_MODELS["kws"], np.zeros((2, 49, 10, 1), np.float32))


def test_calibration_data_of_the_wrong_shape_or_type_or_empty(tmp_path):
    path = shared_model(FLOAT_MODELS["ad"])
    with pytest.raises(InputError, match="input 'input_1' has shape \\[1, 640\\]"):
        robust.quantize(path, np.zeros((4, 600), np.float32))
    with pytest.raises(InputError, match="empty"):
        robust.quantize(path, np.zeros((0, 640), np.float32))
    with pytest.raises(InputError, match="floating point"):
        robust.quantize(path, np.zeros((4, 640), np.int8))
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(InputError, match="bad.npy: not a numpy"):
        robust.quantize(path, tmp_path / "bad.npy")
    with pytest.raises(InputError, match="scheme 'int4'"):
        robust.quantize(path, np.zeros((4, 640), np.float32), scheme="int4")


def test_op_that_cannot_be_quantized_is_named():
    b = GraphBuilder()
    x = b.input("x", (1, 4), np.float32)
    codes = b.constant("codes", np.arange(4, dtype=np.int8).reshape(1, 4), scale=0.5, zero_point=0)
    real = b.activation("real", (1, 4), np.float32)
    y = b.output(b.activation("y", (1, 4), np.float32))
    b.op("DEQUANTIZE", [codes], [real])
    b.op("ADD", [x, real], [y])
    with pytest.raises(UnsupportedError, match=r"op 0 \(DEQUANTIZE\): cannot be quantized"):
        robust.quantize(b.build(), np.zeros((2, 1, 4), np.float32))


def test_affine_parameters_follow_the_tflite_rules():
    scale, zero_point = affine_parameters(0.0, 2.55, 8, symmetric=False)
    assert scale == pytest.approx(0.01) and zero_point == -128  # ReLU range: 0 at the lowest code
    scale, zero_point = affine_parameters(-1.0, 3.0, 16, symmetric=True)
    assert scale == pytest.approx(3.0 / 32767) and zero_point == 0


# ---------------------------------------------------------------------------------------------------------
# the command line contract


def test_cli_quantize_then_run(tmp_path):
    path = shared_model(FLOAT_MODELS["ic"])
    x = float_inputs(microforge.load(path), 10)
    np.save(tmp_path / "calib.npy", x)
    runner = CliRunner()
    result = runner.invoke(app, ["quantize", str(path), "--calibration", str(tmp_path / "calib.npy"),
                                 "--scheme", "int8", "-o", str(tmp_path / "out.tflite")])
    assert result.exit_code == 0, result.output
    graph = microforge.load(tmp_path / "out.tflite")
    np.save(tmp_path / "x.npy", quantize_inputs(graph, x[:3]))
    result = runner.invoke(app, ["run", str(tmp_path / "out.tflite"), "--input", str(tmp_path / "x.npy")])
    assert result.exit_code == 0, result.output
    assert result.output.count("predicted class") == 3
    result = runner.invoke(app, ["quantize", str(tmp_path / "out.tflite"), "--calibration",
                                 str(tmp_path / "calib.npy"), "-o", str(tmp_path / "again.tflite")])
    assert result.exit_code == 2 and "already quantized" in result.output


@pytest.mark.parametrize("name", ["kws", "ic", "ad"])
def test_int16x8_models_run_in_tflm_bit_exact(name):
    path = shared_model(FLOAT_MODELS[name])
    x = float_inputs(microforge.load(path), 12)
    model = robust.quantize(path, x[:8], scheme="int16x8")
    activations = [op.outputs[0] for op in model.graph.ops]
    assert all(t.dtype == np.int16 and t.zero_point == 0 for t in activations)
    assert all(op.inputs[2].dtype == np.int64 for op in model.graph.ops
               if op.type in ("CONV_2D", "DEPTHWISE_CONV_2D") and op.inputs[2] is not None)
    assert_tflm_agrees(model, x[8:])


def test_mixed_int8_int16_graph_runs_in_tflm_bit_exact():
    """Every other weight layer in int16x8: QUANTIZE ops convert between the two, and TFLM agrees."""
    from microforge.robust.quantizer import Scheme, quantize_graph

    float_graph = microforge.load(shared_model(FLOAT_MODELS["ic"]))
    weighted = [op.index for op in float_graph.ops if op.type in ("CONV_2D", "FULLY_CONNECTED")]
    x = float_inputs(float_graph, 12)
    model = quantize_graph(float_graph, x[:8], layer_schemes={i: Scheme.named("int16x8") for i in weighted[::2]})
    dtypes = {op.outputs[0].dtype.name for op in model.graph.ops}
    assert dtypes == {"int8", "int16"} and any(op.type == "QUANTIZE" for op in model.graph.ops)
    assert model.graph.inputs[0].dtype == np.int8 and model.graph.outputs[0].dtype == np.int8
    assert_tflm_agrees(model, x[8:])


def test_a_widened_first_layer_reads_the_float_input_quantized_to_int16():
    """With float input, the model's own QUANTIZE writes int16 when the layer reading the input is widened,
    so that layer gets int16 precision, not int8 converted; TFLM runs it byte-identical to our interpreter."""
    from microforge.robust.quantizer import Scheme, quantize_graph

    float_graph = microforge.load(shared_model(FLOAT_MODELS["kws"]))
    x = float_inputs(float_graph, 12)
    first = float_graph.ops[0].index
    model = quantize_graph(float_graph, x[:8], io="float", layer_schemes={first: Scheme.named("int16x8")})
    graph = model.graph
    assert graph.inputs[0].dtype == np.float32
    assert graph.ops[0].type == "QUANTIZE" and graph.ops[0].outputs[0].dtype == np.int16
    assert graph.ops[1].inputs[0] is graph.ops[0].outputs[0]  # no int8 step between
    data = model.to_tflite()
    batch = x[8:].reshape((4,) + float_graph.inputs[0].shape)
    ours = microforge.run(microforge.load(data), x[8:])
    theirs = tflm_run(data, [batch])[0]
    assert_same(ours, theirs.reshape(ours.shape))


def test_mixed_search_widens_layers_until_the_target_and_measures_the_result_on_qemu_m4():
    """An easy target keeps every layer int8; an unreachable one (inputs 4x the calibration range clip at the
    int8 input) tries every weight layer in turn and keeps only the widenings that help. Each result is
    TFLM-legal and measured on the core."""
    from microforge.robust.mixed import choose_mixed

    float_graph = microforge.load(shared_model(FLOAT_MODELS["kws"]))
    samples = float_inputs(float_graph, 24)
    x = samples.reshape((24,) + float_graph.inputs[0].shape)  # choose_mixed takes the model's batch-1 shape
    easy = choose_mixed(float_graph, x[:8], x[8:], target=0.5)
    assert easy.mixed.widened == [] and easy.mixed.quality >= 0.5
    hard = choose_mixed(float_graph, x[:8], 4 * x[8:], target=1.0)
    weighted = [op.index for op in float_graph.ops if op.type in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    steps = hard.mixed.steps
    assert set(weighted) <= {step["widened"][-1] for step in steps[1:]} and hard.mixed.quality < 1.0
    kept = [step for step in steps if step["kept"]]
    assert kept[-1]["widened"] == hard.mixed.widened != []
    assert hard.mixed.quality == kept[-1]["quality"] > steps[0]["quality"]
    for before, step in zip(kept, kept[1:]):  # each kept widening raised the quality or cut the error
        assert step["quality"] > before["quality"] or step["output_mae"] <= 0.9 * before["output_mae"]
    assert {t.dtype.name for t in hard.graph.tensors if not t.is_constant} >= {"int8", "int16"}
    assert hard.mixed.instructions > easy.mixed.instructions > 0 and hard.mixed.arena_bytes > 0
    assert_tflm_agrees(hard, samples[8:12])
