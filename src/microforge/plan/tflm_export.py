"""Hand a memory plan to stock TFLite Micro: arena offsets written into the model's offline-plan metadata.

TFLM reads an "OfflineMemoryAllocation" metadata entry whose buffer is a list of little-endian 32-bit
integers: a format version (TFLM ignores it; Vela writes 0), the number of subgraphs (ignored too), the
number n of offsets that follow, then one int32 per tensor of the model, subgraph after subgraph: the
byte offset of the tensor from the start of the arena's head, or -1 to let the greedy planner place it
at run time. What TFLM requires and does:

* n must equal the model's tensor count, or the interpreter refuses to allocate;
* offsets of constant (and variable) tensors are ignored: they are not planned;
* the offsets are trusted, never checked: TFLM puts each planned tensor exactly there, places the -1
  tensors and the kernels' scratch buffers greedily around them, and sizes the head to the highest end
  of any buffer (`tflm.tflm_arena_bytes` computes it). Two tensors alive at the same time that share
  bytes silently corrupt each other, so `with_offline_plan` checks the plan first, against TFLM's own
  lifetimes (`tflm.tflm_buffers`). The one overlap it accepts is exact sharing along a RESHAPE, SQUEEZE
  or EXPAND_DIMS: their TFLM kernels copy only when the input and output pointers differ, so an output
  given its input's offset costs nothing.
"""

from __future__ import annotations

import dataclasses
import struct

from microforge.errors import PlanError
from microforge.reference.dynamic import check_runs_on_tflm
from microforge.frontend.writer import write_tflite
from microforge.graph.ir import Graph
from microforge.plan.lifetimes import storage_roots
from microforge.plan.tflm import OFFLINE_METADATA, ONLINE, tflm_buffers

FORMAT_VERSION = 0


def offline_plan_bytes(graph: Graph, offsets_by_tensor: dict[int, int]) -> bytes:
    """The metadata payload for `offsets_by_tensor` (tensor index -> offset; other tensors get -1)."""
    offsets = [ONLINE] * len(graph.tensors)
    for index, offset in offsets_by_tensor.items():
        offsets[index] = offset
    return struct.pack(f"<3i{len(offsets)}i", FORMAT_VERSION, 1, len(offsets), *offsets)


def check_offline_plan(graph: Graph, offsets_by_tensor: dict[int, int]) -> None:
    """Raise PlanError unless every planned tensor is an activation at a sane offset and no two planned
    tensors alive at the same time (TFLM's lifetimes) share bytes, except exact sharing along a reshape."""
    graph.renumber()
    for index, offset in offsets_by_tensor.items():
        if not 0 <= index < len(graph.tensors):
            raise PlanError(f"offline plan names tensor {index}, but the graph has {len(graph.tensors)} tensors")
        tensor = graph.tensors[index]
        if tensor.is_constant:
            raise PlanError(f"offline plan places constant tensor '{tensor.name}', which TFLM never plans")
        if not 0 <= offset < 2**31:
            raise PlanError(f"offline plan puts tensor '{tensor.name}' at offset {offset}: it must be an int32 >= 0")
    roots = storage_roots(graph)
    planned = [b for b in tflm_buffers(graph) if b.tensors and b.tensors[0].index in offsets_by_tensor]
    # The bytes a tensor really occupies: its unaligned size is enough, TFLM writes no further.
    spans = {b.index: (offsets_by_tensor[b.tensors[0].index], b.tensors[0].nbytes) for b in planned}
    planned.sort(key=lambda b: spans[b.index][0])
    for i, a in enumerate(planned):
        a_start, a_size = spans[a.index]
        for b in planned[i + 1:]:
            b_start, b_size = spans[b.index]
            if b_start >= a_start + a_size:
                break
            if not a.overlaps_in_time(b):
                continue
            ta, tb = a.tensors[0], b.tensors[0]
            if a_start == b_start and roots.get(ta.index) == roots.get(tb.index) and ta.nbytes == tb.nbytes:
                continue  # one value under two shapes: the reshape kernel sees equal pointers and skips its copy
            raise PlanError(f"offline plan overlaps '{ta.name}' (bytes {a_start}+{a_size}) and '{tb.name}' "
                            f"(bytes {b_start}+{b_size}), which TFLM keeps alive at the same time")


def with_offline_plan(graph: Graph, offsets_by_tensor: dict[int, int]) -> bytes:
    """.tflite bytes of `graph` carrying `offsets_by_tensor` (tensor index -> arena offset) as TFLM's
    offline memory plan; tensors not named are planned by TFLM at run time. The graph is not modified;
    any metadata it has is kept (an earlier offline plan is replaced)."""
    check_runs_on_tflm(graph, "an offline memory plan for TFLite Micro")
    check_offline_plan(graph, offsets_by_tensor)
    metadata = dict(graph.metadata)
    metadata[OFFLINE_METADATA] = offline_plan_bytes(graph, offsets_by_tensor)
    return write_tflite(dataclasses.replace(graph, metadata=metadata))
