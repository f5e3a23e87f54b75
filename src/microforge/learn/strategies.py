"""Continual-learning strategies on a split model, Avalanche-style: `train(experience)`, `eval(stream)`.

Every strategy trains only the float back (split.py) by SGD with momentum on mini-batches; the int8 front
is frozen, so the latents of a sample never change and are computed once (Latents caches them).

- LatentReplay: a replay buffer of latents at `lr_bits` (replay.py). Each mini-batch holds `batch` new
  samples and replay_count(batch, replay_ratio) replays drawn from the buffer; after an experience its latents
  are offered to the buffer. The first experience of a scenario is the one the model was trained on: the
  learner does not train on it, it only fills the buffer (`observe`).
- Naive: the same without a buffer (fine-tuning on the new data alone: the lower bound).
- Joint: every sample seen so far, kept in full, trained on together (the upper bound).
- RawReplay: a buffer of raw model inputs with as many bytes as the latent buffer: fewer samples, each
  through the front again when replayed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from microforge.errors import InputError
from microforge.learn import layers as L
from microforge.learn.metrics import average_accuracy, backward_transfer, forgetting
from microforge.learn.replay import ReplayBuffer, check_capacity, sample_bytes
from microforge.learn.rng import Rng
from microforge.learn.scenarios import Experience
from microforge.learn.split import Split

STRATEGIES = ("latent-replay", "naive", "joint", "raw-replay")


class Latents:
    """The front's int8 latents of each experience's training and test inputs, computed once."""

    def __init__(self, split: Split):
        self.split, self._cache = split, {}

    def __call__(self, experience: Experience, part: str) -> np.ndarray:
        key = (experience.name, part)
        if key not in self._cache:
            self._cache[key] = self.split.latents(getattr(experience, f"{part}_x"))
        return self._cache[key]


SCHEDULES = ("cosine", "constant")


@dataclass
class Hyper:
    """Training hyper-parameters shared by the strategies. The defaults are the best of a sweep on FSDD
    class-incremental at the default LR layer (op 6: depthwise-separable block, pool, head); a back that is
    the head alone wants a far larger step (16 epochs at 3.0 at FSDD's pooled features)."""

    epochs: int = 8
    learning_rate: float = 0.1
    momentum: float = 0.9
    batch: int = 16  # new samples per mini-batch
    replay_ratio: float = 10.0  # replays per new sample in a mini-batch: the old classes outweigh the new one
    seed: int = 0
    schedule: str = "cosine"  # the learning rate over an experience's epochs: cosine decay, or constant

    def __post_init__(self):
        for name in ("epochs", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InputError(f"learn: {name} must be an integer >= 1, not {value!r}")
        for name in ("learning_rate", "momentum", "replay_ratio"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise InputError(f"learn: {name} must be a number >= 0, not {value!r}")
        if self.schedule not in SCHEDULES:
            raise InputError(f"learn: schedule '{self.schedule}' is not one of {', '.join(SCHEDULES)}")

    def epoch_rates(self) -> list[np.float32]:
        """The learning rate of each epoch of an experience: constant, or cosine decay restarting at every
        experience, lr * (1 + cos(pi e / epochs)) / 2 for epoch e, computed in double and rounded once to
        float32 (the C learner bakes these values in)."""
        if self.schedule == "constant":
            return [np.float32(self.learning_rate)] * self.epochs
        lr = float(np.float32(self.learning_rate))
        return [np.float32(lr * (0.5 * (1.0 + math.cos(math.pi * e / self.epochs)))) for e in range(self.epochs)]


def replay_count(new: int, ratio: float) -> int:
    """Replays beside `new` new samples in a mini-batch: new * ratio rounded half up (as the C learner
    computes it; Python's round() would round half to even)."""
    return int(math.floor(new * float(ratio) + 0.5))


class Strategy:
    name = "strategy"

    def __init__(self, split: Split, hyper: Hyper | None = None, latents: Latents | None = None):
        self.split, self.hyper = split, hyper or Hyper()
        self.latents = latents or Latents(split)
        self.rng = Rng(self.hyper.seed)  # stream 0: the shuffles (the buffer draws from stream 1)
        self.optimizer = L.SGD(self.hyper.learning_rate, momentum=self.hyper.momentum)
        self.losses: list[float] = []  # every mini-batch's loss, in order

    def _check_labels(self, experience: Experience) -> None:
        for part in ("train_y", "test_y"):
            y = getattr(experience, part)
            if len(y) and (y.min() < 0 or y.max() >= self.split.classes):
                raise InputError(f"learn: {experience.name} has labels {int(y.min())}..{int(y.max())} outside the "
                                 f"model's {self.split.classes} classes (0..{self.split.classes - 1})")

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One SGD step of the back on real latents x with labels y; the batch's mean loss."""
        loss, grad = L.softmax_cross_entropy(self.split.back.forward(x), y)
        self.split.back.backward(grad, input_grad=False)
        self.optimizer.step(self.split.back)
        self.losses.append(float(loss))
        return float(loss)

    def replays(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """`count` replayed (real latents, labels); none by default."""
        return np.zeros((0,) + self.split.lr_shape, np.float32), np.zeros(0, np.int64)

    def _epochs(self, x: np.ndarray, y: np.ndarray) -> None:
        """hyper.epochs passes over (x real latents, y), shuffled, each mini-batch topped up with replays."""
        h = self.hyper
        for rate in h.epoch_rates():
            self.optimizer.learning_rate = rate
            order = self.rng.permutation(len(y))
            for start in range(0, len(order), h.batch):
                pick = order[start:start + h.batch]
                rx, ry = self.replays(replay_count(len(pick), h.replay_ratio))
                self.step(np.concatenate([x[pick], rx]), np.concatenate([y[pick], ry]))

    def observe(self, experience: Experience) -> None:
        """Remember what the strategy keeps of an experience the model already knows (the pre-training
        one), without training on it."""
        self._check_labels(experience)

    def train(self, experience: Experience) -> None:
        self._check_labels(experience)
        latents = self.latents(experience, "train")
        self._epochs(self.split.dequantize(latents), experience.train_y)
        self.observe(experience)

    def accuracy(self, experience: Experience) -> float:
        logits = self.split.back.forward(self.split.dequantize(self.latents(experience, "test")))
        return float(np.mean(logits.argmax(axis=1) == experience.test_y))

    def eval(self, stream: list[Experience]) -> list[float]:
        """The accuracy on each experience's test set."""
        return [self.accuracy(e) for e in stream]

    def memory(self) -> dict:
        """Bytes the strategy stores besides the model: its buffer (0 by default)."""
        return {"buffer_bytes": 0, "buffer_samples": 0}


class Naive(Strategy):
    name = "naive"


class LatentReplay(Strategy):
    name = "latent-replay"

    def __init__(self, split: Split, buffer_size: int = 1500, lr_bits: int = 8, policy: str = "class-balanced",
                 hyper: Hyper | None = None, latents: Latents | None = None):
        super().__init__(split, hyper, latents)
        self.buffer = ReplayBuffer(buffer_size, split.lr_shape, float(split.lr.scale), split.lr.zero_point,
                                   bits=lr_bits, policy=policy, seed=self.hyper.seed)

    def observe(self, experience):
        super().observe(experience)
        self.buffer.add(self.latents(experience, "train"), experience.train_y)

    def replays(self, count):
        return self.buffer.sample(count)

    def memory(self):
        return {"buffer_bytes": self.buffer.nbytes, "buffer_samples": self.buffer.capacity}


class RawReplay(Strategy):
    """Replays of raw int8 model inputs, at the byte budget of a latent buffer of `buffer_size` samples
    at `lr_bits`."""

    name = "raw-replay"

    def __init__(self, split: Split, buffer_size: int = 1500, lr_bits: int = 8, policy: str = "class-balanced",
                 hyper: Hyper | None = None, latents: Latents | None = None):
        super().__init__(split, hyper, latents)
        latent_bytes = check_capacity(buffer_size) * sample_bytes(split.lr_shape, lr_bits)
        t = split.front.inputs[0]
        if t.dtype != np.int8:
            raise InputError("learn: raw replay stores int8 model inputs; the model's input is "
                             f"{np.dtype(t.dtype).name}")
        shape = tuple(t.shape)
        per_sample = sample_bytes(shape)
        # scale 1, zero point 0: values() gives back the int8 inputs themselves
        self.buffer = ReplayBuffer(latent_bytes // per_sample, shape, 1.0, 0, policy=policy, seed=self.hyper.seed)

    def observe(self, experience):
        super().observe(experience)
        self.buffer.add(experience.train_x, experience.train_y)

    def replays(self, count):
        x, y = self.buffer.sample(count)
        if len(y) == 0:
            return super().replays(0)
        return self.split.dequantize(self.split.latents(x.astype(np.int8))), y

    def memory(self):
        return {"buffer_bytes": self.buffer.nbytes, "buffer_samples": self.buffer.capacity}


class Joint(Strategy):
    """Trains on everything seen so far (without replays: all of it is there)."""

    name = "joint"

    def __init__(self, split: Split, hyper: Hyper | None = None, latents: Latents | None = None):
        super().__init__(split, hyper, latents)
        self.seen: list[Experience] = []

    def observe(self, experience):
        super().observe(experience)
        self.seen.append(experience)

    def train(self, experience):
        self._check_labels(experience)
        everything = self.seen + [experience]
        x = np.concatenate([self.split.dequantize(self.latents(e, "train")) for e in everything])
        y = np.concatenate([e.train_y for e in everything])
        self._epochs(x, y)
        self.observe(experience)

    def replays(self, count):
        return super().replays(0)

    def memory(self):
        stored = sum(len(e.train_y) for e in self.seen)
        return {"buffer_bytes": stored * sample_bytes(self.split.lr_shape),
                "buffer_samples": stored}


def strategy(name: str, split: Split, buffer_size: int = 1500, lr_bits: int = 8, policy: str = "class-balanced",
             hyper: Hyper | None = None, latents: Latents | None = None) -> Strategy:
    if name == "latent-replay":
        return LatentReplay(split, buffer_size, lr_bits, policy, hyper, latents)
    if name == "raw-replay":
        return RawReplay(split, buffer_size, lr_bits, policy, hyper, latents)
    if name == "naive":
        return Naive(split, hyper, latents)
    if name == "joint":
        return Joint(split, hyper, latents)
    raise InputError(f"strategy '{name}' is not one of {', '.join(STRATEGIES)}")


@dataclass
class StreamResult:
    strategy: str
    experiences: list[str]
    accuracy_matrix: list[list[float]]  # [after experience i][on experience j]
    average_accuracy: list[float]  # after each experience, over the test samples seen so far
    forgetting: float
    backward_transfer: float
    losses: list[float] = field(default_factory=list)

    @property
    def final_average_accuracy(self) -> float:
        return self.average_accuracy[-1]


def run_stream(learner: Strategy, stream: list[Experience]) -> StreamResult:
    """The scenario protocol: observe experience 0 (the model already knows it), train on each later
    one, evaluate on every experience's test set after each."""
    if len(stream) < 2:
        raise InputError("learn: a scenario needs a first experience and at least one to learn")
    learner.observe(stream[0])
    matrix = [learner.eval(stream)]
    for experience in stream[1:]:
        learner.train(experience)
        matrix.append(learner.eval(stream))
    counts = [len(e.test_y) for e in stream]
    return StreamResult(learner.name, [e.name for e in stream], matrix, average_accuracy(matrix, counts),
                        forgetting(matrix), backward_transfer(matrix), list(learner.losses))
