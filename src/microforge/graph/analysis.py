"""What a graph costs: multiply-accumulates, constant (flash) bytes, activation bytes and live ranges."""

from __future__ import annotations

from dataclasses import dataclass

from microforge.graph.ir import Graph, Op, Tensor


def op_macs(op: Op) -> int:
    """Multiply-accumulates one inference of `op` performs (0 for ops that do not multiply)."""
    out = op.outputs[0]
    if op.type == "CONV_2D" and op.inputs[1] is not None and len(op.inputs[1].shape) == 4:
        _, kh, kw, cin = op.inputs[1].shape
        return out.size * kh * kw * cin
    if op.type == "DEPTHWISE_CONV_2D" and op.inputs[1] is not None and len(op.inputs[1].shape) == 4:
        _, kh, kw, _ = op.inputs[1].shape
        return out.size * kh * kw
    if op.type == "FULLY_CONNECTED" and op.inputs[1] is not None and len(op.inputs[1].shape) == 2:
        return out.size * op.inputs[1].shape[1]
    if op.type == "MUL":
        return out.size
    return 0


@dataclass
class LiveRange:
    """A value that needs memory from the start of op `first` to the end of op `last` (op indices)."""

    tensor: Tensor
    first: int
    last: int


def live_ranges(graph: Graph) -> list[LiveRange]:
    """Live ranges of every activation in the graph's op order.

    Graph inputs live from op 0; graph outputs live to the last op; a value nobody reads still needs
    room for the op that writes it.
    """
    end = len(graph.ops) - 1
    first: dict[int, int] = {t.index: 0 for t in graph.inputs}
    last: dict[int, int] = {t.index: end for t in graph.outputs}
    for op in graph.ops:
        for t in op.outputs:
            first.setdefault(t.index, op.index)
            last[t.index] = max(last.get(t.index, op.index), op.index)
        for t in op.inputs:
            if t is not None and not t.is_constant:
                last[t.index] = max(last.get(t.index, op.index), op.index)
    return [LiveRange(graph.tensors[i], first[i], last[i]) for i in sorted(first)]


def live_bytes_per_op(graph: Graph) -> list[int]:
    """Sum of the bytes of every value live during each op."""
    usage = [0] * len(graph.ops)
    for r in live_ranges(graph):
        for i in range(r.first, r.last + 1):
            usage[i] += r.tensor.nbytes
    return usage


def ram_lower_bound(graph: Graph) -> int:
    """The layer-wise lower bound of the activation arena: the most bytes live at once in op order."""
    return max(live_bytes_per_op(graph), default=0)


def analyze(graph: Graph) -> dict:
    """Per-op and total costs, as `microforge analyze --json` prints them."""
    live = live_bytes_per_op(graph)
    rows = []
    for op in graph.ops:
        rows.append({
            "index": op.index,
            "type": op.type,
            "inputs": [list(t.shape) for t in op.inputs if t is not None and not t.is_constant],
            "outputs": [list(t.shape) for t in op.outputs],
            "macs": op_macs(op),
            "param_bytes": sum(t.nbytes for t in op.inputs if t is not None and t.is_constant),
            "activation_bytes": sum(t.nbytes for t in op.inputs + op.outputs if t is not None and not t.is_constant),
            "live_bytes": live[op.index],
        })
    totals = {
        "macs": sum(r["macs"] for r in rows),
        "flash_bytes": sum(t.nbytes for t in graph.constants),
        "ram_lower_bound_bytes": max(live, default=0),
    }
    return {"ops": rows, "totals": totals}
