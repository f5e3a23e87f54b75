"""The table of reference kernels: op type -> numpy function.

A kernel is `fn(op, args) -> np.ndarray`. `args[i]` is the value of `op.inputs[i]` with a leading batch
axis: shape (N, *tensor.shape) for activations, (1, *tensor.shape) for constants, None for an omitted
optional input. The kernel returns the value of `op.outputs[0]` with shape (N, *tensor.shape) and the
output tensor's dtype. Kernels read constant weights from `op.inputs[i].data` when they need them whole.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from microforge.graph.ir import Op

Kernel = Callable[[Op, list], np.ndarray]


class KernelEntry:
    def __init__(self, fn: Kernel, dtypes: tuple[str, ...]):
        self.fn = fn
        self.dtypes = dtypes


KERNELS: dict[str, KernelEntry] = {}
# Kernels of microforge's dynamic fixed point (reference/dynamic.py), for ops marked
# options["dynamic_fixed_point"]: their activation arguments and results are DynamicValue objects.
DYNAMIC_KERNELS: dict[str, KernelEntry] = {}


def kernel_for(op: Op) -> KernelEntry | None:
    """The op's reference kernel, from the dynamic fixed-point table when the op is marked so."""
    table = DYNAMIC_KERNELS if op.options.get("dynamic_fixed_point") else KERNELS
    return table.get(op.type)


def kernel(*op_types: str, dtypes: tuple[str, ...] = ("int8", "float32"), dynamic: bool = False):
    """Register `fn` as the reference kernel of `op_types` for ops whose first input has one of `dtypes`
    (`dynamic`: of the dynamic fixed-point variants of those ops)."""
    table = DYNAMIC_KERNELS if dynamic else KERNELS

    def register(fn: Kernel) -> Kernel:
        for op_type in op_types:
            table[op_type] = KernelEntry(fn, dtypes)
        return fn

    return register
