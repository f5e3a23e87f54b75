"""Per-op instruction profiles on the emulated cores (`microforge validate --target qemu-m4 --profile`):
the generated model.c, built with -DMF_PROFILE, calls a marker between ops and the QEMU plugin notes the
count at each one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import microforge
from microforge.cli import app
from microforge.codegen.validate import validate_target
from microforge.errors import TargetError
from microforge.graph.analysis import op_macs

TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-nm", "arm-none-eabi-size", "qemu-system-arm", "gcc")
needs_qemu = pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                                reason="needs gcc-arm-none-eabi, libnewlib-arm-none-eabi, qemu-system-arm and gcc")

AD = Path(__file__).resolve().parents[1] / "models" / "mlperf_tiny" / "ad01_int8.tflite"
MARKER = 2  # bl mf_profile_mark + its bx lr


@needs_qemu
def test_profile_rows_sum_to_the_inference():
    graph = microforge.load(AD)
    plain = validate_target(graph, "qemu-m4", count=2)
    report = validate_target(graph, "qemu-m4", count=2, profile=True)
    assert report["bit_exact"]
    rows = report["profile"]
    assert sorted(r["index"] for r in rows) == list(range(len(graph.ops)))  # one row per op
    for r in rows:
        op = graph.ops[r["index"]]
        assert r["type"] == op.type and r["output_shape"] == list(op.outputs[0].shape)
        assert r["macs"] == op_macs(op) and r["instructions"] >= 0
    total = sum(r["instructions"] for r in rows)
    # The profiled build runs the same kernels plus one marker call before each op and after the last;
    # what is left is mf_invoke's own prologue and epilogue.
    markers = MARKER * (len(rows) + 1)
    assert report["instructions_per_inference"] - plain["instructions_per_inference"] == markers
    assert 0 <= plain["instructions_per_inference"] - total <= 8
    assert abs(sum(r["share"] for r in rows) - total / report["instructions_per_inference"]) < 1e-9
    fc = [r for r in rows if r["type"] == "FULLY_CONNECTED"]
    assert fc and all(r["macs_per_instruction"] == pytest.approx(r["macs"] / r["instructions"]) for r in fc)


@needs_qemu
def test_cli_prints_the_table_and_json():
    runner = CliRunner()
    done = runner.invoke(app, ["validate", str(AD), "--target", "qemu-m7", "--inputs", "1", "--profile", "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.output)
    assert len(report["profile"]) == len(microforge.load(AD).ops)
    done = runner.invoke(app, ["validate", str(AD), "--target", "qemu-m4", "--inputs", "1", "--profile"])
    assert done.exit_code == 0, done.output
    assert "instructions per op" in done.output and "FULLY_CONNECTED" in done.output


def test_profile_needs_an_emulated_core():
    with pytest.raises(TargetError, match="qemu-m4"):
        validate_target(microforge.load(AD), "host", count=1, profile=True)
