"""Exact placement: the smallest arena for a set of buffers, found (and usually proven) with CP-SAT.

Placing buffers with fixed lifetimes is two-dimensional strip packing with the time coordinates fixed:
each buffer is a rectangle [first, last+1) x [offset, offset+size) whose horizontal position is given and
whose vertical position is chosen; the arena is the height of the strip. It is NP-hard in general but the
instances a tinyML model makes (tens to a few hundred buffers) solve to proven optimality in well under a
second.

The model:

* one integer offset per buffer, counted in units of the greatest common divisor of the sizes. Nothing is
  lost: pushing every buffer of an optimal placement down until it rests on address 0 or on a buffer it
  shares a step with gives an equally good placement whose offsets are sums of sizes (`compact`);
* the arena, the objective, bounded below by `lower_bound` (the most bytes live at one step; the solver
  stops as soon as it reaches it, since that proves optimality) and above by the hint's arena;
* buffers that share a step must not share bytes. The buffers live at one step form a clique of the
  interval graph of lifetimes, and every time-overlapping pair shares a step at which one of them starts,
  so one NoOverlap constraint per step where a buffer starts (over the buffers live then) covers every
  conflicting pair. It propagates better than one disjunction per pair and solves faster than
  NoOverlap2D on these instances.

If OR-Tools is missing, the instance is too big to model in the time allowed, or the solver finds nothing
better than the hint within the time limit, the (compacted) hint comes back instead. The result always
passes `check_placement`.
"""

from __future__ import annotations

import bisect
import heapq
import math
import os
import time

import numpy as np

from microforge.errors import PlanError
from microforge.plan.lifetimes import Buffer
from microforge.plan.placement import arena_size

MAX_BUFFERS = 2000  # above this the model would take much of the time limit just to build
MAX_CLIQUE_TERMS = 400_000  # total size of the per-step NoOverlap constraints; beyond it, skip the model
MAX_WORKERS = 2  # the machines this runs on have two cores


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


def start_cliques(buffers: list[Buffer]) -> list[list[Buffer]]:
    """For each step at which some buffer starts, the buffers live at that step (if two or more), leaving
    out sets contained in a neighbouring one.

    Every pair of buffers whose lifetimes overlap is live together at the later of their two first steps,
    so these cliques cover all the pairs that must not share bytes."""
    cliques = []
    live: dict[int, Buffer] = {}
    ending: list[tuple[int, int]] = []  # heap of (last step, index)
    by_first = sorted(buffers, key=lambda b: (b.first, b.index))
    i = 0
    while i < len(by_first):
        step = by_first[i].first
        while ending and ending[0][0] < step:
            del live[heapq.heappop(ending)[1]]
        while i < len(by_first) and by_first[i].first == step:
            b = by_first[i]
            live[b.index] = b
            heapq.heappush(ending, (b.last, b.index))
            i += 1
        if len(live) > 1:
            cliques.append(list(live.values()))
    sets = [{b.index for b in c} for c in cliques]
    kept: list[int] = []
    for i in range(len(cliques)):
        if i + 1 < len(cliques) and sets[i] <= sets[i + 1]:
            continue  # the next one covers it (and is kept, or covered by one that is)
        if kept and sets[i] <= sets[kept[-1]]:
            continue
        kept.append(i)
    return [cliques[i] for i in kept]


def place_exact(buffers: list[Buffer], time_limit_s: float = 10.0, hint: list[int] | None = None,
                lower_bound: int | None = None) -> tuple[list[int], bool]:
    """Offsets (indexed by `Buffer.index`) of the smallest arena found within `time_limit_s` seconds, and
    whether that arena is proven optimal.

    `hint` is a valid placement to start from (a heuristic's); without one, or if it is invalid, a
    first-fit placement is used. The result is never worse than the hint, and it is the hint itself unless
    something strictly better was found. `lower_bound` (bytes, e.g. `lifetimes.lower_bound`) lets the
    solver stop as soon as it reaches it.
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
    try:
        from ortools.sat.python import cp_model
    except ImportError:  # OR-Tools is optional: without it the hint is the answer
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
    cliques = start_cliques(solid)
    if sum(len(c) for c in cliques) > MAX_CLIQUE_TERMS:
        return best, False
    for clique in cliques:
        model.AddNoOverlap([intervals[b.index] for b in clique])
    hinted = compact(buffers, best)  # offsets that are sums of sizes, so multiples of `unit`
    for b in solid:
        model.AddHint(xs[b.index], hinted[b.index] // unit)
    model.AddHint(arena, arena_size(buffers, hinted) // unit)
    model.Minimize(arena)
    remaining = deadline - time.monotonic()
    if remaining <= 0.02:
        return best, False
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = remaining * 0.9
    solver.parameters.num_workers = max(1, min(MAX_WORKERS, os.cpu_count() or 1))
    if solver.parameters.num_workers > 1:
        # the search that solves these instances plus one that strengthens the bound with cuts; beats the
        # default portfolio (whose second worker does large-neighbourhood search) on two cores
        solver.parameters.subsolvers.extend(["default_lp", "max_lp"])
    try:
        status = solver.Solve(model)
    except Exception:  # a solver failure must not lose the placement we already have
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
