"""Deep representations for small data: autoencoder pre-training and truncated transfer on FSDD, int8, measured.

The seed is Infineon's tinyML work: autoencoder representations lifted keyword spotting from 96.3% to 99.0%
in distribution and from 89.4% to 94.7% on shifted data. Here, on the Free Spoken Digit Dataset with the
shipped DS-CNN architecture (scripts/train_fsdd_kws.py), every variant that
scripts/train_representations.py trains (see its docstring: the plain classifier from scratch, the
encoders of a denoising, a variational and a variational + discriminative autoencoder with a new head,
frozen or fine-tuned, and the plain classifier with its last k = 0, 1, 2 blocks removed and a new head) is
measured as the int8 model TensorFlow's converter made of it (int8 input and output):

- accuracy on the 300 test clips (recording indices 0-4), clean, and shifted: the same clips with white
  Gaussian noise at --snr dB (5 by default, seeded) on the recording (`noisy_waveform`, span "clip"), and,
  harsher, over the whole 1-s window the model hears (span "window"). Both on microforge's reference
  interpreter, which is bit-exact with TFLite Micro. Training used white noise at 15-40 dB on the recording
  only, so both shifts are outside what any variant saw;
- MACs and weight bytes (microforge.analyze); on qemu-m4 (validate_target, the first --qemu-samples clean
  test clips): instructions per inference, firmware flash and RAM, and whether the C is bit-exact;
- against the plain classifier: the clips one gets right and the other wrong, and the exact two-sided
  McNemar p-value of that difference (300 clips: one point is three clips).

Beside them, the model shipped in models/fsdd (trained by scripts/train_fsdd_kws.py, same recipe as
"plain"). The target: shifted-data accuracy >= the plain classifier's + 3 points at equal flash.

    .venv/bin/python benchmarks/representations.py             # measures the models in models/representations
    .venv/bin/python benchmarks/representations.py --retrain   # trains them first (about 30 minutes)

Writes benchmarks/results/representations.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
import microforge  # noqa: E402  (first: OR-Tools before TensorFlow)
from microforge.bench.features import quantize_input  # noqa: E402
from microforge.errors import MicroforgeError  # noqa: E402

FSDD = ROOT.parent / "shared" / "data" / "fsdd" / "recordings"
MODELS = ROOT / "models" / "representations"
SHIPPED = ROOT / "models" / "fsdd" / "fsdd_dscnn_int8.tflite"
RESULTS = ROOT / "benchmarks" / "results"
TARGET_POINTS = 3.0
SEED_NUMBERS = {  # Infineon's figures, as the seed states them (keyword spotting, their data)
    "baseline": {"clean": 96.3, "shifted": 89.4},
    "autoencoder representations": {"clean": 99.0, "shifted": 94.7},
}
REPRESENTATION_VARIANTS = ("dae_frozen", "dae_finetuned", "vae_frozen", "vae_finetuned", "dvae_frozen",
                           "dvae_finetuned")


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar test: the probability, if both models were equally good, of a split of the
    b + c discordant clips at least as uneven as (b, c)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2.0 ** n
    return min(1.0, 2.0 * tail)


def measure(name: str, path: Path, sets: dict, labels: np.ndarray, qemu_samples: int, info: dict) -> dict:
    """One int8 model: accuracy per test set, its per-clip correctness (for the paired comparison), its
    MACs and weight bytes, and its cost on qemu-m4."""
    from microforge.codegen.validate import validate_target
    from microforge.robust.ood.representations import int8_predictions

    graph = microforge.load(path)
    totals = microforge.analyze(graph)["totals"]
    row = {"variant": name, "model_file": str(path.relative_to(ROOT)), **info,
           "macs": int(totals["macs"]), "weight_bytes": int(totals["flash_bytes"])}
    correct = {}
    for key, x in sets.items():
        correct[key] = int8_predictions(graph, x) == labels
        row[f"{key}_accuracy"] = round(float(np.mean(correct[key])), 4)
    t = graph.inputs[0]
    q = quantize_input(sets["clean"][:qemu_samples], float(t.quant.scale[0]), int(t.quant.zero_point[0]))
    try:
        report = validate_target(graph, "qemu-m4", batches=[q.reshape((len(q),) + tuple(t.shape))])
        row["qemu_m4"] = {k: report[k] for k in ("samples", "instructions_per_inference", "flash_bytes", "ram_bytes",
                                                 "arena_bytes", "bit_exact")}
    except MicroforgeError as exc:  # report it, keep measuring the others
        row["qemu_m4"] = {"error": f"{type(exc).__name__}: {exc}"}
    return row, correct


def target_check(rows: list[dict]) -> dict:
    """The target per representation variant: shifted accuracy >= plain's + 3 points, at weight bytes no
    larger than plain's. Met overall if any variant meets it."""
    plain = next(r for r in rows if r["variant"] == "plain")
    checks = []
    for r in rows:
        if r["variant"] not in REPRESENTATION_VARIANTS:
            continue
        gain = 100.0 * (r["shifted_accuracy"] - plain["shifted_accuracy"])
        equal_flash = r["weight_bytes"] <= plain["weight_bytes"]
        checks.append({"variant": r["variant"], "shifted_gain_points": round(gain, 2), "equal_flash": equal_flash,
                       "p_value": r["versus_plain"]["shifted"]["p_value"],
                       "met": bool(gain >= TARGET_POINTS and equal_flash)})
    return {"target": f"shifted accuracy >= plain + {TARGET_POINTS:g} points at equal flash",
            "plain_shifted_accuracy": plain["shifted_accuracy"], "variants": checks,
            "met": any(c["met"] for c in checks)}


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def markdown(result: dict) -> str:
    rows, snr = result["rows"], result["snr_db"]
    lines = [f"Measured with `{result['command']}` ({result['seconds']:.0f} s; training: "
             f"{result['training']['command']}, {result['training']['training_seconds']} s).", "",
             f"int8 accuracy (%) on the {result['test_clips']} FSDD test clips, on microforge's reference interpreter "
             f"(bit-exact with TFLite Micro): clean; shifted = white noise at {snr:g} dB SNR on the recording; "
             f"window = the same noise over the whole 1-s window. 'vs plain' = clips right only here / right only in "
             f"plain, on the shifted set, and the exact McNemar p. Weights = bytes of constants; instructions, "
             f"flash (whole firmware) and RAM on qemu-m4.", "",
             "| variant | source | encoder | clean | shifted | window | vs plain (shifted) | MACs | weights B | "
             "instructions | flash B | RAM B | bit-exact |", "|" + "---|" * 13]
    for r in rows:
        v = r.get("versus_plain", {}).get("shifted")
        versus = "-" if v is None else f"+{v['only_this']} / -{v['only_plain']} (p={v['p_value']:.2f})"
        q = r["qemu_m4"]
        cost = (["failed"] * 3 + ["-"] if "error" in q else
                [f"{q['instructions_per_inference']:,}", f"{q['flash_bytes']:,}", f"{q['ram_bytes']:,}",
                 "yes" if q["bit_exact"] else "NO"])
        lines.append(f"| {r['variant']} | {r['source']} | {r['encoder']} | {pct(r['clean_accuracy'])} | "
                     f"{pct(r['shifted_accuracy'])} | {pct(r['window_accuracy'])} | {versus} | {r['macs']:,} | "
                     f"{r['weight_bytes']:,} | " + " | ".join(cost) + " |")
    plain = next(r for r in rows if r["variant"] == "plain")
    best = max((r for r in rows if r["variant"] in REPRESENTATION_VARIANTS), key=lambda r: r["shifted_accuracy"])
    s = SEED_NUMBERS
    lines += ["", "Beside the seed (Infineon; their keyword data and shift, not ours):", "",
              "| | seed clean | seed shifted | ours clean | ours shifted |", "|---|---|---|---|---|",
              f"| baseline (plain classifier) | {s['baseline']['clean']} | {s['baseline']['shifted']} | "
              f"{pct(plain['clean_accuracy'])} | {pct(plain['shifted_accuracy'])} |",
              f"| autoencoder representations (our best on shifted: {best['variant']}) | "
              f"{s['autoencoder representations']['clean']} | {s['autoencoder representations']['shifted']} | "
              f"{pct(best['clean_accuracy'])} | {pct(best['shifted_accuracy'])} |",
              f"| gain | +{s['autoencoder representations']['clean'] - s['baseline']['clean']:.1f} | "
              f"+{s['autoencoder representations']['shifted'] - s['baseline']['shifted']:.1f} | "
              f"{100 * (best['clean_accuracy'] - plain['clean_accuracy']):+.1f} | "
              f"{100 * (best['shifted_accuracy'] - plain['shifted_accuracy']):+.1f} |"]
    t = result["target"]
    lines += ["", f"Target: {t['target']} (plain: {pct(t['plain_shifted_accuracy'])}%).", ""]
    for c in t["variants"]:
        lines.append(f"- {c['variant']}: {c['shifted_gain_points']:+.1f} points (McNemar p={c['p_value']:.2f}), "
                     f"{'equal' if c['equal_flash'] else 'more'} flash: {'met' if c['met'] else 'not met'}")
    lines += ["", f"**Target {'met' if t['met'] else 'not met'}.**"]
    if "plain_seed2" in {r["variant"] for r in rows}:
        second = next(r for r in rows if r["variant"] == "plain_seed2")
        lines += ["", f"Run-to-run spread of the baseline: plain with a second seed scores "
                      f"{pct(second['clean_accuracy'])} clean, {pct(second['shifted_accuracy'])} shifted, "
                      f"{pct(second['window_accuracy'])} window (seed 1: {pct(plain['clean_accuracy'])}, "
                      f"{pct(plain['shifted_accuracy'])}, {pct(plain['window_accuracy'])})."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--retrain", action="store_true",
                        help="train every variant first (scripts/train_representations.py, about 30 minutes)")
    parser.add_argument("--snr", type=float, default=5.0, help="SNR of the shifted test sets, dB")
    parser.add_argument("--noise-seed", type=int, default=0)
    parser.add_argument("--qemu-samples", type=int, default=8, help="clean test clips run on qemu-m4 per model")
    args = parser.parse_args()
    started = time.monotonic()
    if args.retrain or not (MODELS / "training.json").exists():
        sys.path.insert(0, str(ROOT / "scripts"))
        from train_representations import main as train

        train(["--out", str(MODELS)])
    training = json.loads((MODELS / "training.json").read_text(encoding="utf-8"))

    from microforge.robust.ood.representations import fsdd_features

    clean, labels = fsdd_features(FSDD, range(5))
    shifted, labels_s = fsdd_features(FSDD, range(5), snr_db=args.snr, seed=args.noise_seed, span="clip")
    window, labels_w = fsdd_features(FSDD, range(5), snr_db=args.snr, seed=args.noise_seed, span="window")
    assert np.array_equal(labels, labels_s) and np.array_equal(labels, labels_w)
    sets = {"clean": clean, "shifted": shifted, "window": window}
    print(f"test sets ready after {time.monotonic() - started:.0f} s", flush=True)

    rows, correctness = [], {}
    entries = [(name, MODELS / v["model_file"], {k: v.get(k) for k in ("source", "encoder", "blocks_removed",
                                                                      "epochs", "learning_rate", "seed",
                                                                      "parameters", "trainable_parameters",
                                                                      "float_test_accuracy",
                                                                      "float_validation_accuracy")})
               for name, v in training["variants"].items()]
    entries.append(("shipped_fsdd", SHIPPED, {"source": "models/fsdd (scripts/train_fsdd_kws.py)",
                                              "encoder": "trained"}))
    for name, path, info in entries:
        row, correct = measure(name, path, sets, labels, args.qemu_samples, info)
        rows.append(row)
        correctness[name] = correct
        print(f"{name}: clean {row['clean_accuracy']:.4f} shifted {row['shifted_accuracy']:.4f} window "
              f"{row['window_accuracy']:.4f} ({time.monotonic() - started:.0f} s)", flush=True)
    for row in rows:  # paired against plain, clip by clip
        if row["variant"] == "plain":
            continue
        row["versus_plain"] = {}
        for key in sets:
            mine, base = correctness[row["variant"]][key], correctness["plain"][key]
            b, c = int(np.sum(mine & ~base)), int(np.sum(~mine & base))
            row["versus_plain"][key] = {"only_this": b, "only_plain": c, "p_value": round(mcnemar_p(b, c), 4)}

    result = {"command": ("python benchmarks/representations.py " + " ".join(sys.argv[1:])).strip(),
              "snr_db": args.snr, "noise_seed": args.noise_seed, "test_clips": len(labels),
              "qemu_samples": args.qemu_samples, "seed_numbers": SEED_NUMBERS,
              "training": {k: training[k] for k in ("command", "tensorflow", "training_examples",
                                                    "augmented_copies_per_clip", "training_seconds",
                                                    "autoencoders")},
              "rows": rows}
    result["target"] = target_check(rows)
    result["seconds"] = round(time.monotonic() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "representations.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    text = markdown(result)
    (RESULTS / "representations.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
