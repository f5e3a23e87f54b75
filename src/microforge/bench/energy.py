"""Energy per inference: an estimate from executed instructions, or a real power monitor's trace.

Estimate. A Cortex-M core running a compute-bound kernel draws a nearly constant power, so
    energy = power x time,  time = instructions x cycles_per_instruction / clock.
The default model is the MLPerf Tiny reference board, NUCLEO-L4R5ZI at 120 MHz and 1.8 V: its v0.5
reference energy runs measured 40.1-41.5 mW while inferring (KWS 40.84, VWW 40.32, IC 41.48,
AD 40.13 mW; see microforge.bench.published), so 40.7 mW, the mean. One cycle per instruction is the
assumption that turns instructions into time: it holds for single-cycle ALU and MAC instructions running
from zero-wait-state memory and is optimistic for loads, taken branches and flash wait states, so the
estimate is a lower bound on a real board's energy, and is reported as an estimate ("emulated").

Measurement. `energy_from_trace` integrates a power monitor's samples (time in s, power in W, e.g. a
CSV exported from a Joulescope or an EEMBC energy monitor) over the timed window of `n` inferences.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from microforge.errors import InputError


@dataclass(frozen=True)
class EnergyModel:
    board: str
    clock_hz: float
    power_w: float
    cycles_per_instruction: float = 1.0

    def latency_s(self, instructions: float) -> float:
        return instructions * self.cycles_per_instruction / self.clock_hz

    def energy_uj(self, instructions: float) -> float:
        return self.latency_s(instructions) * self.power_w * 1e6


REFERENCE_BOARD = EnergyModel("NUCLEO-L4R5ZI (STM32L4R5, Cortex-M4F, 120 MHz, 1.8 V)", 120e6, 40.7e-3)


def read_power_trace(path) -> tuple[np.ndarray, np.ndarray]:
    """A CSV of `time_s,power_w` rows (a header line is allowed) -> (times, powers), times increasing."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: power trace not found")
    times, powers = [], []
    with open(path, newline="", encoding="utf-8") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if not row or (line_no == 1 and not row[0].strip().replace(".", "", 1).isdigit()):
                continue  # blank line or header
            if len(row) < 2:
                raise InputError(f"{path} line {line_no}: expected 'time_s,power_w', got {row}")
            try:
                times.append(float(row[0]))
                powers.append(float(row[1]))
            except ValueError:
                raise InputError(f"{path} line {line_no}: not numbers: {row}") from None
    t, p = np.asarray(times), np.asarray(powers)
    if t.size < 2:
        raise InputError(f"{path}: a power trace needs at least two samples")
    if not np.all(np.isfinite(t)) or not np.all(np.isfinite(p)) or np.any(np.diff(t) <= 0):
        raise InputError(f"{path}: times must be finite and strictly increasing, powers finite")
    return t, p


def energy_from_trace(times, powers, start_s: float, stop_s: float, inferences: int) -> float:
    """Energy per inference in µJ: the trace integrated (trapezoids) over [start_s, stop_s], divided by
    the number of inferences run in that window."""
    t, p = np.asarray(times, dtype=np.float64), np.asarray(powers, dtype=np.float64)
    if inferences < 1:
        raise InputError(f"inferences must be at least 1, got {inferences}")
    if not t[0] <= start_s < stop_s <= t[-1]:
        raise InputError(f"the window [{start_s}, {stop_s}] s is not inside the trace [{t[0]}, {t[-1]}] s")
    inside = (t > start_s) & (t < stop_s)
    grid = np.concatenate([[start_s], t[inside], [stop_s]])
    joules = np.trapezoid(np.interp(grid, t, p), grid)
    return float(joules * 1e6 / inferences)
