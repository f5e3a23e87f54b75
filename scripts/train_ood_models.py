#!/usr/bin/env python
"""Train the small classifiers of the OOD benchmark and ship them in models/ood.

    .venv/bin/python scripts/train_ood_models.py     # defaults: --har-epochs 150 --kws-epochs 20 --seed 1

(a) Human activity recognition, leave one activity out (microforge.robust.ood.tasks.har_fold): for each of
    the four BasicMotions activities, a 3-class model of the other three, trained on their 30 training
    recordings and measured on their 30 test ones; the held-out activity is the OOD set it never saw.
    Two models per fold, both float32 TFLite at batch 1:
    - har_fold_<activity>_cnn_float.tflite: the 1-D CNN of scripts/train_har.py (its build_model, with a
      3-class head), input (1, 100, 1, 6);
    - har_fold_<activity>_image_float.tflite: the same recordings through the HarImage pre-processing
      (16 x 16 x 3, learned projections) and a small 2-D CNN of the same pattern; the accuracy with fixed
      random projections is measured too (not shipped).
(b) Keyword spotting: the DS-CNN of scripts/train_fsdd_kws.py (its build_model, features and
    augmentation) with an 8-class head, trained on FSDD digits 0-7 only (recording indices 5-49, less the
    validation indices), full-int8 by TensorFlow's converter: fsdd_digits0-7_dscnn_int8.tflite. Digits 8
    and 9 are its near-OOD set (tasks.kws_fold).

Writes --out (default models/ood): the models and training.json (accuracy of every model, the folds'
input normalisation, seeds, timings). Seeds and TensorFlow's deterministic ops are fixed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))
import microforge  # noqa: E402  (first: OR-Tools before TensorFlow)
from microforge.bench.dataset import fsdd_test_files  # noqa: E402
from microforge.bench.features import quantize_input  # noqa: E402
from microforge.frontend.keras import keras_to_float_tflite, keras_to_int8_tflite  # noqa: E402
from microforge.robust.ood.tasks import HAR_CLASSES, HarImage, har_fold, kws_fold  # noqa: E402

import train_fsdd_kws  # noqa: E402  (scripts/: the KWS model, features and augmentation)
import train_har  # noqa: E402  (scripts/: the HAR 1-D CNN)

IMAGE_SIZE = 16
HELD_OUT_DIGITS = (8, 9)
KWS_DIGITS = tuple(d for d in range(10) if d not in HELD_OUT_DIGITS)
KWS_MODEL_FILE = "fsdd_digits0-7_dscnn_int8.tflite"


def project_path(text: str) -> Path:
    path = Path(text)
    return path if path.is_absolute() else ROOT / path


def with_head(tf, base, features_layer: int, classes: int, softmax_layer: bool = False):
    """`base` with its classifier head replaced: a Dense of `classes` on the output of its layer
    `features_layer` (the scripts' builders have the number of classes fixed at 4 and 10)."""
    features = base.layers[features_layer].output
    if softmax_layer:
        outputs = tf.keras.layers.Softmax()(tf.keras.layers.Dense(classes)(features))
    else:
        outputs = tf.keras.layers.Dense(classes, activation="softmax")(features)
    return tf.keras.Model(base.inputs, outputs, name=base.name + f"_{classes}")


def har_image_model(tf, classes: int, n: int, learned: bool, seed: int):
    """HarImage(n) and a 2-D CNN of train_har.build_model's pattern (3 x 3 kernels instead of 5 x 1)."""
    layers = tf.keras.layers
    inputs = tf.keras.Input((100, 1, 6))
    x = HarImage(n, learned=learned, seed=seed)(inputs)
    x = layers.Conv2D(16, (3, 3), strides=(2, 2), padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    for channels in (24, 32):
        x = layers.DepthwiseConv2D((3, 3), padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.Conv2D(channels, (1, 1), use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.AveragePooling2D((2, 2))(x)
    x = layers.AveragePooling2D((x.shape[1], x.shape[2]))(x)  # not GlobalAveragePooling (MEAN)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(classes, activation="softmax")(x)
    return tf.keras.Model(inputs, outputs, name="har_image_cnn")


def train_har_model(tf, model, fold, epochs: int) -> dict:
    """Fit as scripts/train_har.py does (Adam 3e-3, batch 8); the Keras float test accuracy."""
    model.compile(optimizer=tf.keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    started = time.monotonic()
    model.fit(fold.train.x, fold.train.labels, epochs=epochs, batch_size=8, verbose=0)
    test = float(np.mean(model.predict(fold.test.x, verbose=0).argmax(1) == fold.test.labels))
    return {"parameters": int(model.count_params()), "float_test_accuracy": test,
            "training_seconds": round(time.monotonic() - started, 1)}


def ship_float(model, path: Path, fold) -> dict:
    """Write the model as float32 TFLite at batch 1; its accuracy in microforge's reference and its ops."""
    path.write_bytes(keras_to_float_tflite(model))
    graph = microforge.load(path)
    accuracy = float(np.mean(np.asarray(microforge.run(graph, fold.test.x)).argmax(1) == fold.test.labels))
    return {"file": path.name, "float_tflite_test_accuracy": accuracy, "ops": sorted({op.type for op in graph.ops}),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def train_har_folds(tf, out: Path, epochs: int, seed: int) -> dict:
    results = {}
    for held_out in HAR_CLASSES:
        fold = har_fold(held_out)
        entry = {"classes": fold.classes, "train_size": len(fold.train), "test_size": len(fold.test),
                 "ood_size": len(fold.ood), "normalisation": fold.normalisation}
        tf.keras.utils.set_random_seed(seed)
        cnn = with_head(tf, train_har.build_model(tf), -2, len(fold.classes))  # -2: the Dropout before the head
        entry["cnn"] = train_har_model(tf, cnn, fold, epochs)
        entry["cnn"].update(ship_float(cnn, out / f"har_fold_{held_out}_cnn_float.tflite", fold))
        tf.keras.utils.set_random_seed(seed)
        image = har_image_model(tf, len(fold.classes), IMAGE_SIZE, learned=True, seed=seed)
        entry["image"] = train_har_model(tf, image, fold, epochs)
        entry["image"].update(ship_float(image, out / f"har_fold_{held_out}_image_float.tflite", fold))
        tf.keras.utils.set_random_seed(seed)
        fixed = har_image_model(tf, len(fold.classes), IMAGE_SIZE, learned=False, seed=seed)
        entry["image_fixed_random"] = train_har_model(tf, fixed, fold, epochs)  # measured, not shipped
        results[held_out] = entry
        print(f"HAR without {held_out}: cnn {entry['cnn']['float_test_accuracy']:.3f}, image "
              f"{entry['image']['float_test_accuracy']:.3f}, image (fixed random) "
              f"{entry['image_fixed_random']['float_test_accuracy']:.3f}", flush=True)
    return results


def train_kws(tf, out: Path, recordings: Path, epochs: int, seed: int, digits=KWS_DIGITS,
              file: str = KWS_MODEL_FILE) -> dict:
    """The DS-CNN on `digits` only (class k = digits[k]; digits 0-7 by default), as
    scripts/train_fsdd_kws.py trains the 10-digit one; the other digits are its held-out set."""
    started = time.monotonic()
    held_out = tuple(d for d in range(10) if d not in digits)
    rng = np.random.default_rng(seed)
    pool = [f for f in fsdd_test_files(recordings, train_fsdd_kws.TRAIN_INDICES) if f[1] in digits]
    val_files = [f for f in pool if train_fsdd_kws.index_of(f[0]) in train_fsdd_kws.VALIDATION_INDICES]
    train_files = [f for f in pool if train_fsdd_kws.index_of(f[0]) not in train_fsdd_kws.VALIDATION_INDICES]
    x_clean, x_aug, y_aug = train_fsdd_kws.training_features(train_files, train_fsdd_kws.AUGMENTED_COPIES, rng)
    x_train = np.concatenate([x_clean, x_aug])[..., None]
    classes = {d: k for k, d in enumerate(digits)}
    y_train = np.array([classes[d] for d in np.concatenate([[d for _, d in train_files], y_aug])], np.int64)
    x_val = train_fsdd_kws.clean_features(val_files)[..., None]
    y_val = np.array([classes[d] for _, d in val_files], np.int64)
    id_test, near = kws_fold(held_out, recordings=recordings)
    print(f"KWS {digits}: {len(x_train)} training examples, features after {time.monotonic() - started:.0f} s", flush=True)

    tf.keras.utils.set_random_seed(seed)
    # -3: the Flatten after the average pool, before the 10-class Dense and its Softmax
    model = with_head(tf, train_fsdd_kws.build_model(tf, 49, 10), -3, len(digits), softmax_layer=True)
    history = train_fsdd_kws.fit(tf, model, x_train, y_train, (x_val, y_val), epochs)
    float_test = float(np.mean(model.predict(id_test.x, verbose=0).argmax(1) == id_test.labels))

    pick = rng.permutation(len(x_clean))[:train_fsdd_kws.REPRESENTATIVE_SAMPLES]  # clean clips only
    path = out / file
    path.write_bytes(keras_to_int8_tflite(model, x_clean[pick][..., None]))
    graph = microforge.load(path)
    scale, zero_point = graph.inputs[0].scale, graph.inputs[0].zero_point
    q_test = quantize_input(id_test.x[..., 0], scale, zero_point)
    ours = np.asarray(microforge.run(graph, q_test[..., None])).reshape(len(q_test), -1)
    theirs = train_fsdd_kws.tflm_outputs(path, q_test)
    return {"file": path.name, "digits": list(digits), "held_out_digits": list(held_out),
            "train_clips": len(train_files), "augmented_copies_per_clip": train_fsdd_kws.AUGMENTED_COPIES,
            "validation_clips": len(val_files), "test_size": len(id_test), "near_ood_size": len(near),
            "epochs": epochs, "parameters": int(model.count_params()),
            "input_scale": scale, "input_zero_point": zero_point,
            "float_validation_accuracy": round(float(history.history["val_accuracy"][-1]), 4),
            "float_test_accuracy": round(float_test, 4),
            "int8_test_accuracy_microforge": round(float(np.mean(ours.argmax(1) == id_test.labels)), 4),
            "int8_test_accuracy_tflm": round(float(np.mean(theirs.argmax(1) == id_test.labels)), 4),
            "microforge_equals_tflm": bool(np.array_equal(ours, theirs)),
            "ops": sorted({op.type for op in graph.ops}),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "training_seconds": round(time.monotonic() - started)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--har-epochs", type=int, default=150)
    parser.add_argument("--kws-epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fsdd", default="../shared/data/fsdd/recordings",
                        help="FSDD recordings folder (default: %(default)s, from the project root)")
    parser.add_argument("--out", default="models/ood", help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    out = project_path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.experimental.enable_op_determinism()
    results = {
        "command": (f"python scripts/train_ood_models.py --har-epochs {args.har_epochs} --kws-epochs "
                    f"{args.kws_epochs} --seed {args.seed} --fsdd {args.fsdd} --out {args.out}"),
        "seed": args.seed, "tensorflow": tf.__version__, "har_epochs": args.har_epochs, "image_size": IMAGE_SIZE,
        "har": train_har_folds(tf, out, args.har_epochs, args.seed),
        "kws": train_kws(tf, out, project_path(args.fsdd), args.kws_epochs, args.seed),
    }
    (out / "training.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results["kws"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
