"""Our post-training quantizer beside TensorFlow's converter, on the same float models and calibration data.

For each float model: TFLite's converter (full-integer int8 PTQ with the calibration batch as its
representative dataset) and microforge's quantizer (int8 with per-channel or per-tensor weights, ranges by
minmax, percentile or mse) make int8 models; each runs on the evaluation inputs through our interpreter
(bit-exact with TFLM) and is compared with the float model: top-1 agreement, accuracy relative to float
where there are labels, output MAE (on dequantized outputs), and the mean SQNR of its layers (robust.assess).

The converter needs a TensorFlow model, and the MLPerf Tiny float models ship only as .tflite, so each is
rebuilt as a Keras model with the same weights (rebuild_keras; checked against our float interpreter).

Models and data (labelled where we have labels; for the MLPerf Tiny tasks agreement with float is the measure):
- har: our 1-D CNN on BasicMotions (scripts/train_har.py; aeon's copy of the UEA data): calibration on
  the 40 training recordings, evaluation on the 40 test recordings, with labels.
- fsdd: our spoken-digit DS-CNN (scripts/train_fsdd_kws.py), its float model: calibration on FSDD
  recordings 5-49, evaluation on recordings 0-4 with their digits.
- kws: MLPerf Tiny DS-CNN (hybrid float model: int8 weights, dequantized); inputs are Free Spoken Digit
  Dataset clips through the MLPerf KWS MFCC pipeline (calibration: recordings 5-49, evaluation 0-4).
- vww, ic: MobileNetV1 96x96 and ResNet-8 32x32; inputs are synthetic smooth random images in each
  model's input range (there is no image data here).
- ad: the anomaly-detection autoencoder; inputs are 5-frame log-mel windows of the one shipped clip.

    .venv/bin/python benchmarks/quantization.py [--eval 200] [--calibration 100]

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
}


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


def har_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    sys.path.insert(0, str(ROOT / "scripts"))
    from train_har import har_data as load

    normalisation = json.loads((ROOT / "models" / "har" / "training.json").read_text())["normalisation"]
    return load(normalisation)[:4]


def smooth_images(count: int, size: int, low: float, high: float, seed: int) -> np.ndarray:
    """Random fields with most of their energy at low spatial frequencies, like photographs."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 1, size=(count, 6, 6, 3))
    image = np.kron(coarse, np.ones((1, size // 6 + 1, size // 6 + 1, 1)))[:, :size, :size]
    image = 0.7 * image + 0.3 * rng.uniform(0, 1, size=image.shape)
    return (low + (high - low) * image).astype(np.float32)


def datasets(n_cal: int, n_eval: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """model -> (calibration inputs, evaluation inputs, evaluation labels or None)."""
    windows = ad_windows(read_ad_hist(MLPERF / "ad01_sample_normal_id_01_00000000_hist_librosa.bin"))
    windows = windows.reshape(len(windows), -1).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(windows))
    har_train, _, har_test, har_labels = har_data()
    fsdd_cal, _ = fsdd_features(range(5, 50), n_cal, 0)
    fsdd_eval, fsdd_labels = fsdd_features(range(0, 5), n_eval, 1)
    return {
        "har": (har_train, har_test, har_labels),
        "fsdd": (fsdd_cal, fsdd_eval, fsdd_labels),
        "kws": (fsdd_cal, fsdd_eval, None),  # the MLPerf keywords are not digits: agreement only
        "vww": (smooth_images(n_cal, 96, 0.0, 1.0, 0), smooth_images(n_eval, 96, 0.0, 1.0, 1), None),
        "ic": (smooth_images(n_cal, 32, 0.0, 255.0, 0), smooth_images(n_eval, 32, 0.0, 255.0, 1), None),
        "ad": (windows[order[:len(order) // 2]], windows[order[len(order) // 2:]], None),
    }


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


def measure_model(name: str, calibration: np.ndarray, evaluation: np.ndarray, labels=None,
                  classifier: bool = True) -> list[dict]:
    float_graph = microforge.load(FLOAT_MODELS[name])
    rows = []
    keras_model = rebuild_keras(float_graph)
    rebuilt = keras_model.predict(evaluation[:16], batch_size=1, verbose=0)
    float_out = microforge.run(float_graph, evaluation[:16])
    rebuild_error = float(np.max(np.abs(rebuilt - float_out.reshape(rebuilt.shape))))
    start = time.perf_counter()
    converted = microforge.load(keras_to_int8_tflite(keras_model, calibration))
    rows.append({"model": name, "quantizer": "TF converter", "scheme": "int8", "weights": "per-channel",
                 "method": "minmax", "seconds": time.perf_counter() - start, "rebuild_max_abs_error": rebuild_error,
                 **evaluate(float_graph, converted, evaluation, labels, classifier)})
    for scheme, weights, method in VARIANTS:
        start = time.perf_counter()
        model = robust.quantize(float_graph, calibration, scheme=scheme,
                                weights="per-channel" if weights == "per-layer" else weights, method=method)
        rows.append({"model": name, "quantizer": "microforge", "scheme": scheme, "weights": weights,
                     "method": method, "seconds": time.perf_counter() - start,
                     **evaluate(float_graph, model.graph, evaluation, labels, classifier)})
    return rows


def cost_on_m4(name: str, calibration: np.ndarray) -> dict:
    """Instructions per inference and RAM on qemu-m4 of static int8 and dynamic fixed point, both with float
    input and output (the dynamic scheme's own edges), bit-exact with the reference interpreter."""
    from microforge.codegen.validate import validate_target

    row = {"model": name}
    for scheme in ("int8", "dynamic"):
        graph = robust.quantize(FLOAT_MODELS[name], calibration, scheme=scheme, io="float").graph
        report = validate_target(graph, "qemu-m4", count=2)
        row[scheme] = {k: report[k] for k in ("instructions_per_inference", "arena_bytes", "ram_bytes", "bit_exact")}
    return row


def cost_markdown(costs: list[dict]) -> str:
    lines = ["| model | int8 instructions | dynamic instructions | ratio | int8 RAM B | dynamic RAM B | ratio | "
             "bit-exact |", "|---|---|---|---|---|---|---|---|"]
    for c in costs:
        a, b = c["int8"], c["dynamic"]
        lines.append(f"| {c['model']} | {a['instructions_per_inference']:,} | {b['instructions_per_inference']:,} | "
                     f"{b['instructions_per_inference'] / a['instructions_per_inference']:.2f}x | {a['ram_bytes']:,} | "
                     f"{b['ram_bytes']:,} | {b['ram_bytes'] / a['ram_bytes']:.2f}x | "
                     f"{'yes' if a['bit_exact'] and b['bit_exact'] else 'NO'} |")
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
        lines.append(f"| {r['model']} | {r['quantizer']} | {r['scheme']} | {r['weights']} | {r['method']} | "
                     + " | ".join(cell(r, k) for k in ["clean"] + SHIFTS)
                     + f" | {r['mean_layer_sqnr_db']:.1f} | {r['flagged_layers']}/{r['layers']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calibration", type=int, default=100, help="calibration samples per model")
    parser.add_argument("--eval", type=int, default=200, help="evaluation samples per model")
    parser.add_argument("--models", default="har,fsdd,kws,vww,ic,ad")
    args = parser.parse_args()
    data = datasets(args.calibration, args.eval)
    rows, costs = [], []
    for name in args.models.split(","):
        if not FLOAT_MODELS[name].exists():
            raise SystemExit(f"{FLOAT_MODELS[name]} is missing: train it first (see scripts/)")
        calibration, evaluation, labels = data[name]
        print(f"{name}: {len(calibration)} calibration, {len(evaluation)} evaluation samples", flush=True)
        rows += measure_model(name, calibration, evaluation, labels, classifier=name != "ad")
        costs.append(cost_on_m4(name, calibration))
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/quantization.py " + " ".join(sys.argv[1:])
    (RESULTS / "quantization.json").write_text(json.dumps({"command": command.strip(), "rows": rows, "cost_qemu_m4": costs}, indent=1) + "\n")
    table = markdown(rows)
    legend = ("Each cell: relative accuracy (quantized / float, where there are labels) or else top-1 agreement "
              "with the float model, then output MAE relative to the float output's mean magnitude.")
    cost = cost_markdown(costs)
    (RESULTS / "quantization.md").write_text(f"Measured with `{command.strip()}`.\n\n{legend}\n\n{table}\n\n"
                                             f"Cost on qemu-m4 (float input and output for both):\n\n{cost}\n")
    print(table)
    print(cost)


if __name__ == "__main__":
    main()
