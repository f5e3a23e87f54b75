"""The runtime manager on the emulated core: a budget trace played by the firmware itself.

The image is the family's (image.py) with the manager (mf_manager.c and its tables, generated from the
measured points of that core) beside it, behind the DUT firmware (bench.dut), which then answers
`mf-request L E P B`: the manager running on the core picks the point for the budgets, the image
switches member if it must, runs the inference, plays a background task taking B per mille of the core
(it spins on the firmware's timer for the stolen share), times the whole with its own timer and feeds the
latency back to the manager (feedback mode, as in trace.simulate). QEMU runs with -icount, where the
timer counts executed instructions; the firmware converts them to microseconds at the chosen point's
clock. The clock itself is not changed (QEMU has no clock tree): the energy of a request is the chosen
point's measured energy per inference.

`play_trace` sends every request of a trace and scores the firmware's own decisions and timings like
trace.simulate scores the Python manager's, and says how often the two chose the same point.
"""

from __future__ import annotations

import re
from pathlib import Path

from microforge.dynamic.board import BOARDS
from microforge.dynamic.family import Family
from microforge.dynamic.image import FamilyImage, generate_family
from microforge.dynamic.manager import KERNEL_DIR, Manager, to_units
from microforge.dynamic.points import TARGET_CORES, OperatingPoint
from microforge.dynamic.trace import DEFAULT_HEADROOM, DEFAULT_SMOOTHING, Request, simulate
from microforge.errors import DeviceError, InputError

REPLY = re.compile(r"m-request-\[(\d+),([01]),(\d+),(\d+),(\d+),(\d+)\]")


def generate_managed_image(family: Family, points: list[OperatingPoint], out_dir, target: str,
                           headroom: float = DEFAULT_HEADROOM, smoothing: float = DEFAULT_SMOOTHING) -> FamilyImage:
    """The family image for `target`'s core with the feedback manager over that core's points."""
    core = TARGET_CORES[target]
    manager = Manager(points, feedback=True, smoothing=smoothing, headroom=headroom, core=core)
    members = [(float(w), d) for w, d in zip(family.widths, family.depths)]
    if manager.members != members:
        raise InputError(f"the points are of members {manager.members}, the family {family.name} has {members}")
    cpi = to_units(BOARDS[core].cycles_per_instruction, 1000)
    image = generate_family(family, out_dir, target=core, header_lines=(
        "/* With its runtime manager (mf_manager.h), for the DUT firmware's mf-request command. */",
        "#define MF_DYNAMIC 1", f"#define MF_DYNAMIC_CPI_PERMILLE {cpi}", ""))
    for name in ("mf_manager.c", "mf_manager.h"):
        (image.directory / name).write_bytes((KERNEL_DIR / name).read_bytes())
    (image.directory / "mf_manager_tables.c").write_text(manager.c_tables())
    return image


def _budget(value: float | None, per: int) -> str:
    return "-" if value is None else str(min(to_units(value, per), 2**31 - 1))


def play_trace(family: Family, points: list[OperatingPoint], requests: list[Request], target: str, sample: bytes,
               build_dir, headroom: float = DEFAULT_HEADROOM, smoothing: float = DEFAULT_SMOOTHING) -> dict:
    """Play `requests` on the firmware of `target` ("qemu-m4" | "qemu-m7") with `sample` as every
    request's input. Returns trace.simulate's metrics for the firmware's run (deadlines judged on the
    latencies the firmware measured), `agreement` (the share of requests where it chose the point the
    Python manager chose in simulate) and the largest gap between its latencies and the simulated ones."""
    from microforge.bench.dut import qemu_dut

    if target not in TARGET_CORES:
        raise InputError(f"target {target!r}: choose from {', '.join(TARGET_CORES)}")
    if not requests:
        raise InputError("play_trace needs at least one request")
    core = TARGET_CORES[target]
    image = generate_managed_image(family, points, Path(build_dir) / "image", target, headroom, smoothing)
    table = Manager(points, core=core).points
    replies = []
    with qemu_dut(image.directory, target, timeout_s=60.0, build_dir=Path(build_dir) / "firmware") as dut:
        dut.load(sample)
        for r in requests:
            command = (f"mf-request {_budget(r.latency_budget_ms, 1000)} {_budget(r.energy_budget_uj, 1000)} "
                       f"{_budget(r.power_cap_mw, 1000)} {min(999, to_units(r.background_load, 1000))}")
            found = [REPLY.fullmatch(line) for line in dut.command(command)]
            found = [m for m in found if m]
            if len(found) != 1:
                raise DeviceError(f"{target}: no m-request-[...] reply to {command!r}")
            replies.append(tuple(int(v) for v in found[0].groups()))
    simulated = simulate(table, requests, core, headroom=headroom, smoothing=smoothing, keep_steps=True)
    met, kept, capped, accuracy, gaps = [], [], [], [], []
    for r, (index, _ok, _member, _mhz, latency_us, _switches), step in zip(requests, replies, simulated["steps"]):
        p = table[index]
        accuracy.append(p.accuracy)
        gaps.append(abs(latency_us / 1000 - p.latency_ms / (1 - r.background_load)))
        if step.feasible:
            met.append(r.latency_budget_ms is None or latency_us <= to_units(r.latency_budget_ms, 1000))
            kept.append(r.energy_budget_uj is None or p.energy_uj <= r.energy_budget_uj)
            capped.append(r.power_cap_mw is None or p.power_mw <= r.power_cap_mw)
    share = (lambda xs: sum(xs) / len(xs) if xs else None)
    return {
        "target": target, "requests": len(requests), "infeasible": simulated["infeasible"],
        "deadlines_met": share(met), "energy_budget_kept": share(kept), "power_cap_kept": share(capped),
        "mean_accuracy": sum(accuracy) / len(accuracy), "switches": replies[-1][5],
        "agreement": sum(index == step.index for (index, *_), step in zip(replies, simulated["steps"])) / len(requests),
        "max_latency_gap_ms": max(gaps), "arena_bytes": image.arena_bytes,
    }
