"""The runtime manager: pick the operating point that meets the current budgets, in Python and in C.

Rule. Among the points that meet every given budget (latency, energy, power cap, minimum accuracy), the
most accurate; ties go to the lower energy, then the lower predicted latency, then the lower index. The
latency is predicted with the headroom first; if no point fits with it, again without it (the margin is
a preference, not a budget: a deadline just inside it should not send the manager to the slowest point).
When none meets them all, the cheapest point (lowest energy; ties: lower predicted latency with headroom,
lower index) with `feasible` False, so a caller always gets something it can run.

Feedback (as Dynamic-OFA corrects its latency look-up table at run time). When another task steals
cycles, an inference takes longer than the table says. `observe(index, measured latency)` keeps a load
factor, an exponential moving average of measured / table latency, and `select` predicts
latency = table latency x factor x (1 + headroom). Energy is not scaled: the stolen cycles run the other
task, so they are its energy, not the inference's; power at a clock does not depend on the load either.
The headroom is a safety margin on the prediction: the factor lags a load that rises, and a deadline
missed costs more than a slightly narrower width.

Exactness with C. Python and mf_manager.c compute on the same integer tables, rounded once when the
table is built, so they return the same index for every budget:
    latency_us = round(latency_ms x 1000)     energy_nj = round(energy_uj x 1000)
    power_uw   = round(power_mw x 1000)       accuracy  = round(accuracy x 10000)   (units of 1e-4)
where round is half up (floor(x + 0.5)); a budget is converted by the same function, so a budget equal
to a point's own latency (energy, power, accuracy) admits that point. Latencies below 1 µs are stored as
1 µs. The factor, the smoothing (EMA weight of the newest observation) and the headroom are Q16 fixed
point (65536 = 1.0):
    predicted_us = ((latency_us x factor + 2^15) >> 16) x (2^16 + headroom) + 2^15) >> 16
    ratio        = (measured_us << 16) // latency_us, clamped to [FACTOR_MIN, FACTOR_MAX]
    factor       = (factor x (2^16 - smoothing) + ratio x smoothing + 2^15) >> 16
All operands are non-negative, so the shifts and the division mean the same in both languages.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from microforge.dynamic.points import OperatingPoint, member_name, members_of, points_of_core
from microforge.errors import InputError

Q16_ONE = 1 << 16
FACTOR_MIN = Q16_ONE // 16   # the factor stays within [1/16, 64]: one absurd observation cannot wreck it
FACTOR_MAX = 64 * Q16_ONE
INT32_MAX = (1 << 31) - 1
DEFAULT_SMOOTHING = 0.5      # weight of the newest observation
KERNEL_DIR = Path(__file__).resolve().parents[1] / "codegen" / "kernels"
MANAGER_SOURCES = ("mf_manager.c",)
C_KEYWORDS = frozenset(
    "auto break case char const continue default do double else enum extern float for goto if inline int long "
    "register restrict return short signed sizeof static struct switch typedef union unsigned void volatile "
    "while _Bool _Complex _Imaginary".split())


def to_units(value: float, per: int) -> int:
    """round(value x per), half up: the one conversion of table values and budgets to integer units."""
    return math.floor(value * per + 0.5)


def _budget_units(value, per: int, name: str) -> int:
    """A budget in integer units; None means no budget (-1, as in C); saturated at INT32_MAX."""
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
        raise InputError(f"{name} must be a non-negative number or None, got {value!r}")
    if math.isinf(value):
        return INT32_MAX
    return min(to_units(value, per), INT32_MAX)


@dataclass(frozen=True)
class Selection:
    """What `Manager.select` chose: `index` into the manager's points, the `point`, and whether it meets
    every budget (`feasible`); an infeasible selection is the cheapest point."""
    index: int
    point: OperatingPoint
    feasible: bool


class Manager:
    """A manager over the points of one core.

    points: operating points; with `core` given, only that core's are kept, otherwise they must all be of
    one core (InputError naming the cores if not). The manager's table keeps their order.
    feedback: correct the latency table by observed latencies (see the module docstring).
    smoothing: EMA weight in (0, 1] of the newest observed measured/table latency ratio.
    headroom: margin >= 0 on every predicted latency, a fraction (0.05 = 5 %).
    """

    def __init__(self, points: list[OperatingPoint], feedback: bool = False, smoothing: float = DEFAULT_SMOOTHING,
                 headroom: float = 0.0, core: str | None = None):
        points = points_of_core(list(points), core)  # a manager drives one core
        if not (isinstance(smoothing, (int, float)) and 0 < smoothing <= 1):
            raise InputError(f"smoothing must be in (0, 1], got {smoothing!r}")
        if not (isinstance(headroom, (int, float)) and 0 <= headroom < 1):
            raise InputError(f"headroom must be in [0, 1), got {headroom!r}")
        self.core = points[0].core
        self.points = tuple(points)
        self.feedback = bool(feedback)
        self.smoothing_q16 = max(1, to_units(smoothing, Q16_ONE))
        self.headroom_q16 = to_units(headroom, Q16_ONE)
        self.members = members_of(self.points)  # (width, depth), in the family's order: operating point k
        self.member_index = [self.members.index(p.member) for p in self.points]
        self.mhz = [int(p.mhz) for p in self.points]
        self.latency_us = [max(1, to_units(p.latency_ms, 1000)) for p in self.points]
        self.energy_nj = [to_units(p.energy_uj, 1000) for p in self.points]
        self.power_uw = [to_units(p.power_mw, 1000) for p in self.points]
        self.accuracy = [to_units(p.accuracy, 10000) for p in self.points]
        for name in ("mhz", "latency_us", "energy_nj", "power_uw"):
            for i, v in enumerate(getattr(self, name)):
                if not 0 <= v <= INT32_MAX:
                    raise InputError(f"point {i} ({member_name(*self.points[i].member)} at {self.points[i].mhz} MHz): "
                                     f"{name} = {v} does not fit the manager's int32 table")
        self.factor_q16 = Q16_ONE

    # -- the integer core, mirrored by mf_manager.c ---------------------------------------------------

    def predicted_us(self, index: int, headroom_q16: int | None = None) -> int:
        """Predicted latency of point `index` in µs: table x load factor x (1 + headroom)."""
        headroom_q16 = self.headroom_q16 if headroom_q16 is None else headroom_q16
        loaded = (self.latency_us[index] * self.factor_q16 + (1 << 15)) >> 16
        return (loaded * (Q16_ONE + headroom_q16) + (1 << 15)) >> 16

    def _best(self, latency_budget_us: int, energy_budget_nj: int, power_cap_uw: int, min_accuracy: int,
              headroom_q16: int) -> int:
        """The index of the best point meeting the budgets with this headroom, or -1."""
        best, best_latency = -1, 0
        for i in range(len(self.points)):
            latency, energy, accuracy = self.predicted_us(i, headroom_q16), self.energy_nj[i], self.accuracy[i]
            if latency_budget_us >= 0 and latency > latency_budget_us:
                continue
            if energy_budget_nj >= 0 and energy > energy_budget_nj:
                continue
            if power_cap_uw >= 0 and self.power_uw[i] > power_cap_uw:
                continue
            if min_accuracy >= 0 and accuracy < min_accuracy:
                continue
            if best < 0 or accuracy > self.accuracy[best] or (accuracy == self.accuracy[best] and (
                    energy < self.energy_nj[best] or (energy == self.energy_nj[best] and latency < best_latency))):
                best, best_latency = i, latency
        return best

    def select_units(self, latency_budget_us: int = -1, energy_budget_nj: int = -1, power_cap_uw: int = -1,
                     min_accuracy: int = -1) -> int:
        """mf_manager_select in Python: integer budgets (negative = no budget; accuracy in 1e-4) in, the
        point's index out when feasible, else -(index + 1) of the cheapest point."""
        budgets = (latency_budget_us, energy_budget_nj, power_cap_uw, min_accuracy)
        best = self._best(*budgets, self.headroom_q16)
        if best < 0 and self.headroom_q16 > 0:
            best = self._best(*budgets, 0)  # the margin is a preference, not a budget
        if best >= 0:
            return best
        cheapest, cheapest_latency = 0, self.predicted_us(0)
        for i in range(1, len(self.points)):
            latency = self.predicted_us(i)
            if self.energy_nj[i] < self.energy_nj[cheapest] or \
                    (self.energy_nj[i] == self.energy_nj[cheapest] and latency < cheapest_latency):
                cheapest, cheapest_latency = i, latency
        return -(cheapest + 1)

    def observe_units(self, index: int, measured_latency_us: int) -> None:
        """mf_manager_observe in Python: fold one measured latency (µs) of point `index` into the factor.
        Ignored without feedback, for an index out of range or a negative latency (as the C does)."""
        if not self.feedback or not 0 <= index < len(self.points) or measured_latency_us < 0:
            return
        ratio = (measured_latency_us << 16) // self.latency_us[index]
        ratio = min(max(ratio, FACTOR_MIN), FACTOR_MAX)
        s = self.smoothing_q16
        self.factor_q16 = (self.factor_q16 * (Q16_ONE - s) + ratio * s + (1 << 15)) >> 16

    def reset(self) -> None:
        """Forget the observed load: factor back to 1."""
        self.factor_q16 = Q16_ONE

    # -- the float interface ----------------------------------------------------------------------------

    @property
    def load_factor(self) -> float:
        """The current multiplicative load factor (1.0 = the table's latencies)."""
        return self.factor_q16 / Q16_ONE

    def predicted_latency_ms(self, index: int) -> float:
        return self.predicted_us(index) / 1000.0

    def select(self, latency_budget_ms: float | None = None, energy_budget_uj: float | None = None,
               power_cap_mw: float | None = None, min_accuracy: float | None = None) -> Selection:
        """The most accurate point meeting every given budget (None = no budget; ms, µJ, mW, fraction
        0..1), or the cheapest point with feasible=False when none does."""
        code = self.select_units(_budget_units(latency_budget_ms, 1000, "latency_budget_ms"),
                                 _budget_units(energy_budget_uj, 1000, "energy_budget_uj"),
                                 _budget_units(power_cap_mw, 1000, "power_cap_mw"),
                                 _budget_units(min_accuracy, 10000, "min_accuracy"))
        index = code if code >= 0 else -code - 1
        return Selection(index, self.points[index], code >= 0)

    def observe(self, index: int, measured_latency_ms: float) -> None:
        """One measured latency (ms) of an inference run at point `index`; updates the load factor in
        feedback mode, does nothing otherwise."""
        if not isinstance(index, int) or not 0 <= index < len(self.points):
            raise InputError(f"point index {index!r} is out of range 0..{len(self.points) - 1}")
        if isinstance(measured_latency_ms, bool) or not isinstance(measured_latency_ms, (int, float)) \
                or not math.isfinite(measured_latency_ms) or measured_latency_ms < 0:
            raise InputError(f"measured latency must be a finite number of ms >= 0, got {measured_latency_ms!r}")
        self.observe_units(index, min(to_units(measured_latency_ms, 1000), INT32_MAX))

    # -- C tables ----------------------------------------------------------------------------------------

    def c_tables(self, prefix: str = "mf") -> str:
        """C source defining this manager's tables for mf_manager.c (see manager_c_tables)."""
        if not isinstance(prefix, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", prefix) or prefix in C_KEYWORDS:
            raise InputError(f"table prefix '{prefix}' is not a C identifier")
        n, macro = len(self.points), f"{prefix.upper()}_MANAGER_POINTS"

        def array(name: str, values: list[int], comment: str) -> str:
            rows = [", ".join(str(v) for v in values[i:i + 8]) for i in range(0, len(values), 8)]
            body = ",\n    ".join(rows)
            size = macro if len(values) == n else str(len(values))
            return f"/* {comment} */\nconst int32_t {prefix}_manager_{name}[{size}] = {{\n    {body}\n}};\n"

        legend = "\n".join(f" * {i:3d}: member {member_name(*p.member)} at {p.mhz} MHz, "
                           f"accuracy {100 * p.accuracy:.2f} %, "
                           f"{p.latency_ms:.3f} ms, {p.energy_uj:.1f} uJ, {p.power_mw:.1f} mW"
                           for i, p in enumerate(self.points))
        parts = [
            f"/* Operating points of the runtime manager on {self.core}, generated by "
            f"microforge.dynamic.manager.\n * Compile with mf_manager.c"
            + ("" if prefix == "mf" else f" built with -DMF_MANAGER_TABLES={prefix}") + ".\n"
            f"{legend}\n */\n",
            f"#define MF_MANAGER_TABLES {prefix}\n" if prefix != "mf" else "",
            '#include "mf_manager.h"\n\n',
            f"#define {macro} {n}\n\n",
            f"const int32_t {prefix}_manager_point_count = {macro};\n",
            f"const int32_t {prefix}_manager_member_count = {len(self.members)};\n",
            f"const int32_t {prefix}_manager_feedback = {int(self.feedback)};\n",
            f"const int32_t {prefix}_manager_smoothing_q16 = {self.smoothing_q16};\n",
            f"const int32_t {prefix}_manager_headroom_q16 = {self.headroom_q16};\n\n",
            array("width_permille", [to_units(w, 1000) for w, _ in self.members], "per member: its width, 1/1000"),
            array("depth", [d or 0 for _, d in self.members], "per member: blocks run (0: all)"),
            array("member_index", self.member_index, "per point: its member, 0..M-1 (the image's operating point)"),
            array("mhz", self.mhz, "per point: core clock, MHz"),
            array("latency_us", self.latency_us, "per point: latency at no load, us"),
            array("energy_nj", self.energy_nj, "per point: energy per inference, nJ"),
            array("power_uw", self.power_uw, "per point: power while inferring, uW"),
            array("accuracy", self.accuracy, "per point: accuracy, units of 1e-4"),
        ]
        return "".join(parts[:9]) + "\n".join(parts[9:])


def manager_c_tables(points: list[OperatingPoint], prefix: str = "mf", *, feedback: bool = False,
                     smoothing: float = DEFAULT_SMOOTHING, headroom: float = 0.0, core: str | None = None) -> str:
    """C source of the manager's tables for `points` (one core, or `core` to pick one), to compile with
    src/microforge/codegen/kernels/mf_manager.c: per point its member index, MHz, latency_us, energy_nj,
    power_uw and accuracy (1e-4) as `const int32_t <prefix>_manager_<name>[]`, the count macro
    <PREFIX>_MANAGER_POINTS and the feedback settings. mf_manager.c reads the tables of prefix "mf"
    unless compiled with -DMF_MANAGER_TABLES=<prefix>."""
    return Manager(points, feedback=feedback, smoothing=smoothing, headroom=headroom, core=core).c_tables(prefix)
