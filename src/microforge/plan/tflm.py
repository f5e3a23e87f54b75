"""TFLite Micro's own memory plan, reproduced byte for byte: what a model costs on the stock runtime.

TFLM plans the "head" of its tensor arena once, when the interpreter allocates tensors. The rules, as its
sources (micro_allocator.cc, micro_allocation_info.cc, memory_planner/greedy_memory_planner.cc and the
reference kernels) implement them:

Which buffers. Every tensor of the subgraph whose data is not in the model (no constant buffer), that is
not a variable tensor (TFLM keeps those in the persistent tail; microforge's IR has none) and whose byte
length is non-zero, gets its own buffer, in tensor-index order: TFLM
never aliases, so RESHAPE/SQUEEZE/EXPAND_DIMS outputs are separate buffers that the kernel copies into.
After the tensors come the scratch buffers that kernels request in Prepare (RequestScratchBufferInArena),
in op order (`scratch_requests`: of the ops microforge supports only MEAN asks for any). Every size is
rounded up to 16 bytes (kBufferAlignment).

Lifetimes, in TFLM's "allocation scopes": scope 0 is before the first op, op i runs in scope i + 1.
Graph inputs (and graph outputs, provisionally) are created at scope 0. Op i's outputs are created at
i + 1 (overwriting any earlier creation); each input and output of op i is used at i + 1; its scratch
buffers live in i + 1 only; after the last op, graph outputs are used at scope len(ops). A tensor no op
or graph boundary mentions keeps TFLM's "uninitialised" lifetime -1..-1 and is still planned (it
overlaps only other such tensors). So a `Buffer`'s `first`/`last` here count scopes 0..len(ops), not
schedule steps, and a stray tensor's -1 is not a step at all: step-based helpers such as `live_bytes`
miscount such (rare) buffers.

Placement (GreedyMemoryPlanner). Offline-planned buffers (an "OfflineMemoryAllocation" metadata entry
gives a tensor an offset other than -1) come first, in order, at their fixed offsets. The online buffers
follow sorted by size, largest first; TFLM fills that part of its array back to front and then runs a
stable sort, so equal sizes go latest-added first. The first buffer of the whole order goes at offset 0
(or its fixed offset). Each later online buffer walks the already placed buffers in offset order (equal
offsets in the order they were placed), looking only at those alive at the same time, and takes the
first gap, starting from the highest end seen so far, that is at least its size; if none, it goes after
the last of them. The head is the highest end of any buffer.
"""

from __future__ import annotations

import struct

from microforge.errors import ModelError, PlanError
from microforge.graph.ir import Graph, Op
from microforge.plan.lifetimes import Buffer, align
from microforge.plan.placement import arena_size

BUFFER_ALIGNMENT = 16  # TFLM's MicroArenaBufferAlignment()
OFFLINE_METADATA = "OfflineMemoryAllocation"
ONLINE = -1  # kOnlinePlannedBuffer: the offline plan leaves this tensor to the greedy planner
UNINITIALISED = -1  # kUninitializedLifetime

_REDUCE_OPS = frozenset({"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN"})
_ACCUMULATOR_DTYPES = ("int8", "int16")


def scratch_requests(op: Op) -> list[int]:
    """Bytes of each scratch buffer TFLM's reference kernel for `op` requests in Prepare, in order.

    The reduce kernels are the only ones among the ops microforge handles that ask for any: an int index
    per input dimension and an int per entry of the axis tensor (all reductions), plus, for MEAN and SUM
    of int8/int16 input, an int32 accumulator per output element. Measured against the tflite-micro
    package: single-op graphs of every supported op, int8 and float32; no other op asks for scratch.
    (The order of one op's requests cannot change TFLM's head or offsets: they share one lifetime, so
    equal-sized ones are interchangeable.)
    """
    if op.type not in _REDUCE_OPS or len(op.inputs) < 2 or op.inputs[0] is None or op.inputs[1] is None:
        return []
    x, axis = op.inputs[0], op.inputs[1]
    requests = [4 * len(x.shape), 4 * axis.size]
    if op.type in ("MEAN", "SUM") and x.dtype.name in _ACCUMULATOR_DTYPES:
        requests.append(4 * op.outputs[0].size)
    return requests


def tflm_buffers(graph: Graph) -> list[Buffer]:
    """TFLM's buffer list for `graph`, in the order TFLM adds them to its planner (see module docstring)."""
    graph.renumber()
    first = {t.index: UNINITIALISED for t in graph.tensors}
    last = dict(first)

    def created(index: int, scope: int) -> None:
        first[index] = scope
        last[index] = scope

    def used(index: int, scope: int) -> None:
        last[index] = scope

    for t in graph.inputs:
        created(t.index, 0)
    for t in graph.outputs:
        created(t.index, 0)
    scope = 0
    for op in graph.ops:
        scope += 1
        for t in op.outputs:
            created(t.index, scope)
        for t in op.inputs:
            if t is not None:
                used(t.index, scope)
        for t in op.outputs:
            used(t.index, scope)
    for t in graph.outputs:
        used(t.index, scope)

    buffers = []
    for t in graph.tensors:
        if t.is_constant or t.nbytes == 0:
            continue
        buffers.append(Buffer(t.name, align(t.nbytes, BUFFER_ALIGNMENT), first[t.index], last[t.index], [t]))
    for op in graph.ops:
        for k, nbytes in enumerate(scratch_requests(op)):
            step = op.index + 1
            buffers.append(Buffer(f"scratch {k} of op {op.index} ({op.type})", align(nbytes, BUFFER_ALIGNMENT),
                                  step, step))
    for i, b in enumerate(buffers):
        b.index = i
    return buffers


def offline_offsets(graph: Graph) -> list[int] | None:
    """The per-tensor offsets of the graph's "OfflineMemoryAllocation" metadata (-1: planned online), or
    None if it has none. Raises ModelError if the entry is malformed or its count is not the tensor count
    (TFLM refuses such a model)."""
    raw = graph.metadata.get(OFFLINE_METADATA)
    if raw is None:
        return None
    if len(raw) < 12 or len(raw) % 4:
        raise ModelError(f"{OFFLINE_METADATA} metadata has {len(raw)} bytes: not a version, a subgraph count, "
                         "an offset count and int32 offsets")
    _, _, count = struct.unpack_from("<iii", raw, 0)
    if count != len(graph.tensors) or len(raw) < 12 + 4 * count:
        raise ModelError(f"{OFFLINE_METADATA} metadata gives {count} offsets in {len(raw)} bytes, but the "
                         f"subgraph has {len(graph.tensors)} tensors")
    return list(struct.unpack_from(f"<{count}i", raw, 12))


def fixed_offsets(graph: Graph, buffers: list[Buffer]) -> dict[int, int]:
    """Buffer index -> offset for the buffers the graph's offline plan places (empty without a plan)."""
    offsets = offline_offsets(graph)
    if offsets is None:
        return {}
    return {b.index: offsets[b.tensors[0].index] for b in buffers
            if b.tensors and offsets[b.tensors[0].index] != ONLINE}


def place_tflm(buffers: list[Buffer], fixed: dict[int, int] | None = None) -> list[int]:
    """TFLM's GreedyMemoryPlanner: offsets indexed by `Buffer.index`. `buffers` must be in the order TFLM
    adds them (as `tflm_buffers` returns them); `fixed` maps buffer index -> offline-planned offset."""
    fixed = fixed or {}
    if sorted(b.index for b in buffers) != list(range(len(buffers))):
        raise PlanError("place_tflm needs buffers indexed 0..n-1")
    by_index = sorted(buffers, key=lambda b: b.index)
    offline = [b for b in by_index if b.index in fixed]
    online = [b for b in reversed(by_index) if b.index not in fixed]
    online.sort(key=lambda b: -b.size)  # stable, as TFLM's bubble sort: ties stay latest-added first
    order = offline + online
    offsets = [0] * len(buffers)
    placed: list[Buffer] = []  # in offset order; equal offsets in placement order
    for n, b in enumerate(order):
        if b.index in fixed:
            offset = fixed[b.index]
        elif n == 0:
            offset = 0
        else:
            offset = 0
            for other in placed:
                if not b.overlaps_in_time(other):
                    continue
                if offsets[other.index] - offset >= b.size:
                    break
                offset = max(offset, offsets[other.index] + other.size)
        offsets[b.index] = offset
        # Insert after every placed buffer whose offset is not above ours (TFLM: a new entry goes before
        # the head of the list only if strictly lower than it, otherwise before the first strictly higher).
        at = len(placed)
        for k, other in enumerate(placed):
            if offsets[other.index] > offset:
                at = k
                break
        placed.insert(at, b)
    return offsets


def tflm_arena_bytes(graph: Graph) -> int:
    """The head TFLM plans for `graph` (its "Arena allocation head"), honouring any offline plan it carries."""
    buffers = tflm_buffers(graph)
    offsets = place_tflm(buffers, fixed_offsets(graph, buffers))
    return arena_size(buffers, offsets)
