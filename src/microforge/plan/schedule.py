"""Schedule search: the op order that minimises peak live memory.

For a graph that branches (residual adds, concatenations) the order in which branches run changes how
many activations are alive at once. Dynamic programming over the sets of ops already run finds the order
with the smallest peak; the sets reachable in a tinyML graph are few (a chain has one per step), and a
time and state budget bounds the rest, falling back to the model's own order.
"""

from __future__ import annotations

import sys
import time

from microforge.graph.ir import Graph
from microforge.plan.lifetimes import DEFAULT_ALIGNMENT, align, storage_roots


class _Budget(Exception):
    pass


def best_schedule(graph: Graph, alignment: int = DEFAULT_ALIGNMENT, seconds: float = 5.0,
                  max_states: int = 200_000) -> tuple[list[int], bool]:
    """(op order with the smallest layer-wise peak, whether the search finished within its budget)."""
    n = len(graph.ops)
    model_order = list(range(n))
    if n <= 1:
        return model_order, True
    roots = storage_roots(graph)
    size: dict[int, int] = {}
    for t in graph.tensors:
        if not t.is_constant:
            r = roots[t.index]
            size[r] = max(size.get(r, 0), align(t.nbytes, alignment))
    producers = graph.producers()
    # per op: the ops it waits for (bitmask), the roots it creates, the roots it reads
    needs = [0] * n
    creates: list[set[int]] = [set() for _ in range(n)]
    for op in graph.ops:
        for t in op.inputs:
            if t is not None and t.index in producers:
                needs[op.index] |= 1 << producers[t.index].index
        for t in op.outputs:
            creates[op.index].add(roots[t.index])
    readers: dict[int, int] = {}  # root -> bitmask of the ops that read it
    for op in graph.ops:
        for t in op.inputs:
            if t is not None and not t.is_constant:
                readers[roots[t.index]] = readers.get(roots[t.index], 0) | (1 << op.index)
    kept = {roots[t.index] for t in graph.outputs}
    initial = {roots[t.index] for t in graph.inputs}
    everything = (1 << n) - 1

    def allocated(done: int) -> set[int]:
        live = set(initial)
        for i in range(n):
            if done >> i & 1:
                live |= creates[i]
        return {r for r in live if r in kept or readers.get(r, 0) & ~done}

    memo: dict[int, tuple[int, int]] = {}  # done-set -> (best peak from here, next op)
    deadline = time.monotonic() + seconds

    def solve(done: int) -> int:
        if done == everything:
            return 0
        if done in memo:
            return memo[done][0]
        if len(memo) >= max_states or time.monotonic() > deadline:
            raise _Budget
        live = allocated(done)
        base = sum(size[r] for r in live)
        best = None
        for i in range(n):
            if done >> i & 1 or needs[i] & ~done:
                continue
            during = base + sum(size[r] for r in creates[i] - live)
            if best is not None and during >= best[0]:
                continue
            peak = max(during, solve(done | 1 << i))
            if best is None or peak < best[0]:
                best = (peak, i)
        memo[done] = best
        return best[0]

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * n + 100))
    try:
        solve(0)
    except _Budget:
        return model_order, False
    finally:
        sys.setrecursionlimit(limit)
    order, done = [], 0
    while done != everything:
        i = memo[done][1]
        order.append(i)
        done |= 1 << i
    return order, True
