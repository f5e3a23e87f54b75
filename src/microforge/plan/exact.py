"""Exact placement: the smallest arena for a set of buffers, found (and usually proven) with CP-SAT.

Placing buffers with fixed lifetimes is two-dimensional strip packing with the time coordinates fixed:
each buffer is a rectangle [first, last+1) x [offset, offset+size) whose horizontal position is given and
whose vertical position is chosen; the arena is the height of the strip. It is NP-hard in general, but
the instances tinyML models make (tens of buffers) solve to proven optimality in milliseconds; random
instances of a few hundred buffers take seconds, and some stay unproven.

The model:

* one integer offset per buffer, counted in units of the greatest common divisor of the sizes. Nothing is
  lost: pushing every buffer of an optimal placement down until it rests on address 0 or on a buffer it
  shares a step with gives an equally good placement whose offsets are sums of sizes (`compact`);
* the arena, the objective, bounded below by `lower_bound` (the most bytes live at one step; the solver
  stops as soon as it reaches it, since that proves optimality) and above by the hint's arena;
* buffers that share a step must not share bytes: one NoOverlap2D over the rectangles, whose time
  intervals are fixed. CP-SAT's presolve splits it into one NoOverlap per maximal set of buffers live
  together (the cliques of the interval graph of lifetimes), so it propagates as well as building those
  cliques here, and the model stays O(n) to build in Python, which matters for thousands of buffers.
  Building the cliques by hand solved no faster; one disjunction per time-overlapping pair solved
  markedly slower (400 random buffers: unproven after 9 s where NoOverlap proved optimality in 2-5 s).

If OR-Tools is missing, the instance is too big to model in the time allowed, or the solver finds nothing
better than the hint within the time limit, the hint comes back instead (pushed down, if that helps).
The result always passes `check_placement`.
"""

from __future__ import annotations

import bisect
import heapq
import math
import sys
import time

import numpy as np

from microforge.errors import PlanError
from microforge.plan.lifetimes import Buffer
from microforge.plan.placement import arena_size

MAX_BUFFERS = 2000  # above this, loading and presolving the model would eat much of the time limit
# One CP-SAT worker: on two cores (shared with the rest of the build) it solved as many instances as fast
# as two workers with any portfolio tried (default, default_lp + fixed/max_lp/no_lp/core/quick_restart),
# and a single worker searches deterministically, so the same model gives the same plan.
WORKERS = 1


def solver_module():
    """OR-Tools' CP-SAT module, or None where it cannot run safely.

    OR-Tools and TensorFlow bundle their own abseil/protobuf; loaded after TensorFlow in one process,
    CP-SAT crashes (a segmentation fault in solve). microforge imports OR-Tools first (see the package's
    __init__); if TensorFlow got there before it, the exact strategy steps aside instead of crashing.
    """
    if "ortools.sat.python.cp_model" not in sys.modules and "tensorflow" in sys.modules:
        return None
    try:
        from ortools.sat.python import cp_model
    except ImportError:
        return None
    return cp_model


def first_fit(buffers: list[Buffer]) -> list[int]:
    """A quick valid placement: biggest (then longest-lived) buffers first, each at the lowest address
    where it fits beside the buffers already placed that share a step with it. Quadratic; for thousands of
    buffers use `stack`."""
    offsets = [0] * len(buffers)
    placed: list[Buffer] = []
    for b in sorted(buffers, key=lambda b: (-b.size, -(b.last - b.first), b.index)):
        busy = sorted((offsets[p.index], offsets[p.index] + p.size) for p in placed if p.overlaps_in_time(b))
        at = 0
        for start, end in busy:
            if start >= at + b.size:
                break
            at = max(at, end)
        offsets[b.index] = at
        placed.append(b)
    return _park_empty(buffers, offsets)


def stack(buffers: list[Buffer], order: list[Buffer] | None = None) -> list[int]:
    """Place buffers in `order` (default: biggest first), each directly on top of the highest buffer
    already placed that shares a step with it. Valid, fast (one numpy pass per buffer), not tight."""
    order = sorted(buffers, key=lambda b: (-b.size, b.index)) if order is None else order
    steps = max((b.last for b in buffers), default=-1) + 1
    top = np.zeros(max(steps, 1), dtype=np.int64)  # highest end of any placed buffer live at each step
    offsets = [0] * len(buffers)
    for b in order:
        if b.size == 0:
            continue  # parked on top below
        at = int(top[b.first:b.last + 1].max())
        offsets[b.index] = at
        top[b.first:b.last + 1] = at + b.size
    return _park_empty(buffers, offsets)


def compact(buffers: list[Buffer], offsets: list[int]) -> list[int]:
    """Push every buffer down as far as it goes, lowest first: the result is valid if `offsets` is, no
    buffer moves up (so the arena does not grow), and every offset is a sum of buffer sizes."""
    return stack(buffers, sorted(buffers, key=lambda b: (offsets[b.index], b.index)))


def _park_empty(buffers: list[Buffer], offsets: list[int]) -> list[int]:
    """Zero-byte buffers go at the top of the arena, where they cannot sit inside another buffer."""
    empty = [b for b in buffers if b.size == 0]
    if empty:
        top = max((offsets[b.index] + b.size for b in buffers if b.size > 0), default=0)
        for b in empty:
            offsets[b.index] = top
    return offsets


def is_valid(buffers: list[Buffer], offsets: list[int] | None) -> bool:
    """Whether `offsets` is a placement of `buffers` with no clash between buffers of nonzero size that
    share a step, in O(n log n) (a sweep over time keeping the live byte ranges sorted)."""
    if offsets is None or len(offsets) != len(buffers) or any(o < 0 for o in offsets):
        return False
    live: list[tuple[int, int]] = []  # (start, end) of the live buffers, sorted by address, disjoint
    ending: list[tuple[int, int, int]] = []  # heap of (last step, start, end)
    for b in sorted((b for b in buffers if b.size > 0), key=lambda b: b.first):
        while ending and ending[0][0] < b.first:
            _, start, end = heapq.heappop(ending)
            del live[bisect.bisect_left(live, (start, end))]
        item = (offsets[b.index], offsets[b.index] + b.size)
        at = bisect.bisect_left(live, item)
        if at > 0 and live[at - 1][1] > item[0]:
            return False
        if at < len(live) and live[at][0] < item[1]:
            return False
        live.insert(at, item)
        heapq.heappush(ending, (b.last, *item))
    return True


def overlapping_pairs(buffers: list[Buffer]) -> int:
    """How many pairs of buffers share a step, in O(n log n)."""
    firsts = sorted(b.first for b in buffers)
    # each pair is counted once, by the buffer that starts first (ties: by the one whose start ranks lower)
    return sum(bisect.bisect_right(firsts, b.last) - bisect.bisect_right(firsts, b.first) for b in buffers) + \
        sum(n * (n - 1) // 2 for n in _run_lengths(firsts))


def _run_lengths(values: list[int]) -> list[int]:
    runs, count = [], 0
    for i, v in enumerate(values):
        count = count + 1 if i and v == values[i - 1] else 1
        if i + 1 == len(values) or values[i + 1] != v:
            runs.append(count)
    return runs


def place_exact(buffers: list[Buffer], time_limit_s: float = 10.0, hint: list[int] | None = None,
                lower_bound: int | None = None) -> tuple[list[int], bool]:
    """Offsets (indexed by `Buffer.index`) of the smallest arena found within `time_limit_s` seconds, and
    whether that arena is proven optimal.

    `hint` is a valid placement to start from (a heuristic's); without one, or if it is invalid, a
    first-fit placement is used. The result is never worse than the hint, and it is the hint itself unless
    something strictly better was found (by pushing its buffers down, or by the solver). `lower_bound`
    (bytes; a true bound such as `lifetimes.lower_bound(buffers)`) lets the solver stop as soon as it
    reaches it. Instances of more than MAX_BUFFERS buffers are not modelled: the (pushed-down) hint comes
    back at once. The time limit includes importing OR-Tools (about half a second the first time).
    """
    deadline = time.monotonic() + max(0.0, time_limit_s)
    if not buffers:
        return [], True
    if sorted(b.index for b in buffers) != list(range(len(buffers))):
        raise PlanError("place_exact needs buffers numbered 0..n-1 by Buffer.index (as buffers_for gives)")
    if hint is not None and is_valid(buffers, hint):
        best = _park_empty(buffers, list(hint))
    else:
        best = first_fit(buffers) if len(buffers) <= MAX_BUFFERS else stack(buffers)
    upper = arena_size(buffers, best)
    pushed = compact(buffers, best)
    if arena_size(buffers, pushed) < upper:
        best, upper = pushed, arena_size(buffers, pushed)
    floor = max(lower_bound or 0, max(b.size for b in buffers))
    if upper <= floor:
        return best, True  # already at a lower bound
    if len(buffers) > MAX_BUFFERS:
        return best, False
    cp_model = solver_module()
    if cp_model is None:  # without a safe CP-SAT the hint is the answer
        return best, False

    solid = [b for b in buffers if b.size > 0]  # zero-byte buffers are parked on top afterwards
    unit = 0
    for b in solid:
        unit = math.gcd(unit, b.size)
    top = upper // unit  # the optimum is a sum of sizes (see `compact`), a multiple of `unit`, <= `upper`
    model = cp_model.CpModel()
    arena = model.NewIntVar(-(-floor // unit), top, "arena")
    xs = {}
    intervals = {}
    for b in solid:
        size = b.size // unit
        xs[b.index] = model.NewIntVar(0, top - size, f"x{b.index}")
        intervals[b.index] = model.NewFixedSizeIntervalVar(xs[b.index], size, f"i{b.index}")
        model.Add(xs[b.index] + size <= arena)
    lifetimes = [model.NewFixedSizeIntervalVar(b.first, b.last + 1 - b.first, f"t{b.index}") for b in solid]
    model.AddNoOverlap2D(lifetimes, [intervals[b.index] for b in solid])
    hinted = compact(buffers, best)  # offsets that are sums of sizes, so multiples of `unit`
    for b in solid:
        model.AddHint(xs[b.index], hinted[b.index] // unit)
    model.AddHint(arena, arena_size(buffers, hinted) // unit)
    model.Minimize(arena)
    # CP-SAT overruns its limit by about the time it takes to load and presolve the model, which grows
    # with the number of time-overlapping pairs (~0.3 s for 2,000 buffers and a million pairs)
    budget = (deadline - time.monotonic() - 1e-4 * len(solid) - 3e-7 * overlapping_pairs(solid)) * 0.9
    if budget <= 0.01:
        return best, False
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = budget
    solver.parameters.num_workers = WORKERS
    try:
        status = solver.Solve(model)
    except Exception:  # noqa: BLE001 (a solver failure must not lose the placement we already have)
        return best, False
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return best, False
    found = [0] * len(buffers)
    for b in solid:
        found[b.index] = solver.Value(xs[b.index]) * unit
    found = _park_empty(buffers, found)
    if not is_valid(buffers, found):
        return best, False
    proven = status == cp_model.OPTIMAL
    if arena_size(buffers, found) < upper:
        return found, proven
    return best, proven and arena_size(buffers, found) == upper
