#!/usr/bin/env python
"""Train every variant of the representations study on FSDD and ship each as a full-int8 TFLite model.

    .venv/bin/python scripts/train_representations.py          # about 30 minutes on two CPU cores

The variants (microforge.robust.ood.representations builds and trains them), all with the architecture of
the shipped FSDD DS-CNN (scripts/train_fsdd_kws.py: conv 10x4/2 x32, four depthwise-separable blocks,
average pool, dense 10) unless truncated:

- plain: trained from scratch (the baseline), 20 epochs; plain_seed2: the same with another seed, to show
  how much two runs of the baseline differ;
- {dae,vae,dvae}_{frozen,finetuned}: the encoder of a denoising, variational or variational +
  discriminative autoencoder (15 epochs each) with a new head. Frozen: the head alone is fitted, as a
  linear probe on the standardised averaged features (representations.train_head). Fine-tuned: that probe,
  then everything trained for 20 epochs at a third of the learning rate (linear probing before
  fine-tuning, so that a random head does not wreck the pretrained features in the first steps);
- transfer_k{0,1,2}_{frozen,finetuned}: the trained plain classifier without its last k blocks and with a
  new head, the rest frozen (the probe alone) or fine-tuned (the probe, then 10 epochs at a third of the
  learning rate).

Data as scripts/train_fsdd_kws.py: recording indices 0-4 are the test set (not used here, only by the
benchmark), 5-49 train, of which 9, 18, 27, 36 and 45 are a validation set that is only reported. Every
training clip is used clean and in `--copies` augmented copies (white noise 15-40 dB under the word and a
time shift, the shipped model's augmentation). The denoising autoencoder reconstructs each augmented copy's
clean version (the same time shift without the noise): it learns to undo the noise the classifiers are
trained with, nothing about the benchmark's 5 dB test noise.

Writes to --out (default models/representations): {variant}_int8.tflite (TensorFlow's converter, int8
input and output, calibrated on 500 clean training clips, at batch 1) and training.json (per variant: float
validation and test accuracy, parameters, loss per epoch, seconds; the autoencoders' losses).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

import microforge  # noqa: F401  (first: OR-Tools before TensorFlow)
from microforge.bench.audio import read_wav
from microforge.bench.dataset import fsdd_test_files
from microforge.bench.features import KWS_SAMPLE_RATE, KWS_SAMPLES, kws_features_from_wav, kws_mfcc, kws_waveform

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
# the shipped model's split and augmentation, so that the baseline here is trained as it was
from train_fsdd_kws import MAX_ADVANCE, MAX_DELAY, NOISE_SNR_DB, VALIDATION_INDICES, index_of  # noqa: E402

RESULTS_FILE = "training.json"
TEST_INDICES = range(5)
TRAIN_INDICES = range(5, 50)
REPRESENTATIVE_SAMPLES = 500
LEARNING_RATE = 3e-3
FINE_TUNE_RATE = 1e-3  # a third: start from the pretrained weights without washing them out at once
EPOCHS = {"classifier": 20, "autoencoder": 15, "head": 200, "transfer": 10}  # head: over features
AUTOENCODERS = {"dae": "denoising", "vae": "variational", "dvae": "discriminative"}
TRUNCATIONS = (0, 1, 2)


def project_path(text: str) -> Path:
    path = Path(text)
    return path if path.is_absolute() else ROOT / path


def augmented_pairs(files, copies: int, rng: np.random.Generator):
    """Clean MFCCs of every clip, (N, 49, 10), and `copies` augmented versions of each with their clean
    counterparts: the same time shift without the noise. Returns (clean, noisy (N * copies, 49, 10),
    noisy's clean counterpart (N * copies, 49, 10), labels of the noisy ones (N * copies,))."""
    clean, noisy, shifted, labels = [], [], [], []
    for path, digit in files:
        samples, rate = read_wav(path)
        prepared = kws_waveform(samples, rate, source=str(path))  # resampled once, not once per copy
        clean.append(prepared)
        spoken = min(KWS_SAMPLES, math.ceil(len(samples) * KWS_SAMPLE_RATE / rate))
        word = prepared[:spoken].astype(np.float64)
        rms = float(np.sqrt(np.mean(word ** 2)))
        for _ in range(copies):
            snr_db = rng.uniform(*NOISE_SNR_DB)
            noise = rng.normal(0.0, rms * 10.0 ** (-snr_db / 20.0), size=word.shape)
            shift = int(rng.integers(-MAX_ADVANCE, MAX_DELAY + 1))
            for target, wave in ((noisy, word + noise), (shifted, word)):
                moved = np.concatenate([np.zeros(shift), wave]) if shift >= 0 else wave[-shift:]
                target.append(kws_waveform(moved, KWS_SAMPLE_RATE, source=str(path)))
            labels.append(digit)

    def mfcc(waves):  # in chunks: kws_mfcc works in float64 on the whole batch at once
        return np.concatenate([kws_mfcc(np.stack(waves[i:i + 256])) for i in range(0, len(waves), 256)])

    return mfcc(clean), mfcc(noisy), mfcc(shifted), np.array(labels, dtype=np.int64)


def load_data(recordings: Path, copies: int, seed: int) -> dict:
    """Every array the training needs, (N, 49, 10) float32 MFCCs and (N,) int64 digits."""
    pool = fsdd_test_files(recordings, TRAIN_INDICES)
    train = [f for f in pool if index_of(f[0]) not in VALIDATION_INDICES]
    val = [f for f in pool if index_of(f[0]) in VALIDATION_INDICES]
    test = fsdd_test_files(recordings, TEST_INDICES)
    clean, noisy, shifted, y_aug = augmented_pairs(train, copies, np.random.default_rng(seed))
    y_clean = np.array([d for _, d in train], dtype=np.int64)
    val_clean = np.stack([kws_features_from_wav(path) for path, _ in val])
    test_clean = np.stack([kws_features_from_wav(path) for path, _ in test])
    return {"clean": clean, "y_clean": y_clean, "noisy": noisy, "noisy_clean": shifted, "y_aug": y_aug,
            "x_train": np.concatenate([clean, noisy]), "y_train": np.concatenate([y_clean, y_aug]),
            "x_val": val_clean, "y_val": np.array([d for _, d in val], dtype=np.int64),
            "x_test": test_clean, "y_test": np.array([d for _, d in test], dtype=np.int64)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fsdd", default="../shared/data/fsdd/recordings",
                        help="FSDD recordings folder (default: %(default)s, from the project root)")
    parser.add_argument("--out", default="models/representations", help="output folder (default: %(default)s)")
    parser.add_argument("--copies", type=int, default=4, help="augmented copies per training clip")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epoch-scale", type=float, default=1.0,
                        help="multiply every epoch count (e.g. 0.1 for a quick trial run)")
    args = parser.parse_args(argv)
    recordings, out_dir = project_path(args.fsdd), project_path(args.out)
    started = time.monotonic()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from microforge.frontend.keras import keras_to_int8_tflite
    from microforge.robust.ood import representations as rep

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.experimental.enable_op_determinism()
    epochs = {k: max(1, round(v * args.epoch_scale)) for k, v in EPOCHS.items()}

    data = load_data(recordings, args.copies, args.seed)
    x, y = data["x_train"], data["y_train"]
    print(f"features ready after {time.monotonic() - started:.0f} s: {len(x)} training examples "
          f"({len(data['clean'])} clips + {len(data['noisy'])} augmented)", flush=True)
    pick = np.random.default_rng(args.seed).permutation(len(data["clean"]))[:REPRESENTATIVE_SAMPLES]
    representative = data["clean"][pick][..., None]  # calibrate on clean clips, as the shipped model
    out_dir.mkdir(parents=True, exist_ok=True)
    variants, autoencoders = {}, {}

    def finish(name: str, model, history: list[float], seconds: float, **info) -> None:
        """Convert one trained classifier to int8, write it, and record its float numbers."""
        with contextlib.redirect_stdout(io.StringIO()):  # the converter prints every captured variable
            tflite = keras_to_int8_tflite(model, representative)
        (out_dir / f"{name}_int8.tflite").write_bytes(tflite)
        variants[name] = {
            **info,
            "parameters": int(model.count_params()),
            "trainable_parameters": int(sum(int(np.prod(w.shape)) for w in model.trainable_weights)),
            "float_validation_accuracy": round(rep.float_accuracy(model, data["x_val"], data["y_val"]), 4),
            "float_test_accuracy": round(rep.float_accuracy(model, data["x_test"], data["y_test"]), 4),
            "loss_per_epoch": [round(v, 5) for v in history], "training_seconds": round(seconds, 1),
            "model_file": f"{name}_int8.tflite", "model_sha256": hashlib.sha256(tflite).hexdigest()}
        print(f"{name}: float val {variants[name]['float_validation_accuracy']:.4f} test "
              f"{variants[name]['float_test_accuracy']:.4f} ({seconds:.0f} s; {time.monotonic() - started:.0f} s "
              f"so far)", flush=True)

    def probe_then_tune(encoder, mode: str, tune_epochs: int, head_seed: int):
        """A new head on `encoder`, fitted as a linear probe; for "finetuned", then everything trained."""
        rep.set_trainable(encoder, False)
        model = rep.build_classifier(encoder, seed=head_seed)
        history = rep.train_head(model, x, y, epochs["head"], seed=args.seed)
        info = {"head_epochs": epochs["head"]}
        if mode == "finetuned":
            rep.set_trainable(encoder, True)
            history = rep.train_classifier(model, x, y, tune_epochs, learning_rate=FINE_TUNE_RATE, seed=args.seed)
            info.update(epochs=tune_epochs, learning_rate=FINE_TUNE_RATE)
        return model, history, info

    # the baseline, and a second seed of it to show the run-to-run spread
    plain = None
    for name, seed in (("plain", args.seed), ("plain_seed2", args.seed + 1)):
        t = time.monotonic()
        model = rep.build_classifier(rep.build_encoder(seed=seed), seed=seed)
        history = rep.train_classifier(model, x, y, epochs["classifier"], learning_rate=LEARNING_RATE, seed=seed)
        finish(name, model, history, time.monotonic() - t, source="from scratch", encoder="trained",
               epochs=epochs["classifier"], learning_rate=LEARNING_RATE, seed=seed)
        plain = model if plain is None else plain

    # autoencoder encoders with a new head, frozen or fine-tuned
    mean, std = rep.feature_stats(x)
    for short, kind in AUTOENCODERS.items():
        t = time.monotonic()
        ae = rep.build_autoencoder(kind, mean, std, seed=args.seed)
        if kind == "denoising":  # clean clips reconstruct themselves, augmented copies their clean version
            history = rep.train_autoencoder(ae, x, targets=np.concatenate([data["clean"], data["noisy_clean"]]),
                                            epochs=epochs["autoencoder"], learning_rate=LEARNING_RATE,
                                            seed=args.seed)
        else:
            history = rep.train_autoencoder(ae, x, labels=y if kind == "discriminative" else None,
                                            epochs=epochs["autoencoder"], learning_rate=LEARNING_RATE,
                                            seed=args.seed)
        check = rep.autoencoder_losses(ae, data["x_val"][..., None], rep.standardise(ae, data["x_val"]),
                                       data["y_val"] if kind == "discriminative" else None)
        autoencoders[short] = {"kind": kind, "epochs": epochs["autoencoder"],
                               "loss_per_epoch": [round(v, 5) for v in history],
                               "validation_losses": {k: round(float(v), 5) for k, v in check.items()},
                               "training_seconds": round(time.monotonic() - t, 1)}
        print(f"{short} autoencoder: loss {history[0]:.4f} -> {history[-1]:.4f}, validation "
              f"{autoencoders[short]['validation_losses']}", flush=True)
        for mode in ("frozen", "finetuned"):
            t = time.monotonic()
            encoder = rep.truncate_encoder(ae.encoder, 0, name="encoder")  # a copy for each mode
            model, history, info = probe_then_tune(encoder, mode, epochs["classifier"], args.seed)
            finish(f"{short}_{mode}", model, history, time.monotonic() - t, source=f"{kind} autoencoder",
                   encoder=mode, seed=args.seed, **info)

    # transfer from the plain classifier: drop k trailing blocks, new head
    trained = rep.classifier_encoder(plain)
    for k in TRUNCATIONS:
        for mode in ("frozen", "finetuned"):
            t = time.monotonic()
            encoder = rep.truncate_encoder(trained, k, name="encoder")
            model, history, info = probe_then_tune(encoder, mode, epochs["transfer"], args.seed + 10 + k)
            finish(f"transfer_k{k}_{mode}", model, history, time.monotonic() - t, source="plain classifier",
                   blocks_removed=k, encoder=mode, seed=args.seed, **info)

    results = {
        "command": " ".join(["python", "scripts/train_representations.py", "--fsdd", args.fsdd, "--out", args.out,
                             "--copies", str(args.copies), "--seed", str(args.seed),
                             "--epoch-scale", str(args.epoch_scale)]),
        "tensorflow": tf.__version__,
        "dataset": "Free Spoken Digit Dataset (Z. Jackson et al.), CC BY-SA 4.0",
        "split": {"train_indices": "5-49 without 9, 18, 27, 36, 45", "validation_indices": list(VALIDATION_INDICES),
                  "test_indices": "0-4"},
        "train_clips": len(data["clean"]), "augmented_copies_per_clip": args.copies,
        "training_examples": len(x), "validation_clips": len(data["y_val"]), "test_clips": len(data["y_test"]),
        "representative_samples": len(representative),
        "feature_mean": [round(float(v), 4) for v in mean], "feature_std": [round(float(v), 4) for v in std],
        "autoencoders": autoencoders, "variants": variants,
        "training_seconds": round(time.monotonic() - started),
    }
    (out_dir / RESULTS_FILE).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(variants)} models to {out_dir} in {results['training_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
