"""`assess`: per-layer error of a quantized model, checked against numbers computed by hand."""

import json
import math

import numpy as np
import pytest
from conftest import FLOAT_MODELS, INT8_MODELS, shared_model
from typer.testing import CliRunner

import microforge
from microforge import robust
from microforge.bench.dataset import write_dataset
from microforge.cli import app
from microforge.errors import InputError, TargetError
from microforge.graph.builder import GraphBuilder
from microforge.reference.interpreter import run_batched
from microforge.robust.assess import Shift, parse_shifts, quantize_inputs

LAYER_FIELDS = {"name", "op", "mae", "rmse", "rmse_over_scale", "sqnr_db", "cosine", "max_abs_error", "saturation",
                "instructions"}


def two_layer_float_model():
    """x (4) -> FC 4->3 + RELU -> h -> FC 3->2 -> y, float32."""
    rng = np.random.default_rng(5)
    b = GraphBuilder()
    x = b.input("x", (1, 4), np.float32)
    w1 = b.constant("w1", rng.normal(size=(3, 4)).astype(np.float32))
    b1 = b.constant("b1", rng.normal(size=3).astype(np.float32))
    h = b.activation("h", (1, 3), np.float32)
    w2 = b.constant("w2", rng.normal(size=(2, 3)).astype(np.float32))
    y = b.output(b.activation("y", (1, 2), np.float32))
    b.op("FULLY_CONNECTED", [x, w1, b1], [h], fused_activation_function="RELU")
    b.op("FULLY_CONNECTED", [h, w2, None], [y])
    return b.build()


def by_hand(f: np.ndarray, q: np.ndarray, scale: float, zero_point: int) -> dict:
    """The metrics written out plainly, sample by sample, with Python floats."""
    deq = [scale * (int(v) - zero_point) for v in q.ravel()]
    real = [float(v) for v in f.ravel()]
    err = [d - r for d, r in zip(deq, real)]
    n = len(err)
    rmse = math.sqrt(sum(e * e for e in err) / n)
    low, high = scale * (-128 - zero_point), scale * (127 - zero_point)
    clipped = sum(1 for v, r in zip(q.ravel(), real)
                  if (v == 127 and r > high + scale / 2) or (v == -128 and r < low - scale / 2))
    return {"mae": sum(abs(e) for e in err) / n, "rmse": rmse, "rmse_over_scale": rmse / scale,
            "sqnr_db": 10 * math.log10(sum(r * r for r in real) / sum(e * e for e in err)),
            "cosine": sum(d * r for d, r in zip(deq, real))
            / math.sqrt(sum(d * d for d in deq) * sum(r * r for r in real)),
            "max_abs_error": max(abs(e) for e in err), "saturation": clipped / n}


@pytest.mark.parametrize("gain", [1.0, 3.0])
def test_metrics_match_a_hand_computation(gain):
    float_graph = two_layer_float_model()
    rng = np.random.default_rng(0)
    calibration = rng.normal(size=(50, 4)).astype(np.float32)
    model = robust.quantize(float_graph, calibration)
    x = (rng.normal(size=(130, 4)) * gain).astype(np.float32)  # 130 > one chunk: sums go across chunks
    report = robust.assess(float_graph, model.graph, x)

    f_values, q_values = {}, {}
    run_batched(float_graph, [x[:, None]], observe=lambda t, v: f_values.__setitem__(t.name, v))
    run_batched(model.graph, [quantize_inputs(model.graph, x)[:, None]],
                observe=lambda t, v: q_values.__setitem__(t.name, v))
    assert [layer["name"] for layer in report.layers] == ["x", "h", "y"]
    assert report.layers[0]["op"] == "input"
    for layer in report.layers:
        t = next(t for t in model.graph.tensors if t.name == layer["name"])
        expected = by_hand(f_values[t.name], q_values[t.name], t.scale, t.zero_point)
        for key, value in expected.items():
            assert layer[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert set(report.layers[0]) >= LAYER_FIELDS
    if gain > 1:  # inputs three times the calibrated range clip: saturation seen and flagged
        assert report.layers[0]["saturation"] > 0.01 and report.layers[2]["saturation"] > 0.01
        assert "clip" in report.layers[2]["flag"]
    f_out = f_values["y"].reshape(len(x), 2)
    y_t = model.graph.outputs[0]
    deq = y_t.scale * (q_values["y"].reshape(len(x), 2).astype(np.float64) - y_t.zero_point)
    assert report.model["top1_agreement"] == pytest.approx(np.mean(f_out.argmax(1) == deq.argmax(1)))
    assert report.model["output_mae"] == pytest.approx(np.mean(np.abs(deq - f_out)))


def test_shifts_change_the_inputs_as_described():
    x = np.random.default_rng(1).normal(size=(400, 64)).astype(np.float32)
    noisy = Shift("noise", 20.0).apply(x)
    snr = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((noisy - x).astype(np.float64) ** 2))
    assert snr == pytest.approx(20.0, abs=0.2)
    np.testing.assert_array_equal(Shift("gain", 2.0).apply(x), x * 2)
    np.testing.assert_array_equal(Shift("offset", -0.5).apply(x), x - 0.5)
    assert [s.label for s in parse_shifts(["noise:20dB,gain:2", "offset:0.1"])] == ["noise:20dB", "gain:2",
                                                                                    "offset:0.1"]
    for bad in ("noise:20", "gain:2dB", "blur:3", "gain:x"):
        with pytest.raises(InputError, match="shift"):
            parse_shifts([bad])


def test_assess_on_host_and_qemu_reads_the_generated_c():
    float_graph = two_layer_float_model()
    rng = np.random.default_rng(2)
    model = robust.quantize(float_graph, rng.normal(size=(40, 4)).astype(np.float32))
    x = rng.normal(size=(12, 4)).astype(np.float32)
    reference = robust.assess(float_graph, model.graph, x, shifts=["noise:10dB"])
    for target in ("host", "qemu-m4"):
        report = robust.assess(float_graph, model.graph, x, shifts=["noise:10dB"], target=target)
        # the C is bit-exact with the reference, so every number is the same
        for ours, theirs in zip(report.layers, reference.layers):
            assert {k: v for k, v in ours.items() if k != "instructions"} == \
                   {k: v for k, v in theirs.items() if k != "instructions"}
        assert report.shifted[0]["model"] == reference.shifted[0]["model"]
        if target == "qemu-m4":
            assert all(layer["instructions"] > 0 for layer in report.layers[1:])


def test_tensors_of_a_converter_model_are_matched_by_position():
    """The TF converter renames tensors; its int8 KWS model is matched op by op with the float one."""
    float_path = shared_model(FLOAT_MODELS["kws"])
    x = np.random.default_rng(0).normal(size=(8, 49, 10, 1)).astype(np.float32) * 20
    report = robust.assess(float_path, INT8_MODELS["kws"], x)
    float_graph = microforge.load(float_path)
    assert [layer["op"] for layer in report.layers] == ["input"] + [op.type for op in float_graph.ops]


def test_bad_input_is_named():
    float_graph = two_layer_float_model()
    model = robust.quantize(float_graph, np.ones((4, 4), np.float32))
    with pytest.raises(InputError, match="first model must be the float one"):
        robust.assess(model.graph, float_graph, np.ones((2, 4), np.float32))
    with pytest.raises(InputError, match="input 'x' has shape"):
        robust.assess(float_graph, model.graph, np.ones((2, 5), np.float32))
    with pytest.raises(TargetError, match="unknown target 'fpga'"):
        robust.assess(float_graph, model.graph, np.ones((2, 4), np.float32), target="fpga")
    with pytest.raises(InputError, match="models' inputs differ"):
        robust.assess(shared_model(FLOAT_MODELS["ad"]), model.graph, np.ones((2, 640), np.float32))


def test_cli_assess_json_on_a_runner_folder(tmp_path):
    float_graph = two_layer_float_model()
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    float_path, quant_path = tmp_path / "float.tflite", tmp_path / "int8.tflite"
    float_path.write_bytes(microforge.write_tflite(float_graph))
    robust.quantize(float_graph, x).save(quant_path)
    labels = microforge.run(float_graph, x).argmax(axis=1)
    labels[:3] = 1 - labels[:3]  # the float model is right on 27 of 30
    write_dataset(tmp_path / "data", [(f"s{i}.bin", x[i]) for i in range(30)], labels, 2)
    result = CliRunner().invoke(app, ["assess", str(float_path), str(quant_path), "--data", str(tmp_path / "data"),
                                      "--shift", "gain:2", "--json", "--report", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert all(set(layer) >= LAYER_FIELDS for layer in report["layers"])
    assert set(report["model"]) >= {"top1_agreement", "relative_accuracy", "output_mae"}
    assert report["model"]["relative_accuracy"] == pytest.approx(report["model"]["quantized_accuracy"] / 0.9)
    assert report["shifted"][0]["shift"] == "gain:2" and len(report["shifted"][0]["layers"]) == 3
    html = (tmp_path / "report" / "report.html").read_text()
    assert "data:image/png;base64," in html and "gain:2" in html
