"""The learner image (learn.onchip): the front, the back and the replay buffer in one C program, playing a
scenario as the Python strategy does (same random numbers), under the sanitizers on the host; its
refusals of bad requests. The qemu-m4 run is in test_learn.py (through learn())."""

import copy

import numpy as np
import pytest

import microforge
from microforge.errors import InputError, TargetError
from microforge.learn.onchip import LEARN, PREDICT, STEP, _run_host, generate_onchip_learner, run_onchip
from microforge.learn.scenarios import digits_class_incremental
from microforge.learn.split import split
from microforge.learn.strategies import Hyper, LatentReplay, run_stream

from conftest import ROOT

MODEL = ROOT / "models" / "learn" / "digits0-4_cnn_int8.tflite"
HYPER = Hyper(epochs=2, batch=8, replay_ratio=2.0, seed=3)


@pytest.fixture(scope="module")
def cut():
    return split(microforge.load(MODEL), 3, classes=10)  # LR: the pooled 2x2x32 latents


@pytest.fixture(scope="module")
def stream(cut):
    return digits_class_incremental(cut.front.inputs[0])[:3]


def _both(cut, stream, policy="class-balanced", buffer=60, tile_rows=1):
    reference_learner = LatentReplay(copy.deepcopy(cut), buffer, policy=policy, hyper=HYPER)
    reference = run_stream(reference_learner, stream)
    device = run_onchip(LatentReplay(copy.deepcopy(cut), buffer, policy=policy, hyper=HYPER), stream, "host",
                        tile_rows=tile_rows, weights_output=True, sanitize=True)
    return reference, reference_learner, device


@pytest.mark.parametrize("policy", ["class-balanced", "reservoir"])
def test_the_image_learns_as_the_python_strategy_under_the_sanitizers(cut, stream, policy):
    reference, learner, device = _both(cut, stream, policy)
    assert device.accuracy_matrix == reference.accuracy_matrix
    assert len(device.losses) == len(reference.losses) == sum(2 * -(-len(e.train_y) // 8) for e in stream[1:])
    np.testing.assert_allclose(device.losses, reference.losses, rtol=1e-3)
    trained = np.concatenate([a.reshape(-1) for _, _, a in learner.split.back.params()])
    np.testing.assert_allclose(device.weights, trained, rtol=1e-3, atol=5e-5)
    assert reference.accuracy_matrix[-1][-1] > 0.5  # it did learn the newest digit


def test_tiles_of_rows_change_nothing_but_the_order_of_sums(cut, stream):
    reference, _, device = _both(cut, stream, tile_rows=5)  # 8 + 16 rows a step: a partial last tile
    assert device.accuracy_matrix == reference.accuracy_matrix
    np.testing.assert_allclose(device.losses, reference.losses, rtol=1e-3)


def test_only_eight_bit_latent_replay_goes_on_the_device(cut, stream, tmp_path):
    with pytest.raises(InputError, match="4-bit"):
        generate_onchip_learner(LatentReplay(copy.deepcopy(cut), 10, lr_bits=4), tmp_path, 10)
    with pytest.raises(InputError, match="max_new"):
        generate_onchip_learner(LatentReplay(copy.deepcopy(cut), 10), tmp_path, 0)
    with pytest.raises(InputError, match="latent-replay"):
        from microforge.learn.strategies import Naive

        generate_onchip_learner(Naive(copy.deepcopy(cut)), tmp_path, 10)


def test_the_image_refuses_bad_requests_and_a_full_staging_area(cut, stream, tmp_path):
    learner = LatentReplay(copy.deepcopy(cut), 20, hyper=HYPER)
    learner.observe(stream[0])
    folder = generate_onchip_learner(learner, tmp_path / "image", max_new=2)
    x = stream[1].train_x[0].tobytes()

    def request(kind, label=0):
        return [x, np.array([kind, label], "<i4").tobytes()]

    replies = _run_host(folder, [request(STEP), request(LEARN, 10), request(LEARN, -1), request(LEARN, 5),
                                 request(LEARN, 5), request(LEARN, 5), request(7), request(STEP), request(LEARN, 5),
                                 request(PREDICT)], sanitize=True)
    status = [int(np.frombuffer(r[1], "<i4", 1)[0]) for r in replies]
    # nothing staged; label 10 and -1 outside 0..9; two staged; the third does not fit; an unknown request;
    # a step of the schedule starts, so staging more waits until it is done; a prediction
    assert status == [-3, -1, -1, 0, 0, -2, -5, 1, -4, 0]
    assert np.isfinite(np.frombuffer(replies[-1][0], "<f4")).all()


def test_requests_that_fail_on_the_device_are_our_error(cut, stream):
    with pytest.raises(TargetError, match="staging area is full"):
        run_onchip(LatentReplay(copy.deepcopy(cut), 20, hyper=HYPER), stream, "host", max_new=5)


def test_the_dut_firmware_streams_a_new_class_in_and_learns_it(cut, stream, tmp_path):
    from microforge.bench.dut import qemu_dut
    from microforge.errors import DeviceError
    from microforge.learn.scenarios import Experience

    hyper = Hyper(epochs=1, batch=8, replay_ratio=2.0, seed=1)
    learner = LatentReplay(copy.deepcopy(cut), 30, hyper=hyper)
    learner.observe(stream[0])
    folder = generate_onchip_learner(learner, tmp_path / "image", max_new=20, target="cortex-m4")
    new = stream[1]
    x, y = new.train_x[:20], new.train_y[:20]
    probe = new.test_x[:1]
    with qemu_dut(folder, "qemu-m4", timeout_s=60, build_dir=tmp_path / "build") as dut:
        assert dut.profile()["mf-inputs"] == str(probe[0].nbytes)  # infer takes one model input
        dut.load(probe[0])
        before = dut.infer(1).results
        assert [dut.learn(sample, int(label)) for sample, label in zip(x, y)] == list(range(1, 21))
        with pytest.raises(DeviceError, match=r"Staging area full: 20 samples"):
            dut.learn(x[0], 5)
        with pytest.raises(DeviceError, match=r"needs a label 0\.\.9"):
            dut.command("mf-learn 10")
        dut.command("db load 10")
        dut.command("db " + "00" * 10)
        with pytest.raises(DeviceError, match=r"Sample has 10 bytes; the model takes 64"):
            dut.command("mf-learn 5")
        steps, elapsed_us = dut.learn_run()
        assert steps == 3 and elapsed_us > 0  # 20 samples in mini-batches of 8, one epoch
        with pytest.raises(DeviceError, match="Nothing staged"):
            dut.learn_run()
        dut.load(probe[0])
        after = dut.infer(1).results
    # the Python strategy, taught the same samples, gives the same logits (printed to three decimals)
    expected_before = learner.split.back.forward(learner.split.dequantize(learner.split.latents(probe)))[0]
    learner.train(Experience("new", (5,), x, y, probe, new.test_y[:1]))
    expected_after = learner.split.back.forward(learner.split.dequantize(learner.split.latents(probe)))[0]
    np.testing.assert_allclose(before, expected_before, atol=1.5e-3)
    np.testing.assert_allclose(after, expected_after, atol=1.5e-3)
    assert np.abs(np.subtract(after, before)).max() > 0.01  # it learned something


def test_generate_learn_writes_the_image_from_a_config(tmp_path):
    import json

    from typer.testing import CliRunner

    from microforge.cli import app

    config = tmp_path / "learn.json"
    config.write_text(json.dumps({"scenario": "digits-class-incremental", "lr_layer": "3", "buffer": 40,
                                  "max_new": 50, "epochs": 1}))
    out = CliRunner().invoke(app, ["generate", str(MODEL), "-o", str(tmp_path / "image"), "--learn", str(config)])
    assert out.exit_code == 0, out.output
    assert "40 of 40 replays in the initial buffer" in out.output and "(50 new samples)" in out.output
    header = (tmp_path / "image" / "model.h").read_text()
    assert "#define MF_LEARN_MAX_NEW 50" in header and "#define MF_LEARN_CAPACITY 40" in header
    assert (tmp_path / "image" / "front.c").is_file() and not (tmp_path / "image" / "CMakeLists.txt").exists()
    config.write_text(json.dumps({"scenario": "digits-class-incremental", "bufer": 40}))
    bad = CliRunner().invoke(app, ["generate", str(MODEL), "-o", str(tmp_path / "bad"), "--learn", str(config)])
    assert bad.exit_code == 2 and "unknown keys bufer" in bad.output
    config.write_text(json.dumps({"scenario": "digits-class-incremental", "lr_layer": 3, "policy": "fifo"}))
    bad = CliRunner().invoke(app, ["generate", str(MODEL), "-o", str(tmp_path / "bad"), "--learn", str(config)])
    assert bad.exit_code == 2 and "policy 'fifo'" in bad.output
