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
    np.testing.assert_allclose(device.losses, reference.losses, rtol=1e-4)
    trained = np.concatenate([a.reshape(-1) for _, _, a in learner.split.back.params()])
    np.testing.assert_allclose(device.weights, trained, rtol=1e-3, atol=1e-5)
    assert reference.accuracy_matrix[-1][-1] > 0.5  # it did learn the newest digit


def test_tiles_of_rows_change_nothing_but_the_order_of_sums(cut, stream):
    reference, _, device = _both(cut, stream, tile_rows=5)  # 8 + 16 rows a step: a partial last tile
    assert device.accuracy_matrix == reference.accuracy_matrix
    np.testing.assert_allclose(device.losses, reference.losses, rtol=1e-4)


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
        return [np.array([kind, label], "<i4").tobytes(), x]

    replies = _run_host(folder, [request(STEP), request(LEARN, 10), request(LEARN, -1), request(LEARN, 5),
                                 request(LEARN, 5), request(LEARN, 5), request(7), request(STEP), request(LEARN, 5),
                                 request(PREDICT)], sanitize=True)
    status = [int(np.frombuffer(r[0], "<i4", 1)[0]) for r in replies]
    # nothing staged; label 10 and -1 outside 0..9; two staged; the third does not fit; an unknown request;
    # a step of the schedule starts, so staging more waits until it is done; a prediction
    assert status == [-3, -1, -1, 0, 0, -2, -5, 1, -4, 0]
    assert np.isfinite(np.frombuffer(replies[-1][1], "<f4")).all()


def test_requests_that_fail_on_the_device_are_our_error(cut, stream):
    with pytest.raises(TargetError, match="staging area is full"):
        run_onchip(LatentReplay(copy.deepcopy(cut), 20, hyper=HYPER), stream, "host", max_new=5)
