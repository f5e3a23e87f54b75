"""One C image for a whole weight-shared family: each weight once, every member a call away.

A member is a width, or a (width, depth) pair in a family with depth options (family.py). Every member
is planned and lowered by the ordinary C backend (codegen.emit.lower) into one constant pool, with its
weight tensors marked as leading slices of the widest member's (family.shared); a shallower member simply
has fewer ops. The kernels then read the widest member's arrays in place: convolutions and depthwise
convolutions take a prefix of their output channels (contiguous in the layouts they read), 1x1
convolutions and fully connected layers also skip, per weight row, the columns past the member's inputs
(mf_fc_params.weight_pitch). On Cortex-M the split DSP kernels read the widest member's re-laid-out weight
words the same way, apart from each member's constants. Only the per-member constants (folded biases,
multipliers, shifts, clamps, softmax tables) are written per member; benchmarks/dynamic.py measures what a
member costs in the family beside the same model alone.

All members share one arena, sized for the largest plan. The generated model.h is the usual interface
(mf_init, mf_invoke, mf_input, mf_output) plus

    int32_t mf_set_operating_point(int32_t k);   k = 0 .. MF_NUM_OPERATING_POINTS - 1, smallest first;
                                                 returns 0, or -1 (nothing changed) when k is out of range
    int32_t mf_operating_point(void);

Switching stores one index (a few instructions); mf_invoke calls the current member's function through a
table, and mf_input / mf_output return its planned offsets. mf_init selects MF_DEFAULT_POINT (the widest
unless the build defines it, e.g. -DMF_DEFAULT_POINT=0).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from microforge.codegen.emit import (
    PROFILE_MARKS,
    ConstantPool,
    LoweredModel,
    header,
    lower,
    marked_body,
    write_build_files,
    write_kernels,
)
from microforge.dynamic.family import Family
from microforge.errors import ModelError, UnsupportedError


@dataclass
class FamilyImage:
    """What `generate_family` wrote."""

    directory: Path
    widths: list[float]  # per member
    labels: list[str]  # per member: "width 0.25" or "width 0.25 depth 2"
    arena_bytes: int  # the one arena: the largest of the widths' plans
    width_arena_bytes: list[int]  # each width's own plan
    constant_bytes: int  # every weight and per-width constant of the family, in flash
    sources: list[str]
    target: str


def _interface(lowered: list[LoweredModel], family: Family) -> None:
    """Every width must read and write the same bytes, so one caller serves them all."""
    def io(graph):
        return ([(t.nbytes, str(t.dtype)) for t in graph.inputs], [(t.nbytes, str(t.dtype)) for t in graph.outputs])
    reference = io(lowered[-1].graph)
    for k, low in enumerate(lowered[:-1]):
        if io(low.graph) != reference:
            raise ModelError(f"{family.where(k)}: its inputs and outputs {io(low.graph)} differ from the widest "
                             f"member's {reference}")


def generate_family(family: Family, out_dir, target: str = "portable", strategy: str = "auto",
                    header_lines: tuple[str, ...] = ()) -> FamilyImage:
    """Write the family's C folder (module doc) to `out_dir`; `header_lines` go into model.h as well."""
    pool = ConstantPool()
    lowered = []
    for k, graph in enumerate(family.graphs):
        low = lower(graph, target, strategy, pool=pool, shared=family.shared(k))
        if low.ctx.exponent_slots:
            raise UnsupportedError(f"{family.where(k)}: dynamic fixed-point members are not supported in a family")
        lowered.append(low)
    _interface(lowered, family)
    sources = []
    for low in lowered:
        sources += [s for s in low.sources if s not in sources]
    out = Path(out_dir)
    headers = write_kernels(out, sources)
    arena = max(low.plan.arena_bytes for low in lowered)
    n = len(lowered)
    labels = [family.label(k) for k in range(n)]
    extra = (
        f"/* A weight-shared family of {n} members ({', '.join(labels)}): operating point k runs member k. */",
        f"#define MF_NUM_OPERATING_POINTS {n}",
        "/* Select member k for the next mf_invoke calls: returns 0, or -1 (and changes nothing) when k is not",
        "   in 0 .. MF_NUM_OPERATING_POINTS - 1. */",
        "int32_t mf_set_operating_point(int32_t k);",
        "/* The member mf_invoke runs now. */",
        "int32_t mf_operating_point(void);", "", *header_lines)
    (out / "model.h").write_text(header(lowered[-1].graph, arena, pool.constant_bytes, extra=extra))
    (out / "model.c").write_text(_model_c(family, lowered, headers, arena, pool))
    write_build_files(out, sources, "model.c")
    image = FamilyImage(out, list(family.widths), labels, arena, [low.plan.arena_bytes for low in lowered],
                        pool.constant_bytes, ["model.c"] + sources, target)
    (out / "README.md").write_text(_readme(family, image))
    return image


def _offset_table(name: str, lowered: list[LoweredModel], which: str) -> str:
    rows = []
    for low in lowered:
        offsets = low.plan.tensor_offsets()
        rows.append("{" + ", ".join(str(offsets[t.index]) for t in getattr(low.graph, which)) + "}")
    count = len(getattr(lowered[-1].graph, which))
    return f"static const uint32_t {name}[{len(lowered)}][{count}] = {{\n    " + ",\n    ".join(rows) + "\n};\n"


def _model_c(family: Family, lowered: list[LoweredModel], headers: list[str], arena: int, pool: ConstantPool) -> str:
    n = len(lowered)
    includes = "\n".join(f'#include "{h}"' for h in headers)
    functions = "".join(
        f"/* {family.label(k)}: {len(low.graph.ops)} ops, its plan {low.plan.arena_bytes} bytes */\n"
        f"static void mf_invoke_{k}(void) {{\n{marked_body(low.body)}}}\n\n" for k, low in enumerate(lowered))
    n_in, n_out = len(lowered[-1].graph.inputs), len(lowered[-1].graph.outputs)
    return (
        f"/* Generated by microforge: a weight-shared family of {n} members in one image; arena {arena} bytes "
        f"(the largest width's plan); constants {pool.constant_bytes} bytes, each weight once. */\n"
        f'#include "model.h"\n{includes}\n\n'
        "static uint8_t mf_arena[MF_ARENA_BYTES] MF_ALIGNED(16);\n\n"
        + "\n\n".join(pool.declarations) + "\n\n" + PROFILE_MARKS + functions
        + f"static void (*const mf_invokes[{n}])(void) = {{{', '.join(f'mf_invoke_{k}' for k in range(n))}}};\n"
        + _offset_table("mf_input_offsets", lowered, "inputs")
        + _offset_table("mf_output_offsets", lowered, "outputs") + "\n"
        "#ifndef MF_DEFAULT_POINT\n#define MF_DEFAULT_POINT (MF_NUM_OPERATING_POINTS - 1)\n#endif\n"
        "static int32_t mf_point = MF_DEFAULT_POINT;\n\n"
        "void mf_init(void) { mf_point = MF_DEFAULT_POINT; }\n\n"
        "int32_t mf_set_operating_point(int32_t k) {\n"
        "    if (k < 0 || k >= MF_NUM_OPERATING_POINTS) return -1;\n"
        "    mf_point = k;\n    return 0;\n}\n\n"
        "int32_t mf_operating_point(void) { return mf_point; }\n\n"
        "#if defined(MF_SWITCH_EVERY_INVOKE)\n"
        "/* Measuring a switch (dynamic/measure.py): every inference first selects its point, called the way\n"
        " * another file calls it (through a pointer the compiler cannot see through). */\n"
        "static volatile int32_t mf_switch_request = MF_DEFAULT_POINT;\n"
        "static int32_t (*volatile mf_switch)(int32_t) = mf_set_operating_point;\n"
        "void mf_invoke(void) {\n    (void)mf_switch(mf_switch_request);\n    mf_invokes[mf_point]();\n}\n"
        "#else\n"
        "void mf_invoke(void) { mf_invokes[mf_point](); }\n"
        "#endif\n\n"
        f"void *mf_input(int index) {{\n    if (index < 0 || index >= {n_in}) return 0;\n"
        "    return mf_arena + mf_input_offsets[mf_point][index];\n}\n\n"
        f"void *mf_output(int index) {{\n    if (index < 0 || index >= {n_out}) return 0;\n"
        "    return mf_arena + mf_output_offsets[mf_point][index];\n}\n"
    )


def _readme(family: Family, image: FamilyImage) -> str:
    rows = "\n".join(f"| {k} | {label} | {a:,} |" for k, (label, a) in enumerate(zip(image.labels, image.width_arena_bytes)))
    return (f"# Generated weight-shared family `{family.name}`\n\nGenerated by microforge for target `{image.target}`: "
            f"{len(image.widths)} members of one network in one image, each weight stored once.\n\n"
            f"- RAM: one activation arena of {image.arena_bytes:,} bytes (`MF_ARENA_BYTES`, the largest width's "
            f"plan), plus the kernels' stack.\n- Flash: constants {image.constant_bytes:,} bytes, plus code.\n\n"
            f"| operating point k | member | its plan (bytes) |\n|---|---|---|\n{rows}\n\n"
            "Use: `mf_init()`, then `mf_set_operating_point(k)` whenever the budget changes (it returns -1 for a k "
            "out of range), copy the input into `mf_input(0)`, call `mf_invoke()`, read `mf_output(0)`.\n")
