"""The memory planner: where every activation lives in one static arena, at layer granularity.

    from microforge.plan import plan
    p = plan(graph)                  # strategy "auto": the smallest valid plan of all strategies
    p.arena_bytes, p.lower_bound_bytes, p.tflm_bytes
    p.to_json()

Steps: choose a schedule (the model's op order, or the order that minimises peak live memory), derive
buffers and lifetimes for it, place them with each strategy, validate every plan statically and by
execution, keep the smallest. A plan that fails validation is never returned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from microforge.errors import PlanError
from microforge.graph.ir import Graph
from microforge.plan.exact import place_exact
from microforge.plan.lifetimes import DEFAULT_ALIGNMENT, Buffer, SafeDistance, buffers_for, default_schedule, lower_bound
from microforge.plan.placement import arena_size, check_placement, place_best_fit, place_hill_climb
from microforge.plan.schedule import best_schedule
from microforge.plan.tflm import place_tflm, tflm_arena_bytes, tflm_buffers
from microforge.plan.validate import validate_by_execution

STRATEGIES = ("tflm", "best-fit", "hill-climb", "exact", "auto")


@dataclass
class Plan:
    """A validated placement of a graph's activations in one arena."""

    graph: Graph
    strategy: str
    schedule: list[int]
    buffers: list[Buffer]
    offsets: list[int]
    lower_bound_bytes: int  # layer-wise lower bound for this plan's schedule and buffers
    tflm_bytes: int  # TFLM's greedy plan of the same model, measured by reproducing its planner
    proven_optimal: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def arena_bytes(self) -> int:
        return arena_size(self.buffers, self.offsets)

    @property
    def gap(self) -> float:
        """How far above the lower bound the arena is, as a fraction (0.0 = at the bound)."""
        return self.arena_bytes / self.lower_bound_bytes - 1 if self.lower_bound_bytes else 0.0

    def tensor_offsets(self) -> dict[int, int]:
        """Tensor index -> arena offset, for every activation tensor (aliases share their buffer's)."""
        return {t.index: self.offsets[b.index] for b in self.buffers for t in b.tensors}

    def scratch_offsets(self) -> dict[int, int]:
        """Op index -> arena offset of that op's scratch buffer."""
        return {b.scratch_of: self.offsets[b.index] for b in self.buffers if b.scratch_of >= 0}

    def to_json(self) -> dict:
        return {
            "arena_bytes": self.arena_bytes,
            "lower_bound_bytes": self.lower_bound_bytes,
            "tflm_bytes": self.tflm_bytes,
            "strategy": self.strategy,
            "proven_optimal": self.proven_optimal,
            "schedule": list(self.schedule),
            "buffers": [
                {"tensor": b.name, "tensors": [t.name for t in b.tensors], "offset": self.offsets[b.index],
                 "size": b.size, "first_op": self.schedule[b.first], "last_op": self.schedule[b.last]}
                for b in self.buffers
            ],
        }


def _placements(buffers: list[Buffer], strategy: str, bound: int, seconds: float) -> list[tuple[str, list[int], bool]]:
    """(strategy name, offsets, proven optimal) for `strategy`, or for every strategy when "auto"."""
    results: list[tuple[str, list[int], bool]] = []

    def best() -> tuple[str, list[int], bool]:
        return min(results, key=lambda r: arena_size(buffers, r[1]))

    if strategy in ("best-fit", "auto"):
        results.append(("best-fit", place_best_fit(buffers), False))
    overlapping = any(b.may_overlap for b in buffers)  # then the layer-wise bound is no floor: keep climbing
    if strategy == "hill-climb" or (strategy == "auto" and (overlapping or arena_size(buffers, best()[1]) > bound)):
        target = None if overlapping else bound
        results.append(("hill-climb", place_hill_climb(buffers, seconds=max(seconds, 1.0), target=target), False))
    if strategy == "exact" or (strategy == "auto" and arena_size(buffers, best()[1]) > bound):
        hint = best()[1] if results else place_best_fit(buffers)
        offsets, proven = place_exact(buffers, time_limit_s=seconds, hint=hint, lower_bound=bound)
        results.append(("exact", offsets, proven))
    if overlapping:  # the layer-wise bound is no bound then, and the exact model ignores overlaps
        return [(name, offsets, False) for name, offsets, _ in results]
    # whatever reaches the bound is optimal, whichever strategy found it
    return [(name, offsets, proven or arena_size(buffers, offsets) == bound) for name, offsets, proven in results]


def plan(graph: Graph, strategy: str = "auto", schedule: str | list[int] = "auto",
         alignment: int = DEFAULT_ALIGNMENT, seconds: float = 10.0, validate: bool = True,
         scratch: dict[int, int] | None = None, overlaps: dict[int, dict[int, int | SafeDistance]] | None = None) -> Plan:
    """Plan `graph`'s activation arena. `schedule`: "auto" (search), "model" (as stored) or an op order.
    `scratch`: op index -> bytes of scratch its kernel needs during its step (the C kernels declare it).
    `overlaps`: op index -> {input position: its kernel's SafeDistance for writing the output over that
    dying input} (see lifetimes.buffers_for); with overlaps the arena can go below the layer-wise lower bound.

    Every candidate plan is checked statically; the returned one is also checked by execution.
    Raises PlanError if no valid plan is found (which would be a bug) or on bad arguments.
    """
    if strategy not in STRATEGIES:
        raise PlanError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    started = time.monotonic()
    tflm_bytes = tflm_arena_bytes(graph)
    if strategy == "tflm":
        buffers = tflm_buffers(graph)
        offsets = place_tflm(buffers)
        steps = default_schedule(graph)
        candidates = [("tflm", steps, buffers, offsets, False)]
    else:
        orders = [default_schedule(graph)]
        if schedule == "auto":
            searched, _finished = best_schedule(graph, alignment, seconds=min(5.0, seconds / 2))
            if searched != orders[0]:
                orders.append(searched)
        elif schedule != "model":
            orders = [list(schedule)]
        candidates = []
        for order in orders:
            buffers = buffers_for(graph, order, alignment, scratch=scratch, overlaps=overlaps)
            bound = lower_bound(buffers)
            for name, offsets, proven in _placements(buffers, strategy, bound, seconds):
                candidates.append((name, order, buffers, offsets, proven))
    valid = []
    for name, order, buffers, offsets, proven in candidates:
        check_placement(buffers, offsets)
        valid.append((arena_size(buffers, offsets), name, order, buffers, offsets, proven))
    size, name, order, buffers, offsets, proven = min(valid, key=lambda v: v[0])
    result = Plan(graph, name, order, buffers, offsets, lower_bound(buffers), tflm_bytes, proven)
    if validate:
        validate_by_execution(graph, order, result.tensor_offsets(), result.arena_bytes)
    result.seconds = time.monotonic() - started
    return result
