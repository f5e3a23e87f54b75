"""Continual learning with latent replays on the shipped digits model (models/learn/digits0-4_cnn_int8.tflite,
scikit-learn's 8 x 8 digits 0-4): the split's front is the model's own prefix byte for byte and its back
computes the model's logits; latent replay learns digits 5-9 one at a time far better than naive
fine-tuning and close to joint training; the CLI contract; bad input."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import ROOT
import microforge
from microforge.cli import app
from microforge.errors import InputError, TargetError, UnsupportedError
from microforge.graph.builder import GraphBuilder
from microforge.learn import layers as L
from microforge.learn.api import learn
from microforge.learn.scenarios import digits_class_incremental
from microforge.learn.split import split
from microforge.learn.strategies import Hyper, LatentReplay, Naive, run_stream, strategy
from microforge.robust.assess import probe_graph
from microforge.reference.interpreter import run

MODEL = ROOT / "models" / "learn" / "digits0-4_cnn_int8.tflite"
FAST = dict(epochs=4, learning_rate=0.01, batch=16)


@pytest.fixture(scope="module")
def graph():
    return microforge.load(MODEL)


@pytest.fixture(scope="module")
def stream(graph):
    return digits_class_incremental(graph.inputs[0])


def test_the_front_is_the_models_prefix_byte_for_byte(graph, stream):
    cut = split(graph)
    assert cut.lr_op == 0 and cut.lr_shape == (8, 8, 16)  # the third convolution from the end: the first
    x = stream[0].test_x[:20]
    lr_tensor = graph.ops[cut.lr_op].outputs[0]
    probe = probe_graph(graph, [lr_tensor])
    want = np.asarray(run(probe, x)[-1]).reshape((len(x),) + cut.lr_shape)
    np.testing.assert_array_equal(cut.latents(x), want)
    assert [op.type for op in cut.front.ops] == ["CONV_2D"]
    assert len(graph.ops) == 7  # the model itself is untouched


def test_the_back_computes_the_models_logits(graph, stream):
    cut = split(graph)
    assert [type(layer).__name__ for layer in cut.back.layers] == ["DepthwiseConv2D", "Conv2D", "AveragePool2D",
                                                                   "Reshape", "Dense"]
    x = stream[0].test_x
    logits = cut.logits(x)
    probabilities = np.asarray(run(graph, x)).reshape(len(x), -1)
    # the float back on the dequantized weights agrees with the int8 model up to its roundings
    assert np.mean(logits.argmax(1) == probabilities.argmax(1)) >= 0.98
    assert np.mean(logits.argmax(1) == stream[0].test_y) >= 0.95


def test_a_widened_head_keeps_the_old_answers(graph, stream):
    narrow, wide = split(graph), split(graph, classes=10)
    x = stream[0].test_x[:30]
    a, b = narrow.logits(x), wide.logits(x)
    # equal up to the float32 matmul's blocking, which depends on the number of output columns
    np.testing.assert_allclose(b[:, :5], a, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(b[:, 5:], 0)


def test_lr_layer_by_name_or_index(graph):
    by_index = split(graph, lr_layer=2)
    by_name = split(graph, lr_layer=graph.ops[2].outputs[0].name)
    assert by_index.lr_op == by_name.lr_op == 2 and by_index.lr_shape == (8, 8, 32)
    assert [type(layer).__name__ for layer in by_index.back.layers] == ["AveragePool2D", "Reshape", "Dense"]


def test_latent_replay_learns_new_classes_and_naive_forgets(graph, stream):
    results = {}
    for name in ("latent-replay", "naive", "joint"):
        cut = split(graph, classes=10)
        results[name] = run_stream(strategy(name, cut, buffer_size=300, hyper=Hyper(seed=0, **FAST)), stream)
    replay, naive, joint = results["latent-replay"], results["naive"], results["joint"]
    # naive fine-tuning on one class at a time ends up answering only the last class
    assert naive.final_average_accuracy < 0.35 and naive.forgetting > 0.6
    assert replay.final_average_accuracy > naive.final_average_accuracy + 0.3
    assert replay.final_average_accuracy > joint.final_average_accuracy - 0.1
    assert replay.forgetting < 0.2
    # before learning, the new classes' zero logits win only where every old one is negative
    assert max(replay.accuracy_matrix[0][1:]) <= 0.05 and replay.accuracy_matrix[0][0] >= 0.95


def test_training_is_seeded(graph, stream):
    def once():
        cut = split(graph, classes=10)
        return run_stream(LatentReplay(cut, 100, hyper=Hyper(seed=3, epochs=1)), stream[:3])

    a, b = once(), once()
    assert a.losses == b.losses and a.accuracy_matrix == b.accuracy_matrix


def test_replays_at_four_bits_stay_close_to_eight(graph, stream):
    finals = {}
    for bits in (8, 4):
        cut = split(graph, classes=10)
        finals[bits] = run_stream(LatentReplay(cut, 300, lr_bits=bits, hyper=Hyper(seed=0, **FAST)),
                                  stream).final_average_accuracy
    assert abs(finals[8] - finals[4]) < 0.08


def test_learn_reports_the_contract_fields_and_memory(graph, stream):
    result = learn(MODEL, scenario="digits-class-incremental", buffer=200, bits=8, epochs=2)
    assert {"scenario", "strategy", "accuracy_matrix", "final_average_accuracy", "forgetting", "memory",
            "target"} <= set(result)
    assert set(result["memory"]) == {"arena_bytes", "weights_bytes", "gradients_bytes", "optimizer_bytes",
                                     "buffer_bytes", "staging_bytes", "total_ram_bytes", "flash_bytes"}
    m = result["memory"]
    cut = split(graph, classes=10)
    params = sum(a.size for _, _, a in cut.back.params())
    assert m["weights_bytes"] == 4 * params == m["optimizer_bytes"]
    assert m["buffer_bytes"] == 200 * (8 * 8 * 16 + 1)
    assert m["total_ram_bytes"] == sum(v for k, v in m.items() if k not in ("total_ram_bytes", "flash_bytes"))
    assert result["target"] is None and len(result["accuracy_matrix"]) == 6


def test_on_qemu_m4_the_learner_image_plays_the_scenario_as_the_reference():
    # a small step: at 0.1, mini-batches of 4 new images make the trajectory chaotic enough that the
    # kernels' different order of float sums flips a test image by the end
    result = learn(MODEL, scenario="digits-class-incremental", buffer=100, epochs=1, target="qemu-m4",
                   batch=4, replay_ratio=3.0, learning_rate=0.03)
    t = result["target"]
    assert t["accuracy_equal_reference"] and t["losses_equal_reference"] and t["rows_per_update"] == 16
    assert t["accuracy_matrix"] == result["accuracy_matrix"] and t["max_loss_absolute_difference"] < 1e-4
    # each new digit: its training images in mini-batches of 4, one epoch
    stream = digits_class_incremental(microforge.load(MODEL).inputs[0])
    assert t["updates_per_new_class"] == [-(-len(e.train_y) // 4) for e in stream[1:]]
    parts = t["instructions_per_forward"] + t["instructions_per_backward"] + t["instructions_per_optimizer_step"]
    assert 0 < parts < t["instructions_per_update"]
    # a new class: every training image through the front, then every step, at 120 MHz
    assert t["learn_new_class_seconds"] > (len(stream[-1].train_y) * t["instructions_per_staged_sample"]
                                           + t["updates_per_new_class"][-1] * parts) / 120e6 * 0.9
    assert t["ram_bytes"] > result["memory"]["buffer_bytes"]


def test_the_cli_prints_the_contract_json(tmp_path):
    out = CliRunner().invoke(app, ["learn", str(MODEL), "--scenario", "digits-class-incremental", "--buffer", "100",
                                   "--bits", "8", "--strategy", "naive", "--epochs", "1", "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["strategy"] == "naive" and result["memory"]["buffer_bytes"] == 0
    table = CliRunner().invoke(app, ["learn", str(MODEL), "--scenario", "digits-class-incremental", "--buffer", "50",
                                     "--epochs", "1", "--report", str(tmp_path / "report")])
    assert table.exit_code == 0 and "final average accuracy" in table.output
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "latent-replay" in page
    assert json.loads((tmp_path / "report" / "learn.json").read_text())[0]["strategy"] == "latent-replay"


def residual_model():
    """x -> FC 4 (a) -> FC 4 (b) -> ADD(a, b) -> FC 3, int8."""
    from microforge import robust

    rng = np.random.default_rng(0)
    b = GraphBuilder()
    x = b.input("x", (1, 4), np.float32)
    a = b.activation("a", (1, 4), np.float32)
    b.op("FULLY_CONNECTED", [x, b.constant("w1", rng.normal(size=(4, 4)).astype(np.float32)),
                             b.constant("b1", np.zeros(4, np.float32))], [a])
    c = b.activation("c", (1, 4), np.float32)
    b.op("FULLY_CONNECTED", [a, b.constant("w2", rng.normal(size=(4, 4)).astype(np.float32)),
                             b.constant("b2", np.zeros(4, np.float32))], [c])
    s = b.activation("s", (1, 4), np.float32)
    b.op("ADD", [a, c], [s])
    y = b.activation("y", (1, 3), np.float32)
    b.op("FULLY_CONNECTED", [s, b.constant("w3", rng.normal(size=(3, 4)).astype(np.float32)),
                             b.constant("b3", np.zeros(3, np.float32))], [y])
    b.output(y)
    return robust.quantize(b.build(), rng.normal(size=(50, 1, 4)).astype(np.float32), scheme="int8", io="int8").graph


def test_bad_input_names_what_and_where(graph, stream):
    with pytest.raises(InputError, match="no tensor named 'nope'"):
        split(graph, lr_layer="nope")
    with pytest.raises(InputError, match="LR layer 9 is not an op index"):
        split(graph, lr_layer=9)
    with pytest.raises(UnsupportedError, match="must not cut through a branch"):
        split(residual_model(), lr_layer=1)
    cut = split(graph)  # five classes: digits 5-9 are outside its head
    with pytest.raises(InputError, match="labels 5..5 outside the model's 5 classes"):
        Naive(cut).train(stream[1])
    with pytest.raises(InputError, match="do not fit the model input"):
        cut.latents(np.zeros((2, 8, 8), np.int8))
    with pytest.raises(InputError, match="epochs must be an integer >= 1"):
        Hyper(epochs=0)
    with pytest.raises(InputError, match="strategy 'ewc'"):
        strategy("ewc", cut)
    with pytest.raises(InputError, match="capacity must be a number of samples >= 0, not -5"):
        strategy("raw-replay", cut, buffer_size=-5)
    with pytest.raises(InputError, match="9 bits are not one of"):
        strategy("raw-replay", cut, lr_bits=9)
    with pytest.raises(TargetError, match="unknown target 'stm32'"):
        learn(MODEL, scenario="digits-class-incremental", target="stm32")
    with pytest.raises(InputError, match="scenario 'mnist'"):
        learn(MODEL, scenario="mnist")
    # LR op 0: 1,025 B a replay; 100 of them, their staging area and the back do not fit 256 KB
    with pytest.raises(InputError, match=r"over the budget of 262,144 B; a buffer of 31 samples \(1025 B each\) fits"):
        learn(MODEL, scenario="digits-class-incremental", lr_layer=0, buffer=100, ram_budget=262144, stream=stream)
    with pytest.raises(InputError, match=r"needs [\d,]+ B of RAM; qemu-m4 has"):
        learn(MODEL, scenario="digits-class-incremental", lr_layer=0, buffer=5000, target="qemu-m4", stream=stream)
    with pytest.raises(InputError, match="cut at a later LR layer"):
        learn(MODEL, scenario="digits-class-incremental", lr_layer=0, buffer=100, ram_budget=1000, stream=stream)
    assert isinstance(cut.back, L.Sequential)
