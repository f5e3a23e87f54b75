"""The generated C learner against the numpy reference: a whole run of SGD steps with momentum on the digits
model's back gives the same losses and weights (float tolerance) on host, tiled and untiled, and on qemu-m4,
whose instructions per step it reports; bad batches are refused."""

import copy

import numpy as np
import pytest

import microforge
from conftest import ROOT
from microforge.errors import InputError
from microforge.learn import Hyper, split
from microforge.learn.device import batch_rows, generate_learner, layout, run_learner
from microforge.learn.scenarios import digits_class_incremental
from microforge.learn.strategies import Strategy

MODEL = ROOT / "models" / "learn" / "digits0-4_cnn_int8.tflite"
HYPER = Hyper(batch=4, replay_ratio=1.0, learning_rate=0.05, momentum=0.9)
STEPS = 12


@pytest.fixture(scope="module")
def run():
    """The digits model split at its default LR layer, STEPS mini-batches of old and new classes, and the
    numpy reference's losses and final weights on them."""
    graph = microforge.load(MODEL)
    stream = digits_class_incremental(graph.inputs[0])
    cut = split(graph, classes=10)
    x = np.concatenate([stream[0].train_x[:60], stream[1].train_x[:60]])
    latents, labels = cut.latents(x), np.r_[stream[0].train_y[:60], stream[1].train_y[:60]]
    rows = batch_rows(HYPER)
    picks = np.random.default_rng(0).permutation(len(labels))[:rows * STEPS].reshape(STEPS, rows)
    batches = [(latents[p], labels[p]) for p in picks]
    reference = Strategy(split(graph, classes=10), HYPER)
    for lat, y in batches:
        reference.step(reference.split.dequantize(lat), y)
    weights = np.concatenate([a.reshape(-1) for _, _, a in reference.split.back.params()])
    return graph, batches, np.asarray(reference.losses), weights


def same_training(result, losses, weights):
    # float32 sums in another order: a few units in the last place per step, compounding over the run
    np.testing.assert_allclose(result.losses, losses, rtol=1e-5)
    np.testing.assert_allclose(result.weights, weights, rtol=1e-4, atol=1e-5 * np.abs(weights).max())


@pytest.mark.parametrize("tile_rows", [1, 4, 8])
def test_host_learner_trains_as_the_reference_tiled_or_not(run, tile_rows):
    graph, batches, losses, weights = run
    same_training(run_learner(split(graph, classes=10), HYPER, batches, "host", tile_rows=tile_rows), losses, weights)
    assert np.mean(losses[-4:]) < np.mean(losses[:4])  # and it learned


def test_qemu_m4_learner_trains_as_the_reference_and_counts_its_steps(run):
    graph, batches, losses, weights = run
    result = run_learner(split(graph, classes=10), HYPER, batches[:4], "qemu-m4")
    reference = Strategy(split(graph, classes=10), HYPER)
    for lat, y in batches[:4]:
        reference.step(reference.split.dequantize(lat), y)
    same_training(result, np.asarray(reference.losses),
                  np.concatenate([a.reshape(-1) for _, _, a in reference.split.back.params()]))
    assert len(result.instructions) == 4 and min(result.instructions) > 0
    # every step runs the same code on the same shapes: its cost hardly varies
    assert max(result.instructions) < 1.01 * min(result.instructions)


def test_tiles_shrink_the_activation_ram(run, tmp_path):
    graph = run[0]
    cut = split(graph, classes=10)
    one, whole = layout(cut, HYPER, 1), layout(cut, HYPER, batch_rows(HYPER))
    assert whole.activations_bytes == batch_rows(HYPER) * one.activations_bytes
    header = (generate_learner(cut, HYPER, tmp_path / "c") / "model.h").read_text()
    assert f"#define MF_LEARN_ROWS {batch_rows(HYPER)}" in header
    assert f"#define MF_INPUT0_BYTES {batch_rows(HYPER) * (8 * 8 * 16 + 1)}" in header


def test_bad_batches_and_tiles_are_refused(run, tmp_path):
    graph, batches, _, _ = run
    cut = split(graph, classes=10)
    latents, labels = batches[0]
    with pytest.raises(InputError, match="batch 0 has latents \\[7, 8, 8, 16\\]"):
        run_learner(cut, HYPER, [(latents[:7], labels[:7])])
    with pytest.raises(InputError, match="labels outside 0..9"):
        run_learner(cut, HYPER, [(latents, np.full(len(labels), 12))])
    with pytest.raises(InputError, match="tile_rows 3 must divide the mini-batch of 8 rows"):
        generate_learner(cut, HYPER, tmp_path, tile_rows=3)


def test_every_kernel_path_on_host_strided_padded_and_multiplied_and_sanitized():
    """A back the digits model does not have: a 3 x 3 convolution of stride 2 (SAME), a depthwise one with
    depth multiplier 2 (VALID), SAME average pooling of stride 2, a RELU6 dense layer and the classifier."""
    from microforge.graph.ir import Quantization, Tensor
    from microforge.learn import layers as L
    from microforge.learn.split import Split

    rng = np.random.default_rng(0)
    r = lambda *s: (0.3 * rng.normal(size=s)).astype(np.float32)  # noqa: E731
    back = L.Sequential([L.Conv2D(r(6, 3, 3, 3), r(6), stride=(2, 2), padding="SAME", activation="RELU"),
                         L.DepthwiseConv2D(r(1, 3, 3, 12), r(12), depth_multiplier=2, padding="VALID",
                                           activation="RELU6"),
                         L.AveragePool2D(filter=(2, 2), stride=(2, 2), padding="SAME"), L.Reshape((48,)),
                         L.Dense(r(7, 48), r(7), activation="RELU6"), L.Dense(r(4, 7), r(4))])
    lr = Tensor("lr", (1, 9, 9, 3), np.int8, Quantization([0.05], [-3]))
    make = lambda: Split(None, None, lr, 0, copy.deepcopy(back), 4)  # noqa: E731  (a fresh back each run)
    hyper = Hyper(batch=3, replay_ratio=1.0, learning_rate=0.1, momentum=0.5)
    batches = [(rng.integers(-128, 128, (6, 9, 9, 3)).astype(np.int8), rng.integers(0, 4, 6)) for _ in range(6)]
    reference = Strategy(make(), hyper)
    for lat, y in batches:
        reference.step(reference.split.dequantize(lat), y)
    weights = np.concatenate([a.reshape(-1) for _, _, a in reference.split.back.params()])
    for tile_rows, sanitize in ((1, False), (3, False), (1, True)):
        # sanitized: AddressSanitizer and UBSan stop the run on any write outside the learner's buffers
        same_training(run_learner(make(), hyper, batches, "host", tile_rows=tile_rows, sanitize=sanitize),
                      np.asarray(reference.losses), weights)


def test_a_back_of_the_classifier_alone(run):
    """LR at the pooled features: the back is the reshape and the final dense layer, one trained layer."""
    graph, _, _, _ = run
    pool = next(op.index for op in graph.ops if op.type == "AVERAGE_POOL_2D")
    cut = split(graph, lr_layer=pool, classes=10)
    assert [type(layer).__name__ for layer in cut.back.layers] == ["Reshape", "Dense"]
    rng = np.random.default_rng(2)
    rows = batch_rows(HYPER)
    batches = [(rng.integers(-128, 128, (rows,) + cut.lr_shape).astype(np.int8), rng.integers(0, 10, rows))
               for _ in range(5)]
    reference = Strategy(split(graph, lr_layer=pool, classes=10), HYPER)
    for lat, y in batches:
        reference.step(reference.split.dequantize(lat), y)
    same_training(run_learner(cut, HYPER, batches, "host"), np.asarray(reference.losses),
                  np.concatenate([a.reshape(-1) for _, _, a in reference.split.back.params()]))
