"""How an op becomes C: the contract between the code generator and each op family's lowering.

A lowering is `fn(op, ctx) -> Call`, registered with `@lowering("CONV_2D", ...)` in a module of
`microforge.codegen.ops`. It reads the op (shapes, quantization, options), precomputes everything that
is constant (multipliers, shifts, offsets, clamps, re-laid-out weights) with `ctx`, and returns the C
statement that runs the op plus the kernel source files that statement needs. Nothing is interpreted at
run time: parameters become `static const` data in flash and the statement is a direct call.

Tensor storage comes from `ctx.tensor(t)`: a C expression of the right pointer type, into the arena for
activations (at the planned offset) or naming a const array for constants. Integer results must equal
the reference interpreter's byte for byte (and so TFLM's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from microforge.graph.ir import Op, Tensor
from microforge.plan.lifetimes import SafeDistance


@dataclass
class Call:
    """The C that runs one op: statement(s) for the body of mf_invoke, and the kernel files they need
    (names of files in microforge/codegen/kernels/, e.g. "mf_conv.c"; headers are found by #include)."""

    statement: str
    sources: tuple[str, ...] = ()
    scratch_bytes: int = 0  # bytes of scratch the kernel needs during this op (ctx.scratch() points to it)
    # The kernel's safe distances: input position -> D, or a SafeDistance. The output may overlap that
    # input (when the input dies at this op) if it starts at least D bytes below it, because the kernel
    # reads every input byte it needs before it writes the output bytes that land on it; with a
    # SafeDistance(above=A) also A bytes above it, where the kernel runs backward (ctx.runs_backward says
    # which way the plan needs). Inputs not listed: no overlap.
    overlaps: dict[int, int | SafeDistance] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class EmitContext(Protocol):
    target: str  # "portable" | "host" | "cortex-m4" | "cortex-m7" | "cortex-m0plus"

    def tensor(self, t: Tensor) -> str:
        """C expression for the tensor's data pointer, e.g. `((int8_t *)(mf_arena + 1024))` or `mf_w3`."""

    def constant(self, name_hint: str, data: np.ndarray, ctype: str | None = None) -> str:
        """Emit `static const <ctype> name[] = {...};` (aligned) and return its identifier."""

    def struct(self, ctype: str, name_hint: str, fields: dict[str, object]) -> str:
        """Emit `static const <ctype> name = { .field = value, ... };` and return `&name`. Values are ints,
        floats, or C expressions given as str (e.g. array identifiers from `constant`)."""

    def shared_weights(self, t: Tensor) -> Tensor | None:
        """For a member of a weight-shared family (dynamic/image.py): the widest member's constant whose
        leading slice `t` is, to be read in place (`tensor` of it, or `constant_once` for a re-laid-out
        copy) by a kernel that can skip the columns past this member's; None otherwise."""

    def constant_once(self, key: Tensor, name_hint: str, make: Callable[[], np.ndarray]) -> str:
        """The identifier of an array holding `make()`, a re-laid-out copy of the constant `key`, written
        once however many models of the file ask for it."""

    def scratch(self) -> str:
        """C expression for this op's scratch area (uint8_t *), valid when Call.scratch_bytes > 0."""

    def runs_backward(self, source: Tensor, out: Tensor) -> bool:
        """True when the plan put `out` over the upper part of `source` (a SafeDistance `above`): the
        kernel must then run backward. False in the first pass, before the plan exists."""

    def exponent(self, t: Tensor) -> str:
        """C lvalue of a dynamic fixed-point tensor's run-time exponent (an int32_t outside the arena)."""


Lowering = Callable[[Op, EmitContext], Call]
LOWERINGS: dict[str, Lowering] = {}
# Lowerings of ops marked dynamic_fixed_point (codegen/ops/dfp.py), as reference.registry does it.
DYNAMIC_LOWERINGS: dict[str, Lowering] = {}
# Lowerings of int16x8 ops: every op with an int16 activation (input or output) except those whose C only
# moves bytes, whatever their type (COPYING_OPS, lowered by their ordinary lowering).
INT16_LOWERINGS: dict[str, Lowering] = {}
COPYING_OPS = ("RESHAPE", "SQUEEZE", "EXPAND_DIMS", "CONCATENATION", "TRANSPOSE", "SLICE", "STRIDED_SLICE",
               "SPLIT", "SPLIT_V", "PACK", "UNPACK", "GATHER", "ZEROS_LIKE", "SHAPE", "FILL")


def is_int16x8(op: Op) -> bool:
    return op.type not in COPYING_OPS and any(
        t is not None and not t.is_constant and t.dtype == np.int16 for t in op.inputs + op.outputs)


def lowering(*op_types: str, dynamic: bool = False, int16: bool = False):
    table = DYNAMIC_LOWERINGS if dynamic else INT16_LOWERINGS if int16 else LOWERINGS

    def register(fn: Lowering) -> Lowering:
        for op_type in op_types:
            table[op_type] = fn
        return fn

    return register


def lowering_for(op: Op) -> Lowering | None:
    if op.options.get("dynamic_fixed_point"):
        table = DYNAMIC_LOWERINGS
    else:
        table = INT16_LOWERINGS if is_int16x8(op) else LOWERINGS
    return table.get(op.type)
