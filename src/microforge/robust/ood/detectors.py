"""Out-of-distribution detectors on a classifier's logits and penultimate features (reference side).

Each detector has fit(model, in_distribution_inputs, labels=None) and score(x): higher = more likely OOD.
The model is any classifier microforge runs (float, int8, int16x8): its logits are the input of its final
SOFTMAX (or its output when it has none), its features the input of the FULLY_CONNECTED that makes the
logits, both taken from the reference interpreter and dequantized. fit also sets `threshold`, the score
that keeps 95% of the fitting data (flag: score > threshold), as a deployed detector uses it, and, when
the model's logits or features are int8, `chip_threshold`: the same on the integer score the generated C
computes (onchip.py), None when the detector has no on-chip form for this model.

- msp: -max softmax(logits) (Hendrycks & Gimpel's maximum softmax probability);
- maxlogit: -max logit;
- energy: -T * logsumexp(logits / T), temperature T (1 by default);
- mahalanobis: min over classes c of (f - mu_c)' S^-1 (f - mu_c) on the features, with the class means mu_c
  and the covariance S tied across classes (labels if given, else the model's own predictions):
  full S, its diagonal, or its leading `rank` eigenvectors (the rest of the space at their mean variance).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from microforge.errors import InputError, ModelError, UnsupportedError
from microforge.frontend.writer import write_tflite
from microforge.graph.ir import Graph, Tensor
from microforge.reference.interpreter import run
from microforge.robust.assess import probe_graph
from microforge.robust.data import load_model
from microforge.robust.ood.metrics import threshold_at_tpr

PASSING_OPS = ("DEQUANTIZE", "RESHAPE", "SQUEEZE", "QUANTIZE")  # ops between the logits and the output


def _producer(graph: Graph, t: Tensor):
    return next((op for op in graph.ops if any(o is t for o in op.outputs)), None)


def logits_tensor(graph: Graph) -> Tensor:
    """The tensor of the classifier's logits: what its final SOFTMAX reads, or its output."""
    op = _producer(graph, graph.outputs[0])
    while op is not None and op.type in PASSING_OPS:
        op = _producer(graph, op.inputs[0])
    return op.inputs[0] if op is not None and op.type == "SOFTMAX" else graph.outputs[0]


def features_tensor(graph: Graph) -> Tensor:
    """The penultimate features: the input of the FULLY_CONNECTED that makes the logits."""
    t = logits_tensor(graph)
    op = _producer(graph, t)
    while op is not None and op.type in PASSING_OPS:
        t = op.inputs[0]
        op = _producer(graph, t)
    if op is None or op.type != "FULLY_CONNECTED":
        raise ModelError(f"the model has no penultimate feature layer: its logits '{t.name}' come from "
                         f"{'the input' if op is None else op.where}, not a FULLY_CONNECTED")
    return op.inputs[0]


def _real(t: Tensor, v: np.ndarray) -> np.ndarray:
    """The real values (N, size) of tensor t's values v: float as they are, integers dequantized."""
    v = np.asarray(v).reshape(len(v), -1)
    if t.dtype == np.float32 or t.quant is None:
        return v.astype(np.float64)
    return (v.astype(np.float64) - t.zero_point) * float(t.scale)


def activations(graph: Graph, x: np.ndarray, tensors: list[Tensor]) -> list[np.ndarray]:
    """Dequantized (N, size) values of `tensors` for the inputs x, by the reference interpreter."""
    probe = probe_graph(graph, tensors)
    outputs = run(probe, x)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    by_index = {t.index: v for t, v in zip(probe.outputs, outputs)}
    return [_real(t, by_index[t.index]) for t in tensors]


def _logsumexp(z: np.ndarray) -> np.ndarray:
    top = z.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(z - top).sum(axis=1, keepdims=True)))[:, 0]


def model_digest(graph: Graph) -> str:
    """sha256 of the model as microforge writes it: a detector file names the model it was fitted on."""
    return hashlib.sha256(write_tflite(graph)).hexdigest()


class Detector:
    name = "detector"
    FILE_VERSION = 1

    def __init__(self):
        self.graph: Graph | None = None
        self.threshold: float | None = None
        self.chip_threshold: int | None = None

    def options(self) -> dict:
        """The constructor's arguments, as save() writes them."""
        return {}

    def state(self) -> dict:
        """What fit learned besides the threshold (arrays as nested lists)."""
        return {}

    def load_state(self, state: dict) -> None:
        pass

    def save(self, path) -> None:
        """A JSON file: the detector, its options, what it learned, its threshold and the model's sha256."""
        if self.graph is None:
            raise InputError(f"{self.name}: fit the detector before saving it")
        Path(path).write_text(json.dumps({
            "microforge_ood_detector": self.FILE_VERSION, "detector": self.name, "options": self.options(),
            "threshold": self.threshold, "chip_threshold": self.chip_threshold,
            "model_sha256": model_digest(self.graph), "state": self.state()}) + "\n")

    def fit(self, model, inputs: np.ndarray, labels=None) -> "Detector":
        self.graph = load_model(model)
        inputs = np.asarray(inputs)
        if len(inputs) == 0:
            raise InputError(f"{self.name}: no in-distribution inputs to fit on")
        self._fit(inputs, labels)
        self.threshold = threshold_at_tpr(self.score(inputs))
        self.chip_threshold = self._fit_chip_threshold(inputs)
        return self

    def _fit_chip_threshold(self, inputs: np.ndarray) -> int | None:
        from microforge.robust.ood import onchip

        try:
            onchip.chip_score(self)
        except UnsupportedError:  # no on-chip form for this detector or model: the float detector stays
            return None
        return onchip.fit_chip_threshold(self, inputs)

    def _fit(self, inputs: np.ndarray, labels) -> None:
        pass

    def score(self, x: np.ndarray) -> np.ndarray:
        if self.graph is None:
            raise InputError(f"{self.name}: fit the detector before scoring")
        return self._score(np.asarray(x))

    def flags(self, x: np.ndarray) -> np.ndarray:
        return self.score(x) > self.threshold


class LogitDetector(Detector):
    def logits(self, x: np.ndarray) -> np.ndarray:
        return activations(self.graph, x, [logits_tensor(self.graph)])[0]


class MaxSoftmax(LogitDetector):
    name = "msp"

    def _score(self, x):
        z = self.logits(x)
        return -np.exp(z.max(axis=1) - _logsumexp(z))


class MaxLogit(LogitDetector):
    name = "maxlogit"

    def _score(self, x):
        return -self.logits(x).max(axis=1)


class Energy(LogitDetector):
    name = "energy"

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        if not temperature > 0:
            raise InputError(f"energy: the temperature must be positive, not {temperature}")
        self.temperature = float(temperature)

    def options(self) -> dict:
        return {"temperature": self.temperature}

    def _score(self, x):
        return -self.temperature * _logsumexp(self.logits(x) / self.temperature)


class Mahalanobis(Detector):
    name = "mahalanobis"
    FORMS = ("full", "diagonal", "low-rank")

    def __init__(self, form: str = "full", rank: int = 8, ridge: float = 1e-6):
        super().__init__()
        if form not in self.FORMS:
            raise InputError(f"mahalanobis: form '{form}' is not one of {', '.join(self.FORMS)}")
        self.form, self.rank, self.ridge = form, int(rank), float(ridge)

    def options(self) -> dict:
        return {"form": self.form, "rank": self.rank, "ridge": self.ridge}

    def state(self) -> dict:
        return {"means": self.means.tolist(), "precision": self.precision.tolist()}

    def load_state(self, state: dict) -> None:
        means = np.asarray(state.get("means"), dtype=np.float64)
        precision = np.asarray(state.get("precision"), dtype=np.float64)
        features = int(np.prod(features_tensor(self.graph).shape[1:]))
        if means.ndim != 2 or means.shape[1] != features or precision.shape != (features, features):
            raise InputError(f"mahalanobis: the file's class means {list(means.shape)} and precision "
                             f"{list(precision.shape)} do not fit the model's {features} features")
        self.means, self.precision = means, precision

    def _features_and_logits(self, x):
        return activations(self.graph, x, [features_tensor(self.graph), logits_tensor(self.graph)])

    def _fit(self, inputs, labels):
        features, logits = self._features_and_logits(inputs)
        classes = np.asarray(labels).reshape(-1) if labels is not None else logits.argmax(axis=1)
        if len(classes) != len(features):
            raise InputError(f"mahalanobis: {len(classes)} labels for {len(features)} inputs")
        present = np.unique(classes)
        self.means = np.stack([features[classes == c].mean(axis=0) for c in present])
        centred = features - self.means[np.searchsorted(present, classes)]
        cov = centred.T @ centred / len(features)
        scale = float(np.trace(cov)) / len(cov) or 1.0
        cov = cov + self.ridge * scale * np.eye(len(cov))  # a singular covariance still inverts
        if self.form == "diagonal":
            self.precision = np.diag(1.0 / np.diag(cov))
        elif self.form == "full":
            self.precision = np.linalg.inv(cov)
        else:
            values, vectors = np.linalg.eigh(cov)
            keep = min(self.rank, len(values))
            top_values, top_vectors = values[-keep:], vectors[:, -keep:]
            rest = (np.trace(cov) - top_values.sum()) / max(1, len(values) - keep)
            rest = rest if rest > 0 else top_values.min()
            self.precision = (top_vectors / top_values) @ top_vectors.T + (np.eye(len(cov)) - top_vectors @
                                                                           top_vectors.T) / rest

    def _score(self, x):
        features, _ = self._features_and_logits(x)
        d = features[:, None, :] - self.means[None]  # (N, classes, F)
        return np.einsum("ncf,fg,ncg->nc", d, self.precision, d).min(axis=1)


DETECTORS = {"msp": MaxSoftmax, "maxlogit": MaxLogit, "energy": Energy, "mahalanobis": Mahalanobis}


def detector(name: str, **options) -> Detector:
    if name not in DETECTORS:
        raise InputError(f"detector '{name}' is not one of {', '.join(DETECTORS)}")
    return DETECTORS[name](**options)


def load_detector(path, model) -> Detector:
    """A detector saved by Detector.save, for `model`: refused, naming why, if the file is not a detector
    file or was fitted on another model."""
    try:
        saved = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable detector file ({type(exc).__name__}: {exc})") from None
    if not isinstance(saved, dict) or saved.get("microforge_ood_detector") != Detector.FILE_VERSION:
        raise InputError(f"{path}: not a microforge OOD detector file (version {Detector.FILE_VERSION})")
    graph = load_model(model)
    if saved.get("model_sha256") != model_digest(graph):
        raise InputError(f"{path}: the detector was fitted on another model (sha256 "
                         f"{str(saved.get('model_sha256'))[:12]}..., this model {model_digest(graph)[:12]}...)")
    options = saved.get("options")
    if not isinstance(options, dict):
        raise InputError(f"{path}: its options are not a table")
    try:
        found = detector(str(saved.get("detector")), **options)
    except TypeError as exc:
        raise InputError(f"{path}: options {sorted(options)} do not fit detector '{saved.get('detector')}'") from exc
    threshold = saved.get("threshold")
    if not isinstance(threshold, (int, float)) or not np.isfinite(threshold):
        raise InputError(f"{path}: its threshold {threshold!r} is not a finite number")
    chip_threshold = saved.get("chip_threshold")
    if chip_threshold is not None and (not isinstance(chip_threshold, int) or isinstance(chip_threshold, bool)
                                       or not -2**31 <= chip_threshold < 2**31):
        raise InputError(f"{path}: its chip_threshold {chip_threshold!r} is not an int32")
    found.graph, found.threshold, found.chip_threshold = graph, float(threshold), chip_threshold
    found.load_state(saved.get("state") or {})
    return found
