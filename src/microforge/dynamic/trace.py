"""Budget traces: a CSV of requests with their budgets, a generator of realistic ones, and their
simulation with the runtime manager against an oracle and static choices.

CSV (a public contract): a header row with the columns
    t_ms, latency_budget_ms, energy_budget_uj, power_cap_mw, background_load
then one request a row: its time (ms, strictly increasing), its budgets (an empty cell = no budget) and
the fraction of cycles another task steals while it runs, in [0, 1) (an empty cell = 0). Extra columns
are ignored.

Simulation, on one core's points. Under a background load b an inference at point p takes
latency_p / (1 - b); energy and power do not change (the stolen cycles are the other task's). A request
is feasible when some point meets every given budget under its actual load. The manager runs in feedback
mode and learns the load only from the latencies it observed on earlier requests; the oracle knows each
request's load and picks the best point meeting the budgets (or, like the manager, the cheapest when
none does). A switch (the chosen point differs from the previous request's) costs `switch_instructions`
at the new point's clock and load, counted in that request's latency and energy but not in what the
manager observes (firmware times the inference alone).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from microforge.dynamic.manager import DEFAULT_SMOOTHING, Manager
from microforge.dynamic.points import (MemberMeasurement, OperatingPoint, member_name, member_order, operating_points,
                                      points_of_core)
from microforge.errors import InputError

COLUMNS = ("t_ms", "latency_budget_ms", "energy_budget_uj", "power_cap_mw", "background_load")
DEFAULT_HEADROOM = 0.05      # margin on the manager's predicted latency in simulations
STATIC_DEADLINE_TARGET = 0.99
LOAD_JITTER = 0.02           # make_trace: per-request wobble of the background load around its trend


@dataclass(frozen=True)
class Request:
    """One inference request: its time and budgets (None = no budget) and the background load."""
    t_ms: float
    latency_budget_ms: float | None = None
    energy_budget_uj: float | None = None
    power_cap_mw: float | None = None
    background_load: float = 0.0


# -- CSV ---------------------------------------------------------------------------------------------------

def _cell(path: Path, line: int, column: str, text: str, optional: bool) -> float | None:
    text = text.strip()
    where = f"{path} line {line}, column {column}"
    if not text:
        if optional:
            return None
        raise InputError(f"{where}: a value is required")
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{where}: '{text}' is not a number") from None
    if not math.isfinite(value):
        raise InputError(f"{where}: '{text}' is not a finite number")
    return value


def read_trace(path) -> list[Request]:
    """The requests of a trace CSV (see the module docstring); InputError naming the line and column of
    the first bad value."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: trace not found")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        while header is not None and not any(c.strip() for c in header):
            header = next(reader, None)
        if header is None:
            raise InputError(f"{path}: the trace is empty (expected a header: {','.join(COLUMNS)})")
        names = [c.strip() for c in header]
        missing = [c for c in COLUMNS if c not in names]
        if missing:
            raise InputError(f"{path}: the header lacks the column(s) {', '.join(missing)}")
        at = {c: names.index(c) for c in COLUMNS}
        requests: list[Request] = []
        for row in reader:
            line = reader.line_num
            if not any(c.strip() for c in row):
                continue
            if len(row) < len(names):
                raise InputError(f"{path} line {line}: {len(row)} cells for {len(names)} columns")
            values = {c: _cell(path, line, c, row[at[c]], optional=c != "t_ms") for c in COLUMNS}
            for c in COLUMNS[1:4]:
                if values[c] is not None and values[c] < 0:
                    raise InputError(f"{path} line {line}, column {c}: a budget cannot be negative ({values[c]:g})")
            load = values["background_load"] or 0.0
            if not 0 <= load < 1:
                raise InputError(f"{path} line {line}, column background_load: {load:g} is not in [0, 1)")
            if requests and values["t_ms"] <= requests[-1].t_ms:
                raise InputError(f"{path} line {line}, column t_ms: {values['t_ms']:g} does not increase "
                                 f"(previous {requests[-1].t_ms:g})")
            requests.append(Request(values["t_ms"], values["latency_budget_ms"], values["energy_budget_uj"],
                                    values["power_cap_mw"], load))
    if not requests:
        raise InputError(f"{path}: the trace has a header but no requests")
    return requests


def write_trace(requests: list[Request], path) -> Path:
    """The requests as a trace CSV; floats written so they read back equal."""
    path = Path(path)

    def text(v) -> str:
        return "" if v is None else repr(float(v))

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        for r in requests:
            w.writerow([text(r.t_ms), text(r.latency_budget_ms), text(r.energy_budget_uj), text(r.power_cap_mw),
                        text(r.background_load)])
    return path


# -- a generated trace ----------------------------------------------------------------------------------

# the family the trace is scaled to when no points are given: plausible instruction counts of a
# keyword-spotting CNN at widths 0.25..1 on the Cortex-M4 board
_NOMINAL = [MemberMeasurement(0.25, "cortex-m4", 0.78, 750_000, True),
            MemberMeasurement(0.5, "cortex-m4", 0.88, 2_300_000, True),
            MemberMeasurement(0.75, "cortex-m4", 0.915, 4_800_000, True),
            MemberMeasurement(1.0, "cortex-m4", 0.93, 8_000_000, True)]


def make_trace(n: int = 2000, seed: int = 0, points: list[OperatingPoint] | None = None,
               core: str | None = None) -> list[Request]:
    """A realistic trace of `n` requests, its budgets scaled to `points` (one core, or `core` of them;
    without points, to a nominal keyword-spotting family on the Cortex-M4 board).

    Phases, as fractions of the trace:
      0.00-0.15  relaxed: generous deadlines or none;
      0.15-0.32  tight deadlines, swinging between just above the fastest point and the full width's
                 fastest latency (a UI or sensor rate that changes);
      0.32-0.50  a background task stealing cycles: 20 % at once, rising to 60 %, then 35 %, then gone,
                 under a deadline the full width meets only without it;
      0.50-0.68  a battery draining: the energy budget shrinks from above the full width's to near the
                 cheapest point's;
      0.68-0.85  power caps that rule out the fastest clock, then more, with moderate deadlines;
      0.85-1.00  mixed budgets, a mild background load at times, and about 1 % of the trace infeasible
                 (a deadline or energy budget below every point's).
    The tight phase reaches deadlines only the narrowest width meets, so no single accurate point meets
    them all; every feasible tight deadline leaves at least 10 % above the fastest point.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"a trace needs n >= 1 requests, got {n!r}")
    pts = points_of_core(operating_points(_NOMINAL) if points is None else list(points), core)
    rng = np.random.default_rng(seed)
    top = max(p.accuracy for p in pts)
    biggest = [p for p in pts if p.accuracy == top]
    l_small = min(p.latency_ms for p in pts)
    l_big = min(p.latency_ms for p in biggest)
    e_small = min(p.energy_uj for p in pts)
    e_big = min(p.energy_uj for p in biggest)
    powers = sorted({p.power_mw for p in pts}, reverse=True)
    span = max(l_big / l_small, 1.0)

    def deadline(q: float) -> float:
        """q = 0: 10 % above the fastest point; q = 1: 10 % above the full width's fastest latency."""
        return 1.1 * l_small * span ** q

    def cap_below(k: int) -> float | None:
        """A power cap halfway between the k-th and (k+1)-th highest clock powers: it rules out the k
        fastest clocks (none if the points have no more clocks)."""
        return 0.5 * (powers[k - 1] + powers[k]) if k < len(powers) else None

    bounds = [int(round(f * n)) for f in (0.0, 0.15, 0.32, 0.50, 0.68, 0.85, 1.0)]
    infeasible_at = set()
    last = bounds[6] - bounds[5]
    if last > 0:
        count = max(1, round(0.01 * n)) if n >= 50 else 0
        infeasible_at = {bounds[5] + int(i) for i in rng.choice(last, size=min(count, last), replace=False)}
    mild_load = 0.0
    requests: list[Request] = []
    t = 0.0
    for i in range(n):
        latency = energy = cap = None
        load = 0.0
        if i < bounds[1]:                                   # relaxed
            if rng.random() < 0.7:
                latency = l_big * rng.uniform(1.5, 3.0)
        elif i < bounds[2]:                                 # tight deadlines
            u = (i - bounds[1]) / max(1, bounds[2] - bounds[1])
            q = 0.5 + 0.5 * math.cos(2 * math.pi * 2 * u) + rng.uniform(-0.04, 0.04)
            latency = deadline(min(max(q, 0.0), 1.0))
        elif i < bounds[3]:                                 # background task
            u = (i - bounds[2]) / max(1, bounds[3] - bounds[2])
            if u < 0.1 or u >= 0.9:
                load = 0.0
            elif u < 0.2:
                load = 0.2
            elif u < 0.5:
                load = 0.2 + 0.4 * (u - 0.2) / 0.3
            elif u < 0.75:
                load = 0.6 - 0.03 * (1 - math.cos(2 * math.pi * (u - 0.5) / 0.25))
            else:
                load = 0.35
            if load > 0:  # the other task's share of a window wobbles around its trend
                load += rng.uniform(-LOAD_JITTER, LOAD_JITTER)
            latency = l_big * rng.uniform(1.1, 1.2)
        elif i < bounds[4]:                                 # battery draining
            u = (i - bounds[3]) / max(1, bounds[4] - bounds[3])
            energy = e_big * 1.5 * (e_small * 1.2 / (e_big * 1.5)) ** u * rng.uniform(0.98, 1.02)
            latency = l_big * 3.0
        elif i < bounds[5]:                                 # power caps
            u = (i - bounds[4]) / max(1, bounds[5] - bounds[4])
            cap = cap_below(1 + min(int(3 * u), max(0, len(powers) - 2)))
            latency = l_big * rng.uniform(1.2, 2.5)
        else:                                               # mixed, with a few infeasible requests
            if (i - bounds[5]) % 50 == 0:
                mild_load = float(rng.choice([0.0, 0.0, 0.1, 0.15]))
            load = mild_load
            kind = rng.integers(4)
            if kind in (0, 2, 3):
                latency = deadline(rng.uniform(0.1, 1.2)) / (1 - load)
            if kind in (1, 2):
                energy = e_small * (e_big / e_small) ** rng.uniform(0.05, 1.1) * 1.05
            if kind == 3:
                cap = cap_below(1)
            if i in infeasible_at:
                if rng.random() < 0.5 or latency is None:
                    latency, energy = l_small * rng.uniform(0.3, 0.8), None
                else:
                    energy = e_small * rng.uniform(0.3, 0.8)
        t += float(rng.uniform(20.0, 60.0))
        requests.append(Request(round(t, 3), _tidy(latency), _tidy(energy), _tidy(cap), round(load, 4)))
    return requests


def _tidy(value: float | None) -> float | None:
    """A budget rounded to 5 significant digits, so the CSV stays legible."""
    return None if value is None else float(f"{value:.5g}")


# -- simulation ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """What happened on one request: the manager's choice and its outcome, beside the oracle's choice."""
    request: Request
    feasible: bool
    index: int              # the manager's point, an index into the core's points
    width: float
    depth: int | None       # blocks run; None in a family without depth options
    mhz: int
    accuracy: float
    latency_ms: float       # actual, under the load, with any switch cost
    energy_uj: float
    deadline_met: bool
    energy_kept: bool
    switched: bool
    load_factor: float      # the manager's estimate when it chose
    oracle_index: int
    oracle_accuracy: float


def _meets(p: OperatingPoint, r: Request, latency_ms: float, energy_uj: float) -> tuple[bool, bool, bool]:
    return (r.latency_budget_ms is None or latency_ms <= r.latency_budget_ms,
            r.energy_budget_uj is None or energy_uj <= r.energy_budget_uj,
            r.power_cap_mw is None or p.power_mw <= r.power_cap_mw)


def _oracle_choice(points: list[OperatingPoint], r: Request) -> tuple[int, bool]:
    """The oracle: the best point meeting the budgets under the request's actual load (the manager's rule
    with exact latencies), else the cheapest; and whether the request is feasible."""
    best = None
    for i, p in enumerate(points):
        if all(_meets(p, r, p.latency_ms / (1 - r.background_load), p.energy_uj)):
            key = (-p.accuracy, p.energy_uj, p.latency_ms, i)
            if best is None or key < best[0]:
                best = (key, i)
    if best is not None:
        return best[1], True
    return min(range(len(points)), key=lambda i: (points[i].energy_uj, points[i].latency_ms, i)), False


def _outcomes(points, requests, choices, switch_instructions):
    """Per request (latency, energy, deadline met, energy kept, power kept, switched) of a choice sequence."""
    out, previous = [], None
    for r, i in zip(requests, choices):
        p = points[i]
        slow = 1 - r.background_load
        latency, energy = p.latency_ms / slow, p.energy_uj
        switched = previous is not None and i != previous
        if switched and switch_instructions:
            latency += switch_instructions * p.latency_ms / p.instructions / slow
            energy += switch_instructions * p.energy_uj / p.instructions
        out.append((latency, energy, *_meets(p, r, latency, energy), switched))
        previous = i
    return out


def _metrics(points, requests, feasible, choices, switch_instructions) -> dict:
    outcomes = _outcomes(points, requests, choices, switch_instructions)
    kept = [o for o, f in zip(outcomes, feasible) if f]

    def fraction(k: int) -> float | None:
        return sum(o[k] for o in kept) / len(kept) if kept else None

    switches = sum(o[5] for o in outcomes)
    return {"deadlines_met": fraction(2), "energy_budget_kept": fraction(3), "power_cap_kept": fraction(4),
            "mean_accuracy": float(np.mean([points[i].accuracy for i in choices])), "switches": switches,
            "switch_cost_instructions": switches * switch_instructions}


def simulate(points: list[OperatingPoint], requests: list[Request], core: str, switch_instructions: int = 0,
             headroom: float = DEFAULT_HEADROOM, smoothing: float = DEFAULT_SMOOTHING,
             keep_steps: bool = False) -> dict:
    """Replay `requests` on `core`'s points with the feedback manager, an oracle and static choices.

    Returns (keys are a public contract): requests, core, infeasible (count), deadlines_met,
    energy_budget_kept, power_cap_kept (fractions over the feasible requests; None if there are none),
    mean_accuracy (over all requests), switches, switch_cost_instructions (total) and
    switch_cost_instructions_per_switch, headroom, smoothing; and, each with the same metrics:
      oracle           knows each request's load, picks the best point meeting its budgets;
      static_largest   always the most accurate point at its fastest clock;
      static_smallest  always the cheapest point (lowest energy);
      static_best      the most accurate single point meeting >= 99 % of the feasible deadlines, with
                       `point` and `meets_target` (False: no point does; then the point meeting most).
    With keep_steps, also `steps`: a list of Step, one per request (for plot_trace).
    """
    pts = points_of_core(list(points), core)
    if not requests:
        raise InputError("simulate needs at least one request")
    if isinstance(switch_instructions, bool) or not isinstance(switch_instructions, int) or switch_instructions < 0:
        raise InputError(f"switch_instructions must be an integer >= 0, got {switch_instructions!r}")
    manager = Manager(pts, feedback=True, smoothing=smoothing, headroom=headroom)
    oracle = [_oracle_choice(pts, r) for r in requests]
    feasible = [f for _, f in oracle]
    choices, factors = [], []
    for r in requests:
        factors.append(manager.load_factor)
        chosen = manager.select(r.latency_budget_ms, r.energy_budget_uj, r.power_cap_mw)
        choices.append(chosen.index)
        # the manager sees only the inference's measured latency, after the fact
        manager.observe(chosen.index, chosen.point.latency_ms / (1 - r.background_load))

    result = {"requests": len(requests), "core": pts[0].core, "infeasible": feasible.count(False),
              **_metrics(pts, requests, feasible, choices, switch_instructions),
              "switch_cost_instructions_per_switch": switch_instructions,
              "headroom": headroom, "smoothing": smoothing}
    result["oracle"] = _metrics(pts, requests, feasible, [i for i, _ in oracle], switch_instructions)

    n = len(requests)
    top = max(p.accuracy for p in pts)
    largest = max((i for i, p in enumerate(pts) if p.accuracy == top), key=lambda i: (pts[i].mhz, -pts[i].energy_uj))
    smallest = min(range(len(pts)), key=lambda i: (pts[i].energy_uj, pts[i].latency_ms, i))
    result["static_largest"] = {**_metrics(pts, requests, feasible, [largest] * n, 0), "point": pts[largest].to_json()}
    result["static_smallest"] = {**_metrics(pts, requests, feasible, [smallest] * n, 0),
                                 "point": pts[smallest].to_json()}
    statics = [(i, _metrics(pts, requests, feasible, [i] * n, 0)) for i in range(len(pts))]
    good = [(i, m) for i, m in statics if (m["deadlines_met"] if m["deadlines_met"] is not None else 1.0)
            >= STATIC_DEADLINE_TARGET]
    if good:
        i, m = min(good, key=lambda im: (-pts[im[0]].accuracy, pts[im[0]].energy_uj, im[0]))
    else:
        i, m = max(statics, key=lambda im: (im[1]["deadlines_met"] or 0.0, pts[im[0]].accuracy))
    result["static_best"] = {**m, "point": pts[i].to_json(), "meets_target": bool(good)}

    if keep_steps:
        outcomes = _outcomes(pts, requests, choices, switch_instructions)
        result["steps"] = [
            Step(r, f, i, pts[i].width, pts[i].depth, pts[i].mhz, pts[i].accuracy, o[0], o[1], o[2], o[3], o[5], lf, oi,
                 pts[oi].accuracy)
            for r, f, i, o, lf, (oi, _) in zip(requests, feasible, choices, outcomes, factors, oracle)]
    return result


# -- plot ------------------------------------------------------------------------------------------------

def plot_trace(result_or_steps, path) -> Path:
    """A PNG (or SVG) of a simulation over time: the latency budget beside the actual latency (misses
    marked) with the background load, the chosen member and clock, and the accuracy against the oracle's.
    Takes simulate(..., keep_steps=True)'s result or its list of steps."""
    steps = result_or_steps.get("steps") if isinstance(result_or_steps, dict) else result_or_steps
    if not steps:
        raise InputError("plot_trace needs simulation steps: call simulate(..., keep_steps=True)")
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg"):
        raise InputError(f"cannot draw a trace as '{path.suffix}': give a .png or .svg path")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = np.array([s.request.t_ms for s in steps]) / 1000.0
    budget = np.array([np.nan if s.request.latency_budget_ms is None else s.request.latency_budget_ms for s in steps])
    energy_budget = np.array([np.nan if s.request.energy_budget_uj is None else s.request.energy_budget_uj
                              for s in steps])
    cap = np.array([np.nan if s.request.power_cap_mw is None else s.request.power_cap_mw for s in steps])
    latency = np.array([s.latency_ms for s in steps])
    missed = np.array([s.feasible and not s.deadline_met for s in steps])
    infeasible = np.array([not s.feasible for s in steps])

    fig = Figure(figsize=(13, 10), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(4, 1, sharex=True)
    ax = axes[0]
    ax.plot(t, budget, color="#888888", linewidth=0.8, label="latency budget")
    ax.plot(t, latency, color="#1f77b4", linewidth=0.8, label="actual latency")
    ax.scatter(t[missed], latency[missed], color="#d62728", s=14, zorder=5, label="deadline missed")
    ax.scatter(t[infeasible], latency[infeasible], color="#000000", marker="x", s=14, zorder=5, label="infeasible")
    ax.set_yscale("log")
    ax.set_ylabel("ms")
    load_ax = ax.twinx()
    load_ax.fill_between(t, [s.request.background_load for s in steps], step="post", color="#ff7f0e", alpha=0.15)
    load_ax.set_ylim(0, 1)
    load_ax.set_ylabel("background load", color="#ff7f0e")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("latency budget and actual latency (shaded: background load)")

    ax = axes[1]
    ax.plot(t, energy_budget, color="#2ca02c", linewidth=0.8, label="energy budget (µJ)")
    ax.plot(t, [s.energy_uj for s in steps], color="#9467bd", linewidth=0.8, label="energy (µJ)")
    ax.set_yscale("log")
    ax.set_ylabel("µJ")
    cap_ax = ax.twinx()
    cap_ax.plot(t, cap, color="#8c564b", linewidth=1.2, linestyle="--", label="power cap (mW)")
    cap_ax.set_ylabel("power cap (mW)", color="#8c564b")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("energy budget and energy per inference (dashed: power cap)")

    ax = axes[2]
    members = sorted({(s.width, s.depth) for s in steps}, key=member_order)  # the ones chosen, smallest first
    ax.step(t, [members.index((s.width, s.depth)) for s in steps], where="post", color="#1f77b4", linewidth=1)
    ax.set_yticks(range(len(members)), [member_name(*m) for m in members], fontsize=7)
    ax.set_ylabel("width" if all(d is None for _, d in members) else "width/depth")
    mhz_ax = ax.twinx()
    mhz_ax.step(t, [s.mhz for s in steps], where="post", color="#d62728", linewidth=0.8, alpha=0.7)
    mhz_ax.set_ylabel("clock (MHz)", color="#d62728")
    ax.set_title("chosen point: member (blue) and clock (red)")

    ax = axes[3]
    ax.step(t, [100 * s.oracle_accuracy for s in steps], where="post", color="#aaaaaa", linewidth=2,
            label="oracle")
    ax.step(t, [100 * s.accuracy for s in steps], where="post", color="#1f77b4", linewidth=1, label="manager")
    ax.set_ylabel("accuracy (%)")
    ax.set_xlabel("time (s)")
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("accuracy of the chosen point")
    for ax in axes:
        ax.grid(color="#e5e5e5", linewidth=0.6)
    fig.tight_layout()
    fig.savefig(path, facecolor="white")
    return path
