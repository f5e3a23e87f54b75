"""The Python entry points of robust deployment; the CLI prints what they return."""

from __future__ import annotations

from microforge.robust.assess import Assessment, assess_graphs, check_pair, parse_shifts
from microforge.robust.data import load_inputs, load_model
from microforge.robust.quantizer import QuantizedModel, quantize_graph


def quantize(model, calibration, scheme: str = "int8", weights: str = "per-channel", method: str = "minmax",
             io: str = "int8", target_accuracy: float = 0.99, evaluation=None) -> QuantizedModel:
    """Quantize a float model (Graph, .tflite path/bytes, Keras model or .keras path) with calibration
    data (array, .npy batch or runner folder of float32 .bin inputs). See robust.quantizer for the rules.

    scheme "mixed" widens layers to int16x8 until the model reaches `target_accuracy` of the float one
    (robust.mixed), measured on `evaluation` (data as for calibration; labelled runner folders give
    accuracy, anything else top-1 agreement with float), or on the calibration data when not given."""
    graph = load_model(model)
    if scheme != "mixed":
        return quantize_graph(graph, calibration, scheme=scheme, weights=weights, method=method, io=io)
    from microforge.robust.mixed import choose_mixed

    x, _ = load_inputs(calibration, graph.inputs[0])
    x_eval, labels = load_inputs(evaluation, graph.inputs[0]) if evaluation is not None else (x, None)
    return choose_mixed(graph, x, x_eval, labels, target_accuracy, weights, method, io)


def assess(float_model, quant_model, data, shifts=(), target: str = "reference", labels=None) -> Assessment:
    """Per-layer and model-level error of `quant_model` against `float_model` on real-valued `data` (array,
    .npy or runner folder, whose labels are used when `labels` is not given); `shifts` are Shift objects or
    strings such as 'noise:20dB', 'gain:2'. See robust.assess for every number."""
    float_graph, quant_graph = load_model(float_model), load_model(quant_model)
    check_pair(float_graph, quant_graph, target)
    x, folder_labels = load_inputs(data, float_graph.inputs[0])
    parsed = [s for s in shifts if not isinstance(s, str)] + parse_shifts([s for s in shifts if isinstance(s, str)])
    return assess_graphs(float_graph, quant_graph, x, folder_labels if labels is None else labels, parsed, target)
