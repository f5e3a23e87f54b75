"""The reference interpreter: runs a Graph on a whole batch at once with the numpy kernels.

Its int8 results are the golden semantics of microforge (bit-exact with TFLite Micro); the generated C is
checked against it. Batches: a tensor of TFLite shape [1, H, W, C] is fed as an array (N, H, W, C), the
batch replacing TFLite's leading 1; tensors whose first dimension is not 1 take an extra leading axis.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from microforge.errors import InputError, MicroforgeError, ModelError, UnsupportedError
from microforge.graph.ir import Graph, Tensor
from microforge.reference.registry import kernel_for, outputs_of

DEFAULT_CHUNK = 256  # samples per pass: bounds memory on large evaluations


def unsupported_ops(graph: Graph) -> list[str]:
    """Every op the reference interpreter cannot run, described with its index; empty if all are fine."""
    problems = []
    for op in graph.ops:
        entry = kernel_for(op)
        if entry is None:
            variant = " in dynamic fixed point" if op.options.get("dynamic_fixed_point") else ""
            problems.append(f"{op.where}: op type not supported{variant}")
            continue
        first = next((t for t in op.inputs if t is not None), None)
        if first is not None and first.dtype.name not in entry.dtypes:
            problems.append(f"{op.where}: input type {first.dtype.name} not supported "
                            f"(supported: {', '.join(entry.dtypes)})")
    return problems


def check_supported(graph: Graph) -> None:
    """Raise UnsupportedError listing every unsupported op at once."""
    problems = unsupported_ops(graph)
    if problems:
        raise UnsupportedError("the model uses what microforge cannot run yet:\n  " + "\n  ".join(problems))
    for op in graph.ops:  # what TFLM refuses in Prepare (a constant index out of range) fails at load too
        entry = kernel_for(op)
        if entry.prepare is not None:
            entry.prepare(op)


def to_batch(tensor: Tensor, x: np.ndarray) -> np.ndarray:
    """A user's array for `tensor` -> the interpreter's (N, *tensor.shape) form. Raises InputError."""
    x = np.asarray(x)
    if x.dtype != tensor.dtype:
        raise InputError(f"input '{tensor.name}' needs dtype {tensor.dtype}, got {x.dtype}")
    shape = tensor.shape
    if shape and shape[0] == 1 and x.ndim == len(shape) and x.shape[1:] == shape[1:]:
        return x.reshape((x.shape[0],) + shape)
    if x.shape[1:] == shape and x.ndim == len(shape) + 1:
        return x
    raise InputError(f"input '{tensor.name}' has shape {list(shape)}; got an array of shape {list(x.shape)} "
                     f"(expected (N, {', '.join(map(str, shape[1:]))}) or (N, {', '.join(map(str, shape))}))")


def from_batch(tensor: Tensor, y: np.ndarray) -> np.ndarray:
    """The interpreter's (N, *shape) form -> the user's form (the batch replaces a leading 1)."""
    if tensor.shape and tensor.shape[0] == 1:
        return y.reshape((y.shape[0],) + tensor.shape[1:])
    return y


Observer = Callable[[Tensor, np.ndarray], None]


def run_batched(graph: Graph, batch_inputs: list[np.ndarray], observe: Observer | None = None) -> list[np.ndarray]:
    """Run (N, *shape) inputs through the graph; returns (N, *shape) outputs. The core loop.

    `observe(tensor, value)` is called with every graph input and every op's output as it is computed
    (calibration and per-layer assessment read intermediate tensors this way)."""
    values: dict[int, np.ndarray] = {t.index: x for t, x in zip(graph.inputs, batch_inputs)}
    if observe is not None:
        for t, x in zip(graph.inputs, batch_inputs):
            observe(t, x)
    last_use = {}
    for op in graph.ops:
        for t in op.inputs:
            if t is not None:
                last_use[t.index] = op.index
    keep = {t.index for t in graph.outputs}
    for op in graph.ops:
        args = []
        for t in op.inputs:
            if t is None:
                args.append(None)
            elif t.is_constant:
                args.append(t.data[np.newaxis])
            else:
                args.append(values[t.index])
        try:
            results = outputs_of(op, kernel_for(op).fn(op, args), len(batch_inputs[0]))
        except MicroforgeError:
            raise
        except Exception as exc:  # a kernel's unchecked assumption: report it against the op, not numpy
            raise ModelError(f"{op.where} failed on output '{op.outputs[0].name}': "
                             f"{type(exc).__name__}: {exc}") from exc
        if len(results) != len(op.outputs):
            raise ModelError(f"{op.where} produced {len(results)} values for its {len(op.outputs)} outputs")
        for t, out in zip(op.outputs, results):
            expected = (len(batch_inputs[0]),) + t.shape
            if out.shape != expected or out.dtype != t.dtype:
                raise ModelError(f"{op.where} produced {out.dtype} {list(out.shape[1:])}, but its output "
                                 f"'{t.name}' is declared {t.dtype} {list(t.shape)}")
            values[t.index] = out
            if observe is not None:
                observe(t, out)
        for t in op.inputs:  # free what no later op reads
            if t is not None and last_use.get(t.index) == op.index and t.index not in keep:
                values.pop(t.index, None)
    return [values[t.index] for t in graph.outputs]


def run(graph: Graph, *inputs: np.ndarray, chunk: int = DEFAULT_CHUNK,
        observe: Observer | None = None) -> np.ndarray | list[np.ndarray]:
    """Evaluate `graph` on a batch. One array per graph input; returns one array per output (or the
    only output). Arrays are (N, *shape) with the batch replacing TFLite's leading 1 (see module doc).
    `observe` sees every tensor's value, chunk by chunk (see `run_batched`)."""
    check_supported(graph)
    if len(inputs) != len(graph.inputs):
        raise InputError(f"the model has {len(graph.inputs)} inputs; got {len(inputs)} arrays")
    batches = [to_batch(t, x) for t, x in zip(graph.inputs, inputs)]
    count = len(batches[0])
    if any(len(b) != count for b in batches):
        raise InputError(f"inputs have different batch sizes: {[len(b) for b in batches]}")
    if count == 0:
        raise InputError("the input batch is empty")
    pieces = [run_batched(graph, [b[i:i + chunk] for b in batches], observe) for i in range(0, count, chunk)]
    outputs = [from_batch(t, np.concatenate([p[k] for p in pieces])) for k, t in enumerate(graph.outputs)]
    return outputs[0] if len(outputs) == 1 else outputs
