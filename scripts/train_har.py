#!/usr/bin/env python
"""Train a small 1-D CNN for human activity recognition on BasicMotions and ship it as a float32 TFLite model.

    .venv/bin/python scripts/train_har.py            # defaults: --epochs 150 --seed 1

BasicMotions (from the UEA multivariate archive, bundled in the `aeon` package): 3-axis accelerometer and
gyroscope of a smart watch at 10 Hz, 100 steps per recording, four activities (standing, walking, running,
badminton), 40 recordings to train on and 40 to test. The model sees a recording as an image of height
100, width 1 and 6 channels, so it converts to CONV_2D / DEPTHWISE_CONV_2D / AVERAGE_POOL_2D /
FULLY_CONNECTED / SOFTMAX, ops every tinyML runtime has. Inputs are standardised per channel with the
training set's mean and standard deviation (stored in training.json; `har_data` applies them).

Writes to --out (default models/har): har_cnn_float.tflite (float32, batch 1), training.json.
The quantization benchmark quantizes this model; it is never trained in the tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
import microforge  # noqa: E402,F401  (first: OR-Tools before TensorFlow)

CLASSES = ("standing", "walking", "running", "badminton")
MODEL_FILE = "har_cnn_float.tflite"


def har_data(normalisation: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """(x_train, y_train, x_test, y_test, normalisation): x as float32 (N, 100, 1, 6), standardised per
    channel with the training set's statistics (or the given ones), y as class indices of CLASSES."""
    from aeon.datasets import load_basic_motions

    x_train, y_train = load_basic_motions(split="train")
    x_test, y_test = load_basic_motions(split="test")
    if normalisation is None:
        normalisation = {"mean": x_train.mean(axis=(0, 2)).tolist(), "std": x_train.std(axis=(0, 2)).tolist()}
    mean = np.asarray(normalisation["mean"]).reshape(1, -1, 1)
    std = np.asarray(normalisation["std"]).reshape(1, -1, 1)

    def prepare(x):  # (N, 6, 100) -> (N, 100, 1, 6)
        return ((x - mean) / std).transpose(0, 2, 1)[:, :, None, :].astype(np.float32)

    def labels(y):
        return np.array([CLASSES.index(str(v).lower()) for v in y], dtype=np.int64)

    return prepare(x_train), labels(y_train), prepare(x_test), labels(y_test), normalisation


def build_model(tf, batch_size: int | None = None):
    layers = tf.keras.layers
    inputs = tf.keras.Input((100, 1, 6), batch_size=batch_size)
    x = layers.Conv2D(16, (5, 1), strides=(2, 1), padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    for channels in (24, 32):
        x = layers.DepthwiseConv2D((5, 1), padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.Conv2D(channels, (1, 1), strides=(1, 1), use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.AveragePooling2D((2, 1))(x)
    x = layers.AveragePooling2D((x.shape[1], 1))(x)  # not GlobalAveragePooling, which converts to MEAN
    x = layers.Flatten()(x)
    x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(len(CLASSES), activation="softmax")(x)
    return tf.keras.Model(inputs, outputs, name="har_cnn")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="models/har")
    args = parser.parse_args()
    import tensorflow as tf

    tf.keras.utils.set_random_seed(args.seed)
    x_train, y_train, x_test, y_test, normalisation = har_data()
    model = build_model(tf)
    model.compile(optimizer=tf.keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    start = time.time()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=8, verbose=0)
    seconds = time.time() - start
    train_acc = float(np.mean(model.predict(x_train, verbose=0).argmax(1) == y_train))
    test_acc = float(np.mean(model.predict(x_test, verbose=0).argmax(1) == y_test))
    single = build_model(tf, batch_size=1)  # batch 1, as on the device: Flatten stays a RESHAPE
    single.set_weights(model.get_weights())
    out = Path(args.out) if Path(args.out).is_absolute() else ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / MODEL_FILE).write_bytes(tf.lite.TFLiteConverter.from_keras_model(single).convert())
    graph = microforge.load(out / MODEL_FILE)
    tflite_acc = float(np.mean(microforge.run(graph, x_test).argmax(1) == y_test))
    results = {
        "command": f"python scripts/train_har.py --epochs {args.epochs} --seed {args.seed}",
        "seed": args.seed, "epochs": args.epochs, "tensorflow": tf.__version__,
        "dataset": "BasicMotions (UEA multivariate time series archive), bundled in aeon", "classes": CLASSES,
        "train_size": len(x_train), "test_size": len(x_test), "parameters": int(model.count_params()),
        "training_seconds": round(seconds, 1), "normalisation": normalisation,
        "float_train_accuracy": train_acc, "float_test_accuracy": test_acc,
        "float_tflite_test_accuracy": tflite_acc, "ops": sorted({op.type for op in graph.ops}),
    }
    (out / "training.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: results[k] for k in ("parameters", "float_test_accuracy", "float_tflite_test_accuracy",
                                              "training_seconds")}))


if __name__ == "__main__":
    main()
