"""The learner's random numbers: one small generator that Python and the generated C compute alike.

The device must draw the same shuffles, replays and buffer evictions as the Python run, so that the
accuracy it reaches is the Python run's. numpy's generators cannot be reproduced in a few lines of C;
xorshift32 (Marsaglia 2003: x ^= x << 13, x ^= x >> 17, x ^= x << 5) can, in 32-bit integers only.

- `next_u32()`: the next state, which is also the output.
- `below(n)`: an integer in [0, n) as (r * n) >> 32 (Lemire's multiply-shift, without the rejection
  step: a bias below n / 2^32, far under what the learner can notice, for one multiply and no division).
- `permutation(n)`: Fisher-Yates from the end, i = n-1 .. 1 swapping i with below(i + 1).
- `choose(n, k)`: k distinct indices of range(n), by the first k steps of a Fisher-Yates shuffle from
  the front, returned sorted (the buffer compacts itself in place by ascending index).

`Rng(seed, stream)` seeds the state from (seed, stream) with a few rounds of mixing, so the strategy's
shuffles (stream 0) and the buffer's draws (stream 1) are independent sequences of one seed; the state
is never 0 (xorshift's fixed point).
"""

from __future__ import annotations

import numpy as np

MASK = 0xFFFFFFFF


def seed_state(seed: int, stream: int = 0) -> int:
    """The first state of stream `stream` of `seed`: nonzero, and the C learner bakes it in."""
    x = (int(seed) * 0x9E3779B1 + int(stream) * 0x85EBCA77 + 0x6A09E667) & MASK
    for _ in range(4):  # multiply and xor-shift rounds, so that nearby seeds start far apart
        x ^= x >> 16
        x = (x * 0x7FEB352D) & MASK
        x ^= x >> 15
    return x or 0x6A09E667


class Rng:
    def __init__(self, seed: int = 0, stream: int = 0):
        self.state = seed_state(seed, stream)

    def next_u32(self) -> int:
        x = self.state
        x ^= (x << 13) & MASK
        x ^= x >> 17
        x ^= (x << 5) & MASK
        self.state = x
        return x

    def below(self, n: int) -> int:
        """An integer in [0, n), n <= 2^32."""
        return (self.next_u32() * int(n)) >> 32

    def integers(self, n: int, count: int) -> np.ndarray:
        """`count` draws of below(n), in order."""
        return np.array([self.below(n) for _ in range(int(count))], np.int64)

    def permutation(self, n: int) -> np.ndarray:
        order = np.arange(int(n), dtype=np.int64)
        for i in range(len(order) - 1, 0, -1):
            j = self.below(i + 1)
            order[i], order[j] = order[j], order[i]
        return order

    def choose(self, n: int, k: int) -> np.ndarray:
        """k distinct indices of range(n) (k <= n), sorted."""
        pool = np.arange(int(n), dtype=np.int64)
        for i in range(int(k)):
            j = i + self.below(n - i)
            pool[i], pool[j] = pool[j], pool[i]
        return np.sort(pool[:k])
