"""`microforge ood fit|evaluate`: detectors fitted on in-distribution data and measured on OOD sets,
in the reference (float detectors) or on an emulated core (the integer detector compiled into the
model's C, onchip.py), with the score's cost there.

Data comes in the EEMBC runner format (bench/dataset.py): one .bin file per sample holding the model's
input bytes, labels in y_labels.csv (the OOD folders' labels are not used).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from microforge.bench.dataset import read_dataset
from microforge.errors import InputError, TargetError, UnsupportedError
from microforge.graph.ir import Graph
from microforge.robust.data import load_model
from microforge.robust.ood import detectors as det
from microforge.robust.ood import onchip
from microforge.robust.ood.metrics import ood_metrics

TARGETS = ("reference", "qemu-m4", "qemu-m7")
COST_SAMPLES = 8  # inferences the cost is measured on (the median of each build's instructions)
NEEDS_OUTLIERS = ("explicit",)


@dataclass
class DataSet:
    name: str
    x: np.ndarray  # (N, *input shape), the model's input dtype
    labels: np.ndarray  # (N,) int64


def runner_set(directory, graph: Graph) -> DataSet:
    """A runner folder read as inputs of `graph` (its only input's bytes per sample)."""
    if len(graph.inputs) != 1:
        raise InputError(f"OOD detection reads models with one input; this one has {len(graph.inputs)}")
    path, t = Path(directory), graph.inputs[0]
    if not path.is_dir():
        raise InputError(f"{path}: no such runner folder")
    samples, labels = read_dataset(path, t.nbytes)
    if not samples:
        raise InputError(f"{path}: the folder holds no samples")
    x = np.stack([np.frombuffer(data, t.dtype).reshape(t.shape) for _, data in samples])
    return DataSet(path.name, x, np.asarray(labels, dtype=np.int64))


def split_for_fitting(data: DataSet) -> tuple[DataSet, DataSet]:
    """(fit, evaluate): every other sample, so a detector is never measured on what it was fitted on."""
    if len(data.x) < 2:
        raise InputError(f"{data.name}: {len(data.x)} sample is too few to fit a detector and measure it")
    return (DataSet(data.name + "[fit]", data.x[0::2], data.labels[0::2]),
            DataSet(data.name, data.x[1::2], data.labels[1::2]))


def detector_names(name: str) -> list[str]:
    return list(det.DETECTORS) if name == "all" else [det.detector(name).name]


def fit_detector(model, name: str, fit: DataSet, outliers: DataSet | None = None, **options) -> det.Detector:
    """A detector of `name` fitted on `fit` (its labels given to the detectors that use them)."""
    found = det.detector(name, **{k: v for k, v in options.items() if k in _accepted(name)})
    extra = {"outliers": outliers.x} if name in NEEDS_OUTLIERS and outliers is not None else {}
    if name in NEEDS_OUTLIERS and not extra:
        raise InputError(f"{name}: outlier exposure needs OOD training data (--outliers DIR)")
    return found.fit(model, fit.x, fit.labels, **extra)


def _accepted(name: str) -> set[str]:
    import inspect

    return set(inspect.signature(det.DETECTORS[name].__init__).parameters) - {"self"}


def _cost(base: dict, chip: dict) -> dict:
    base_instructions = base["instructions_per_inference"]
    return {"instructions": chip["instructions_per_inference"] - base_instructions,
            "flash_bytes": chip["flash_bytes"] - base["flash_bytes"],
            "ram_bytes": chip["ram_bytes"] - base["ram_bytes"],
            "instructions_share": (chip["instructions_per_inference"] - base_instructions) / base_instructions}


class _Target:
    """Runs a detector's integer form on an emulated core: its scores, whether they equal the
    reference's byte for byte, and its cost against the model alone (measured once)."""

    def __init__(self, graph: Graph, target: str, sets: list[DataSet]):
        from microforge.codegen.validate import validate_target

        self.validate, self.target, self.sets = validate_target, target, sets
        self.all_x = np.concatenate([s.x for s in sets])
        self.cost_x = self.all_x[:COST_SAMPLES]
        self.base = validate_target(graph, target, batches=[self.cost_x])

    def run(self, detector: det.Detector) -> tuple[list[np.ndarray], float, bool, dict]:
        """(real scores per set, real threshold, bit-exact, cost)."""
        graph = onchip.chip_graph(detector)
        unit = onchip.chip_score(detector).unit
        report = self.validate(graph, self.target, batches=[self.all_x], keep_outputs=True)
        scores = report["outputs"][-2].reshape(-1).astype(np.float64) * unit
        cost = _cost(self.base, self.validate(graph, self.target, batches=[self.cost_x]))
        bounds = np.cumsum([0] + [len(s.x) for s in self.sets])
        return ([scores[a:b] for a, b in zip(bounds[:-1], bounds[1:])], detector.chip_threshold * unit,
                bool(report["bit_exact"]), cost)


def evaluate(model, id_dir, ood_dirs, detector: str = "energy", target: str = "reference", fit_dir=None,
             outliers_dir=None, **options) -> dict:
    """Fit each detector on the ID data (`fit_dir`, or every other sample of `id_dir`) and measure it on
    the rest of `id_dir` against every folder of `ood_dirs` (see evaluate_sets)."""
    if not ood_dirs:
        raise InputError("give at least one OOD folder (--ood DIR)")
    graph = load_model(model)
    id_set = runner_set(id_dir, graph)
    fit_set, id_set = (runner_set(fit_dir, graph), id_set) if fit_dir else split_for_fitting(id_set)
    result = evaluate_sets(graph, fit_set, id_set, [runner_set(d, graph) for d in ood_dirs], detector, target,
                           runner_set(outliers_dir, graph) if outliers_dir else None, **options)
    return {"model": getattr(model, "name", None) or Path(str(model)).name, **result}


def evaluate_sets(graph: Graph, fit_set: DataSet, id_set: DataSet, ood_sets: list[DataSet], detector: str = "energy",
                  target: str = "reference", outliers: DataSet | None = None, **options) -> dict:
    """Each detector (a name or "all") fitted on `fit_set`, measured on `id_set` against `ood_sets`,
    pooled (the top-level metrics) and one by one (`ood_sets`). On a qemu target the scores are those
    the compiled detector computes there; a detector without an on-chip form is measured in float and
    says so in its `note`."""
    if target not in TARGETS:
        raise TargetError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if not ood_sets:
        raise InputError("give at least one OOD set")
    names = detector_names(detector)
    if detector == "all" and outliers is None:
        names = [n for n in names if n not in NEEDS_OUTLIERS]
    device = _Target(graph, target, [id_set] + ood_sets) if target != "reference" else None
    results = []
    for name in names:
        found = fit_detector(graph, name, fit_set, outliers, **options)
        entry = {"detector": name, "bit_exact_on_target": None,
                 "cost": {"instructions": None, "flash_bytes": None, "ram_bytes": None}}
        scores = [found.score(s.x) for s in [id_set] + ood_sets]
        threshold = found.threshold
        if device is not None:
            try:
                scores, threshold, entry["bit_exact_on_target"], entry["cost"] = device.run(found)
            except UnsupportedError as exc:  # a detector without an integer form is measured in float
                entry["note"] = f"not on the chip: {exc}"
        metrics = ood_metrics(scores[0], np.concatenate(scores[1:]))
        entry.update({k: v for k, v in metrics.to_json().items() if k != "threshold"}, threshold=threshold)
        # the deployed threshold's own rates: ID kept and OOD flagged
        entry["id_kept"] = float(np.mean(scores[0] <= threshold))
        entry["ood_sets"] = [dict(name=s.name, samples=len(s.x), flagged=float(np.mean(v > threshold)),
                                  **{k: m for k, m in ood_metrics(scores[0], v).to_json().items() if k != "threshold"})
                             for s, v in zip(ood_sets, scores[1:])]
        entry["scores"] = {"id": np.asarray(scores[0]).tolist(), "ood": [np.asarray(v).tolist() for v in scores[1:]]}
        results.append(entry)
    return {"target": target, "fit_samples": len(fit_set.x), "id_samples": len(id_set.x),
            "ood_samples": {s.name: len(s.x) for s in ood_sets}, "detectors": results}
