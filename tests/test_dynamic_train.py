"""microforge.dynamic.train: a slimmable DS-CNN, its sandwich training and its export, on a tiny model.

The net here has 8 channels at width 1.0 (2, 4, 6, 8 at the four widths) on 6 x 6 single-channel images of
three classes told apart by where a bright square is; training runs a few dozen steps.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import keras  # noqa: E402

from microforge.dynamic import train as dyn  # noqa: E402
from microforge.errors import InputError, ModelError  # noqa: E402
from microforge.frontend.reader import read_tflite  # noqa: E402
from microforge.reference.interpreter import run  # noqa: E402

ARCH = dyn.Architecture("tiny", (6, 6, 1), 3, 8, (3, 3), (1, 1), (8,), head_dropout=0.1)
WIDTHS = dyn.DEFAULT_WIDTHS


def squares(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n images (n, 6, 6, 1) float32: noise with a bright 3 x 3 square at the top left (class 0), top
    right (1) or bottom middle (2); labels (n,)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    x = rng.normal(0.0, 0.3, size=(n, 6, 6, 1)).astype(np.float32)
    corners = {0: (0, 0), 1: (0, 3), 2: (3, 1)}
    for i, label in enumerate(y):
        r, c = corners[int(label)]
        x[i, r:r + 3, c:c + 3, 0] += 2.0
    return x, y.astype(np.int64)


@pytest.fixture(scope="module")
def family():
    """(net trained 64 steps, its history, {width: exported float .tflite bytes}, test images). BN momentum
    0.8: with Keras' 0.99 the moving statistics would not settle in so few steps."""
    keras.utils.set_random_seed(3)
    net = dyn.SlimmableNet(ARCH, bn_momentum=0.8)
    x, y = squares(256, seed=0)
    history = dyn.train(net, x, y, epochs=4, batch_size=16, learning_rate=2e-2, seed=0, random_widths=1, log=None)
    files = {w: dyn.export_tflite(net, w) for w in WIDTHS}
    return net, history, files, squares(40, seed=1)[0]


def test_channels_and_one_batch_norm_per_width():
    net = dyn.SlimmableNet(ARCH)
    assert [ARCH.hidden_channels(w) for w in WIDTHS] == [[2, 2], [4, 4], [6, 6], [8, 8]]
    x = np.zeros((2, 6, 6, 1), np.float32)
    for w, c in zip(WIDTHS, (2, 4, 6, 8)):
        assert tuple(net.stem.active_kernel(1, w).shape) == (3, 3, 1, c)  # input channels never sliced
        depthwise, _, pointwise, _ = net.blocks[0]
        assert tuple(depthwise.active_kernel(c).shape) == (3, 3, c, 1)
        assert tuple(pointwise.active_kernel(c, w).shape) == (1, 1, c, c)
        kernel, bias = net.classifier.active_weights(c, w)
        assert tuple(kernel.shape) == (c, 3) and tuple(bias.shape) == (3,)  # classes never sliced
        assert tuple(net(x, width=w).shape) == (2, 3)
        exported = dyn.export_width(net, w)
        assert [layer.get_weights()[0].shape[-2:] for layer in exported.layers
                if isinstance(layer, keras.layers.Conv2D)] == [(1, c), (c, c)]
    for switchable in net.norms():
        assert len(switchable.norms) == len(WIDTHS)
        assert [tuple(n.gamma.shape) for n in switchable.norms] == [(2,), (4,), (6,), (8,)]
        assert len({id(n.gamma) for n in switchable.norms}) == len(WIDTHS)  # separate variables
        assert len({id(n.moving_mean) for n in switchable.norms}) == len(WIDTHS)
    with pytest.raises(InputError, match="width 0.3"):
        net(x, width=0.3)


def test_alone_net_has_the_family_channels():
    alone = dyn.SlimmableNet(ARCH.at(0.5), widths=(1.0,))
    assert alone.arch.hidden_channels(1.0) == ARCH.hidden_channels(0.5)
    assert tuple(alone.stem.kernel.shape) == (3, 3, 1, 4)


def test_sandwich_takes_largest_smallest_and_random_between():
    rng = np.random.default_rng(0)
    for _ in range(10):
        picked = dyn.sandwich(WIDTHS, rng, 1)
        assert picked[:2] == (1.0, 0.25) and len(picked) == 3 and picked[2] in (0.5, 0.75)
    assert dyn.sandwich(WIDTHS, rng, 2) == (1.0, 0.25, 0.5, 0.75)
    assert dyn.sandwich((1.0,), rng, 2) == (1.0,)
    with pytest.raises(InputError):
        dyn.check_widths((0.5, 1.5))


def test_distillation_gives_the_teacher_no_gradient():
    import tensorflow as tf

    teacher = tf.Variable([[2.0, -1.0, 0.5]])
    student = tf.Variable([[0.1, 0.2, 0.3]])
    with tf.GradientTape() as tape:
        loss = dyn.distillation_loss(teacher, student, temperature=2.0)
    grad_teacher, grad_student = tape.gradient(loss, [teacher, student])
    assert grad_teacher is None or np.all(grad_teacher.numpy() == 0)
    assert np.any(grad_student.numpy() != 0)


def test_sandwich_training_reduces_the_loss(family):
    net, history, _, _ = family
    # over seeds 3-5 the last epoch's losses were 0.53-0.6 (total) and 0.18-0.27 (labels) of the first's
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]
    assert history[-1]["label_loss"] < 0.4 * history[0]["label_loss"]
    x, y = squares(200, seed=2)
    assert dyn.accuracy(net, x, y, 1.0) > 0.9
    for w in WIDTHS:  # chance is 1/3; the 2-channel width learns slowest (0.63-0.69)
        assert dyn.accuracy(net, x, y, w) > 0.5, f"width {w}"


def test_exported_tflite_matches_the_net(family):
    net, _, files, x = family
    for w, data in files.items():
        graph = read_tflite(data)
        assert {op.type for op in graph.ops} <= set(dyn.EXPORT_OPS)
        ours = np.asarray(run(graph, x)).reshape(len(x), -1)
        np.testing.assert_allclose(ours, dyn.predict(net, x, w), atol=1e-4, err_msg=f"width {w}")


def test_shared_weights_check_passes_and_catches_a_perturbation(family):
    _, _, files, _ = family
    dyn.check_shared({w: read_tflite(data) for w, data in files.items()})

    def perturbed(change):
        graphs = {w: read_tflite(data) for w, data in files.items()}
        weights = [op for op in graphs[0.5].ops if op.type == "CONV_2D"][-1].inputs[1]  # the pointwise conv
        weights.data = change(weights.data.copy())
        return graphs

    def nudge(w):
        w[1, 0, 0, 2] *= 1.01  # one weight of output channel 1
        return w

    def flip(w):
        w[0] = -w[0]  # output channel 0 times -1: a negative factor
        return w

    for change in (nudge, flip):
        with pytest.raises(ModelError, match=r"width 0.5, op \d+ \(CONV_2D\).*output channel"):
            dyn.check_shared(perturbed(change))


def test_gamma_stays_positive():
    """Gammas started at the floor and pushed by a large learning rate: the constraint clips them."""
    keras.utils.set_random_seed(5)
    net = dyn.SlimmableNet(ARCH)
    for switchable in net.norms():
        for norm in switchable.norms:
            norm.gamma.assign(np.full(norm.gamma.shape, 2 * dyn.GAMMA_MIN, np.float32))
    x, y = squares(64, seed=4)
    dyn.train(net, x, y, epochs=3, batch_size=16, learning_rate=0.1, seed=0, random_widths=2, log=None)
    gammas = np.concatenate([n.gamma.numpy() for s in net.norms() for n in s.norms])
    assert gammas.min() >= np.float32(dyn.GAMMA_MIN)
    assert np.any(gammas == np.float32(dyn.GAMMA_MIN))  # some would have gone below without the constraint


DEEP = dyn.Architecture("deep", (6, 6, 1), 3, 8, (3, 3), (1, 1), (8, 8))


def test_depth_options_run_the_first_blocks_and_export_them():
    keras.utils.set_random_seed(4)
    net = dyn.SlimmableNet(DEEP, widths=(0.5, 1.0), depths=(1, 2), bn_momentum=0.8)
    assert net.members() == [(0.5, 1), (0.5, 2), (1.0, 1), (1.0, 2)]
    x, y = squares(128, seed=0)
    untouched = [keras.ops.convert_to_numpy(v).copy() for v in net.blocks[1][1].norm_for(0.5).trainable_weights]
    # two members per step (largest and smallest): width 0.5's BN of block 1 is never used, so never moved
    history = dyn.train(net, x, y, epochs=3, batch_size=16, learning_rate=2e-2, seed=0, random_widths=0, log=None)
    assert set(history[-1]) >= {"loss", "label_loss"}
    after = [keras.ops.convert_to_numpy(v) for v in net.blocks[1][1].norm_for(0.5).trainable_weights]
    assert all(np.array_equal(a, b) for a, b in zip(untouched, after))
    test = squares(40, seed=1)[0]
    assert not np.allclose(dyn.predict(net, test, 1.0, depth=1), dyn.predict(net, test, 1.0, depth=2))
    files = {}
    for w, d in net.members():
        graph = read_tflite(dyn.export_tflite(net, w, d))
        assert [op.type for op in graph.ops].count("DEPTHWISE_CONV_2D") == d
        ours = np.asarray(run(graph, test)).reshape(len(test), -1)
        np.testing.assert_allclose(ours, dyn.predict(net, test, w, depth=d), atol=1e-4, err_msg=f"{w}/{d}")
        files[w, d] = graph
    dyn.check_shared(files)  # the shallow members pair with the first block
    alone = dyn.SlimmableNet(DEEP.at(0.5, 1), widths=(1.0,))
    assert alone.arch.block_channels == (4,) and alone.depths == (1,)
    with pytest.raises(InputError, match="depths must be"):
        dyn.SlimmableNet(DEEP, depths=(0, 2))
    with pytest.raises(InputError, match="depth 3 is not one of"):
        dyn.export_width(net, 1.0, 3)
