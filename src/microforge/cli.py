"""The `microforge` command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

import microforge
from microforge.errors import InputError, MicroforgeError
from microforge.graph.ir import Tensor
from microforge.reference.interpreter import from_batch, to_batch

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Take an int8 neural network onto a microcontroller and measure what it costs there.")
console = Console()
errors = Console(stderr=True)


def _fail(exc: MicroforgeError) -> None:
    errors.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _kib(n: int) -> str:
    return f"{n:,} B ({n / 1024:.1f} KiB)"


@app.command()
def analyze(model: Path = typer.Argument(..., help="a .tflite model"),
            as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table")) -> None:
    """Per-op shapes, MACs, parameter and activation bytes; totals and the RAM lower bound."""
    try:
        graph = microforge.load(model)
    except MicroforgeError as exc:
        _fail(exc)
    report = microforge.analyze(graph)
    if as_json:
        print(json.dumps(report, indent=1))
        return
    table = Table(title=f"{model.name}: {len(graph.ops)} ops", title_justify="left")
    for col in ("#", "op", "input shapes", "output shape", "MACs", "param B", "act B", "live B"):
        table.add_column(col, justify="right" if col not in ("op", "input shapes", "output shape") else "left")
    for r in report["ops"]:
        table.add_row(str(r["index"]), r["type"], " ".join(map(str, r["inputs"])), " ".join(map(str, r["outputs"])),
                      f"{r['macs']:,}", f"{r['param_bytes']:,}", f"{r['activation_bytes']:,}", f"{r['live_bytes']:,}")
    console.print(table)
    t = report["totals"]
    console.print(f"MACs per inference      {t['macs']:,}")
    console.print(f"flash for constants     {_kib(t['flash_bytes'])}")
    console.print(f"RAM lower bound (arena) {_kib(t['ram_lower_bound_bytes'])}  "
                  "[dim](most activation bytes live at once, layer by layer, in the model's op order)[/]")


@app.command("plan")
def plan_command(
        model: Path = typer.Argument(..., help="a .tflite model"),
        strategy: str = typer.Option("auto", help="tflm | best-fit | hill-climb | exact | auto"),
        schedule: str = typer.Option("auto", help="auto (search the op order) | model (keep it)"),
        seconds: float = typer.Option(10.0, help="time limit of the exact solver"),
        as_json: bool = typer.Option(False, "--json", help="print the plan as JSON"),
        png: Optional[Path] = typer.Option(None, "--png", help="draw our plan beside TFLM's"),
        svg: Optional[Path] = typer.Option(None, "--svg", help="the same picture as SVG"),
        write_tflm_plan: Optional[Path] = typer.Option(
            None, "--write-tflm-plan", help="write MODEL with our offsets as TFLM's offline memory plan")) -> None:
    """Plan the activation arena: the smallest valid placement, beside TFLite Micro's and the lower bound."""
    from microforge.plan import plan as make_plan
    from microforge.plan.tflm import place_tflm, tflm_buffers

    try:
        graph = microforge.load(model)
        result = make_plan(graph, strategy=strategy, schedule=schedule, seconds=seconds)
        finer = None
        if strategy == "auto":  # what the generated C needs, with its kernels' scratch and overlaps
            from microforge.codegen.emit import kernel_memory

            kernel_scratch, kernel_overlaps = kernel_memory(graph)
            finer = make_plan(graph, schedule=schedule, seconds=seconds, scratch=kernel_scratch,
                              overlaps=kernel_overlaps)
        if write_tflm_plan:
            from microforge.plan.tflm_export import with_offline_plan

            write_tflm_plan.write_bytes(with_offline_plan(graph, result.tensor_offsets()))
    except MicroforgeError as exc:
        _fail(exc)
    for path in (png, svg):
        if path:
            from microforge.plan.picture import draw_plans

            theirs = tflm_buffers(graph)
            draw_plans([("TFLM greedy", theirs, place_tflm(theirs)),
                        (f"microforge {result.strategy}", result.buffers, result.offsets)],
                       path, title=model.name, lower_bound=result.lower_bound_bytes)
    if as_json:
        report = result.to_json()
        if finer is not None:
            report["generated_c_arena_bytes"] = finer.arena_bytes
        print(json.dumps(report, indent=1))
        return
    saved = 1 - result.arena_bytes / result.tflm_bytes if result.tflm_bytes else 0.0
    console.print(f"[bold]{model.name}[/]: {len(graph.ops)} ops, {len(result.buffers)} buffers")
    console.print(f"  TFLM greedy arena      {_kib(result.tflm_bytes)}")
    console.print(f"  microforge arena       {_kib(result.arena_bytes)}  ({result.strategy}, "
                  f"{saved:.1%} less than TFLM)")
    console.print(f"  layer-wise lower bound {_kib(result.lower_bound_bytes)}  (gap {result.gap:.1%}"
                  f"{', proven optimal' if result.proven_optimal else ''})")
    if finer is not None:
        console.print(f"  generated C arena      {_kib(finer.arena_bytes)}  (C kernels' scratch, overlaps)")
    console.print(f"  planned and validated in {result.seconds:.2f} s")
    for path in (png, svg, write_tflm_plan):
        if path:
            console.print(f"  wrote {path}")


OOD_OPTION_HELP = "a detector file (microforge ood fit): compile its integer score and flag into the model"


def load_model_with(model: Path, ood: Optional[Path]):
    """The model's graph, with the on-chip form of an OOD detector fitted on it appended when given."""
    graph = microforge.load(model)
    if ood is None:
        return graph
    from microforge.robust.ood import load_detector
    from microforge.robust.ood.onchip import chip_graph

    return chip_graph(load_detector(ood, graph))


def _generate_learner(model: Path, out: Path, target: str, config: Path, ood) -> None:
    from microforge.learn.onchip import generate_onchip_learner, learner_from_config
    from microforge.learn.api import check_ram_budget, memory

    try:
        if ood is not None:
            raise InputError("--ood and --learn: the learner image has no OOD detector yet; give one of them")
        try:
            settings = json.loads(config.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"--learn {config}: not a readable JSON file ({exc})") from exc
        learner, stream, max_new, tile_rows = learner_from_config(model, settings)
        generate_onchip_learner(learner, out, max_new, tile_rows, target=target)
        m = memory(learner.split, learner, stream, max_new)
        if "ram_budget" in settings:
            check_ram_budget(m, settings["ram_budget"], learner)
    except MicroforgeError as exc:
        _fail(exc)
    console.print(f"wrote the learner image to {out}/ (model.h: mf_learn, mf_learn_step, mf_learn_batch, mf_predict; "
                  f"front.h: the frozen front), LR layer op {learner.split.lr_op} {list(learner.split.lr_shape)}, "
                  f"{len(learner.buffer)} of {learner.buffer.capacity} replays in the initial buffer", highlight=False)
    for key in ("arena_bytes", "weights_bytes", "gradients_bytes", "optimizer_bytes", "buffer_bytes"):
        console.print(f"  {key[:-6].replace('_', ' '):<18}{_kib(m[key])}", highlight=False)
    console.print(f"  {'staging':<18}{_kib(m['staging_bytes'])} ({max_new} new samples)", highlight=False)
    console.print(f"  {'RAM in all':<18}{_kib(m['total_ram_bytes'])}", highlight=False)
    console.print(f"  {'flash (data)':<18}{_kib(m['flash_bytes'])}", highlight=False)


@app.command()
def generate(model: Path = typer.Argument(..., help="a .tflite model"),
             out: Path = typer.Option(..., "-o", "--out", help="folder to write the C into"),
             target: str = typer.Option("portable", help="portable | host | cortex-m4 | cortex-m7 | cortex-m0plus"),
             ood: Optional[Path] = typer.Option(None, "--ood", help=OOD_OPTION_HELP),
             learn: Optional[Path] = typer.Option(None, "--learn", help="a JSON learner config: write the on-device "
                                                  "learner image instead (keys: lr_layer, buffer, policy, max_new, "
                                                  "scenario or initial_data, epochs, learning_rate, batch, ...)")
             ) -> None:
    """Write model-specific C99: model.h/model.c, only the kernels the model uses, Makefile and CMake."""
    from microforge.codegen import generate as write_c

    if learn is not None:
        _generate_learner(model, out, target, learn, ood)
        return
    try:
        generated = write_c(load_model_with(model, ood), out, target=target)
    except MicroforgeError as exc:
        _fail(exc)
    console.print(f"wrote {out}/ ({', '.join(generated.sources)}, model.h, Makefile, CMakeLists.txt)")
    console.print(f"  arena (RAM)      {_kib(generated.arena_bytes)}")
    console.print(f"  constants (flash) {_kib(generated.constant_bytes)}")
    if ood is not None:
        console.print("  OOD score and flag: outputs MF_OOD_SCORE_OUTPUT and MF_OOD_FLAG_OUTPUT (model.h)")


@app.command()
def validate(model: Path = typer.Argument(..., help="a .tflite model"),
             target: str = typer.Option("host", help="host | qemu-m4 | qemu-m7"),
             inputs: int = typer.Option(8, "--inputs", help="how many random inputs (seeded)"),
             input_files: Optional[List[Path]] = typer.Option(None, "--input", help="sample files instead"),
             profile: bool = typer.Option(False, "--profile",
                                          help="qemu targets: instructions per op (a table; 'profile' in --json)"),
             ood: Optional[Path] = typer.Option(None, "--ood", help=OOD_OPTION_HELP),
             as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Build for TARGET, run the inputs, compare byte for byte with the reference interpreter."""
    from microforge.codegen.validate import validate_target

    try:
        graph = load_model_with(model, ood)
        batches = None
        if input_files:
            batches = [read_input_file(p, t) for p, t in zip(input_files, graph.inputs)]
        report = validate_target(graph, target, count=inputs, batches=batches, profile=profile)
    except MicroforgeError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps(report, indent=1))
        return
    if profile:
        _print_profile(report["profile"], report["instructions_per_inference"])
    verdict = "[green]bit-exact[/]" if report["bit_exact"] else f"[red]{report['mismatches']} mismatching samples[/]"
    console.print(f"{model.name} on {target}: {report['samples']} samples, {verdict}")
    for key in ("instructions_per_inference", "arena_bytes", "stack_bytes", "flash_bytes", "ram_bytes"):
        if report.get(key) is not None:
            console.print(f"  {key.replace('_', ' '):28} {report[key]:,}")
    if "max_abs_error" in report:
        console.print(f"  {'max abs error (float outputs)':28} {report['max_abs_error']:.3g}")
    if not report["bit_exact"]:
        raise typer.Exit(code=1)


def _print_profile(rows: list[dict], total: int) -> None:
    table = Table(title=f"instructions per op (of {total:,} per inference)")
    for column in ("#", "op", "output", "MACs", "instr", "MACs/instr", "share"):
        # the op type in full however narrow the terminal: the other columns give way
        width = max(len(r["type"]) for r in rows) if column == "op" and rows else None
        table.add_column(column, justify="left" if column in ("op", "output") else "right", min_width=width)
    for r in rows:
        table.add_row(str(r["index"]), r["type"], "x".join(map(str, r["output_shape"])), f"{r['macs']:,}",
                      f"{r['instructions']:,}", f"{r['macs_per_instruction']:.2f}" if r["macs"] else "",
                      f"{100 * r['share']:.1f}%")
    console.print(table)


def read_input_file(path: Path, tensor: Tensor) -> np.ndarray:
    """A .npy array or raw tensor bytes (a whole number of samples) -> the interpreter's batch form."""
    try:
        if path.suffix == ".npy":
            return to_batch(tensor, np.load(path, allow_pickle=False))
        raw = path.read_bytes()
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read input file {path}: {exc}") from None
    sample = tensor.nbytes
    if len(raw) == 0 or len(raw) % sample:
        raise InputError(f"input file {path} holds {len(raw)} bytes, not a whole number of samples of "
                         f"'{tensor.name}' ({list(tensor.shape)} {tensor.dtype} = {sample} bytes each)")
    return np.frombuffer(raw, dtype=tensor.dtype).reshape((-1,) + tensor.shape)


def write_output_file(path: Path, tensor: Tensor, batch: np.ndarray) -> None:
    if path.suffix == ".npy":
        np.save(path, from_batch(tensor, batch))
    else:
        path.write_bytes(np.ascontiguousarray(batch).tobytes())


@app.command()
def run(model: Path = typer.Argument(..., help="a .tflite model"),
        inputs: List[Path] = typer.Option(..., "--input", "-i",
                                          help=".npy or raw bytes, one file per model input, each a batch"),
        outputs: Optional[List[Path]] = typer.Option(None, "--output", "-o",
                                                     help="where to write each model output (.npy or raw)")) -> None:
    """Run the reference interpreter (bit-exact with TFLite Micro) on a batch of inputs."""
    try:
        graph = microforge.load(model)
        if len(inputs) != len(graph.inputs):
            raise InputError(f"{model.name} has {len(graph.inputs)} inputs "
                             f"({', '.join(t.name for t in graph.inputs)}); got {len(inputs)} --input files")
        if outputs and len(outputs) != len(graph.outputs):
            raise InputError(f"{model.name} has {len(graph.outputs)} outputs; got {len(outputs)} --output files")
        batches = [read_input_file(p, t) for p, t in zip(inputs, graph.inputs)]
        results = microforge.run(graph, *[from_batch(t, b) for t, b in zip(graph.inputs, batches)])
    except MicroforgeError as exc:
        _fail(exc)
    results = results if isinstance(results, list) else [results]
    batched = [to_batch(t, r) for t, r in zip(graph.outputs, results)]
    for path, tensor, batch in zip(outputs or [], graph.outputs, batched):
        write_output_file(path, tensor, batch)
        console.print(f"wrote {len(batch)} x {list(tensor.shape)} {tensor.dtype} to {path}")
    _print_predictions(graph.outputs[0], batched[0])


def _print_predictions(tensor: Tensor, batch: np.ndarray, limit: int = 10) -> None:
    """For a classifier-shaped output, the top-1 class and its (dequantized) score per sample."""
    flat = batch.reshape(len(batch), -1).astype(np.float64)
    if tensor.quant is not None and not tensor.quant.per_channel:
        flat = tensor.scale * (flat - tensor.zero_point)
    for n, row in enumerate(flat[:limit]):
        best = int(np.argmax(row))
        console.print(f"sample {n}: predicted class {best} (score {row[best]:.4f})")
    if len(flat) > limit:
        console.print(f"... {len(flat) - limit} more samples")


def _print_bench(results: list[dict], heading_has: tuple[str, ...]) -> None:
    """A table of the results; columns empty everywhere or already in the heading are left out. Up to
    four results are shown one per column (fits a narrow terminal), more one per row."""
    from microforge.bench.report import RESULT_COLUMNS, _result_rows

    rows = _result_rows(results)
    shown = [i for i, column in enumerate(RESULT_COLUMNS)
             if column not in heading_has and any(row[i] != "-" for row in rows)]
    if len(results) <= 4:
        table = Table("", *[row[RESULT_COLUMNS.index("target")] for row in rows])
        for i in shown:
            if RESULT_COLUMNS[i] != "target":
                table.add_row(RESULT_COLUMNS[i], *[row[i] for row in rows])
    else:
        table = Table(*[RESULT_COLUMNS[i] for i in shown])
        for row in rows:
            table.add_row(*[row[i] for i in shown])
    console.print(table)
    for source in sorted({r["energy_source"] for r in results if r.get("energy_uj") is not None}):
        console.print(f"energy: {source}", highlight=False)


@app.command()
def bench(task: Optional[str] = typer.Option(None, help="kws | vww | ic | ad"),
          model: Optional[Path] = typer.Option(None, help="a .tflite model (default: the task's MLPerf Tiny model)"),
          dataset: Optional[Path] = typer.Option(None, help="a runner dataset folder (.bin files + y_labels.csv)"),
          target: Optional[List[str]] = typer.Option(
              None, help="reference | host | qemu-m4 | qemu-m7 | serial:PORT; repeat for several "
                         "(default: host; with --suite: host and qemu-m4)"),
          mode: str = typer.Option("accuracy", help="accuracy | performance | energy | all (energy + accuracy)"),
          suite: bool = typer.Option(False, "--suite", help="all four tasks with their reference models"),
          datasets: Optional[Path] = typer.Option(None, help="with --suite: a folder with kws/ vww/ ic/ ad/ datasets"),
          report: Optional[Path] = typer.Option(None, help="write results.json, report.md and report.html here "
                                                           "(--suite: default bench-report/)"),
          min_window: float = typer.Option(1.0, "--min-window", help="seconds per timed window (host, boards)"),
          power_trace: Optional[Path] = typer.Option(None, help="CSV time_s,power_w from a power monitor"),
          power_inferences: Optional[int] = typer.Option(None, help="inferences the power trace covers"),
          ood: Optional[Path] = typer.Option(None, "--ood", help=OOD_OPTION_HELP + " (measured with it)"),
          as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Run an MLPerf Tiny task (or the whole suite) on targets and report accuracy, latency, energy, memory."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from microforge.bench.report import write_report
    from microforge.bench.runner import bench as run_bench
    from microforge.bench.runner import bench_all, check_target, run_suite
    from microforge.bench.tasks import get_task

    targets = list(target or (["host", "qemu-m4"] if suite else ["host"]))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        for t in targets:
            check_target(t)
        with Progress(*columns, console=errors, transient=True, disable=as_json) as bar:
            if suite:
                step = bar.add_task("suite", total=4 * len(targets))
                started = []

                def on_step(what: str) -> None:
                    if started:
                        bar.advance(step)
                    started.append(what)
                    bar.update(step, description=what)

                results = run_suite(targets, datasets=datasets, min_window_s=min_window, on_step=on_step)
            else:
                if task is None:
                    raise InputError("choose a task with --task kws|vww|ic|ad, or run --suite")
                model_path = model or get_task(task).reference_model_path
                chosen_model = load_model_with(model_path, ood) if ood is not None else model_path
                results = []
                for t in targets:
                    job = bar.add_task(f"{task} on {t}", total=None)
                    options = dict(dataset=dataset, target=t, min_window_s=min_window, power_trace=power_trace,
                                   power_inferences=power_inferences)
                    if mode == "all":
                        results.append(bench_all(task, chosen_model, **options))
                    else:
                        results.append(run_bench(task, chosen_model, mode=mode, **options,
                                                 progress=lambda done, total, job=job: bar.update(
                                                     job, completed=done, total=total)))
                    if ood is not None:  # the result names the model and the detector measured with it
                        results[-1]["model"] = f"{Path(str(model_path)).name} + OOD {ood.name}"
        if suite and report is None:
            report = Path("bench-report")
        written = write_report(results, report) if report is not None else {}
    except MicroforgeError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps(results[0] if len(results) == 1 and not suite else results, indent=1))
    else:
        if suite:
            console.print("[bold]MLPerf Tiny suite[/], reference models")
            _print_bench(results, ("model",))
        else:
            console.print(f"[bold]{results[0]['task']}[/] {results[0]['model']} ({results[0]['mode']})")
            _print_bench(results, ("task", "model"))
        for kind, path in written.items():
            console.print(f"wrote {kind} report: {path}")
    if any(r.get("bit_exact") is False for r in results):
        raise typer.Exit(code=1)


@app.command()
def dataset(task: str = typer.Option(..., help="kws | vww | ic | ad"),
            source: Path = typer.Option(..., help="class sub-folders of .wav/images, an FSDD recordings folder "
                                                  "(--fsdd), or normal_*/anomaly_* .wav clips (ad)"),
            output: Path = typer.Option(..., "--output", "-o", help="the runner dataset folder to write"),
            model: Optional[Path] = typer.Option(None, help="the model whose input quantization to use "
                                                            "(default: the task's MLPerf Tiny model)"),
            labels: Optional[str] = typer.Option(None, help="comma-separated class folder names in model order"),
            fsdd: bool = typer.Option(False, "--fsdd", help="kws: SOURCE is an FSDD recordings folder"),
            indices: str = typer.Option("0-4", help="with --fsdd: recording indices, e.g. 0-4 (test) or 5-49"),
            ) -> None:
    """Write a dataset in the EEMBC runner format (.bin per sample + y_labels.csv) through the task's
    pre-processing."""
    from microforge.bench.sources import write_task_dataset
    from microforge.bench.tasks import get_task

    try:
        first, _, last = indices.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise InputError(f"--indices must look like 0-4 or 7, got {indices!r}")
        chosen = range(int(first), int(last or first) + 1)
        graph = microforge.load(model or get_task(task).reference_model_path)
        count = write_task_dataset(task, source, output, graph, fsdd=fsdd, indices=chosen,
                                   labels=[s.strip() for s in labels.split(",")] if labels else None)
    except MicroforgeError as exc:
        _fail(exc)
    console.print(f"wrote {count} samples to {output}")


@app.command()
def firmware(model: Path = typer.Argument(..., help="a .tflite model"),
             board: str = typer.Option("nucleo-l4r5zi", help="nucleo-l4r5zi | qemu-m4 | qemu-m7"),
             output: Path = typer.Option(..., "--output", "-o", help="folder for the model's C and the firmware"),
             ) -> None:
    """Build the device-under-test firmware (EEMBC / MLPerf Tiny serial protocol) for a board; flash
    build/dut.elf and run `microforge bench --target serial:PORT`."""
    from microforge.bench.dut import DUT_BOARDS, build_dut_firmware
    from microforge.codegen.emit import generate

    try:
        if board not in DUT_BOARDS:
            raise InputError(f"unknown board {board!r}; choose one of {', '.join(DUT_BOARDS)}")
        graph = microforge.load(model)
        generated = generate(graph, output / "model", target="cortex-m4" if board != "qemu-m7" else "cortex-m7")
        elf = build_dut_firmware(generated.directory, board, output / "build", model_name=model.stem)
    except MicroforgeError as exc:
        _fail(exc)
    console.print(f"{board}: {elf} (arena {generated.arena_bytes:,} B)")


@app.command()
def quantize(model: Path = typer.Argument(..., help="a float32 .tflite or a Keras .keras model"),
             calibration: Path = typer.Option(..., "--calibration", help="float32 .npy batch or runner folder"),
             out: Path = typer.Option(..., "-o", "--out", help="where to write the quantized .tflite"),
             scheme: str = typer.Option("int8", help="int8 | int16x8 | mixed | dynamic"),
             weights: str = typer.Option("per-channel", help="per-channel | per-tensor"),
             method: str = typer.Option("minmax", help="activation ranges: minmax | percentile | mse"),
             io: str = typer.Option("int8", "--io", help="the model's input and output: int8 (quantized) | float"),
             target_accuracy: float = typer.Option(0.99, "--target-accuracy",
                                                   help="mixed: the share of the float model's accuracy to reach"),
             evaluation: Optional[Path] = typer.Option(None, "--evaluation",
                                                       help="mixed: data to measure accuracy on (else calibration)")) -> None:
    """Our post-training quantizer: calibrate on the reference interpreter, write a TFLM-ready model."""
    from microforge import robust

    try:
        result = robust.quantize(model, calibration, scheme=scheme, weights=weights, method=method, io=io,
                                 target_accuracy=target_accuracy, evaluation=evaluation)
        result.save(out)
    except MicroforgeError as exc:
        _fail(exc)
    g = result.graph
    console.print(f"wrote {out}: {scheme}, weights {weights}, ranges by {method}, "
                  f"{result.calibration_samples} calibration samples, {len(g.ops)} ops")
    if result.mixed is not None:
        m = result.mixed
        console.print(f"  int16x8 layers: {', '.join(map(str, m.widened)) or 'none'}; quality {100 * m.quality:.2f}% "
                      f"of float (target {100 * m.target:.2f}%); {m.instructions:,} instructions, arena "
                      f"{m.arena_bytes:,} B on qemu-m4")
    for kind, tensors in (("input", g.inputs), ("output", g.outputs)):
        for t in tensors:
            quant = f" scale {t.scale:.6g} zero point {t.zero_point}" if t.quant is not None else ""
            console.print(f"  {kind} '{t.name}' {list(t.shape)} {t.dtype}{quant}")


@app.command()
def assess(float_model: Path = typer.Argument(..., help="the float32 model (.tflite or .keras)"),
           quant_model: Path = typer.Argument(..., help="its quantized version (.tflite)"),
           data: Path = typer.Option(..., "--data", help="runner folder of float32 .bin inputs, or a .npy batch"),
           shift: Optional[List[str]] = typer.Option(None, "--shift", help="noise:20dB, gain:2, offset:0.1 (repeatable)"),
           target: str = typer.Option("reference", help="reference | host | qemu-m4 | qemu-m7"),
           as_json: bool = typer.Option(False, "--json", help="print JSON"),
           report: Optional[Path] = typer.Option(None, "--report", help="write Markdown + HTML with a plot here")) -> None:
    """Per-layer error of a quantized model against its float original, measured on the deployed code."""
    from microforge import robust
    from microforge.robust.report import layer_rows, model_lines, write_assessment_report

    try:
        result = robust.assess(float_model, quant_model, data, shifts=shift or [], target=target)
    except MicroforgeError as exc:
        _fail(exc)
    if report is not None:
        write_assessment_report(result, report, f"{quant_model.name} against {float_model.name}")
    if as_json:
        print(json.dumps(result.to_json(), indent=1))
        return
    sections = [("clean inputs", result.model, result.layers)]
    sections += [(f"shifted: {s['shift']}", s["model"], s["layers"]) for s in result.shifted]
    for heading, model_numbers, layers in sections:
        table = Table(title=f"{quant_model.name} on {target}, {result.samples} samples, {heading}", title_justify="left")
        for column in ("#", "op", "MAE", "RMSE/scale", "SQNR dB", "cosine", "saturated", "instructions", "flag"):
            table.add_column(column, justify="left" if column in ("op", "flag") else "right")
        for row, layer in zip(layer_rows(layers), layers):
            table.add_row(row[0], row[2], row[3], row[5], row[6], row[7], row[9], row[10], "!" if layer["flag"] else "")
        console.print(table)
        for line in model_lines(model_numbers):
            console.print(f"  {line}")
        for layer in layers:
            if layer["flag"]:
                short = layer["name"].rsplit(";", 1)[-1]  # TFLite joins the names of fused nodes with ';'
                console.print(f"  [yellow]![/] {layer['index'] if layer['index'] is not None else ''} {layer['op']} "
                              f"'{short}': {layer['flag']}",
                              highlight=False)
    if report is not None:
        console.print(f"report written to {report}/ (report.md, report.html, assessment.json)")


ood_app = typer.Typer(no_args_is_help=True, help="Out-of-distribution detectors: fit on in-distribution data, "
                                                 "measure on OOD data, in float or compiled onto the chip.")
app.add_typer(ood_app, name="ood")
DETECTOR_HELP = "msp | maxlogit | energy | mahalanobis | godin | ae | explicit | all"


def _detector_options(temperature: float, form: str) -> dict:
    return {"temperature": temperature, "form": form}


@ood_app.command("fit")
def ood_fit(model: Path = typer.Argument(..., help="the classifier (.tflite)"),
            data: Path = typer.Option(..., "--data", help="in-distribution runner folder (the model's input bytes)"),
            detector: str = typer.Option("energy", "--detector", help=DETECTOR_HELP.replace(" | all", "")),
            out: Path = typer.Option(..., "-o", "--out", help="the detector file to write (JSON)"),
            outliers: Optional[Path] = typer.Option(None, "--outliers", help="explicit: OOD training data (runner folder)"),
            temperature: float = typer.Option(1.0, "--temperature", help="energy: the temperature T"),
            form: str = typer.Option("diagonal", "--form", help="mahalanobis: full | diagonal | low-rank")) -> None:
    """Fit a detector on in-distribution data and save it (with its on-chip threshold) for generate --ood."""
    from microforge.robust.ood.evaluate import fit_detector, runner_set

    try:
        graph = microforge.load(model)
        found = fit_detector(graph, detector, runner_set(data, graph),
                             runner_set(outliers, graph) if outliers else None, **_detector_options(temperature, form))
        found.save(out)
    except MicroforgeError as exc:
        _fail(exc)
    chip = (f"; on the chip: integer threshold {found.chip_threshold}" if found.chip_threshold is not None
            else "; no on-chip form for this detector and model")
    console.print(f"wrote {out}: {found.name} fitted on {data}, threshold {found.threshold:.6g} (keeps 95% of the "
                  f"data){chip}")


@ood_app.command("evaluate")
def ood_evaluate(model: Path = typer.Argument(..., help="the classifier (.tflite)"),
                 data: Path = typer.Option(..., "--data", help="in-distribution runner folder (the model's input bytes)"),
                 ood: List[Path] = typer.Option(..., "--ood", help="an OOD runner folder; repeat for several"),
                 detector: str = typer.Option("energy", "--detector", help=DETECTOR_HELP),
                 target: str = typer.Option("reference", help="reference (float detectors) | qemu-m4 | qemu-m7 "
                                                              "(the integer detector compiled with the model)"),
                 fit: Optional[Path] = typer.Option(None, "--fit", help="fit on this ID folder (default: every "
                                                                        "other sample of --data; the rest is measured)"),
                 outliers: Optional[Path] = typer.Option(None, "--outliers", help="explicit: OOD training data"),
                 temperature: float = typer.Option(1.0, "--temperature", help="energy: the temperature T"),
                 form: str = typer.Option("diagonal", "--form", help="mahalanobis: full | diagonal | low-rank"),
                 as_json: bool = typer.Option(False, "--json", help="print JSON"),
                 report: Optional[Path] = typer.Option(None, "--report", help="write Markdown + HTML with plots here")) -> None:
    """AUROC, AUPR, FPR@TPR95 and TNR@TPR95 of each detector, per OOD set, with its cost on the target."""
    from microforge.robust.ood.evaluate import evaluate
    from microforge.robust.ood.report import COLUMNS, SET_COLUMNS, rows, set_rows, write_ood_report

    try:
        result = evaluate(model, data, ood, detector=detector, target=target, fit_dir=fit, outliers_dir=outliers,
                          **_detector_options(temperature, form))
        written = write_ood_report(result, report) if report is not None else {}
    except MicroforgeError as exc:
        _fail(exc)
    if as_json:
        for entry in result["detectors"]:
            entry.pop("scores")
        print(json.dumps(result, indent=1))
        return
    for columns, body, title in ((COLUMNS, rows(result), f"{result['model']} on {target}: all OOD sets"),
                                 (SET_COLUMNS, set_rows(result), "per OOD set")):
        table = Table(title=title, title_justify="left")
        for column in columns:  # the names in full however narrow the terminal: the numbers give way
            table.add_column(column, justify="left" if column in ("detector", "OOD set") else "right",
                             min_width=max(len(r[0]) for r in body) if column == "detector" else None)
        for row in body:
            table.add_row(*row)
        console.print(table)
    for entry in result["detectors"]:
        if entry.get("note"):
            console.print(f"  {entry['detector']}: {entry['note']}", highlight=False)
    if written:
        console.print(f"report written to {report}/ (report.md, report.html, evaluation.json)")
    if any(entry["bit_exact_on_target"] is False for entry in result["detectors"]):
        raise typer.Exit(code=1)


@app.command("learn")
def learn_command(model: Path = typer.Argument(..., help="an int8 classifier trained on the scenario's first "
                                                         "experience (e.g. models/learn/fsdd_digits0-4_int8.tflite)"),
                  scenario: str = typer.Option("fsdd-class-incremental", "--scenario",
                                               help="fsdd-class-incremental | digits-class-incremental | "
                                                    "fsdd-new-instances | digits-new-instances"),
                  fsdd: Optional[Path] = typer.Option(None, "--fsdd", help="FSDD recordings folder "
                                                                          "(default: ../shared/data/fsdd/recordings)"),
                  lr_layer: Optional[str] = typer.Option(None, "--lr-layer", help="the latent-replay layer: a tensor "
                                                         "name or an op index (default: the output of the third "
                                                         "convolution from the end)"),
                  buffer: int = typer.Option(1500, "--buffer", help="replay buffer size in samples"),
                  bits: int = typer.Option(8, "--bits", help="bits per stored latent: 8, 7, 6, 4 (or 32: float)"),
                  strategy: str = typer.Option("latent-replay", "--strategy",
                                               help="latent-replay | naive | joint | raw-replay"),
                  seed: int = typer.Option(0, "--seed"),
                  epochs: int = typer.Option(8, "--epochs", help="passes over each new experience"),
                  learning_rate: float = typer.Option(0.1, "--learning-rate", help="SGD's, decayed by cosine over "
                                                      "each experience's epochs (a back that is only the head "
                                                      "wants more: 3.0 with 16 epochs on FSDD's pooled features)"),
                  replay_ratio: float = typer.Option(10.0, "--replay-ratio", help="replays per new sample in a "
                                                     "mini-batch"),
                  target: str = typer.Option("reference", "--target", help="reference | host | qemu-m4 | qemu-m7 "
                                             "(also play the scenario on the generated C learner image there)"),
                  ram_budget: Optional[int] = typer.Option(None, "--ram-budget", help="refuse a learner needing more "
                                                            "RAM than this many bytes (e.g. 262144)"),
                  as_json: bool = typer.Option(False, "--json", help="print JSON"),
                  report: Optional[Path] = typer.Option(None, "--report", help="write Markdown + HTML with plots here")
                  ) -> None:
    """Learn new classes on the split model with latent replays: accuracy after each experience, memory."""
    from microforge.learn.api import learn
    from microforge.learn.report import write_learn_report

    try:
        result = learn(model, scenario, lr_layer, buffer, bits, strategy, seed, target, recordings=fsdd,
                       ram_budget=ram_budget, epochs=epochs, learning_rate=learning_rate, replay_ratio=replay_ratio)
        if report is not None:
            write_learn_report([result], report, f"{result['model']}: {strategy} on {scenario}")
    except MicroforgeError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps(result, indent=1))
        return
    lr = result["lr_layer"]
    console.print(f"{result['model']}: {strategy} on {scenario}, LR layer op {lr['op']} {lr['shape']}, "
                  f"{result['buffer_samples']} replays at {bits} bits", highlight=False)
    table = Table(title="accuracy after each experience (rows) on each experience's test set (columns)",
                  title_justify="left")
    table.add_column("after")
    for name in result["experiences"]:
        table.add_column(name.rsplit("/", 1)[-1], justify="right")
    table.add_column("average", justify="right")
    for i, (row, average) in enumerate(zip(result["accuracy_matrix"], result["average_accuracy"])):
        table.add_row(result["experiences"][i], *[f"{100 * v:.1f}" if j <= i else "" for j, v in enumerate(row)],
                      f"{100 * average:.1f}")
    console.print(table)
    m = result["memory"]
    console.print(f"final average accuracy {100 * result['final_average_accuracy']:.1f}%, forgetting "
                  f"{100 * result['forgetting']:.1f} points; RAM {_kib(m['total_ram_bytes'])} (arena "
                  f"{_kib(m['arena_bytes'])}, weights {_kib(m['weights_bytes'])}, gradients {_kib(m['gradients_bytes'])}, "
                  f"optimizer {_kib(m['optimizer_bytes'])}, buffer {_kib(m['buffer_bytes'])}, staging {_kib(m['staging_bytes'])}), flash {_kib(m['flash_bytes'])}",
                  highlight=False)
    if result["target"]:
        t = result["target"]
        agree = t["accuracy_equal_reference"] and t["losses_equal_reference"]
        console.print(f"{target}: the learner image reached {100 * t['final_average_accuracy']:.1f}%; accuracies "
                      f"and losses equal the reference's: {'yes' if agree else 'NO'} (largest loss difference "
                      f"{t['max_loss_absolute_difference']:.1e}, {t['max_loss_relative_difference']:.1e} relative)",
                      highlight=False)
        if t["instructions_per_update"] is not None:
            console.print(f"  {t['instructions_per_update']:,} instructions per update of {t['rows_per_update']} samples "
                          f"(forward {t['instructions_per_forward']:,}, backward {t['instructions_per_backward']:,}, "
                          f"SGD {t['instructions_per_optimizer_step']:,}); {t['instructions_per_staged_sample']:,} per "
                          f"staged sample, {t['instructions_per_prediction']:,} per prediction; a new class in "
                          f"{t['learn_new_class_seconds']:.2f} s at {t['clock_hz'] / 1e6:.0f} MHz (one instruction a "
                          f"cycle); image RAM {_kib(t['ram_bytes'])}, flash {_kib(t['flash_bytes'])}", highlight=False)
        if not agree:
            raise typer.Exit(code=1)


dynamic_app = typer.Typer(no_args_is_help=True, help="Weight-shared families of sub-networks: operating points "
                                                     "measured on the emulated cores, and a runtime manager on budget traces.")
app.add_typer(dynamic_app, name="dynamic")
POINTS_FILE = "points.json"  # a family's measured operating points, beside its family.json


@dynamic_app.command("points")
def dynamic_points(family_dir: Path = typer.Argument(..., help="a family folder (family.json + one .tflite per member)"),
                   target: List[str] = typer.Option(["qemu-m4"], "--target", help="qemu-m4 | qemu-m7; repeat for both"),
                   dataset: Path = typer.Option(..., "--dataset", help="runner dataset folder (the input bytes)"),
                   as_json: bool = typer.Option(False, "--json", help="print JSON"),
                   save: Optional[Path] = typer.Option(None, "--save", help="also write the JSON here (simulate reads "
                                                                         f"FAMILY_DIR/{POINTS_FILE} by default)"),
                   plot: Optional[Path] = typer.Option(None, "--plot", help="write the Pareto plots (PNG) here")) -> None:
    """Measure every member, a width or a width x depth (accuracy on the dataset, exact instructions in the one
    family image on each core), and list every member x core x clock operating point with latency, energy and
    power, Pareto front marked."""
    from microforge.dynamic.family import load_family
    from microforge.dynamic.measure import points_document
    from microforge.dynamic.points import member_name, plot_points

    try:
        family = load_family(family_dir)
        progress = None if as_json else (lambda message: console.print(f"  {message}", style="dim", highlight=False))
        document, points = points_document(family, target, dataset, progress=progress)
        if save is not None:
            save.write_text(json.dumps(document, indent=1) + "\n")
        if plot is not None:
            plot_points(points, plot)
    except MicroforgeError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps(document, indent=1))
        return
    table = Table(title=f"{family.name}: {len(points)} operating points (★ Pareto front per core)", title_justify="left")
    member_column = "width" if all(p.depth is None for p in points) else "width/depth"
    for column in ("core", member_column, "MHz", "accuracy %", "instructions", "latency ms", "energy µJ", "power mW", "", "exact"):
        table.add_column(column, justify="left" if column in ("core", "") else "right")
    for p in points:
        table.add_row(p.core, member_name(*p.member), str(p.mhz), f"{100 * p.accuracy:.1f}", f"{p.instructions:,}",
                      f"{p.latency_ms:.2f}", f"{p.energy_uj:.1f}", f"{p.power_mw:.1f}", "★" if p.pareto else "",
                      "yes" if p.bit_exact else "NO")
    console.print(table)
    for core, cost in document["family"]["per_core"].items():
        console.print(f"{core}: the family image's flash {_kib(cost['flash_bytes'])} (widest member alone "
                      f"{_kib(cost['largest_alone_flash_bytes'])}, the members as separate models "
                      f"{_kib(cost['separate_flash_bytes'])}); one arena {_kib(cost['arena_bytes'])}; a switch "
                      f"{cost['switch_instructions']} instructions", highlight=False)
    if not all(p.bit_exact for p in points):
        raise typer.Exit(code=1)


@dynamic_app.command("simulate")
def dynamic_simulate(family_dir: Path = typer.Argument(..., help="a family folder with its measured points.json"),
                     trace: Path = typer.Option(..., "--trace", help="CSV: t_ms,latency_budget_ms,energy_budget_uj,"
                                                                     "power_cap_mw,background_load (empty = no budget)"),
                     target: str = typer.Option("qemu-m4", "--target", help="the core whose points the manager uses"),
                     points_file: Optional[Path] = typer.Option(None, "--points", help=f"operating points (default "
                                                                                      f"FAMILY_DIR/{POINTS_FILE})"),
                     as_json: bool = typer.Option(False, "--json", help="print JSON"),
                     plot: Optional[Path] = typer.Option(None, "--plot", help="write budget, chosen point and accuracy "
                                                                              "over time (PNG) here")) -> None:
    """Replay a budget trace: the runtime manager picks a point per request; deadlines met, energy budget
    kept and accuracy beside static models and an oracle that knows the future."""
    from microforge.dynamic.measure import read_points_document
    from microforge.dynamic.points import TARGET_CORES
    from microforge.dynamic.trace import plot_trace, read_trace, simulate

    try:
        if target not in TARGET_CORES:
            raise InputError(f"target {target!r}: choose from {', '.join(TARGET_CORES)}")
        core = TARGET_CORES[target]
        document, points = read_points_document(points_file or family_dir / POINTS_FILE)
        switch = document.get("family", {}).get("per_core", {}).get(core, {}).get("switch_instructions", 0)
        result = simulate(points, read_trace(trace), core, switch_instructions=int(switch), keep_steps=plot is not None)
        if plot is not None:
            plot_trace(result, plot)
    except MicroforgeError as exc:
        _fail(exc)
    result = {k: v for k, v in result.items() if k != "steps"}
    if as_json:
        print(json.dumps(result, indent=1))
        return
    table = Table(title=f"{trace.name} on {core}: {result['requests']} requests, {result['infeasible']} infeasible",
                  title_justify="left")
    for column in ("policy", "deadlines met %", "energy budget kept %", "mean accuracy %", "switches"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    rows = [("manager", result)] + [(name, result[name]) for name in ("oracle", "static_best", "static_largest",
                                                                       "static_smallest") if name in result]
    for name, r in rows:
        table.add_row(name.replace("_", " "), f"{100 * r['deadlines_met']:.1f}", f"{100 * r['energy_budget_kept']:.1f}",
                      f"{100 * r['mean_accuracy']:.1f}", str(r.get("switches", "")))
    console.print(table)
