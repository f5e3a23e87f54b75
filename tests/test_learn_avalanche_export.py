"""The export of benchmarks/learn_avalanche.py, which hands Avalanche (in its own venv, with torch) the
scenario's latents and our back: checked here without torch or avalanche, on the shipped digits model.
The npz's latents are exactly what our back trains on (split.dequantize(split.latents(x))), its weights
are the back's, its shapes chain, its labels are the scenario's, and the settings are benchmarks/learn.py's
(hyper_for's hyper-parameters, the learning rate of every epoch, replay_count's replays per mini-batch).
The torch peer's weight conversions (plain numpy) are checked against our layers with a direct NCHW
convolution; the peer itself checks its logits against ours at startup."""

import importlib.util
import json

import numpy as np
import pytest

from conftest import ROOT
import microforge
from microforge.errors import InputError
from microforge.learn import layers as L
from microforge.learn.scenarios import digits_class_incremental
from microforge.learn.split import lr_op_index, split
from microforge.learn.strategies import Hyper, replay_count

MODEL = ROOT / "models" / "learn" / "digits0-4_cnn_int8.tflite"


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def peer():
    return _load("learn_avalanche", ROOT / "benchmarks" / "learn_avalanche.py")


@pytest.fixture(scope="module")
def exported(peer, tmp_path_factory):
    path = peer.export("digits", tmp_path_factory.mktemp("avalanche") / "digits.npz", seeds=2)
    data = np.load(path)
    return data, json.loads(str(data["meta"]))


@pytest.fixture(scope="module")
def reference():
    graph = microforge.load(MODEL)
    return graph, digits_class_incremental(graph.inputs[0]), split(graph, None, classes=10)


def test_the_latents_are_exactly_what_our_back_trains_on(exported, reference):
    data, meta = exported
    _, stream, cut = reference
    assert meta["experiences"] == [e.name for e in stream]
    for k, experience in enumerate(stream):
        for part in ("train", "test"):
            x, y = data[f"{part}_x_{k}"], data[f"{part}_y_{k}"]
            want = cut.dequantize(cut.latents(getattr(experience, f"{part}_x")))
            assert x.dtype == np.float32 and x.shape == (len(y),) + cut.lr_shape
            np.testing.assert_array_equal(x, want)
            np.testing.assert_array_equal(y, getattr(experience, f"{part}_y"))
            assert set(np.unique(y)) == set(experience.classes)


def test_the_back_is_ours_layer_by_layer(exported, reference):
    data, meta = exported
    _, stream, cut = reference
    layers = meta["layers"]
    assert [entry["type"] for entry in layers] == [type(layer).__name__ for layer in cut.back.layers]
    shape = cut.lr_shape
    for i, (entry, layer) in enumerate(zip(layers, cut.back.layers)):
        assert tuple(entry["input_shape"]) == shape
        shape = layer.output_shape(shape)
        assert tuple(entry["output_shape"]) == shape
        assert entry["params"] == sorted(layer.params)
        for name, value in layer.params.items():
            np.testing.assert_array_equal(data[f"layer{i}_{name}"], value)
        for option in ("stride", "padding", "activation", "filter"):
            if hasattr(layer, option):
                value = getattr(layer, option)
                assert entry[option] == (list(value) if isinstance(value, tuple) else value)
    assert shape == (10,) and tuple(layers[-1]["output_shape"]) == (10,)
    # the reference logits the peer must reproduce are our back's on every test latent
    test_x = np.concatenate([data[f"test_x_{k}"] for k in range(len(stream))])
    np.testing.assert_array_equal(data["check_logits"], cut.back.forward(test_x))
    assert data["step_logits"].shape == data["check_logits"].shape
    assert not np.array_equal(data["step_logits"], data["check_logits"])  # the two SGD steps moved it


def test_the_settings_are_the_learn_benchmarks(exported, peer, reference):
    data, meta = exported
    graph, _, cut = reference
    bench = peer._ImportedLearnBenchmark.get()
    h = bench.hyper_for(cut, 0)
    assert meta["lr_op"] == lr_op_index(graph, None) == cut.lr_op
    assert meta["buffer_size"] == bench.BUFFER["digits"] == 500
    assert meta["hyper"] == {"epochs": h.epochs, "learning_rate": h.learning_rate, "momentum": h.momentum,
                             "batch": h.batch, "replay_ratio": h.replay_ratio, "schedule": h.schedule,
                             "epoch_rates": [float(r) for r in h.epoch_rates()]}
    # digits' back at its default LR layer is more than the head: Hyper's defaults, cosine over 8 epochs
    assert (h.epochs, h.learning_rate, h.schedule) == (Hyper().epochs, Hyper().learning_rate, "cosine")
    rates = meta["hyper"]["epoch_rates"]
    assert len(rates) == h.epochs and rates[0] == pytest.approx(h.learning_rate) and rates == sorted(rates)[::-1]
    assert rates[h.epochs // 2] == pytest.approx(h.learning_rate / 2)
    rows = replay_count(h.batch, h.replay_ratio)
    assert meta["replays_per_batch"] == rows == 160 and meta["seeds"] == [0, 1]
    assert data["step_x"].shape == (16 + rows,) + cut.lr_shape and len(data["step_y"]) == 16 + rows
    assert meta["lr_scale"] == pytest.approx(float(cut.lr.scale)) and meta["lr_zero_point"] == cut.lr.zero_point


def _conv_nchw(x, weight, bias, stride, pads, groups):
    """A direct NCHW convolution in numpy (torch.nn.Conv2d's definition) on the converted weights."""
    (top, bottom), (left, right) = pads
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    n, c, h, w = x.shape
    o, per_group, kh, kw = weight.shape
    oh, ow = (h - kh) // stride[0] + 1, (w - kw) // stride[1] + 1
    out = np.zeros((n, o, oh, ow), np.float64)
    outs_per_group = o // groups
    for oc in range(o):
        g = oc // outs_per_group
        for i in range(oh):
            for j in range(ow):
                window = x[:, g * per_group:(g + 1) * per_group,
                           i * stride[0]:i * stride[0] + kh, j * stride[1]:j * stride[1] + kw]
                out[:, oc, i, j] = (window * weight[oc]).sum(axis=(1, 2, 3)) + bias[oc]
    return out


@pytest.mark.parametrize("kind, stride, padding", [("conv", (1, 1), "SAME"), ("conv", (2, 1), "SAME"),
                                                   ("conv", (2, 2), "VALID"), ("depthwise", (1, 1), "SAME"),
                                                   ("depthwise", (2, 2), "SAME")])
def test_the_peers_weight_conversion_to_nchw(peer, kind, stride, padding):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 6, 5, 3)).astype(np.float32)  # NHWC, odd sizes: SAME pads more after
    if kind == "conv":
        w = rng.normal(size=(4, 3, 2, 3)).astype(np.float32)  # (O, KH, KW, I)
        ours = L.Conv2D(w, np.arange(4, dtype=np.float32), stride=stride, padding=padding)
        weight, groups = peer.torch_conv_weight(w), 1
    else:
        w = rng.normal(size=(1, 3, 3, 6)).astype(np.float32)  # (1, KH, KW, I * M), M = 2
        ours = L.DepthwiseConv2D(w, np.arange(6, dtype=np.float32), depth_multiplier=2, stride=stride,
                                 padding=padding)
        weight, groups = peer.torch_depthwise_weight(w), 3
    kh, kw = w.shape[1:3]
    pads = ((peer.same_padding(6, kh, stride[0]), peer.same_padding(5, kw, stride[1])) if padding == "SAME"
            else ((0, 0), (0, 0)))
    got = _conv_nchw(x.transpose(0, 3, 1, 2), weight, ours.params["bias"], stride, pads, groups)
    np.testing.assert_allclose(got.transpose(0, 2, 3, 1), ours.forward(x), rtol=1e-5, atol=1e-5)


def test_same_padding_is_tensorflows(peer):
    for size in range(1, 12):
        for kernel in range(1, 6):
            for stride in range(1, 4):
                before, after = peer.same_padding(size, kernel, stride)
                out, top = L.output_size(size, kernel, stride, "SAME")
                assert before == top and (size + before + after - kernel) // stride + 1 == out


def test_bad_input(peer, tmp_path):
    with pytest.raises(InputError, match="scenario"):
        peer.export("mnist", tmp_path / "x.npz")
    with pytest.raises(InputError, match="seeds"):
        peer.check_seeds(0)
    with pytest.raises(InputError, match="fsdd, digits|digits"):
        peer.check_scenarios(["", " "])


def test_our_rows_are_our_strategies_mini_batches(peer):
    # replay_count rounds half up: 0.5 replays per new sample beside 5 new samples is 3 (round() gives 2)
    h = Hyper(epochs=2, batch=16, replay_ratio=0.5)
    rows = peer.our_rows(37, h)  # batches of 16, 16, 5
    assert rows["steps"] == 6 and rows["replays"] == 2 * (8 + 8 + 3)
    assert rows["rows"] == 2 * (37 + 19) and (rows["smallest_batch"], rows["largest_batch"]) == (8, 24)


def test_the_peers_rate_check(peer):
    # the peer records (epoch, lr) for every training iteration and stops unless epoch e used rates[e]
    rates = [float(r) for r in Hyper(epochs=4).epoch_rates()]
    good = [[(e, r) for e, r in enumerate(rates) for _ in range(3)]] * 2
    assert peer._epoch_rates_used(good, rates) == [rates, rates]
    constant = [[(e, rates[0]) for e in range(4)]]  # a schedule not applied
    with pytest.raises(SystemExit, match="experience 1"):
        peer._epoch_rates_used(constant, rates)
    with pytest.raises(SystemExit):
        peer._epoch_rates_used([[(e, r) for e, r in enumerate(rates[:3])]], rates)  # an epoch missing
