"""`microforge learn`: a strategy run through a scenario on a split model, with the learner's memory.

Memory is what the device's learner would hold, counted from the split and the hyper-parameters (the
reference target; the C learner's own measurement replaces it on a device target):
- arena_bytes: the front's planned activation arena (one sample at a time) plus the back's forward
  activations for one mini-batch (new samples and replays), float32, which the backward pass reads;
- weights_bytes: the back's trainable parameters, float32, in RAM;
- gradients_bytes: their gradients plus the two largest activation gradients of a mini-batch (the
  backward pass holds one layer's output gradient and input gradient at a time);
- optimizer_bytes: the momentum velocities (one per parameter; 0 without momentum);
- buffer_bytes: the replay buffer at its bits (replay.py);
- flash_bytes: the front's constants and the back's initial float32 weights (code not counted).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from microforge.errors import InputError
from microforge.learn import scenarios
from microforge.learn.split import split as split_model
from microforge.learn.strategies import Hyper, run_stream, strategy as make_strategy
from microforge.robust.data import load_model

FLOAT_BYTES = 4


def memory(split, learner) -> dict:
    from microforge.plan import plan

    h = learner.hyper
    rows = h.batch + int(round(h.batch * h.replay_ratio))
    params = sum(a.size for _, _, a in split.back.params())
    shape, activations = split.lr_shape, []
    for layer in split.back.layers:
        shape = layer.output_shape(shape)
        activations.append(int(np.prod(shape)))
    back_arena = (int(np.prod(split.lr_shape)) + sum(activations)) * rows * FLOAT_BYTES
    largest = sorted([int(np.prod(split.lr_shape))] + activations)[-2:]
    front_constants = sum(t.nbytes for t in split.front.tensors if t.is_constant)
    out = {"arena_bytes": int(plan(split.front).arena_bytes) + back_arena,
           "weights_bytes": params * FLOAT_BYTES,
           "gradients_bytes": (params + sum(largest) * rows) * FLOAT_BYTES,
           "optimizer_bytes": params * FLOAT_BYTES if h.momentum > 0 else 0,
           "buffer_bytes": int(learner.memory()["buffer_bytes"])}
    out["total_ram_bytes"] = sum(out.values())
    out["flash_bytes"] = front_constants + params * FLOAT_BYTES
    return out


def learn(model, scenario: str = "fsdd-class-incremental", lr_layer=None, buffer: int = 1500, bits: int = 8,
          strategy: str = "latent-replay", seed: int = 0, target: str = "reference", recordings=None,
          policy: str = "class-balanced", stream=None, **hyper) -> dict:
    """Run `strategy` through `scenario` on `model` (trained on the scenario's first experience) and
    return the contract's result: the accuracy matrix, final average accuracy, forgetting, memory."""
    if target != "reference":
        raise InputError(f"learn: target '{target}' is not available yet; the learner runs on the reference "
                         "(the generated C learner is still to come)")
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
            "memory": memory(split, learner), "target": None,
            "model": Path(str(model)).name if isinstance(model, (str, Path)) else None}
