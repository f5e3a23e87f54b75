"""Measure a family: each member's accuracy on a dataset, and on each emulated core its exact instructions
in the one family image (checked byte for byte against the reference interpreter), the image's flash beside
the widest member alone and all members as separate models, and the cost of a switch.

Accuracy comes from the reference interpreter over the whole dataset: the image's outputs equal it byte for
byte, which is checked on the samples run on each core (`core_samples`, the first of the dataset).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from microforge.bench.dataset import read_dataset
from microforge.codegen.emit import generate
from microforge.codegen.targets.qemu import QemuResult, run_on_qemu
from microforge.dynamic.family import Family
from microforge.dynamic.image import generate_family
from microforge.dynamic.points import TARGET_CORES, MemberMeasurement
from microforge.errors import InputError
from microforge.reference.interpreter import run

CFLAGS = ("-O2",)


@dataclass
class FamilyCost:
    """The family image's flash on one core beside the alternatives, and its switch cost (bytes and
    executed instructions)."""

    core: str
    flash_bytes: int  # the family image's model code + constants
    largest_alone_flash_bytes: int  # the widest member generated on its own (its fastest kernels)
    separate_flash_bytes: int  # every member generated on its own, summed
    arena_bytes: int  # the family's one arena
    largest_alone_arena_bytes: int
    switch_instructions: int  # one mf_set_operating_point
    alone_instructions: list[int] = field(default_factory=list)  # each member alone, per inference

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class FamilyMeasurement:
    measurements: list[MemberMeasurement]
    costs: dict[str, FamilyCost]  # core -> its costs
    samples: int  # dataset samples behind each accuracy


def dataset_arrays(family: Family, dataset) -> tuple[np.ndarray, np.ndarray]:
    """A runner dataset for the family's input as (N, *input shape) samples and (N,) labels."""
    x = family.graphs[-1].inputs[0]
    samples, labels = read_dataset(dataset, x.nbytes)
    batch = np.stack([np.frombuffer(data, x.dtype).reshape(x.shape) for _, data in samples])
    return batch, np.asarray(labels)


def width_outputs(family: Family, batch: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    """Each member's outputs (N, classes) on the batch by the reference interpreter."""
    outputs = []
    for k, graph in enumerate(family.graphs):
        scores = run(graph, batch).reshape(len(batch), -1)
        if scores.shape[1] <= labels.max():
            raise InputError(f"{family.where(k)}: {scores.shape[1]} outputs cannot score labels up to {labels.max()}")
        outputs.append(scores)
    return outputs


def _run(directory: Path, board: str, inputs, defines=()) -> QemuResult:
    return run_on_qemu(directory, board, [x.tobytes() for x in inputs], cflags=[*CFLAGS, *defines], stack_samples=1,
                       timeout_s=600.0)


def measure_family(family: Family, targets, dataset, core_samples: int = 8, progress=None) -> FamilyMeasurement:
    """Accuracy per member on `dataset` (a runner folder) and, per target ("qemu-m4", "qemu-m7"), the
    family image's instructions per member on `core_samples` samples, its bit-exactness, flash and switch
    cost. `progress(message)` is told what runs."""
    for target in targets:
        if target not in TARGET_CORES:
            raise InputError(f"target {target!r}: choose from {', '.join(TARGET_CORES)}")
    say = progress or (lambda message: None)
    batch, labels = dataset_arrays(family, dataset)
    say(f"accuracy of {len(family.graphs)} members on {len(batch)} samples (reference interpreter)")
    outputs = width_outputs(family, batch, labels)
    accuracies = [float(np.mean(scores.argmax(axis=1) == labels)) for scores in outputs]
    probe = batch[:max(1, core_samples)]
    expected = [scores[:len(probe)] for scores in outputs]
    measurements, costs = [], {}
    for target in targets:
        core = TARGET_CORES[target]
        with tempfile.TemporaryDirectory(prefix="microforge-family-") as tmp:
            image = generate_family(family, Path(tmp) / "family", target=core)
            results = []
            for k, (width, depth) in enumerate(zip(family.widths, family.depths)):
                say(f"{target}: {family.label(k)} in the family image")
                result = _run(image.directory, target, probe, [f"-DMF_DEFAULT_POINT={k}"])
                got = np.stack([np.frombuffer(out, expected[k].dtype) for out in result.outputs])
                measurements.append(MemberMeasurement(width, core, accuracies[k], int(max(result.instructions)),
                                                      bool(np.array_equal(got, expected[k])), depth))
                results.append(result)
            say(f"{target}: the cost of a switch")
            switching = _run(image.directory, target, probe[:1], ["-DMF_DEFAULT_POINT=0", "-DMF_SWITCH_EVERY_INVOKE"])
            alone_flash, alone_instructions, alone_arena = [], [], 0
            for k, graph in enumerate(family.graphs):
                say(f"{target}: {family.label(k)} alone")
                alone = generate(graph, Path(tmp) / f"alone{k}", target=core)
                result = _run(alone.directory, target, probe[:1])
                alone_flash.append(result.model_flash_bytes)
                alone_instructions.append(int(result.instructions[0]))
                alone_arena = alone.arena_bytes
            costs[core] = FamilyCost(core, results[0].model_flash_bytes, alone_flash[-1], sum(alone_flash),
                                     image.arena_bytes, alone_arena,
                                     int(switching.instructions[0]) - int(results[0].instructions[0]),
                                     alone_instructions)
    return FamilyMeasurement(measurements, costs, len(batch))


def points_document(family: Family, targets, dataset, progress=None) -> tuple[dict, list]:
    """`microforge dynamic points --json`: {"family": {flash of the image beside the widest alone and the
    members as separate models, on the first target's core; "per_core": every core's FamilyCost},
    "points": [every (member x core x clock) operating point]}, and the OperatingPoints themselves."""
    from microforge.dynamic.points import operating_points

    measured = measure_family(family, targets, dataset, progress=progress)
    points = operating_points(measured.measurements)
    first = measured.costs[TARGET_CORES[targets[0]]]
    document = {
        "family": {"name": family.name, "widths": family.widths, "depths": family.depths,
                   "flash_bytes": first.flash_bytes,
                   "largest_alone_flash_bytes": first.largest_alone_flash_bytes,
                   "separate_flash_bytes": first.separate_flash_bytes, "dataset_samples": measured.samples,
                   "per_core": {core: cost.to_json() for core, cost in measured.costs.items()}},
        "points": [p.to_json() for p in points],
    }
    return document, points


def read_points_document(path) -> tuple[dict, list]:
    """A document written by `points --save` (or shipped beside a family as points.json)."""
    import json

    from microforge.dynamic.points import OperatingPoint

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no operating points (measure them with `microforge dynamic points FAMILY "
                         f"--target qemu-m4 --dataset DIR --save {path.name}`)")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(document, dict) or not isinstance(document.get("points"), list) or not all(
            isinstance(p, dict) for p in document["points"]):
        raise InputError(f"{path}: expected {{\"family\": {{...}}, \"points\": [{{...}}, ...]}}")
    return document, [OperatingPoint.from_json(p) for p in document["points"]]
