"""Continual learning with latent replays on FSDD (class-incremental: digits 0-4, then 5, ..., 9), the
JETCAS-style study: final average accuracy and forgetting against the LR layer and the replays' bits,
beside naive fine-tuning (lower bound), joint training (upper bound) and raw-input replay at equal
buffer bytes, over several seeds (mean and standard deviation), and the learner's memory per LR layer.
The same on scikit-learn's digits; and the new-instances scenarios (FSDD's new speakers, rotated
digits) with the baselines at the default LR layer and the cheapest cut. Each scenario starts from its
shipped model (learn.scenarios.MODELS, scripts/train_learn_models.py).

The accuracy study runs the reference learner (learn.strategies on the numpy back). Every latent-replay
LR layer at 8 bits is also run in C on qemu-m4 and qemu-m7 (seed 0): a learner within 256 KB plays the
whole scenario on the learner image (learn.onchip), checked against the Python run; a larger one has a
few steps of its bare back measured (learn.device).

    .venv/bin/python benchmarks/learn.py [--seeds 5] [--scenarios fsdd,digits,fsdd-speakers,digits-rotated] [--quick]

Writes benchmarks/results/learn.{json,md} and an HTML report with plots per scenario in
benchmarks/results/learn_<scenario>/ (--reports-only rebuilds those from learn.json).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
import microforge  # noqa: E402,F401
from microforge.learn.api import device_cost, memory, onchip_cost  # noqa: E402
from microforge.learn import layers as L  # noqa: E402
from microforge.learn.device import batch_rows  # noqa: E402
from microforge.learn.scenarios import default_model, scenario  # noqa: E402
from microforge.learn.split import lr_op_index, split  # noqa: E402
from microforge.learn.strategies import Hyper, Latents, run_stream, strategy  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SCENARIOS = {"fsdd": "fsdd-class-incremental", "digits": "digits-class-incremental",
             "fsdd-speakers": "fsdd-new-instances", "digits-rotated": "digits-new-instances"}
MODELS = {name: (full, default_model(full)) for name, full in SCENARIOS.items()}  # each starts from its own model
# replay samples: over half the FSDD training clips; 500 digits
BUFFER = {"fsdd": 1500, "digits": 500, "fsdd-speakers": 1500, "digits-rotated": 500}
BITS_STUDY = ("fsdd", "digits")  # the bits and LR-layer sweeps; new-instances runs the baselines and the cheapest cut
BITS = (32, 8, 7, 6, 4)
SLOW_NEW_INSTANCES = ("fsdd-speakers",)
DEVICE_TARGETS = ("qemu-m4", "qemu-m7")
ONCHIP_RAM = 256 * 1024  # learners within this play the whole scenario on the image; larger ones a few steps


def hyper_for(cut, seed: int) -> Hyper:
    """The hyper-parameters of every strategy at a cut: Hyper's defaults (swept on FSDD at its default LR
    layer), but for a back that is the head alone 16 epochs at learning rate 3.0 (swept on FSDD's pooled
    features: a linear head trains far too slowly at 0.1)."""
    if sum(1 for layer in cut.back.layers if layer.params) == 1:
        return Hyper(seed=seed, epochs=16, learning_rate=3.0)
    return Hyper(seed=seed)


def runs(name: str, seeds: int, quick: bool, bits_study=BITS, middle_cuts: bool = True) -> dict:
    """Every configuration of the study on one scenario: label -> {per-seed results, mean, std, memory},
    and on qemu-m4 and qemu-m7 the C learner's cost of each LR layer (seed 0). At the default LR layer:
    latent replay at every bits of `bits_study` and the three baselines; at the last cut (the pooled
    features, the cheapest learner) latent replay and the naive and joint bounds; with `middle_cuts`,
    latent replay at every cut between. The new-instances scenarios run the 8- and 32-bit latent replay
    and the baselines; FSDD's (three experiences of 1,350 clips) at the last cut only, for time."""
    scenario_name, path = MODELS[name]
    graph = microforge.load(path)
    stream = scenario(scenario_name, graph.inputs[0])
    default = lr_op_index(graph, None)
    convs = [op.index for op in graph.ops if op.type in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    pool = [op.index for op in graph.ops if op.type == "AVERAGE_POOL_2D"]
    lr_layers = sorted(set(convs[convs.index(default):] + pool[-1:]))  # the default and every later cut
    last = lr_layers[-1]
    configs = [("latent-replay", default, bits) for bits in bits_study]
    configs += [("naive", default, 8), ("joint", default, 8), ("raw-replay", default, 8)]
    configs += [("latent-replay", layer, 8) for layer in lr_layers[1:-1] if middle_cuts]
    configs += [("latent-replay", last, 8), ("naive", last, 8), ("joint", last, 8)]
    if name not in BITS_STUDY:
        configs = [c for c in configs if c[2] in (8, 32)]
    if name in SLOW_NEW_INSTANCES:
        configs = [("latent-replay", last, 32), ("raw-replay", last, 8)] + [c for c in configs if c[1] == last]
    if quick:
        configs = [c for c in configs if c[1] == default and c[2] in (8, 32)]
    out = {}
    latents = {}  # the front's latents per LR layer, shared by every configuration and seed
    for strategy_name, layer, bits in configs:
        label = f"{strategy_name} LR op {layer}" + (f" {bits}-bit" if strategy_name in ("latent-replay",
                                                                                     "raw-replay") else "")
        finals, forgets = [], []
        started = time.time()
        for seed in range(seeds):
            cut = split(graph, layer, classes=10)
            if seed == 0:
                untrained = copy.deepcopy(cut)  # seed 0's starting point, for the device run
            shared = latents.setdefault(layer, Latents(cut))
            shared.split = cut  # the front is the same; the latents cached are valid for every copy
            learner = strategy(strategy_name, cut, BUFFER[name], bits, hyper=hyper_for(cut, seed), latents=shared)
            result = run_stream(learner, stream)
            finals.append(result.final_average_accuracy)
            forgets.append(result.forgetting)
            if seed == 0:
                matrix, first, reference = result.accuracy_matrix, (cut, learner), result
        entry = {"strategy": strategy_name, "lr_op": layer, "bits": bits, "lr_shape": list(cut.lr_shape),
                 "final_average_accuracy": finals, "forgetting": forgets, "mean_final": float(np.mean(finals)),
                 "std_final": float(np.std(finals)), "mean_forgetting": float(np.mean(forgets)),
                 "accuracy_matrix_seed0": matrix, "memory": memory(cut, learner, stream),
                 "seconds": round(time.time() - started, 1)}
        if strategy_name == "latent-replay" and bits == 8:
            if entry["memory"]["total_ram_bytes"] <= ONCHIP_RAM:
                hyper = hyper_for(cut, 0)
                entry["device"] = {target: onchip_cost(untrained, strategy_name, BUFFER[name], bits, "class-balanced",
                                                       hyper, stream, target, reference) for target in DEVICE_TARGETS}
            else:
                entry["device"] = {target: device_cost(*first, stream, target) for target in DEVICE_TARGETS}
            entry["macs_per_update"] = macs_per_update(cut, first[1].hyper)
        out[label] = entry
        print(f"{name} {label}: {100 * np.mean(finals):.1f} ± {100 * np.std(finals):.1f} "
              f"(forgetting {100 * np.mean(forgets):.1f})", flush=True)
    return out


def macs_per_update(cut, hyper) -> dict:
    """Multiply-adds of one full SGD step: the forward, and the backward (weight gradients and, past the
    first layer, input gradients), of every row of the mini-batch."""
    shape, forward, backward = cut.lr_shape, 0, 0
    first = next(i for i, layer in enumerate(cut.back.layers) if not isinstance(layer, L.Reshape))
    for i, layer in enumerate(cut.back.layers):
        m = layer.macs(shape)
        forward += m["forward"]
        backward += m["weight_grad"] + (m["input_grad"] if i > first else 0)  # the C skips the first one's
        shape = layer.output_shape(shape)
    rows = batch_rows(hyper)
    return {"forward": forward * rows, "backward": backward * rows, "total": (forward + backward) * rows}


def targets(results: dict) -> list[str]:
    lines = []
    fsdd = results.get("fsdd")
    if not fsdd:
        return lines
    default = next(r["lr_op"] for r in fsdd.values() if r["strategy"] == "naive")  # the baselines' layer

    def pick(strategy_name, bits=8):
        return next(r for r in fsdd.values() if r["strategy"] == strategy_name and r["bits"] == bits
                    and r["lr_op"] == default)

    f32, b8, b4 = pick("latent-replay", 32), pick("latent-replay"), pick("latent-replay", 4)
    loss8, loss4 = f32["mean_final"] - b8["mean_final"], f32["mean_final"] - b4["mean_final"]
    lines.append(f"8-bit replays vs float: {100 * loss8:+.2f} points lost (target <= 0.3): "
                 f"{'met' if loss8 <= 0.003 else 'NOT met'}")
    lines.append(f"4-bit replays vs float: {100 * loss4:+.2f} points lost (target <= 2): "
                 f"{'met' if loss4 <= 0.02 else 'NOT met'}")
    last = max(r["lr_op"] for r in fsdd.values())
    for cut in (default, last):
        found = {r["strategy"]: r for r in fsdd.values() if r["lr_op"] == cut and r["bits"] == 8}
        b8, naive, joint = found["latent-replay"], found["naive"], found["joint"]
        gap, above = joint["mean_final"] - b8["mean_final"], b8["mean_final"] - naive["mean_final"]
        lines.append(f"LR op {cut}: latent replay {100 * b8['mean_final']:.1f}% vs joint {100 * joint['mean_final']:.1f}% "
                     f"(within 3 points: {'met' if gap <= 0.03 else 'NOT met'}) and naive "
                     f"{100 * naive['mean_final']:.1f}% (>= 20 points above: {'met' if above >= 0.2 else 'NOT met'}); "
                     f"forgetting {100 * b8['mean_forgetting']:.1f} points (target <= 5): "
                     f"{'met' if b8['mean_forgetting'] <= 0.05 else 'NOT met'}")
    for r in (r for r in fsdd.values() if "device" in r):
        ram, dev = r["memory"]["total_ram_bytes"], r["device"]["qemu-m4"]
        ok = ram <= 256 * 1024 and r["memory"]["flash_bytes"] <= 1 << 20
        seconds, macs = dev["learn_new_class_seconds"], r["macs_per_update"]
        lines.append(f"LR op {r['lr_op']} ({'x'.join(map(str, r['lr_shape']))}): {100 * r['mean_final']:.1f}%, learner "
                     f"RAM {ram:,} B, flash {r['memory']['flash_bytes']:,} B (target <= 256 KB and 1 MB: "
                     f"{'met' if ok else 'NOT met'}); a new class in {seconds:.1f} s at 120 MHz on qemu-m4 "
                     f"({dev['scope']}; target <= 6 s: {'met' if seconds <= 6 else 'NOT met'}); backward "
                     f"{macs['backward'] / dev['instructions_per_backward']:.3f} MAC per instruction (target >= 0.25: "
                     f"{'met' if macs['backward'] / dev['instructions_per_backward'] >= 0.25 else 'NOT met'})")
        if "accuracy_equal_reference" in dev:
            lines.append(f"LR op {r['lr_op']} on the device: {100 * dev['final_average_accuracy']:.1f}% final average "
                         f"accuracy, the Python run's {'exactly' if dev['accuracy_equal_reference'] else 'NOT'}; "
                         f"losses within {dev['max_loss_relative_difference']:.1e} relative")
    return lines


def markdown(results: dict, meta: dict) -> str:
    lines = ["# Continual learning with latent replays", "", f"`{meta['command']}` ({meta['seconds']:.0f} s, "
             f"{meta['seeds']} seeds, reference learner).", ""]
    for name, rows in results.items():
        lines += [f"## {MODELS[name][0]}", "",
                  "| strategy | LR layer | LR shape | bits | final avg accuracy % | forgetting (points) | "
                  "buffer B | total RAM B |", "|---|---|---|---|---|---|---|---|"]
        for label, r in rows.items():
            m = r["memory"]
            lines.append(f"| {r['strategy']} | op {r['lr_op']} | {'x'.join(map(str, r['lr_shape']))} | {r['bits']} | "
                         f"{100 * r['mean_final']:.1f} ± {100 * r['std_final']:.1f} | {100 * r['mean_forgetting']:.1f} | "
                         f"{m['buffer_bytes']:,} | {m['total_ram_bytes']:,} |")
        lines.append("")
        device = [(label, r) for label, r in rows.items() if "device" in r]
        if device:
            lines += ["C learner (seed 0's configuration). *Scenario*: the whole scenario played on the learner image "
                      "(front, back and buffer in one C program: every new sample staged through the front, every "
                      "step, every test prediction); its accuracy compared with the Python run's. *Steps*: the "
                      f"learner does not fit {ONCHIP_RAM // 1024} KB, so {3} SGD steps of the bare back are measured "
                      "and a new class is their median times its steps (its staging not counted). One update: "
                      f"{device[0][1]['device']['qemu-m4']['rows_per_update']} samples. MAC per instruction: the "
                      "forward and the backward multiply-adds of a full update over the instructions between the "
                      "step's profile marks.", "",
                      "| LR layer | core | run | instructions per update | forward | backward | SGD | MAC/instr forward "
                      "| MAC/instr backward | new class s | device = Python | image flash B | image RAM B |",
                      "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for label, r in device:
                macs = r["macs_per_update"]
                for target, d in r["device"].items():
                    whole = "accuracy_equal_reference" in d
                    same = (d["accuracy_equal_reference"] and d["losses_equal_reference"]) if whole else \
                        d["losses_equal_reference"]
                    lines.append(f"| op {r['lr_op']} | {target} | {'scenario' if whole else 'steps'} | "
                                 f"{d['instructions_per_update']:,} | {d['instructions_per_forward']:,} | "
                                 f"{d['instructions_per_backward']:,} | {d['instructions_per_optimizer_step']:,} | "
                                 f"{macs['forward'] / d['instructions_per_forward']:.3f} | "
                                 f"{macs['backward'] / d['instructions_per_backward']:.3f} | "
                                 f"{d['learn_new_class_seconds']:.2f} at {d['clock_hz'] / 1e6:.0f} MHz | "
                                 f"{'yes' if same else 'NO'}{'' if whole else ' (losses)'} | {d['flash_bytes']:,} | "
                                 f"{d['ram_bytes']:,} |")
            lines.append("")
    lines += ["## Targets", ""] + [f"- {t}" for t in meta["targets"]] + [""]
    return "\n".join(lines)


def write_reports(results: dict) -> None:
    """benchmarks/results/learn_<scenario>/: learn.report's heat map (the default latent replay, seed 0),
    the average accuracy after each experience of every strategy at the default layer, and the learner's
    RAM against its accuracy for every LR layer."""
    from microforge.learn.metrics import average_accuracy
    from microforge.learn.report import write_learn_report

    for name, rows in results.items():
        scenario_name, path = MODELS[name]
        stream = scenario(scenario_name, microforge.load(path).inputs[0])
        counts = [len(e.test_y) for e in stream]
        default = next(r["lr_op"] for r in rows.values() if r["strategy"] == "naive")
        entries = []
        for r in sorted(rows.values(), key=lambda r: (r["strategy"] != "latent-replay", r["bits"] != 8)):
            if r["strategy"] == "latent-replay" and r["bits"] not in (8, 32) and r["lr_op"] == default:
                continue  # the bits study is in the table; the plots keep 8 and 32 bits
            entries.append({"strategy": r["strategy"], "bits": r["bits"],
                            "lr_layer": {"op": r["lr_op"], "shape": r["lr_shape"]},
                            "experiences": [e.name for e in stream], "accuracy_matrix": r["accuracy_matrix_seed0"],
                            "average_accuracy": average_accuracy(r["accuracy_matrix_seed0"], counts),
                            "final_average_accuracy": r["mean_final"], "forgetting": r["mean_forgetting"],
                            "memory": r["memory"]})
        write_learn_report(entries, RESULTS / f"learn_{name}", f"Continual learning: {scenario_name} "
                                                              "(accuracy: mean of the seeds; plots: seed 0)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"of {', '.join(SCENARIOS)}")
    parser.add_argument("--quick", action="store_true", help="only the default LR layer")
    parser.add_argument("--bits", default=",".join(map(str, BITS)), help="the bits study at the default LR layer")
    parser.add_argument("--no-middle-cuts", action="store_true", help="skip the cuts between the default and the last")
    parser.add_argument("--reports-only", action="store_true",
                        help="rebuild the HTML reports from benchmarks/results/learn.json without training")
    args = parser.parse_args(argv)
    if args.reports_only:
        write_reports(json.loads((RESULTS / "learn.json").read_text())["results"])
        return 0
    started = time.time()
    bits = tuple(int(b) for b in args.bits.split(","))
    results = {name: runs(name, args.seeds, args.quick, bits, not args.no_middle_cuts)
               for name in args.scenarios.split(",")}
    command = "python benchmarks/learn.py" + ("" if len(sys.argv) == 1 else " " + " ".join(sys.argv[1:]))
    meta = {"command": command, "seconds": time.time() - started, "seeds": args.seeds, "targets": targets(results)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "learn.json").write_text(json.dumps({**meta, "results": results}, indent=1) + "\n")
    (RESULTS / "learn.md").write_text(markdown(results, meta))
    write_reports(results)
    print(markdown(results, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
