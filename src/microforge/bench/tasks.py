"""The four MLPerf Tiny tasks: what a compatible model looks like, how a runner dataset becomes model
inputs, and how outputs become the task's metric.

| task | reference model (models/mlperf_tiny)       | sample file (.bin)                    | metric        |
|------|---------------------------------------------|---------------------------------------|---------------|
| kws  | kws_ref_model_int8.tflite (DS-CNN)          | the int8 input tensor, 49x10 MFCCs    | top-1         |
| vww  | vww_96_int8.tflite (MobileNetV1 0.25)       | the int8 input tensor, 96x96x3 pixels | top-1         |
| ic   | ic_resnet8_pretrainedResnet_quant_int8.tflite | the int8 input tensor, 32x32x3      | top-1         |
| ad   | ad01_int8.tflite (FC autoencoder)           | float32 log-mel clip, 200 x 128       | ROC AUC       |

Classification samples are the raw bytes of the model's input tensor, as the EEMBC runner sends them.
An anomaly-detection sample is a whole clip (the runner's `*_hist_librosa.bin`): it is cut into windows
of 5 frames (640 values, hop one frame), each window quantised with the model's input scale and zero
point and run once; the clip's score is the mean squared error between the float windows and the
dequantised reconstructions over all windows (the reference's score). Labels: 0 normal, 1 anomalous.

Any model whose input and output fit the task's shapes can be benchmarked ("open division"): a KWS
model with another number of classes, a VWW model at another resolution, an autoencoder over another
number of frames. `check_model` says exactly what does not fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from microforge.bench.dataset import read_dataset, read_labels
from microforge.bench.features import AD_HIST_START, AD_HIST_STOP, AD_MEL_BINS, ad_windows, quantize_input
from microforge.bench.metrics import ad_score, roc_auc, top1_accuracy
from microforge.errors import InputError
from microforge.graph.ir import Graph, Tensor

REFERENCE_MODELS_DIR = Path(__file__).resolve().parents[3] / "models" / "mlperf_tiny"


@dataclass(frozen=True)
class Task:
    name: str
    title: str
    metric: str  # "accuracy" (top-1) or "auc"
    reference_model: str  # file name in models/mlperf_tiny

    @property
    def reference_model_path(self) -> Path:
        return REFERENCE_MODELS_DIR / self.reference_model


TASKS: dict[str, Task] = {
    "kws": Task("kws", "Keyword spotting", "accuracy", "kws_ref_model_int8.tflite"),
    "vww": Task("vww", "Visual wake words", "accuracy", "vww_96_int8.tflite"),
    "ic": Task("ic", "Image classification", "accuracy", "ic_resnet8_pretrainedResnet_quant_int8.tflite"),
    "ad": Task("ad", "Anomaly detection", "auc", "ad01_int8.tflite"),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise InputError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


@dataclass
class Sample:
    """One dataset entry: the model inputs it takes (a batch: one row for classification, one per
    window for anomaly detection) and, for anomaly detection, the float windows the score compares with."""

    name: str
    label: int
    batch: np.ndarray  # (inferences, *input tensor shape), the input's dtype
    reference: np.ndarray | None = field(default=None, repr=False)  # AD: float windows (inferences, features)


def task_outputs(graph: Graph) -> list[Tensor]:
    """The model's own outputs: without the score and flag of an on-chip OOD detector (robust/ood/onchip.py),
    which follow them and which a task does not grade."""
    producers = graph.producers()
    return [t for t in graph.outputs if not producers.get(t.index, None) or
            not producers[t.index].type.startswith("MF_OOD_")]


def _single_io(graph: Graph, task: Task) -> tuple[Tensor, Tensor]:
    outputs = task_outputs(graph)
    if len(graph.inputs) != 1 or len(outputs) != 1:
        raise InputError(f"task {task.name}: the model must have one input and one output, it has "
                         f"{len(graph.inputs)} and {len(outputs)}")
    return graph.inputs[0], outputs[0]


def _quantization(t: Tensor, task: Task, role: str) -> tuple[float, int]:
    if t.dtype != np.int8 or t.quant is None or t.quant.per_channel:
        raise InputError(f"task {task.name}: the model's {role} '{t.name}' must be int8 with one scale and "
                         f"zero point (got {np.dtype(t.dtype).name})")
    return t.quant.single_scale, t.quant.single_zero_point


def _features(t: Tensor) -> int:
    """Elements per sample of a tensor whose leading dimension is the batch of one."""
    return int(np.prod(t.shape[1:])) if len(t.shape) > 1 and t.shape[0] == 1 else t.size


def check_model(task: Task, graph: Graph) -> None:
    """Raise InputError naming what in `graph` does not fit `task`."""
    x, y = _single_io(graph, task)
    _quantization(x, task, "input")
    if task.name == "ad":
        _quantization(y, task, "output")
        if _features(x) % AD_MEL_BINS or _features(x) != _features(y):
            raise InputError(f"task ad: the model must map frames x {AD_MEL_BINS} mel values to as many "
                             f"values; input {x.shape}, output {y.shape}")
        return
    if _features(y) < 2:
        raise InputError(f"task {task.name}: the output {y.shape} has fewer than two classes")
    if task.name in ("vww", "ic") and (len(x.shape) != 4 or x.shape[3] != 3):
        raise InputError(f"task {task.name}: the model input must be an RGB image (1, H, W, 3), got {x.shape}")
    if task.name == "kws" and _features(x) != 490:
        raise InputError(f"task kws: the model input must hold 49 x 10 MFCCs (490 values), got {x.shape}")


def num_classes(task: Task, graph: Graph) -> int:
    return 2 if task.name == "ad" else _features(graph.outputs[0])


def load_samples(task: Task, graph: Graph, directory) -> list[Sample]:
    """Read a runner dataset for `task` and turn every entry into model inputs."""
    check_model(task, graph)
    x, _ = _single_io(graph, task)
    if task.name != "ad":
        classes = num_classes(task, graph)
        for name, listed, label in read_labels(directory):
            if listed != classes:
                raise InputError(f"{Path(directory) / 'y_labels.csv'}: '{name}' is listed with {listed} classes; "
                                 f"the model has {classes}")
        raw, labels = read_dataset(directory, x.nbytes)
        return [Sample(name, label, np.frombuffer(data, x.dtype).reshape((1, *x.shape)))
                for (name, data), label in zip(raw, labels)]
    frames = _features(x) // AD_MEL_BINS
    clip_bytes = (AD_HIST_STOP - AD_HIST_START) * AD_MEL_BINS * 4
    scale, zero_point = _quantization(x, task, "input")
    raw, labels = read_dataset(directory, clip_bytes)
    samples = []
    for (name, data), label in zip(raw, labels):
        if label not in (0, 1):
            raise InputError(f"{directory}: '{name}' has label {label}; anomaly detection labels are 0 (normal) "
                             f"and 1 (anomalous)")
        clip = np.frombuffer(data, "<f4").reshape(-1, AD_MEL_BINS)
        if not np.all(np.isfinite(clip)):
            raise InputError(f"{Path(directory) / name}: the clip holds NaN or infinite values")
        windows = ad_windows(clip, frames)
        q = quantize_input(windows, scale, zero_point).reshape((len(windows), *x.shape))
        samples.append(Sample(name, label, q, windows.astype(np.float32)))
    return samples


def score(task: Task, graph: Graph, samples: list[Sample], outputs: list[np.ndarray]) -> float:
    """The task's metric from each sample's model outputs ((inferences, *output shape) per sample)."""
    labels = [s.label for s in samples]
    if task.name != "ad":
        return top1_accuracy(np.stack([o.reshape(-1) for o in outputs]), labels)
    y = graph.outputs[0]
    scale, zero_point = _quantization(y, task, "output")
    recon = [np.float32(scale) * (o.reshape(len(o), -1).astype(np.float32) - np.float32(zero_point)) for o in outputs]
    return roc_auc(ad_score(recon, [s.reference for s in samples]), labels)
