"""Checks the reference kernels share, so a malformed op fails with a ModelError (or UnsupportedError)
naming the op and the tensor instead of a numpy exception deep inside a kernel."""

from __future__ import annotations

import numpy as np

from microforge.errors import ModelError, UnsupportedError
from microforge.graph.ir import Op, Tensor
from microforge.reference.fixedpoint import (
    activation_range_float,
    activation_range_quantized,
    quantize_multiplier,
)

ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")



def check_arity(op: Op, inputs: int | tuple[int, ...], outputs: int = 1) -> None:
    """Raise ModelError unless the op has an allowed number of inputs (all present) and `outputs` outputs."""
    allowed = (inputs,) if isinstance(inputs, int) else inputs
    if len(op.inputs) not in allowed or any(t is None for t in op.inputs):
        raise ModelError(f"{op.where}: expects {' or '.join(map(str, allowed))} inputs, "
                         f"got {[t.name if t is not None else '-' for t in op.inputs]}")
    if len(op.outputs) != outputs:
        raise ModelError(f"{op.where}: expects {outputs} output(s), got {len(op.outputs)}")


def check_dtypes(op: Op, supported: tuple[str, ...], tensors: list[Tensor] | None = None) -> str:
    """All `tensors` (default: first input and the output) share one dtype from `supported`; return it."""
    tensors = tensors if tensors is not None else [op.inputs[0], op.outputs[0]]
    names = {t.dtype.name for t in tensors}
    if len(names) != 1:
        raise UnsupportedError(f"{op.where}: mixed types are not supported: "
                               + ", ".join(f"'{t.name}' {t.dtype.name}" for t in tensors))
    dtype = names.pop()
    if dtype not in supported:
        raise UnsupportedError(f"{op.where}: type {dtype} of '{tensors[0].name}' is not supported "
                               f"(supported: {', '.join(supported)})")
    return dtype


def check_output_shape(op: Op, shape: tuple[int, ...]) -> None:
    """The shape the kernel computed must be the one the output tensor declares."""
    shape = tuple(int(d) for d in shape)
    if shape != op.outputs[0].shape:
        raise ModelError(f"{op.where}: output '{op.outputs[0].name}' is declared {list(op.outputs[0].shape)} "
                         f"but the op computes {list(shape)}")


def check_per_tensor(op: Op, tensors: list[Tensor]) -> None:
    """The int8 and int16 kernels need one positive scale and zero point per tensor (zero for int16)."""
    for t in tensors:
        if t.quant is None or t.quant.per_channel:
            raise UnsupportedError(f"{op.where}: {t.dtype} '{t.name}' needs per-tensor quantization")
        if not t.scale > 0:
            raise ModelError(f"{op.where}: '{t.name}' has scale {t.scale}; scales must be positive")
        check_symmetric_int16(op, t)


def check_symmetric_int16(op: Op, tensor: Tensor) -> None:
    """int16 activations (TFLite's int16x8 mode) are symmetric: zero point 0.

    TFLM's int16 CONV_2D and DEPTHWISE_CONV_2D ignore the zero point and its SOFTMAX, MUL, LOGISTIC and
    CONCATENATION refuse a nonzero one, so a nonzero zero point is refused for every int16 op.
    """
    if tensor.dtype == np.int16 and tensor.quant is not None and np.any(tensor.quant.zero_point != 0):
        raise UnsupportedError(f"{op.where}: int16 '{tensor.name}' has zero point "
                               f"{tensor.quant.zero_point.tolist()}; int16x8 quantization needs zero point 0")


def multiplier_for(op: Op, real: float, what: str) -> tuple[int, int]:
    """quantize_multiplier(real) for this op, refusing (naming the op) what TFLM's arithmetic cannot hold."""
    try:
        return quantize_multiplier(real)
    except ModelError as exc:
        raise UnsupportedError(f"{op.where}: the {what} cannot be represented: {exc}") from None


def constant_ints(op: Op, index: int, what: str) -> np.ndarray:
    """The int32 constant input `index` (axes, shapes) as a 1-D int64 array."""
    t = op.inputs[index]
    if not t.is_constant:
        raise UnsupportedError(f"{op.where}: the {what} '{t.name}' must be a constant")
    if t.dtype not in (np.int32, np.int64):
        raise ModelError(f"{op.where}: the {what} '{t.name}' must be int32, not {t.dtype}")
    return np.asarray(t.data, dtype=np.int64).reshape(-1)


def resolve_axis(op: Op, axis: int, rank: int, tensor: Tensor) -> int:
    """A possibly negative axis of a rank-`rank` tensor -> its index in [0, rank)."""
    if not -rank <= axis < rank:
        raise ModelError(f"{op.where}: axis {axis} is out of range for '{tensor.name}' of rank {rank}")
    return axis % rank


def batch_size(args: list) -> int:
    """The batch of a kernel call: activations carry N samples, constants carry 1."""
    return max(a.shape[0] for a in args if a is not None)




def io_tensors(op: Op, required: int) -> tuple[list[Tensor], Tensor]:
    """The first `required` inputs (all present) and the output of `op`, or ModelError."""
    if len(op.inputs) < required or any(t is None for t in op.inputs[:required]):
        raise ModelError(f"{op.where}: needs {required} inputs, has {len(op.inputs)}")
    if not op.outputs or op.outputs[0] is None:
        raise ModelError(f"{op.where}: has no output tensor")
    return list(op.inputs[:required]), op.outputs[0]


def optional_input(op: Op, index: int) -> Tensor | None:
    return op.inputs[index] if len(op.inputs) > index else None


def batched_arg(op: Op, args: list, index: int) -> np.ndarray:
    """args[index] checked against its tensor: shape (N, *tensor.shape)."""
    tensor = op.inputs[index]
    value = np.asarray(args[index])
    if value.shape[1:] != tensor.shape or value.ndim != len(tensor.shape) + 1:
        raise ModelError(f"{op.where}: value of input '{tensor.name}' has shape {list(value.shape)}, "
                         f"expected (N, {', '.join(map(str, tensor.shape))})")
    return value


def constant_data(op: Op, tensor: Tensor, role: str) -> np.ndarray:
    if not tensor.is_constant:
        raise UnsupportedError(f"{op.where}: {role} '{tensor.name}' must be a constant tensor")
    data = np.asarray(tensor.data)
    if data.shape != tensor.shape:
        raise ModelError(f"{op.where}: {role} '{tensor.name}' holds data of shape {list(data.shape)}, "
                         f"but its shape is {list(tensor.shape)}")
    return data


def positive_option(op: Op, name: str) -> int:
    value = op.options.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ModelError(f"{op.where}: option {name}={value!r} must be a positive integer")
    return int(value)


def activation_of(op: Op) -> str:
    act = op.options.get("fused_activation_function", "NONE")
    if act not in ACTIVATIONS:
        raise UnsupportedError(f"{op.where}: fused activation {act!r} is not supported "
                               f"(supported: {', '.join(ACTIVATIONS)})")
    return act


def per_tensor_quant(op: Op, tensor: Tensor, role: str) -> tuple[float, int]:
    """(scale, zero_point) of an int8 or int16 activation, which must be per-tensor quantized (and
    symmetric for int16)."""
    q = tensor.quant
    if q is None or q.scale.size != 1 or q.zero_point.size != 1:
        raise ModelError(f"{op.where}: {tensor.dtype} {role} '{tensor.name}' needs per-tensor quantization")
    scale, zero_point = float(q.scale[0]), int(q.zero_point[0])
    if not (np.isfinite(scale) and scale > 0):
        raise ModelError(f"{op.where}: {role} '{tensor.name}' has scale {scale!r}; it must be positive")
    check_symmetric_int16(op, tensor)
    if not -128 <= zero_point <= 127:
        raise ModelError(f"{op.where}: {role} '{tensor.name}' has zero point {zero_point} outside int8")
    return scale, zero_point


def quantized_activation_range(op: Op, scale: float, zero_point: int, dtype=np.int8) -> tuple[int, int]:
    """The fused activation's clamp in the output type's range (int8 or int16)."""
    return activation_range_quantized(activation_of(op), scale, zero_point, dtype)


def clamp_float(op: Op, y: np.ndarray) -> np.ndarray:
    lo, hi = activation_range_float(activation_of(op))
    return np.clip(y, lo, hi).astype(np.float32)


def fully_connected_geometry(op: Op, x: Tensor, w: Tensor) -> tuple[int, int, int]:
    """(rows, in_features, out_features) of a FULLY_CONNECTED op: the input of any rank read as rows of
    the weights' [out, in] width; the declared output shape checked against keep_num_dims."""
    if op.options.get("weights_format", "DEFAULT") != "DEFAULT":
        raise UnsupportedError(f"{op.where}: weights_format {op.options['weights_format']!r} is not supported")
    if len(w.shape) != 2 or w.shape[1] == 0:
        raise ModelError(f"{op.where}: weights '{w.name}' must be [out, in], got {list(w.shape)}")
    out_features, in_features = w.shape
    if x.size % in_features:
        raise ModelError(f"{op.where}: input '{x.name}' of {x.size} values cannot be split into "
                         f"rows of {in_features}")
    rows = x.size // in_features
    if op.options.get("keep_num_dims", False):
        if not x.shape or x.shape[-1] != in_features:
            raise ModelError(f"{op.where}: with keep_num_dims the last dimension of input '{x.name}' "
                             f"must be {in_features}")
        check_output_shape(op, x.shape[:-1] + (out_features,))
    else:
        check_output_shape(op, (rows, out_features))
    return rows, in_features, out_features
