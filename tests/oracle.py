"""TFLite Micro as the oracle: run a .tflite model sample by sample through the `tflite-micro` package."""

from __future__ import annotations

import contextlib
import os

import numpy as np
from tflite_micro.python.tflite_micro import runtime as tflm


@contextlib.contextmanager
def quiet_stderr():
    """TFLM prints allocation tables to the C-level stderr; keep test output readable."""
    saved = os.dup(2)
    with open(os.devnull, "wb") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def tflm_interpreter(model: bytes, arena_size: int = 4 << 20):
    with quiet_stderr():
        return tflm.Interpreter.from_bytes(model, arena_size=arena_size)


def tflm_run(model: bytes, batch_inputs: list[np.ndarray], arena_size: int = 4 << 20) -> list[np.ndarray]:
    """Run every sample of the batch; `batch_inputs[i]` has shape (N, *input_i.shape).

    Returns one array per model output with shape (N, *output.shape).
    """
    interpreter = tflm_interpreter(model, arena_size)
    count = len(batch_inputs[0])
    outputs: list[list[np.ndarray]] = []
    with quiet_stderr():
        for n in range(count):
            for i, x in enumerate(batch_inputs):
                interpreter.set_input(np.ascontiguousarray(x[n]), i)
            interpreter.invoke()
            outs = []
            k = 0
            while True:
                try:
                    outs.append(np.array(interpreter.get_output(k)))
                except Exception:  # the package signals "no such output" only by raising
                    break
                k += 1
            outputs.append(outs)
    return [np.stack([sample[k] for sample in outputs]) for k in range(len(outputs[0]))]


def run_both(graph, op, feeds: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(our reference kernel's output, TFLM's output) for `op`, the only op of `graph`, on the batch
    `feeds` (one (N, *shape) array per graph input, in order)."""
    from microforge.frontend.writer import write_tflite
    from microforge.reference.registry import KERNELS

    remaining = iter(feeds)
    args = [None if t is None else t.data[None] if t.is_constant else next(remaining) for t in op.inputs]
    ours = KERNELS[op.type].fn(op, args)
    assert ours.shape == (len(feeds[0]),) + op.outputs[0].shape
    assert ours.dtype == op.outputs[0].dtype
    theirs = tflm_run(write_tflite(graph), list(feeds))[0]
    return ours, theirs.reshape(ours.shape)


def assert_same(ours: np.ndarray, theirs: np.ndarray, rtol: float = 1e-6, atol: float = 1e-7) -> None:
    """Integer outputs must be identical; float32 outputs agree within (rtol, atol)."""
    if ours.dtype.kind in "iu":
        diff = np.flatnonzero(ours != theirs)
        assert diff.size == 0, (f"{diff.size} of {ours.size} values differ, e.g. ours {ours.flat[diff[0]]} "
                                f"vs TFLM {theirs.flat[diff[0]]}")
    else:
        np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol)
