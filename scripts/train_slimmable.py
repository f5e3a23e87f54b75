#!/usr/bin/env python
"""Train the slimmable families of microforge.dynamic and ship every width as a float32 TFLite model.

    .venv/bin/python scripts/train_slimmable.py                 # both families, defaults below
    .venv/bin/python scripts/train_slimmable.py --only digits   # one of them

Two families, each at widths 0.25, 0.5, 0.75 and 1.0 by default (--widths; microforge.dynamic.train has the method: sandwich
rule, in-place distillation, switchable batch norm, BN folded at export):

fsdd_slimmable: the DS-CNN of scripts/train_fsdd_kws.py (conv 10x4/2 x32, four depthwise-separable 3x3
blocks x32, average pool, dense 10, softmax; dropout 0.1 and 0.3 as there) on the Free Spoken Digit
Dataset, with that script's features, split and augmentation (imported from it). Width 1.0 has 32
channels per layer, width 0.25 has 8.

digits_slimmable: a small DS-CNN (conv 3x3 x16, two depthwise-separable 3x3 blocks x32, average pool,
dense 10, softmax; dropout 0.1 before the pool) on scikit-learn's 8 x 8 digits, values scaled to [0, 1],
split by a fixed permutation (seed 1): the first 80% train, the last 20% test.

--depths 1,2,4 adds depth options: the family's members are then every (width, depth) pair, a member of
depth d running the first d depthwise-separable blocks (training samples members, not widths, for the
sandwich).

For each family, every member is also trained alone as its baseline: the same architecture at that width
and depth, nothing shared, plain cross-entropy, the same epochs, batches and schedule. --baselines DIR
takes them from an earlier run's float/ folder instead (they depend on the epochs and seed, not on the
family's options). Writes to
models/dynamic/<family>/float/: width_<w>.tflite or width_<w>_depth_<d>.tflite (the shared family),
alone_width_<w>[_depth_<d>].tflite (the baselines), training.json (how they were made and their float and int8 test accuracies; int8 by
microforge's quantizer and reference interpreter). The calibration inputs (300 training samples, float32,
(N, *input shape)) go to build/dynamic/<family>/calibration.npy, not into the models folder; if
microforge.dynamic.family.save_family exists it is handed the family to quantize.
Relative paths are taken from the project root, so the script runs from any directory.
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
sys.path.insert(0, str(ROOT / "scripts"))
import train_fsdd_kws  # noqa: E402  (scripts/: the FSDD features, split, augmentation and optimiser settings)

import microforge  # noqa: E402  (first: OR-Tools before TensorFlow)

FAMILIES = ("fsdd", "digits")
CALIBRATION_SAMPLES = 300
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 1  # the split stays the same whatever --seed the training takes
DIGITS_BATCH_SIZE = 32


def project_path(text: str) -> Path:
    path = Path(text)
    return path if path.is_absolute() else ROOT / path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------------------------
# data


def fsdd_data(recordings: Path, seed: int) -> dict:
    """FSDD as scripts/train_fsdd_kws.py prepares it: x (N, 49, 10, 1) float32 MFCCs, y the digit. The
    training set is the clean clips plus AUGMENTED_COPIES perturbed copies of each; calibration takes
    clean training clips only (the device never sees augmented ones)."""
    kws = train_fsdd_kws
    from microforge.bench.dataset import fsdd_test_files

    rng = np.random.default_rng(seed)
    test_files = fsdd_test_files(recordings, kws.TEST_INDICES)
    pool = fsdd_test_files(recordings, kws.TRAIN_INDICES)
    val_files = [f for f in pool if kws.index_of(f[0]) in kws.VALIDATION_INDICES]
    train_files = [f for f in pool if kws.index_of(f[0]) not in kws.VALIDATION_INDICES]
    clean, augmented, y_augmented = kws.training_features(train_files, kws.AUGMENTED_COPIES, rng)
    y_clean = np.array([d for _, d in train_files], dtype=np.int64)
    pick = rng.permutation(len(clean))[:CALIBRATION_SAMPLES]
    return {
        "x_train": np.concatenate([clean, augmented])[..., None], "y_train": np.concatenate([y_clean, y_augmented]),
        "x_val": kws.clean_features(val_files)[..., None],
        "y_val": np.array([d for _, d in val_files], dtype=np.int64),
        "x_test": kws.clean_features(test_files)[..., None],
        "y_test": np.array([d for _, d in test_files], dtype=np.int64),
        "calibration": clean[pick][..., None].astype(np.float32),
        "dataset": "Free Spoken Digit Dataset (Z. Jackson et al.), CC BY-SA 4.0",
        "split": {"train_indices": "5-49 without 9, 18, 27, 36, 45", "validation_indices": list(kws.VALIDATION_INDICES),
                  "test_indices": "0-4", "train_clips": len(train_files),
                  "augmented_copies_per_clip": kws.AUGMENTED_COPIES, "validation_clips": len(val_files),
                  "test_clips": len(test_files), "calibration": f"{CALIBRATION_SAMPLES} clean training clips"},
    }


def digits_data(seed: int) -> dict:
    """scikit-learn's digits: x (N, 8, 8, 1) float32 in [0, 1] (pixel values 0-16 / 16), y the digit. A fixed
    permutation (DIGITS_SPLIT_SEED): the first 80% train, the last 20% test; calibration is the first
    training images of a permutation by `seed`."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[..., None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(x))
    cut = int(round(len(x) * (1.0 - DIGITS_TEST_FRACTION)))
    train, test = order[:cut], order[cut:]
    pick = np.random.default_rng(seed).permutation(len(train))[:CALIBRATION_SAMPLES]
    return {
        "x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test],
        "calibration": x[train][pick],
        "dataset": "scikit-learn digits (UCI, CC BY 4.0)",
        "split": {"rule": f"permutation by numpy default_rng({DIGITS_SPLIT_SEED}) of the 1,797 images: first "
                          f"{len(train)} train, last {len(test)} test", "train_images": len(train),
                  "test_images": len(test), "calibration": f"{CALIBRATION_SAMPLES} training images"},
    }


def architecture(family: str):
    from microforge.dynamic.train import Architecture

    kws = train_fsdd_kws
    if family == "fsdd":
        return Architecture("fsdd_slimmable", (49, 10, 1), kws.NUM_CLASSES, kws.CHANNELS, (10, 4), (2, 2),
                            (kws.CHANNELS,) * kws.DS_BLOCKS, stem_dropout=0.1, head_dropout=0.3)
    return Architecture("digits_slimmable", (8, 8, 1), 10, 16, (3, 3), (1, 1), (32, 32), head_dropout=0.1)


# ----------------------------------------------------------------------------------------------------------
# evaluation


def evaluate(path: Path, data: dict) -> dict:
    """Test accuracy of a float .tflite by microforge's reference interpreter, and of its int8 version by
    microforge's quantizer (calibrated on data['calibration']); its MACs and parameters."""
    from microforge.reference.interpreter import run
    from microforge.robust.assess import quantize_inputs
    from microforge.robust.quantizer import quantize_graph

    graph = microforge.load(path)
    x, y = data["x_test"], data["y_test"]
    float_out = np.asarray(run(graph, x.astype(np.float32))).reshape(len(x), -1)
    quantized = quantize_graph(graph, data["calibration"], "int8").graph
    int8_out = np.asarray(run(quantized, quantize_inputs(quantized, x))).reshape(len(x), -1)
    return {
        "float_test_accuracy": round(float(np.mean(np.argmax(float_out, axis=1) == y)), 4),
        "int8_test_accuracy": round(float(np.mean(np.argmax(int8_out, axis=1) == y)), 4),
        "macs": int(microforge.analyze(graph)["totals"]["macs"]),
        "parameters": int(sum(t.size for t in graph.constants)),
    }


# ----------------------------------------------------------------------------------------------------------
# one family


def ship_family(family: str, data: dict, args, command: str) -> dict:
    import keras
    import tensorflow as tf

    from microforge.dynamic import train as dyn
    from microforge.frontend.reader import read_tflite

    arch = architecture(family)
    out_dir = project_path(args.out) / arch.name / "float"
    out_dir.mkdir(parents=True, exist_ok=True)
    epochs = args.epochs_fsdd if family == "fsdd" else args.epochs_digits
    options = {"epochs": epochs, "seed": args.seed, "learning_rate": train_fsdd_kws.LEARNING_RATE,
               "batch_size": train_fsdd_kws.BATCH_SIZE if family == "fsdd" else DIGITS_BATCH_SIZE}
    validation = (data["x_val"], data["y_val"]) if "x_val" in data else None
    print(f"{arch.name}: {len(data['x_train'])} training, {len(data['x_test'])} test samples; {epochs} epochs",
          flush=True)

    started = time.monotonic()
    keras.utils.set_random_seed(args.seed)
    net = dyn.SlimmableNet(arch, dyn.check_widths(args.widths), depths=args.depths)
    history = dyn.train(net, data["x_train"], data["y_train"], random_widths=args.random_widths,
                        temperature=args.temperature, validation=validation, **options)
    shared_seconds = time.monotonic() - started
    # without --depths a member is its width alone (depth None: every block), as in the files' names
    members = [(w, d if args.depths else None) for w, d in net.members()]
    paths = {}
    for width, depth in members:
        suffix = "" if depth is None else f"_depth_{depth}"
        paths[width, depth] = out_dir / f"width_{width}{suffix}.tflite"
        paths[width, depth].write_bytes(dyn.export_tflite(net, width, depth))
    dyn.check_shared({(m if args.depths else m[0]): read_tflite(p) for m, p in paths.items()})
    print(f"{arch.name}: shared family trained in {shared_seconds:.0f} s, weights shared across members", flush=True)

    widths = {}
    for width, depth in members:
        key = dyn.member_key(net, width, depth)
        entry = {"channels": arch.at(width, depth).hidden_channels()}
        shared = evaluate(paths[width, depth], data)
        entry.update({"macs": shared["macs"], "parameters": shared["parameters"],
                      "float_test_accuracy_shared": shared["float_test_accuracy"],
                      "int8_test_accuracy_shared_independent": shared["int8_test_accuracy"]})
        if validation is not None:
            entry["float_validation_accuracy_shared"] = round(history[-1]["validation_accuracy"][key], 4)
        alone_path = out_dir / ("alone_" + paths[width, depth].name)
        earlier = project_path(args.baselines) / alone_path.name if args.baselines else None
        started_alone = time.monotonic()
        if earlier is not None and earlier.is_file():
            alone_path.write_bytes(earlier.read_bytes())
            entry["alone_from"] = str(args.baselines)
        else:
            keras.utils.set_random_seed(args.seed)
            alone = dyn.train_alone(arch, width, data["x_train"], data["y_train"], depth=depth,
                                    validation=validation, **options)
            alone_path.write_bytes(dyn.export_tflite(alone, 1.0))
            entry["alone_training_seconds"] = round(time.monotonic() - started_alone)
        baseline = evaluate(alone_path, data)
        entry.update({"float_test_accuracy_alone": baseline["float_test_accuracy"],
                      "int8_test_accuracy_alone": baseline["int8_test_accuracy"]})
        entry["float_gap_pp"] = round(100 * (entry["float_test_accuracy_shared"] - entry["float_test_accuracy_alone"]), 2)
        widths[key] = entry
        print(f"{arch.name} member {key}: {json.dumps(entry)}", flush=True)

    middle = len(members) - 2
    between = "all" if args.random_widths >= middle else f"{args.random_widths} drawn at random"
    calibration_path = ROOT / "build" / "dynamic" / arch.name / "calibration.npy"
    calibration_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(calibration_path, data["calibration"].astype(np.float32))
    results = {
        "command": command,
        "seed": args.seed,
        "epochs": epochs,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "dataset": data["dataset"],
        "split": data["split"],
        "architecture": arch.describe(),
        "widths_trained": list(net.widths),
        "depths_trained": list(net.depths),
        "training": {"method": f"sandwich rule: per step the largest member (on the labels), the smallest and "
                               f"{between} of the members between, in-place distillation (soft-target cross-entropy "
                               f"at temperature {args.temperature:g}, stop-gradient on the largest member's outputs), "
                               f"one BN per width, gamma >= {dyn.GAMMA_MIN:g}", "optimizer": "Adam, cosine decay to 0",
                     "learning_rate": options["learning_rate"], "batch_size": options["batch_size"],
                     "shared_training_seconds": round(shared_seconds),
                     "alone": "each member on its own: same architecture at that width and depth, plain "
                              "cross-entropy, same epochs, batches, seed and schedule"},
        "test_size": int(len(data["y_test"])),
        "accuracies": "test accuracy, by microforge's reference interpreter. float: the .tflite files here. "
                      "int8_..._independent and int8_..._alone: each float model quantized on its own by "
                      "microforge.robust.quantizer (int8, per-channel weights, calibration below). "
                      "int8_test_accuracy_family: the int8 members written by microforge.dynamic.family.save_family, "
                      "whose weights are the same bytes at every width. float_gap_pp: shared minus alone, float, "
                      "in percentage points.",
        "widths": widths,
        "files": {p.name: sha256(p) for p in sorted(out_dir.glob("*.tflite"))},
        "calibration": {"file": f"build/dynamic/{arch.name}/calibration.npy (not shipped)",
                        "shape": list(data["calibration"].shape)},
        "total_seconds": round(time.monotonic() - started),
    }
    results_path = out_dir / "training.json"
    results_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    family_dir = project_path(args.out) / arch.name
    if hand_to_family(family_dir, members, [paths[m] for m in members], data["calibration"], results):
        for (width, depth), accuracy in zip(members, family_accuracies(family_dir, data)):
            widths[dyn.member_key(net, width, depth)]["int8_test_accuracy_family"] = accuracy
        results_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


def family_accuracies(family_dir: Path, data: dict) -> list[float]:
    """Test accuracy of each int8 member that save_family wrote (microforge.dynamic.family.load_family,
    which also checks that the members share their weight bytes), by the reference interpreter."""
    from microforge.dynamic.family import load_family
    from microforge.reference.interpreter import run
    from microforge.robust.assess import quantize_inputs

    family = load_family(family_dir)
    x, y = data["x_test"], data["y_test"]
    accuracies = []
    for graph in family.graphs:
        out = np.asarray(run(graph, quantize_inputs(graph, x))).reshape(len(x), -1)
        accuracies.append(round(float(np.mean(np.argmax(out, axis=1) == y)), 4))
    return accuracies


def hand_to_family(out_dir: Path, members, float_models, calibration: np.ndarray, info: dict) -> bool:
    """Give the family to microforge.dynamic.family.save_family (its quantized, shared-bytes form), if that
    exists; returns whether it did."""
    try:
        from microforge.dynamic import family

        save_family = family.save_family
    except (ImportError, AttributeError):
        print("note: microforge.dynamic.family.save_family does not exist yet; the int8 family was not saved",
              flush=True)
        return False
    depths = [d for _, d in members]
    save_family(out_dir=out_dir, widths=[w for w, _ in members], float_models=list(float_models),
                calibration=calibration, info=info, depths=None if depths[0] is None else depths)
    print(f"save_family wrote the int8 family to {out_dir.relative_to(ROOT) if out_dir.is_relative_to(ROOT) else out_dir}",
          flush=True)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fsdd", default="../shared/data/fsdd/recordings",
                        help="FSDD recordings folder (default: %(default)s, from the project root)")
    parser.add_argument("--out", default="models/dynamic", help="output folder (default: %(default)s)")
    parser.add_argument("--only", choices=FAMILIES, help="train this family only")
    parser.add_argument("--epochs-fsdd", type=int, default=20)
    parser.add_argument("--epochs-digits", type=int, default=60)
    parser.add_argument("--random-widths", type=int, default=2,
                        help="members drawn between the smallest and largest per step (default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=1.0, help="distillation temperature")
    parser.add_argument("--widths", type=lambda text: tuple(float(w) for w in text.split(",")),
                        default="0.25,0.5,0.75,1", help="comma-separated widths (default: %(default)s)")
    parser.add_argument("--depths", type=lambda text: tuple(int(d) for d in text.split(",")), default=None,
                        help="comma-separated block counts for depth options (default: none, every block runs)")
    parser.add_argument("--baselines", default=None,
                        help="folder of alone_*.tflite baselines from an earlier run with the same epochs and seed "
                             "(the float/ folder it wrote): used instead of training them again")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    command = " ".join(["python", "scripts/train_slimmable.py"] + (["--only", args.only] if args.only else [])
                       + ["--fsdd", args.fsdd, "--out", args.out, "--epochs-fsdd", str(args.epochs_fsdd),
                          "--epochs-digits", str(args.epochs_digits), "--random-widths", str(args.random_widths),
                          "--temperature", f"{args.temperature:g}", "--seed", str(args.seed),
                          "--widths", ",".join(f"{w:g}" for w in args.widths)]
                       + (["--depths", ",".join(map(str, args.depths))] if args.depths else [])
                       + (["--baselines", args.baselines] if args.baselines else []))

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()  # a rerun with the same seed repeats the training
    for family in FAMILIES if args.only is None else (args.only,):
        started = time.monotonic()
        data = fsdd_data(project_path(args.fsdd), args.seed) if family == "fsdd" else digits_data(args.seed)
        print(f"{family}: data ready after {time.monotonic() - started:.0f} s", flush=True)
        results = ship_family(family, data, args, command)
        print(json.dumps(results["widths"], indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
