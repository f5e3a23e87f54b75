"""Keras models the benchmarks plan and compile, converted to int8 TFLite with random weights.

Random weights are fine for memory and instruction counts, which depend on shapes, not values. Converted
models are cached in benchmarks/.cache (not committed): conversion takes TensorFlow tens of seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from microforge.frontend.keras import keras_to_int8_tflite

CACHE = Path(__file__).resolve().parent / ".cache"


def _convert(model, input_shape) -> bytes:
    rng = np.random.default_rng(0)
    return keras_to_int8_tflite(model, rng.uniform(-1, 1, size=(8,) + tuple(input_shape)).astype(np.float32))


def mobilenet_v2(alpha: float, size: int, classes: int = 2):
    import tensorflow as tf

    # No softmax: with random weights the logits span so little that int8 softmax cannot represent them.
    return tf.keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=alpha, weights=None, classes=classes,
                                             classifier_activation=None)


def resnet_style(size: int = 64, classes: int = 10):
    """Three stages of two residual blocks each, with projection shortcuts where the shape changes."""
    import tensorflow as tf
    from tensorflow.keras import layers

    inputs = tf.keras.Input((size, size, 3))
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    for stage, channels in enumerate((16, 32, 64)):
        for block in range(2):
            stride = 2 if stage and not block else 1
            y = layers.Conv2D(channels, 3, strides=stride, padding="same", activation="relu")(x)
            y = layers.Conv2D(channels, 3, padding="same")(y)
            shortcut = x if stride == 1 and x.shape[-1] == channels else layers.Conv2D(channels, 1, strides=stride)(x)
            x = layers.ReLU()(layers.Add()([y, shortcut]))
    x = layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inputs, layers.Dense(classes, activation="softmax")(x))


def inception_style(size: int = 64, classes: int = 10):
    """Inception blocks: 1x1, 3x3, 5x5 and pooling branches concatenated, between strided convs."""
    import tensorflow as tf
    from tensorflow.keras import layers

    inputs = tf.keras.Input((size, size, 3))
    x = layers.Conv2D(24, 3, strides=2, padding="same", activation="relu")(inputs)
    for width in (16, 24, 32):
        a = layers.Conv2D(width, 1, activation="relu")(x)
        b = layers.Conv2D(width, 3, padding="same", activation="relu")(layers.Conv2D(width // 2, 1, activation="relu")(x))
        c = layers.Conv2D(width // 2, 5, padding="same", activation="relu")(layers.Conv2D(width // 4, 1, activation="relu")(x))
        d = layers.Conv2D(width // 2, 1, activation="relu")(layers.MaxPooling2D(3, strides=1, padding="same")(x))
        x = layers.Concatenate()([a, b, c, d])
        x = layers.Conv2D(2 * width, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inputs, layers.Dense(classes, activation="softmax")(x))


BUILDERS = {
    "mobilenet_v2_0.35_96": (lambda: mobilenet_v2(0.35, 96), (96, 96, 3)),
    "mobilenet_v2_0.30_80": (lambda: mobilenet_v2(0.30, 80), (80, 80, 3)),
    "resnet_style_64": (resnet_style, (64, 64, 3)),
    "inception_style_64": (inception_style, (64, 64, 3)),
}


def keras_model_bytes(name: str) -> bytes:
    """The int8 .tflite of benchmark model `name`, converted once and cached."""
    path = CACHE / f"{name}.tflite"
    if not path.exists():
        import tensorflow as tf

        tf.keras.utils.set_random_seed(0)
        build, shape = BUILDERS[name]
        CACHE.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_convert(build(), shape))
    return path.read_bytes()
