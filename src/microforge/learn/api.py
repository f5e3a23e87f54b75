"""`microforge learn`: a strategy run through a scenario on a split model, with the learner's memory
and, on a device target, the same scenario played on the generated C learner image.

Memory is what the learner image holds (learn.device.layout and learn.onchip.onchip_layout: the C
learner runs a mini-batch one sample at a time, adding up the gradients):
- arena_bytes: the front's planned activation arena plus the back's activations, pre-activations and two
  gradient buffers for one sample, float32;
- weights_bytes: the back's trainable parameters, float32, in RAM;
- gradients_bytes: their gradients; optimizer_bytes: the momentum velocities (0 without momentum);
- buffer_bytes: the replay buffer at its bits (replay.py);
- staging_bytes: latent replay's staging area for a new experience's samples (the largest later one of
  the scenario) with the schedule's index scratch;
- flash_bytes: the front's constants, the back's initial float32 weights and the initial replay buffer
  (code not counted).
On "host", "qemu-m4" or "qemu-m7", `target` holds the scenario played on the learner image (onchip_cost):
its accuracy matrix, whether it equals the Python run's, and on an emulated core the instructions per
SGD step (forward, backward, update) and the time to learn one new class, staging and steps, at the
board's clock, one instruction per cycle (optimistic: flash wait states and FPU stalls are not counted).
device_cost measures a few steps of the bare back learner (learn.device), for LR layers whose buffer
does not fit a board.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np

from microforge.errors import InputError, TargetError
from microforge.learn import scenarios
from microforge.learn.device import batch_rows, layout, run_learner
from microforge.learn.split import split as split_model
from microforge.learn.onchip import onchip_layout, run_onchip
from microforge.learn.strategies import Hyper, LatentReplay, run_stream, strategy as make_strategy
from microforge.robust.data import load_model

TARGETS = ("reference", "host", "qemu-m4", "qemu-m7")
CLOCK_HZ = {"qemu-m4": 120e6, "qemu-m7": 216e6}  # STM32L4R5 (MLPerf Tiny's board) and STM32F746 at full speed
MEASURED_STEPS = 3


def memory(split, learner, stream=None, max_new: int | None = None) -> dict:
    """What the learner holds on the device (see the module docstring); for latent replay, the learner
    image's own layout (learn.onchip), staging `max_new` samples (default: the largest later experience
    of `stream`), its initial buffer filled from stream[0]."""
    from microforge.plan import plan

    found = layout(split, learner.hyper)
    params_bytes = found.weights_bytes
    front_constants = sum(t.nbytes for t in split.front.tensors if t.is_constant)
    out = {"arena_bytes": int(plan(split.front).arena_bytes) + found.activations_bytes,  # a tile of one row
           "weights_bytes": params_bytes, "gradients_bytes": found.gradients_bytes,
           "optimizer_bytes": found.optimizer_bytes, "buffer_bytes": int(learner.memory()["buffer_bytes"]),
           "staging_bytes": 0}
    initial_buffer = 0
    if isinstance(learner, LatentReplay) and stream:
        max_new = max(len(e.train_y) for e in stream[1:]) if max_new is None else max_new
        out["staging_bytes"] = onchip_layout(learner, max_new).staging_bytes
        initial_buffer = min(learner.buffer.capacity, len(stream[0].train_y)) * learner.buffer.sample_bytes
    out["total_ram_bytes"] = sum(out.values())
    out["flash_bytes"] = front_constants + params_bytes + initial_buffer
    return out


def check_ram_budget(ram: dict, budget, learner) -> None:
    """Our error when the learner's RAM (a memory() dict) is over `budget` bytes, saying how large a
    buffer would fit."""
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget <= 0:
        raise InputError(f"learn: the RAM budget must be a number of bytes > 0, not {budget!r}")
    if ram["total_ram_bytes"] <= budget:
        return
    parts = ", ".join(f"{k[:-6]} {ram[k]:,}" for k in ram if k not in ("total_ram_bytes", "flash_bytes") and ram[k])
    message = (f"learn: the learner needs {ram['total_ram_bytes']:,} B of RAM ({parts}), over the budget of "
               f"{int(budget):,} B")
    buffer = getattr(learner, "buffer", None)
    if buffer is not None and buffer.capacity:
        rest = ram["total_ram_bytes"] - ram["buffer_bytes"]
        fits = max(0, (int(budget) - rest) // buffer.sample_bytes)
        message += (f"; a buffer of {fits} samples ({buffer.sample_bytes} B each) fits" if fits else
                    "; even without replays it does not fit: cut at a later LR layer")
    raise InputError(message)


def check_fits_board(ram: dict, target: str) -> None:
    """Our error when a learner image (its memory() dict) cannot fit the emulated board's RAM."""
    if target not in CLOCK_HZ:
        return
    from microforge.codegen.targets.qemu import BOARDS

    room = BOARDS[target].ram_bytes - 64 * 1024  # the firmware's own data and stack beside it
    if ram["total_ram_bytes"] > room:
        raise InputError(f"learn: the learner image needs {ram['total_ram_bytes']:,} B of RAM; {target} has {room:,} B "
                         "for it. Cut at a later LR layer (--lr-layer) or store fewer replays (--buffer)")


def onchip_cost(split, strategy_name: str, buffer: int, bits: int, policy: str, hyper: Hyper, stream, target: str,
                reference=None) -> dict:
    """The whole scenario played on the learner image (learn.onchip) on `target`, against the Python run
    `reference` (a StreamResult of the same configuration): the device's accuracy matrix, whether its
    accuracies and losses equal the reference's, and on an emulated core the instructions of a step
    (forward, backward, update), a prediction and a staged sample, and the time to learn each new class
    (staging its training samples through the front, then every step) at the board's clock."""
    if strategy_name != "latent-replay":
        raise InputError(f"learn: the on-device learner runs latent replay; '{strategy_name}' is a reference "
                         "baseline only (use --target reference)")
    learner = make_strategy(strategy_name, copy.deepcopy(split), buffer, bits, policy, hyper)
    check_fits_board(memory(split, learner, stream), target)
    run = run_onchip(learner, stream, target)
    differences = np.abs(np.subtract(run.losses, reference.losses)) / np.maximum(np.abs(reference.losses), 1e-12)
    out = {"scope": "the whole scenario on the learner image",
           "accuracy_matrix": run.accuracy_matrix, "final_average_accuracy": run.average_accuracy[-1],
           "forgetting": run.forgetting,
           "accuracy_equal_reference": bool(np.allclose(run.accuracy_matrix, reference.accuracy_matrix, atol=1e-9)),
           # float tolerance: the kernels sum in another order than numpy, and over a thousand steps of SGD
           # the difference grows to about 1e-3 of a loss
           "losses_equal_reference": bool(len(run.losses) == len(reference.losses)
                                          and np.allclose(run.losses, reference.losses, rtol=2e-3, atol=1e-4)),
           "max_loss_relative_difference": float(differences.max()) if len(differences) else 0.0,
           # the relative one blows up where a loss nears 0; this one does not
           "max_loss_absolute_difference": float(np.abs(np.subtract(run.losses, reference.losses)).max())
           if len(differences) else 0.0,
           "rows_per_update": batch_rows(hyper), "updates_per_new_class":
               [hyper.epochs * math.ceil(len(e.train_y) / hyper.batch) for e in stream[1:]],
           "instructions_per_update": None, "learn_new_class_seconds": None}
    if target in CLOCK_HZ:
        clock = CLOCK_HZ[target]
        forward, backward, update = (int(np.median([p[k] for p in run.step_parts])) for k in range(3))
        out.update({"instructions_per_update": int(np.median(run.step_instructions)),
                    "instructions_per_forward": forward, "instructions_per_backward": backward,
                    "instructions_per_optimizer_step": update,
                    "instructions_per_prediction": int(np.median(run.predict_instructions)),
                    "instructions_per_staged_sample": int(np.median(run.learn_instructions)),
                    "learn_new_class_seconds": float(np.mean(run.experience_instructions)) / clock,
                    "learn_each_new_class_seconds": [n / clock for n in run.experience_instructions],
                    "clock_hz": clock, "flash_bytes": run.flash_bytes, "ram_bytes": run.ram_bytes,
                    "stack_bytes": run.stack_bytes})
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
    forward, backward, update = (int(np.median([p[k] for p in run.step_parts])) for k in range(3))
    return {"scope": f"{MEASURED_STEPS} steps of the bare back learner", "instructions_per_update": int(per_step),
            "instructions_per_forward": forward, "instructions_per_backward": backward,
            "instructions_per_optimizer_step": update, "rows_per_update": rows,
            "learn_new_class_seconds": steps * per_step / CLOCK_HZ[target], "updates_per_new_class": steps,
            "clock_hz": CLOCK_HZ[target], "losses_equal_reference": agree, "flash_bytes": run.flash_bytes,
            "ram_bytes": run.ram_bytes, "stack_bytes": run.stack_bytes}


def _replayable(learner, stream):
    """int8 latents and labels of the earlier experiences' training data (what the replays are drawn from)."""
    x = np.concatenate([learner.latents(e, "train") for e in stream[:-1]])
    return x, np.concatenate([e.train_y for e in stream[:-1]])


def learn(model, scenario: str = "fsdd-class-incremental", lr_layer=None, buffer: int = 1500, bits: int = 8,
          strategy: str = "latent-replay", seed: int = 0, target: str = "reference", recordings=None,
          policy: str = "class-balanced", stream=None, ram_budget: int | None = None, **hyper) -> dict:
    """Run `strategy` through `scenario` on `model` (trained on the scenario's first experience) and
    return the contract's result: the accuracy matrix, final average accuracy, forgetting, memory.
    With `ram_budget` (bytes), a learner that would not fit is refused before training."""
    if target not in TARGETS:
        raise TargetError(f"learn: unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    graph = load_model(model)
    stream = stream if stream is not None else scenarios.scenario(scenario, graph.inputs[0], recordings)
    split = split_model(graph, lr_layer, classes=max(c for e in stream for c in e.classes) + 1)
    hyper = Hyper(seed=seed, **hyper)
    untrained = copy.deepcopy(split) if target != "reference" else None  # run_stream trains split's back
    learner = make_strategy(strategy, split, buffer, bits, policy, hyper)
    if target != "reference" and strategy != "latent-replay":
        raise InputError(f"learn: the on-device learner runs latent replay; '{strategy}' is a reference baseline "
                         "only (use --target reference)")
    ram = memory(split, learner, stream)
    if ram_budget is not None:
        check_ram_budget(ram, ram_budget, learner)
    if target != "reference":
        check_fits_board(ram, target)
    result = run_stream(learner, stream)
    return {"scenario": scenario, "strategy": strategy, "seed": seed,
            "lr_layer": {"op": split.lr_op, "tensor": split.lr.name, "shape": list(split.lr_shape)},
            "bits": bits, "buffer_samples": learner.memory()["buffer_samples"],
            "experiences": result.experiences, "accuracy_matrix": result.accuracy_matrix,
            "average_accuracy": result.average_accuracy, "final_average_accuracy": result.final_average_accuracy,
            "forgetting": result.forgetting, "backward_transfer": result.backward_transfer,
            "memory": ram,
            "target": None if target == "reference" else onchip_cost(untrained, strategy, buffer, bits, policy, hyper,
                                                                      stream, target, result),
            "model": Path(str(model)).name if isinstance(model, (str, Path)) else None}
