"""Graphs the tests share."""

import numpy as np

from microforge.graph.ir import Graph, Tensor


def dequantized(graph: Graph) -> Graph:
    """An int8 graph as the float model it approximates: real-valued weights and biases, float32
    activations, requantizing QUANTIZE ops dropped (a float model has no use for them)."""
    replace: dict[int, Tensor] = {}

    def real(t: Tensor) -> Tensor:
        if t.is_constant and t.quant is not None and t.dtype in (np.int8, np.int32):
            q = t.quant
            shape = [1] * t.data.ndim
            if q.per_channel:
                shape[q.axis] = q.scale.size
            data = q.scale.reshape(shape).astype(np.float64) * (t.data - q.zero_point.reshape(shape))
            return Tensor(t.name, t.shape, np.float32, None, data.astype(np.float32))
        if t.is_constant:
            return Tensor(t.name, t.shape, t.dtype, None, t.data)
        return Tensor(t.name, t.shape, np.float32)

    tensors = {t.index: real(t) for t in graph.tensors}
    ops = []
    for op in graph.ops:
        if op.type == "QUANTIZE":
            replace[op.outputs[0].index] = replace.get(op.inputs[0].index, tensors[op.inputs[0].index])
            continue
        ins = [None if t is None else replace.get(t.index, tensors[t.index]) for t in op.inputs]
        ops.append(type(op)(op.type, ins, [tensors[op.outputs[0].index]], dict(op.options)))
    used = {id(t) for op in ops for t in op.inputs + op.outputs if t is not None}
    return Graph([t for t in tensors.values() if id(t) in used], ops, [tensors[t.index] for t in graph.inputs],
                 [replace.get(t.index, tensors[t.index]) for t in graph.outputs])
