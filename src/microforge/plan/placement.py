"""Placement: give every buffer an arena offset so that buffers alive at the same time never overlap.

A placement is a list of offsets indexed by `Buffer.index`; the arena is the highest end of any buffer.
"""

from __future__ import annotations

from microforge.errors import PlanError
from microforge.plan.lifetimes import Buffer, live_bytes


def arena_size(buffers: list[Buffer], offsets: list[int]) -> int:
    return max((offsets[b.index] + b.size for b in buffers), default=0)


def conflicts(buffers: list[Buffer], offsets: list[int]) -> list[tuple[Buffer, Buffer]]:
    """Pairs of buffers alive at the same time whose byte ranges overlap (empty for a valid placement)."""
    found = []
    order = sorted(buffers, key=lambda b: offsets[b.index])
    for i, a in enumerate(order):
        a_end = offsets[a.index] + a.size
        for b in order[i + 1:]:
            if offsets[b.index] >= a_end:
                break
            if a.overlaps_in_time(b):
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
    buffers it shares time with: the smallest gap it fits (best fit) or the lowest (first fit)."""
    offsets = [-1] * len(buffers)
    placed: list[Buffer] = []
    for i in order:
        b = buffers[i]
        busy = sorted((offsets[p.index], offsets[p.index] + p.size) for p in placed if p.overlaps_in_time(b))
        best_offset, best_gap = None, None
        cursor = 0
        for start, end in busy:
            gap = start - cursor
            if gap >= b.size and (best_gap is None or gap < best_gap):
                best_offset, best_gap = cursor, gap
                if not best_fit:
                    break
            cursor = max(cursor, end)
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


def place_best_fit(buffers: list[Buffer]) -> list[int]:
    """Best fit over two natural orders (pressure, size); the smaller arena wins."""
    candidates = [place_in_order(buffers, order) for order in (pressure_order(buffers), size_order(buffers))]
    return min(candidates, key=lambda offsets: arena_size(buffers, offsets))


def place_hill_climb(buffers: list[Buffer], seconds: float = 2.0, seed: int = 0,
                     target: int | None = None) -> list[int]:
    """Improve the placement order by random swaps, keeping any that does not enlarge the arena.

    Starts from the better of the pressure and size orders; stops after `seconds` or at `target` bytes.
    """
    import time

    import numpy as np

    rng = np.random.default_rng(seed)
    orders = [pressure_order(buffers), size_order(buffers)]
    results = [(arena_size(buffers, o := place_in_order(buffers, order)), order, o) for order in orders]
    best_size, order, best = min(results, key=lambda r: r[0])
    deadline = time.monotonic() + seconds
    n = len(order)
    while n > 1 and time.monotonic() < deadline and (target is None or best_size > target):
        i, j = rng.choice(n, size=2, replace=False)
        trial = list(order)
        trial[i], trial[j] = trial[j], trial[i]
        offsets = place_in_order(buffers, trial)
        size = arena_size(buffers, offsets)
        if size <= best_size:
            best_size, order, best = size, trial, offsets
    return best
