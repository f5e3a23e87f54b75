#!/usr/bin/env python
"""Train the model the continual-learning scenarios start from and ship it in models/learn.

    .venv/bin/python scripts/train_learn_models.py     # defaults: --epochs 20 --seed 1

fsdd_digits0-4_int8.tflite: the DS-CNN of scripts/train_fsdd_kws.py (its model, features and
augmentation) with a 5-class head, trained on FSDD digits 0-4 only (recording indices 5-49 less the
validation indices): the first experience of the class-incremental scenario
(microforge.learn.scenarios), whose later experiences teach it digits 5-9 on the device. Full int8 by
TensorFlow's converter.

digits0-4_cnn_int8.tflite: a small CNN (conv, depthwise conv, pointwise conv, average pool, dense) on
scikit-learn's 8 x 8 digits 0-4 (the training images of learn.scenarios' fixed split), full int8: the
start of digits-class-incremental, and small enough for the test suite.

Writes --out (default models/learn): the models and training.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import train_ood_models  # noqa: E402  (scripts/: its DS-CNN training on a subset of the digits)

DIGITS = (0, 1, 2, 3, 4)
MODEL_FILE = "fsdd_digits0-4_int8.tflite"
IMAGE_MODEL_FILE = "digits0-4_cnn_int8.tflite"


def train_digits(tf, out: Path, epochs: int, seed: int) -> dict:
    """The small CNN on scikit-learn's digits 0-4 (learn.scenarios' training images), full int8."""
    import hashlib

    import numpy as np

    import microforge
    from microforge.frontend.keras import keras_to_int8_tflite
    from microforge.learn.scenarios import digits_class_incremental
    from microforge.graph.ir import Tensor

    first = digits_class_incremental(Tensor("x", (1, 8, 8, 1), np.float32))[0]
    x, y = first.train_x[:, 0], first.train_y
    tf.keras.utils.set_random_seed(seed)
    layers = tf.keras.layers
    model = tf.keras.Sequential([
        tf.keras.Input((8, 8, 1)),
        layers.Conv2D(16, 3, padding="same", activation="relu"),
        layers.DepthwiseConv2D(3, padding="same", activation="relu"),
        layers.Conv2D(32, 1, activation="relu"),
        layers.AveragePooling2D(4),  # 2 x 2 positions kept: where a stroke is matters
        layers.Flatten(),
        layers.Dense(len(DIGITS)),
        layers.Softmax(),
    ])
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=2)
    path = out / IMAGE_MODEL_FILE
    path.write_bytes(keras_to_int8_tflite(model, x[:200]))
    graph = microforge.load(path)
    test = digits_class_incremental(graph.inputs[0])[0]
    int8 = np.asarray(microforge.run(graph, test.test_x)).reshape(len(test.test_y), -1)
    return {"file": path.name, "digits": list(DIGITS), "train_images": len(y), "test_images": len(test.test_y),
            "epochs": epochs, "parameters": int(model.count_params()),
            "float_test_accuracy": round(float(np.mean(model.predict(first.test_x[:, 0], verbose=0).argmax(1)
                                                       == first.test_y)), 4),
            "int8_test_accuracy_microforge": round(float(np.mean(int8.argmax(1) == test.test_y)), 4),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--digits-epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", choices=("fsdd", "digits"), help="train one of the two models")
    parser.add_argument("--fsdd", default="../shared/data/fsdd/recordings",
                        help="FSDD recordings folder (default: %(default)s, from the project root)")
    parser.add_argument("--out", default="models/learn", help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    out = train_ood_models.project_path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.experimental.enable_op_determinism()
    record = out / "training.json"
    results = json.loads(record.read_text()) if record.exists() else {}
    results.update({"seed": args.seed, "tensorflow": tf.__version__})
    if args.only in (None, "fsdd"):
        results["kws"] = train_ood_models.train_kws(tf, out, train_ood_models.project_path(args.fsdd), args.epochs,
                                                    args.seed, digits=DIGITS, file=MODEL_FILE)
        results["kws_command"] = (f"python scripts/train_learn_models.py --only fsdd --epochs {args.epochs} "
                                  f"--seed {args.seed} --fsdd {args.fsdd} --out {args.out}")
    if args.only in (None, "digits"):
        results["digits"] = train_digits(tf, out, args.digits_epochs, args.seed)
        results["digits_command"] = (f"python scripts/train_learn_models.py --only digits --digits-epochs "
                                     f"{args.digits_epochs} --seed {args.seed} --out {args.out}")
    record.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
