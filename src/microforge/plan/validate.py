"""Prove a plan by running it: every tensor lives at its planned offset inside one arena of exactly the
planned size, and the outputs must equal those of an unplanned run.

The static check (no two buffers alive at once overlap) says the plan is consistent with the lifetimes;
this check says the lifetimes themselves are right, because a buffer reused too early corrupts a value
that some later op still reads.
"""

from __future__ import annotations

import numpy as np

from microforge.errors import PlanError
from microforge.graph.ir import Graph, Tensor
from microforge.reference.interpreter import run_batched
from microforge.reference.dynamic import DynamicValue
from microforge.reference.registry import kernel_for, outputs_of


def random_inputs(graph: Graph, count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    batches = []
    for t in graph.inputs:
        shape = (count,) + t.shape
        if t.dtype.kind == "f":
            batches.append(rng.standard_normal(shape).astype(t.dtype))
        else:
            info = np.iinfo(t.dtype)
            batches.append(rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=t.dtype))
    return batches


def run_in_arena(graph: Graph, schedule: list[int], tensor_offsets: dict[int, int], arena_bytes: int,
                 batch_inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run the graph with every activation stored in one uint8 arena per sample, at its planned offset.
    Dynamic fixed-point exponents live outside the arena, as in the generated C."""
    count = len(batch_inputs[0])
    arena = np.zeros((count, arena_bytes), dtype=np.uint8)
    exponents: dict[int, np.ndarray] = {}

    def span(t: Tensor) -> slice:
        start = tensor_offsets[t.index]
        if start < 0 or start + t.nbytes > arena_bytes:
            raise PlanError(f"tensor '{t.name}' at offset {start} (+{t.nbytes} bytes) lies outside the "
                            f"{arena_bytes}-byte arena")
        return slice(start, start + t.nbytes)

    def load(t: Tensor):
        value = arena[:, span(t)].copy().view(t.dtype).reshape((count,) + t.shape)
        return DynamicValue(value, exponents[t.index]) if t.index in exponents else value

    def store(t: Tensor, value) -> None:
        if isinstance(value, DynamicValue):
            exponents[t.index], value = value.exponent, value.values
        arena[:, span(t)] = np.ascontiguousarray(value).reshape(count, -1).view(np.uint8)

    for t, x in zip(graph.inputs, batch_inputs):
        store(t, x)
    for i in schedule:
        op = graph.ops[i]
        args = [None if t is None else t.data[np.newaxis] if t.is_constant else load(t) for t in op.inputs]
        for t, value in zip(op.outputs, outputs_of(op, kernel_for(op).fn(op, args), count)):
            store(t, value)
    return [load(t) for t in graph.outputs]


def validate_by_execution(graph: Graph, schedule: list[int], tensor_offsets: dict[int, int], arena_bytes: int,
                          samples: int = 2, seed: int = 0) -> None:
    """Raise PlanError if running inside the planned arena gives different outputs than an unplanned run."""
    inputs = random_inputs(graph, samples, seed)
    expected = run_batched(graph, inputs)
    got = run_in_arena(graph, schedule, tensor_offsets, arena_bytes, inputs)
    for t, want, have in zip(graph.outputs, expected, got):
        if not np.array_equal(want.view(np.uint8), have.view(np.uint8)):
            differing = int(np.sum(want.view(np.uint8) != have.view(np.uint8)))
            raise PlanError(f"plan fails validation: output '{t.name}' differs in {differing} bytes when run "
                            f"inside the planned arena (a buffer is overwritten while still needed)")
