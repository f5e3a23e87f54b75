"""Operating points: every (member x core x clock) of a measured slimmable family, its Pareto front, JSON,
a Markdown table and a plot. A member is a width, or a (width, depth) pair in a family with depth options.

A point's latency, energy and power come from the exact instruction count measured for its member on its
core and the board model of that core (board.py). Pareto front, per core: a point is on it when no other
point of the same core is at least as accurate, at most as slow and at most as costly in energy, and
strictly better in one of the three. Power is not a criterion (a power cap is a constraint the manager
checks, and a slower clock at lower power is often dominated in energy); equal points are both on it.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from microforge.dynamic.board import BOARDS, Board, board_for
from microforge.errors import InputError

TARGET_CORES = {"qemu-m4": "cortex-m4", "qemu-m7": "cortex-m7"}


@dataclass(frozen=True)
class MemberMeasurement:
    """One member of the family measured on one core.

    width: fraction of the full network's channels (0 < width <= 1); core: "cortex-m4" or "cortex-m7"
    (TARGET_CORES maps an emulator target to it); accuracy: fraction 0..1 on a dataset; instructions:
    exact executed instructions per inference; bit_exact: the compiled member matched the reference;
    depth: blocks run, None in a family without depth options.
    """
    width: float
    core: str
    accuracy: float
    instructions: int
    bit_exact: bool
    depth: int | None = None

    @property
    def member(self) -> tuple[float, int | None]:
        return (float(self.width), self.depth)


def member_order(member: tuple[float, int | None]) -> tuple[float, int]:
    """Sort key of a (width, depth) member: by width, then depth (None, all blocks, last)."""
    width, depth = member
    return (width, 1 << 30 if depth is None else depth)


def member_name(width: float, depth: int | None = None) -> str:
    """A member in tables and plots: "0.25", or "0.25/2" (width/depth)."""
    return f"{width:g}" + ("" if depth is None else f"/{depth}")


@dataclass(frozen=True)
class OperatingPoint:
    """A member run on a core at a clock. The field names are a public JSON contract; `depth` (blocks run)
    is None in a family without depth options."""
    width: float
    core: str
    mhz: int
    accuracy: float       # fraction 0..1
    instructions: int     # per inference
    latency_ms: float
    energy_uj: float      # per inference
    power_mw: float       # while inferring
    pareto: bool
    bit_exact: bool
    depth: int | None = None

    @property
    def member(self) -> tuple[float, int | None]:
        return (float(self.width), self.depth)

    def to_json(self) -> dict:
        """The point as a dict of JSON values, keyed by the field names."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> OperatingPoint:
        names = [f for f in cls.__dataclass_fields__]
        missing = [n for n in names if n not in data and n != "depth"]  # depth: absent in width-only files
        if missing:
            raise InputError(f"operating point {data!r} lacks {', '.join(missing)}")
        return cls(**{n: data[n] for n in names if n in data})


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _validate(measurements: list[MemberMeasurement], boards: dict[str, Board]) -> None:
    if not measurements:
        raise InputError("no member measurements given")
    seen = set()
    for m in measurements:
        where = f"width {m.width}" + ("" if m.depth is None else f" depth {m.depth}") + f" on {m.core}"
        board_for(m.core, boards)
        if not (_is_real(m.width) and 0 < m.width <= 1):
            raise InputError(f"{where}: width must be a number in (0, 1]")
        if not (_is_real(m.accuracy) and 0 <= m.accuracy <= 1):
            raise InputError(f"{where}: accuracy {m.accuracy!r} is not a fraction in [0, 1]")
        if isinstance(m.instructions, bool) or not isinstance(m.instructions, numbers.Integral) \
                or m.instructions <= 0:
            raise InputError(f"{where}: instructions must be a positive integer, got {m.instructions!r}")
        if m.depth is not None and (isinstance(m.depth, bool) or not isinstance(m.depth, numbers.Integral)
                                    or m.depth < 1):
            raise InputError(f"{where}: depth must be a whole number of blocks, got {m.depth!r}")
        if (m.member, m.core) in seen:
            raise InputError(f"{where} is measured twice")
        seen.add((m.member, m.core))


def _dominates(q: OperatingPoint, p: OperatingPoint) -> bool:
    at_least = q.accuracy >= p.accuracy and q.latency_ms <= p.latency_ms and q.energy_uj <= p.energy_uj
    strictly = q.accuracy > p.accuracy or q.latency_ms < p.latency_ms or q.energy_uj < p.energy_uj
    return at_least and strictly


def mark_pareto(points: list[OperatingPoint]) -> list[OperatingPoint]:
    """The same points with `pareto` set per core (see the module docstring); order kept."""
    return [replace(p, pareto=not any(q.core == p.core and _dominates(q, p) for q in points)) for p in points]


def operating_points(measurements: list[MemberMeasurement], boards: dict[str, Board] = BOARDS) -> list[OperatingPoint]:
    """Every (member x core x clock) point, ordered by core (first seen first), member (member_order),
    then clock decreasing; `pareto` marked per core."""
    _validate(measurements, boards)
    cores = list(dict.fromkeys(m.core for m in measurements))
    points = []
    for core in cores:
        board = boards[core]
        for m in sorted((m for m in measurements if m.core == core), key=lambda m: member_order(m.member)):
            for mhz in board.frequencies:
                points.append(OperatingPoint(
                    width=float(m.width), core=core, mhz=mhz, accuracy=float(m.accuracy),
                    instructions=int(m.instructions), latency_ms=board.latency_ms(m.instructions, mhz),
                    energy_uj=board.energy_uj(m.instructions, mhz), power_mw=board.power_mw(mhz),
                    pareto=False, bit_exact=bool(m.bit_exact), depth=m.depth))
    return mark_pareto(points)


def points_of_core(points: list[OperatingPoint], core: str | None = None) -> list[OperatingPoint]:
    """The points of `core`, or all of them when they are of one core; InputError otherwise (or if none)."""
    if core is not None:
        points = [p for p in points if p.core == core]
        if not points:
            raise InputError(f"no operating points of core '{core}'")
    if not points:
        raise InputError("no operating points given")
    cores = sorted({p.core for p in points})
    if len(cores) > 1:
        raise InputError(f"the points are of {', '.join(cores)}: pass core= to pick one")
    return points


def write_points(points: list[OperatingPoint], path) -> Path:
    """Points as a JSON list of objects (OperatingPoint.to_json)."""
    path = Path(path)
    path.write_text(json.dumps([p.to_json() for p in points], indent=1) + "\n", encoding="utf-8")
    return path


def read_points(path) -> list[OperatingPoint]:
    """Points written by write_points."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: operating points file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not JSON ({e})") from None
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise InputError(f"{path}: expected a JSON list of operating point objects")
    return [OperatingPoint.from_json(d) for d in data]


def points_table(points: list[OperatingPoint]) -> str:
    """A Markdown table of the points, for reports (Pareto points marked with a star)."""
    member = "width/depth" if any(p.depth is not None for p in points) else "width"
    columns = ["core", member, "MHz", "accuracy %", "instructions", "latency ms", "energy µJ", "power mW",
               "Pareto", "bit-exact"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for p in points:
        row = [p.core, member_name(*p.member), str(p.mhz), f"{100 * p.accuracy:.2f}", f"{p.instructions:,}",
               f"{p.latency_ms:.3f}", f"{p.energy_uj:.1f}", f"{p.power_mw:.1f}", "★" if p.pareto else "",
               "yes" if p.bit_exact else "no"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


_STYLE = {"cortex-m4": ("#1f77b4", "o"), "cortex-m7": ("#d62728", "s")}
_OTHER_STYLES = [("#2ca02c", "^"), ("#9467bd", "D"), ("#ff7f0e", "v")]


def _core_styles(cores: list[str]) -> dict[str, tuple[str, str]]:
    extra = iter(_OTHER_STYLES * (1 + len(cores)))
    return {c: _STYLE.get(c) or next(extra) for c in cores}


def plot_points(points: list[OperatingPoint], path) -> Path:
    """A PNG (or SVG) of three panels: accuracy vs latency, accuracy vs energy, power vs clock. One colour
    and marker per core; Pareto points (of the three criteria together) filled, the others hollow; a thin
    staircase shows the best accuracy reachable within each latency or energy."""
    if not points:
        raise InputError("plot_points needs at least one operating point")
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg"):
        raise InputError(f"cannot draw operating points as '{path.suffix}': give a .png or .svg path")
    # an Agg canvas of our own, not pyplot, so the caller's backend and pyplot state are left alone
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cores = list(dict.fromkeys(p.core for p in points))
    styles = _core_styles(cores)
    fig = Figure(figsize=(15, 4.6), dpi=120)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    for core in cores:
        colour, marker = styles[core]
        mine = [p for p in points if p.core == core]
        front = [p for p in mine if p.pareto]
        rest = [p for p in mine if not p.pareto]
        for ax, x in ((axes[0], "latency_ms"), (axes[1], "energy_uj")):
            # the best accuracy reachable within x: a staircase, as the front seen in this one panel
            ordered = sorted(mine, key=lambda p: getattr(p, x))
            best = np.maximum.accumulate([100 * p.accuracy for p in ordered])
            ax.step([getattr(p, x) for p in ordered], best, where="post", color=colour, linewidth=0.8, alpha=0.6)
            ax.scatter([getattr(p, x) for p in front], [100 * p.accuracy for p in front], s=34, color=colour,
                       marker=marker, label=f"{core} Pareto", zorder=3)
            ax.scatter([getattr(p, x) for p in rest], [100 * p.accuracy for p in rest], s=34, facecolors="none",
                       edgecolors=colour, marker=marker, linewidths=1, label=f"{core} dominated", zorder=3)
        clocks = sorted({p.mhz: p.power_mw for p in mine}.items())
        axes[2].plot([c[0] for c in clocks], [c[1] for c in clocks], color=colour, marker=marker, label=core)
    for ax, xlabel in ((axes[0], "latency per inference (ms)"), (axes[1], "energy per inference (µJ)")):
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%)")
    axes[0].set_title("accuracy vs latency")
    axes[1].set_title("accuracy vs energy")
    axes[2].set_title("power vs clock")
    axes[2].set_xlabel("clock (MHz)")
    axes[2].set_ylabel("power while inferring (mW)")
    for ax in axes:
        ax.grid(color="#dddddd", linewidth=0.6)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, facecolor="white")
    return path


def members_of(points: list[OperatingPoint]) -> list[tuple[float, int | None]]:
    """The distinct (width, depth) members of the points, in member_order."""
    return sorted({p.member for p in points}, key=member_order)

