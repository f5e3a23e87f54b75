#!/usr/bin/env python
"""Train the models the continual-learning scenarios start from and ship them in models/learn.

    .venv/bin/python scripts/train_learn_models.py     # defaults: --epochs 20 --seed 1, all four models
    .venv/bin/python scripts/train_learn_models.py --only fsdd-speakers    # one of them

fsdd_digits0-4_int8.tflite: the DS-CNN of scripts/train_fsdd_kws.py (its model, features and
augmentation) with a 5-class head, trained on FSDD digits 0-4 only (recording indices 5-49 less the
validation indices): the first experience of the class-incremental scenario
(microforge.learn.scenarios), whose later experiences teach it digits 5-9 on the device. Full int8 by
TensorFlow's converter.

digits0-4_cnn_int8.tflite: a small CNN (conv, depthwise conv, pointwise conv, average pool, dense) on
scikit-learn's 8 x 8 digits 0-4 (the training images of learn.scenarios' fixed split), full int8: the
start of digits-class-incremental, and small enough for the test suite.

fsdd_speakers_jackson-nicolas-theo_int8.tflite: the DS-CNN of fsdd_digits0-4 (same model, features,
augmentation, schedule) with its 10-class head, trained on all ten digits of the speakers jackson,
nicolas and theo only (indices 5-49 less the validation indices): the first experience of
fsdd-new-instances, whose later experiences are the other three speakers. Its accuracy on each of those
(test indices 0-4, and all their 500 clips) is recorded: what the scenario has to learn.

digits0-9_clean_cnn_int8.tflite: the small CNN of digits0-4 with a 10-class head, trained on the clean
training images of all ten digits: the first experience of digits-new-instances, whose later
experiences are the same images rotated. Its accuracy at every rotation is recorded.

Writes --out (default models/learn): the models and training.json (the entries of the models trained,
the others kept).
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
SPEAKERS_MODEL_FILE = "fsdd_speakers_jackson-nicolas-theo_int8.tflite"
CLEAN_IMAGE_MODEL_FILE = "digits0-9_clean_cnn_int8.tflite"
MODELS = ("fsdd", "digits", "fsdd-speakers", "digits-clean")  # --only's choices


def train_digits(tf, out: Path, epochs: int, seed: int, scenario: str = "digits-class-incremental",
                 file: str = IMAGE_MODEL_FILE) -> dict:
    """The small CNN on the training images of `scenario`'s first experience (learn.scenarios: digits 0-4
    of digits-class-incremental by default, or the clean images of all ten of digits-new-instances),
    one output per class it holds, full int8. For a new-instances scenario, its int8 accuracy on every
    experience's test images is recorded too."""
    import hashlib

    import numpy as np

    import microforge
    from microforge.frontend.keras import keras_to_int8_tflite
    from microforge.learn.scenarios import scenario as make_scenario
    from microforge.graph.ir import Tensor

    first = make_scenario(scenario, Tensor("x", (1, 8, 8, 1), np.float32))[0]
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
        layers.Dense(len(first.classes)),
        layers.Softmax(),
    ])
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=2)
    path = out / file
    path.write_bytes(keras_to_int8_tflite(model, x[:200]))
    graph = microforge.load(path)
    stream = make_scenario(scenario, graph.inputs[0])

    def int8_accuracy(experience) -> float:
        outputs = np.asarray(microforge.run(graph, experience.test_x)).reshape(len(experience.test_y), -1)
        return round(float(np.mean(outputs.argmax(1) == experience.test_y)), 4)

    test = stream[0]
    record = {"file": path.name, "digits": list(first.classes), "train_images": len(y),
              "test_images": len(test.test_y), "epochs": epochs, "parameters": int(model.count_params()),
              "float_test_accuracy": round(float(np.mean(model.predict(first.test_x[:, 0], verbose=0).argmax(1)
                                                         == first.test_y)), 4),
              "int8_test_accuracy_microforge": int8_accuracy(test)}
    if scenario.endswith("new-instances"):
        # what the later experiences start from: the clean model on each shifted test set
        record["int8_test_accuracy_per_experience"] = {e.domain: int8_accuracy(e) for e in stream}
    record["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return record


def train_speakers(tf, out: Path, recordings: Path, epochs: int, seed: int, file: str = SPEAKERS_MODEL_FILE) -> dict:
    """The DS-CNN on all ten digits of fsdd-new-instances' first speakers only (learn.scenarios
    FIRST_SPEAKERS), trained as train_ood_models.train_kws trains the digit-subset ones: the same features,
    augmentation, validation indices, schedule and int8 conversion; measured on the seen speakers' test
    clips (TFLite Micro and microforge) and on every new speaker's test clips and all its clips."""
    import hashlib
    import time

    import numpy as np

    import microforge
    from microforge.bench.features import quantize_input
    from microforge.frontend.keras import keras_to_int8_tflite
    from microforge.learn.scenarios import FIRST_SPEAKERS, LATER_SPEAKERS, fsdd_speaker_files
    import train_fsdd_kws

    started = time.monotonic()
    rng = np.random.default_rng(seed)
    pool = fsdd_speaker_files(recordings, train_fsdd_kws.TRAIN_INDICES, FIRST_SPEAKERS)
    val_files = [f for f in pool if train_fsdd_kws.index_of(f[0]) in train_fsdd_kws.VALIDATION_INDICES]
    train_files = [f for f in pool if train_fsdd_kws.index_of(f[0]) not in train_fsdd_kws.VALIDATION_INDICES]
    x_clean, x_aug, y_aug = train_fsdd_kws.training_features(train_files, train_fsdd_kws.AUGMENTED_COPIES, rng)
    x_train = np.concatenate([x_clean, x_aug])[..., None]
    y_train = np.concatenate([[d for _, d in train_files], y_aug]).astype(np.int64)
    x_val = train_fsdd_kws.clean_features(val_files)[..., None]
    y_val = np.array([d for _, d in val_files], np.int64)
    test_files = fsdd_speaker_files(recordings, train_fsdd_kws.TEST_INDICES, FIRST_SPEAKERS)
    x_test = train_fsdd_kws.clean_features(test_files)
    y_test = np.array([d for _, d in test_files], np.int64)
    print(f"KWS speakers {FIRST_SPEAKERS}: {len(x_train)} training examples, features after "
          f"{time.monotonic() - started:.0f} s", flush=True)

    tf.keras.utils.set_random_seed(seed)
    model = train_fsdd_kws.build_model(tf, 49, 10)  # its own 10-class head: all digits are there
    history = train_fsdd_kws.fit(tf, model, x_train, y_train, (x_val, y_val), epochs)
    float_test = float(np.mean(model.predict(x_test[..., None], verbose=0).argmax(1) == y_test))

    pick = rng.permutation(len(x_clean))[:train_fsdd_kws.REPRESENTATIVE_SAMPLES]  # clean clips only
    path = out / file
    path.write_bytes(keras_to_int8_tflite(model, x_clean[pick][..., None]))
    graph = microforge.load(path)
    scale, zero_point = graph.inputs[0].scale, graph.inputs[0].zero_point

    def int8(x):
        q = quantize_input(x, scale, zero_point)
        return q, np.asarray(microforge.run(graph, q[..., None])).reshape(len(q), -1)

    q_test, ours = int8(x_test)
    theirs = train_fsdd_kws.tflm_outputs(path, q_test)
    new_speakers = {}
    for speaker in LATER_SPEAKERS:
        # its test clips (what the scenario measures) and all its 500 (a less noisy estimate)
        entry = {}
        for part, indices in (("test", train_fsdd_kws.TEST_INDICES), ("all", range(50))):
            files = fsdd_speaker_files(recordings, indices, (speaker,))
            labels = np.array([d for _, d in files], np.int64)
            _, outputs = int8(train_fsdd_kws.clean_features(files))
            entry[f"int8_accuracy_{part}_clips"] = round(float(np.mean(outputs.argmax(1) == labels)), 4)
            entry[f"{part}_clips"] = len(files)
        new_speakers[speaker] = entry
    return {"file": path.name, "speakers": list(FIRST_SPEAKERS), "new_speakers": list(LATER_SPEAKERS),
            "digits": list(range(10)), "train_clips": len(train_files),
            "augmented_copies_per_clip": train_fsdd_kws.AUGMENTED_COPIES, "validation_clips": len(val_files),
            "test_size": len(test_files), "epochs": epochs, "parameters": int(model.count_params()),
            "input_scale": scale, "input_zero_point": zero_point,
            "float_validation_accuracy": round(float(history.history["val_accuracy"][-1]), 4),
            "float_test_accuracy": round(float_test, 4),
            "int8_test_accuracy_microforge": round(float(np.mean(ours.argmax(1) == y_test)), 4),
            "int8_test_accuracy_tflm": round(float(np.mean(theirs.argmax(1) == y_test)), 4),
            "microforge_equals_tflm": bool(np.array_equal(ours, theirs)),
            "new_speaker_accuracy": new_speakers,
            "ops": sorted({op.type for op in graph.ops}),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "training_seconds": round(time.monotonic() - started)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--digits-epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", choices=MODELS, help="train one model: fsdd (fsdd_digits0-4), digits "
                        "(digits0-4_cnn), fsdd-speakers (fsdd_speakers_jackson-nicolas-theo), digits-clean "
                        "(digits0-9_clean_cnn); default: all four")
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
    if args.only in (None, "fsdd-speakers"):
        results["fsdd_speakers"] = train_speakers(tf, out, train_ood_models.project_path(args.fsdd), args.epochs,
                                                  args.seed)
        results["fsdd_speakers_command"] = (f"python scripts/train_learn_models.py --only fsdd-speakers --epochs "
                                            f"{args.epochs} --seed {args.seed} --fsdd {args.fsdd} --out {args.out}")
    if args.only in (None, "digits-clean"):
        results["digits_clean"] = train_digits(tf, out, args.digits_epochs, args.seed, "digits-new-instances",
                                               CLEAN_IMAGE_MODEL_FILE)
        results["digits_clean_command"] = (f"python scripts/train_learn_models.py --only digits-clean "
                                           f"--digits-epochs {args.digits_epochs} --seed {args.seed} --out {args.out}")
    record.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
