"""`microforge validate`: build for a target, run inputs, compare byte for byte with the interpreter."""

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
                    seed: int = 0) -> dict:
    """Run `count` random inputs (or `batches`, (N, *shape) each) on `target` and on the reference
    interpreter; report mismatches and what the target measured."""
    if target not in VALIDATE_TARGETS:
        raise TargetError(f"unknown target {target!r}; choose one of {', '.join(VALIDATE_TARGETS)}")
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
            result = run_on_qemu(generated.directory, target, samples)
            got = _split_outputs(graph, result.outputs)
            report.update(arena_bytes=generated.arena_bytes, stack_bytes=result.stack_bytes,
                          flash_bytes=result.flash_bytes, ram_bytes=result.ram_bytes,
                          instructions_per_inference=int(np.median(result.instructions)))
    report["mismatches"] = _mismatching_samples(expected, got)
    report["bit_exact"] = report["mismatches"] == 0
    return report


def _split_outputs(graph: Graph, raw: list[bytes]) -> list[np.ndarray]:
    """Per-sample output bytes (all outputs concatenated) -> one (N, *shape) array per graph output."""
    arrays, pos = [], 0
    for t in graph.outputs:
        arrays.append(np.stack([np.frombuffer(r, t.dtype, t.size, pos).reshape(t.shape) for r in raw]))
        pos += t.nbytes
    return arrays
