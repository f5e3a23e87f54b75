"""The table of reference kernels: op type -> numpy function.

A kernel is `fn(op, args) -> np.ndarray`. `args[i]` is the value of `op.inputs[i]` with a leading batch
axis: shape (N, *tensor.shape) for activations, (1, *tensor.shape) for constants, None for an omitted
optional input. The kernel returns the value of `op.outputs[0]` with shape (N, *tensor.shape) and the
output tensor's dtype, or, for ops with several outputs (SPLIT, UNPACK), a list of one such value per output.
Kernels read constant weights from `op.inputs[i].data` when they need them whole. A kernel's optional
`prepare(op)` checks, when the model is loaded, what TFLM checks before running (e.g. constant indices).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from microforge.graph.ir import Op

Kernel = Callable[[Op, list], np.ndarray]


class KernelEntry:
    def __init__(self, fn: Kernel, dtypes: tuple[str, ...], prepare: Callable[[Op], object] | None = None):
        self.fn = fn
        self.dtypes = dtypes
        self.prepare = prepare


def outputs_of(op: Op, result, count: int) -> list:
    """A kernel's result as one value per output of the op, for a batch of `count` samples: an op that
    reads only constants (FILL) computes one sample, the same for every sample of the batch."""
    results = list(result) if isinstance(result, (list, tuple)) else [result]
    if count != 1 and all(t is None or t.is_constant for t in op.inputs):
        results = [np.repeat(r, count, axis=0) if isinstance(r, np.ndarray) and r.shape[:1] == (1,) else r
                   for r in results]
    return results


KERNELS: dict[str, KernelEntry] = {}
# Kernels of microforge's dynamic fixed point (reference/dynamic.py), for ops marked
# options["dynamic_fixed_point"]: their activation arguments and results are DynamicValue objects.
DYNAMIC_KERNELS: dict[str, KernelEntry] = {}


def kernel_for(op: Op) -> KernelEntry | None:
    """The op's reference kernel, from the dynamic fixed-point table when the op is marked so."""
    table = DYNAMIC_KERNELS if op.options.get("dynamic_fixed_point") else KERNELS
    return table.get(op.type)


def kernel(*op_types: str, dtypes: tuple[str, ...] = ("int8", "float32"), dynamic: bool = False,
           prepare: Callable[[Op], object] | None = None):
    """Register `fn` as the reference kernel of `op_types` for ops whose first input has one of `dtypes`
    (`dynamic`: of the dynamic fixed-point variants of those ops; `prepare`: the load-time check)."""
    table = DYNAMIC_KERNELS if dynamic else KERNELS

    def register(fn: Kernel) -> Kernel:
        for op_type in op_types:
            table[op_type] = KernelEntry(fn, dtypes, prepare)
        return fn

    return register
