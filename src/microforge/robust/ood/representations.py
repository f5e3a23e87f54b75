"""Deep representations for small data: autoencoder pre-training and truncated transfer for a DS-CNN keyword model.

The pieces of the study in benchmarks/representations.py (after Infineon's tinyML work, where autoencoder
representations lifted keyword spotting from 96.3 to 99.0% in distribution and from 89.4 to 94.7% on
shifted data):

- an encoder, the trunk of the shipped FSDD DS-CNN (scripts/train_fsdd_kws.py): a 10 x 4 stride-2 conv and
  `blocks` depthwise-separable 3 x 3 blocks, (N, 49, 10, 1) MFCCs -> (N, 25, 5, channels) features, 7,680
  parameters at 32 channels and 4 blocks;
- a decoder back to the (N, 49, 10, 1) input, in standardised units (each MFCC coefficient minus its
  training mean, over its training standard deviation), so that no coefficient dominates the loss;
- three autoencoders on it (`build_autoencoder`): denoising (corrupted input in, clean input out),
  variational (a Gaussian latent map, loss = reconstruction + beta * KL) and variational + discriminative
  (plus cross-entropy of a linear classifier on the latent mean);
- the classifier: encoder + head (dropout, average pool over the whole map, dense, softmax), which is the
  shipped model's architecture; its encoder frozen (`set_trainable(encoder, False)`, and `train_head` fits
  the head alone as a linear probe) or fine-tuned (`train_classifier`), or trained from scratch (the
  baseline);
- `truncate_encoder`: the encoder without its last k blocks, for the transfer study (a new head on the
  trained trunk of the plain classifier: accuracy against MACs and flash).
- `fsdd_features`: FSDD clips as MFCCs, clean or with seeded white noise at a given SNR (the shifted set).

Every builder and trainer takes a seed; with `tf.config.experimental.enable_op_determinism()` a rerun on the
same machine and TensorFlow version repeats the weights. TensorFlow must be imported after microforge
(which loads OR-Tools first); importing this module does that in the right order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import microforge  # noqa: F401  (OR-Tools before TensorFlow)
from microforge.errors import InputError, ModelError

import tensorflow as tf  # noqa: E402  (after microforge, see above)

layers = tf.keras.layers

FRAMES, COEFFICIENTS = 49, 10  # the MLPerf Tiny KWS MFCC input, microforge.bench.features
INPUT_SHAPE = (FRAMES, COEFFICIENTS, 1)
CHANNELS = 32
BLOCKS = 4
CLASSES = 10
LATENT_CHANNELS = 8  # of the variational latent map, (25, 5, 8): 1,000 Gaussians
AUTOENCODER_KINDS = ("denoising", "variational", "discriminative")


# ----------------------------------------------------------------------------------------------------
# builders


def _check_shape(input_shape) -> tuple[int, int, int]:
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or shape[2] != 1 or min(shape) < 1:
        raise InputError(f"the encoder takes (frames, coefficients, 1) inputs, got shape {input_shape}")
    return shape


def build_encoder(input_shape=INPUT_SHAPE, channels: int = CHANNELS, blocks: int = BLOCKS, seed: int = 0,
                  name: str = "encoder"):
    """DS-CNN trunk: (N, F, C, 1) -> (N, ceil(F/2), ceil(C/2), channels) (49 x 10 -> 25 x 5).

    Conv 10 x 4 stride 2, then `blocks` x (depthwise 3 x 3, pointwise 1 x 1), each conv without bias and
    followed by batch norm and ReLU (the converter folds the norm into the conv), as the shipped
    fsdd_dscnn. Layer names are stem_* and block{i}_*, which `truncate_encoder` copies weights by.
    """
    shape = _check_shape(input_shape)
    if channels < 1 or blocks < 0:
        raise InputError(f"encoder needs channels >= 1 and blocks >= 0, got channels={channels}, blocks={blocks}")
    tf.keras.utils.set_random_seed(seed)  # the initial weights
    inputs = tf.keras.Input(shape=shape)
    x = layers.Conv2D(channels, (10, 4), strides=(2, 2), padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = layers.Dropout(0.1, name="stem_dropout")(x)
    for i in range(blocks):
        x = layers.DepthwiseConv2D((3, 3), padding="same", use_bias=False, name=f"block{i}_dw")(x)
        x = layers.BatchNormalization(name=f"block{i}_dw_bn")(x)
        x = layers.ReLU(name=f"block{i}_dw_relu")(x)
        x = layers.Conv2D(channels, (1, 1), use_bias=False, name=f"block{i}_pw")(x)
        x = layers.BatchNormalization(name=f"block{i}_pw_bn")(x)
        x = layers.ReLU(name=f"block{i}_pw_relu")(x)
    return tf.keras.Model(inputs, x, name=name)


def encoder_blocks(encoder) -> int:
    """How many depthwise-separable blocks the encoder has (by its layer names)."""
    return sum(1 for layer in encoder.layers if layer.name.startswith("block") and layer.name.endswith("_dw"))


def build_decoder(latent_shape, output_shape=INPUT_SHAPE, channels: int = CHANNELS, seed: int = 0,
                  name: str = "decoder"):
    """(N, h, w, latent channels) -> (N, F, C, 1), standardised MFCCs (linear output).

    1 x 1 conv to `channels`, one depthwise-separable block at the latent resolution, nearest upsampling
    x 2 cropped to F x C (25 x 5 -> 50 x 10 -> 49 x 10), a 3 x 3 depthwise conv and a linear 1 x 1 conv to
    one channel. Cheap on purpose (about 0.4 M MACs): it is only for training and never deployed.
    """
    h, w, _ = (int(d) for d in latent_shape)
    frames, coefficients, _ = _check_shape(output_shape)
    if 2 * h < frames or 2 * w < coefficients:
        raise InputError(f"decoder: a {h} x {w} latent map upsampled x 2 cannot cover a {frames} x {coefficients} "
                         f"output")
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input(shape=tuple(int(d) for d in latent_shape))
    x = layers.Conv2D(channels, (1, 1), use_bias=False)(inputs)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.DepthwiseConv2D((3, 3), padding="same", use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.Conv2D(channels, (1, 1), use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.UpSampling2D((2, 2))(x)
    x = layers.Cropping2D(((0, 2 * h - frames), (0, 2 * w - coefficients)))(x)
    x = layers.DepthwiseConv2D((3, 3), padding="same", use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    outputs = layers.Conv2D(1, (1, 1))(x)
    return tf.keras.Model(inputs, outputs, name=name)


def build_classifier(encoder, classes: int = CLASSES, dropout: float = 0.3, seed: int = 0, name: str = "classifier"):
    """encoder + head: (N, F, C, 1) -> (N, classes) probabilities.

    The head is dropout, an average pool over the whole feature map (AVERAGE_POOL_2D, not MEAN, as the
    shipped model), flatten, dense to the classes and softmax: channels * classes + classes parameters.
    The encoder is used as it is (shared, not copied): freezing it freezes it inside the classifier too.
    """
    tf.keras.utils.set_random_seed(seed)  # the head's initial weights
    inputs = tf.keras.Input(shape=encoder.input_shape[1:])
    x = encoder(inputs)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    x = layers.AveragePooling2D(pool_size=(x.shape[1], x.shape[2]), name="head_pool")(x)
    x = layers.Flatten(name="head_flatten")(x)
    x = layers.Dense(classes, name="head_dense")(x)
    outputs = layers.Softmax(name="head_softmax")(x)
    return tf.keras.Model(inputs, outputs, name=name)


def classifier_encoder(classifier):
    """The encoder inside a model made by `build_classifier`."""
    found = [layer for layer in classifier.layers if isinstance(layer, tf.keras.Model)]
    if len(found) != 1:
        raise ModelError(f"'{classifier.name}' is not a build_classifier model: it has {len(found)} nested "
                         f"models, expected one encoder")
    return found[0]


def truncate_encoder(encoder, k: int, name: str | None = None):
    """A copy of `encoder` without its last k depthwise-separable blocks, with the remaining weights copied
    (k = 0: a full copy). Output shape unchanged ((N, 25, 5, channels)): the blocks keep the map's size,
    so the same head fits; each removed block saves 9 * channels + channels^2 weights and
    (9 + channels) * channels * 125 MACs at 32 channels on 25 x 5."""
    blocks = encoder_blocks(encoder)
    if not 0 <= k <= blocks:
        raise InputError(f"cannot remove {k} blocks from '{encoder.name}', which has {blocks}")
    channels = encoder.get_layer("stem_conv").filters
    short = build_encoder(encoder.input_shape[1:], channels, blocks - k, name=name or f"{encoder.name}_minus{k}")
    for layer in short.layers:
        if layer.weights:
            layer.set_weights(encoder.get_layer(layer.name).get_weights())
    return short


def set_trainable(model, trainable: bool) -> None:
    """Freeze (False) or unfreeze a model. Frozen batch norm also stops updating its moving statistics
    and normalises with them (Keras runs a non-trainable BatchNormalization in inference mode)."""
    model.trainable = bool(trainable)


# ----------------------------------------------------------------------------------------------------
# autoencoders


@dataclass
class Autoencoder:
    """The parts of one autoencoder; `mean` and `std` (per MFCC coefficient, shape (C,)) standardise the
    reconstruction target.

    kind "denoising": encoder -> decoder. "variational": encoder -> latent -> (mean, log variance) maps
    (N, 25, 5, LATENT_CHANNELS) -> a sample -> decoder. "discriminative": the variational one plus `head`,
    a linear classifier on the average of the latent mean map, (N, 25, 5, L) -> (N, classes) logits."""

    kind: str
    encoder: object
    decoder: object
    latent: object | None
    head: object | None
    mean: np.ndarray
    std: np.ndarray

    @property
    def trainable_variables(self) -> list:
        parts = [self.encoder, self.decoder, self.latent, self.head]
        return [v for part in parts if part is not None for v in part.trainable_variables]


def feature_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-coefficient mean and standard deviation of MFCCs (N, F, C) or (N, F, C, 1): two (C,) float32."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3 or len(x) == 0:
        raise InputError(f"feature_stats needs MFCCs shaped (N, frames, coefficients), got {x.shape}")
    mean = x.mean(axis=(0, 1))
    std = np.maximum(x.std(axis=(0, 1)), 1e-6)  # a constant coefficient must not divide by zero
    return mean.astype(np.float32), std.astype(np.float32)


def build_autoencoder(kind: str, mean: np.ndarray, std: np.ndarray, input_shape=INPUT_SHAPE,
                      channels: int = CHANNELS, blocks: int = BLOCKS, latent_channels: int = LATENT_CHANNELS,
                      classes: int = CLASSES, seed: int = 0) -> Autoencoder:
    """A fresh autoencoder of `kind` (one of AUTOENCODER_KINDS) around a new `build_encoder`.

    The variational latent is two linear 1 x 1 convs on the encoder's map (its mean and log variance,
    each (N, 25, 5, latent_channels)); the denoising one decodes the encoder's map itself."""
    if kind not in AUTOENCODER_KINDS:
        raise InputError(f"unknown autoencoder kind {kind!r}; choose one of {', '.join(AUTOENCODER_KINDS)}")
    shape = _check_shape(input_shape)
    mean, std = np.asarray(mean, np.float32).reshape(-1), np.asarray(std, np.float32).reshape(-1)
    if mean.shape != (shape[1],) or std.shape != (shape[1],) or np.any(std <= 0):
        raise InputError(f"mean and std must be ({shape[1]},) with std > 0 (one per coefficient), got "
                         f"{mean.shape} and {std.shape}")
    encoder = build_encoder(shape, channels, blocks, seed=seed)
    map_shape = encoder.output_shape[1:]
    latent = head = None
    if kind == "denoising":
        decoder = build_decoder(map_shape, shape, channels, seed=seed + 1)
    else:
        tf.keras.utils.set_random_seed(seed + 2)
        features = tf.keras.Input(shape=map_shape)
        latent = tf.keras.Model(features, [layers.Conv2D(latent_channels, (1, 1), name="z_mean")(features),
                                           layers.Conv2D(latent_channels, (1, 1), name="z_log_var",
                                                         kernel_initializer="zeros")(features)], name="latent")
        decoder = build_decoder(map_shape[:2] + (latent_channels,), shape, channels, seed=seed + 1)
        if kind == "discriminative":
            tf.keras.utils.set_random_seed(seed + 3)
            z = tf.keras.Input(shape=map_shape[:2] + (latent_channels,))
            pooled = layers.Flatten()(layers.AveragePooling2D(pool_size=map_shape[:2])(z))
            head = tf.keras.Model(z, layers.Dense(classes)(pooled), name="latent_head")
    return Autoencoder(kind, encoder, decoder, latent, head, mean, std)


def kl_divergence(z_mean, z_log_var):
    """KL(N(mean, exp(log var)) || N(0, 1)) summed over the latent map: (N, h, w, L) twice -> (N,) nats."""
    terms = 0.5 * (tf.square(z_mean) + tf.exp(z_log_var) - 1.0 - z_log_var)
    return tf.reduce_sum(terms, axis=[1, 2, 3])


def autoencoder_losses(ae: Autoencoder, x, target, labels=None, training: bool = False, beta: float = 1.0,
                       class_weight: float = 1.0, seed_generator=None) -> dict:
    """The loss terms of one batch, each a scalar tensor (means over the batch):

    - reconstruction: 0.5 * squared error summed over the standardised output, divided by the number of
      input values (F * C) so a loss of 0.5 is "no better than the per-coefficient mean";
    - kl (variational kinds): KL of the latent map to N(0, 1), divided by F * C too, so that
      reconstruction + kl is the negative ELBO per input value (unit-variance Gaussian likelihood);
    - classification (discriminative): sparse cross-entropy of `head` on the latent mean;
    - total: reconstruction + beta * kl + class_weight * classification.

    x: (N, F, C, 1) inputs as fed (corrupted for the denoising kind); target: (N, F, C, 1) standardised
    clean inputs; labels: (N,) int, needed by the discriminative kind. The latent sample uses
    `seed_generator` (a keras.random.SeedGenerator) when training, the mean otherwise."""
    features = ae.encoder(x, training=training)
    values = float(np.prod(x.shape[1:]))
    out = {}
    if ae.kind == "denoising":
        recon = ae.decoder(features, training=training)
    else:
        z_mean, z_log_var = ae.latent(features, training=training)
        z = z_mean
        if training:
            noise = tf.keras.random.normal(tf.shape(z_mean), seed=seed_generator)
            z = z_mean + tf.exp(0.5 * z_log_var) * noise
        recon = ae.decoder(z, training=training)
        out["kl"] = tf.reduce_mean(kl_divergence(z_mean, z_log_var)) / values
    error = tf.reduce_sum(tf.square(recon - target), axis=[1, 2, 3])
    out["reconstruction"] = 0.5 * tf.reduce_mean(error) / values
    total = out["reconstruction"] + beta * out.get("kl", 0.0)
    if ae.kind == "discriminative":
        if labels is None:
            raise InputError("the discriminative autoencoder needs labels for its classification loss")
        logits = ae.head(z_mean, training=training)
        out["classification"] = tf.reduce_mean(
            tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
        total = total + class_weight * out["classification"]
    out["total"] = total
    return out


def standardise(ae: Autoencoder, x: np.ndarray) -> np.ndarray:
    """MFCCs (N, F, C[, 1]) -> (N, F, C, 1) float32 in the autoencoder's standardised units."""
    x = np.asarray(x, dtype=np.float32)
    x = x[..., None] if x.ndim == 3 else x
    return ((x - ae.mean[None, None, :, None]) / ae.std[None, None, :, None]).astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# training


def _as_input(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    x = x[..., None] if x.ndim == 3 else x
    if x.ndim != 4 or len(x) == 0:
        raise InputError(f"{what}: expected a non-empty (N, frames, coefficients[, 1]) batch, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{what}: the inputs contain NaN or infinity")
    return x


def _fit(step, arrays: list[np.ndarray], epochs: int, batch_size: int, seed: int) -> list[float]:
    """Run `step` (a tf.function taking one batch of each array, returning the batch loss) over shuffled
    batches for `epochs` epochs; the mean loss of each epoch. The shuffling is seeded."""
    if epochs < 1 or batch_size < 1:
        raise InputError(f"training needs epochs >= 1 and batch_size >= 1, got {epochs} and {batch_size}")
    rng = np.random.default_rng(seed)
    n = len(arrays[0])
    history = []
    for _ in range(epochs):
        order = rng.permutation(n)
        losses = []
        for start in range(0, n, batch_size):
            pick = order[start:start + batch_size]
            losses.append(float(step(*[tf.constant(a[pick]) for a in arrays])))
        history.append(float(np.mean(losses)))
    return history


def _optimizer(variables, learning_rate: float, steps: int):
    """Adam with a cosine decay over the whole run (as scripts/train_fsdd_kws.py), built for `variables`."""
    schedule = tf.keras.optimizers.schedules.CosineDecay(learning_rate, max(1, steps))
    optimizer = tf.keras.optimizers.Adam(schedule)
    optimizer.build(variables)
    return optimizer


def train_autoencoder(ae: Autoencoder, x: np.ndarray, labels: np.ndarray | None = None,
                      targets: np.ndarray | None = None, noise_std: float = 0.0, epochs: int = 10,
                      batch_size: int = 64, learning_rate: float = 3e-3, beta: float = 1.0,
                      class_weight: float = 1.0, seed: int = 1) -> list[float]:
    """Train an autoencoder in place; returns the mean total loss of each epoch.

    x: (N, F, C[, 1]) MFCCs as the encoder sees them. targets: what to reconstruct, in the same raw units
    (default x itself); a denoising autoencoder is given its corrupted inputs as x and their clean versions
    as targets, and/or noise_std > 0, which adds fresh Gaussian noise of noise_std * (the coefficient's
    standard deviation) to every input at every step. labels: (N,) ints, for the discriminative kind."""
    x = _as_input(x, "autoencoder inputs")
    target = standardise(ae, _as_input(targets, "autoencoder targets") if targets is not None else x)
    if target.shape != x.shape:
        raise InputError(f"autoencoder targets {target.shape} do not match its inputs {x.shape}")
    if ae.kind == "denoising" and targets is None and noise_std <= 0:
        raise InputError("a denoising autoencoder needs corrupted inputs: give targets (the clean versions "
                         "of x) or noise_std > 0")
    if ae.kind == "discriminative":
        if labels is None:
            raise InputError("the discriminative autoencoder needs labels for its classification loss")
    arrays = [x, target]
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(labels) != len(x):
            raise InputError(f"{len(labels)} labels for {len(x)} autoencoder inputs")
        arrays.append(labels)
    tf.keras.utils.set_random_seed(seed)
    seeds = tf.keras.random.SeedGenerator(seed)
    variables = ae.trainable_variables
    optimizer = _optimizer(variables, learning_rate, epochs * math.ceil(len(x) / batch_size))
    noise_scale = tf.constant(noise_std * ae.std[None, None, :, None], dtype=tf.float32)

    @tf.function(reduce_retracing=True)
    def step(xb, tb, yb=None):
        if noise_std > 0:
            xb = xb + noise_scale * tf.keras.random.normal(tf.shape(xb), seed=seeds)
        with tf.GradientTape() as tape:
            loss = autoencoder_losses(ae, xb, tb, yb, training=True, beta=beta, class_weight=class_weight,
                                      seed_generator=seeds)["total"]
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return _fit(step, arrays, epochs, batch_size, seed)


def train_classifier(model, x: np.ndarray, labels: np.ndarray, epochs: int = 20, batch_size: int = 64,
                     learning_rate: float = 3e-3, seed: int = 1) -> list[float]:
    """Train a `build_classifier` model in place with sparse cross-entropy (only its trainable part: a
    frozen encoder stays as it is); returns the mean loss of each epoch. x: (N, F, C[, 1]), labels (N,)."""
    x = _as_input(x, "classifier inputs")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(x):
        raise InputError(f"{len(labels)} labels for {len(x)} classifier inputs")
    classes = model.output_shape[-1]
    if labels.min() < 0 or labels.max() >= classes:
        raise InputError(f"labels must lie in 0..{classes - 1} for '{model.name}', got {labels.min()}..{labels.max()}")
    tf.keras.utils.set_random_seed(seed)
    variables = model.trainable_variables
    if not variables:
        raise InputError(f"'{model.name}' has nothing to train: every layer is frozen")
    optimizer = _optimizer(variables, learning_rate, epochs * math.ceil(len(x) / batch_size))

    @tf.function(reduce_retracing=True)
    def step(xb, yb):
        with tf.GradientTape() as tape:
            probabilities = model(xb, training=True)
            loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(yb, probabilities))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return _fit(step, [x, labels], epochs, batch_size, seed)


def pooled_features(model, x: np.ndarray) -> np.ndarray:
    """What the head's dense layer reads: the encoder's map averaged over the whole map, (N, channels),
    computed in inference mode (no dropout, batch norm with its moving statistics)."""
    x = _as_input(x, "classifier inputs")
    extractor = tf.keras.Model(model.inputs, model.get_layer("head_flatten").output)
    return extractor.predict(x, batch_size=256, verbose=0).astype(np.float32)


def train_head(model, x: np.ndarray, labels: np.ndarray, epochs: int = 200, batch_size: int = 256,
               learning_rate: float = 3e-2, l2: float = 1e-5, seed: int = 1) -> list[float]:
    """Fit the head's dense layer of a `build_classifier` model alone (a linear probe), leaving the encoder
    as it is; returns the mean loss of each epoch.

    Why not train_classifier with a frozen encoder: an autoencoder's averaged features vary little from
    clip to clip (their spread over the clips can be a fifth of their mean), so a dense layer trained on
    them directly needs large weights, which Adam reaches only slowly, and the head underfits. Here the
    features are computed once, standardised (per feature: minus its mean over x, over its standard
    deviation), the dense layer is trained on that with cross-entropy plus l2 * (sum of squared weights,
    on the standardised scale), and the standardisation is then folded into its weights and bias, so the
    deployed model keeps exactly the classifier's architecture. The problem is convex and small (channels x
    classes weights), so many epochs are cheap: 200 over 12,000 clips take seconds."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    features = pooled_features(model, x)
    if len(labels) != len(features):
        raise InputError(f"{len(labels)} labels for {len(features)} classifier inputs")
    dense = model.get_layer("head_dense")
    classes = dense.units
    if labels.min() < 0 or labels.max() >= classes:
        raise InputError(f"labels must lie in 0..{classes - 1} for '{model.name}', got {labels.min()}..{labels.max()}")
    mean = features.mean(axis=0)
    std = features.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0).astype(np.float32)  # a dead feature: any scale, its weight is moot
    standard = (features - mean) / std
    tf.keras.utils.set_random_seed(seed)
    w = tf.Variable(tf.keras.initializers.GlorotUniform(seed=seed)((features.shape[1], classes)))
    b = tf.Variable(tf.zeros((classes,)))
    optimizer = _optimizer([w, b], learning_rate, epochs * math.ceil(len(features) / batch_size))

    @tf.function(reduce_retracing=True)
    def step(fb, yb):
        with tf.GradientTape() as tape:
            logits = tf.matmul(fb, w) + b
            loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(yb, logits, from_logits=True))
            loss = loss + l2 * tf.reduce_sum(tf.square(w))
        optimizer.apply_gradients(zip(tape.gradient(loss, [w, b]), [w, b]))
        return loss

    history = _fit(step, [standard, labels], epochs, batch_size, seed)
    # logits = ((f - mean) / std) @ w + b = f @ (w / std) + (b - (mean / std) @ w)
    kernel = w.numpy() / std[:, None]
    bias = b.numpy() - (mean / std) @ w.numpy()
    dense.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return history


def float_accuracy(model, x: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of a Keras classifier on (N, F, C[, 1]) inputs, in inference mode."""
    x = _as_input(x, "evaluation inputs")
    predictions = np.argmax(model.predict(x, batch_size=256, verbose=0), axis=1)
    return float(np.mean(predictions == np.asarray(labels).reshape(-1)))


# ----------------------------------------------------------------------------------------------------
# int8 evaluation


def int8_predictions(graph, x: np.ndarray) -> np.ndarray:
    """Class predictions (N,) of an int8 classifier graph on float MFCCs (N, F, C[, 1]): the inputs are
    quantized with the model's input scale and zero point (as the device's feature code does) and run on
    microforge's reference interpreter, which is bit-exact with TFLite Micro."""
    from microforge.bench.features import quantize_input
    from microforge.reference.interpreter import run

    t = graph.inputs[0]
    if t.quant is None or np.dtype(t.dtype) != np.int8:
        raise ModelError(f"int8_predictions needs an int8 input, '{t.name}' is {np.dtype(t.dtype).name}")
    x = _as_input(x, "evaluation inputs")
    q = quantize_input(x, float(t.quant.scale[0]), int(t.quant.zero_point[0]))
    out = np.asarray(run(graph, q.reshape((len(q),) + tuple(t.shape[1:]))))
    return np.argmax(out.reshape(len(q), -1), axis=1)


# ----------------------------------------------------------------------------------------------------
# data: FSDD clips, clean or at a given SNR


def noisy_waveform(samples: np.ndarray, rate: int, snr_db: float, rng: np.random.Generator,
                   span: str = "clip", source: str = "clip") -> np.ndarray:
    """A recording with white Gaussian noise at `snr_db` dB, through the KWS waveform preparation:
    (samples,) at `rate` Hz -> (16000,) float32 at 16 kHz, divided by its maximum, 1 s.

    The SNR is the clip's own power (mean square of the resampled recording, before padding) over the
    noise's. span "clip": noise on the recording only, then zero-padded to 1 s as the clean pipeline pads
    (a noisy recording); "window": noise over the whole 1-s window, padding included (noise heard before
    and after the word too)."""
    from microforge.bench.features import KWS_SAMPLE_RATE, KWS_SAMPLES, kws_waveform
    from microforge.robust.ood.tasks import mix_noise

    if span not in ("clip", "window"):
        raise InputError(f"noise span must be 'clip' or 'window', got {span!r}")
    prepared = kws_waveform(samples, rate, source=source).astype(np.float64)
    spoken = min(KWS_SAMPLES, math.ceil(len(np.reshape(samples, -1)) * KWS_SAMPLE_RATE / rate))
    noisy = mix_noise(prepared[:spoken] if span == "clip" else prepared, snr_db, rng, spoken)
    return kws_waveform(noisy, KWS_SAMPLE_RATE, source=source)  # re-normalised by the new maximum, padded


def fsdd_features(recordings, indices, snr_db: float | None = None, seed: int = 0,
                  span: str = "clip") -> tuple[np.ndarray, np.ndarray]:
    """FSDD recordings with index in `indices` (sorted by digit, speaker, index) as KWS MFCCs
    (N, 49, 10) float32 and their digits (N,) int64; clean when snr_db is None, else with seeded white
    noise at snr_db dB (`noisy_waveform`; one generator seeded with `seed` for the whole set)."""
    from microforge.bench.audio import read_wav
    from microforge.bench.dataset import fsdd_test_files
    from microforge.bench.features import kws_features_from_wav, kws_mfcc

    files = fsdd_test_files(recordings, indices)
    rng = np.random.default_rng(seed)
    x = []
    for path, _ in files:
        if snr_db is None:
            x.append(kws_features_from_wav(path))
        else:
            samples, rate = read_wav(path)
            x.append(kws_mfcc(noisy_waveform(samples, rate, snr_db, rng, span, source=str(path))))
    return np.stack(x).astype(np.float32), np.array([digit for _, digit in files], dtype=np.int64)
