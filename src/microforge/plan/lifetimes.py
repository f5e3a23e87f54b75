"""Buffers and their lifetimes: what the memory planner places.

A buffer is a block of the activation arena that must stay intact from the start of schedule step
`first` to the end of step `last`. Each activation tensor needs one, except that reshape-like ops alias
their input (same bytes, new shape) so input and output share a buffer whose lifetime covers both.
Graph inputs are live from step 0 (the caller writes them before invoking); graph outputs stay live to
the last step (the caller reads them after). Scratch buffers that a kernel needs besides its inputs and
outputs live for that kernel's step only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from microforge.errors import PlanError
from microforge.graph.ir import Graph, Op, Tensor

ALIASING_OPS = frozenset({"RESHAPE", "SQUEEZE", "EXPAND_DIMS"})
DEFAULT_ALIGNMENT = 16  # TFLM's buffer alignment; plans are compared with TFLM's at the same alignment


def align(size: int, alignment: int) -> int:
    return (size + alignment - 1) // alignment * alignment


@dataclass(frozen=True)
class SafeDistance:
    """How a kernel lets its output overlap one of its inputs that dies at the op: the output may start
    at least `below` bytes below the input when the kernel runs forward (it writes every byte only after
    reading what that byte lands on), or at least `above` bytes above it when the kernel runs backward
    (last output first). None: not that way. Kernels declare a bare int for `below` alone."""

    below: int | None = None
    above: int | None = None


@dataclass
class Buffer:
    """One block of the arena: the tensors stored in it, its aligned size and its lifetime (steps)."""

    name: str
    size: int
    first: int
    last: int
    tensors: list[Tensor] = field(default_factory=list)
    index: int = -1
    scratch_of: int = -1  # for a kernel's scratch buffer: the op index it belongs to
    # Finer than layer granularity: buffer index -> D. This buffer (an op's output) may overlap that one
    # (the op's dying input) if it starts at least D bytes below it: the kernel's declared safe distance.
    below: dict[int, int] = field(default_factory=dict)
    # ... or starts at least D bytes above it (the kernel runs backward).
    above: dict[int, int] = field(default_factory=dict)

    @property
    def may_overlap(self) -> bool:
        return bool(self.below or self.above)

    def overlaps_in_time(self, other: "Buffer") -> bool:
        return self.first <= other.last and other.first <= self.last


def default_schedule(graph: Graph) -> list[int]:
    return [op.index for op in graph.ops]


def check_schedule(graph: Graph, schedule: list[int]) -> None:
    """A schedule is a permutation of the op indices in which every op runs after its producers."""
    if sorted(schedule) != list(range(len(graph.ops))):
        raise PlanError(f"schedule {schedule} is not a permutation of the {len(graph.ops)} ops")
    producers = graph.producers()
    done: set[int] = set()
    for i in schedule:
        for t in graph.ops[i].inputs:
            if t is not None and t.index in producers and producers[t.index].index not in done:
                raise PlanError(f"schedule runs {graph.ops[i].where} before the op that writes '{t.name}'")
        done.add(i)


def storage_roots(graph: Graph) -> dict[int, int]:
    """Tensor index -> the tensor index whose buffer holds it (itself unless an aliasing op forwards it)."""
    root: dict[int, int] = {}

    def find(i: int) -> int:
        while root.get(i, i) != i:
            i = root[i]
        return i

    for op in graph.ops:
        source = op.inputs[0] if op.inputs else None
        if op.type in ALIASING_OPS and source is not None and not source.is_constant:
            root[op.outputs[0].index] = find(source.index)
    return {t.index: find(t.index) for t in graph.tensors if not t.is_constant}


def buffers_for(graph: Graph, schedule: list[int] | None = None, alignment: int = DEFAULT_ALIGNMENT,
                alias: bool = True, scratch: dict[int, int] | None = None,
                overlaps: dict[int, dict[int, int | SafeDistance]] | None = None) -> list[Buffer]:
    """The buffers to place when the ops run in `schedule` order.

    `alias=False` gives every tensor its own buffer (as TFLM does). `scratch` maps op index -> bytes of
    scratch that op's kernel needs during its step. `overlaps` maps op index -> {input position: its
    kernel's SafeDistance (an int D: SafeDistance(below=D))}: the output may overlap that input, where the
    input dies at this op, if it starts at least `below` bytes below it or `above` bytes above it.
    """
    schedule = default_schedule(graph) if schedule is None else list(schedule)
    check_schedule(graph, schedule)
    step_of = {op_index: step for step, op_index in enumerate(schedule)}
    end = len(schedule) - 1
    roots = storage_roots(graph) if alias else {t.index: t.index for t in graph.tensors if not t.is_constant}
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    members: dict[int, list[Tensor]] = {}

    def touch(t: Tensor, step: int) -> None:
        r = roots[t.index]
        first[r] = min(first.get(r, step), step)
        last[r] = max(last.get(r, step), step)
        if t not in members.setdefault(r, []):
            members[r].append(t)

    for t in graph.inputs:
        touch(t, 0)
    for op_index in schedule:
        op: Op = graph.ops[op_index]
        for t in op.inputs + op.outputs:
            if t is not None and not t.is_constant:
                touch(t, step_of[op_index])
    for t in graph.outputs:
        touch(t, end)
    buffers = []
    for r in sorted(first):
        head = graph.tensors[r]
        size = max(t.nbytes for t in members[r])
        buffers.append(Buffer(head.name, align(size, alignment), first[r], last[r], members[r]))
    for op_index, nbytes in (scratch or {}).items():
        if nbytes > 0:
            step = step_of[op_index]
            buffers.append(Buffer(f"scratch of op {op_index}", align(nbytes, alignment), step, step,
                                  scratch_of=op_index))
    for i, b in enumerate(buffers):
        b.index = i
    by_root = {roots[b.tensors[0].index]: b for b in buffers if b.tensors}
    # a graph output read by the last op "ends" at that op's step too, but its bytes must survive it
    kept = {roots[t.index] for t in graph.outputs}
    for op_index, distances in (overlaps or {}).items():
        op, step = graph.ops[op_index], step_of[op_index]
        out = by_root[roots[op.outputs[0].index]]  # kernels with several outputs (SPLIT) declare none
        for position, distance in distances.items():
            source = op.inputs[position]
            if source is None or source.is_constant:
                continue
            into = by_root[roots[source.index]]
            if into is not out and into.last == step and out.first == step and roots[source.index] not in kept:
                safe = distance if isinstance(distance, SafeDistance) else SafeDistance(below=distance)
                # rounding a distance up keeps it safe: a kernel's distances hold for any larger one
                if safe.below is not None:
                    out.below[into.index] = align(safe.below, alignment)
                if safe.above is not None:
                    out.above[into.index] = align(safe.above, alignment)
    return buffers


def live_bytes(buffers: list[Buffer]) -> list[int]:
    """Bytes of the buffers live at each step."""
    usage = [0] * (max((b.last for b in buffers), default=-1) + 1)
    for b in buffers:
        for s in range(b.first, b.last + 1):
            usage[s] += b.size
    return usage


def lower_bound(buffers: list[Buffer]) -> int:
    """No placement of these buffers fits in fewer bytes than the most that are live at one step."""
    return max(live_bytes(buffers), default=0)
