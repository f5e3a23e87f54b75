"""Budget traces: the CSV contract and its errors, the generated trace's phases, the simulation's metrics
on a handmade trace whose answer is worked out by hand, and oracle >= manager >= static on a generated
one."""

import pytest

from microforge.dynamic.points import OperatingPoint, MemberMeasurement, operating_points
from microforge.dynamic.trace import (COLUMNS, Request, Step, make_trace, plot_trace, read_trace, simulate,
                                      write_trace)
from microforge.errors import InputError

HEADER = ",".join(COLUMNS)
FAMILY = [(0.25, 0.78, 750_000), (0.5, 0.88, 2_300_000), (0.75, 0.915, 4_800_000), (1.0, 0.93, 8_000_000)]


@pytest.fixture(scope="module")
def points():
    ms = [MemberMeasurement(w, core, acc, int(n * k), True)
          for core, k in (("cortex-m4", 1.0), ("cortex-m7", 0.93)) for w, acc, n in FAMILY]
    return operating_points(ms)


# -- CSV ---------------------------------------------------------------------------------------------------

def test_csv_round_trip(tmp_path, points):
    requests = make_trace(300, seed=4, points=points, core="cortex-m4")
    requests += [Request(1e9, None, None, None, 0.0), Request(1e9 + 0.1, 1 / 3, 2 / 3, 0.1, 0.999)]
    path = write_trace(requests, tmp_path / "trace.csv")
    assert path.read_text().splitlines()[0] == HEADER
    assert read_trace(path) == requests


def test_reading_accepts_empty_cells_blank_lines_and_extra_columns(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(f"note,{HEADER}\n\nfirst,0,10,,,\nsecond,5,,100,2.5,0.25\n\n")
    assert read_trace(path) == [Request(0.0, 10.0, None, None, 0.0), Request(5.0, None, 100.0, 2.5, 0.25)]


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("\n\n", "empty"),
    (f"{HEADER}\n", "no requests"),
    ("t_ms,latency_budget_ms,energy_budget_uj\n0,1,2\n", "lacks the column.*power_cap_mw, background_load"),
    (f"{HEADER}\n0,1,,,\n1,abc,,,\n", "line 3, column latency_budget_ms: 'abc' is not a number"),
    (f"{HEADER}\n0,1,,,\n1,,-5,,\n", "line 3, column energy_budget_uj: a budget cannot be negative"),
    (f"{HEADER}\n0,,,-0.1,\n", "line 2, column power_cap_mw: a budget cannot be negative"),
    (f"{HEADER}\n0,1,,,1.0\n", "line 2, column background_load: 1 is not in"),
    (f"{HEADER}\n0,1,,,-0.2\n", "line 2, column background_load: -0.2 is not in"),
    (f"{HEADER}\n0,1,,,\n5,1,,,\n5,1,,,\n", "line 4, column t_ms: 5 does not increase"),
    (f"{HEADER}\n,1,,,\n", "line 2, column t_ms: a value is required"),
    (f"{HEADER}\n0,nan,,,\n", "line 2, column latency_budget_ms: 'nan' is not a finite number"),
    (f"{HEADER}\n0,1,2\n", "line 2: 3 cells for 5 columns"),
])
def test_bad_traces_name_the_line_and_column(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_trace(path)


def test_missing_trace_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_trace(tmp_path / "missing.csv")


# -- the generated trace -------------------------------------------------------------------------------

def test_make_trace_has_its_phases(points):
    m4 = [p for p in points if p.core == "cortex-m4"]
    trace = make_trace(2000, seed=0, points=m4)
    assert len(trace) == 2000 and trace == make_trace(2000, seed=0, points=m4)
    assert trace != make_trace(2000, seed=1, points=m4)
    assert all(a.t_ms < b.t_ms for a, b in zip(trace, trace[1:]))
    loads = [r.background_load for r in trace]
    assert all(0 <= x < 1 for x in loads) and max(loads) >= 0.58 and min(x for x in loads if x > 0) <= 0.2
    assert sum(r.power_cap_mw is not None for r in trace) >= 300
    assert sum(r.energy_budget_uj is not None for r in trace) >= 400
    assert sum(r.latency_budget_ms is None for r in trace) >= 50
    fastest = min(p.latency_ms for p in m4)
    tight = [r.latency_budget_ms for r in trace[300:640]]
    assert min(tight) >= 1.1 * fastest * 0.999 and min(tight) < 1.3 * fastest
    assert make_trace(10, seed=0)  # without points: scaled to the nominal family
    with pytest.raises(InputError, match="pass core="):
        make_trace(10, points=points)
    with pytest.raises(InputError, match="n >= 1"):
        make_trace(0)


def test_manager_between_oracle_and_static_on_a_generated_trace(points):
    for core in ("cortex-m4", "cortex-m7"):
        result = simulate(points, make_trace(2000, seed=0, points=points, core=core), core)
        oracle, best = result["oracle"], result["static_best"]
        assert result["requests"] == 2000 and 10 <= result["infeasible"] <= 40
        assert oracle["deadlines_met"] == 1.0 and oracle["mean_accuracy"] >= result["mean_accuracy"]
        assert result["deadlines_met"] >= 0.99
        assert result["energy_budget_kept"] == 1.0 and result["power_cap_kept"] == 1.0
        assert oracle["mean_accuracy"] - result["mean_accuracy"] <= 0.005
        assert best["meets_target"] and best["deadlines_met"] >= 0.99
        assert result["mean_accuracy"] - best["mean_accuracy"] >= 0.05
        # the most accurate point cannot meet the deadlines; the cheapest is the least accurate
        assert result["static_largest"]["deadlines_met"] < 0.9
        assert result["static_smallest"]["mean_accuracy"] <= best["mean_accuracy"]
        assert result["switches"] > 0 and "steps" not in result


# -- a handmade trace ------------------------------------------------------------------------------------

def handmade_points():
    def point(width, mhz, acc, latency, energy, power):
        return OperatingPoint(width, "cortex-m4", mhz, acc, 1000, latency, energy, power, True, True)

    return [point(0.5, 100, 0.80, 10.0, 100.0, 10.0),   # A
            point(0.5, 50, 0.80, 20.0, 80.0, 4.0),      # B
            point(1.0, 100, 0.90, 40.0, 400.0, 10.0),   # C
            point(1.0, 50, 0.90, 80.0, 320.0, 4.0)]     # D


HANDMADE = [Request(0.0),                                        # D: most accurate, then cheapest
            Request(1.0, latency_budget_ms=50.0),                # C
            Request(2.0, latency_budget_ms=15.0),                # A
            Request(3.0, energy_budget_uj=90.0),                 # B
            Request(4.0, latency_budget_ms=5.0),                 # infeasible: the cheapest, B
            Request(5.0, latency_budget_ms=100.0, power_cap_mw=5.0),   # D
            Request(6.0, latency_budget_ms=50.0, background_load=0.5),  # C: 42 ms predicted, 80 taken (oracle: B)
            Request(7.0, latency_budget_ms=50.0, background_load=0.5)]  # factor 1.5: B (31.5 ms), takes 40


def test_simulate_on_a_handmade_trace():
    pts = handmade_points()
    result = simulate(pts, HANDMADE, "cortex-m4", keep_steps=True)
    steps = result["steps"]
    assert [s.index for s in steps] == [3, 2, 0, 1, 1, 3, 2, 1]
    assert [s.oracle_index for s in steps] == [3, 2, 0, 1, 1, 3, 1, 1]
    assert [s.feasible for s in steps] == [True] * 4 + [False] + [True] * 3
    assert [s.load_factor for s in steps] == [1.0] * 7 + [1.5]
    assert steps[6].latency_ms == 80.0 and not steps[6].deadline_met and steps[7].deadline_met
    assert result["infeasible"] == 1
    assert result["deadlines_met"] == pytest.approx(6 / 7)
    assert result["energy_budget_kept"] == 1.0 and result["power_cap_kept"] == 1.0
    assert result["mean_accuracy"] == pytest.approx(0.85)
    assert result["switches"] == 6 and result["switch_cost_instructions"] == 0
    assert result["oracle"]["deadlines_met"] == 1.0
    assert result["oracle"]["mean_accuracy"] == pytest.approx(6.7 / 8) and result["oracle"]["switches"] == 5
    largest = result["static_largest"]
    assert largest["point"]["width"] == 1.0 and largest["point"]["mhz"] == 100
    assert largest["deadlines_met"] == pytest.approx(4 / 7)
    assert largest["energy_budget_kept"] == pytest.approx(6 / 7) and largest["power_cap_kept"] == pytest.approx(6 / 7)
    smallest = result["static_smallest"]
    assert smallest["point"]["mhz"] == 50 and smallest["point"]["width"] == 0.5
    assert smallest["deadlines_met"] == pytest.approx(6 / 7)
    best = result["static_best"]
    assert best["meets_target"] and (best["point"]["width"], best["point"]["mhz"]) == (0.5, 100)
    assert best["deadlines_met"] == 1.0 and best["mean_accuracy"] == pytest.approx(0.8)


def test_switch_costs_are_counted():
    pts = handmade_points()
    result = simulate(pts, HANDMADE, "cortex-m4", switch_instructions=100, keep_steps=True)
    assert result["switch_cost_instructions"] == 600 and result["switch_cost_instructions_per_switch"] == 100
    # the switch to C on request 2 costs 100 of its 1000 instructions: 4 ms more
    assert result["steps"][1].latency_ms == pytest.approx(44.0)
    assert result["steps"][1].energy_uj == pytest.approx(440.0)
    assert result["steps"][4].latency_ms == 20.0  # B again: no switch


def test_simulate_rejects_bad_input(points):
    with pytest.raises(InputError, match="core 'cortex-m0'"):
        simulate(points, HANDMADE, "cortex-m0")
    with pytest.raises(InputError, match="at least one request"):
        simulate(points, [], "cortex-m4")
    with pytest.raises(InputError, match="switch_instructions"):
        simulate(points, HANDMADE, "cortex-m4", switch_instructions=-1)


def test_plot_trace_writes_a_png(tmp_path, points):
    result = simulate(points, make_trace(400, seed=2, points=points, core="cortex-m7"), "cortex-m7", keep_steps=True)
    assert all(isinstance(s, Step) for s in result["steps"])
    path = plot_trace(result, tmp_path / "trace.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_trace(result["steps"][:50], tmp_path / "part.png").is_file()
    with pytest.raises(InputError, match="keep_steps=True"):
        plot_trace({"deadlines_met": 1.0}, tmp_path / "x.png")
