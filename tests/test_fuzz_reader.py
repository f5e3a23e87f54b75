"""Fuzz the reader: truncated and byte-mutated real models either load or raise our own error.

Mutations aim at the flatbuffer's structure (tables, vtables, offsets and vector lengths), not only at
weight bytes, where a flip is harmless: half of them land outside the large constant buffers.
"""

import time

import numpy as np
import pytest
import tflite
from conftest import INT8_MODELS

import microforge
from microforge.errors import ModelError, UnsupportedError

INTERESTING = [0x00, 0x01, 0x7F, 0x80, 0xFF, 0xFE, 0x10, 0x40]
MUTANTS_PER_MODEL = 700
TRUNCATIONS_PER_MODEL = 100


def structural_positions(data: bytes) -> np.ndarray:
    """Byte positions outside every buffer's payload: where the file's structure lives."""
    model = tflite.Model.GetRootAs(data, 0)
    mask = np.ones(len(data), dtype=bool)
    for i in range(model.BuffersLength()):
        buf = model.Buffers(i)
        if buf.DataLength():
            start = buf._tab.Vector(buf._tab.Offset(4))
            mask[start: start + buf.DataLength()] = False
    return np.flatnonzero(mask)


def mutate(data: bytes, rng: np.random.Generator, structure: np.ndarray) -> bytes:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        pos = int(rng.choice(structure)) if rng.random() < 0.8 else int(rng.integers(len(out)))
        if rng.random() < 0.5:
            out[pos] = INTERESTING[int(rng.integers(len(INTERESTING)))]
        else:
            out[pos] ^= 1 << int(rng.integers(8))
    return bytes(out)


def load_or_clear_error(data: bytes):
    started = time.monotonic()
    try:
        graph = microforge.load(data)
    except (ModelError, UnsupportedError) as exc:
        assert str(exc), "errors must say what is wrong"
        graph = None
    assert time.monotonic() - started < 5, "the reader must never hang"
    return graph


@pytest.mark.parametrize("name", list(INT8_MODELS))
def test_mutated_models_load_or_raise_model_error(name):
    data = INT8_MODELS[name].read_bytes()
    rng = np.random.default_rng(sum(map(ord, name)))
    structure = structural_positions(data)
    loaded = 0
    for _ in range(MUTANTS_PER_MODEL):
        loaded += load_or_clear_error(mutate(data, rng, structure)) is not None
    # Some mutants must fail: a fuzzer whose every mutant loads is not reaching the structure.
    assert loaded < MUTANTS_PER_MODEL


@pytest.mark.parametrize("name", list(INT8_MODELS))
def test_truncated_models_raise_model_error(name):
    data = INT8_MODELS[name].read_bytes()
    rng = np.random.default_rng(7)
    for cut in rng.integers(0, len(data), TRUNCATIONS_PER_MODEL):
        load_or_clear_error(data[:cut])


def test_loaded_mutants_run_or_raise_our_error():
    """What the reader accepts must also never crash the interpreter (KWS: fast enough to run each)."""
    data = INT8_MODELS["kws"].read_bytes()
    rng = np.random.default_rng(3)
    structure = structural_positions(data)
    x = np.random.default_rng(0).integers(-128, 128, size=(2, 49, 10, 1), dtype=np.int8)
    ran = 0
    for _ in range(300):
        graph = load_or_clear_error(mutate(data, rng, structure))
        if graph is None or graph.inputs[0].shape != (1, 49, 10, 1) or graph.inputs[0].dtype != np.int8:
            continue
        try:
            microforge.run(graph, x)
            ran += 1
        except microforge.MicroforgeError:
            pass
    assert ran > 0
