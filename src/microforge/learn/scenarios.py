"""Continual-learning scenarios: a stream of experiences, each a training and a test set of the model's
own input (int8 as the model takes it), labels the class indices of the model's head.

- fsdd-class-incremental: FSDD spoken digits. Experience 0 holds digits 0-4 (what the shipped model
  models/learn/fsdd_digits0-4_int8.tflite was trained on), experiences 1-5 one new digit each, 5 to 9.
  Training clips are recording indices 5-49 of every speaker, test clips 0-4 (as the FSDD models here
  are split); label = the digit.
- digits-class-incremental: scikit-learn's 8 x 8 handwritten digits the same way (0-4, then 5, ..., 9),
  a fixed split: every fifth image a test image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from microforge.errors import InputError
from microforge.graph.ir import Tensor

SCENARIOS = ("fsdd-class-incremental", "digits-class-incremental")
FIRST_CLASSES = (0, 1, 2, 3, 4)
LATER_CLASSES = (5, 6, 7, 8, 9)
FSDD_TRAIN_INDICES = range(5, 50)
FSDD_TEST_INDICES = range(5)


@dataclass
class Experience:
    """One step of a scenario: the classes it brings and its training and test samples (model inputs)."""

    name: str
    classes: tuple[int, ...]
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def _as_input(features: np.ndarray, t: Tensor) -> np.ndarray:
    """Real-valued features as the model input tensor t takes them (quantized when it is integer)."""
    from microforge.bench.features import quantize_input

    x = np.asarray(features, np.float32)
    if x[0].size != t.size:
        raise InputError(f"the scenario's samples have {x[0].size} values; the model input '{t.name}' "
                         f"{list(t.shape)} takes {t.size}")
    x = x.reshape((len(x),) + tuple(t.shape))  # (N, *input shape), as the interpreter takes a batch
    return x if t.dtype == np.float32 else quantize_input(x, float(t.scale), t.zero_point, t.dtype)


def class_incremental(name: str, x_train, y_train, x_test, y_test, first=FIRST_CLASSES,
                      later=LATER_CLASSES) -> list[Experience]:
    """Experience 0 with the classes `first`, then one experience per class of `later`."""
    groups = [tuple(first)] + [(c,) for c in later]
    stream = []
    for k, classes in enumerate(groups):
        train, test = np.isin(y_train, classes), np.isin(y_test, classes)
        if not train.any() or not test.any():
            raise InputError(f"{name}: experience {k} (classes {list(classes)}) has no training or no test samples")
        stream.append(Experience(f"{name}/{k}", classes, x_train[train], y_train[train], x_test[test], y_test[test]))
    return stream


def fsdd_class_incremental(input_tensor: Tensor, recordings=None, train_indices=FSDD_TRAIN_INDICES,
                           test_indices=FSDD_TEST_INDICES) -> list[Experience]:
    """FSDD digits 0-4, then 5, ..., 9, as MFCC inputs of the KWS models (bench.features)."""
    from microforge.bench.dataset import fsdd_test_files
    from microforge.bench.features import kws_features_from_wav
    from microforge.robust.ood.tasks import FSDD_RECORDINGS

    folder = FSDD_RECORDINGS if recordings is None else recordings

    def load(indices):
        files = fsdd_test_files(folder, indices)
        if not files:
            raise InputError(f"fsdd: no FSDD recordings of indices {list(indices)} in {folder}")
        x = np.stack([kws_features_from_wav(path) for path, _ in files])
        return _as_input(x, input_tensor), np.array([d for _, d in files], np.int64)

    return class_incremental("fsdd", *load(train_indices), *load(test_indices))


def digits_class_incremental(input_tensor: Tensor) -> list[Experience]:
    """scikit-learn's digits (1,797 images 8 x 8, values 0-16 scaled to [0, 1]); every fifth image is a
    test image."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x, y = (data.images / 16.0).astype(np.float32), data.target.astype(np.int64)
    test = np.arange(len(y)) % 5 == 0
    x = _as_input(x, input_tensor)
    return class_incremental("digits", x[~test], y[~test], x[test], y[test])


def scenario(name: str, input_tensor: Tensor, recordings=None) -> list[Experience]:
    if name == "fsdd-class-incremental":
        return fsdd_class_incremental(input_tensor, recordings)
    if name == "digits-class-incremental":
        return digits_class_incremental(input_tensor)
    raise InputError(f"scenario '{name}' is not one of {', '.join(SCENARIOS)}")
