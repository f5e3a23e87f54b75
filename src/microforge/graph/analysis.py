"""What a graph costs: multiply-accumulates, constant (flash) bytes, activation bytes live per op."""

from __future__ import annotations

from microforge.graph.ir import Graph, Op


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
    if op.type in ("MUL", "SQUARED_DIFFERENCE"):
        return out.size
    return 0


def live_bytes_per_op(graph: Graph) -> list[int]:
    """Activation bytes live during each op of the model's order: every tensor its own, unaligned
    buffer (the planner's lifetimes without aliasing or alignment)."""
    from microforge.plan.lifetimes import buffers_for, live_bytes

    return live_bytes(buffers_for(graph, alignment=1, alias=False))


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
