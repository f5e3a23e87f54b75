"""Property: random multi-op int8 graphs (branches, residual adds, concats, heads) are bit-exact with TFLM."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import tflm_run

import microforge
from microforge.frontend.writer import write_tflite
from microforge.graph.random_graph import random_graph


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 6))
def test_random_graph_is_bit_exact(seed, batch):
    graph = random_graph(seed)
    model = write_tflite(graph)
    x = np.random.default_rng(seed).integers(-128, 128, size=(batch,) + graph.inputs[0].shape, dtype=np.int8)
    want = tflm_run(model, [x])[0]
    got = microforge.run(microforge.load(model), x.reshape((batch,) + graph.inputs[0].shape[1:]))
    assert np.array_equal(got.reshape(want.shape), want), f"seed {seed}: {int(np.sum(got.reshape(want.shape) != want))} bytes differ"
