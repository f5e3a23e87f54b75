"""Models and input data for quantize and assess, read from what users have: paths, bytes or objects.

Models: a Graph, .tflite bytes or path, or a Keras model (.keras / .h5 path, or the object itself).
Data: a numpy array, an .npy file holding a batch (leading batch axis), or a folder in the EEMBC runner
format whose .bin files hold the raw float32 input tensor of each sample (labels from y_labels.csv).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from microforge.bench.dataset import read_dataset
from microforge.errors import InputError
from microforge.frontend.keras import KERAS_SUFFIXES, read_keras
from microforge.frontend.reader import read_tflite
from microforge.graph.ir import Graph, Tensor
from microforge.reference.interpreter import check_supported, to_batch


def load_model(source) -> Graph:
    if isinstance(source, Graph):
        return source
    if isinstance(source, (str, Path)) and Path(source).suffix.lower() in KERAS_SUFFIXES:
        graph = read_keras(source)
    elif isinstance(source, (str, Path, bytes, bytearray)):
        graph = read_tflite(bytes(source) if isinstance(source, bytearray) else source)
    else:
        graph = read_keras(source)  # a Keras model object
    check_supported(graph)
    return graph


def load_inputs(source, tensor: Tensor) -> tuple[np.ndarray, np.ndarray | None]:
    """(float32 batch (N, *tensor.shape), labels or None) for a float model input `tensor`."""
    labels = None
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            samples, label_list = read_dataset(path, tensor.size * 4)
            x = np.stack([np.frombuffer(data, np.float32).reshape(tensor.shape) for _, data in samples])
            labels = np.asarray(label_list, dtype=np.int64)
        elif path.is_file():
            try:
                x = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise InputError(f"{path}: not a numpy .npy array ({exc})") from None
        else:
            raise InputError(f"{path}: no such data file or runner folder")
    else:
        x = np.asarray(source)
    if x.dtype.kind != "f":
        raise InputError(f"input data for the float input '{tensor.name}' must be floating point (real "
                         f"values, before quantization), got dtype {x.dtype}")
    if x.ndim == 0 or len(x) == 0:
        raise InputError(f"the data for input '{tensor.name}' is empty")
    return to_batch(tensor, x.astype(np.float32)), labels
