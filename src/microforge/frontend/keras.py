"""Keras models into the IR: TFLite's converter makes a float32 .tflite, which the reader checks as usual.

The converter folds batch normalisation into the preceding convolution and fuses activations, which is
the graph our quantizer expects. It converts at batch size 1, as the model runs on a device: with a free
batch dimension Keras' Flatten becomes SHAPE / STRIDED_SLICE / PACK ops that compute the batch at run time.
"""

from __future__ import annotations

from pathlib import Path

from microforge.errors import ModelError
from microforge.graph.ir import Graph

KERAS_SUFFIXES = (".keras", ".h5")


def keras_to_float_tflite(model) -> bytes:
    """A Keras model (object or path to .keras / .h5) -> float32 TFLite bytes at batch size 1."""
    import tensorflow as tf

    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"{path}: Keras model file not found")
        try:
            model = tf.keras.models.load_model(path, compile=False)
        except Exception as exc:  # Keras raises many types for a bad file; say which file and why
            raise ModelError(f"{path}: not a loadable Keras model ({type(exc).__name__}: {exc})") from None
    if len(model.inputs) != 1:
        raise ModelError(f"Keras model '{model.name}' has {len(model.inputs)} inputs; one is supported")
    shape = [1] + [int(d) if d is not None else -1 for d in model.inputs[0].shape[1:]]
    if any(d < 0 for d in shape):
        raise ModelError(f"Keras model '{model.name}' has an input of unknown size {list(model.inputs[0].shape)}")
    single_input = tf.keras.Input(shape[1:], batch_size=1, dtype=model.inputs[0].dtype)
    single = tf.keras.Model(single_input, model(single_input, training=False))  # the same layers and weights
    return tf.lite.TFLiteConverter.from_keras_model(single).convert()


def read_keras(model) -> Graph:
    from microforge.frontend.reader import read_tflite

    return read_tflite(keras_to_float_tflite(model))
