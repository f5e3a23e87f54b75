"""The quantized replay buffer (codes, bytes, policies) and the continual-learning metrics."""

import numpy as np
import pytest

from microforge.errors import InputError
from microforge.learn.metrics import average_accuracy, backward_transfer, forgetting
from microforge.learn.replay import ReplayBuffer, decode, encode, sample_bytes

SHAPE = (3, 2)


def latents(n, seed=0):
    return np.random.default_rng(seed).integers(-128, 128, size=(n,) + SHAPE).astype(np.int8)


def test_eight_bit_codes_keep_the_int8_latents_exactly():
    q = np.arange(-128, 128, dtype=np.int8)
    np.testing.assert_array_equal(decode(encode(q, 8), 8), q.astype(np.float32))
    buffer = ReplayBuffer(10, (256,), scale=0.25, zero_point=-3, bits=8)
    buffer.add(q[None], [1])
    np.testing.assert_array_equal(buffer.values()[0], (q.astype(np.float32) + 3) * 0.25)


@pytest.mark.parametrize("bits", [7, 6, 4, 2])
def test_fewer_bits_round_to_the_nearest_level_of_the_same_range(bits):
    q = np.arange(-128, 128, dtype=np.int8)
    codes = encode(q, bits)
    assert codes.max() == (1 << bits) - 1 and codes.min() == 0
    step = 255 / ((1 << bits) - 1)  # in int8 steps
    error = np.abs(decode(codes, bits) - q)
    assert error.max() <= step / 2 + 1e-4
    assert len(np.unique(codes)) == 1 << bits


def test_float_replays_store_the_real_latents():
    buffer = ReplayBuffer(4, SHAPE, scale=0.5, zero_point=10, bits=32)
    x = latents(2)
    buffer.add(x, [0, 1])
    np.testing.assert_array_equal(buffer.values(), (x.astype(np.float32) - 10) * 0.5)
    assert buffer.sample_bytes == 6 * 4 + 1


def test_bytes_count_the_packed_codes_and_a_label():
    assert ReplayBuffer(100, (25, 5, 32), 1.0, 0, bits=8).nbytes == 100 * (4000 + 1)
    assert ReplayBuffer(100, (25, 5, 32), 1.0, 0, bits=4).nbytes == 100 * (2000 + 1)
    assert ReplayBuffer(10, (3,), 1.0, 0, bits=7).sample_bytes == 3 + 1  # 21 bits in 3 bytes
    assert sample_bytes((3,), 7) == 3 + 1 and sample_bytes((25, 5, 32)) == 4000 + 1
    with pytest.raises(InputError, match="9 bits"):
        sample_bytes((3,), 9)


def test_class_balanced_gives_every_class_an_equal_share():
    buffer = ReplayBuffer(12, SHAPE, 1.0, 0, policy="class-balanced", seed=1)
    buffer.add(latents(50), np.repeat([0, 1], 25))
    assert len(buffer) == 12 and np.bincount(buffer.labels).tolist() == [6, 6]
    buffer.add(latents(30, 1), np.full(30, 2))
    assert len(buffer) == 12 and np.bincount(buffer.labels).tolist() == [4, 4, 4]
    # what is kept are samples that were offered, with their own labels
    offered = {latents(50)[i].tobytes(): y for i, y in enumerate(np.repeat([0, 1], 25))}
    offered.update({v.tobytes(): 2 for v in latents(30, 1)})
    for code, label in zip(buffer.data, buffer.labels):
        assert offered[(decode(code, 8)).astype(np.int8).tobytes()] == label


def test_reservoir_keeps_each_sample_with_equal_chance():
    kept = np.zeros(200)
    for seed in range(300):
        buffer = ReplayBuffer(20, (1,), 1.0, 0, policy="reservoir", seed=seed)
        x = (np.arange(200) - 100).astype(np.int8).reshape(200, 1)
        buffer.add(x[:120], np.zeros(120))
        buffer.add(x[120:], np.zeros(80))
        assert len(buffer) == 20 and buffer.seen == 200
        kept[decode(buffer.data[:, 0], 8).astype(np.int64) + 100] += 1
    share = kept / 300  # expected 20 / 200 = 0.1 for every sample
    assert abs(share[:100].mean() - share[100:].mean()) < 0.02
    assert np.all(share > 0.02) and np.all(share < 0.2)


def test_sampling_mixes_with_replacement_and_an_empty_buffer_gives_nothing():
    buffer = ReplayBuffer(5, SHAPE, 1.0, 0)
    x, y = buffer.sample(4)
    assert x.shape == (0,) + SHAPE and len(y) == 0
    buffer.add(latents(3), [0, 1, 2])
    x, y = buffer.sample(10)
    assert x.shape == (10,) + SHAPE and set(y) <= {0, 1, 2}


def test_bad_buffers_and_samples_are_refused():
    with pytest.raises(InputError, match="capacity"):
        ReplayBuffer(-1, SHAPE, 1.0, 0)
    with pytest.raises(InputError, match="9 bits"):
        ReplayBuffer(1, SHAPE, 1.0, 0, bits=9)
    with pytest.raises(InputError, match="policy 'fifo'"):
        ReplayBuffer(1, SHAPE, 1.0, 0, policy="fifo")
    with pytest.raises(InputError, match="stores int8 latents of shape \\[3, 2\\]"):
        ReplayBuffer(1, SHAPE, 1.0, 0).add(np.zeros((2, 4), np.int8), [0, 1])


def test_metrics_on_a_hand_made_matrix():
    a = [[0.9, 0.0, 0.0],
         [0.7, 0.8, 0.0],
         [0.6, 0.5, 1.0]]
    assert average_accuracy(a, [10, 5, 5]) == pytest.approx([0.9, (7 + 4) / 15, (6 + 2.5 + 5) / 20])
    assert forgetting(a) == pytest.approx(((0.9 - 0.6) + (0.8 - 0.5)) / 2)
    assert backward_transfer(a) == pytest.approx(((0.6 - 0.9) + (0.5 - 0.8)) / 2)
    assert forgetting([[0.5]]) == 0.0 and backward_transfer([[0.5]]) == 0.0
