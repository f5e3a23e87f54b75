"""Our post-training quantizer: a float32 Graph and calibration inputs -> an integer Graph TFLM runs.

Schemes:
- `int8`: TFLite's int8 spec. Weights symmetric int8, per output channel for CONV_2D,
  DEPTHWISE_CONV_2D and FULLY_CONNECTED as TFLite's converter writes them today (per tensor with
  `weights="per-tensor"`), activations asymmetric int8 per tensor, bias int32 at input_scale * weight_scale.
- `int16x8`: the same with symmetric int16 activations and int64 bias (TFLite's 16x8 mode).
- `dynamic`: microforge's per-layer dynamic fixed point (reference/dynamic.py has the rules): weights int8
  with one power-of-two scale per layer, biases int32 at a power of two, every activation's exponent
  chosen at run time; float32 input and output. Its ops are marked `dynamic_fixed_point` (written as
  CUSTOM ops, so TFLM refuses the model by name). Activation scales in the file are the calibration's
  power of two, for information: the kernels use the exponents of each inference.
Batch norm and activations arrive folded and fused: a float .tflite from TFLite's converter already has
them in its convolutions (Keras models go through the converter first, see frontend.keras).

Range rules the kernels impose, applied here so the output is a legal TFLite model:
- ops that move values without arithmetic (RESHAPE, SQUEEZE, EXPAND_DIMS, MAX_POOL_2D, AVERAGE_POOL_2D,
  PAD, PADV2) give their output the input's parameters;
- SOFTMAX and LOGISTIC outputs are fixed: 1/256 and -128 (int8), 1/32768 and 0 (int16);
- CONCATENATION copies bytes, so each input whose parameters differ from the output's is requantized
  by an inserted QUANTIZE op first.
Tensor names are kept, so every quantized tensor can be matched with its float original (robust.assess).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from microforge.errors import InputError, ModelError, UnsupportedError
from microforge.frontend.schema import REVERSE_OPTION
from microforge.frontend.writer import write_tflite
from microforge.graph.ir import Graph, Op, Quantization, Tensor
from microforge.reference.dynamic import exponent_for
from microforge.reference.interpreter import check_supported, run
from microforge.robust.calibrate import METHODS, RangeObserver, affine_parameters

SCHEMES = ("int8", "int16x8", "dynamic")
WEIGHT_MODES = ("per-channel", "per-tensor")
IO_TYPES = ("int8", "float")
METADATA_KEY = "microforge_quantization"

WEIGHT_OPS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}  # op -> weights' channel axis
SAME_PARAMETERS = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "MAX_POOL_2D", "AVERAGE_POOL_2D", "PAD", "PADV2"}
FIXED_OUTPUT = {"SOFTMAX", "LOGISTIC"}
QUANTIZABLE = set(WEIGHT_OPS) | SAME_PARAMETERS | FIXED_OUTPUT | {
    "ADD", "MUL", "CONCATENATION", "MEAN", "HARD_SWISH", "RELU", "RELU6"}
DYNAMIC_QUANTIZABLE = set(WEIGHT_OPS) | {"ADD", "AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN", "PAD", "RESHAPE",
                                         "SQUEEZE", "EXPAND_DIMS", "SOFTMAX"}


@dataclass(frozen=True)
class Scheme:
    """What one tensor kind becomes: activation dtype and bits, whether symmetric, bias dtype."""

    name: str
    activation: np.dtype
    bits: int
    symmetric: bool
    bias: np.dtype
    dynamic: bool = False

    @staticmethod
    def named(name: str) -> "Scheme":
        if name == "int8":
            return Scheme(name, np.dtype(np.int8), 8, False, np.dtype(np.int32))
        if name == "int16x8":
            return Scheme(name, np.dtype(np.int16), 16, True, np.dtype(np.int64))
        if name == "dynamic":
            return Scheme(name, np.dtype(np.int8), 8, True, np.dtype(np.int32), dynamic=True)
        raise InputError(f"scheme '{name}' is not one of {', '.join(SCHEMES)}")

    def fixed_output(self) -> tuple[float, int]:
        """SOFTMAX / LOGISTIC output parameters TFLM requires."""
        return (1.0 / 256, -128) if self.bits == 8 else (1.0 / 32768, 0)


@dataclass
class QuantizedModel:
    """A quantized graph and how it was made. `ranges`: calibrated real interval per activation name."""

    graph: Graph
    scheme: str
    weights: str
    method: str
    calibration_samples: int
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    mixed: object = None  # for scheme "mixed": the robust.mixed.MixedChoice that made it

    def to_tflite(self) -> bytes:
        return write_tflite(self.graph)

    def save(self, path) -> Path:
        path = Path(path)
        path.write_bytes(self.to_tflite())
        return path


# ---------------------------------------------------------------------------------------------------------
# checks


def check_float_model(graph: Graph, scheme: Scheme) -> None:
    """A float model: float32 activations everywhere and only ops we can quantize (all listed at once)."""
    problems = [f"input '{t.name}' is {t.dtype.name}" for t in graph.inputs if t.dtype != np.float32]
    integer_ops = [op for op in graph.ops if op.outputs and op.outputs[0].dtype != np.float32]
    if integer_ops:
        problems.append(f"{len(integer_ops)} of {len(graph.ops)} ops write integer tensors ("
                        + ", ".join(f"{op.where} {op.outputs[0].dtype.name}" for op in integer_ops[:3])
                        + (", ..." if len(integer_ops) > 3 else "") + ")")
    if problems:
        raise ModelError("the model is already quantized (quantize takes a float32 model): " + "; ".join(problems))
    allowed, variant = (DYNAMIC_QUANTIZABLE, " in dynamic fixed point") if scheme.dynamic else (QUANTIZABLE, "")
    unsupported = [f"{op.where}: cannot be quantized{variant} yet" for op in graph.ops if op.type not in allowed]
    if unsupported:
        raise UnsupportedError("the model uses ops microforge cannot quantize yet:\n  " + "\n  ".join(unsupported))
    check_supported(graph)


def calibration_batch(graph: Graph, data) -> np.ndarray:
    """The calibration inputs as a float32 (N, *shape) batch for the graph's only input."""
    if len(graph.inputs) != 1:
        raise UnsupportedError(f"quantize handles models with one input; this one has {len(graph.inputs)}")
    from microforge.robust.data import load_inputs

    return load_inputs(data, graph.inputs[0])[0]


def float_values(t: Tensor) -> np.ndarray:
    """A constant's real values: float32 data, or int8 (hybrid) weights dequantized."""
    if t.dtype == np.float32:
        return t.data.astype(np.float64)
    if t.dtype == np.int8 and t.quant is not None:
        q = t.quant
        shape = [1] * t.data.ndim
        if q.per_channel:
            shape[q.axis] = q.scale.size
        return q.scale.astype(np.float64).reshape(shape) * (t.data - q.zero_point.reshape(shape))
    return t.data  # integer shape / axis / padding operands stay as they are


# ---------------------------------------------------------------------------------------------------------
# the transformation


class _Quantizer:
    """Builds the quantized graph op by op. `self.scheme` is the scheme of the op being built: the model's
    own, or per layer (`layer_schemes`, float op index -> Scheme) for mixed int8 / int16x8 models, where a
    tensor read in another type than it was written in goes through a QUANTIZE op."""

    def __init__(self, graph: Graph, observer: RangeObserver, scheme: Scheme, weights: str, method: str, io: str,
                 layer_schemes: dict[int, Scheme] | None = None,
                 fixed_weights: dict[int, tuple[np.ndarray, np.ndarray]] | None = None):
        self.graph, self.observer, self.scheme, self.base = graph, observer, scheme, scheme
        self.per_channel, self.method, self.io = weights == "per-channel", method, io
        self.layer_schemes = layer_schemes or {}
        self.fixed_weights = fixed_weights or {}
        self.tensors: list[Tensor] = []
        self.ops: list[Op] = []
        self.mapped: dict[int, Tensor] = {}  # float tensor index -> its quantized tensor
        self.converted: dict[tuple[int, str], Tensor] = {}  # (float tensor index, dtype) -> its QUANTIZE'd copy
        self.ranges: dict[str, tuple[float, float]] = {}
        self.depthwise_seen = 0  # dynamic: the depthwise layers so far (see options)

    def new_tensor(self, name, shape, dtype, quant=None, data=None) -> Tensor:
        t = Tensor(name, shape, dtype, quant, data)
        self.tensors.append(t)
        return t

    def activation_parameters(self, t: Tensor) -> tuple[float, int]:
        s = self.scheme
        low, high = self.observer.range(t, self.method, s.bits, s.symmetric)
        self.ranges[t.name] = (low, high)
        if s.dynamic:  # the calibration's power of two, for information (see module doc)
            return power_of_two(max(-low, high)), 0
        return affine_parameters(low, high, s.bits, s.symmetric)

    def activation(self, t: Tensor, scale: float, zero_point: int) -> Tensor:
        q = self.new_tensor(t.name, t.shape, self.scheme.activation, Quantization([scale], [zero_point]))
        self.mapped[t.index] = q
        return q

    def weights(self, op: Op, t: Tensor) -> Tensor:
        """Symmetric int8 weights, per channel along the op's output axis or per tensor."""
        w = float_values(t)
        axis = WEIGHT_OPS[op.type]
        if op.index in self.fixed_weights:  # chosen by the caller (the members of a weight-shared family)
            q, scale = self.fixed_weights[op.index]
            return self.new_tensor(t.name, t.shape, np.int8, Quantization(scale, np.zeros(scale.size), axis),
                                   np.asarray(q, np.int8).reshape(t.shape))
        if self.scheme.dynamic:
            scale = power_of_two(np.abs(w).max())
            q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
            return self.new_tensor(t.name, t.shape, np.int8, Quantization([scale], [0]), q)
        if self.per_channel:
            bound = np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).max(axis=1)
        else:
            bound = np.array([np.abs(w).max()])
        scale = np.where(bound > 0, bound / 127.0, 0.0)
        scale = np.where(scale > 0, scale, scale.max() if scale.max() > 0 else 1.0 / 127).astype(np.float32)
        shape = [1] * w.ndim
        if self.per_channel:
            shape[axis] = scale.size
        q = np.clip(np.round(w / scale.astype(np.float64).reshape(shape)), -127, 127).astype(np.int8)
        return self.new_tensor(t.name, t.shape, np.int8, Quantization(scale, np.zeros(scale.size), axis), q)

    def bias(self, t: Tensor, input_scale: float, weight_scale: np.ndarray) -> Tensor:
        scale = input_scale * weight_scale.astype(np.float64)
        if self.scheme.dynamic:  # its own power of two: the kernel aligns it to each inference's exponent
            scale = np.array([power_of_two(np.abs(float_values(t)).max(), bits=31)])
        bound = float(min(np.iinfo(self.scheme.bias).max, 2 ** 62))  # int64's limit is no exact float
        q = np.clip(np.round(float_values(t) / scale), -bound, bound).astype(self.scheme.bias)
        return self.new_tensor(t.name, t.shape, self.scheme.bias, Quantization(scale.astype(np.float32),
                                                                               np.zeros(scale.size)), q)

    def constant_operand(self, t: Tensor) -> Tensor:
        """A float constant read like an activation (an ADD or MUL operand): quantized per tensor."""
        values = float_values(t)
        scale, zero_point = affine_parameters(min(values.min(), 0.0), max(values.max(), 0.0),
                                              self.scheme.bits, self.scheme.symmetric)
        info = np.iinfo(self.scheme.activation)
        q = np.clip(np.round(values / scale) + zero_point, info.min, info.max).astype(self.scheme.activation)
        return self.new_tensor(t.name, t.shape, self.scheme.activation, Quantization([scale], [zero_point]), q)

    def requantized(self, source: Tensor, quant: Quantization) -> Tensor:
        """`source` moved to `quant` by a QUANTIZE op, for an op that needs its inputs on one scale."""
        out = self.new_tensor(f"{source.name}/requantized", source.shape, source.dtype,
                              Quantization(quant.scale, quant.zero_point))
        self.ops.append(Op("QUANTIZE", [source], [out]))
        return out

    def in_scheme(self, t: Tensor) -> Tensor:
        """The quantized activation `t` in the current scheme's type (a QUANTIZE op converts it once)."""
        q = self.mapped[t.index]
        key = (t.index, self.scheme.activation.name)
        if q.dtype == self.scheme.activation or self.scheme.dynamic:
            return q
        if key not in self.converted:
            scale, zero_point = self.activation_parameters(t)
            out = self.new_tensor(f"{t.name}/as_{self.scheme.activation.name}", t.shape, self.scheme.activation,
                                  Quantization([scale], [zero_point]))
            self.ops.append(Op("QUANTIZE", [q], [out]))
            self.converted[key] = out
        return self.converted[key]

    def scheme_of(self, op: Op) -> Scheme:
        """Ops that only move values keep their input's type; the others take their layer's scheme."""
        if op.type in SAME_PARAMETERS and not self.base.dynamic:
            dtype = self.mapped[op.inputs[0].index].dtype
            return Scheme.named("int16x8" if dtype == np.int16 else "int8")
        return self.layer_schemes.get(op.index, self.base)

    def input_of(self, op: Op, position: int, t: Tensor | None) -> Tensor | None:
        if t is None:
            return None
        if not t.is_constant:
            return self.in_scheme(t)
        if op.type in WEIGHT_OPS and position == 1:
            return self.weights(op, t)
        if (op.type in WEIGHT_OPS or op.type == "PADV2") and position == 2:
            return None  # the bias needs the weights' scales, PADV2's fill value the input's: made in `op`
        if t.dtype == np.float32:
            return self.constant_operand(t)
        return self.new_tensor(t.name, t.shape, t.dtype, t.quant, t.data)

    def output_parameters(self, op: Op, inputs: list[Tensor | None]) -> tuple[float, int]:
        if op.type in SAME_PARAMETERS:
            return inputs[0].scale, inputs[0].zero_point
        if op.type in FIXED_OUTPUT:
            return self.scheme.fixed_output()
        return self.activation_parameters(op.outputs[0])

    def op(self, op: Op) -> None:
        self.scheme = self.scheme_of(op)
        inputs = [self.input_of(op, i, t) for i, t in enumerate(op.inputs)]
        if op.type in WEIGHT_OPS and len(op.inputs) > 2 and op.inputs[2] is not None:
            inputs[2] = self.bias(op.inputs[2], inputs[0].scale, inputs[1].quant.scale)
        if op.type == "PADV2":
            inputs[2] = self.pad_value(op, inputs[0])
        scale, zero_point = self.output_parameters(op, inputs)
        out = self.activation(op.outputs[0], scale, zero_point)
        if op.type == "CONCATENATION":
            inputs = [x if x.quant.equals(out.quant) else self.requantized(x, out.quant) for x in inputs]
        self.ops.append(Op(op.type, inputs, [out], self.options(op.type, op.options), version=op.version))

    def options(self, op_type: str, options: dict) -> dict:
        if not self.scheme.dynamic:
            return dict(options)
        options = dict(options, dynamic_fixed_point=True)
        if op_type == "DEPTHWISE_CONV_2D":
            # Every other depthwise layer visits its segments in reverse, so that its C runs backward and
            # the plan can alternate the direction in which a chain of layers moves through the arena,
            # as it does for int8 (a forward-only chain creeps down by a few rows at every depthwise).
            if self.depthwise_seen % 2 == 0:
                options[REVERSE_OPTION] = True
            self.depthwise_seen += 1
        return options

    def pad_value(self, op: Op, x: Tensor) -> Tensor:
        """PADV2's fill value on the input's grid (it must share the input's parameters)."""
        value = float(np.asarray(float_values(op.inputs[2])).reshape(-1)[0])
        info = np.iinfo(self.scheme.activation)
        q = np.clip(round(value / x.scale) + x.zero_point, info.min, info.max)
        return self.new_tensor(op.inputs[2].name, op.inputs[2].shape, self.scheme.activation,
                               Quantization([x.scale], [x.zero_point]),
                               np.full(op.inputs[2].shape, q, dtype=self.scheme.activation))

    def producer_is_dynamic(self, t: Tensor) -> bool:
        """Every activation of a dynamic model is dynamic but SOFTMAX's, whose scale TFLM fixes."""
        return not any(op.type == "SOFTMAX" and op.outputs[0] is t for op in self.ops)

    def build(self) -> Graph:
        graph_inputs = []
        for t in self.graph.inputs:
            if self.io == "float":
                # The model quantizes its float input itself: to int16 when a layer reading it is widened
                # (mixed), so that the layer sees int16 precision; int8 readers get it converted.
                readers = [self.layer_schemes.get(op.index, self.base) for op in self.graph.ops
                           if any(i is not None and i.index == t.index for i in op.inputs)]
                self.scheme = max(readers + [self.base], key=lambda s: s.bits)
            scale, zero_point = self.activation_parameters(t)
            if self.io == "float":
                float_in = self.new_tensor(t.name, t.shape, np.float32)
                q = self.new_tensor(f"{t.name}/quantized", t.shape, self.scheme.activation,
                                    Quantization([scale], [zero_point]))
                self.ops.append(Op("QUANTIZE", [float_in], [q], self.options("QUANTIZE", {})))
                self.mapped[t.index] = q
                graph_inputs.append(float_in)
            else:
                graph_inputs.append(self.activation(t, scale, zero_point))
        for op in self.graph.ops:
            self.op(op)
        self.scheme = self.base
        graph_outputs = []
        for t in self.graph.outputs:
            q = self.in_scheme(t)
            if self.io == "float":
                q.name = f"{t.name}/quantized"
                float_out = self.new_tensor(t.name, t.shape, np.float32)
                dynamic = self.scheme.dynamic and self.producer_is_dynamic(q)
                self.ops.append(Op("DEQUANTIZE", [q], [float_out], {"dynamic_fixed_point": True} if dynamic else {}))
                q = float_out
            graph_outputs.append(q)
        return Graph(self.tensors, self.ops, graph_inputs, graph_outputs, self.graph.description,
                     dict(self.graph.metadata))


def power_of_two(magnitude: float, bits: int = 8) -> float:
    """2^-e for the finest e at which `magnitude` still rounds into the signed `bits`-bit range."""
    return float(np.ldexp(1.0, -int(exponent_for(magnitude, bits))))


def calibrate(graph: Graph, batch: np.ndarray) -> RangeObserver:
    """Run the float graph over the calibration batch, observing every tensor's values."""
    observer = RangeObserver()
    run(graph, batch, observe=observer)
    return observer


def quantize_graph(graph: Graph, calibration, scheme: str = "int8", weights: str = "per-channel",
                   method: str = "minmax", io: str = "int8",
                   layer_schemes: dict[int, Scheme] | None = None,
                   fixed_weights: dict[int, tuple[np.ndarray, np.ndarray]] | None = None) -> QuantizedModel:
    """Quantize a float32 Graph with calibration inputs (float32, (N, *input shape)). See module doc.
    `fixed_weights`: op index -> (int8 weights, scales) to use for that op instead of quantizing its float
    weights (dynamic.family: every width of a family reads slices of the widest one's bytes)."""
    chosen = Scheme.named(scheme)
    for value, allowed, what in ((weights, WEIGHT_MODES, "weights"), (method, METHODS, "method"),
                                 (io, IO_TYPES, "io")):
        if value not in allowed:
            raise InputError(f"{what} '{value}' is not one of {', '.join(allowed)}")
    check_float_model(graph, chosen)
    batch = calibration_batch(graph, calibration)
    observer = calibrate(graph, batch)
    quantizer = _Quantizer(graph, observer, chosen, weights, method, "float" if chosen.dynamic else io, layer_schemes,
                           fixed_weights)
    quantized = quantizer.build()
    quantized.metadata[METADATA_KEY] = json.dumps(
        {"scheme": scheme, "weights": weights, "method": method, "calibration_samples": len(batch)}).encode()
    check_supported(quantized)
    return QuantizedModel(quantized, scheme, weights, method, len(batch), quantizer.ranges)
