"""Placement: give every buffer an arena offset so that buffers alive at the same time never overlap.

A placement is a list of offsets indexed by `Buffer.index`; the arena is the highest end of any buffer.
"""

from __future__ import annotations

from microforge.errors import PlanError
from microforge.plan.lifetimes import Buffer, live_bytes


def arena_size(buffers: list[Buffer], offsets: list[int]) -> int:
    return max((offsets[b.index] + b.size for b in buffers), default=0)


def forbidden_starts(b: Buffer, p: Buffer, p_offset: int) -> tuple[int, int]:
    """The open interval of start offsets at which `b` would clash with `p` placed at `p_offset` (both
    alive at the same time): overlapping bytes, unless a declared safe distance allows the overlap. An
    empty interval (hi <= lo + 1) forbids nothing."""
    lo, hi = p_offset - b.size, p_offset + p.size
    if p.index in b.below:  # b may start D or more below p
        lo = max(lo, p_offset - b.below[p.index])
    if b.index in p.above:  # p may start D or more above b: b starts at p_offset - D or below
        lo = max(lo, p_offset - p.above[b.index])
    if b.index in p.below:  # p may start D or more below b: b starts at p_offset + D or above
        hi = min(hi, p_offset + p.below[b.index])
    if p.index in b.above:  # b may start D or more above p
        hi = min(hi, p_offset + b.above[p.index])
    return lo, hi


def conflicts(buffers: list[Buffer], offsets: list[int]) -> list[tuple[Buffer, Buffer]]:
    """Pairs of buffers alive at the same time that clash (empty for a valid placement)."""
    found = []
    order = sorted(buffers, key=lambda b: offsets[b.index])
    for i, a in enumerate(order):
        a_end = offsets[a.index] + a.size
        for b in order[i + 1:]:
            if offsets[b.index] >= a_end:
                break
            if a.overlaps_in_time(b):
                lo, hi = forbidden_starts(b, a, offsets[a.index])
                if lo < offsets[b.index] < hi:
                    found.append((a, b))
    return found


def check_placement(buffers: list[Buffer], offsets: list[int]) -> None:
    """Raise PlanError naming the first clash if the placement is invalid."""
    if len(offsets) != len(buffers) or any(o < 0 for o in offsets):
        raise PlanError(f"placement has {len(offsets)} offsets for {len(buffers)} buffers or a negative offset")
    clashes = conflicts(buffers, offsets)
    if clashes:
        a, b = clashes[0]
        raise PlanError(f"buffers '{a.name}' (steps {a.first}-{a.last}, bytes {offsets[a.index]}+{a.size}) and "
                        f"'{b.name}' (steps {b.first}-{b.last}, bytes {offsets[b.index]}+{b.size}) overlap; "
                        f"{len(clashes)} clashes in all")


def place_in_order(buffers: list[Buffer], order: list[int], best_fit: bool = True) -> list[int]:
    """Place buffers one by one in `order` (buffer indices), each into a gap between the already placed
    buffers it shares time with: the smallest gap it fits (best fit) or the lowest (first fit).

    Gaps are free ranges of start offsets, so declared safe distances (Buffer.below, Buffer.above) open
    gaps that overlap a dying input."""
    offsets = [-1] * len(buffers)
    placed: list[Buffer] = []
    for i in order:
        b = buffers[i]
        blocked = sorted(interval for p in placed if p.overlaps_in_time(b)
                         if (interval := forbidden_starts(b, p, offsets[p.index]))[1] > interval[0] + 1)
        best_offset, best_gap = None, None
        cursor = 0  # the lowest start not yet known to clash
        for lo, hi in blocked:
            if lo >= cursor:  # starts cursor .. lo are free
                gap = lo - cursor + 1
                if best_gap is None or gap < best_gap:
                    best_offset, best_gap = cursor, gap
                    if not best_fit:
                        break
            cursor = max(cursor, hi)
        offsets[i] = cursor if best_offset is None else best_offset
        placed.append(b)
    return offsets


def pressure_order(buffers: list[Buffer]) -> list[int]:
    """Buffers by the live memory during their lifetime, highest first (then larger, then earlier): the
    buffers of the busiest steps are placed while the arena is still empty."""
    usage = live_bytes(buffers)
    pressure = [max(usage[b.first:b.last + 1]) for b in buffers]
    return sorted(range(len(buffers)), key=lambda i: (-pressure[i], -buffers[i].size, buffers[i].first))


def size_order(buffers: list[Buffer]) -> list[int]:
    return sorted(range(len(buffers)), key=lambda i: (-buffers[i].size, buffers[i].first))


def latest_first_order(buffers: list[Buffer]) -> list[int]:
    """Buffers born last placed first: an op's output is placed before its input, so a chain of outputs
    that may overlap their inputs from below stacks upward from address 0 instead of running out of room."""
    return sorted(range(len(buffers)), key=lambda i: (-buffers[i].first, -buffers[i].size))


def candidate_orders(buffers: list[Buffer]) -> list[list[int]]:
    orders = [pressure_order(buffers), size_order(buffers)]
    if any(b.may_overlap for b in buffers):
        orders.append(latest_first_order(buffers))
    return orders


def place_best_fit(buffers: list[Buffer]) -> list[int]:
    """Best fit over the natural orders (pressure, size; latest-born when overlaps are allowed); the
    smaller arena wins."""
    candidates = [place_in_order(buffers, order) for order in candidate_orders(buffers)]
    return min(candidates, key=lambda offsets: arena_size(buffers, offsets))


def place_hill_climb(buffers: list[Buffer], iterations: int | None = None, seconds: float = 10.0, seed: int = 0,
                     target: int | None = None) -> list[int]:
    """Improve the placement order by random swaps, keeping any that does not enlarge the arena.

    Starts from the best of the candidate orders; stops after `iterations` swaps (default: 200,000 / the
    number of buffers, between 1,000 and 20,000) or at `target` bytes. The budget is a count, not a time,
    so that a plan is the same on a fast machine and on a loaded one; `seconds` only caps very large
    graphs, whose single swaps are slow.
    """
    import time

    import numpy as np

    rng = np.random.default_rng(seed)
    results = [(arena_size(buffers, o := place_in_order(buffers, order)), order, o)
               for order in candidate_orders(buffers)]
    best_size, order, best = min(results, key=lambda r: r[0])
    deadline = time.monotonic() + seconds
    n = len(order)
    if iterations is None:
        iterations = min(20_000, max(1_000, 200_000 // max(n, 1)))
    for _ in range(iterations if n > 1 else 0):
        if time.monotonic() > deadline or (target is not None and best_size <= target):
            break
        i, j = rng.choice(n, size=2, replace=False)
        trial = list(order)
        trial[i], trial[j] = trial[j], trial[i]
        offsets = place_in_order(buffers, trial)
        size = arena_size(buffers, offsets)
        if size <= best_size:
            best_size, order, best = size, trial, offsets
    return best
