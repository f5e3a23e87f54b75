"""The C learner: the back of a split model as generated C that trains itself, one SGD step per call.

`generate_learner(split, hyper, out_dir)` writes a folder shaped like a generated model (model.h, model.c
and the training kernels mf_train.{c,h}), so the host build and the Cortex-M firmware harness run it as
they run a model: `mf_init()` copies the back's initial weights from flash into RAM and zeroes the
momentum; each `mf_invoke()` reads one mini-batch from `mf_input(0)` (rows int8 latents of the LR tensor,
then rows uint8 labels), dequantizes it, and runs forward, loss, backward and the SGD update, writing the
mini-batch's mean loss (float32) to `mf_output(0)` and, when asked, every trained parameter (float32, in
the back's order) to `mf_output(1)`.

The batch runs in tiles of `tile_rows` samples (one by default): forward and backward of a tile, its
weight gradients added up, the update once the whole batch is done. The activations and their gradients
then take one tile's RAM, whatever the batch size: the tiling scheme that lets a layer whose gradients
of a whole batch would not fit train in a small SRAM. Tiled or not, the step is the same mathematics.

`run_learner(split, hyper, batches, target)` builds and runs it on "host" or "qemu-m4"/"qemu-m7" and returns
the losses, the final weights and (on an emulated core) the instructions of every step.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from microforge.errors import InputError, TargetError
from microforge.learn import layers as L
from microforge.learn.split import Split
from microforge.learn.strategies import Hyper, replay_count

KERNELS = ("mf_train.c", "mf_train.h")
ACT = {"NONE": "MF_ACT_NONE", "RELU": "MF_ACT_RELU", "RELU6": "MF_ACT_RELU6"}
FLOAT = 4
LEARNER_CFLAGS = ("-O3",)  # unrolled float loops: the learner is compute-bound


def _floats(values) -> str:
    """float32 values as exact C99 hex literals."""
    return ", ".join(float(np.float32(v)).hex() + "f" for v in np.asarray(values, np.float32).reshape(-1))


def _window(layer, in_shape, out_shape) -> dict:
    """The mf_train_window fields of a convolution or pooling layer."""
    output_size = L.output_size
    kernel = layer.params["weights"].shape[1:3] if layer.params else layer.filter
    _, top = output_size(in_shape[0], kernel[0], layer.stride[0], layer.padding)
    _, left = output_size(in_shape[1], kernel[1], layer.stride[1], layer.padding)
    return {"in_h": in_shape[0], "in_w": in_shape[1], "in_c": in_shape[2], "out_h": out_shape[0],
            "out_w": out_shape[1], "out_c": out_shape[2], "k_h": kernel[0], "k_w": kernel[1],
            "stride_h": layer.stride[0], "stride_w": layer.stride[1], "pad_top": top, "pad_left": left,
            "multiplier": getattr(layer, "multiplier", 1),
            "activation": ACT[getattr(layer, "activation", "NONE")]}


@dataclass
class LearnerLayout:
    """What the generated learner holds, in bytes (static RAM and flash), for a mini-batch of `rows`."""

    rows: int
    tile_rows: int
    input_bytes: int
    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    sizes: list[int] = field(default_factory=list)  # per-sample values of the latents and of each layer output


def layout(split: Split, hyper: Hyper, tile_rows: int = 1) -> LearnerLayout:
    rows = batch_rows(hyper)
    shape, sizes = split.lr_shape, [int(np.prod(split.lr_shape))]
    for layer in split.back.layers:
        shape = layer.output_shape(shape)
        sizes.append(int(np.prod(shape)))
    params = sum(a.size for _, _, a in split.back.params())
    activated = sum(s for layer, s in zip(split.back.layers, sizes[1:]) if isinstance(layer, L._Activated))
    # per tile: the dequantized latents, every layer output and pre-activation, two gradient buffers
    activations = (sizes[0] + sum(sizes[1:]) + activated + 2 * max(sizes)) * tile_rows * FLOAT
    return LearnerLayout(rows, tile_rows, rows * (sizes[0] + 1), params * FLOAT, params * FLOAT,
                         params * FLOAT if hyper.momentum > 0 else 0, activations, sizes)


def batch_rows(hyper: Hyper) -> int:
    """Samples per mini-batch on the device: `batch` new ones and their replays."""
    return hyper.batch + replay_count(hyper.batch, hyper.replay_ratio)


def _back_code(split: Split, hyper: Hyper, tile_rows: int) -> tuple[list[str], str, str, str]:
    """The C of the back shared by both learners: its static buffers and parameters, and the functions
    `back_forward(n)` (the n <= tile_rows dequantized rows in `latents` to the logits) and
    `learn_step(rows, row_latents, row_labels)` (one SGD step on `rows` int8 latent rows, found by pointer,
    run a tile at a time; returns the mini-batch's mean loss). Returns (declarations, functions, the
    logits buffer, the parameters' names for a weights copy)."""
    plan = layout(split, hyper, tile_rows)
    sizes, t = plan.sizes, tile_rows
    lines = []
    params = split.back.params()
    for k, (_, name, a) in enumerate(params):
        lines += [f"static const float initial{k}[{a.size}] = {{{_floats(a)}}};  /* {name} */",
                  f"static float param{k}[{a.size}];", f"static float grad{k}[{a.size}];"]
        if hyper.momentum > 0:
            lines.append(f"static float velocity{k}[{a.size}];")
    lines += [f"static float latents[{t * sizes[0]}];", f"static uint8_t tile_labels[{t}];",
              f"static float grad_a[{t * max(sizes)}];", f"static float grad_b[{t * max(sizes)}];"]
    forward, backward, structs = [], [], []
    x, shape, k = "latents", split.lr_shape, 0
    outputs = []  # (layer, input expression, output expression, pre-activation, param indices, window struct)
    for i, layer in enumerate(split.back.layers):
        out_shape = layer.output_shape(shape)
        size = int(np.prod(out_shape))
        if isinstance(layer, L.Reshape):
            outputs.append((layer, x, x, None, (), None))
            shape = out_shape
            continue
        y = f"out{i}"
        lines.append(f"static float {y}[{t * size}];")
        z = None
        if isinstance(layer, L._Activated):
            z = f"pre{i}"
            lines.append(f"static float {z}[{t * size}];")
        window = None
        if isinstance(layer, (L.Conv2D, L.DepthwiseConv2D, L.AveragePool2D)):
            window = f"window{i}"
            fields = ", ".join(f".{key} = {value}" for key, value in _window(layer, shape, out_shape).items())
            structs.append(f"static const mf_train_window {window} = {{{fields}}};")
        indices = (k, k + 1) if layer.params else ()
        k += len(layer.params)
        outputs.append((layer, x, y, z, indices, window))
        x, shape = y, out_shape
    lines += structs
    for layer, xi, y, z, idx, window in outputs:
        if not isinstance(layer, L.Reshape):
            forward.append(_call(layer, "forward", window, xi, *_names("param", idx), z, y))
    # backward: dy in `current`, the input gradient into the other buffer; the first layer's is skipped
    current, other = "grad_a", "grad_b"
    first_trained = next(i for i, entry in enumerate(outputs) if not isinstance(entry[0], L.Reshape))
    for i in range(len(outputs) - 1, -1, -1):
        layer, xi, y, z, idx, window = outputs[i]
        if isinstance(layer, L.Reshape) or (not layer.params and i == first_trained):
            continue  # a reshape moves nothing; a first pooling layer has no gradient to pass down
        dx = other if i > first_trained else "0"
        backward.append(_call(layer, "backward", window, xi, _names("param", idx)[0], z, current,
                              *_names("grad", idx), dx))
        if i > first_trained:
            current, other = other, current
    if not any("grad_b" in line for line in backward):  # one trained layer: no input gradient to hold
        lines.remove(f"static float grad_b[{t * max(sizes)}];")
    logits = outputs[-1][2]
    m = float(np.float32(hyper.momentum)).hex() + "f"
    zero, scale = split.lr.zero_point, float(np.float32(split.lr.scale)).hex() + "f"
    functions = [
        "/* Built with -DMF_PROFILE, marks between the parts of a step (forward, backward, update) for the",
        " * instruction-counting plugin; otherwise nothing. */",
        "#if defined(MF_PROFILE)", "void mf_profile_mark(void);", "#define MF_PROFILE_MARK() mf_profile_mark()",
        "#else", "#define MF_PROFILE_MARK() ((void)0)", "#endif", "",
        "static void back_init(void) {",
        *[f"    memcpy(param{k}, initial{k}, sizeof(initial{k}));" for k in range(len(params))],
        *([f"    memset(velocity{k}, 0, sizeof(velocity{k}));" for k in range(len(params))]
          if hyper.momentum > 0 else []),
        "}", "",
        f"/* The n <= {t} dequantized rows in `latents` through the back: the logits in {logits}. */",
        "static void back_forward(int32_t n) {", *[f"    {line}" for line in forward], "}", "",
        "/* One SGD step at `learning_rate` on `rows` latent rows (int8, found by pointer) with their labels, a",
        " * tile of rows at a time (the weight gradients added up over the tiles); the mini-batch's mean loss. */",
        "static float learn_step(int32_t rows, const int8_t *const *row_latents, const uint8_t *row_labels,",
        "                        float learning_rate) {",
        "    float total = 0.0f;",
        *[f"    memset(grad{k}, 0, sizeof(grad{k}));" for k in range(len(params))],
        f"    for (int32_t tile = 0; tile < rows; tile += {t}) {{",
        f"        const int32_t n = rows - tile < {t} ? rows - tile : {t};",
        "        MF_PROFILE_MARK();",
        "        for (int32_t j = 0; j < n; ++j) {",
        f"            mf_train_dequantize({sizes[0]}, {zero}, {scale}, row_latents[tile + j], latents + j * {sizes[0]});",
        "            tile_labels[j] = row_labels[tile + j];",
        "        }",
        "        back_forward(n);",
        "        MF_PROFILE_MARK();",
        f"        total += mf_train_softmax_cross_entropy(n, {split.classes}, {logits}, tile_labels, rows, grad_a);",
        *[f"        {line}" for line in backward],
        "    }",
        "    MF_PROFILE_MARK();",
        *[f"    mf_train_sgd({a.size}, learning_rate, {m}, param{k}, grad{k}, "
          f"{f'velocity{k}' if hyper.momentum > 0 else '0'});"
          for k, (_, _, a) in enumerate(params)],
        "    MF_PROFILE_MARK();",
        "    return total / (float)rows;",
        "}", "",
    ]
    return lines, "\n".join(functions), logits, [f"param{k}" for k in range(len(params))]


# The training kernel of each layer type, and the arguments it takes beside the window (or, for FULLY_CONNECTED,
# its sizes and activation) and the rows: mf_train.h's signatures.
KERNEL_OF = {L.Conv2D: "mf_train_conv", L.DepthwiseConv2D: "mf_train_depthwise", L.AveragePool2D: "mf_train_avgpool",
             L.Dense: "mf_train_dense"}
ARGUMENTS = {  # names as _call receives them: x, w, b, z, y forward; x, w, z, dy, dw, db, dx backward
    ("forward", True): ("x", "w", "b", "z", "y"), ("forward", False): ("x", "y"),
    ("backward", True): ("x", "w", "z", "dy", "dw", "db", "dx"), ("backward", False): ("dy", "dx")}


def _names(prefix: str, indices: tuple) -> tuple:
    """The C names of a layer's weights and bias (param0, param1, ... or grad0, ...), None without them."""
    return (f"{prefix}{indices[0]}", f"{prefix}{indices[1]}") if indices else (None, None)


def _call(layer, direction: str, window: str | None, *values) -> str:
    """One kernel call of `layer`: its forward (values x, w, b, z, y) or backward (x, w, z, dy, dw, db, dx)."""
    given = dict(zip(ARGUMENTS[(direction, True)], values))
    names = ARGUMENTS[(direction, bool(layer.params))]
    if isinstance(layer, L.Dense):
        outputs, inputs = layer.params["weights"].shape
        head = ["n", str(inputs), str(outputs), ACT[layer.activation]]
    else:
        head = [f"&{window}", "n"]
    return f"{KERNEL_OF[type(layer)]}_{direction}({', '.join(head + [str(given[k]) for k in names])});"


def _copy_kernels(out: Path) -> None:
    for name in KERNELS:
        shutil.copyfile(Path(str(resources.files("microforge.codegen") / "kernels" / name)), out / name)


def _check_tiles(tile_rows, rows: int) -> None:
    if isinstance(tile_rows, bool) or not isinstance(tile_rows, int) or not 1 <= tile_rows <= rows:
        raise InputError(f"learn: tile_rows {tile_rows!r} must be between 1 and the mini-batch's {rows} rows")


def generate_learner(split: Split, hyper: Hyper, out_dir, tile_rows: int = 1, weights_output: bool = True) -> Path:
    """Write the bare learner of `split`'s back into `out_dir`: one SGD step per mf_invoke on the
    mini-batch in mf_input(0) (see the module docstring)."""
    rows = batch_rows(hyper)
    _check_tiles(tile_rows, rows)
    if rows % tile_rows:
        raise InputError(f"learn: tile_rows {tile_rows!r} must divide the mini-batch of {rows} rows")
    if split.classes > 256:
        raise InputError(f"learn: {split.classes} classes do not fit the learner's one-byte labels")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _copy_kernels(out)
    plan = layout(split, hyper, tile_rows)
    latent = plan.sizes[0]
    declarations, functions, _, params = _back_code(split, hyper, tile_rows)
    sizes = [int(np.prod(a.shape)) for _, _, a in split.back.params()]
    lines = ["/* Generated by microforge: the on-device learner of a split model (microforge.learn.device). */",
             '#include <string.h>', '#include "mf_train.h"', '#include "model.h"', "", *declarations,
             f"static int8_t batch[{rows * latent + rows}];", "static float loss;",
             f"static const int8_t *batch_rows[{rows}];"]
    if weights_output:
        lines.append(f"static float weights[{sum(sizes)}];")
    body = [
        functions,
        "void mf_init(void) { back_init(); }", "",
        "void *mf_input(int index) { return index == 0 ? (void *)batch : 0; }",
        "void *mf_output(int index) {",
        "    if (index == 0) return &loss;",
        *(["    if (index == 1) return weights;"] if weights_output else []),
        "    return 0;", "}", "",
        "void mf_invoke(void) {",
        f"    for (int32_t i = 0; i < {rows}; ++i) batch_rows[i] = batch + i * {latent};",
        f"    loss = learn_step({rows}, batch_rows, (const uint8_t *)batch + {rows * latent}, "
        f"{float(np.float32(hyper.learning_rate)).hex()}f);",
        *_weights_copy(params, sizes, weights_output),
        "}",
    ]
    (out / "model.c").write_text("\n".join(lines + [""] + body) + "\n")
    outputs_bytes = [FLOAT] + ([plan.weights_bytes] if weights_output else [])
    static_ram = (plan.input_bytes + plan.weights_bytes + plan.gradients_bytes + plan.optimizer_bytes
                  + plan.activations_bytes + (plan.weights_bytes if weights_output else 0) + FLOAT)
    header = ["/* Generated by microforge: the on-device learner (see model.c). */", "#ifndef MF_MODEL_H",
              "#define MF_MODEL_H", "", "#include <stdint.h>", "",
              f"#define MF_NUM_INPUTS 1", f"#define MF_INPUT0_BYTES {plan.input_bytes}",
              f"#define MF_NUM_OUTPUTS {len(outputs_bytes)}",
              *[f"#define MF_OUTPUT{i}_BYTES {n}" for i, n in enumerate(outputs_bytes)],
              f"#define MF_ARENA_BYTES {static_ram}", f"#define MF_CONSTANT_BYTES {plan.weights_bytes}",
              f"#define MF_LEARN_ROWS {rows}", f"#define MF_LEARN_TILE_ROWS {tile_rows}",
              f"#define MF_LEARN_LATENT_BYTES {latent}", "",
              "/* Copy the initial weights into RAM and zero the momentum. */", "void mf_init(void);",
              "/* One SGD step on the mini-batch in mf_input(0); its mean loss in mf_output(0). */",
              "void mf_invoke(void);", "void *mf_input(int index);", "void *mf_output(int index);", "", "#endif", ""]
    (out / "model.h").write_text("\n".join(header))
    return out


def _weights_copy(params: list[str], sizes: list[int], weights_output: bool) -> list[str]:
    """C lines copying every parameter into `weights`, in the back's order."""
    if not weights_output:
        return []
    lines, offset = [], 0
    for name, size in zip(params, sizes):
        lines.append(f"    memcpy(weights + {offset}, {name}, sizeof({name}));")
        offset += size
    return lines


def pack_batch(latents: np.ndarray, labels: np.ndarray) -> bytes:
    """One mini-batch as the learner's input: the int8 latents, then one byte per label."""
    return np.ascontiguousarray(latents, np.int8).tobytes() + np.asarray(labels, np.uint8).tobytes()


@dataclass
class LearnerRun:
    losses: list[float]
    weights: np.ndarray | None  # the parameters after the last step (float32, the back's order)
    instructions: list[int]  # per step, on an emulated core
    init_instructions: int | None = None
    flash_bytes: int | None = None
    ram_bytes: int | None = None
    stack_bytes: int | None = None
    step_parts: list[tuple[int, int, int]] = field(default_factory=list)  # (forward, backward, update) per step


def step_parts(marks: list[int]) -> tuple[int, int, int]:
    """A step's instructions between its profile marks (learn_step): the forward of each tile (gathering
    and dequantizing its rows included), its loss and backward, then the SGD update."""
    *tiles, update = marks
    return sum(tiles[0::2]), sum(tiles[1::2]), update


def run_learner(split: Split, hyper: Hyper, batches: list[tuple[np.ndarray, np.ndarray]], target: str = "host",
                tile_rows: int = 1, weights_output: bool = True, build_dir=None, sanitize: bool = False) -> LearnerRun:
    """Run the generated learner on `batches` ((latents (rows, *lr_shape) int8, labels (rows,)) each);
    on host with `sanitize`, under AddressSanitizer and UndefinedBehaviorSanitizer."""
    rows = batch_rows(hyper)
    for n, (x, y) in enumerate(batches):
        if np.asarray(x).shape != (rows,) + split.lr_shape or len(y) != rows:
            raise InputError(f"learn: batch {n} has latents {list(np.asarray(x).shape)} and {len(y)} labels; the "
                             f"learner takes {rows} rows of {list(split.lr_shape)}")
        if np.min(y) < 0 or np.max(y) >= split.classes:
            raise InputError(f"learn: batch {n} has labels outside 0..{split.classes - 1}")
    packed = [pack_batch(x, y) for x, y in batches]
    temp = tempfile.TemporaryDirectory(prefix="microforge-learner-") if build_dir is None else None
    work = Path(temp.name if temp else build_dir)
    try:
        folder = generate_learner(split, hyper, work / "learner", tile_rows, weights_output)
        if target == "host":
            return _run_host(folder, packed, weights_output, sanitize)
        if target in ("qemu-m4", "qemu-m7"):
            from microforge.codegen.targets.qemu import run_on_qemu

            result = run_on_qemu(folder, target, packed, stack_samples=1, cflags=LEARNER_CFLAGS, profile=True)
            losses = [float(np.frombuffer(o[0], np.float32)[0]) for o in result.output_tensors]
            weights = np.frombuffer(result.output_tensors[-1][1], np.float32).copy() if weights_output else None
            return LearnerRun(losses, weights, list(result.instructions), result.init_instructions,
                              result.model_flash_bytes, result.model_ram_bytes, result.stack_bytes,
                              [step_parts(marks) for marks in result.op_instructions])
        raise TargetError(f"learn: unknown target {target!r}; choose host, qemu-m4 or qemu-m7")
    finally:
        if temp is not None:
            temp.cleanup()


def _run_host(folder: Path, packed: list[bytes], weights_output: bool, sanitize: bool = False) -> LearnerRun:
    """Build the learner for this machine and run the batches: as a library called in-process, or with
    `sanitize` as an executable under AddressSanitizer and UndefinedBehaviorSanitizer (any write outside
    the learner's buffers, or undefined arithmetic, stops it with an error)."""
    from microforge.codegen.host import HOST_CFLAGS, LIBS, SANITIZE, WARNINGS, host_glue
    from microforge.codegen.targets.qemu import read_interface

    input_bytes, output_bytes = read_interface(folder)
    (folder / "mf_host.c").write_text(host_glue(input_bytes, output_bytes))
    sources = [str(folder / name) for name in ("model.c", "mf_train.c", "mf_host.c")]
    if sanitize:
        exe = folder / "learner"
        _compile(["gcc", *WARNINGS, *HOST_CFLAGS, *SANITIZE, "-DMF_HOST_MAIN", "-I", str(folder), *sources, *LIBS,
                  "-o", str(exe)])
        done = subprocess.run([str(exe), str(len(packed))], input=b"".join(packed), capture_output=True, timeout=600)
        if done.returncode != 0:
            raise TargetError(f"learn: the sanitized learner failed (exit {done.returncode}):\n"
                              f"{done.stderr.decode(errors='replace')[-4000:]}")
        losses = np.frombuffer(done.stdout, np.float32, len(packed)).astype(np.float64).tolist()
        weights = (np.frombuffer(done.stdout, np.float32, offset=4 * len(packed))[-output_bytes[1] // 4:].copy()
                   if weights_output else None)
        return LearnerRun(losses, weights, [])
    library = folder / "learner.so"
    _compile(["gcc", *WARNINGS, *HOST_CFLAGS, "-shared", "-fPIC", "-I", str(folder), *sources, *LIBS,
              "-o", str(library)])
    lib = ctypes.CDLL(str(library))
    lib.mf_input.restype = lib.mf_output.restype = ctypes.c_void_p
    lib.mf_init()
    losses = []
    for data in packed:
        ctypes.memmove(lib.mf_input(0), data, len(data))
        lib.mf_invoke()
        losses.append(float(ctypes.c_float.from_address(lib.mf_output(0)).value))
    weights = None
    if weights_output:
        weights = np.frombuffer(ctypes.string_at(lib.mf_output(1), output_bytes[1]), np.float32).copy()
    return LearnerRun(losses, weights, [])


def _compile(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise TargetError(f"learn: compiling the learner failed:\n{' '.join(cmd)}\n{done.stderr[-4000:]}")
