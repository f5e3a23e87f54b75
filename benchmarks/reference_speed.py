"""How fast the reference interpreter evaluates the MLPerf Tiny int8 models, against its peers in the same run.

Peers: TFLite Micro (the `tflite-micro` Python package, sample by sample: it has no batch), LiteRT with its
reference kernels (BUILTIN_REF) and with its default optimized kernels (XNNPACK), both at batch 1.
microforge runs at batch 1 and batch 256. Reports host seconds per inference (median of repeats) and the
ratio of our batched throughput to TFLM's. Writes benchmarks/results/reference_speed.{json,md}.

    .venv/bin/python benchmarks/reference_speed.py [--samples 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the TFLM oracle helper

from oracle import quiet_stderr, tflm_interpreter  # noqa: E402

import microforge  # noqa: E402

MODELS = {
    "kws": "kws_ref_model_int8.tflite",
    "vww": "vww_96_int8.tflite",
    "ic": "ic_resnet8_pretrainedResnet_quant_int8.tflite",
    "ad": "ad01_int8.tflite",
}
RESULTS = ROOT / "benchmarks" / "results"


def median_seconds_per_inference(fn, count: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) / count)
    return statistics.median(times)


def bench_model(path: Path, samples: int, repeats: int) -> dict:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    data = path.read_bytes()
    graph = microforge.load(data)
    shape = graph.inputs[0].shape
    x = np.random.default_rng(0).integers(-128, 128, size=(samples,) + shape, dtype=np.int8)
    ours_batch = x.reshape((samples,) + shape[1:])
    single = max(8, samples // 16)  # per-sample runners: enough calls for a stable median

    result = {"samples": samples}
    result["microforge_batch1_s"] = median_seconds_per_inference(
        lambda: [microforge.run(graph, ours_batch[i:i + 1]) for i in range(single)], single, repeats)
    result["microforge_batch256_s"] = median_seconds_per_inference(
        lambda: microforge.run(graph, ours_batch[:256]), min(256, samples), repeats)

    tflm = tflm_interpreter(data)

    def run_tflm():
        with quiet_stderr():
            for i in range(single):
                tflm.set_input(x[i], 0)
                tflm.invoke()
                tflm.get_output(0)

    result["tflm_s"] = median_seconds_per_inference(run_tflm, single, repeats)
    for key, resolver in (("litert_ref_s", OpResolverType.BUILTIN_REF), ("litert_default_s", OpResolverType.AUTO)):
        lite = Interpreter(model_content=data, experimental_op_resolver_type=resolver, num_threads=1)
        lite.allocate_tensors()
        index = lite.get_input_details()[0]["index"]

        def run_lite(lite=lite, index=index):
            for i in range(single):
                lite.set_tensor(index, x[i])
                lite.invoke()

        result[key] = median_seconds_per_inference(run_lite, single, repeats)
    result["batched_vs_tflm_throughput"] = result["tflm_s"] / result["microforge_batch256_s"]
    return result


def markdown(results: dict) -> str:
    lines = [
        "| model | microforge b=1 (ms) | microforge b=256 (ms/inf) | TFLM (ms) | LiteRT ref (ms) | LiteRT default (ms) | b=256 throughput vs TFLM |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results["models"].items():
        lines.append(
            f"| {name} | {r['microforge_batch1_s'] * 1e3:.2f} | {r['microforge_batch256_s'] * 1e3:.3f} | "
            f"{r['tflm_s'] * 1e3:.2f} | {r['litert_ref_s'] * 1e3:.2f} | {r['litert_default_s'] * 1e3:.3f} | "
            f"{r['batched_vs_tflm_throughput']:.1f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = {
        "command": "python benchmarks/reference_speed.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}",
        "models": {},
    }
    for name, file in MODELS.items():
        results["models"][name] = bench_model(ROOT / "models" / "mlperf_tiny" / file, args.samples, args.repeats)
        print(name, json.dumps(results["models"][name]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "reference_speed.json").write_text(json.dumps(results, indent=1) + "\n")
    (RESULTS / "reference_speed.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
