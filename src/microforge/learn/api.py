"""`microforge learn`: a strategy run through a scenario on a split model, with the learner's memory
and, on an emulated core, the generated C learner's cost.

Memory is what the device's learner holds (learn.device.layout: the C learner runs a mini-batch one
sample at a time, adding up the gradients):
- arena_bytes: the front's planned activation arena plus the back's activations, pre-activations and two
  gradient buffers for one sample, float32;
- weights_bytes: the back's trainable parameters, float32, in RAM;
- gradients_bytes: their gradients; optimizer_bytes: the momentum velocities (0 without momentum);
- buffer_bytes: the replay buffer at its bits (replay.py);
- flash_bytes: the front's constants and the back's initial float32 weights (code not counted).
On qemu-m4 or qemu-m7, `target` holds the C learner's instructions per SGD step (a mini-batch of new
samples and replays), checked against the reference's losses on the same steps, and the time to learn
one new class: the steps of one experience (its training samples in mini-batches, all epochs) at the
board's clock, one instruction per cycle (optimistic: flash wait states and FPU stalls are not counted).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np

from microforge.errors import TargetError
from microforge.learn import scenarios
from microforge.learn.device import batch_rows, layout, run_learner
from microforge.learn.split import split as split_model
from microforge.learn.strategies import Hyper, run_stream, strategy as make_strategy
from microforge.robust.data import load_model

TARGETS = ("reference", "qemu-m4", "qemu-m7")
CLOCK_HZ = {"qemu-m4": 120e6, "qemu-m7": 216e6}  # STM32L4R5 (MLPerf Tiny's board) and STM32F746 at full speed
MEASURED_STEPS = 3


def memory(split, learner) -> dict:
    from microforge.plan import plan

    found = layout(split, learner.hyper)
    params_bytes = found.weights_bytes
    front_constants = sum(t.nbytes for t in split.front.tensors if t.is_constant)
    one_sample = found.activations_bytes  # tile of one row
    out = {"arena_bytes": int(plan(split.front).arena_bytes) + one_sample,
           "weights_bytes": params_bytes, "gradients_bytes": found.gradients_bytes,
           "optimizer_bytes": found.optimizer_bytes, "buffer_bytes": int(learner.memory()["buffer_bytes"])}
    out["total_ram_bytes"] = sum(out.values())
    out["flash_bytes"] = front_constants + params_bytes
    return out


def device_cost(split, learner, stream, target: str) -> dict:
    """The C learner on `target`: MEASURED_STEPS mini-batches drawn as the strategy draws them (new samples
    of the last experience and replays), its instructions per step, and its losses against the
    reference's on the same steps."""
    from microforge.learn.strategies import Strategy

    h = learner.hyper
    rows = batch_rows(h)
    new = stream[-1]
    latents = learner.latents(new, "train")
    rng = np.random.default_rng(h.seed)
    replay_x, replay_y = _replayable(learner, stream)
    batches = []
    for _ in range(MEASURED_STEPS):
        pick = rng.integers(0, len(new.train_y), h.batch)
        more = rng.integers(0, len(replay_y), rows - h.batch)
        batches.append((np.concatenate([latents[pick], replay_x[more]]), np.concatenate([new.train_y[pick],
                                                                                         replay_y[more]])))
    reference = Strategy(copy.deepcopy(split), h)  # from the weights the C learner starts from
    run = run_learner(split, h, batches, target, weights_output=False)
    for x, y in batches:
        reference.step(reference.split.dequantize(x), y)
    agree = bool(np.allclose(run.losses, reference.losses, rtol=1e-4))
    steps = h.epochs * math.ceil(len(new.train_y) / h.batch)
    per_step = float(np.median(run.instructions))
    return {"instructions_per_update": int(per_step), "rows_per_update": rows,
            "learn_new_class_seconds": steps * per_step / CLOCK_HZ[target], "updates_per_new_class": steps,
            "clock_hz": CLOCK_HZ[target], "losses_equal_reference": agree, "flash_bytes": run.flash_bytes,
            "ram_bytes": run.ram_bytes, "stack_bytes": run.stack_bytes}


def _replayable(learner, stream):
    """int8 latents and labels of the earlier experiences' training data (what the replays are drawn from)."""
    x = np.concatenate([learner.latents(e, "train") for e in stream[:-1]])
    return x, np.concatenate([e.train_y for e in stream[:-1]])


def learn(model, scenario: str = "fsdd-class-incremental", lr_layer=None, buffer: int = 1500, bits: int = 8,
          strategy: str = "latent-replay", seed: int = 0, target: str = "reference", recordings=None,
          policy: str = "class-balanced", stream=None, **hyper) -> dict:
    """Run `strategy` through `scenario` on `model` (trained on the scenario's first experience) and
    return the contract's result: the accuracy matrix, final average accuracy, forgetting, memory."""
    if target not in TARGETS:
        raise TargetError(f"learn: unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    graph = load_model(model)
    stream = stream if stream is not None else scenarios.scenario(scenario, graph.inputs[0], recordings)
    split = split_model(graph, lr_layer, classes=max(c for e in stream for c in e.classes) + 1)
    learner = make_strategy(strategy, split, buffer, bits, policy, Hyper(seed=seed, **hyper))
    result = run_stream(learner, stream)
    return {"scenario": scenario, "strategy": strategy, "seed": seed,
            "lr_layer": {"op": split.lr_op, "tensor": split.lr.name, "shape": list(split.lr_shape)},
            "bits": bits, "buffer_samples": learner.memory()["buffer_samples"],
            "experiences": result.experiences, "accuracy_matrix": result.accuracy_matrix,
            "average_accuracy": result.average_accuracy, "final_average_accuracy": result.final_average_accuracy,
            "forgetting": result.forgetting, "backward_transfer": result.backward_transfer,
            "memory": memory(split, learner),
            "target": None if target == "reference" else device_cost(split, learner, stream, target),
            "model": Path(str(model)).name if isinstance(model, (str, Path)) else None}
