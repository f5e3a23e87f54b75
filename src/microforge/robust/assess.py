"""What quantization did to a model, layer by layer, measured on the code that is deployed.

Both models run on the same real-valued inputs (the quantized one gets them quantized with its input
scale, as a device would). Every quantized tensor is matched with its float counterpart (by name, which
our quantizer keeps, else by position among ops of the same type) and compared after dequantization:

    mae, rmse, max_abs_error   of  deq(q) - f,   deq(q) = scale * (q - zero_point)
    rmse_over_scale            rmse / scale: 0.29 is pure rounding noise (a uniform error of one step);
                               for dynamic fixed point, rmse over the mean of each inference's 2^-e
    sqnr_db                    10 log10(sum f^2 / sum (deq(q) - f)^2); None where either sum is 0
    cosine                     <f, deq(q)> / (|f| |deq(q)|)
    saturation                 share of values clipped: q at the type's limit while f lies more than half
                               a step beyond what that limit represents (a ReLU output sitting at the
                               lowest code because it is 0 is not saturated)

On a target (host, qemu-m4, qemu-m7) the quantized tensors come from the generated C: the graph is built
with every matched tensor as an output, so what is compared is what the chip computes; on an emulated
core each layer's executed instructions come from the same run's profile. The same numbers are measured
again on shifted inputs (noise at an SNR, gain, offset), where numerical problems show.
"""

from __future__ import annotations

import math
import re
import tempfile
from dataclasses import dataclass, field

import numpy as np

from microforge.errors import InputError, TargetError
from microforge.graph.ir import Graph, Op, Tensor
from microforge.reference.dynamic import DynamicValue
from microforge.reference.interpreter import run_batched

TARGETS = ("reference", "host", "qemu-m4", "qemu-m7")
FLAG_RMSE_OVER_SCALE = 0.7
FLAG_SATURATION = 0.01
CHUNK = 64  # samples per pass: bounds the memory of keeping every tensor of both models
_SHIFT = re.compile(r"^(noise|gain|offset):([-+0-9.eE]+)(db)?$", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------------------
# shifts


@dataclass(frozen=True)
class Shift:
    """A change of the input distribution: additive white noise at an SNR (dB), a gain, or an offset."""

    kind: str
    value: float

    @property
    def label(self) -> str:
        return f"noise:{self.value:g}dB" if self.kind == "noise" else f"{self.kind}:{self.value:g}"

    def apply(self, x: np.ndarray, seed: int = 0) -> np.ndarray:
        if self.kind == "gain":
            return (x * self.value).astype(np.float32)
        if self.kind == "offset":
            return (x + self.value).astype(np.float32)
        # noise power set per sample from that sample's own mean power
        rng = np.random.default_rng(seed)
        power = np.mean(x.reshape(len(x), -1).astype(np.float64) ** 2, axis=1)
        sigma = np.sqrt(power / 10.0 ** (self.value / 10.0)).reshape((-1,) + (1,) * (x.ndim - 1))
        return (x + sigma * rng.standard_normal(x.shape)).astype(np.float32)


def parse_shifts(texts) -> list[Shift]:
    """'noise:20dB', 'gain:2', 'offset:-0.5'; several may come comma-separated in one string."""
    shifts = []
    for text in texts or ():
        for part in str(text).split(","):
            m = _SHIFT.match(part.strip())
            if not m:
                raise InputError(f"shift '{part.strip()}' is not noise:<SNR>dB, gain:<factor> or offset:<value>")
            kind, value, db = m.group(1).lower(), m.group(2), m.group(3)
            try:
                number = float(value)
            except ValueError:
                raise InputError(f"shift '{part.strip()}': '{value}' is not a number") from None
            if not math.isfinite(number) or (kind == "noise") != bool(db):
                raise InputError(f"shift '{part.strip()}': noise takes an SNR in dB (noise:20dB); "
                                 "gain and offset a plain number")
            shifts.append(Shift(kind, number))
    return shifts


# ---------------------------------------------------------------------------------------------------------
# matching quantized tensors with float ones


@dataclass
class Match:
    float_tensor: Tensor
    quant_tensor: Tensor
    op: Op | None  # the quantized op that writes quant_tensor; None for an integer model input


def _compute_ops(graph: Graph) -> list[Op]:
    """Ops that compute a layer (requantizing QUANTIZE / DEQUANTIZE are plumbing, not layers)."""
    return [op for op in graph.ops if op.type not in ("QUANTIZE", "DEQUANTIZE")]


def match_tensors(float_graph: Graph, quant_graph: Graph) -> list[Match]:
    """Pair every integer layer output of `quant_graph` with the float tensor it approximates; the first
    pair is the model input as quantized (where inputs clip when the data moves away from calibration)."""
    by_name = {}
    for op in float_graph.ops:
        by_name.setdefault(op.outputs[0].name, op.outputs[0])
    float_ops = _compute_ops(float_graph)
    matches, position = [], 0
    q_in = quant_graph.inputs[0]
    if q_in.dtype.kind == "i" and q_in.quant is not None:
        matches.append(Match(float_graph.inputs[0], q_in, None))
    for op in quant_graph.ops:
        if op.type == "QUANTIZE" and op.inputs[0] is q_in:
            matches.append(Match(float_graph.inputs[0], op.outputs[0], op))
    for op in _compute_ops(quant_graph):
        q = op.outputs[0]
        if q.quant is None or q.dtype.kind != "i":
            continue
        f = by_name.get(q.name)
        if f is None:  # by topology: the next float op of the same type
            while position < len(float_ops) and float_ops[position].type != op.type:
                position += 1
            if position == len(float_ops):
                continue
            f = float_ops[position].outputs[0]
        else:
            position = next((i for i, o in enumerate(float_ops) if o.outputs[0] is f), position)
        position += 1
        if f.shape == q.shape:
            matches.append(Match(f, q, op))
    return matches


# ---------------------------------------------------------------------------------------------------------
# metrics, accumulated over chunks


@dataclass
class _Sums:
    count: int = 0
    abs_error: float = 0.0
    sq_error: float = 0.0
    signal: float = 0.0
    quantized: float = 0.0
    dot: float = 0.0
    max_abs_error: float = 0.0
    saturated: int = 0

    scale_sum: float = 0.0  # of each value's scale: dynamic fixed point has one per inference

    def add(self, f: np.ndarray, q, t: Tensor) -> None:
        if isinstance(q, DynamicValue):  # real = q * 2^-e, e per inference
            scale = np.ldexp(1.0, -q.exponent).reshape((-1,) + (1,) * (q.values.ndim - 1))
            zero_point, q = 0, q.values
        else:
            scale, zero_point = t.scale, t.zero_point
        deq = scale * (q.astype(np.float64) - zero_point)
        f = f.astype(np.float64)
        err = deq - f
        info = np.iinfo(t.dtype)
        low, high = scale * (info.min - zero_point), scale * (info.max - zero_point)
        self.count += f.size
        self.abs_error += float(np.abs(err).sum())
        self.sq_error += float((err ** 2).sum())
        self.signal += float((f ** 2).sum())
        self.quantized += float((deq ** 2).sum())
        self.dot += float((f * deq).sum())
        self.max_abs_error = max(self.max_abs_error, float(np.abs(err).max(initial=0.0)))
        self.saturated += int(((q == info.max) & (f > high + scale / 2)).sum()
                              + ((q == info.min) & (f < low - scale / 2)).sum())
        self.scale_sum += float(np.broadcast_to(scale, q.shape).sum())

    def metrics(self) -> dict:
        rmse = math.sqrt(self.sq_error / self.count)
        norms = math.sqrt(self.signal * self.quantized)
        return {"mae": self.abs_error / self.count, "rmse": rmse, "rmse_over_scale": rmse * self.count / self.scale_sum,
                "sqnr_db": (10 * math.log10(self.signal / self.sq_error) if self.sq_error > 0 and self.signal > 0
                            else None),  # undefined: no error at all, or an all-zero float tensor
                "cosine": self.dot / norms if norms > 0 else (1.0 if self.sq_error == 0 else 0.0),
                "max_abs_error": self.max_abs_error, "saturation": self.saturated / self.count}


def suggestion(layer: dict, op: Op | None) -> str | None:
    """A fix for a flagged layer: clipping wants another range; a coarse grid wants finer weights or int16."""
    if layer["saturation"] > FLAG_SATURATION:
        return "values clip: calibrate on more representative data, or a wider (minmax) range"
    if op is None:
        return None  # the input's grid is the calibration's choice; only its clipping is a flag
    if layer["rmse_over_scale"] > FLAG_RMSE_OVER_SCALE:
        weights = op.inputs[1] if op.type in ("CONV_2D", "DEPTHWISE_CONV_2D") and len(op.inputs) > 1 else None
        if weights is not None and weights.quant is not None and not weights.quant.per_channel:
            return "error well above rounding: per-channel weights, or int16x8 for this layer"
        if op.outputs[0].dtype == np.int8:
            return "error well above rounding: int16x8 for this layer, or a percentile range for its input"
        return "error well above rounding even at int16: check the input's range (percentile or mse)"
    return None


# ---------------------------------------------------------------------------------------------------------
# running


def quantize_inputs(graph: Graph, x: np.ndarray) -> np.ndarray:
    """Real-valued inputs as the quantized model's input tensor takes them (round half away, clamp)."""
    t = graph.inputs[0]
    if t.dtype == np.float32:
        return x.astype(np.float32)
    scaled = x.astype(np.float32) / np.float32(t.scale)
    q = np.copysign(np.floor(np.abs(scaled.astype(np.float64)) + 0.5), scaled) + t.zero_point
    info = np.iinfo(t.dtype)
    return np.clip(q, info.min, info.max).astype(t.dtype)


def probe_graph(graph: Graph, tensors: list[Tensor]) -> Graph:
    """The same ops with `tensors` as extra outputs, so generated C hands every layer's output back."""
    extra = [t for t in tensors if all(t is not o for o in graph.outputs)]
    return Graph(graph.tensors, graph.ops, graph.inputs, list(graph.outputs) + extra, graph.description,
                 graph.metadata)


class _Runner:
    """Runs the quantized probe graph: the reference interpreter, or the generated C on a target. On an
    emulated core, each op's instructions come from profiling the deployed graph itself (the probe keeps
    every tensor alive, so its plan and some kernel paths differ)."""

    def __init__(self, probe: Graph, deployed: Graph, target: str, workdir: str):
        self.graph, self.deployed, self.target, self.instructions = probe, deployed, target, None
        if target == "host":
            from microforge.codegen.host import compile_host

            self.host = compile_host(probe, out_dir=workdir)
        elif target.startswith("qemu-"):
            from microforge.codegen.emit import generate

            core = {"qemu-m4": "cortex-m4", "qemu-m7": "cortex-m7"}[target]
            self.generated = generate(probe, workdir, target=core)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        if self.target == "reference":
            return run_batched(self.graph, [x])
        if self.target == "host":
            return self.host.run_batched([x])
        from microforge.codegen.targets.qemu import run_on_qemu
        from microforge.codegen.validate import _split_outputs, validate_target

        if self.instructions is None:
            profile = validate_target(self.deployed, self.target, batches=[x[:1]], profile=True)["profile"]
            self.instructions = {row["index"]: row["instructions"] for row in profile}
        result = run_on_qemu(self.generated.directory, self.target, [s.tobytes() for s in x])
        return _split_outputs(self.graph, result.outputs)


def _float_values(graph: Graph, x: np.ndarray, wanted: set[int]) -> dict[int, np.ndarray]:
    values = {}

    def keep(t: Tensor, v: np.ndarray) -> None:
        if t.index in wanted:
            values[t.index] = v

    run_batched(graph, [x], observe=keep)
    return values


def _model_metrics(f_out: np.ndarray, q_out: np.ndarray, out_t: Tensor, labels) -> dict:
    deq = q_out.astype(np.float64) if out_t.quant is None else out_t.scale * (q_out.astype(np.float64) - out_t.zero_point)
    f = f_out.astype(np.float64).reshape(len(f_out), -1)
    deq = deq.reshape(len(deq), -1)
    result = {"top1_agreement": None, "relative_accuracy": None, "float_accuracy": None,
              "quantized_accuracy": None, "output_mae": float(np.mean(np.abs(deq - f)))}
    if f.shape[1] > 1:
        result["top1_agreement"] = float(np.mean(f.argmax(1) == deq.argmax(1)))
        if labels is not None:
            float_acc, quant_acc = float(np.mean(f.argmax(1) == labels)), float(np.mean(deq.argmax(1) == labels))
            result.update(float_accuracy=float_acc, quantized_accuracy=quant_acc,
                          relative_accuracy=quant_acc / float_acc if float_acc > 0 else None)
    return result


@dataclass
class Assessment:
    """Per-layer and model-level numbers, on the clean inputs and on each shift."""

    target: str
    samples: int
    layers: list[dict]
    model: dict
    shifted: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"target": self.target, "samples": self.samples, "layers": self.layers, "model": self.model,
                "shifted": self.shifted}

    @property
    def flagged(self) -> list[dict]:
        return [layer for layer in self.layers if layer["flag"]]


def _measure(float_graph: Graph, quant_graph: Graph, matches: list[Match], runner: _Runner, x: np.ndarray,
             labels) -> tuple[list[dict], dict]:
    sums = [_Sums() for _ in matches]
    wanted = {m.float_tensor.index for m in matches} | {t.index for t in float_graph.outputs}
    f_outs, q_outs = [], []
    for start in range(0, len(x), CHUNK):
        chunk = x[start:start + CHUNK]
        float_values = _float_values(float_graph, chunk, wanted)
        quantized = quantize_inputs(quant_graph, chunk)
        quant_values = runner.run(quantized)
        by_tensor = {t.index: v for t, v in zip(runner.graph.outputs, quant_values)}
        by_tensor[quant_graph.inputs[0].index] = quantized
        for s, m in zip(sums, matches):
            s.add(float_values[m.float_tensor.index], by_tensor[m.quant_tensor.index], m.quant_tensor)
        f_outs.append(float_values[float_graph.outputs[0].index])
        q_outs.append(by_tensor[quant_graph.outputs[0].index])
    layers = []
    for s, m in zip(sums, matches):
        index = None if m.op is None else m.op.index
        layer = {"name": m.quant_tensor.name, "op": "input" if m.op is None else m.op.type, "index": index,
                 **s.metrics(),
                 "instructions": None if runner.instructions is None else runner.instructions.get(index)}
        layer["flag"] = suggestion(layer, m.op)
        layers.append(layer)
    model = _model_metrics(np.concatenate(f_outs), np.concatenate(q_outs), quant_graph.outputs[0], labels)
    return layers, model


def check_pair(float_graph: Graph, quant_graph: Graph, target: str) -> None:
    """assess compares a float model with one input and output to a quantized model of the same input."""
    if target not in TARGETS:
        raise TargetError(f"unknown target '{target}'; choose one of {', '.join(TARGETS)}")
    for g, what in ((float_graph, "float"), (quant_graph, "quantized")):
        if len(g.inputs) != 1 or len(g.outputs) != 1:
            raise InputError(f"assess compares models with one input and one output; the {what} model has "
                             f"{len(g.inputs)} and {len(g.outputs)}")
    if float_graph.inputs[0].dtype != np.float32:
        raise InputError(f"the first model must be the float one; its input '{float_graph.inputs[0].name}' is "
                         f"{float_graph.inputs[0].dtype.name}")
    if float_graph.inputs[0].shape != quant_graph.inputs[0].shape:
        raise InputError(f"the models' inputs differ: {list(float_graph.inputs[0].shape)} (float) vs "
                         f"{list(quant_graph.inputs[0].shape)} (quantized)")


def assess_graphs(float_graph: Graph, quant_graph: Graph, x: np.ndarray, labels=None, shifts=(),
                  target: str = "reference") -> Assessment:
    """Compare `quant_graph` with `float_graph` on real-valued inputs x (N, *float input shape)."""
    check_pair(float_graph, quant_graph, target)
    matches = match_tensors(float_graph, quant_graph)
    if not matches:
        raise InputError("no quantized tensor of the second model matches a tensor of the float model")
    probe = probe_graph(quant_graph, [m.quant_tensor for m in matches if m.op is not None])
    with tempfile.TemporaryDirectory(prefix="microforge-assess-") as workdir:
        runner = _Runner(probe, quant_graph, target, workdir)
        layers, model = _measure(float_graph, quant_graph, matches, runner, x, labels)
        shifted = []
        for shift in shifts:
            s_layers, s_model = _measure(float_graph, quant_graph, matches, runner, shift.apply(x), labels)
            shifted.append({"shift": shift.label, "layers": s_layers, "model": s_model})
    return Assessment(target, len(x), layers, model, shifted)
