"""The training kernels (codegen/kernels/mf_train.c) on shapes the shipped models do not have, and their speed.

Every layer below the first computes its input gradient, so each kernel's forward, weight gradient and input
gradient paths are checked (through the final weights of the layers before it) against the numpy reference:
general convolutions strided and padded, depthwise ones of multiplier 1 (the channel blocks of 8, 4 and 1,
the paired outputs and taps) and 2, overlapping and untiled pooling, dense layers with and without
activation, over tiles of one row and several, and once under AddressSanitizer and UBSan. On qemu-m4 a whole
SGD update of the digits model's default back must keep its multiply-adds per instruction."""

import copy

import numpy as np
import pytest

import microforge
from conftest import ROOT
from microforge.graph.ir import Quantization, Tensor
from microforge.learn import Hyper, split
from microforge.learn import layers as L
from microforge.learn.device import batch_rows, run_learner
from microforge.learn.split import Split
from microforge.learn.strategies import Strategy


def _r(rng, *shape):
    return (0.3 * rng.normal(size=shape)).astype(np.float32)


def _backs():
    rng = np.random.default_rng(1)
    r = lambda *s: _r(rng, *s)  # noqa: E731
    # 12 x 12 x 5 in: a 3 x 3 SAME convolution (first: no input gradient), then the paths under test
    general = L.Sequential([
        L.Conv2D(r(6, 3, 3, 5), r(6), padding="SAME", activation="RELU"),
        L.Conv2D(r(13, 3, 3, 6), r(13), stride=(2, 2), padding="VALID", activation="RELU6"),  # 5 x 5 x 13,
        # the last input row and column under no window
        # 8 + 4 + 1 channels; taps paired (0, 1) and (2, 3), each pair's taps with outputs of their own
        L.DepthwiseConv2D(r(1, 5, 4, 13), r(13), padding="SAME", activation="RELU"),
        L.AveragePool2D(filter=(3, 3), stride=(1, 1), padding="SAME"),  # overlapping windows
        L.DepthwiseConv2D(r(1, 3, 3, 13), r(13), stride=(2, 2), padding="SAME"),  # 3 x 3 x 13
        L.DepthwiseConv2D(r(1, 2, 2, 13), r(13), stride=(2, 2), padding="VALID"),  # 1 x 1: a row, a column left
        L.Reshape((13,)), L.Dense(r(5, 13), r(5), activation="RELU"), L.Dense(r(4, 5), r(4))])
    # 7 x 6 x 4 in: pointwise layers over 42 positions (blocks of 4 and one more), a depthwise layer of
    # multiplier 2 and 5 x 3 windows, pooling windows apart that leave the last row out
    pointwise = L.Sequential([
        L.Conv2D(r(9, 1, 1, 4), r(9), padding="VALID", activation="RELU"),
        L.Conv2D(r(7, 1, 1, 9), r(7), padding="VALID", activation="RELU6"),
        L.DepthwiseConv2D(r(1, 5, 3, 14), r(14), depth_multiplier=2, padding="SAME", activation="RELU"),
        L.AveragePool2D(filter=(2, 2), stride=(2, 2), padding="VALID"),  # 3 x 3 x 14
        L.Reshape((126,)), L.Dense(r(6, 126), r(6), activation="RELU6"), L.Dense(r(3, 6), r(3))])
    return {"general": (general, (12, 12, 5), 4), "pointwise": (pointwise, (7, 6, 4), 3)}


@pytest.mark.parametrize("name", ["general", "pointwise"])
def test_every_kernel_path_trains_as_the_reference(name):
    back, shape, classes = _backs()[name]
    lr = Tensor("lr", (1,) + shape, np.int8, Quantization([0.04], [5]))
    make = lambda: Split(None, None, lr, 0, copy.deepcopy(back), classes)  # noqa: E731
    hyper = Hyper(batch=3, replay_ratio=1.0, learning_rate=0.05, momentum=0.5)
    rng = np.random.default_rng(7)
    batches = [(rng.integers(-128, 128, (6,) + shape).astype(np.int8), rng.integers(0, classes, 6))
               for _ in range(5)]
    reference = Strategy(make(), hyper)
    for lat, y in batches:
        reference.step(reference.split.dequantize(lat), y)
    weights = np.concatenate([a.reshape(-1) for _, _, a in reference.split.back.params()])
    for tile_rows, sanitize in ((1, False), (2, False), (6, False), (1, True)):
        result = run_learner(make(), hyper, batches, "host", tile_rows=tile_rows, sanitize=sanitize)
        np.testing.assert_allclose(result.losses, reference.losses, rtol=1e-5)
        np.testing.assert_allclose(result.weights, weights, rtol=1e-4, atol=1e-5 * np.abs(weights).max())


def macs_per_update(cut, hyper) -> int:
    """benchmarks/learn.py's count: forward, weight gradients and (past the first layer) input gradients."""
    shape, total = cut.lr_shape, 0
    for i, layer in enumerate(cut.back.layers):
        m = layer.macs(shape)
        total += m["forward"] + m["weight_grad"] + (m["input_grad"] if i > 0 else 0)
        shape = layer.output_shape(shape)
    return total * batch_rows(hyper)


def test_qemu_m4_update_keeps_its_multiply_adds_per_instruction():
    graph = microforge.load(ROOT / "models" / "learn" / "digits0-4_cnn_int8.tflite")
    cut = split(graph, classes=10)
    hyper = Hyper(batch=4, replay_ratio=1.0)
    rng = np.random.default_rng(3)
    rows = batch_rows(hyper)
    batches = [(rng.integers(-128, 128, (rows,) + cut.lr_shape).astype(np.int8), rng.integers(0, 10, rows))
               for _ in range(2)]
    run = run_learner(cut, hyper, batches, "qemu-m4", weights_output=False)
    rate = macs_per_update(cut, hyper) / float(np.median(run.instructions))
    # 0.16 before the kernels were blocked for the M4F; see the kernels' header comment
    assert rate >= 0.3, f"{rate:.3f} MAC per instruction"
