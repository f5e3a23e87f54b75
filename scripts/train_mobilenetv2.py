#!/usr/bin/env python
"""Train a small Keras MobileNetV2 on scikit-learn's handwritten digits and ship it as .keras and float32 TFLite.

    .venv/bin/python scripts/train_mobilenetv2.py          # defaults: --epochs 40 --seed 1 --test-fraction 0.25

The network is tf.keras.applications.MobileNetV2 itself (alpha 0.35, 32 x 32 x 3 input, ten classes, no
pretrained weights: there are none for this input and no network to fetch them), so it has the
operators a Keras MobileNetV2 converts to: CONV_2D and DEPTHWISE_CONV_2D with fused ReLU6 (the converter
folds the ZeroPadding2D before each strided depthwise convolution into it), ADD for the residuals, MEAN
for the global average pooling, FULLY_CONNECTED and SOFTMAX. At 32 x 32 the last stages are 1 x 1
spatially, and there the converter writes each residual ADD as RESHAPE + a broadcasting ADD.

Data: `sklearn.datasets.load_digits` (1,797 grey 8 x 8 images of the digits 0-9, values 0-16), a copy
of the UCI optical recognition of handwritten digits test set bundled with scikit-learn. Each image is
scaled to [0, 1], enlarged to 32 x 32 by repeating each pixel 4 x 4 and copied into three channels.
Split: a stratified train/test split (--test-fraction, seeded by --seed); the test part is only
evaluated, once, after training. `digits_data` gives the same split to benchmarks/quantization.py.

The applications' batch normalisation averages with momentum 0.999, too slow for the ~1,700 training
steps here (its running statistics would still lag the weights at the end); it is set to 0.9 before
training. Nothing else is changed in the architecture.

Writes to --out (default models/mobilenetv2): mobilenetv2_digits.keras (the trained model, without
optimizer state), mobilenetv2_digits_float.tflite (float32, batch 1, by microforge.frontend.keras) and
training.json. Runs in a few minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
import microforge  # noqa: E402  (first: OR-Tools before TensorFlow)
from microforge.frontend.keras import keras_to_float_tflite  # noqa: E402

KERAS_FILE = "mobilenetv2_digits.keras"
MODEL_FILE = "mobilenetv2_digits_float.tflite"
SIZE = 32
ALPHA = 0.35
CLASSES = 10
BATCH_SIZE = 32
LEARNING_RATE = 2e-3
BN_MOMENTUM = 0.9


def digits_data(seed: int = 1, test_fraction: float = 0.25) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): x float32 (N, 32, 32, 3) in [0, 1], y the digit (int64)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0  # (N, 8, 8), 0..16 -> [0, 1]
    factor = SIZE // images.shape[1]
    images = np.repeat(np.repeat(images, factor, axis=1), factor, axis=2)
    x = np.repeat(images[..., None], 3, axis=3)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return x_train, y_train, x_test, y_test


def build_model(tf):
    model = tf.keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), alpha=ALPHA, weights=None,
                                              classes=CLASSES)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--test-fraction", type=float, default=0.25)
    parser.add_argument("--out", default="models/mobilenetv2")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()
    x_train, y_train, x_test, y_test = digits_data(args.seed, args.test_fraction)
    model = build_model(tf)
    steps = args.epochs * -(-len(x_train) // BATCH_SIZE)
    schedule = tf.keras.optimizers.schedules.CosineDecay(LEARNING_RATE, steps)  # ends calm, not mid-jump
    model.compile(optimizer=tf.keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    start = time.time()
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=BATCH_SIZE, verbose=2)
    seconds = time.time() - start
    train_acc = float(np.mean(model.predict(x_train, verbose=0).argmax(1) == y_train))
    test_acc = float(np.mean(model.predict(x_test, verbose=0).argmax(1) == y_test))

    out = Path(args.out) if Path(args.out).is_absolute() else ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    shipped = build_model(tf)  # the same layers, never compiled: the file holds no optimizer state
    shipped.set_weights(model.get_weights())
    shipped.save(out / KERAS_FILE)
    (out / MODEL_FILE).write_bytes(keras_to_float_tflite(shipped))
    graph = microforge.load(out / MODEL_FILE)
    tflite_acc = float(np.mean(microforge.run(graph, x_test).argmax(1) == y_test))
    command = (f"python scripts/train_mobilenetv2.py --epochs {args.epochs} --seed {args.seed} "
               f"--test-fraction {args.test_fraction}")
    results = {
        "command": command, "seed": args.seed, "epochs": args.epochs, "tensorflow": tf.__version__,
        "keras_application": f"tf.keras.applications.MobileNetV2(input_shape=({SIZE}, {SIZE}, 3), alpha={ALPHA}, "
                             f"weights=None, classes={CLASSES})",
        "batch_norm_momentum": BN_MOMENTUM, "batch_size": BATCH_SIZE,
        "learning_rate": f"Adam, {LEARNING_RATE} with cosine decay to 0 over the training",
        "dataset": "sklearn.datasets.load_digits (UCI optical recognition of handwritten digits, test part)",
        "preprocessing": "pixel / 16, each pixel repeated 4 x 4 (8 x 8 -> 32 x 32), grey copied to 3 channels",
        "split": {"method": "sklearn.model_selection.train_test_split, stratified", "test_fraction": args.test_fraction,
                  "random_state": args.seed},
        "train_size": len(x_train), "test_size": len(x_test), "parameters": int(model.count_params()),
        "training_seconds": round(seconds, 1), "final_training_loss": float(history.history["loss"][-1]),
        "float_train_accuracy": train_acc, "float_test_accuracy": test_acc,
        "float_tflite_test_accuracy": tflite_acc, "ops": sorted({op.type for op in graph.ops}),
        "files_bytes": {KERAS_FILE: (out / KERAS_FILE).stat().st_size, MODEL_FILE: (out / MODEL_FILE).stat().st_size},
    }
    (out / "training.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: results[k] for k in ("parameters", "float_test_accuracy", "float_tflite_test_accuracy",
                                              "training_seconds", "files_bytes")}))


if __name__ == "__main__":
    main()
