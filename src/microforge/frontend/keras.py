"""Keras models into the IR: TFLite's converter makes a float32 .tflite, which the reader checks as usual.

The converter folds batch normalisation into the preceding convolution and fuses activations, which is
the graph our quantizer expects. It converts at batch size 1, as the model runs on a device: with a free
batch dimension Keras' Flatten becomes SHAPE / STRIDED_SLICE / PACK ops that compute the batch at run time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from microforge.errors import ModelError
from microforge.graph.ir import Graph

KERAS_SUFFIXES = (".keras", ".h5")


def _batch_one(model):
    """The Keras model (object or path to .keras / .h5) as a model of the same layers at batch size 1."""
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
    shape = [int(d) if d is not None else -1 for d in model.inputs[0].shape[1:]]
    if any(d < 0 for d in shape):
        raise ModelError(f"Keras model '{model.name}' has an input of unknown size {list(model.inputs[0].shape)}")
    single_input = tf.keras.Input(shape, batch_size=1, dtype=model.inputs[0].dtype)
    return tf.keras.Model(single_input, model(single_input, training=False))  # the same layers and weights


def keras_to_float_tflite(model) -> bytes:
    """A Keras model (object or path to .keras / .h5) -> float32 TFLite bytes at batch size 1."""
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(_batch_one(model)).convert()


def keras_to_int8_tflite(model, representative) -> bytes:
    """TensorFlow's own full-integer post-training quantization, at batch size 1: int8 input and output,
    per-channel int8 weights, int32 biases, activation ranges from `representative` (float32 samples,
    each shaped like one input without the batch axis). The peer our quantizer is measured against."""
    import tensorflow as tf

    def samples():
        for x in representative:
            yield [np.asarray(x, dtype=np.float32)[None]]

    converter = tf.lite.TFLiteConverter.from_keras_model(_batch_one(model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = samples
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def read_keras(model) -> Graph:
    from microforge.frontend.reader import read_tflite

    return read_tflite(keras_to_float_tflite(model))
