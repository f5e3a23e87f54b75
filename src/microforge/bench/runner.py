"""`microforge bench`: run an MLPerf Tiny task on a model, through one target, in one mode.

Targets
- `reference`: the numpy interpreter (bit-exact with TFLite Micro; the oracle itself).
- `host`: the generated C compiled for this machine (microforge.codegen.compile_host); wall-clock time.
- `qemu-m4`, `qemu-m7`: the generated C on the emulated Cortex-M boards. Outputs and executed
  instructions per inference (exact, TCG plugin), flash and RAM from the ELF, stack by painting. Time
  comes from our DUT firmware's own timer over the EEMBC protocol, QEMU running with -icount (virtual
  time counts executed instructions), and is turned into time on a board with an energy model's clock
  and cycles per instruction (default: the MLPerf Tiny reference board, 120 MHz, 1 cycle per
  instruction; see microforge.bench.energy); it is marked emulated.
- `serial:PORT`: a board running our device-under-test firmware, driven over the EEMBC protocol
  (microforge.bench.dut); time from the board's own microsecond timer.

Modes (MLPerf Tiny rules, adapted where noted)
- `accuracy`: every dataset sample once; the task's metric (top-1 or ROC AUC); outputs compared byte
  for byte with the reference interpreter (`bit_exact`, `mismatches`; the reference target is the oracle
  and is not compared with itself).
- `performance`: 5 inputs (the first 5 samples of the dataset, or seeded random inputs without one);
  per input one warm-up inference, then a timed window of N inferences, throughput = N / window time;
  the result is the median throughput over the inputs and latency = 1 / median. The rules ask for
  windows of at least 10 s; `min_window_s` (default 1 s on the host) is a parameter. On the emulated
  boards virtual time is exact, so a window is EMULATED_WINDOW inferences.
- `energy`: performance, plus energy per inference: estimated from instructions with the energy
  model on emulated targets, or integrated from a power monitor's trace (`power_trace`) covering
  `power_inferences` inferences on any target.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import microforge
from microforge.bench.energy import REFERENCE_BOARD, EnergyModel, energy_from_trace, read_power_trace
from microforge.bench.tasks import TASKS, Sample, Task, check_model, get_task, load_samples, score
from microforge.errors import InputError, TargetError
from microforge.graph.ir import Graph
from microforge.plan.validate import random_inputs
from microforge.reference.interpreter import run_batched

MODES = ("accuracy", "performance", "energy")
LOCAL_TARGETS = ("reference", "host", "qemu-m4", "qemu-m7")
PERFORMANCE_INPUTS = 5
EMULATED_WINDOW = 3  # inferences per timed window under QEMU (virtual time is exact, so few suffice)
INSTRUCTIONS_PER_VIRTUAL_US = 1000  # qemu -icount shift=0: one instruction per virtual nanosecond
Progress = Callable[[int, int], None]  # (inferences done, inferences in all)


def check_target(target: str) -> None:
    if target in LOCAL_TARGETS:
        return
    if target.startswith("serial:") and len(target) > len("serial:"):
        return
    raise InputError(f"unknown target {target!r}; choose one of {', '.join(LOCAL_TARGETS)} or serial:PORT "
                     f"(e.g. serial:/dev/ttyACM0)")


@dataclass
class Measured:
    """What running a batch of inferences on a target gave."""

    outputs: np.ndarray  # (inferences, *output tensor shape)
    instructions: list[int] | None = None  # per inference, emulated targets
    ram_bytes: int | None = None
    flash_bytes: int | None = None
    arena_bytes: int | None = None
    stack_bytes: int | None = None


class Device:
    """One target, built once for a graph; `run` evaluates a batch of single-input inferences."""

    emulated = False

    def __init__(self, graph: Graph):
        self.graph = graph

    def run(self, batch: np.ndarray, progress: Progress | None = None) -> Measured:
        raise NotImplementedError

    def throughput(self, x: np.ndarray, min_window_s: float) -> float:
        """Inferences per second on one input: a warm-up, then one timed window (wall clock)."""
        self.run(x[None])
        count, elapsed = 1, 0.0
        while True:
            start = time.perf_counter()
            for _ in range(count):
                self.run(x[None])
            elapsed = time.perf_counter() - start
            if elapsed >= min_window_s:
                return count / elapsed
            count = max(count * 2, int(count * min_window_s / max(elapsed, 1e-9)) + 1)

    def close(self) -> None:
        pass


def _chunks(batch: np.ndarray, size: int):
    for start in range(0, len(batch), size):
        yield start, batch[start:start + size]


class ReferenceDevice(Device):
    def run(self, batch, progress=None):
        outs = []
        for start, chunk in _chunks(batch, 512):
            outs.append(run_batched(self.graph, [chunk])[0])
            if progress:
                progress(start + len(chunk), len(batch))
        return Measured(np.concatenate(outs))


class HostDevice(Device):
    def __init__(self, graph: Graph):
        super().__init__(graph)
        from microforge.codegen.host import compile_host

        self.model = compile_host(graph)
        self.arena_bytes = self.model.generated.arena_bytes

    def run(self, batch, progress=None):
        outs = []
        for start, chunk in _chunks(batch, 4096):
            outs.append(self.model.run_batched([chunk])[0])
            if progress:
                progress(start + len(chunk), len(batch))
        return Measured(np.concatenate(outs), ram_bytes=self.arena_bytes, arena_bytes=self.arena_bytes)


class QemuDevice(Device):
    emulated = True

    def __init__(self, graph: Graph, board: str):
        super().__init__(graph)
        from microforge.codegen.emit import generate

        self.board = board
        self._tmp = tempfile.TemporaryDirectory(prefix=f"microforge-bench-{board}-")
        core = {"qemu-m4": "cortex-m4", "qemu-m7": "cortex-m7"}[board]
        self.generated = generate(graph, self._tmp.name, target=core)

    def run(self, batch, progress=None):
        from microforge.codegen.targets.qemu import run_on_qemu

        out_t = self.graph.outputs[0]
        outs, instructions, result = [], [], None
        for start, chunk in _chunks(batch, 2000):
            result = run_on_qemu(self.generated.directory, self.board, [x.tobytes() for x in chunk],
                                 stack_samples=1, timeout_s=600.0)
            # the first output is the task's (an on-chip OOD detector's score and flag follow it)
            outs.append(np.stack([np.frombuffer(r, out_t.dtype, out_t.size).reshape(out_t.shape)
                                  for r in result.outputs]))
            instructions += result.instructions
            if progress:
                progress(start + len(chunk), len(batch))
        return Measured(np.concatenate(outs), instructions=instructions,
                        ram_bytes=result.model_ram_bytes + result.stack_bytes,
                        flash_bytes=result.model_flash_bytes, arena_bytes=self.generated.arena_bytes,
                        stack_bytes=result.stack_bytes)

    def timed_windows(self, inputs: np.ndarray) -> list[float]:
        """Virtual microseconds per inference, one per input: the DUT firmware's `infer N 1` laps."""
        from microforge.bench.dut import qemu_dut

        per_inference = []
        with qemu_dut(self.generated.directory, self.board, timeout_s=300.0) as dut:
            for x in inputs:
                dut.load(x.tobytes())
                per_inference.append(dut.infer(EMULATED_WINDOW, 1).us_per_inference)
        return per_inference

    def close(self):
        self._tmp.cleanup()


class SerialDevice(Device):
    """A board running our DUT firmware for this model, on a serial port."""

    def __init__(self, graph: Graph, port: str, baudrate: int = 115200, timeout_s: float = 30.0):
        super().__init__(graph)
        from microforge.bench.dut import open_serial_dut

        self._context = open_serial_dut(port, baudrate=baudrate, timeout_s=timeout_s)
        self.client = self._context.__enter__()

    def run(self, batch, progress=None):
        out_t = self.graph.outputs[0]
        outs = []
        for i, x in enumerate(batch):
            self.client.load(x.tobytes())
            self.client.infer(1, 0)
            raw = self.client.results_raw()
            expected = sum(t.nbytes for t in self.graph.outputs)
            if len(raw) != expected:
                raise TargetError(f"the device returned {len(raw)} output bytes; the model has {expected}")
            outs.append(np.frombuffer(raw, out_t.dtype, out_t.size).reshape(out_t.shape))
            if progress:
                progress(i + 1, len(batch))
        return Measured(np.stack(outs))

    def throughput(self, x, min_window_s):
        self.client.load(x.tobytes())
        result = self.client.infer(1, 1)
        count = max(1, int(min_window_s * 1e6 / max(result.elapsed_us, 1)))
        result = self.client.infer(count, 1)
        return result.iterations / (result.elapsed_us * 1e-6)

    def close(self):
        self._context.__exit__(None, None, None)


def open_device(graph: Graph, target: str) -> Device:
    check_target(target)
    if target == "reference":
        return ReferenceDevice(graph)
    if target == "host":
        return HostDevice(graph)
    if target.startswith("qemu-"):
        return QemuDevice(graph, target)
    return SerialDevice(graph, target[len("serial:"):])


def _performance_inputs(graph: Graph, samples: list[Sample] | None, count: int, seed: int) -> np.ndarray:
    if samples:
        return np.stack([s.batch[0] for s in samples[:count]])
    return random_inputs(graph, count, seed)[0]


def bench(task: str | Task, model, *, dataset=None, target: str = "host", mode: str = "accuracy",
          energy_model: EnergyModel = REFERENCE_BOARD, min_window_s: float = 1.0, seed: int = 0,
          power_trace=None, power_inferences: int | None = None, progress: Progress | None = None,
          device: Device | None = None) -> dict:
    """Run `task` on `model` (a path or a Graph) through `target` in `mode`; return the result dict."""
    task = get_task(task) if isinstance(task, str) else task
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    check_target(target)
    graph = model if isinstance(model, Graph) else microforge.load(model)
    check_model(task, graph)
    if mode == "accuracy" and dataset is None:
        raise InputError(f"accuracy mode needs a dataset in the runner format (--dataset DIR) for task {task.name}")
    samples = load_samples(task, graph, dataset) if dataset is not None else None

    result = {"task": task.name, "model": getattr(model, "name", None) or Path(str(model)).name,
              "target": target, "mode": mode, "emulated": target.startswith("qemu-"),
              "samples": len(samples) if samples else 0, task.metric: None, "bit_exact": None, "mismatches": None,
              "latency_ms": None, "throughput_ips": None, "instructions_per_inference": None, "energy_uj": None,
              "ram_bytes": None, "flash_bytes": None, "arena_bytes": None, "stack_bytes": None,
              "clock_mhz": energy_model.clock_hz / 1e6 if target.startswith("qemu-") else None,
              "dataset": str(dataset) if dataset is not None else None}
    own_device = device is None
    device = device or open_device(graph, target)
    try:
        if mode == "accuracy":
            _accuracy(task, graph, samples, device, result, progress)
        else:
            _performance(graph, samples, device, result, energy_model, min_window_s, seed)
            if mode == "energy":
                _energy(result, energy_model, power_trace, power_inferences)
    finally:
        if own_device:
            device.close()
    return result


def _fill_sizes(result: dict, measured: Measured) -> None:
    for key in ("ram_bytes", "flash_bytes", "arena_bytes", "stack_bytes"):
        if getattr(measured, key) is not None:
            result[key] = getattr(measured, key)


def _accuracy(task: Task, graph: Graph, samples: list[Sample], device: Device, result: dict,
              progress: Progress | None) -> None:
    batch = np.concatenate([s.batch for s in samples])
    measured = device.run(batch, progress)
    bounds = np.cumsum([0] + [len(s.batch) for s in samples])
    outputs = [measured.outputs[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    result[task.metric] = score(task, graph, samples, outputs)
    result["inferences"] = int(len(batch))
    if not isinstance(device, ReferenceDevice):
        expected = run_batched(graph, [batch])[0].reshape(measured.outputs.shape)
        bad = np.any(expected.reshape(len(batch), -1) != measured.outputs.reshape(len(batch), -1), axis=1)
        result["mismatches"] = int(bad.sum())
        result["bit_exact"] = not bad.any()
    if measured.instructions:
        result["instructions_per_inference"] = int(np.median(measured.instructions))
    _fill_sizes(result, measured)


def _performance(graph: Graph, samples: list[Sample] | None, device: Device, result: dict,
                 energy_model: EnergyModel, min_window_s: float, seed: int) -> None:
    inputs = _performance_inputs(graph, samples, PERFORMANCE_INPUTS, seed)
    result["performance_inputs"] = "dataset" if samples else f"random (seed {seed})"
    if device.emulated:
        # Exact instructions, sizes and stack from the counting harness; time from the DUT firmware's own
        # timer under -icount (1 µs of virtual time = 1000 executed instructions), turned into time on the
        # energy model's board.
        measured = device.run(inputs)
        result["instructions_per_inference"] = int(np.median(measured.instructions))
        _fill_sizes(result, measured)
        window_instructions = [us * INSTRUCTIONS_PER_VIRTUAL_US for us in device.timed_windows(inputs)]
        throughputs = [1.0 / energy_model.latency_s(n) for n in window_instructions]
        result["timing"] = (f"DUT timer under QEMU -icount, {EMULATED_WINDOW} inferences per window after a "
                            f"warm-up, at {energy_model.clock_hz / 1e6:g} MHz and "
                            f"{energy_model.cycles_per_instruction:g} cycle/instruction")
    else:
        throughputs = [device.throughput(x, min_window_s) for x in inputs]
        result["timing"] = ("board timer over the EEMBC protocol" if isinstance(device, SerialDevice)
                            else "host wall clock")
        if isinstance(device, HostDevice):
            result["ram_bytes"] = result["arena_bytes"] = device.arena_bytes
    median = statistics.median(throughputs)
    result["throughput_ips"] = median
    result["latency_ms"] = 1000.0 / median


def _energy(result: dict, energy_model: EnergyModel, power_trace, power_inferences: int | None) -> None:
    if power_trace is not None:
        if not power_inferences:
            raise InputError("a power trace needs the number of inferences it covers (power_inferences)")
        t, p = read_power_trace(power_trace)
        result["energy_uj"] = energy_from_trace(t, p, float(t[0]), float(t[-1]), power_inferences)
        result["energy_source"] = f"power trace {Path(power_trace).name}"
    elif result["instructions_per_inference"] is not None:
        result["energy_uj"] = energy_model.energy_uj(result["instructions_per_inference"])
        result["energy_source"] = (f"estimate: {energy_model.board}, {energy_model.power_w * 1e3:.1f} mW, "
                                   f"{energy_model.cycles_per_instruction:g} cycle/instruction")
    else:
        result["energy_source"] = "none: no instruction count and no power trace for this target"


def bench_all(task: str | Task, model, *, dataset=None, target: str = "host", **options) -> dict:
    """Performance with energy, plus accuracy when there is a dataset, on one device built once:
    one merged result (mode "all")."""
    task = get_task(task) if isinstance(task, str) else task
    graph = model if isinstance(model, Graph) else microforge.load(model)
    device = open_device(graph, target)
    try:
        merged = bench(task, model, dataset=dataset, target=target, mode="energy", device=device, **options)
        if dataset is not None:
            accuracy = bench(task, model, dataset=dataset, target=target, mode="accuracy", device=device, **options)
            for key in (task.metric, "bit_exact", "mismatches", "inferences"):
                merged[key] = accuracy.get(key)
    finally:
        device.close()
    merged["mode"] = "all"
    return merged


def run_suite(targets=("host", "qemu-m4"), datasets=None, models: dict | None = None,
              on_step: Callable[[str], None] | None = None, **options) -> list[dict]:
    """All four tasks on every target (`bench_all`), each with its MLPerf Tiny reference model unless
    `models` names another; accuracy where `datasets`/<task> holds a runner dataset."""
    for target in targets:
        check_target(target)
    results = []
    for task in TASKS.values():
        model = Path((models or {}).get(task.name, task.reference_model_path))
        dataset = Path(datasets) / task.name if datasets is not None else None
        if dataset is not None and not dataset.is_dir():
            dataset = None
        for target in targets:
            if on_step:
                on_step(f"{task.name} on {target}")
            results.append(bench_all(task, model, dataset=dataset, target=target, **options))
    return results
