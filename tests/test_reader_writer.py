"""The TFLite reader and writer: faithful round trips, and clear errors for malformed models."""

import numpy as np
import pytest
from conftest import FLOAT_MODELS, INT8_MODELS, shared_model
from oracle import tflm_run

import microforge
from microforge.errors import ModelError, UnsupportedError
from microforge.frontend import schema
from microforge.frontend.reader import read_tflite
from microforge.frontend.writer import write_tflite
from microforge.graph.builder import GraphBuilder
from microforge.graph.ir import Graph, Tensor

ALL_MODELS = list(INT8_MODELS.items()) + [(f"{k}-float", v) for k, v in FLOAT_MODELS.items()]


def assert_same_graph(a: Graph, b: Graph) -> None:
    assert len(a.tensors) == len(b.tensors) and len(a.ops) == len(b.ops)
    for x, y in zip(a.tensors, b.tensors):
        assert (x.name, x.shape, x.dtype) == (y.name, y.shape, y.dtype)
        assert (x.quant is None) == (y.quant is None)
        if x.quant is not None:
            assert x.quant.equals(y.quant), x.name
        assert (x.data is None) == (y.data is None)
        if x.data is not None:
            assert np.array_equal(x.data, y.data), x.name
    for p, q in zip(a.ops, b.ops):
        assert (p.type, p.version, p.options) == (q.type, q.version, q.options)
        assert [t and t.index for t in p.inputs] == [t and t.index for t in q.inputs]
        assert [t.index for t in p.outputs] == [t.index for t in q.outputs]
    assert [t.index for t in a.inputs] == [t.index for t in b.inputs]
    assert [t.index for t in a.outputs] == [t.index for t in b.outputs]
    assert a.metadata == b.metadata


@pytest.mark.parametrize("name,path", ALL_MODELS, ids=[n for n, _ in ALL_MODELS])
def test_round_trip_gives_an_equal_graph(name, path):
    graph = read_tflite(shared_model(path))
    assert_same_graph(graph, read_tflite(write_tflite(graph)))


@pytest.mark.parametrize("name", list(INT8_MODELS))
def test_written_model_runs_identically_in_tflm(name):
    original = INT8_MODELS[name].read_bytes()
    graph = read_tflite(original)
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, size=(4,) + graph.inputs[0].shape, dtype=np.int8)
    assert np.array_equal(tflm_run(original, [x])[0], tflm_run(write_tflite(graph), [x])[0])


def test_written_model_loads_in_litert():
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=write_tflite(read_tflite(INT8_MODELS["kws"])))
    interpreter.allocate_tensors()
    assert list(interpreter.get_input_details()[0]["shape"]) == [1, 49, 10, 1]


def _tiny_graph() -> tuple[GraphBuilder, Tensor]:
    b = GraphBuilder()
    x = b.input("x", (1, 4), np.int8, scale=0.1, zero_point=0)
    y = b.activation("y", (1, 4), np.int8, scale=0.1, zero_point=0)
    b.op("RELU", [x], [y])
    b.output(y)
    return b, x


def test_truncated_file():
    data = INT8_MODELS["kws"].read_bytes()
    with pytest.raises(ModelError, match="malformed model|not a TFLite model"):
        read_tflite(data[: len(data) // 3])
    with pytest.raises(ModelError, match="only 3 bytes"):
        read_tflite(data[:3])


def test_wrong_file_identifier():
    data = bytearray(INT8_MODELS["kws"].read_bytes())
    data[4:8] = b"ONNX"
    with pytest.raises(ModelError, match="file identifier"):
        read_tflite(bytes(data))


def test_missing_file_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="cannot read model file"):
        read_tflite(tmp_path / "nope.tflite")


def test_out_of_range_tensor_index_names_the_op():
    b, x = _tiny_graph()
    stray = Tensor("stray", (1, 4), np.int8)
    stray.index = 99
    b.ops[0].inputs = [stray]
    graph = Graph(b.tensors, b.ops, b.inputs, b.outputs)
    stray.index = 99  # Graph renumbers only its own tensors
    with pytest.raises(ModelError, match=r"op 0 \(RELU\): input 0 refers to tensor 99"):
        read_tflite(write_tflite(graph))


def test_non_positive_dimension_names_the_tensor():
    b, x = _tiny_graph()
    x.shape = (1, -4)
    with pytest.raises(ModelError, match=r"tensor 0 'x' has shape \[1, -4\]"):
        read_tflite(write_tflite(b.build()))


def test_absurd_shape_is_refused_without_allocating():
    b, x = _tiny_graph()
    x.shape = (1 << 20, 1 << 20)
    with pytest.raises(ModelError, match="beyond any microcontroller"):
        read_tflite(write_tflite(b.build()))


def test_data_shorter_than_shape():
    b, _ = _tiny_graph()
    b.tensors.append(Tensor("w", (2, 4), np.int8, data=np.zeros(3, np.int8)))
    with pytest.raises(ModelError, match=r"'w' \(\[2, 4\] int8\) needs 8 bytes of data, but buffer \d+ holds 3"):
        read_tflite(write_tflite(b.build()))


def test_per_channel_scale_count_must_match_the_axis():
    b, _ = _tiny_graph()
    b.constant("w", np.zeros((3, 2), np.int8), scale=[0.1, 0.2], zero_point=0, axis=0)
    with pytest.raises(ModelError, match="2 per-channel scales, but dimension 0 is 3"):
        read_tflite(write_tflite(b.build()))


def test_unknown_op_code(monkeypatch):
    b, _ = _tiny_graph()
    b.ops[0].type = "BOGUS"
    monkeypatch.setitem(schema.BUILTIN_OPERATOR_CODES, "BOGUS", 9999)
    with pytest.raises(ModelError, match="unknown builtin op code 9999"):
        read_tflite(write_tflite(b.build()))


def test_reading_before_writing_is_caught():
    b, x = _tiny_graph()
    z = b.activation("z", (1, 4), np.int8, scale=0.1, zero_point=0)
    b.ops[0].inputs = [z]
    b.op("RELU", [x], [z])
    with pytest.raises(ModelError, match="reads tensor 'z' before any op writes it"):
        read_tflite(write_tflite(b.build()))


def test_lying_vector_length_is_refused_quickly():
    data = bytearray(INT8_MODELS["kws"].read_bytes())
    graph_tensor = __import__("tflite").Model.GetRootAs(bytes(data), 0).Subgraphs(0).Tensors(0)
    tab = graph_tensor._tab
    shape_vector = tab.Vector(tab.Offset(4))  # the 'shape' field; its length word sits just before it
    data[shape_vector - 4: shape_vector] = (0x7FFFFFFF).to_bytes(4, "little")
    with pytest.raises(ModelError, match="claims 2147483647 elements"):
        read_tflite(bytes(data))


def test_unsupported_ops_are_listed_all_at_once():
    b = GraphBuilder()
    x = b.input("x", (1, 4), np.float32)
    y = b.activation("y", (1, 4), np.float32)
    z = b.activation("z", (1, 4), np.float32)
    b.op("SIN", [x], [y])
    b.op("EXP", [y], [z])
    b.output(z)
    with pytest.raises(UnsupportedError) as info:
        microforge.load(write_tflite(b.build()))
    assert "op 0 (SIN)" in str(info.value) and "op 1 (EXP)" in str(info.value)
