"""Dynamic fixed point: the reference kernels against the rule computed independently, one value at a time
with exact fractions; the model format; and what quantization does with it."""

from fractions import Fraction

import numpy as np
import pytest
from conftest import FLOAT_MODELS, shared_model

import microforge
from microforge import robust
from microforge.errors import ModelError, UnsupportedError
from microforge.graph.builder import GraphBuilder
from microforge.reference.dynamic import DynamicValue
from microforge.reference.interpreter import run_batched
from microforge.reference.registry import kernel_for


def round_half_away(value: Fraction) -> int:
    whole = int(abs(value) + Fraction(1, 2))  # floor, as the value is non-negative
    return whole if value >= 0 else -whole


def input_exponent(m: float) -> int:
    """The largest e in [-24, 40] with round(m * 2^e) <= 127, found by search."""
    if m == 0:
        return 0
    for e in range(40, -25, -1):
        if round_half_away(Fraction(m) * Fraction(2) ** e) <= 127:
            return e
    return -24


def segment_rule(acc: list[list[int]]) -> tuple[list[list[int]], int]:
    """Accumulator segments -> (int8 segments, total shift S), step by step as the C writes them."""
    def rdiv(v: int, k: int) -> int:
        return round_half_away(Fraction(v, 2 ** k))

    running, shifts, written = 0, [], []
    for seg in acc:
        m = max(abs(v) for v in seg)
        running = max(running, max(0, m.bit_length() - 7))
        shifts.append(running)
        written.append([min(127, max(-128, rdiv(v, running))) for v in seg])
    return [[rdiv(v, running - s) for v in seg] for seg, s in zip(written, shifts)], running


def test_quantize_picks_the_finest_exponent_that_fits():
    b = GraphBuilder()
    x = b.input("x", (1, 6), np.float32)
    y = b.output(b.activation("y", (1, 6), np.int8, scale=1.0, zero_point=0))
    op = b.op("QUANTIZE", [x], [y], dynamic_fixed_point=True)
    rng = np.random.default_rng(0)
    rows = [rng.normal(size=6) * 10.0 ** k for k in range(-4, 5)]
    rows += [[127.49, -3, 0, 1, 2, 3], [127.5, 0, 0, 0, 0, 1], [-0.75, 0.25, 0, 0, 0, 0], [0] * 6]
    batch = np.asarray(rows, dtype=np.float32)[:, None, :]
    out = kernel_for(op).fn(op, [batch])
    for row, values, e in zip(batch[:, 0], out.values[:, 0], out.exponent):
        expected_e = input_exponent(float(np.abs(row).max()))
        assert e == expected_e
        assert list(values) == [round_half_away(Fraction(float(v)) * Fraction(2) ** expected_e) for v in row]


def fully_connected_model(out_features: int, bias: bool, activation: str):
    rng = np.random.default_rng(out_features)
    b = GraphBuilder()
    x = b.input("x", (1, 5), np.int8)
    w = b.constant("w", rng.integers(-127, 128, size=(out_features, 5)).astype(np.int8), scale=2.0 ** -6, zero_point=0)
    bt = b.constant("b", rng.integers(-2**20, 2**20, size=out_features).astype(np.int32), scale=2.0 ** -17,
                    zero_point=0) if bias else None
    y = b.output(b.activation("y", (1, out_features), np.int8, scale=1.0, zero_point=0))
    op = b.op("FULLY_CONNECTED", [x, w, bt], [y], fused_activation_function=activation, dynamic_fixed_point=True)
    return op, w.data, None if bt is None else bt.data


@pytest.mark.parametrize("activation", ["NONE", "RELU", "RELU6"])
def test_fully_connected_follows_the_rule(activation):
    op, w, bias = fully_connected_model(7, True, activation)
    rng = np.random.default_rng(1)
    q = rng.integers(-128, 128, size=(20, 1, 5)).astype(np.int8)
    e_in = rng.integers(-3, 12, size=20)
    out = kernel_for(op).fn(op, [DynamicValue(q, e_in)])
    for n in range(20):
        ea = int(e_in[n]) + 6
        acc = []
        for o in range(7):
            total = sum(int(a) * int(b) for a, b in zip(q[n, 0], w[o]))
            # the bias, exact at 2^-17, moved to 2^-ea by rounding
            total += round_half_away(Fraction(int(bias[o])) * Fraction(2) ** (ea - 17))
            if activation != "NONE":
                total = max(total, 0)
            if activation == "RELU6":
                total = min(total, round_half_away(6 * Fraction(2) ** ea))
            acc.append(total)
        values, shift = segment_rule([acc])
        assert list(out.values[n, 0]) == values[0]
        assert out.exponent[n] == ea - shift


def test_depthwise_segments_grow_their_shift_mid_tensor():
    """Later pixels with larger accumulators raise the shift; earlier pixels are shifted again."""
    b = GraphBuilder()
    x = b.input("x", (1, 4, 4, 2), np.int8)
    w = b.constant("w", np.ones((1, 1, 1, 2), np.int8), scale=1.0, zero_point=0)
    y = b.output(b.activation("y", (1, 4, 4, 2), np.int8, scale=1.0, zero_point=0))
    op = b.op("DEPTHWISE_CONV_2D", [x, w, None], [y], dynamic_fixed_point=True)
    values = np.arange(-16, 16).reshape(1, 1, 4, 4, 2).astype(np.int8) * 7  # ramps up to |112| ...
    values[0, 0, 3, 3] = [127, -128]
    w.data[...] = 100  # ... times 100: accumulators from 0 to 12,800 need shifts 0 to 7
    out = kernel_for(op).fn(op, [DynamicValue(values, np.array([3]))])
    acc = [[int(v) * 100 for v in values[0, 0, i, j]] for i in range(4) for j in range(4)]
    expected, shift = segment_rule(acc)
    assert out.values.reshape(16, 2).tolist() == expected
    assert out.exponent[0] == 3 + 0 - shift and shift == 7


def test_a_reversed_depthwise_visits_its_segments_from_the_last():
    """The same rule in the other order (the last pixels, with the larger accumulators, come first), kept
    through the model file; a reversed op of another type is refused."""
    b = GraphBuilder()
    x = b.input("x", (1, 4, 4, 2), np.int8)
    w = b.constant("w", np.full((1, 1, 1, 2), 100, np.int8), scale=1.0, zero_point=0)
    y = b.output(b.activation("y", (1, 4, 4, 2), np.int8, scale=1.0, zero_point=0))
    b.op("DEPTHWISE_CONV_2D", [x, w, None], [y], dynamic_fixed_point=True, dynamic_reverse=True)
    graph = microforge.load(microforge.write_tflite(b.build()))
    op = graph.ops[0]
    assert op.options.get("dynamic_reverse") is True
    values = (np.arange(32) * 4 - 3).reshape(1, 1, 4, 4, 2).astype(np.int8)  # magnitudes grow in memory order
    out = kernel_for(op).fn(op, [DynamicValue(values, np.array([3]))])
    acc = [[int(v) * 100 for v in values[0, 0, i, j]] for i in range(4) for j in range(4)]
    expected, shift = segment_rule(acc[::-1])
    assert out.values.reshape(16, 2).tolist() == expected[::-1]
    assert out.exponent[0] == 3 - shift
    forward, _ = segment_rule(acc)
    assert forward != expected[::-1]  # the order matters: this input tells them apart

    c = GraphBuilder()
    x = c.input("x", (1, 4), np.int8)
    w = c.constant("w", np.ones((2, 4), np.int8), scale=1.0, zero_point=0)
    y = c.output(c.activation("y", (1, 2), np.int8, scale=1.0, zero_point=0))
    fc = c.op("FULLY_CONNECTED", [x, w, None], [y], dynamic_fixed_point=True, dynamic_reverse=True)
    with pytest.raises(ModelError, match="only a DEPTHWISE_CONV_2D"):
        kernel_for(fc).fn(fc, [DynamicValue(np.ones((1, 1, 4), np.int8), np.array([0]))])


def test_unknown_custom_options_of_a_dynamic_op_are_refused(tmp_path):
    float_graph = microforge.load(shared_model(FLOAT_MODELS["kws"]))
    x = np.random.default_rng(0).normal(size=(4,) + float_graph.inputs[0].shape[1:]).astype(np.float32)
    path = tmp_path / "dynamic.tflite"
    robust.quantize(float_graph, x, scheme="dynamic").save(path)
    data = bytearray(path.read_bytes())
    marker = data.find(b"visit")
    assert marker > 0, "the quantizer marks every other depthwise layer reversed"
    data[marker:marker + 5] = b"viXit"
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="unknown dynamic fixed-point options"):
        microforge.load(broken)


def test_add_aligns_exponents_and_caps_the_shift():
    b = GraphBuilder()
    a_t = b.input("a", (1, 3), np.int8)
    c_t = b.input("c", (1, 3), np.int8)
    y = b.output(b.activation("y", (1, 3), np.int8, scale=1.0, zero_point=0))
    op = b.op("ADD", [a_t, c_t], [y], dynamic_fixed_point=True)
    a = DynamicValue(np.array([[[100, -50, 3]], [[100, -50, 3]]], np.int8), np.array([2, 40]))
    c = DynamicValue(np.array([[[20, 7, -128]], [[20, 7, -128]]], np.int8), np.array([5, 0]))
    out = kernel_for(op).fn(op, [a, c])
    for n in range(2):
        ea = min(max(a.exponent[n], c.exponent[n]), min(a.exponent[n], c.exponent[n]) + 23)

        def moved(v, e):
            return round_half_away(Fraction(int(v)) * Fraction(2) ** int(ea - e))

        acc = [moved(u, a.exponent[n]) + moved(v, c.exponent[n]) for u, v in zip(a.values[n, 0], c.values[n, 0])]
        expected, shift = segment_rule([acc])
        assert list(out.values[n, 0]) == expected[0] and out.exponent[n] == ea - shift


def test_add_of_one_size_in_two_shapes_is_elementwise():
    """(1, 1, 1, 3) + (3,), as converters write the 1x1 stages of residual networks: the same sum as two
    operands of one shape; other sizes are refused."""
    b = GraphBuilder()
    a_t = b.input("a", (1, 1, 1, 3), np.int8)
    c_t = b.input("c", (3,), np.int8)
    y = b.output(b.activation("y", (1, 1, 1, 3), np.int8, scale=1.0, zero_point=0))
    op = b.op("ADD", [a_t, c_t], [y], dynamic_fixed_point=True)
    a = DynamicValue(np.array([100, -50, 3], np.int8).reshape(1, 1, 1, 1, 3), np.array([2]))
    c = DynamicValue(np.array([20, 7, -128], np.int8).reshape(1, 3), np.array([5]))
    out = kernel_for(op).fn(op, [a, c])
    same = GraphBuilder()
    a2, c2 = same.input("a", (1, 3), np.int8), same.input("c", (1, 3), np.int8)
    y2 = same.output(same.activation("y", (1, 3), np.int8, scale=1.0, zero_point=0))
    op2 = same.op("ADD", [a2, c2], [y2], dynamic_fixed_point=True)
    ref = kernel_for(op2).fn(op2, [DynamicValue(a.values.reshape(1, 1, 3), a.exponent),
                                   DynamicValue(c.values.reshape(1, 1, 3), c.exponent)])
    assert out.values.reshape(-1).tolist() == ref.values.reshape(-1).tolist() and out.exponent[0] == ref.exponent[0]
    assert out.values.shape == (1, 1, 1, 1, 3)
    d = GraphBuilder()
    a3, c3 = d.input("a", (1, 2, 3), np.int8), d.input("c", (3,), np.int8)
    y3 = d.output(d.activation("y", (1, 2, 3), np.int8, scale=1.0, zero_point=0))
    op3 = d.op("ADD", [a3, c3], [y3], dynamic_fixed_point=True)
    with pytest.raises(UnsupportedError, match="broadcasting ADD"):
        kernel_for(op3).fn(op3, [DynamicValue(np.zeros((1, 1, 2, 3), np.int8), np.array([0])),
                                 DynamicValue(np.zeros((1, 3), np.int8), np.array([0]))])


@pytest.mark.parametrize("name", ["kws", "ic", "ad"])
def test_dynamic_models_track_the_float_model_at_any_input_scale(name):
    path = shared_model(FLOAT_MODELS[name])
    graph = microforge.load(path)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12,) + graph.inputs[0].shape[1:]).astype(np.float32) * 20
    model = robust.quantize(path, x[:8], scheme="dynamic")
    loaded = microforge.load(model.to_tflite())  # through the file: the dynamic marks survive
    assert all(op.options.get("dynamic_fixed_point") for op in loaded.ops if op.type != "DEQUANTIZE")
    f = microforge.run(graph, x[8:])
    y = microforge.run(loaded, x[8:])
    assert y.dtype == np.float32
    assert np.mean(np.abs(y - f)) < 0.15 * np.mean(np.abs(f)) + 0.02
    # the exponents follow the input: a sample 1000 times smaller gets exponents ~10 larger
    seen = []
    run_batched(loaded, [np.concatenate([x[8:9], x[8:9] / 1024])[:, None].reshape((2,) + graph.inputs[0].shape)],
                observe=lambda t, v: seen.append(v.exponent) if isinstance(v, DynamicValue) else None)
    assert seen[0][1] - seen[0][0] == 10


def test_tflm_refuses_a_dynamic_model():
    from oracle import tflm_interpreter

    path = shared_model(FLOAT_MODELS["ad"])
    model = robust.quantize(path, np.random.default_rng(0).normal(size=(4, 640)).astype(np.float32), scheme="dynamic")
    with pytest.raises(RuntimeError):
        tflm_interpreter(model.to_tflite())


def test_ops_without_a_dynamic_kernel_are_listed():
    b = GraphBuilder()
    x = b.input("x", (1, 2, 2, 4), np.float32)
    y = b.activation("y", (1, 2, 2, 8), np.float32)
    z = b.output(b.activation("z", (1, 2, 2, 8), np.float32))
    b.op("CONCATENATION", [x, x], [y], axis=3)
    b.op("HARD_SWISH", [y], [z])
    with pytest.raises(UnsupportedError, match=r"op 0 \(CONCATENATION\).*\n.*op 1 \(HARD_SWISH\)"):
        robust.quantize(b.build(), np.ones((2, 2, 2, 4), np.float32), scheme="dynamic")


def test_assess_reads_the_run_time_exponents():
    path = shared_model(FLOAT_MODELS["ad"])
    x = np.random.default_rng(4).normal(size=(16, 640)).astype(np.float32)
    model = robust.quantize(path, x[:8], scheme="dynamic")
    report = robust.assess(path, model.graph, x[8:], shifts=["gain:100"])
    first = report.layers[1]  # after the input's QUANTIZE
    assert first["op"] == "FULLY_CONNECTED" and first["sqnr_db"] > 25 and first["saturation"] == 0
    # a gain of 100 moves the exponents instead of clipping, where static int8 saturates
    static = robust.assess(path, robust.quantize(path, x[:8]).graph, x[8:], shifts=["gain:100"])
    assert static.shifted[0]["layers"][0]["op"] == "input" and static.shifted[0]["layers"][0]["saturation"] > 0.3
    assert report.shifted[0]["layers"][0]["op"] == "QUANTIZE" and report.shifted[0]["layers"][0]["saturation"] == 0
    assert report.shifted[0]["layers"][1]["sqnr_db"] > static.shifted[0]["layers"][1]["sqnr_db"] + 10


def test_tflm_only_tools_refuse_a_dynamic_model(tmp_path):
    from typer.testing import CliRunner

    from microforge.cli import app

    path = shared_model(FLOAT_MODELS["ad"])
    x = np.random.default_rng(0).normal(size=(6, 640)).astype(np.float32)
    np.save(tmp_path / "calib.npy", x)
    runner = CliRunner()
    result = runner.invoke(app, ["quantize", str(path), "--calibration", str(tmp_path / "calib.npy"),
                                 "--scheme", "dynamic", "-o", str(tmp_path / "dfp.tflite")])
    assert result.exit_code == 0, result.output
    # the contract: `run` takes the dynamic model's float input as it is
    np.save(tmp_path / "x.npy", x[:2])
    result = runner.invoke(app, ["run", str(tmp_path / "dfp.tflite"), "--input", str(tmp_path / "x.npy"),
                                 "--output", str(tmp_path / "y.npy")])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), microforge.run(microforge.load(tmp_path / "dfp.tflite"), x[:2]))
    result = runner.invoke(app, ["plan", str(tmp_path / "dfp.tflite"), "--write-tflm-plan", str(tmp_path / "t.tflite")])
    assert result.exit_code == 2 and "dynamic fixed point" in result.output and "TFLite Micro cannot run" in result.output


def test_har_model_keeps_its_accuracy_in_every_scheme():
    """The shipped BasicMotions model, on its 40 test recordings (aeon's copy of the UEA data)."""
    import json
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "scripts"))
    from train_har import har_data

    normalisation = json.loads((ROOT / "models" / "har" / "training.json").read_text())["normalisation"]
    x_train, _, x_test, y_test, _ = har_data(normalisation)
    path = ROOT / "models" / "har" / "har_cnn_float.tflite"
    for scheme in ("int8", "dynamic"):
        report = robust.assess(path, robust.quantize(path, x_train, scheme=scheme).graph, x_test, labels=y_test)
        assert report.model["float_accuracy"] >= 0.95
        assert report.model["relative_accuracy"] >= 0.95, scheme
