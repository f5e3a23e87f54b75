#!/usr/bin/env python
"""Train a small DS-CNN keyword model on the Free Spoken Digit Dataset and ship it as a full-int8 TFLite model.

    .venv/bin/python scripts/train_fsdd_kws.py            # defaults: --epochs 20 --seed 1

Features come from microforge.bench.features, the same MLPerf Tiny KWS MFCC pipeline (8 -> 16 kHz, 1 s,
49 x 10) that turns FSDD clips into the int8 runner dataset for the device, so the model is trained on
exactly what it will be fed. Split by FSDD's convention: recording indices 0-4 are the test set (only
evaluated, after training), 5-49 train; within those, indices 9, 18, 27, 36 and 45 are a validation set
that is only reported (training runs a fixed number of epochs; nothing is selected on it).

Writes to --out: fsdd_dscnn_int8.tflite (int8 input and output, per-channel weights, by TensorFlow's
converter), fsdd_dscnn_float.tflite (the float32 model, for microforge's own quantizer) and training.json
(the numbers: float and int8 test accuracy, the latter from TFLite Micro and from microforge).
Relative paths are taken from the project root, so the script runs from any directory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

# microforge first: it loads OR-Tools, which must come before TensorFlow (microforge.plan needs it)
import microforge
from microforge.bench.audio import read_wav
from microforge.bench.dataset import fsdd_test_files
from microforge.bench.features import (
    KWS_SAMPLE_RATE,
    KWS_SAMPLES,
    kws_features_from_wav,
    kws_mfcc,
    kws_waveform,
    quantize_input,
)
from microforge.frontend.keras import keras_to_float_tflite, keras_to_int8_tflite
from microforge.plan import plan

ROOT = Path(__file__).resolve().parents[1]
MODEL_FILE = "fsdd_dscnn_int8.tflite"
FLOAT_MODEL_FILE = "fsdd_dscnn_float.tflite"
RESULTS_FILE = "training.json"
NUM_CLASSES = 10
TEST_INDICES = range(5)
TRAIN_INDICES = range(5, 50)
VALIDATION_INDICES = (9, 18, 27, 36, 45)  # spread over each speaker's recording order
CHANNELS = 32
DS_BLOCKS = 4
BATCH_SIZE = 64
LEARNING_RATE = 3e-3
AUGMENTED_COPIES = 4  # per training clip, besides the clean one
REPRESENTATIVE_SAMPLES = 500
# Augmentation. Gain is left out on purpose: the pipeline divides every clip by its maximum, so a gain
# change never reaches the features.
MAX_DELAY = KWS_SAMPLE_RATE // 10  # up to 100 ms of silence before the word
MAX_ADVANCE = KWS_SAMPLE_RATE // 100  # or up to 10 ms cut from its (already trimmed) start
NOISE_SNR_DB = (15.0, 40.0)


def project_path(text: str) -> Path:
    path = Path(text)
    return path if path.is_absolute() else ROOT / path


def index_of(path: Path) -> int:
    return int(path.stem.rsplit("_", 1)[1])


# ----------------------------------------------------------------------------------------------------
# features


def clean_features(files) -> np.ndarray:
    """The device-side features of each clip, (N, 49, 10) float32: the benchmark's own function."""
    return np.stack([kws_features_from_wav(path) for path, _ in files])


def training_features(files, copies: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The clean features of every clip (as `clean_features`) and `copies` perturbed versions of each
    (shifted in time, white noise under the word), run through the same waveform preparation and MFCC as
    the device side. Returns (clean (N, 49, 10), augmented (N * copies, 49, 10), augmented labels)."""
    clean, waves, labels = [], [], []
    for path, digit in files:
        samples, rate = read_wav(path)
        # kws_features_from_wav is kws_mfcc(kws_waveform(read_wav)): split here so the (slow) resampling
        # is done once per clip, not once per copy
        prepared = kws_waveform(samples, rate, source=str(path))
        clean.append(kws_mfcc(prepared))
        spoken = min(KWS_SAMPLES, math.ceil(len(samples) * KWS_SAMPLE_RATE / rate))
        word = prepared[:spoken].astype(np.float64)
        rms = float(np.sqrt(np.mean(word ** 2)))
        for _ in range(copies):
            snr_db = rng.uniform(*NOISE_SNR_DB)
            noisy = word + rng.normal(0.0, rms * 10.0 ** (-snr_db / 20.0), size=word.shape)
            shift = int(rng.integers(-MAX_ADVANCE, MAX_DELAY + 1))
            shifted = np.concatenate([np.zeros(shift), noisy]) if shift >= 0 else noisy[-shift:]
            # back through kws_waveform: re-normalise by the new maximum and pad/trim to 1 s, as the device
            waves.append(kws_waveform(shifted, KWS_SAMPLE_RATE, source=str(path)))
            labels.append(digit)
    chunk = 256  # kws_mfcc frames a whole batch at once in float64: bound the memory it takes
    augmented = np.concatenate([kws_mfcc(np.stack(waves[i:i + chunk])) for i in range(0, len(waves), chunk)])
    return np.stack(clean), augmented, np.array(labels, dtype=np.int64)


# ----------------------------------------------------------------------------------------------------
# model


def fit(tf, model, x_train, y_train, validation, epochs: int):
    """Train `model` as every FSDD keyword model here is trained: Adam at LEARNING_RATE with cosine decay
    over all steps, BATCH_SIZE, shuffled, `validation` = (x, y) reported each epoch. Returns the history."""
    steps = epochs * math.ceil(len(x_train) / BATCH_SIZE)
    model.compile(optimizer=tf.keras.optimizers.Adam(tf.keras.optimizers.schedules.CosineDecay(LEARNING_RATE, steps)),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=epochs, shuffle=True,
                     validation_data=validation, verbose=2)


def build_model(tf, frames: int, coefficients: int, batch_size: int | None = None):
    """DS-CNN after the MLPerf Tiny KWS reference, narrower (32 instead of 64 channels).

    BatchNorm follows every convolution without bias so the converter folds it into the conv's weights and
    bias; the 25 x 5 average pool (not GlobalAveragePooling, which converts to MEAN) matches the reference.
    """
    layers = tf.keras.layers
    inputs = tf.keras.Input(shape=(frames, coefficients, 1), batch_size=batch_size)
    x = layers.Conv2D(CHANNELS, (10, 4), strides=(2, 2), padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(0.1)(x)
    for _ in range(DS_BLOCKS):
        x = layers.DepthwiseConv2D((3, 3), padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.Conv2D(CHANNELS, (1, 1), use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    x = layers.Dropout(0.3)(x)
    x = layers.AveragePooling2D(pool_size=(x.shape[1], x.shape[2]))(x)
    x = layers.Flatten()(x)
    x = layers.Dense(NUM_CLASSES)(x)
    outputs = layers.Softmax()(x)
    return tf.keras.Model(inputs, outputs, name="fsdd_dscnn")


# ----------------------------------------------------------------------------------------------------
# evaluation


def tflm_outputs(model_path: Path, x: np.ndarray) -> np.ndarray:
    """TFLite Micro's output for every sample, one at a time (its interpreter has batch 1)."""
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_file(str(model_path), arena_size=1 << 20)
    outputs = []
    for sample in x:
        interpreter.set_input(np.ascontiguousarray(sample[None, ..., None]), 0)
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_output(0)).reshape(-1))
    return np.stack(outputs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fsdd", default="../shared/data/fsdd/recordings",
                        help="FSDD recordings folder (default: %(default)s, from the project root)")
    parser.add_argument("--out", default="models/fsdd", help="output folder (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    recordings, out_dir = project_path(args.fsdd), project_path(args.out)
    started = time.monotonic()

    # sized for two CPU cores; deterministic ops make a rerun with the same seed repeat this run
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(args.seed)

    test_files = fsdd_test_files(recordings, TEST_INDICES)
    train_pool = fsdd_test_files(recordings, TRAIN_INDICES)
    val_files = [f for f in train_pool if index_of(f[0]) in VALIDATION_INDICES]
    train_files = [f for f in train_pool if index_of(f[0]) not in VALIDATION_INDICES]
    print(f"clips: {len(train_files)} train, {len(val_files)} validation, {len(test_files)} test", flush=True)

    x_train_clean, x_aug, y_aug = training_features(train_files, AUGMENTED_COPIES, rng)
    y_train_clean = np.array([d for _, d in train_files], dtype=np.int64)
    x_val, y_val = clean_features(val_files), np.array([d for _, d in val_files], dtype=np.int64)
    x_test, y_test = clean_features(test_files), np.array([d for _, d in test_files], dtype=np.int64)
    x_train = np.concatenate([x_train_clean, x_aug])
    y_train = np.concatenate([y_train_clean, y_aug])
    print(f"features ready after {time.monotonic() - started:.0f} s; {len(x_train)} training examples", flush=True)

    frames, coefficients = x_test.shape[1:]
    model = build_model(tf, frames, coefficients)
    history = fit(tf, model, x_train[..., None], y_train, (x_val[..., None], y_val), args.epochs)
    float_test_acc = float(np.mean(np.argmax(model.predict(x_test[..., None], verbose=0), axis=1) == y_test))
    print(f"float test accuracy {float_test_acc:.4f}", flush=True)

    # calibrate on clean training clips only: the device never sees the augmented ones
    pick = rng.permutation(len(x_train_clean))[:REPRESENTATIVE_SAMPLES]
    # converted at batch 1, as on the device: with a free batch dimension Flatten turns into
    # SHAPE/STRIDED_SLICE/PACK ops that compute the batch size at run time
    tflite = keras_to_int8_tflite(model, x_train_clean[pick][..., None])
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / MODEL_FILE
    model_path.write_bytes(tflite)
    (out_dir / FLOAT_MODEL_FILE).write_bytes(keras_to_float_tflite(model))  # what robust.quantize starts from

    graph = microforge.load(model_path)
    quant = graph.inputs[0].quant
    scale, zero_point = float(quant.scale[0]), int(quant.zero_point[0])
    q_test = quantize_input(x_test, scale, zero_point)  # as fsdd_kws_dataset writes the runner's .bin files
    ours = np.asarray(microforge.run(graph, q_test[..., None])).reshape(len(q_test), -1)
    theirs = tflm_outputs(model_path, q_test)
    if not np.array_equal(ours, theirs):
        differing = int(np.sum(np.any(ours != theirs, axis=1)))
        raise SystemExit(f"microforge and TFLite Micro disagree on {differing} of {len(q_test)} test samples")
    correct = int(np.sum(np.argmax(theirs, axis=1) == y_test))
    q_val = quantize_input(x_val, scale, zero_point)
    val_correct = int(np.sum(np.argmax(tflm_outputs(model_path, q_val), axis=1) == y_val))
    totals = microforge.analyze(graph)["totals"]
    arena = plan(graph).arena_bytes

    results = {
        "command": " ".join(["python", "scripts/train_fsdd_kws.py", "--fsdd", args.fsdd, "--out", args.out,
                             "--epochs", str(args.epochs), "--seed", str(args.seed)]),
        "seed": args.seed,
        "epochs": args.epochs,
        "tensorflow": tf.__version__,
        "dataset": "Free Spoken Digit Dataset (Z. Jackson et al.), CC BY-SA 4.0",
        "split": {"train_indices": "5-49 without 9, 18, 27, 36, 45", "validation_indices": list(VALIDATION_INDICES),
                  "test_indices": "0-4"},
        "train_clips": len(train_files),
        "augmented_copies_per_clip": AUGMENTED_COPIES,
        "validation_clips": len(val_files),
        "test_size": len(test_files),
        "architecture": f"DS-CNN: conv 10x4/2 x{CHANNELS}, {DS_BLOCKS} depthwise-separable 3x3 blocks x{CHANNELS}, "
                        f"average pool, dense {NUM_CLASSES}, softmax",
        "parameters": int(model.count_params()),
        "trainable_parameters": int(sum(int(np.prod(w.shape)) for w in model.trainable_weights)),
        "macs": int(totals["macs"]),
        "flash_bytes": int(totals["flash_bytes"]),
        "arena_bytes": int(arena),
        "input_scale": scale,
        "input_zero_point": zero_point,
        "float_validation_accuracy": round(float(history.history["val_accuracy"][-1]), 4),
        "float_test_accuracy": round(float_test_acc, 4),
        "int8_validation_accuracy": round(val_correct / len(y_val), 4),
        "int8_test_correct": correct,
        "int8_test_accuracy_tflm": round(correct / len(y_test), 4),
        "int8_test_accuracy_microforge": round(int(np.sum(np.argmax(ours, axis=1) == y_test)) / len(y_test), 4),
        "model_sha256": hashlib.sha256(tflite).hexdigest(),
        "training_seconds": round(time.monotonic() - started),
    }
    (out_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
