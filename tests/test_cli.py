"""The `microforge` command: analyze and run, and the errors a user sees."""

import json

import numpy as np
from conftest import INT8_MODELS, KWS_SAMPLE
from typer.testing import CliRunner

import microforge
from microforge.cli import app

runner = CliRunner()
KWS = str(INT8_MODELS["kws"])


def test_analyze_json_totals():
    result = runner.invoke(app, ["analyze", KWS, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    graph = microforge.load(KWS)
    assert len(report["ops"]) == len(graph.ops) == 13
    totals = report["totals"]
    # DS-CNN: 64 channels of 25x5 int8 = 8,000 bytes in and 8,000 out of each depthwise/pointwise layer.
    assert totals["ram_lower_bound_bytes"] == 16_000
    assert totals["flash_bytes"] == sum(t.nbytes for t in graph.constants)
    first = report["ops"][0]
    assert first["type"] == "CONV_2D" and first["outputs"] == [[1, 25, 5, 64]]
    assert first["macs"] == 25 * 5 * 64 * 10 * 4 * 1  # 10x4 kernel over one input channel
    assert totals["macs"] == sum(r["macs"] for r in report["ops"])


def test_analyze_table_mentions_lower_bound():
    result = runner.invoke(app, ["analyze", KWS])
    assert result.exit_code == 0
    assert "RAM lower bound" in result.output and "16,000" in result.output


def test_run_raw_input_prints_class_and_writes_output(tmp_path):
    out = tmp_path / "out.npy"
    result = runner.invoke(app, ["run", KWS, "--input", str(KWS_SAMPLE), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "predicted class 5" in result.output
    y = np.load(out)
    assert y.shape == (1, 12) and y.dtype == np.int8 and int(np.argmax(y)) == 5


def test_run_batch_of_raw_samples(tmp_path):
    batch = tmp_path / "batch.bin"
    batch.write_bytes(KWS_SAMPLE.read_bytes() * 3)
    out = tmp_path / "out.bin"
    result = runner.invoke(app, ["run", KWS, "-i", str(batch), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert len(out.read_bytes()) == 3 * 12
    assert result.output.count("predicted class 5") == 3


def test_run_wrong_size_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x00" * 491)
    result = runner.invoke(app, ["run", KWS, "--input", str(bad)])
    assert result.exit_code == 2
    assert "491 bytes, not a whole number of samples" in result.output
    assert "Traceback" not in result.output


def test_run_wrong_dtype_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((1, 49, 10, 1), np.float32))
    result = runner.invoke(app, ["run", KWS, "--input", str(bad)])
    assert result.exit_code == 2 and "needs dtype int8, got float32" in result.output


def test_analyze_malformed_model_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model at all")
    result = runner.invoke(app, ["analyze", str(bad)])
    assert result.exit_code == 2 and "file identifier" in result.output
