"""`microforge validate`: build for a target, run inputs, compare byte for byte with the interpreter
(float outputs: also the largest absolute difference, since libm and float code rarely match to the bit)."""

from __future__ import annotations

import tempfile

import numpy as np

from microforge.errors import TargetError
from microforge.graph.ir import Graph
from microforge.plan.validate import random_inputs
from microforge.reference.interpreter import run_batched

VALIDATE_TARGETS = ("host", "qemu-m4", "qemu-m7")


def _mismatching_samples(expected: list[np.ndarray], got: list[np.ndarray]) -> int:
    bad = np.zeros(len(expected[0]), dtype=bool)
    for want, have in zip(expected, got):
        bad |= np.any(want.reshape(len(want), -1).view(np.uint8) != have.reshape(len(have), -1).view(np.uint8),
                      axis=1)
    return int(bad.sum())


def validate_target(graph: Graph, target: str, count: int = 8, batches: list[np.ndarray] | None = None,
                    seed: int = 0, profile: bool = False, keep_outputs: bool = False) -> dict:
    """Run `count` random inputs (or `batches`, (N, *shape) each) on `target` and on the reference
    interpreter; report mismatches and what the target measured. `profile` (qemu targets): also
    report["profile"], one row per op in the order they run (see _profile_rows). `keep_outputs`: also
    report["outputs"], the target's (N, *shape) arrays, one per graph output."""
    if target not in VALIDATE_TARGETS:
        raise TargetError(f"unknown target {target!r}; choose one of {', '.join(VALIDATE_TARGETS)}")
    if profile and not target.startswith("qemu-"):
        raise TargetError(f"a per-op profile counts instructions on an emulated core: use --target qemu-m4 or "
                          f"qemu-m7, not {target}")
    batches = batches if batches is not None else random_inputs(graph, count, seed)
    expected = run_batched(graph, batches)
    report = {"target": target, "samples": len(batches[0]), "instructions_per_inference": None,
              "stack_bytes": None, "flash_bytes": None, "ram_bytes": None}
    with tempfile.TemporaryDirectory(prefix="microforge-") as tmp:
        if target == "host":
            from microforge.codegen.host import compile_host

            model = compile_host(graph, out_dir=tmp)
            got = model.run_batched(batches)
            report["arena_bytes"] = model.generated.arena_bytes
        else:
            from microforge.codegen.emit import generate
            from microforge.codegen.targets.qemu import run_on_qemu

            core = {"qemu-m4": "cortex-m4", "qemu-m7": "cortex-m7"}[target]
            generated = generate(graph, tmp, target=core)
            samples = [b"".join(np.ascontiguousarray(b[n]).tobytes() for b in batches) for n in range(len(batches[0]))]
            result = run_on_qemu(generated.directory, target, samples, profile=profile)
            got = _split_outputs(graph, result.outputs)
            report.update(arena_bytes=generated.arena_bytes, stack_bytes=result.stack_bytes,
                          flash_bytes=result.flash_bytes, ram_bytes=result.ram_bytes,
                          instructions_per_inference=int(np.median(result.instructions)))
            if profile:
                report["profile"] = _profile_rows(graph, generated.plan.schedule, result.op_instructions,
                                                  report["instructions_per_inference"])
    if keep_outputs:
        report["outputs"] = got
    report["mismatches"] = _mismatching_samples(expected, got)
    report["bit_exact"] = report["mismatches"] == 0
    # float outputs go through libm (expf) and the compiler's float code: close, rarely bit-exact
    floats = [(want, have) for want, have in zip(expected, got) if want.dtype.kind == "f"]
    if floats:
        report["max_abs_error"] = max(float(np.nanmax(np.abs(want.astype(np.float64) - have), initial=0.0))
                                      for want, have in floats)
    return report


def _profile_rows(graph: Graph, schedule: list[int], op_instructions: list[list[int]], total: int) -> list[dict]:
    """One row per op, in the order mf_invoke runs them: the median over the samples of its instructions
    (from its call to the return of its kernel), MACs (graph.analysis.op_macs), MACs per instruction and
    its share of the inference's instructions (the rest is mf_invoke's own few, and the markers')."""
    from microforge.graph.analysis import op_macs

    per_op = np.median(np.asarray(op_instructions, dtype=np.int64), axis=0)
    rows = []
    for index, instructions in zip(schedule, per_op.tolist()):
        op = graph.ops[index]
        macs = op_macs(op)
        rows.append({"index": op.index, "type": op.type, "output_shape": list(op.outputs[0].shape), "macs": macs,
                     "instructions": int(instructions),
                     "macs_per_instruction": macs / instructions if instructions else 0.0,
                     "share": instructions / total if total else 0.0})
    return rows


def _split_outputs(graph: Graph, raw: list[bytes]) -> list[np.ndarray]:
    """Per-sample output bytes (all outputs concatenated) -> one (N, *shape) array per graph output."""
    arrays, pos = [], 0
    for t in graph.outputs:
        arrays.append(np.stack([np.frombuffer(r, t.dtype, t.size, pos).reshape(t.shape) for r in raw]))
        pos += t.nbytes
    return arrays
