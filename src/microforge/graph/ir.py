"""The one graph IR every part of microforge reads and writes.

A `Graph` is a list of `Tensor`s and a list of `Op`s in execution order. Tensors carry their TFLite
shape (including TFLite's own batch dimension, usually 1), dtype, quantization and, for constants, data.
Ops refer to tensors directly (not by index); `None` stands for an omitted optional input such as a
missing bias. Op types use TFLite's builtin names ("CONV_2D"); options use the snake_case field names of
the TFLite schema, with enums as strings (padding "SAME"/"VALID", fused activation "NONE"/"RELU"/...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)
class Quantization:
    """Affine quantization: real = scale * (q - zero_point), per tensor or per `axis` channel."""

    scale: np.ndarray  # float32, shape (channels,) with channels == 1 for per-tensor
    zero_point: np.ndarray  # int64, same shape as scale
    axis: int = 0  # the quantized dimension when per-channel

    def __post_init__(self) -> None:
        self.scale = np.atleast_1d(np.asarray(self.scale, dtype=np.float32))
        self.zero_point = np.atleast_1d(np.asarray(self.zero_point, dtype=np.int64))
        if self.zero_point.size == 1 and self.scale.size > 1:
            self.zero_point = np.repeat(self.zero_point, self.scale.size)

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1

    @property
    def single_scale(self) -> float:
        """The per-tensor scale as a Python float (exactly the float32 value)."""
        return float(self.scale[0])

    @property
    def single_zero_point(self) -> int:
        return int(self.zero_point[0])

    def equals(self, other: "Quantization | None") -> bool:
        return (
            other is not None
            and self.axis == other.axis
            and np.array_equal(self.scale, other.scale)
            and np.array_equal(self.zero_point, other.zero_point)
        )


@dataclass(eq=False)
class Tensor:
    """A value in the graph: an activation (data is None) or a constant (data holds it)."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    quant: Quantization | None = None
    data: np.ndarray | None = None
    index: int = -1  # position in Graph.tensors, kept up to date by Graph

    def __post_init__(self) -> None:
        self.shape = tuple(int(d) for d in self.shape)
        self.dtype = np.dtype(self.dtype)

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def scale(self) -> float:
        """Per-tensor scale; raises if the tensor is not per-tensor quantized."""
        return self._quant().single_scale

    @property
    def zero_point(self) -> int:
        return self._quant().single_zero_point

    def _quant(self) -> Quantization:
        if self.quant is None:
            from microforge.errors import ModelError

            raise ModelError(f"tensor '{self.name}' has no quantization parameters")
        return self.quant

    def __repr__(self) -> str:
        kind = "const" if self.is_constant else "act"
        return f"Tensor({self.name!r}, {list(self.shape)}, {self.dtype}, {kind})"


@dataclass(eq=False)
class Op:
    """One operator: a TFLite builtin type, its input and output tensors and its options."""

    type: str
    inputs: list[Tensor | None]
    outputs: list[Tensor]
    options: dict = field(default_factory=dict)
    index: int = -1  # position in Graph.ops
    version: int = 1  # the TFLite operator version, kept so a written model loads where the read one did

    @property
    def where(self) -> str:
        """How error messages name this op."""
        return f"op {self.index} ({self.type})"

    def __repr__(self) -> str:
        ins = ", ".join(t.name if t is not None else "-" for t in self.inputs)
        outs = ", ".join(t.name for t in self.outputs)
        return f"Op({self.index}: {self.type} [{ins}] -> [{outs}])"


@dataclass(eq=False)
class Graph:
    """Tensors, ops in execution order, and the graph's inputs and outputs."""

    tensors: list[Tensor]
    ops: list[Op]
    inputs: list[Tensor]
    outputs: list[Tensor]
    description: str = ""
    metadata: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.renumber()

    def renumber(self) -> None:
        for i, t in enumerate(self.tensors):
            t.index = i
        for i, op in enumerate(self.ops):
            op.index = i

    @property
    def constants(self) -> list[Tensor]:
        return [t for t in self.tensors if t.is_constant]

    def producers(self) -> dict[int, Op]:
        """Tensor index -> the op that writes it."""
        return {t.index: op for op in self.ops for t in op.outputs}

    def consumers(self) -> dict[int, list[Op]]:
        """Tensor index -> the ops that read it, in execution order."""
        users: dict[int, list[Op]] = {}
        for op in self.ops:
            for t in op.inputs:
                if t is not None:
                    users.setdefault(t.index, []).append(op)
        return users

    def __repr__(self) -> str:
        return f"Graph({len(self.ops)} ops, {len(self.tensors)} tensors)"
