"""The learner's xorshift32 (learn.rng): its sequence, its draws, and that seeds and streams differ.
That the generated C draws the same numbers is checked by the device learner's tests."""

import numpy as np

from microforge.learn.rng import Rng, seed_state


def _xorshift_numpy(state: int, count: int) -> list[int]:
    """The same generator in numpy's uint32 arithmetic (overflow wraps), written independently."""
    x = np.array([state], np.uint32)
    out = []
    with np.errstate(over="ignore"):
        for _ in range(count):
            x ^= x << np.uint32(13)
            x ^= x >> np.uint32(17)
            x ^= x << np.uint32(5)
            out.append(int(x[0]))
    return out


def test_the_sequence_is_xorshift32():
    rng = Rng(7, stream=3)
    start = rng.state
    assert [rng.next_u32() for _ in range(50)] == _xorshift_numpy(start, 50)


def test_seeds_and_streams_start_apart_and_never_at_zero():
    states = {seed_state(seed, stream) for seed in range(200) for stream in range(3)}
    assert len(states) == 600 and 0 not in states


def test_below_stays_in_range_and_is_uniform_enough():
    rng = Rng(1)
    draws = rng.integers(10, 20000)
    assert draws.min() == 0 and draws.max() == 9
    counts = np.bincount(draws, minlength=10)
    assert np.all(np.abs(counts - 2000) < 200)  # about 4.5 standard deviations
    assert Rng(1).below(1) == 0


def test_permutation_and_choose():
    rng = Rng(3)
    for n in (1, 2, 17, 500):
        assert sorted(rng.permutation(n).tolist()) == list(range(n))
    a, b = Rng(3).permutation(100), Rng(4).permutation(100)
    assert not np.array_equal(a, b)
    picked = Rng(5).choose(300, 40)
    assert len(set(picked.tolist())) == 40 and np.all(np.diff(picked) > 0) and picked.max() < 300
    assert Rng(5).choose(8, 8).tolist() == list(range(8))
