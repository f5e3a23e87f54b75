"""The runtime manager on the emulated core and the `microforge dynamic` commands, on a tiny family."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from microforge.bench.dataset import write_dataset
from microforge.cli import app
from microforge.dynamic.family import load_family, save_family
from microforge.dynamic.measure import read_points_document
from microforge.dynamic.onchip import play_trace
from microforge.dynamic.trace import make_trace, simulate, write_trace
from tests.test_dynamic_family import CLASSES, WIDTHS, _shared_parameters, float_member

runner = CliRunner()


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """A saved tiny family, a runner dataset for it and its points measured on qemu-m4 by the CLI."""
    root = tmp_path_factory.mktemp("dynamic")
    calibration = np.random.default_rng(1).normal(0, 1, (64, 1, 8, 6, 1)).astype(np.float32)
    save_family(root / "family", WIDTHS, [float_member(_shared_parameters(), w) for w in WIDTHS], calibration,
                name="tiny")
    x = np.random.default_rng(2).integers(-128, 128, (12, 1, 8, 6, 1), dtype=np.int8)
    write_dataset(root / "data", [(f"s{i}.bin", x[i]) for i in range(12)], [i % CLASSES for i in range(12)], CLASSES)
    result = runner.invoke(app, ["dynamic", "points", str(root / "family"), "--target", "qemu-m4", "--dataset",
                                 str(root / "data"), "--json", "--save", str(root / "family" / "points.json"),
                                 "--plot", str(root / "points.png")])
    assert result.exit_code == 0, result.output
    return root, json.loads(result.output)


def test_points_json_follows_the_contract(measured):
    root, document = measured
    assert set(document["family"]) >= {"flash_bytes", "largest_alone_flash_bytes", "separate_flash_bytes"}
    points = document["points"]
    assert len(points) == 16  # 4 widths x 4 clocks of the Cortex-M4 board
    keys = {"width", "core", "mhz", "accuracy", "instructions", "latency_ms", "energy_uj", "power_mw", "pareto",
            "bit_exact"}
    assert all(set(p) == keys | {"depth"} and p["depth"] is None for p in points)  # depth: a width-only family
    assert all(p["bit_exact"] and p["core"] == "cortex-m4" for p in points)
    assert any(p["pareto"] for p in points)
    assert (root / "points.png").stat().st_size > 0
    saved, _ = read_points_document(root / "family" / "points.json")
    assert saved == document


def test_simulate_json_follows_the_contract(measured, tmp_path):
    root, document = measured
    _, points = read_points_document(root / "family" / "points.json")
    trace = write_trace(make_trace(200, seed=3, points=points, core="cortex-m4"), tmp_path / "trace.csv")
    result = runner.invoke(app, ["dynamic", "simulate", str(root / "family"), "--trace", str(trace), "--json",
                                 "--plot", str(tmp_path / "trace.png")])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    for key in ("deadlines_met", "energy_budget_kept", "mean_accuracy", "switches", "oracle", "static_largest",
                "static_smallest", "infeasible"):
        assert key in out
    assert 0 <= out["deadlines_met"] <= 1 and out["requests"] == 200
    assert out["oracle"]["mean_accuracy"] >= out["static_smallest"]["mean_accuracy"]
    assert (tmp_path / "trace.png").stat().st_size > 0


def test_bad_trace_and_missing_points_are_named(measured, tmp_path):
    root, _ = measured
    bad = tmp_path / "bad.csv"
    bad.write_text("t_ms,latency_budget_ms,energy_budget_uj,power_cap_mw\n0,1,,\n")
    result = runner.invoke(app, ["dynamic", "simulate", str(root / "family"), "--trace", str(bad)])
    assert result.exit_code == 2 and "background_load" in result.output
    bad.write_text("t_ms,latency_budget_ms,energy_budget_uj,power_cap_mw,background_load\n0,-1,,,0\n")
    result = runner.invoke(app, ["dynamic", "simulate", str(root / "family"), "--trace", str(bad)])
    assert result.exit_code == 2 and "line 2" in result.output
    result = runner.invoke(app, ["dynamic", "simulate", str(root / "data"), "--trace", str(bad)])
    assert result.exit_code == 2 and "points" in result.output
    result = runner.invoke(app, ["dynamic", "points", str(root / "data"), "--dataset", str(root / "data")])
    assert result.exit_code == 2 and "family.json" in result.output


def test_the_firmware_runs_the_manager_like_python(measured, tmp_path):
    root, _ = measured
    family = load_family(root / "family")
    _, points = read_points_document(root / "family" / "points.json")
    requests = make_trace(150, seed=4, points=points, core="cortex-m4")
    sample = np.random.default_rng(5).integers(-128, 128, (1, 8, 6, 1), dtype=np.int8).tobytes()
    played = play_trace(family, points, requests, "qemu-m4", sample, tmp_path)
    simulated = simulate(points, requests, "cortex-m4")
    # the firmware chooses as the Python manager does, but on latencies it timed itself (timer ticks,
    # input copies): a choice at the margin may differ
    assert played["agreement"] >= 0.95
    assert played["infeasible"] == simulated["infeasible"]
    assert abs(played["deadlines_met"] - simulated["deadlines_met"]) <= 0.03
    # the firmware's timer ticks every microsecond of virtual time (1000 instructions): at the slowest clock
    # (26 MHz, one cycle each) a tick is 38 us of the board's time, and reading the timer around the
    # inference and the background spin costs a few ticks, whatever the model
    tick_ms = 1000 / (min(p.mhz for p in points) * 1000.0)
    assert played["max_latency_gap_ms"] < 3 * tick_ms + 0.02 * max(p.latency_ms for p in points)
