"""The C code generator: a planned graph becomes a self-contained C99 folder.

    model.h    init/invoke, input/output pointers, arena size, shapes and quantization as macros
    model.c    the arena, every weight and parameter as `static const` data, mf_invoke as straight-line calls
    mf_*.c/.h  only the kernels this model uses (from microforge/codegen/kernels)
    Makefile, CMakeLists.txt, README.md

Generation runs in two passes: the first lowers every op to learn the scratch each kernel needs, the
planner then places activations and scratch together, the second lowers again with the final offsets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from microforge.errors import UnsupportedError
from microforge.graph.ir import Graph, Op, Tensor
from microforge.plan import Plan, plan as make_plan

TARGETS = ("portable", "host", "cortex-m4", "cortex-m7", "cortex-m0plus")
CTYPES = {
    np.dtype(np.int8): "int8_t", np.dtype(np.uint8): "uint8_t", np.dtype(np.int16): "int16_t",
    np.dtype(np.int32): "int32_t", np.dtype(np.int64): "int64_t", np.dtype(np.float32): "float",
    np.dtype(np.bool_): "uint8_t",
}
KERNEL_DIR = resources.files("microforge.codegen") / "kernels"


def c_identifier(hint: str) -> str:
    name = re.sub(r"[^0-9A-Za-z_]", "_", hint)[-40:].strip("_") or "t"
    return name if not name[0].isdigit() else "t_" + name


def c_value(value) -> str:
    """A C initializer for a Python value: ints, floats (exact hex literals), strings as expressions,
    sequences as brace lists."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(np.float32(value))
        if np.isinf(v):
            return "(1.0f / 0.0f)" if v > 0 else "(-1.0f / 0.0f)"
        return v.hex() + "f"
    if isinstance(value, (list, tuple, np.ndarray)):
        return "{" + ", ".join(c_value(v) for v in np.asarray(value).ravel().tolist()) + "}"
    raise TypeError(f"cannot write {value!r} as C")


def c_array_body(data: np.ndarray) -> str:
    flat = np.asarray(data).ravel()
    if flat.dtype.kind == "f":
        items = [c_value(v) for v in flat.tolist()]
    elif flat.dtype == np.int32 or flat.dtype == np.int64:
        # INT32_MIN cannot be written as a plain literal in C
        items = [str(v) if v != -(2**31) else "(-2147483647 - 1)" for v in flat.tolist()]
    else:
        items = [str(v) for v in flat.astype(np.int64).tolist()]
    lines = [", ".join(items[i:i + 24]) for i in range(0, len(items), 24)]
    return "{\n    " + ",\n    ".join(lines) + "\n}" if items else "{0}"


class ConstantPool:
    """The constants of one C file: their declarations, names (unique in the file) and bytes. Models
    generated into one file share a pool, so a constant tensor two of them read is written once."""

    def __init__(self) -> None:
        self.declarations: list[str] = []
        self.constant_bytes = 0
        self.names: set[str] = set()
        # id of a constant Tensor (or ("layout", id, name) for a re-laid-out copy of it) -> its array
        self.tensor_constants: dict[object, str] = {}

    def unique(self, hint: str) -> str:
        base = "mf_" + c_identifier(hint)
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name


class _Context:
    """The EmitContext a lowering sees (see lowering.py). `shared`: tensor index -> the constant whose
    leading slice that tensor is (the widest member's weights, for a member of a weight-shared family)."""

    def __init__(self, graph: Graph, target: str, tensor_offsets: dict[int, int], scratch_offsets: dict[int, int],
                 pool: ConstantPool | None = None, shared: dict[int, Tensor] | None = None):
        self.graph = graph
        self.target = target
        self.tensor_offsets = tensor_offsets
        self.scratch_offsets = scratch_offsets
        self.pool = pool if pool is not None else ConstantPool()
        self.shared = shared or {}
        self.exponent_slots: dict[int, int] = {}  # tensor index -> its slot in mf_exponent
        self.op: Op | None = None

    @property
    def declarations(self) -> list[str]:
        return self.pool.declarations

    @property
    def constant_bytes(self) -> int:
        return self.pool.constant_bytes

    def _unique(self, hint: str) -> str:
        return self.pool.unique(hint)

    def tensor(self, t: Tensor) -> str:
        ctype = CTYPES[t.dtype]
        if t.is_constant:
            if id(t) not in self.pool.tensor_constants:
                self.pool.tensor_constants[id(t)] = self.constant(t.name, t.data, ctype)
            return self.pool.tensor_constants[id(t)]
        return f"(({ctype} *)(mf_arena + {self.tensor_offsets[t.index]}))"

    def shared_weights(self, t: Tensor) -> Tensor | None:
        return self.shared.get(t.index)

    def constant(self, name_hint: str, data, ctype: str | None = None) -> str:
        data = np.asarray(data)
        ctype = ctype or CTYPES[data.dtype]
        name = self._unique(name_hint)
        self.pool.declarations.append(f"static const {ctype} {name}[{max(data.size, 1)}] MF_ALIGNED(16) = "
                                      f"{c_array_body(data)};")
        self.pool.constant_bytes += data.size * data.dtype.itemsize
        return name

    def constant_once(self, key: Tensor, name_hint: str, make) -> str:
        """The array of `make()` (a re-laid-out copy of the constant `key`), written once per pool."""
        slot = ("layout", id(key), name_hint)
        if slot not in self.pool.tensor_constants:
            self.pool.tensor_constants[slot] = self.constant(name_hint, make())
        return self.pool.tensor_constants[slot]

    def struct(self, ctype: str, name_hint: str, fields: dict) -> str:
        name = self._unique(name_hint)
        body = ",\n    ".join(f".{k} = {c_value(v)}" for k, v in fields.items())
        self.declarations.append(f"static const {ctype} {name} = {{\n    {body}\n}};")
        return "&" + name

    def scratch(self) -> str:
        return f"(mf_arena + {self.scratch_offsets[self.op.index]})"

    def exponent(self, t: Tensor) -> str:
        slot = self.exponent_slots.setdefault(t.index, len(self.exponent_slots))
        return f"mf_exponent[{slot}]"

    def runs_backward(self, source: Tensor, out: Tensor) -> bool:
        start = self.tensor_offsets[out.index]
        source_start = self.tensor_offsets[source.index]
        return source_start < start < source_start + source.nbytes


class _ScratchProbe(_Context):
    """First pass: every pointer is a placeholder; only the scratch sizes matter."""

    def tensor(self, t: Tensor) -> str:
        return f"(({CTYPES[t.dtype]} *)0)"

    def scratch(self) -> str:
        return "((uint8_t *)0)"

    def runs_backward(self, source: Tensor, out: Tensor) -> bool:
        return False


@dataclass
class GeneratedModel:
    """What `generate` wrote, and the numbers its README states."""

    directory: Path
    plan: Plan
    arena_bytes: int
    constant_bytes: int
    sources: list[str]
    target: str


def _lowering(op: Op):
    from microforge.codegen import ops  # noqa: F401  (registers every lowering)
    from microforge.codegen.lowering import lowering_for

    return lowering_for(op)


def _variant(op: Op) -> str:
    from microforge.codegen.lowering import is_int16x8

    if op.options.get("dynamic_fixed_point"):
        return " in dynamic fixed point"
    return " for int16 (int16x8)" if is_int16x8(op) else ""


def unsupported_for_codegen(graph: Graph) -> list[str]:
    problems = []
    for op in graph.ops:
        if _lowering(op) is None:
            problems.append(f"{op.where}: no C kernel{_variant(op)} yet")
    return problems


def kernel_memory(graph: Graph, target: str = "portable", shared: dict[int, Tensor] | None = None
                  ) -> tuple[dict[int, int], dict[int, dict[int, int]]]:
    """What the C kernels ask of the planner: op index -> scratch bytes, and op index -> {input position:
    safe distance} for outputs that may overlap dying inputs. Lowers every op once with placeholder
    pointers; raises UnsupportedError listing every op without C."""
    probe = _ScratchProbe(graph, target, {}, {}, shared=shared)
    scratch, overlaps, refused = {}, {}, unsupported_for_codegen(graph)
    for op in graph.ops:
        if _lowering(op) is None:
            continue
        probe.op = op
        try:
            call = _lowering(op)(op, probe)
        except UnsupportedError as exc:  # collect them all: the user fixes every op in one round
            refused.append(str(exc))
            continue
        if call.scratch_bytes:
            scratch[op.index] = call.scratch_bytes
        if call.overlaps:
            overlaps[op.index] = call.overlaps
    if refused:
        raise UnsupportedError("the model uses what microforge cannot generate C for yet:\n  " + "\n  ".join(refused))
    return scratch, overlaps


def generate(graph: Graph, out_dir: str | Path, target: str = "portable", strategy: str = "auto",
             overlap: bool = True, prefix: str = "mf") -> GeneratedModel:
    """Write the C folder for `graph` to `out_dir`. Raises UnsupportedError listing every op without C.

    `overlap`: let outputs overlap dying inputs where the kernels declare a safe distance (finer than
    layer granularity: the arena can go below the layer-wise lower bound).
    `prefix`: the model's public names. "mf" gives model.h / model.c with mf_init, mf_invoke, mf_input,
    mf_output and MF_* macros; another prefix p gives p.h / p.c with p_init, ... and P_* macros, so that
    two models (the frozen front of a learner and the learner itself, say) link into one image beside
    the kernels they share."""
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,30}", prefix):
        raise UnsupportedError(f"prefix {prefix!r} must be a lower-case C identifier")
    lowered = lower(graph, target, strategy, overlap)
    out = Path(out_dir)
    headers = write_kernels(out, lowered.sources)
    base = "model" if prefix == "mf" else prefix
    ctx, arena_plan = lowered.ctx, lowered.plan
    (out / f"{base}.h").write_text(header(graph, arena_plan.arena_bytes, ctx.constant_bytes, prefix))
    (out / f"{base}.c").write_text(_model_c(graph, arena_plan, ctx, lowered.body, headers, prefix))
    write_build_files(out, lowered.sources, f"{base}.c")
    generated = GeneratedModel(out, arena_plan, arena_plan.arena_bytes, ctx.constant_bytes,
                               [f"{base}.c"] + lowered.sources, target)
    (out / "README.md").write_text(_readme(graph, generated))
    return generated


@dataclass
class LoweredModel:
    """A planned graph lowered to C: the plan, the context holding its constants, the statements of its
    invoke function in schedule order and the kernel sources they need."""

    graph: Graph
    plan: Plan
    ctx: _Context
    body: list[str]
    sources: list[str]


def lower(graph: Graph, target: str = "portable", strategy: str = "auto", overlap: bool = True,
          pool: ConstantPool | None = None, shared: dict[int, Tensor] | None = None) -> LoweredModel:
    """Plan `graph` and lower every op (see `generate`). Models lowered with one `pool` write their
    constants into it, once each; `shared` (tensor index -> a constant of another graph in the pool) marks
    weights that are the leading slice of that constant, read in place (dynamic/image.py)."""
    if target not in TARGETS:
        raise UnsupportedError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    scratch, overlaps = kernel_memory(graph, target, shared)
    if not overlap:
        overlaps = {}
    arena_plan = make_plan(graph, strategy=strategy, scratch=scratch, overlaps=overlaps)
    ctx = _Context(graph, target, arena_plan.tensor_offsets(), arena_plan.scratch_offsets(), pool, shared)
    body, sources = [], []
    for step in arena_plan.schedule:
        op = graph.ops[step]
        ctx.op = op
        call = _lowering(op)(op, ctx)
        body.append(f"    /* op {op.index}: {op.type} -> {op.outputs[0].name[:60]} */\n    {call.statement}")
        sources += [s for s in call.sources if s not in sources]
    return LoweredModel(graph, arena_plan, ctx, body, sources)


def write_kernels(out: Path, sources: list[str]) -> list[str]:
    """Copy the kernel sources and their headers into `out`; returns the headers model.c includes."""
    out.mkdir(parents=True, exist_ok=True)
    headers = ["mf_common.h"] + [s[:-2] + ".h" for s in sources if (KERNEL_DIR / (s[:-2] + ".h")).is_file()]
    for name in headers + sources + ["mf_dsp.h"]:  # mf_dsp.h: the kernels' own (model.c does not include it)
        (out / name).write_bytes((KERNEL_DIR / name).read_bytes())
    return headers


def write_build_files(out: Path, sources: list[str], model_c: str) -> None:
    (out / "Makefile").write_text(_makefile(sources, model_c))
    (out / "CMakeLists.txt").write_text(_cmake(sources, model_c))


def _io_macros(kind: str, tensors: list[Tensor], macro: str = "MF") -> list[str]:
    lines = [f"#define {macro}_NUM_{kind}S {len(tensors)}"]
    for i, t in enumerate(tensors):
        p = f"{macro}_{kind}{i}"
        lines.append(f"#define {p}_BYTES {t.nbytes}")
        lines.append(f"#define {p}_RANK {len(t.shape)}")
        lines.append(f"#define {p}_SHAPE {{{', '.join(map(str, t.shape))}}}")
        lines.append(f"#define {p}_TYPE {CTYPES[t.dtype]}")
        if t.quant is not None and not t.quant.per_channel:
            lines.append(f"#define {p}_SCALE {c_value(t.scale)}")
            lines.append(f"#define {p}_ZERO_POINT {t.zero_point}")
    return lines


def _ood_macros(graph: Graph) -> list[str]:
    """Where an on-chip OOD detector (robust/ood/onchip.py) leaves its score and flag."""
    flag_op = next((op for op in graph.ops if op.type == "MF_OOD_FLAG"), None)
    if flag_op is None:
        return []
    outputs = [t.index for t in graph.outputs]
    score, flag = outputs.index(flag_op.inputs[0].index), outputs.index(flag_op.outputs[0].index)
    return [f"/* Out-of-distribution detector ({flag_op.options['detector']}), run by mf_invoke after the model:",
            f" * *(int32_t *)mf_output(MF_OOD_SCORE_OUTPUT) is its score (higher = more likely OOD; the real score",
            f" * is MF_OOD_SCORE_UNIT times it), *(int8_t *)mf_output(MF_OOD_FLAG_OUTPUT) is 1 when the score is",
            f" * above MF_OOD_THRESHOLD, the score that keeps 95% of the in-distribution data it was fitted on. */",
            f"#define MF_OOD_SCORE_OUTPUT {score}", f"#define MF_OOD_FLAG_OUTPUT {flag}",
            f"#define MF_OOD_THRESHOLD ({int(flag_op.options['threshold'])})",
            f"#define MF_OOD_SCORE_UNIT {c_value(float(flag_op.options['unit']))}", ""]


def header(graph: Graph, arena_bytes: int, constant_bytes: int, prefix: str = "mf", extra: tuple[str, ...] = ()) -> str:
    """model.h: the interface of `graph`'s C (`extra`: more declarations, before the #endif)."""
    p, m = prefix, prefix.upper()
    ood = _ood_macros(graph)
    if ood and prefix != "mf":
        raise UnsupportedError("a model with an on-chip OOD detector is generated with the prefix mf only")
    lines = [
        "/* Generated by microforge: the model's C interface. */",
        f"#ifndef {m}_MODEL_H", f"#define {m}_MODEL_H", "", "#include <stdint.h>", "",
        f"#define {m}_ARENA_BYTES {arena_bytes}",
        f"#define {m}_CONSTANT_BYTES {constant_bytes} /* weights and parameters, in flash */",
        *_io_macros("INPUT", graph.inputs, m), *_io_macros("OUTPUT", graph.outputs, m), "", *ood,
        "/* Prepare the model (nothing to do today: every parameter is a compile-time constant). */",
        f"void {p}_init(void);",
        f"/* One inference: read the inputs from {p}_input(i), write the outputs to {p}_output(i). */",
        f"void {p}_invoke(void);",
        f"/* Where input/output i lives inside the arena ({m}_INPUTi_BYTES / {m}_OUTPUTi_BYTES bytes). */",
        f"void *{p}_input(int index);", f"void *{p}_output(int index);", "", *extra, "#endif", "",
    ]
    return "\n".join(lines)


def _pointer_switch(name: str, tensors: list[Tensor], offsets: dict[int, int]) -> str:
    cases = "".join(f"    case {i}: return mf_arena + {offsets[t.index]};\n" for i, t in enumerate(tensors))
    return f"void *{name}(int index) {{\n    switch (index) {{\n{cases}    default: return 0;\n    }}\n}}\n"


# Built with -DMF_PROFILE (per-op profiles on the emulated targets), a marker function that the
# instruction-counting plugin watches is called before each op and after the last; otherwise nothing.
PROFILE_MARKS = ("#if defined(MF_PROFILE)\nvoid mf_profile_mark(void);\n#define MF_PROFILE_MARK() mf_profile_mark()\n"
                 "#else\n#define MF_PROFILE_MARK() ((void)0)\n#endif\n\n")


def marked_body(body: list[str]) -> str:
    """The statements of an invoke function with a profile mark before each op and after the last."""
    return "".join(f"    MF_PROFILE_MARK();\n{statement}\n" for statement in body) + "    MF_PROFILE_MARK();\n"


def _model_c(graph: Graph, arena_plan: Plan, ctx: _Context, body: list[str], headers: list[str],
             prefix: str = "mf") -> str:
    offsets = arena_plan.tensor_offsets()
    includes = "\n".join(f'#include "{h}"' for h in headers)
    marked = marked_body(body)
    return (
        f"/* Generated by microforge. {len(graph.ops)} ops; arena {arena_plan.arena_bytes} bytes "
        f"({arena_plan.strategy} plan); constants {ctx.constant_bytes} bytes. */\n"
        f'#include "{"model" if prefix == "mf" else prefix}.h"\n{includes}\n\n'
        f"static uint8_t mf_arena[{prefix.upper()}_ARENA_BYTES] MF_ALIGNED(16);\n\n"
        + (f"/* run-time exponents of the dynamic fixed-point tensors: real = q * 2^-e */\n"
           f"static int32_t mf_exponent[{len(ctx.exponent_slots)}];\n\n" if ctx.exponent_slots else "")
        + "\n\n".join(ctx.declarations) + "\n\n"
        f"void {prefix}_init(void) {{}}\n\n"
        + _pointer_switch(f"{prefix}_input", graph.inputs, offsets) + "\n"
        + _pointer_switch(f"{prefix}_output", graph.outputs, offsets) + "\n"
        + PROFILE_MARKS + f"void {prefix}_invoke(void) {{\n" + marked + "}\n"
    )


def _makefile(sources: list[str], model_c: str = "model.c") -> str:
    objs = " ".join(s[:-2] + ".o" for s in [model_c] + sources)
    return (f"# Builds the model as a static library: make CC=arm-none-eabi-gcc CFLAGS='-mcpu=cortex-m4 ...'\n"
            f"# Link libmodel.a with $(LDLIBS): libm, for the float kernels' expf.\n"
            f"CC ?= cc\nCFLAGS ?= -O2\nCFLAGS += -std=c99 -Wall -Wextra\nLDLIBS += -lm\n\nlibmodel.a: {objs}\n"
            f"\t$(AR) rcs $@ $^\n\n%.o: %.c\n\t$(CC) $(CFLAGS) -c $< -o $@\n\nclean:\n\trm -f *.o libmodel.a\n")


def _cmake(sources: list[str], model_c: str = "model.c") -> str:
    files = " ".join([model_c] + sources)
    return (f"cmake_minimum_required(VERSION 3.13)\nproject(microforge_model C)\n"
            f"add_library(microforge_model STATIC {files})\n"
            f"target_include_directories(microforge_model PUBLIC ${{CMAKE_CURRENT_SOURCE_DIR}})\n"
            f"set_property(TARGET microforge_model PROPERTY C_STANDARD 99)\n"
            f"# libm, for the float kernels' expf (MSVC's C runtime has it built in)\n"
            f"if(NOT MSVC)\n  target_link_libraries(microforge_model PUBLIC m)\nendif()\n")


def _readme(graph: Graph, g: GeneratedModel) -> str:
    return (f"# Generated model\n\nGenerated by microforge for target `{g.target}`: {len(graph.ops)} ops.\n\n"
            f"- RAM: activation arena {g.arena_bytes:,} bytes (`MF_ARENA_BYTES`; TFLM's greedy plan needs "
            f"{g.plan.tflm_bytes:,}), plus the kernels' stack.\n"
            f"- Flash: constants {g.constant_bytes:,} bytes, plus code.\n\n"
            f"Use: copy your input into `mf_input(0)` (`MF_INPUT0_BYTES` bytes), call `mf_invoke()`, read "
            f"`mf_output(0)`. Build with the Makefile or CMakeLists.txt, or add the .c files to your project.\n")
