"""Placement: give every buffer an arena offset so that buffers alive at the same time never overlap.

A placement is a list of offsets indexed by `Buffer.index`; the arena is the highest end of any buffer.
"""

from __future__ import annotations

from microforge.errors import PlanError
from microforge.plan.lifetimes import Buffer


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
