"""Split a trained int8 classifier at its latent-replay (LR) layer: a frozen int8 front and a float back.

The front is the model's own ops up to the LR tensor, a Graph like any other: the reference interpreter,
the host C and the generated Cortex-M C run it bit-exact with TFLM as they run whole models. Its int8
output, the LR activations ("latents"), is what the replay buffer stores. The back is the chain of ops
after it, as float32 training layers (layers.py) initialised from the dequantized int8 weights, its final
SOFTMAX left to the loss (softmax cross-entropy on the logits).

The back must be a chain: every op after the cut reads only the previous op's output (and constants), so
an LR tensor inside a residual block, whose skip branch crosses the cut, is refused.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from microforge.errors import InputError, UnsupportedError
from microforge.graph.ir import Graph, Op, Tensor
from microforge.learn import layers as L
from microforge.reference.interpreter import run
from microforge.robust.data import load_model

TRAINABLE = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
DROPPED_AT_THE_END = ("SOFTMAX", "DEQUANTIZE", "QUANTIZE")  # the loss takes the logits


@dataclass
class Split:
    """A model cut at its LR tensor. `front` (int8 Graph) maps the model input to `lr` (its output, the
    latents); `back` (float32 layers) maps dequantized latents to the logits of `classes` classes."""

    model: Graph
    front: Graph
    lr: Tensor  # the front's output
    lr_op: int  # index in `model` of the op that makes it
    back: L.Sequential
    classes: int

    @property
    def lr_shape(self) -> tuple[int, ...]:
        """Per-sample shape of the latents (the LR tensor without its batch 1)."""
        return tuple(self.lr.shape[1:])

    def latents(self, x: np.ndarray) -> np.ndarray:
        """The int8 LR activations (N, *lr_shape) of model inputs x (N, *input shape), by the reference
        interpreter."""
        x = np.asarray(x)
        t = self.front.inputs[0]
        if x.dtype != t.dtype or tuple(x.shape[1:]) != tuple(t.shape):
            raise InputError(f"learn: inputs of shape {list(x.shape)} ({x.dtype}) do not fit the model input "
                             f"'{t.name}' {list(t.shape)} ({np.dtype(t.dtype).name}): give (N, "
                             f"{', '.join(map(str, t.shape))})")
        return np.asarray(run(self.front, x)).reshape((len(x),) + self.lr_shape)

    def dequantize(self, latents: np.ndarray) -> np.ndarray:
        """Real values of int8 latents, float32 (what the back's first layer reads)."""
        return ((np.asarray(latents, np.float32) - np.float32(self.lr.zero_point)) * np.float32(self.lr.scale))

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.back.forward(self.dequantize(self.latents(x)))


def _producers(graph: Graph) -> dict[int, Op]:
    return {t.index: op for op in graph.ops for t in op.outputs}


def lr_op_index(graph: Graph, lr_layer) -> int:
    """The index of the op whose output is the LR tensor: `lr_layer` is an op index, a tensor name, or None
    for the default: the output of the third convolution from the end (the back then retrains the last
    two, a depthwise-separable block, with what follows them), or of the first when there are fewer."""
    producers = _producers(graph)
    if lr_layer is None:
        convs = [op.index for op in graph.ops if op.type in ("CONV_2D", "DEPTHWISE_CONV_2D")]
        if not convs:
            raise InputError("learn: the model has no convolution; name the LR layer (--lr-layer)")
        return convs[max(0, len(convs) - 3)]
    if isinstance(lr_layer, (int, np.integer)) or (isinstance(lr_layer, str) and lr_layer.isdigit()):
        index = int(lr_layer)
        if not 0 <= index < len(graph.ops) - 1:
            raise InputError(f"learn: LR layer {index} is not an op index of the model (0..{len(graph.ops) - 2}: "
                             "the back needs at least one op)")
        return index
    found = [t for t in graph.tensors if t.name == lr_layer]
    if not found:
        raise InputError(f"learn: the model has no tensor named '{lr_layer}' (give a tensor name or an op index)")
    if found[0].index not in producers:
        raise InputError(f"learn: tensor '{lr_layer}' is not made by an op (a constant or the input)")
    return producers[found[0].index].index


def _check_chain(graph: Graph, cut: int) -> None:
    """Every op after the cut reads only the previous op's output and constants."""
    previous = graph.ops[cut].outputs[0]
    for op in graph.ops[cut + 1:]:
        for t in op.inputs:
            if t is None or t.is_constant or t is previous:
                continue
            raise UnsupportedError(f"learn: {op.where} reads '{t.name}', which is not the previous op's output: "
                                   f"the LR layer (op {cut}) must not cut through a branch (a residual block); "
                                   "choose a later one")
        if len(op.outputs) != 1:
            raise UnsupportedError(f"learn: {op.where} has {len(op.outputs)} outputs; the back must be a chain")
        previous = op.outputs[0]
    if graph.outputs[0] is not previous or len(graph.outputs) != 1:
        raise UnsupportedError("learn: the model must have one output, made by its last op")


def _real(t: Tensor) -> np.ndarray:
    """A constant's real values (int8 weights or int32 bias dequantized per channel; float as is)."""
    data = np.asarray(t.data)
    if t.quant is None or data.dtype == np.float32:
        return data.astype(np.float32)
    scale = np.asarray(t.quant.scale, np.float64)
    zero = np.asarray(t.quant.zero_point, np.float64)
    if len(scale) > 1:  # per channel along the quantized axis
        shape = [1] * data.ndim
        shape[t.quant.axis] = len(scale)
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((data.astype(np.float64) - zero) * scale).astype(np.float32)


def _activation(op: Op) -> str:
    act = op.options.get("fused_activation_function", "NONE")
    if act not in ("NONE", "RELU", "RELU6"):
        raise UnsupportedError(f"learn: {op.where} has fused activation {act}; the back trains NONE, RELU, RELU6")
    return act


def back_layer(op: Op) -> L.Layer | None:
    """The float training layer of one op after the cut (None for ops the back drops)."""
    o = op.options
    if op.type in TRAINABLE:
        weights = _real(op.inputs[1])
        bias = _real(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] is not None else \
            np.zeros(weights.shape[-1 if op.type == "DEPTHWISE_CONV_2D" else 0], np.float32)
        if op.type == "FULLY_CONNECTED":
            return L.Dense(weights, bias, activation=_activation(op))
        if o.get("dilation_h_factor", 1) != 1 or o.get("dilation_w_factor", 1) != 1:
            raise UnsupportedError(f"learn: {op.where} is dilated; the back trains undilated convolutions")
        stride = (o["stride_h"], o["stride_w"])
        if op.type == "CONV_2D":
            return L.Conv2D(weights, bias, stride=stride, padding=o["padding"], activation=_activation(op))
        return L.DepthwiseConv2D(weights, bias, depth_multiplier=o["depth_multiplier"], stride=stride,
                                 padding=o["padding"], activation=_activation(op))
    if op.type == "AVERAGE_POOL_2D":
        if _activation(op) != "NONE":
            raise UnsupportedError(f"learn: {op.where} has a fused activation; the back's pooling has none")
        return L.AveragePool2D(filter=(o["filter_height"], o["filter_width"]), stride=(o["stride_h"], o["stride_w"]),
                               padding=o["padding"])
    if op.type in ("RESHAPE", "SQUEEZE"):
        return L.Reshape(tuple(op.outputs[0].shape[1:]))
    raise UnsupportedError(f"learn: {op.where} ({op.type}) is not trainable in the back (it trains "
                           f"{', '.join(TRAINABLE)}, AVERAGE_POOL_2D and RESHAPE); choose a later LR layer")


def front_graph(graph: Graph, cut: int) -> Graph:
    """ops[0..cut] of a copy of `graph`, the cut op's output its only output."""
    ops = copy.deepcopy(graph.ops[:cut + 1])  # deep: the copied ops share copied tensors, not the model's
    tensors, seen = [], set()
    for op in ops:
        for t in op.inputs + op.outputs:
            if t is not None and id(t) not in seen:
                seen.add(id(t))
                tensors.append(t)
    by_index = {t.index: t for t in tensors}
    inputs = [by_index[t.index] for t in graph.inputs]
    return Graph(tensors, ops, inputs, [ops[-1].outputs[0]], graph.description)


def with_classes(back: L.Sequential, classes: int) -> L.Sequential:
    """The back with its final Dense widened to `classes` outputs: the new classes' weights and biases
    start at zero, so the model's answers on its old classes are unchanged until it learns."""
    last = back.layers[-1]
    if not isinstance(last, L.Dense):
        raise UnsupportedError("learn: the back must end in a FULLY_CONNECTED to learn new classes")
    weights, bias = last.params["weights"], last.params["bias"]
    if classes < len(bias):
        raise InputError(f"learn: {classes} classes are fewer than the model's {len(bias)}")
    if classes > len(bias):
        grown_w = np.zeros((classes, weights.shape[1]), np.float32)
        grown_w[:len(bias)] = weights
        grown_b = np.zeros(classes, np.float32)
        grown_b[:len(bias)] = bias
        back.layers[-1] = L.Dense(grown_w, grown_b, activation=last.activation)
    return back


def split(model, lr_layer=None, classes: int | None = None) -> Split:
    """Cut `model` (an int8 classifier: path, bytes or Graph) at `lr_layer` (an op index, the name of the
    tensor it makes, or None for the default of lr_op_index), its head widened to `classes`."""
    graph = load_model(model)
    if len(graph.inputs) != 1:
        raise InputError(f"learn: the model has {len(graph.inputs)} inputs; the learner takes one")
    cut = lr_op_index(graph, lr_layer)
    _check_chain(graph, cut)
    lr = graph.ops[cut].outputs[0]
    if lr.dtype != np.int8 or lr.quant is None or lr.quant.per_channel:
        raise UnsupportedError(f"learn: the LR tensor '{lr.name}' is {np.dtype(lr.dtype).name}; latent replays "
                               "are per-tensor int8 (quantize the model to int8 first)")
    ops = list(graph.ops[cut + 1:])
    while ops and ops[-1].type in DROPPED_AT_THE_END:
        ops.pop()
    layers = [layer for layer in (back_layer(op) for op in ops) if layer is not None]
    if not any(layer.params for layer in layers):
        raise InputError(f"learn: nothing to train after op {cut}: the back has no "
                         f"{', '.join(TRAINABLE)}")
    back = L.Sequential(layers)
    logits = layers[-1].params["bias"].size if isinstance(layers[-1], L.Dense) else None
    back = with_classes(back, classes) if classes is not None else back
    return Split(graph, front_graph(graph, cut), lr, cut, back, classes or logits)
