"""The generated C on emulated Cortex-M4/M7 (QEMU) and on the host, beside TFLite Micro.

Per model and core: executed instructions per inference (exact, counted by our QEMU plugin), MACs per
instruction, arena, stack and flash of the firmware's model part (beside the .tflite file's size, which
TFLM keeps in flash besides its code: a floor under TFLM's flash). The TFLM+CMSIS-NN figures are the peer
measurements on the same emulated boards given in the project's C-backend issue (TFLM 2026 main,
arm-none-eabi-gcc 12.2 -O2); TFLM cannot be built here, so they are quoted, not re-measured. A table of
the issue's targets (met or not) follows. Host: samples per second of the compiled library vs the numpy
interpreter, TFLM and LiteRT, in one run. Writes benchmarks/results/cortex_m.{json,md}.

    .venv/bin/python benchmarks/cortex_m.py [--samples 4]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import microforge  # noqa: E402
from microforge.codegen import compile_host, generate  # noqa: E402
from microforge.codegen.targets.qemu import run_on_qemu  # noqa: E402
from microforge.graph.analysis import analyze  # noqa: E402
from microforge.plan.validate import random_inputs  # noqa: E402
from microforge.reference.interpreter import run_batched  # noqa: E402
from oracle import quiet_stderr, tflm_interpreter  # noqa: E402

MODELS = {
    "kws": "kws_ref_model_int8.tflite",
    "vww": "vww_96_int8.tflite",
    "ic": "ic_resnet8_pretrainedResnet_quant_int8.tflite",
    "ad": "ad01_int8.tflite",
}
# model -> (M4 TFLM+CMSIS-NN, M7 TFLM+CMSIS-NN, M4 TFLM reference kernels, TFLM arena bytes)
PEER = {
    "kws": (7_697_385, 7_643_153, 43_023_476, 22_820),
    "vww": (24_101_944, 24_025_570, 100_144_903, 100_708),
    "ic": (29_862_016, 30_017_644, 107_291_198, 54_996),
    "ad": (582_904, 583_225, 1_951_949, 2_580),
}
# The targets: M4 instructions <= 0.5x TFLM+CMSIS-NN; arena per model; arena sum <= 50% of TFLM's.
INSTRUCTION_RATIO_TARGET = 0.5
ARENA_TARGET = {"kws": 9 * 1024, "vww": 40 * 1024, "ic": 34 * 1024, "ad": 1024}
RESULTS = ROOT / "benchmarks" / "results"


def emulated(graph, name: str, samples: int) -> dict:
    macs = analyze(graph)["totals"]["macs"]
    batches = random_inputs(graph, samples, seed=1)
    expected = run_batched(graph, batches)
    row = {"macs": macs}
    for board, core in (("qemu-m4", "cortex-m4"), ("qemu-m7", "cortex-m7")):
        with tempfile.TemporaryDirectory() as tmp:
            generated = generate(graph, tmp, target=core)
            per_sample = [b"".join(np.ascontiguousarray(b[n]).tobytes() for b in batches) for n in range(samples)]
            result = run_on_qemu(generated.directory, board, per_sample)
        got = np.stack([np.frombuffer(o, graph.outputs[0].dtype, graph.outputs[0].size) for o in result.outputs])
        instructions = int(np.median(result.instructions))
        row[board] = {
            "bit_exact": bool(np.array_equal(got.reshape(expected[0].shape), expected[0])),
            "instructions": instructions,
            "macs_per_instruction": macs / instructions,
            "vs_tflm_cmsis_nn": instructions / PEER[name][0 if board == "qemu-m4" else 1],
            "arena_bytes": generated.arena_bytes,
            "stack_bytes": result.stack_bytes,
            "model_flash_bytes": result.model_flash_bytes,
            "firmware_flash_bytes": result.flash_bytes,
        }
    return row


def targets(results: dict) -> list[tuple[str, str, bool]]:
    """(target, what was measured, met) for the issue's instruction and arena targets."""
    rows = []
    for name, r in results["models"].items():
        ratio = r["qemu-m4"]["vs_tflm_cmsis_nn"]
        rows.append((f"{name} M4 instructions <= {INSTRUCTION_RATIO_TARGET}x TFLM+CMSIS-NN",
                     f"{ratio:.2f}x", ratio <= INSTRUCTION_RATIO_TARGET))
    for name, r in results["models"].items():
        arena = r["qemu-m4"]["arena_bytes"]
        rows.append((f"{name} arena <= {ARENA_TARGET[name]:,} B", f"{arena:,} B", arena <= ARENA_TARGET[name]))
    ours = sum(r["qemu-m4"]["arena_bytes"] for r in results["models"].values())
    tflm = sum(PEER[name][3] for name in results["models"])
    rows.append(("arena sum <= 50% of TFLM's", f"{ours:,} / {tflm:,} B = {ours / tflm:.0%}", ours <= tflm / 2))
    return rows


def host_throughput(graph, data: bytes, samples: int = 512) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    batches = random_inputs(graph, samples, seed=2)
    model = compile_host(graph)  # the host defaults: -O3 -march=native
    model.run_batched(batches)

    def rate(fn, count):
        start = time.perf_counter()
        fn()
        return count / (time.perf_counter() - start)

    out = {"compiled": rate(lambda: model.run_batched(batches), samples),
           "numpy": rate(lambda: run_batched(graph, batches), samples)}
    single = 64
    tflm = tflm_interpreter(data)

    def run_tflm():
        with quiet_stderr():
            for i in range(single):
                tflm.set_input(batches[0][i], 0)
                tflm.invoke()

    out["tflm"] = rate(run_tflm, single)
    lite = Interpreter(model_content=data, num_threads=1)
    lite.allocate_tensors()
    index = lite.get_input_details()[0]["index"]

    def run_lite():
        for i in range(single):
            lite.set_tensor(index, batches[0][i])
            lite.invoke()

    out["litert"] = rate(run_lite, single)
    out["compiled_vs_numpy"] = out["compiled"] / out["numpy"]
    return out


def markdown(results: dict) -> str:
    lines = ["| model | core | instructions | TFLM+CMSIS-NN | ratio | MACs/instr | arena (ours / TFLM) | stack | "
             "model flash (ours / .tflite) | bit-exact |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["models"].items():
        for board in ("qemu-m4", "qemu-m7"):
            e = r[board]
            peer = PEER[name][0 if board == "qemu-m4" else 1]
            lines.append(f"| {name} | {board[-2:].upper()} | {e['instructions']:,} | {peer:,} | "
                         f"{e['vs_tflm_cmsis_nn']:.2f}x | {e['macs_per_instruction']:.2f} | "
                         f"{e['arena_bytes']:,} / {PEER[name][3]:,} | {e['stack_bytes']:,} | "
                         f"{e['model_flash_bytes']:,} / {r['tflite_bytes']:,} | {'yes' if e['bit_exact'] else 'NO'} |")
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {what} | {measured} | {'yes' if met else 'no'} |" for what, measured, met in targets(results)]
    lines += ["", "| model | compiled C (samples/s) | numpy interpreter | TFLM | LiteRT default | C vs numpy |",
              "|---|---|---|---|---|---|"]
    for name, r in results["models"].items():
        h = r["host"]
        lines.append(f"| {name} | {h['compiled']:,.0f} | {h['numpy']:,.0f} | {h['tflm']:,.0f} | {h['litert']:,.0f} | "
                     f"{h['compiled_vs_numpy']:.1f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4, help="inputs per model on the emulated cores")
    args = parser.parse_args()
    results = {"command": "python benchmarks/cortex_m.py " + " ".join(sys.argv[1:]), "models": {}}
    for name, file in MODELS.items():
        data = (ROOT / "models" / "mlperf_tiny" / file).read_bytes()
        graph = microforge.load(data)
        row = emulated(graph, name, args.samples)
        # TFLM keeps this flatbuffer in flash besides its code: a floor under TFLM's flash for the model
        row["tflite_bytes"] = len(data)
        row["host"] = host_throughput(graph, data)
        results["models"][name] = row
        print(name, json.dumps(row), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cortex_m.json").write_text(json.dumps(results, indent=1) + "\n")
    (RESULTS / "cortex_m.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
