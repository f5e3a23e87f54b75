"""The replay buffer: latent activations of past data, stored at a few bits, mixed into new data.

Latents come from the frozen front as int8 with the LR tensor's per-tensor quantization (scale s, zero
point z). At `bits` b < 8 they are stored as unsigned b-bit codes over the same real range
[s (-128 - z), s (127 - z)]: code = round((q + 128) (2^b - 1) / 255), so b = 8 keeps the int8 values
exactly (code = q + 128) and fewer bits are the same range on a coarser grid. bits=32 stores the float32
latents (the comparison the Ravaglia et al. study makes). A sample costs ceil(size * b / 8) bytes and one
byte for its label.

Policies, both fed one experience at a time:
- "class-balanced": every class seen gets an equal share of the slots, a new class taking its share
  from the others; within a class the kept samples are a uniform random subset of all the samples of
  that class seen so far, whichever experience brought them (each sample draws a random 32-bit key on
  arrival and a class keeps its highest keys, ties to the earliest: Efraimidis-Spirakis sampling with
  equal weights, as Avalanche's class-balanced buffer does), so a class that returns with new instances
  does not wash out its older ones;
- "reservoir": reservoir sampling over the stream of samples (every sample seen has the same chance to
  be in the buffer).
"""

from __future__ import annotations

import math

import numpy as np

from microforge.errors import InputError
from microforge.learn.rng import Rng

POLICIES = ("class-balanced", "reservoir")
BITS = (2, 3, 4, 5, 6, 7, 8, 32)


def encode(latents: np.ndarray, bits: int) -> np.ndarray:
    """int8 latents as stored codes: uint8 codes for bits <= 8; float32 is kept by the caller's scale."""
    q = np.asarray(latents).astype(np.int32) + 128  # 0..255
    levels = (1 << bits) - 1
    return ((q * levels + 127) // 255).astype(np.uint8)  # round half up, in integers


def decode(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes back to the int8 grid's real position, as float32 values of q (q = -128 .. 127, fractional
    for bits < 8): real latent = s (q - z)."""
    levels = (1 << bits) - 1
    return (codes.astype(np.float32) * np.float32(255.0 / levels) - np.float32(128.0)).astype(np.float32)


def check_capacity(capacity) -> int:
    """A buffer size in samples, or our error naming the bad one."""
    if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 0:
        raise InputError(f"replay buffer: capacity must be a number of samples >= 0, not {capacity!r}")
    return int(capacity)


def check_bits(bits) -> int:
    if bits not in BITS:
        raise InputError(f"replay buffer: {bits} bits are not one of {', '.join(map(str, BITS))}")
    return bits


def sample_bytes(shape: tuple, bits: int = 8) -> int:
    """Bytes one stored sample of `shape` takes at `bits`: its values packed, and a one-byte label."""
    return math.ceil(int(np.prod(shape)) * check_bits(bits) / 8) + 1


class ReplayBuffer:
    """A fixed number of latent samples with their labels, stored at `bits`."""

    def __init__(self, capacity: int, sample_shape: tuple, scale: float, zero_point: int, bits: int = 8,
                 policy: str = "class-balanced", seed: int = 0):
        capacity, bits = check_capacity(capacity), check_bits(bits)
        if policy not in POLICIES:
            raise InputError(f"replay buffer: policy '{policy}' is not one of {', '.join(POLICIES)}")
        self.capacity, self.shape, self.bits, self.policy = capacity, tuple(sample_shape), bits, policy
        self.scale, self.zero_point = np.float32(scale), int(zero_point)
        self.rng = Rng(seed, stream=1)  # the C learner draws the same numbers (learn.rng)
        dtype = np.float32 if bits == 32 else np.uint8
        self.data = np.zeros((0,) + self.shape, dtype)
        self.labels = np.zeros(0, np.int64)
        self.keys = np.zeros(0, np.int64)  # class-balanced: each stored sample's random key
        self.seen = 0  # samples offered so far (the reservoir's count)

    @property
    def sample_bytes(self) -> int:
        """Bytes one stored sample takes: its latents at `bits` (packed) and a one-byte label."""
        return sample_bytes(self.shape, self.bits)

    @property
    def nbytes(self) -> int:
        """The buffer's size when full, as the device allocates it."""
        return self.capacity * self.sample_bytes

    def __len__(self) -> int:
        return len(self.labels)

    def _stored(self, latents: np.ndarray) -> np.ndarray:
        if self.bits == 32:
            return ((latents.astype(np.float32) - self.zero_point) * self.scale).astype(np.float32)
        return encode(latents, self.bits)

    def values(self, index=slice(None)) -> np.ndarray:
        """Real latents (float32) of the stored samples at `index`: what the back trains on."""
        stored = self.data[index]
        if self.bits == 32:
            return stored.copy()
        return ((decode(stored, self.bits) - np.float32(self.zero_point)) * self.scale).astype(np.float32)

    def add(self, latents: np.ndarray, labels: np.ndarray) -> None:
        """Offer one experience's int8 latents (N, *shape) with their labels to the buffer."""
        latents, labels = np.asarray(latents), np.asarray(labels, np.int64).reshape(-1)
        if latents.dtype != np.int8 or tuple(latents.shape[1:]) != self.shape or len(latents) != len(labels):
            raise InputError(f"replay buffer: got latents {list(latents.shape)} ({latents.dtype}) and "
                             f"{len(labels)} labels; it stores int8 latents of shape {list(self.shape)}, one "
                             "label each")
        if self.capacity == 0 or len(labels) == 0:
            self.seen += len(labels)
            return
        if self.policy == "reservoir":
            self._reservoir(latents, labels)
        else:
            self._balanced(latents, labels)

    def _reservoir(self, latents, labels) -> None:
        stored = self._stored(latents)
        fill = min(self.capacity - len(self), len(labels))  # first fill the free slots
        self.data = np.concatenate([self.data, stored[:fill]])
        self.labels = np.concatenate([self.labels, labels[:fill]])
        self.seen += fill
        for x, y in zip(stored[fill:], labels[fill:]):
            self.seen += 1
            slot = self.rng.below(self.seen)  # sample number `seen` is kept with chance capacity / seen
            if slot < self.capacity:
                self.data[slot], self.labels[slot] = x, y

    def _balanced(self, latents, labels) -> None:
        self.seen += len(labels)
        data = np.concatenate([self.data, self._stored(latents)])
        all_labels = np.concatenate([self.labels, labels])
        keys = np.concatenate([self.keys, [self.rng.next_u32() for _ in range(len(labels))]]).astype(np.int64)
        classes = np.unique(all_labels)
        share = self.capacity // len(classes)
        spare = self.capacity - share * len(classes)  # the first classes get one more slot
        keep = []
        for k, c in enumerate(classes):
            members = np.flatnonzero(all_labels == c)
            quota = share + (1 if k < spare else 0)
            # the highest keys, ties to the lowest index (lexsort sorts by its last key first)
            keep.append(members if len(members) <= quota else members[np.lexsort((members, -keys[members]))[:quota]])
        kept = np.sort(np.concatenate(keep))  # ascending: the device compacts in place, row kept[i] to row i
        self.data, self.labels, self.keys = data[kept], all_labels[kept], keys[kept]

    def sample(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """`count` stored samples drawn uniformly with replacement: (real latents, labels)."""
        if len(self) == 0 or count <= 0:
            return np.zeros((0,) + self.shape, np.float32), np.zeros(0, np.int64)
        index = self.rng.integers(len(self), count)
        return self.values(index), self.labels[index]
