"""Out-of-distribution detectors on the two tasks that have data here, in float and compiled onto qemu-m4.

HAR (BasicMotions, leave one activity out, all four folds; models/ood/har_fold_*_cnn_float.tflite by
scripts/train_ood_models.py): each fold's float classifier, and the same quantized to int8 by our
quantizer (calibrated on the fold's ID training recordings). Detectors are fitted on the ID training
recordings and measured on the ID test recordings against the held-out activity (semantic OOD, the
issue's target: mean over the folds) and against the ID test recordings with a sensor fault (stuck
axis, saturation, drift, noise: covariate OOD, reported apart). The HarImage pre-processing variant
(har_fold_*_image_float.tflite) is measured the same way in float, to see whether it helps.

KWS (FSDD, MLPerf Tiny MFCCs):
- the shipped spoken-digit model (models/fsdd, all ten digits: float, int8 by TF's converter, and int8 by
  our quantizer calibrated on the fitting clips) against far OOD: words
  and digits spoken by espeak-ng, the ALSA test sounds and noise (the issue's target: pooled AUROC), and
  against the ID clips at 0 dB SNR (shift);
- the model trained on digits 0-7 (models/ood/fsdd_digits0-7_dscnn_int8.tflite) against the held-out
  digits 8 and 9 (near OOD) and the same far sets. It ships only as int8: its "float" column is the float
  detector on its dequantized int8 logits/features (the reference target).
Detectors are fitted on FSDD training clips (recording indices 5-14), measured on the test clips (0-4).

Each detector runs in the reference (the float detector on the model's float or dequantized values)
and on qemu-m4 (the integer score compiled into the model's C, scores read back from the core and
checked byte for byte against the reference), with its cost on qemu-m4 against the model alone: extra
instructions per inference, flash and RAM. Detectors without an on-chip form run in float on both
targets and say so.

    .venv/bin/python benchmarks/ood.py [--folds standing,walking] [--tasks har,kws]

Writes benchmarks/results/ood.{json,md}.
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
import microforge  # noqa: E402  (first: OR-Tools before TensorFlow)
from microforge import robust  # noqa: E402
from microforge.bench.features import quantize_input  # noqa: E402
from microforge.robust.ood import tasks  # noqa: E402
from microforge.robust.ood.evaluate import DataSet, evaluate_sets  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
# (label, detector name, options): every detector, Mahalanobis in its deployable forms
DETECTORS = [("msp", "msp", {}), ("maxlogit", "maxlogit", {}), ("energy", "energy", {}),
             ("mahalanobis-diagonal", "mahalanobis", {"form": "diagonal"}),
             ("mahalanobis-full", "mahalanobis", {"form": "full"}),
             ("godin", "godin", {}), ("ae-input", "ae", {"on": "input"}), ("ae-features", "ae", {"on": "features"}),
             # outlier exposure against tasks.synthetic_outliers of the ID training data (no real OOD data)
             ("explicit", "explicit", {})]
TARGETS = ("reference", "qemu-m4")
TARGET_COST_DETECTORS = ("msp", "maxlogit", "energy", "mahalanobis-diagonal")  # the cost target names these
FIT_INDICES = range(5, 15)
SHIFT_SNR_DB = 0.0


def as_model_input(graph, task_set: tasks.TaskSet, name: str | None = None) -> DataSet:
    """A TaskSet as the model's input (int8 quantized as write_runner_folder does, or float32)."""
    t = graph.inputs[0]
    x = task_set.x.reshape((len(task_set.x),) + t.shape)
    if t.dtype != np.float32:
        x = quantize_input(x, t.scale, t.zero_point, t.dtype)
    labels = task_set.labels if task_set.labels is not None else np.zeros(len(x), np.int64)
    return DataSet(name or task_set.name, x, labels)


def measure(graph, fit, test, ood_sets, target: str, outliers=None) -> dict:
    """label -> evaluate_sets entry (without its scores) for every detector of DETECTORS; outlier
    exposure against `outliers`, by default synthetic ones made from the fitting data."""
    if outliers is None:  # shuffling and splicing time steps commute with quantizing them
        made = tasks.synthetic_outliers(tasks.TaskSet(fit.name, fit.x, fit.labels, []))
        outliers = DataSet(made.name, made.x, np.zeros(len(made.x), np.int64))
    out = {}
    for label, name, options in DETECTORS:
        started = time.time()
        result = evaluate_sets(graph, fit, test, ood_sets, name, target, outliers, **options)
        entry = result["detectors"][0]
        entry.pop("scores")
        entry["seconds"] = round(time.time() - started, 1)
        out[label] = entry
    return out


def _accuracy(graph, data: DataSet) -> float:
    from microforge.reference.interpreter import run

    y = np.asarray(run(graph, data.x))
    return float(np.mean(y.reshape(len(y), -1).argmax(axis=1) == data.labels))


def har(folds: list[str]) -> dict:
    results = {}
    for held_out in folds:
        fold = tasks.har_fold(held_out)
        sets = [fold.ood] + [fold.faulty(kind) for kind in tasks.FAULTS]
        fold_result = {}
        for variant in ("cnn", "image"):
            path = ROOT / "models" / "ood" / f"har_fold_{held_out}_{variant}_float.tflite"
            float_graph = microforge.load(path)
            graphs = {"float": float_graph}
            if variant == "cnn":
                graphs["int8"] = robust.quantize(float_graph, fold.train.x.reshape((-1,) + float_graph.inputs[0].shape),
                                                 scheme="int8", io="int8").graph
            for kind, graph in graphs.items():
                fit, test = as_model_input(graph, fold.train), as_model_input(graph, fold.test)
                oods = [as_model_input(graph, s) for s in sets]
                entry = {"id_accuracy": _accuracy(graph, test)}
                for target in (TARGETS if kind == "int8" else ("reference",)):
                    print(f"har {held_out} {variant} {kind} on {target}", flush=True)
                    entry[target] = measure(graph, fit, test, oods, target)
                fold_result[f"{variant}_{kind}"] = entry
        results[held_out] = fold_result
    return results


def _fsdd_all_digits(indices) -> tasks.TaskSet:
    """Clips of all ten digits (kws_fold's ID set holds 0-7, its near-OOD set 8 and 9)."""
    kept, near = tasks.kws_fold((8, 9), indices=indices)
    labels = np.r_[kept.labels, [int(n.split("_")[0]) for n in near.names]]
    return tasks.TaskSet("id_test", np.concatenate([kept.x, near.x]), labels, kept.names + near.names)


def kws() -> dict:
    far = tasks.kws_far_ood()
    results = {}
    # the shipped ten-digit model: far OOD and shift
    test, fit = _fsdd_all_digits(tasks.KWS_TEST_INDICES), _fsdd_all_digits(FIT_INDICES)
    shifted = tasks.kws_shift(SHIFT_SNR_DB, held_out=(8, 9))
    shifted_near = tasks.kws_shift(SHIFT_SNR_DB, held_out=tuple(range(8)))
    shift = tasks.TaskSet(shifted.name, np.concatenate([shifted.x, shifted_near.x]), None,
                          shifted.names + shifted_near.names)
    float_graph = microforge.load(ROOT / "models" / "fsdd" / "fsdd_dscnn_float.tflite")
    models = {"float": float_graph, "int8": microforge.load(ROOT / "models" / "fsdd" / "fsdd_dscnn_int8.tflite"),
              # our quantizer, calibrated on the fitting clips: its feature ranges differ from the converter's
              "microforge_int8": robust.quantize(float_graph, fit.x.reshape((-1,) + float_graph.inputs[0].shape),
                                                 scheme="int8", io="int8").graph}
    for kind, graph in models.items():
        entry = {"id_accuracy": _accuracy(graph, as_model_input(graph, test))}
        for target in (TARGETS if kind != "float" else ("reference",)):
            print(f"kws fsdd {kind} on {target}", flush=True)
            entry[target] = measure(graph, as_model_input(graph, fit), as_model_input(graph, test),
                                    [as_model_input(graph, s) for s in far], target)
            entry[target + "_shift"] = measure(graph, as_model_input(graph, fit), as_model_input(graph, test),
                                               [as_model_input(graph, shift)], "reference")
        results[f"fsdd_{kind}"] = entry
    # digits 0-7: near OOD (8, 9) beside the far sets
    graph = microforge.load(ROOT / "models" / "ood" / "fsdd_digits0-7_dscnn_int8.tflite")
    test, near = tasks.kws_fold((8, 9))
    fit, _ = tasks.kws_fold((8, 9), indices=FIT_INDICES)
    entry = {"id_accuracy": _accuracy(graph, as_model_input(graph, test))}
    for target in TARGETS:
        print(f"kws digits 0-7 on {target}", flush=True)
        entry[target] = measure(graph, as_model_input(graph, fit), as_model_input(graph, test),
                                [as_model_input(graph, s) for s in [near] + far], target)
    results["fsdd_digits0-7_int8"] = entry
    return results


def _set_metric(entry: dict, set_name: str, metric: str) -> float:
    return next(s[metric] for s in entry["ood_sets"] if s["name"] == set_name)


def har_summary(har_results: dict) -> list[dict]:
    """Per model variant, target and detector: the held-out activity's AUROC and TNR@TPR95 averaged over
    the folds, the faults' pooled AUROC averaged, and the cost (mean over folds)."""
    rows = []
    folds = list(har_results)
    for variant in har_results[folds[0]]:
        for target in TARGETS:
            if target not in har_results[folds[0]][variant]:
                continue
            for label, _, _ in DETECTORS:
                entries = [har_results[f][variant][target][label] for f in folds]
                semantic = [_set_metric(e, f"ood_{f}", "auroc") for e, f in zip(entries, folds)]
                tnr = [_set_metric(e, f"ood_{f}", "tnr_at_tpr95") for e, f in zip(entries, folds)]
                faults = [np.mean([_set_metric(e, f"fault_{k}", "auroc") for k in tasks.FAULTS]) for e in entries]
                cost = entries[0]["cost"]
                rows.append({"model": variant, "target": target, "detector": label, "folds": len(folds),
                             "activity_auroc": float(np.mean(semantic)), "activity_tnr_at_tpr95": float(np.mean(tnr)),
                             "fault_auroc": float(np.mean(faults)),
                             "bit_exact": all(e["bit_exact_on_target"] for e in entries) if target != "reference" else None,
                             "instructions": None if cost["instructions"] is None else
                             float(np.mean([e["cost"]["instructions"] for e in entries])),
                             "instructions_share": None if cost["instructions"] is None else
                             float(np.mean([e["cost"]["instructions_share"] for e in entries])),
                             "flash_bytes": cost["flash_bytes"], "ram_bytes": cost["ram_bytes"],
                             "note": entries[0].get("note")})
    return rows


def kws_summary(kws_results: dict) -> list[dict]:
    rows = []
    for model, entry in kws_results.items():
        for target in TARGETS:
            if target not in entry:
                continue
            for label, _, _ in DETECTORS:
                e = entry[target][label]
                row = {"model": model, "target": target, "detector": label, "far_auroc": e["auroc"],
                       "far_tnr_at_tpr95": e["tnr_at_tpr95"], "fpr_at_tpr95": e["fpr_at_tpr95"],
                       "bit_exact": e["bit_exact_on_target"], **{k: e["cost"].get(k) for k in
                                                                 ("instructions", "instructions_share", "flash_bytes",
                                                                  "ram_bytes")}, "note": e.get("note")}
                sets = {s["name"]: s["auroc"] for s in e["ood_sets"]}
                if "near_89" in sets:
                    row["near_auroc"] = sets.pop("near_89")
                    far = [s for s in e["ood_sets"] if s["name"] != "near_89"]
                    row["far_auroc"] = float(np.mean([s["auroc"] for s in far]))  # mean of the far sets
                row["sets"] = sets
                shift = entry.get(target + "_shift")
                if shift is not None:
                    row["shift_auroc"] = shift[label]["auroc"]
                rows.append(row)
    return rows


def _f(v, digits=3):
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else f"{v:,}"


def markdown(summary: dict, meta: dict) -> str:
    lines = ["# OOD detectors: float and on qemu-m4", "", f"`{meta['command']}` ({meta['seconds']:.0f} s).", ""]
    if summary.get("har"):
        lines += ["## HAR (BasicMotions, leave one activity out, mean over the folds)", "",
                  "| model | target | detector | held-out activity AUROC | TNR@TPR95 | sensor faults AUROC | bit-exact | "
                  "+instructions (share) | +flash B | +RAM B |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in summary["har"]:
            share = "-" if r["instructions"] is None else f"{r['instructions']:.0f} ({100 * r['instructions_share']:.3f}%)"
            exact = "-" if r["bit_exact"] is None else "yes" if r["bit_exact"] else "NO"
            lines.append(f"| {r['model']} | {r['target']} | {r['detector']} | {_f(r['activity_auroc'])} | "
                         f"{_f(r['activity_tnr_at_tpr95'])} | {_f(r['fault_auroc'])} | {exact} | {share} | "
                         f"{_f(r['flash_bytes'])} | {_f(r['ram_bytes'])} |")
        lines.append("")
    if summary.get("kws"):
        lines += ["## KWS (FSDD test clips against espeak-ng words and digits, ALSA sounds, noise)", "",
                  "| model | target | detector | far AUROC | far TNR@TPR95 | near (8, 9) AUROC | 0 dB shift AUROC | "
                  "bit-exact | +instructions (share) | +flash B | +RAM B |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in summary["kws"]:
            share = "-" if r["instructions"] is None else f"{r['instructions']:,} ({100 * r['instructions_share']:.3f}%)"
            exact = "-" if r["bit_exact"] is None else "yes" if r["bit_exact"] else "NO"
            lines.append(f"| {r['model']} | {r['target']} | {r['detector']} | {_f(r['far_auroc'])} | "
                         f"{_f(r['far_tnr_at_tpr95'])} | {_f(r.get('near_auroc'))} | {_f(r.get('shift_auroc'))} | "
                         f"{exact} | {share} | {_f(r['flash_bytes'])} | {_f(r['ram_bytes'])} |")
        lines.append("")
    lines += ["## Targets", ""] + [f"- {t}" for t in summary["targets"]] + [""]
    return "\n".join(lines)


def targets(summary: dict) -> list[str]:
    """The issue's targets, each said plainly as met or not."""
    out = []
    if summary.get("har"):
        chip = [r for r in summary["har"] if r["model"] == "cnn_int8" and r["target"] == "qemu-m4"]
        best = max(chip, key=lambda r: (r["activity_auroc"], r["activity_tnr_at_tpr95"]))
        met = best["activity_auroc"] >= 0.96 and best["activity_tnr_at_tpr95"] >= 0.95
        out.append(f"HAR, best deployed detector ({best['detector']}, int8 on qemu-m4): AUROC "
                   f"{best['activity_auroc']:.3f}, TNR@TPR95 {best['activity_tnr_at_tpr95']:.3f} (target >= 0.96 and "
                   f">= 0.95): {'met' if met else 'NOT met'}")
    if summary.get("kws"):
        chip = [r for r in summary["kws"] if r["model"] in ("fsdd_int8", "fsdd_microforge_int8")
                and r["target"] == "qemu-m4"]
        best = max(chip, key=lambda r: r["far_auroc"])
        out.append(f"KWS, best deployed detector ({best['detector']}, {best['model']} on qemu-m4), FSDD vs espeak-ng/ALSA/noise: "
                   f"AUROC {best['far_auroc']:.3f} (target >= 0.95): {'met' if best['far_auroc'] >= 0.95 else 'NOT met'}")
    # the float detector of each deployed one: on the float model where there is one, else in the reference
    float_of = {"cnn_int8": "cnn_float", "fsdd_int8": "fsdd_float", "fsdd_microforge_int8": "fsdd_float",
                "fsdd_digits0-7_int8": "fsdd_digits0-7_int8"}
    losses = []
    for task, key in (("har", "activity_auroc"), ("kws", "far_auroc")):
        rows = summary.get(task) or []
        for r in (r for r in rows if r["target"] == "qemu-m4"):
            ref = next(q for q in rows if q["model"] == float_of[r["model"]] and q["detector"] == r["detector"]
                       and q["target"] == "reference")
            losses.append((ref[key] - r[key], f"{task} {r['model']} {r['detector']}"))
    if losses:
        worst = max(losses)
        out.append(f"int8 on the chip vs the float detector on the float model: largest AUROC loss {worst[0]:.3f} "
                   f"({worst[1]}; target <= 0.01): {'met' if worst[0] <= 0.01 else 'NOT met'}. This includes "
                   f"quantizing the model itself")
    # the integer score alone: the chip against the float detector on the same int8 model
    arithmetic = []
    for task, key in (("har", "activity_auroc"), ("kws", "far_auroc")):
        rows = summary.get(task) or []
        for r in (r for r in rows if r["target"] == "qemu-m4"):
            ref = next(q for q in rows if q["model"] == r["model"] and q["detector"] == r["detector"]
                       and q["target"] == "reference")
            arithmetic.append((ref[key] - r[key], f"{task} {r['model']} {r['detector']}"))
    if arithmetic:
        worst = max(arithmetic)
        out.append(f"the integer score alone (on qemu-m4 vs the float detector on the same int8 model): largest "
                   f"AUROC loss {worst[0]:.3f} ({worst[1]}): {'within' if worst[0] <= 0.01 else 'NOT within'} 0.01")
    costs = [r for task in ("har", "kws") for r in summary.get(task) or []
             if r["target"] == "qemu-m4" and r["instructions"] is not None and r["detector"] in TARGET_COST_DETECTORS]
    if costs:
        ok = all(r["instructions_share"] <= 0.02 and r["flash_bytes"] <= 2048 and r["ram_bytes"] <= 256 for r in costs)
        out.append(f"cost of the logit-based and diagonal-Mahalanobis scores on qemu-m4: at most "
                   f"{100 * max(r['instructions_share'] for r in costs):.3f}% instructions, "
                   f"{max(r['flash_bytes'] for r in costs)} B flash, {max(r['ram_bytes'] for r in costs)} B RAM "
                   f"(target <= 2%, 2 KB, 256 B): {'met' if ok else 'NOT met'}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", default=",".join(tasks.HAR_CLASSES), help="HAR activities to hold out")
    parser.add_argument("--tasks", default="har,kws")
    args = parser.parse_args(argv)
    chosen = args.tasks.split(",")
    started = time.time()
    results = {}
    if "har" in chosen:
        results["har"] = har(args.folds.split(","))
    if "kws" in chosen:
        results["kws"] = kws()
    summary = {"har": har_summary(results["har"]) if "har" in results else None,
               "kws": kws_summary(results["kws"]) if "kws" in results else None}
    summary["targets"] = targets(summary)
    command = "python benchmarks/ood.py" + ("" if argv is None and len(sys.argv) == 1 else " " + " ".join(sys.argv[1:]))
    meta = {"command": command, "seconds": time.time() - started}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ood.json").write_text(json.dumps({**meta, "summary": summary, "results": results}, indent=1) + "\n")
    (RESULTS / "ood.md").write_text(markdown(summary, meta))
    print(markdown(summary, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
