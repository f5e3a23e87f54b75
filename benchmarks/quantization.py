"""Our post-training quantizer beside TensorFlow's converter, on the same float models and calibration data.

For each float model: TFLite's converter (full-integer int8 PTQ with the calibration batch as its
representative dataset) and microforge's quantizer (int8 with per-channel or per-tensor weights, ranges by
minmax, percentile or mse) make int8 models; each runs on the evaluation inputs through our interpreter
(bit-exact with TFLM) and is compared with the float model: top-1 agreement, accuracy relative to float
where there are labels, output MAE (on dequantized outputs), and the mean SQNR of its layers (robust.assess).
Beside them: microforge's int16x8 and dynamic fixed point, and the mixed int8 / int16x8 scheme
(robust.quantize(scheme="mixed"), target 99% of float), which profiles int8 and int16x8 on qemu-m4 and widens
layers from int8 to int16x8, in order of the SQNR each loses per extra instruction, until the target is reached.

What the mixed search saw: it calibrates on 75% of the calibration inputs and measures its quality on the
other 25% (a seeded, held-out split; never the evaluation inputs, which would let the search fit them). Its
quality there is top-1 agreement with the float model (robust.quantize takes labels only from runner
folders; this script passes arrays). The table's mixed row, like every other, is measured on the
evaluation inputs, with labels where there are labels. The mixed model has float input and output (its
edges' QUANTIZE / DEQUANTIZE run in the model, as on the chip); the other microforge rows have int8 input
and output, but dynamic (float).

Cost on qemu-m4: instructions per inference and RAM of int8, int16x8, mixed and dynamic, all with float
input and output, checked bit-exact against our interpreter; and for mixed the issue's target: quality
>= 99% of float (on the evaluation inputs) at <= +10% instructions and <= +15% RAM over int8.
A scheme that cannot quantize or compile a model is reported with the reason, not left out.

The converter needs a TensorFlow model, and the MLPerf Tiny float models ship only as .tflite, so each is
rebuilt as a Keras model with the same weights (rebuild_keras; checked against our float interpreter).
The MobileNetV2 is a Keras model already: the converter reads the trained .keras file.

Models and data (labelled where we have labels; for the MLPerf Tiny tasks agreement with float is the measure):
- har: our 1-D CNN on BasicMotions (scripts/train_har.py; aeon's copy of the UEA data): calibration on
  the 40 training recordings, evaluation on the 40 test recordings, with labels.
- fsdd: our spoken-digit DS-CNN (scripts/train_fsdd_kws.py), its float model: calibration on FSDD
  recordings 5-49, evaluation on recordings 0-4 with their digits.
- kws: MLPerf Tiny DS-CNN (hybrid float model: int8 weights, dequantized); inputs are Free Spoken Digit
  Dataset clips through the MLPerf KWS MFCC pipeline (calibration: recordings 5-49, evaluation 0-4).
- vww, ic: MobileNetV1 96x96 and ResNet-8 32x32; inputs are synthetic smooth random images in each
  model's input range (there is no image data here).
- ad: the anomaly-detection autoencoder; inputs are 5-frame log-mel windows of the one shipped clip (a
  seeded half calibrates, the other half evaluates). Its quality has no class to agree on: the mixed
  search's top-1 agreement of reconstructions is a weak proxy, and the target check says so.
- mobilenetv2: tf.keras.applications.MobileNetV2 (alpha 0.35, 32x32x3) trained on scikit-learn's digits
  (scripts/train_mobilenetv2.py): calibration from its training split, evaluation on its test split, with
  labels.
--calibration and --eval cap the samples per model (a seeded pick; har has 40 of each at most).

    .venv/bin/python benchmarks/quantization.py [--eval 200] [--calibration 100] [--models har,mobilenetv2]

Writes benchmarks/results/quantization.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
import microforge  # noqa: E402  (first: OR-Tools before TensorFlow)
from microforge import robust  # noqa: E402
from microforge.bench.dataset import fsdd_test_files  # noqa: E402
from microforge.bench.features import ad_windows, kws_features_from_wav, read_ad_hist  # noqa: E402
from microforge.errors import MicroforgeError, UnsupportedError  # noqa: E402
from microforge.frontend.keras import keras_to_int8_tflite  # noqa: E402
from microforge.robust.quantizer import float_values  # noqa: E402

SHARED = ROOT.parent / "shared"
MLPERF = SHARED / "models" / "mlperf_tiny"
FSDD = SHARED / "data" / "fsdd" / "recordings"
CACHE = ROOT / "benchmarks" / ".cache"
RESULTS = ROOT / "benchmarks" / "results"
FLOAT_MODELS = {
    "har": ROOT / "models" / "har" / "har_cnn_float.tflite",
    "fsdd": ROOT / "models" / "fsdd" / "fsdd_dscnn_float.tflite",
    "kws": MLPERF / "kws_ref_model_float32.tflite",
    "vww": MLPERF / "vww_96_float.tflite",
    "ic": MLPERF / "ic_resnet8_pretrainedResnet_float.tflite",
    "ad": MLPERF / "ad01_fp32.tflite",
    "mobilenetv2": ROOT / "models" / "mobilenetv2" / "mobilenetv2_digits_float.tflite",
}
KERAS_MODELS = {"mobilenetv2": ROOT / "models" / "mobilenetv2" / "mobilenetv2_digits.keras"}  # the converter's input
MIXED_TARGET = 0.99  # share of the float model's quality
SEARCH_FRACTION = 0.25  # of the calibration inputs, held out for the mixed search's quality
MAX_INSTRUCTIONS, MAX_RAM = 1.10, 1.15  # the cost limits for mixed, relative to int8


# ---------------------------------------------------------------------------------------------------------
# data


def fsdd_features(indices, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """MLPerf KWS MFCC features (N, 49, 10, 1) of up to `limit` FSDD clips (a seeded pick), and their digits."""
    cache = CACHE / f"fsdd_kws_{min(indices)}_{max(indices)}_{limit}_{seed}.npz"
    if cache.exists():
        saved = np.load(cache)
        return saved["x"], saved["y"]
    files = fsdd_test_files(FSDD, indices)
    pick = sorted(np.random.default_rng(seed).permutation(len(files))[:limit])
    x = np.stack([kws_features_from_wav(files[i][0]) for i in pick]).astype(np.float32)[..., None]
    y = np.array([files[i][1] for i in pick], dtype=np.int64)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cache, x=x, y=y)
    return x, y


def pick(x: np.ndarray, labels, limit: int, seed: int):
    """Up to `limit` samples of x (and their labels), a seeded pick kept in the original order."""
    chosen = np.sort(np.random.default_rng(seed).permutation(len(x))[:limit])
    return x[chosen], (None if labels is None else labels[chosen])


def har_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    sys.path.insert(0, str(ROOT / "scripts"))
    from train_har import har_data as load

    normalisation = json.loads((ROOT / "models" / "har" / "training.json").read_text())["normalisation"]
    return load(normalisation)[:4]


def digits_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The MobileNetV2's training and test split of scikit-learn's digits, as its training made them."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from train_mobilenetv2 import digits_data as load

    split = json.loads((FLOAT_MODELS["mobilenetv2"].parent / "training.json").read_text())["split"]
    return load(split["random_state"], split["test_fraction"])


def smooth_images(count: int, size: int, low: float, high: float, seed: int) -> np.ndarray:
    """Random fields with most of their energy at low spatial frequencies, like photographs."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 1, size=(count, 6, 6, 3))
    image = np.kron(coarse, np.ones((1, size // 6 + 1, size // 6 + 1, 1)))[:, :size, :size]
    image = 0.7 * image + 0.3 * rng.uniform(0, 1, size=image.shape)
    return (low + (high - low) * image).astype(np.float32)


def dataset(name: str, n_cal: int, n_eval: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(calibration inputs, evaluation inputs, evaluation labels or None) of one model."""
    if name == "har":
        har_train, _, har_test, har_labels = har_data()
        return (pick(har_train, None, n_cal, 0)[0],) + pick(har_test, har_labels, n_eval, 1)
    if name in ("fsdd", "kws"):
        fsdd_cal, _ = fsdd_features(range(5, 50), n_cal, 0)
        fsdd_eval, fsdd_labels = fsdd_features(range(0, 5), n_eval, 1)
        # the MLPerf keywords are not digits: agreement only
        return fsdd_cal, fsdd_eval, fsdd_labels if name == "fsdd" else None
    if name == "vww":
        return smooth_images(n_cal, 96, 0.0, 1.0, 0), smooth_images(n_eval, 96, 0.0, 1.0, 1), None
    if name == "ic":
        return smooth_images(n_cal, 32, 0.0, 255.0, 0), smooth_images(n_eval, 32, 0.0, 255.0, 1), None
    if name == "ad":
        windows = ad_windows(read_ad_hist(MLPERF / "ad01_sample_normal_id_01_00000000_hist_librosa.bin"))
        windows = windows.reshape(len(windows), -1).astype(np.float32)
        order = np.random.default_rng(0).permutation(len(windows))
        return windows[order[:len(order) // 2]][:n_cal], windows[order[len(order) // 2:]][:n_eval], None
    if name == "mobilenetv2":
        x_train, _, x_test, y_test = digits_data()
        return (pick(x_train, None, n_cal, 0)[0],) + pick(x_test, y_test, n_eval, 1)
    raise SystemExit(f"unknown model {name!r}: choose from {', '.join(FLOAT_MODELS)}")


def search_split(calibration: np.ndarray, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(calibration part, held-out search part) of the calibration inputs, for the mixed search."""
    if len(calibration) < 2:
        raise SystemExit("the mixed search needs at least 2 calibration samples (one to calibrate, one to search)")
    held = min(len(calibration) - 1, max(1, round(SEARCH_FRACTION * len(calibration))))
    order = np.random.default_rng(seed).permutation(len(calibration))
    return calibration[np.sort(order[held:])], calibration[np.sort(order[:held])]


# ---------------------------------------------------------------------------------------------------------
# the peer: TensorFlow's converter on a Keras rebuild of the float model


def rebuild_keras(graph):
    """A Keras functional model computing what the float TFLite graph computes, with its weights."""
    import tensorflow as tf

    layers = tf.keras.layers
    activation = {"NONE": None, "RELU": "relu", "RELU6": tf.nn.relu6}
    inputs = tf.keras.Input(graph.inputs[0].shape[1:], batch_size=1)
    values = {graph.inputs[0].index: inputs}
    for op in graph.ops:
        x = values[op.inputs[0].index]
        o = op.options
        act = activation.get(o.get("fused_activation_function", "NONE"))
        bias = float_values(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] is not None else None
        if op.type == "CONV_2D":
            w = float_values(op.inputs[1])
            layer = layers.Conv2D(w.shape[0], w.shape[1:3], strides=(o["stride_h"], o["stride_w"]),
                                  padding=o["padding"].lower(), activation=act, use_bias=bias is not None,
                                  dilation_rate=(o["dilation_h_factor"], o["dilation_w_factor"]))
            y = layer(x)
            layer.set_weights([w.transpose(1, 2, 3, 0)] + ([bias] if bias is not None else []))
        elif op.type == "DEPTHWISE_CONV_2D":
            w = float_values(op.inputs[1])
            channels = x.shape[-1]
            layer = layers.DepthwiseConv2D(w.shape[1:3], strides=(o["stride_h"], o["stride_w"]),
                                           padding=o["padding"].lower(), depth_multiplier=o["depth_multiplier"],
                                           activation=act, use_bias=bias is not None)
            y = layer(x)
            kernel = w.reshape(w.shape[1], w.shape[2], channels, o["depth_multiplier"])
            layer.set_weights([kernel] + ([bias] if bias is not None else []))
        elif op.type == "FULLY_CONNECTED":
            w = float_values(op.inputs[1])
            if len(x.shape) > 2:
                x = layers.Reshape((w.shape[1],))(x)
            layer = layers.Dense(w.shape[0], activation=act, use_bias=bias is not None)
            y = layer(x)
            layer.set_weights([w.T] + ([bias] if bias is not None else []))
        elif op.type == "AVERAGE_POOL_2D":
            y = layers.AveragePooling2D((o["filter_height"], o["filter_width"]), (o["stride_h"], o["stride_w"]),
                                        padding=o["padding"].lower())(x)
            y = y if act is None else layers.Activation(act)(y)
        elif op.type == "ADD":
            y = layers.Add()([x, values[op.inputs[1].index]])
            y = y if act is None else layers.Activation(act)(y)
        elif op.type == "RESHAPE":
            y = layers.Reshape(op.outputs[0].shape[1:])(x)
        elif op.type == "SOFTMAX":
            y = layers.Softmax()(x)
        else:
            raise NotImplementedError(f"rebuild_keras: {op.where}")
        values[op.outputs[0].index] = y
    return tf.keras.Model(inputs, values[graph.outputs[0].index])


# ---------------------------------------------------------------------------------------------------------
# measuring

SHIFTS = ["noise:20dB", "gain:4"]


def numbers(model: dict) -> dict:
    return {k: model[k] for k in ("top1_agreement", "relative_accuracy", "output_mae")}


def evaluate(float_graph, quant_graph, x: np.ndarray, labels, classifier: bool) -> dict:
    """robust.assess on the clean inputs and each shift: model-level numbers and the mean layer SQNR."""
    report = robust.assess(float_graph, quant_graph, x, shifts=SHIFTS, labels=labels)
    f_scale = float(np.mean(np.abs(microforge.run(float_graph, x))))
    sqnr = [layer["sqnr_db"] for layer in report.layers if layer["sqnr_db"] is not None and layer["op"] != "input"]
    row = {"clean": numbers(report.model), "mean_layer_sqnr_db": float(np.mean(sqnr)),
           "flagged_layers": len(report.flagged), "layers": len(report.layers), "float_output_mean_abs": f_scale}
    row.update({s["shift"]: numbers(s["model"]) for s in report.shifted})
    if not classifier:  # an autoencoder's argmax means nothing
        for key in ["clean"] + SHIFTS:
            row[key]["top1_agreement"] = None
    return row


VARIANTS = [("int8", "per-channel", "minmax"), ("int8", "per-channel", "percentile"), ("int8", "per-channel", "mse"),
            ("int8", "per-tensor", "minmax"), ("int16x8", "per-channel", "minmax"), ("dynamic", "per-layer", "minmax")]


def failure(exc: MicroforgeError) -> dict:
    """What a scheme that failed on a model records: whether it is unsupported, and the full message."""
    return {"error": f"{type(exc).__name__}: {exc}", "unsupported": isinstance(exc, UnsupportedError)}


def short_reason(entry: dict, width: int = 160) -> str:
    """A table cell for a failed scheme: 'not supported: <reason>' (or 'failed: ...'), on one line."""
    message = entry["error"].split(": ", 1)[-1]
    message = " ".join(part.strip() for part in message.splitlines() if part.strip()).replace("|", "/")
    message = message if len(message) <= width else message[:width - 3] + "..."
    return f"{'not supported' if entry['unsupported'] else 'failed'}: {message}"


def keras_peer(name: str, float_graph):
    """The Keras model TensorFlow's converter reads: the trained one if there is one, else a rebuild."""
    if name in KERAS_MODELS:
        import tensorflow as tf

        return tf.keras.models.load_model(KERAS_MODELS[name], compile=False), "trained Keras model"
    return rebuild_keras(float_graph), "rebuild_keras"


def mixed_summary(float_graph, choice, calibration_samples: int, search_samples: int) -> dict:
    """The mixed search's choice for the JSON: widened layers, the quality it reached on its data, the cost."""
    ops = float_graph.ops
    return {"target": choice.target, "widened_count": len(choice.widened),
            "widened": [{"op": i, "type": ops[i].type, "output": ops[i].outputs[0].name} for i in choice.widened],
            "search_quality": choice.quality, "search_measure": "top-1 agreement with the float model",
            "search_data": f"{search_samples} calibration samples held out (the other {calibration_samples} "
                           f"calibrate)", "calibration_samples": calibration_samples,
            "search_samples": search_samples,
            "steps": [{"widened": len(step["widened"]), "quality": step["quality"], "kept": step["kept"]}
                      for step in choice.steps],
            "search_instructions_per_inference": choice.instructions, "search_arena_bytes": choice.arena_bytes}


def measure_model(name: str, calibration: np.ndarray, evaluation: np.ndarray, labels=None,
                  classifier: bool = True) -> tuple[list[dict], object]:
    """The quality rows of one model, and the mixed model (or its failure) for cost_on_m4."""
    float_graph = microforge.load(FLOAT_MODELS[name])
    rows = []
    keras_model, peer = keras_peer(name, float_graph)
    rebuilt = keras_model.predict(evaluation[:16], batch_size=1, verbose=0)
    float_out = microforge.run(float_graph, evaluation[:16])
    rebuild_error = float(np.max(np.abs(rebuilt - float_out.reshape(rebuilt.shape))))
    start = time.perf_counter()
    converted = microforge.load(keras_to_int8_tflite(keras_model, calibration))
    rows.append({"model": name, "quantizer": "TF converter", "scheme": "int8", "weights": "per-channel",
                 "method": "minmax", "seconds": time.perf_counter() - start, "keras_model": peer,
                 "rebuild_max_abs_error": rebuild_error,
                 **evaluate(float_graph, converted, evaluation, labels, classifier)})
    for scheme, weights, method in VARIANTS:
        row = {"model": name, "quantizer": "microforge", "scheme": scheme, "weights": weights, "method": method}
        start = time.perf_counter()
        try:
            model = robust.quantize(float_graph, calibration, scheme=scheme,
                                    weights="per-channel" if weights == "per-layer" else weights, method=method)
            row.update(seconds=time.perf_counter() - start,
                       **evaluate(float_graph, model.graph, evaluation, labels, classifier))
        except MicroforgeError as exc:
            row.update(failure(exc))
        rows.append(row)
    part, search = search_split(calibration)
    row = {"model": name, "quantizer": "microforge", "scheme": "mixed", "weights": "per-channel", "method": "minmax",
           "io": "float"}
    start = time.perf_counter()
    try:
        mixed = robust.quantize(float_graph, part, scheme="mixed", io="float", target_accuracy=MIXED_TARGET,
                                evaluation=search)
        row.update(seconds=time.perf_counter() - start, mixed=mixed_summary(float_graph, mixed.mixed, len(part),
                                                                            len(search)),
                   **evaluate(float_graph, mixed.graph, evaluation, labels, classifier))
    except MicroforgeError as exc:
        mixed = failure(exc)
        row.update(mixed, mixed={"target": MIXED_TARGET, "calibration_samples": len(part),
                                 "search_samples": len(search)})
    rows.append(row)
    return rows, mixed


COST_SCHEMES = ("int8", "int16x8", "mixed", "dynamic")


def cost_on_m4(name: str, calibration: np.ndarray, mixed) -> dict:
    """Instructions per inference and RAM on qemu-m4 of static int8, int16x8, mixed (the model the search
    chose, `mixed`, or its failure) and dynamic fixed point, all with float input and output (the dynamic
    scheme's own edges), bit-exact with the reference interpreter. A scheme that fails records why."""
    from microforge.codegen.validate import validate_target

    row = {"model": name}
    for scheme in COST_SCHEMES:
        try:
            if scheme == "mixed":
                if isinstance(mixed, dict):  # the search itself failed: nothing to measure
                    row[scheme] = mixed
                    continue
                graph = mixed.graph
            else:
                graph = robust.quantize(FLOAT_MODELS[name], calibration, scheme=scheme, io="float").graph
            report = validate_target(graph, "qemu-m4", count=2)
            row[scheme] = {k: report[k] for k in ("instructions_per_inference", "arena_bytes", "ram_bytes",
                                                  "bit_exact")}
        except MicroforgeError as exc:
            row[scheme] = failure(exc)
    return row


def quality_of(row: dict) -> tuple[float | None, str]:
    """A quality row's clean quality as a share of float: relative accuracy where there are labels, else
    top-1 agreement (None for the autoencoder, whose argmax means nothing)."""
    clean = row.get("clean")
    if clean is None:
        return None, "-"
    if clean["relative_accuracy"] is not None:
        return clean["relative_accuracy"], "accuracy relative to float"
    if clean["top1_agreement"] is not None:
        return clean["top1_agreement"], "top-1 agreement with float"
    return None, "no class to agree on (autoencoder)"


def mixed_target(mixed_row: dict, cost: dict) -> dict:
    """The issue's target for mixed, from measured numbers: quality >= 99% of float on the evaluation
    inputs, instructions <= +10% and RAM <= +15% over int8 (qemu-m4). `met` is False when the mixed model
    could not be made or measured, None when its quality has no measure (the autoencoder)."""
    quality, measure = quality_of(mixed_row)
    a, m = cost["int8"], cost["mixed"]
    check = {"target_quality": MIXED_TARGET, "max_instructions_ratio": MAX_INSTRUCTIONS, "max_ram_ratio": MAX_RAM,
             "quality": quality, "quality_measure": measure, "instructions_ratio": None, "ram_ratio": None}
    if "error" in mixed_row or "error" in m:
        return dict(check, quality_met=None, instructions_met=None, ram_met=None, met=False,
                    reason="no mixed model to measure: " + (mixed_row.get("error") or m["error"]))
    if "error" not in a:
        check["instructions_ratio"] = m["instructions_per_inference"] / a["instructions_per_inference"]
        check["ram_ratio"] = m["ram_bytes"] / a["ram_bytes"]
    parts = [None if quality is None else quality >= MIXED_TARGET,
             None if check["instructions_ratio"] is None else check["instructions_ratio"] <= MAX_INSTRUCTIONS,
             None if check["ram_ratio"] is None else check["ram_ratio"] <= MAX_RAM]
    check.update(quality_met=parts[0], instructions_met=parts[1], ram_met=parts[2],
                 met=False if False in parts else (None if None in parts else True))
    return check


def cost_markdown(costs: list[dict]) -> str:
    def cell(c, scheme, key):
        entry, base = c[scheme], c["int8"]
        if "error" in entry:
            return short_reason(entry) if key == "instructions_per_inference" else short_reason(entry).split(":")[0]
        if scheme == "int8":
            return f"{entry[key]:,}"
        ratio = "-" if "error" in base else f"{entry[key] / base[key]:.2f}x"
        return f"{entry[key]:,} ({ratio})"

    def exact(c):
        measured = {s: c[s]["bit_exact"] for s in COST_SCHEMES if "error" not in c[s]}
        wrong = [s for s, ok in measured.items() if not ok]
        return ("NO: " + ", ".join(wrong)) if wrong else ("yes" if measured else "-")

    lines = ["| model | int8 instructions | int16x8 (ratio) | mixed (ratio) | dynamic (ratio) | int8 RAM B | "
             "int16x8 RAM B (ratio) | mixed RAM B (ratio) | dynamic RAM B (ratio) | bit-exact |", "|" + "---|" * 10]
    for c in costs:
        lines.append(f"| {c['model']} | "
                     + " | ".join(cell(c, s, "instructions_per_inference") for s in COST_SCHEMES) + " | "
                     + " | ".join(cell(c, s, "ram_bytes") for s in COST_SCHEMES) + f" | {exact(c)} |")
    return "\n".join(lines)


def target_markdown(rows: list[dict], costs: list[dict]) -> str:
    """One line per model: the mixed search's choice and whether it meets the issue's target."""
    def verdict(ok):
        return "n/a" if ok is None else ("met" if ok else "not met")

    lines = []
    for c in costs:
        row = next(r for r in rows if r["model"] == c["model"] and r["scheme"] == "mixed")
        t = c["mixed_target"]
        if "error" in row or "error" in c["mixed"]:
            reason = short_reason(row if "error" in row else c["mixed"])
            lines.append(f"- {c['model']}: mixed {reason}: **not met** (no mixed model to measure)")
            continue
        m = row["mixed"]
        widened = ", ".join(f"op {w['op']} {w['type']}" for w in m["widened"]) or "none"
        quality = "-" if t["quality"] is None else f"{100 * t['quality']:.1f}%"
        cost = ("instructions and RAM not measured" if t["instructions_ratio"] is None else
                f"instructions {100 * (t['instructions_ratio'] - 1):+.1f}% (<= +10%: {verdict(t['instructions_met'])}), "
                f"RAM {100 * (t['ram_ratio'] - 1):+.1f}% (<= +15%: {verdict(t['ram_met'])})")
        overall = "not judged (no quality measure)" if t["met"] is None else verdict(t["met"])
        lines.append(f"- {c['model']}: widened {m['widened_count']} ({widened}); search quality "
                     f"{100 * m['search_quality']:.1f}% on {m['search_samples']} held-out calibration samples; "
                     f"on the evaluation inputs {quality} ({t['quality_measure']}, >= 99%: "
                     f"{verdict(t['quality_met'])}), {cost}: **{overall}**")
    return "\n".join(lines)


def markdown(rows: list[dict]) -> str:
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}%"

    def cell(r, key):
        m = r[key]
        quality = pct(m["relative_accuracy"]) if m["relative_accuracy"] is not None else pct(m["top1_agreement"])
        return f"{quality} / {m['output_mae'] / r['float_output_mean_abs']:.3f}"

    head = ["model", "quantizer", "scheme", "weights", "ranges", "clean"] + SHIFTS + ["mean layer SQNR dB", "flagged"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        first = f"| {r['model']} | {r['quantizer']} | {r['scheme']} | {r['weights']} | {r['method']} | "
        if "error" in r:
            lines.append(first + short_reason(r) + " |" + " - |" * (len(SHIFTS) + 2))
            continue
        lines.append(first + " | ".join(cell(r, k) for k in ["clean"] + SHIFTS)
                     + f" | {r['mean_layer_sqnr_db']:.1f} | {r['flagged_layers']}/{r['layers']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calibration", type=int, default=100, help="calibration samples per model")
    parser.add_argument("--eval", type=int, default=200, help="evaluation samples per model")
    parser.add_argument("--models", default=",".join(FLOAT_MODELS), help="comma-separated subset of "
                        + ", ".join(FLOAT_MODELS))
    args = parser.parse_args()
    names = args.models.split(",")
    for name in names:
        if name not in FLOAT_MODELS:
            raise SystemExit(f"unknown model {name!r}: choose from {', '.join(FLOAT_MODELS)}")
        if not FLOAT_MODELS[name].exists():
            raise SystemExit(f"{FLOAT_MODELS[name]} is missing: train it first (see scripts/)")
    rows, costs = [], []
    for name in names:
        calibration, evaluation, labels = dataset(name, args.calibration, args.eval)
        print(f"{name}: {len(calibration)} calibration, {len(evaluation)} evaluation samples", flush=True)
        model_rows, mixed = measure_model(name, calibration, evaluation, labels, classifier=name != "ad")
        rows += model_rows
        cost = cost_on_m4(name, calibration, mixed)
        cost["mixed_target"] = mixed_target(model_rows[-1], cost)
        costs.append(cost)
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/quantization.py " + " ".join(sys.argv[1:])
    (RESULTS / "quantization.json").write_text(json.dumps({"command": command.strip(), "rows": rows, "cost_qemu_m4": costs}, indent=1) + "\n")
    table = markdown(rows)
    legend = ("Each cell: relative accuracy (quantized / float, where there are labels) or else top-1 agreement "
              "with the float model, then output MAE relative to the float output's mean magnitude.")
    legend += (" The mixed row: robust.quantize(scheme=\"mixed\", target 99% of float), calibrated on 75% of the "
               "calibration inputs, its layers chosen on the other 25% (top-1 agreement with float), measured here "
               "on the evaluation inputs like every row.")
    cost = cost_markdown(costs)
    targets = target_markdown(rows, costs)
    (RESULTS / "quantization.md").write_text(
        f"Measured with `{command.strip()}`.\n\n{legend}\n\n{table}\n\n"
        f"Cost on qemu-m4 (float input and output for all; ratios to int8):\n\n{cost}\n\n"
        f"Mixed against the issue's target (quality >= 99% of float at <= +10% instructions and <= +15% RAM "
        f"over int8):\n\n{targets}\n")
    print(table)
    print(cost)
    print(targets)


if __name__ == "__main__":
    main()
