"""Activation arena per model: TFLite Micro (measured with its Python package) against microforge's planner.

Per model: TFLM's reported head, the layer-wise lower bound, our arena for each strategy and the time it
took. Models: the four MLPerf Tiny int8 models, MobileNetV2 (0.35, 96x96) and (0.30, 80x80), a ResNet-
style and an Inception-style model (Keras, random weights, int8), 200 random graphs, and one 500-op graph
for planning time. Writes benchmarks/results/memory.{json,md}.

    .venv/bin/python benchmarks/memory.py [--random 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import microforge  # noqa: E402
from keras_models import BUILDERS, keras_model_bytes  # noqa: E402
from microforge.frontend.writer import write_tflite  # noqa: E402
from microforge.graph.random_graph import random_graph  # noqa: E402
from microforge.plan import plan  # noqa: E402
from tflm_arena import tflm_reported_head_bytes  # noqa: E402

MLPERF = {
    "kws": "kws_ref_model_int8.tflite",
    "vww": "vww_96_int8.tflite",
    "ic": "ic_resnet8_pretrainedResnet_quant_int8.tflite",
    "ad": "ad01_int8.tflite",
}
STRATEGIES = ("best-fit", "hill-climb", "exact", "auto")
RESULTS = ROOT / "benchmarks" / "results"


def measure(model: bytes) -> dict:
    graph = microforge.load(model)
    row = {"ops": len(graph.ops), "tflm_measured": tflm_reported_head_bytes(model)}
    for strategy in STRATEGIES:
        p = plan(graph, strategy=strategy, seconds=10)
        row[strategy] = p.arena_bytes
        row[f"{strategy}_s"] = round(p.seconds, 3)
        if strategy == "auto":
            row["tflm_reproduced"] = p.tflm_bytes
            row["lower_bound"] = p.lower_bound_bytes
            row["proven_optimal"] = p.proven_optimal
            row["auto_strategy"] = p.strategy
    row["saving_vs_tflm"] = 1 - row["auto"] / row["tflm_measured"]
    row["gap_to_lower_bound"] = row["auto"] / row["lower_bound"] - 1
    return row


def markdown(results: dict) -> str:
    lines = ["| model | ops | TFLM (measured) | lower bound | best-fit | hill-climb | exact | auto | vs TFLM | gap to bound | auto time (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["models"].items():
        lines.append(f"| {name} | {r['ops']} | {r['tflm_measured']:,} | {r['lower_bound']:,} | {r['best-fit']:,} | "
                     f"{r['hill-climb']:,} | {r['exact']:,} | {r['auto']:,} | {r['auto'] / r['tflm_measured'] - 1:+.1%} | "
                     f"{r['gap_to_lower_bound']:.1%} | {r['auto_s']:.2f} |")
    rnd = results["random_graphs"]
    lines.append("")
    lines.append(f"Random graphs ({rnd['count']}): auto arena smaller than TFLM's on {rnd['smaller']}, equal on "
                 f"{rnd['equal']}, larger on {rnd['larger']}; total {rnd['auto_total']:,} B vs TFLM "
                 f"{rnd['tflm_total']:,} B; at the lower bound on {rnd['at_lower_bound']}, worst gap "
                 f"{rnd['worst_gap']:.1%}; slowest plan {rnd['slowest_s']:.2f} s.")
    big = results["large_graph"]
    lines.append(f"A {big['ops']}-op graph: planned in {big['seconds']:.2f} s (auto: {big['arena']:,} B, "
                 f"lower bound {big['lower_bound']:,} B, TFLM {big['tflm']:,} B).")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", type=int, default=200, help="how many random graphs")
    args = parser.parse_args()
    results = {"command": "python benchmarks/memory.py " + " ".join(sys.argv[1:]), "alignment": 16, "models": {}}
    models = {name: (ROOT / "models" / "mlperf_tiny" / file).read_bytes() for name, file in MLPERF.items()}
    models.update({name: keras_model_bytes(name) for name in BUILDERS})
    for name, data in models.items():
        results["models"][name] = measure(data)
        print(name, results["models"][name], flush=True)

    rows = []
    for seed in range(args.random):
        graph = random_graph(seed)
        p = plan(graph, seconds=2)
        measured = tflm_reported_head_bytes(write_tflite(graph))
        rows.append((p.arena_bytes, measured, p.lower_bound_bytes, p.seconds))
    results["random_graphs"] = {
        "count": len(rows),
        "smaller": sum(a < t for a, t, _, _ in rows),
        "equal": sum(a == t for a, t, _, _ in rows),
        "larger": sum(a > t for a, t, _, _ in rows),
        "auto_total": sum(a for a, _, _, _ in rows),
        "tflm_total": sum(t for _, t, _, _ in rows),
        "at_lower_bound": sum(a == lb for a, _, lb, _ in rows),
        "worst_gap": max(a / lb - 1 for a, _, lb, _ in rows),
        "slowest_s": max(s for *_, s in rows),
    }
    print(results["random_graphs"], flush=True)

    big = random_graph(12345, blocks=220, size=48)
    started = time.monotonic()
    p = plan(big)
    results["large_graph"] = {"ops": len(big.ops), "seconds": time.monotonic() - started, "arena": p.arena_bytes,
                              "lower_bound": p.lower_bound_bytes, "tflm": p.tflm_bytes}
    print(results["large_graph"], flush=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "memory.json").write_text(json.dumps(results, indent=1) + "\n")
    (RESULTS / "memory.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
