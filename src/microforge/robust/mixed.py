"""Mixed int8 / int16x8: which layers to widen to int16 activations, chosen to reach an accuracy target at
the least cost on the chip.

1. Quantize the model all-int8 and all-int16x8, and measure each layer's cost in both on the emulated core:
   the instructions of its op in the profile of each (one inference each on qemu-m4).
2. Score what each layer breaks: the SQNR its output loses against the SQNR its inputs already had
   (robust.assess of the all-int8 model), that is, where quantization error is born rather than carried.
3. Widen layers in order of that loss per extra instruction, one at a time, until the model's quality
   (accuracy relative to float where there are labels, else top-1 agreement with float) on the
   evaluation data reaches the target. A widening is kept only if it raises the quality, or leaves it
   and cuts the output error by a tenth at least; otherwise it is undone. Every candidate is an ordinary TFLite model with QUANTIZE ops
   between the int8 and int16 parts, so TFLM runs it.
The result is measured on the emulated core (instructions per inference, the generated C's arena).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from microforge.errors import InputError
from microforge.graph.ir import Graph
from microforge.robust.assess import assess_graphs
from microforge.robust.quantizer import SAME_PARAMETERS, QuantizedModel, Scheme, quantize_graph

PROFILE_TARGET = "qemu-m4"


@dataclass
class MixedChoice:
    """The layers widened to int16 (float op indices), the quality reached and what it costs."""

    widened: list[int]
    quality: float
    target: float
    instructions: int | None
    arena_bytes: int
    steps: list[dict] = field(default_factory=list)


def _score(float_graph: Graph, model: QuantizedModel, x: np.ndarray, labels) -> tuple[float, float]:
    """(quality, output MAE): accuracy relative to float where there are labels, else top-1 agreement."""
    m = assess_graphs(float_graph, model.graph, x, labels).model
    return m["relative_accuracy"] if m["relative_accuracy"] is not None else m["top1_agreement"], m["output_mae"]


# A widening that leaves the quality where it was is kept only if it cuts the output error this much.
ERROR_CUT = 0.9


def _op_costs(model: QuantizedModel, target: str) -> dict[str, int]:
    """Instructions per op on the emulated core, by output tensor name (names survive quantization)."""
    from microforge.codegen.validate import validate_target
    from microforge.plan.validate import random_inputs

    rows = validate_target(model.graph, target, batches=random_inputs(model.graph, 1), profile=True)["profile"]
    return {model.graph.ops[r["index"]].outputs[0].name: r["instructions"] for r in rows}


def _born_error(float_graph: Graph, model: QuantizedModel, x: np.ndarray) -> dict[int, float]:
    """Float op index -> dB of SQNR its output loses against the worst of its inputs."""
    report = assess_graphs(float_graph, model.graph, x)
    sqnr = {layer["name"]: layer["sqnr_db"] for layer in report.layers if layer["sqnr_db"] is not None}
    loss = {}
    for op in float_graph.ops:
        out = sqnr.get(op.outputs[0].name)
        ins = [sqnr[t.name] for t in op.inputs if t is not None and t.name in sqnr]
        if out is not None:
            loss[op.index] = (min(ins) if ins else 60.0) - out
    return loss


def choose_mixed(float_graph: Graph, calibration: np.ndarray, evaluation: np.ndarray, labels=None,
                 target: float = 0.99, weights: str = "per-channel", method: str = "minmax",
                 io: str = "int8", profile_target: str = PROFILE_TARGET) -> QuantizedModel:
    """The mixed model reaching `target` quality with the fewest extra instructions (see module doc); its
    `mixed` attribute says which layers were widened, the quality reached and the measured cost."""
    if not 0 < target <= 1:
        raise InputError(f"target accuracy {target} must be in (0, 1]: a share of the float model's")

    def build(widened: list[int]) -> QuantizedModel:
        schemes = {i: Scheme.named("int16x8") for i in widened}
        return quantize_graph(float_graph, calibration, "int8", weights, method, io, layer_schemes=schemes)

    narrow = build([])
    wide = quantize_graph(float_graph, calibration, "int16x8", weights, method, io)
    cost8, cost16 = _op_costs(narrow, profile_target), _op_costs(wide, profile_target)
    loss = _born_error(float_graph, narrow, evaluation)
    candidates = [op.index for op in float_graph.ops if op.type not in SAME_PARAMETERS and op.index in loss]

    def extra(index: int) -> int:
        name = float_graph.ops[index].outputs[0].name
        return max(1, cost16.get(name, 0) - cost8.get(name, 0))

    order = sorted(candidates, key=lambda i: loss[i] / extra(i), reverse=True)
    widened, model = [], narrow
    quality, error = _score(float_graph, model, evaluation, labels)
    steps = [{"widened": [], "quality": quality, "output_mae": error, "kept": True}]
    for index in order:
        if quality >= target:
            break
        trial = build(widened + [index])
        trial_quality, trial_error = _score(float_graph, trial, evaluation, labels)
        kept = trial_quality > quality or (trial_quality == quality and trial_error <= ERROR_CUT * error)
        steps.append({"widened": widened + [index], "quality": trial_quality, "output_mae": trial_error,
                      "kept": kept})
        if kept:
            widened, model, quality, error = widened + [index], trial, trial_quality, trial_error
    from microforge.codegen.validate import validate_target

    measured = validate_target(model.graph, profile_target, count=1)
    model.mixed = MixedChoice(widened, quality, target, measured["instructions_per_inference"],
                              measured["arena_bytes"], steps)
    return model
