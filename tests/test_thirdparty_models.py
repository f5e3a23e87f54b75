"""Models that other projects ship for microcontrollers (models/thirdparty/MANIFEST.md): microforge loads
them, runs them byte for byte as TFLite Micro does (reference interpreter, generated C on the host and on
qemu-m4), and plans an arena no larger than TFLM's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from oracle import tflm_run
from tflm_arena import tflm_reported_head_bytes

import microforge
from microforge.codegen.validate import validate_target

MODELS = Path(__file__).resolve().parents[1] / "models" / "thirdparty"
NAMES = ["tflm_person_detect_int8", "tflm_micro_speech_int8", "tflm_hello_world_int8"]


def random_batch(graph, count: int, seed: int) -> np.ndarray:
    x = graph.inputs[0]
    return np.random.default_rng(seed).integers(-128, 128, (count,) + x.shape, dtype=np.int8)


@pytest.mark.parametrize("name", NAMES)
def test_reference_and_host_c_equal_tflm(name):
    data = (MODELS / f"{name}.tflite").read_bytes()
    graph = microforge.load(data)
    x = random_batch(graph, 6, seed=len(name))
    ours = microforge.run(graph, x)
    assert np.array_equal(ours, tflm_run(data, [x])[0].reshape(ours.shape))
    report = validate_target(graph, "host", batches=[x])
    assert report["bit_exact"], f"{report['mismatches']} samples differ on the host"
    assert report["arena_bytes"] <= tflm_reported_head_bytes(data)


@pytest.mark.parametrize("name", NAMES)
def test_qemu_m4_equals_the_reference_in_no_more_arena_than_tflm(name):
    data = (MODELS / f"{name}.tflite").read_bytes()
    graph = microforge.load(data)
    report = validate_target(graph, "qemu-m4", batches=[random_batch(graph, 2, seed=3)])
    assert report["bit_exact"] and report["instructions_per_inference"] > 0
    assert report["arena_bytes"] <= tflm_reported_head_bytes(data)  # the Cortex-M kernels' scratch included
