"""Training a slimmable network and exporting each of its widths as a plain float32 model.

A slimmable network (Yu et al., "Slimmable Neural Networks", ICLR 2019; "Universally Slimmable Networks",
ICCV 2019) is one set of weights from which several sub-networks run: the sub-network of width w takes the
first `channels(C, w)` channels of every hidden layer of C channels. The input's channels and the
classifier's outputs (the classes) are never sliced. Every width has its own batch normalisation
(switchable BN): the statistics of 8 channels of a narrow net are not those of the same 8 channels inside
the wide one.

The architecture here is a DS-CNN: a stem convolution, depthwise-separable 3x3 blocks (depthwise 3x3,
pointwise 1x1, each followed by BN and ReLU), an average pool over the whole remaining feature map, a
dense classifier. Depth is slimmed too: a sub-network of depth d runs the first d blocks and skips the
rest (every block keeps its input's shape, so the pool and the classifier follow any block). A member of
the family is a (width, depth) pair; with one depth (the default, all blocks) it is just a width.

Training (`train`) follows the papers' sandwich rule with in-place distillation: each step runs the
largest member (widest, deepest) on the labels, then the smallest (narrowest, shallowest) and
`random_widths` other members on the largest one's softened outputs (stop-gradient); the gradients of all
of them are summed before one Adam step. `train_alone` trains the same architecture at one width and
depth on its own with plain cross-entropy, the baseline a member of the family is compared with.

Export (`export_width`, `export_tflite`) builds a plain Keras model of one member, with every BN folded in
numpy into the convolution before it and ReLU fused, and converts it with microforge's Keras frontend.
`check_shared` proves on the converted files that every member's weights are the full one's, sliced to the
first channels and scaled by a positive factor per output channel.

Tensors are NHWC float32 with a leading batch N; a sample has the architecture's `input_shape`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable, Mapping

import keras
import numpy as np
import tensorflow as tf

from microforge.errors import InputError, UnsupportedError
from microforge.dynamic.family import check_float_shared, member_label
from microforge.dynamic.points import member_name
from microforge.graph.ir import Graph

DEFAULT_WIDTHS = (0.25, 0.5, 0.75, 1.0)
# Batch-norm gamma is kept at least this large. Folding BN into a convolution multiplies output channel c
# of the shared kernel by gamma_c / sqrt(var_c + eps), a factor that differs between widths (each has its
# own BN). With gamma > 0 the factor is positive, so width k's folded kernel is the full width's slice times
# a positive per-channel number: per-channel int8 quantization absorbs that number into the channel's scale
# and every width can use the same int8 bytes. A zero or negative gamma would zero or flip a channel.
GAMMA_MIN = 1e-3
BN_EPSILON = 1e-3  # Keras' default, named because the export folds with it
# The only ops an exported float model may hold: what microforge's quantizer and C backend take.
EXPORT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "AVERAGE_POOL_2D", "RESHAPE", "SOFTMAX")
# Output-channel axis of each weight op's kernel in a .tflite: conv (O, KH, KW, I), depthwise (1, KH, KW, C),
# fully connected (O, I).


def channels(full: int, width: float) -> int:
    """Channels a layer of `full` channels has at `width`: full * width rounded half up, at least 1."""
    return max(1, int(math.floor(full * width + 0.5)))


def check_depths(depths, blocks: int) -> tuple[int, ...]:
    """The depths (blocks run) as a sorted tuple of ints in 1 .. blocks; None means (blocks,)."""
    if depths is None:
        return (blocks,)
    try:
        values = tuple(sorted(int(d) for d in depths))
    except (TypeError, ValueError):
        raise InputError(f"depths must be whole numbers, not {depths!r}") from None
    if not values or any(not 1 <= d <= blocks for d in values) or len(set(values)) != len(values):
        raise InputError(f"depths must be distinct block counts in 1 .. {blocks}, not {list(depths)}")
    return values


def check_widths(widths) -> tuple[float, ...]:
    """The widths as a sorted tuple of floats in (0, 1]. Raises InputError otherwise."""
    try:
        values = tuple(sorted(float(w) for w in widths))
    except (TypeError, ValueError):
        raise InputError(f"widths must be numbers, not {widths!r}") from None
    if not values or any(not 0.0 < w <= 1.0 for w in values) or len(set(values)) != len(values):
        raise InputError(f"widths must be distinct numbers in (0, 1], not {list(widths)}")
    return values


@dataclass(frozen=True)
class Architecture:
    """A DS-CNN at width 1.0 (see module doc). Channel counts are those of the full width."""

    name: str
    input_shape: tuple[int, int, int]  # (height, width, channels) of one sample; never sliced
    classes: int  # outputs of the classifier; never sliced
    stem_channels: int
    stem_kernel: tuple[int, int]
    stem_strides: tuple[int, int]
    block_channels: tuple[int, ...]  # pointwise outputs of each depthwise-separable 3x3 block, in order
    stem_dropout: float = 0.0  # training only: after the stem
    head_dropout: float = 0.0  # training only: before the pool

    def hidden_channels(self, width: float = 1.0) -> list[int]:
        """Channels of every hidden layer at `width`: the stem, then each block's."""
        return [channels(c, width) for c in (self.stem_channels, *self.block_channels)]

    def at(self, width: float, depth: int | None = None) -> "Architecture":
        """The same architecture with every hidden layer at `width` and only its first `depth` blocks (all
        by default): a net that is that member alone."""
        stem, *blocks = self.hidden_channels(width)
        return replace(self, stem_channels=stem, block_channels=tuple(blocks[:depth]))

    def describe(self) -> str:
        kh, kw = self.stem_kernel
        sh, sw = self.stem_strides
        blocks = ", ".join(f"x{c}" for c in self.block_channels)
        return (f"conv {kh}x{kw}/{sh}x{sw} x{self.stem_channels}, {len(self.block_channels)} depthwise-separable "
                f"3x3 blocks ({blocks}), BN + ReLU after every convolution, average pool over the whole map, "
                f"dense {self.classes}, softmax")


# ----------------------------------------------------------------------------------------------------------
# layers


class MinValue(keras.constraints.Constraint):
    """Clips a weight to at least `minimum` after every optimizer step (Keras applies constraints then)."""

    def __init__(self, minimum: float):
        self.minimum = float(minimum)

    def __call__(self, w):
        return keras.ops.maximum(w, self.minimum)

    def get_config(self):
        return {"minimum": self.minimum}


class SlimConv2D(keras.layers.Layer):
    """A bias-free 'same' convolution with a kernel (KH, KW, in_channels, out_channels) of the full width.
    At `width` it reads the first channels of the kernel's input axis (as many as the input has) and writes
    the first `channels(out_channels, width)` outputs, or all of them with `slim_output=False`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, strides=(1, 1), slim_output: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = tuple(kernel_size)
        self.strides = tuple(strides)
        self.out_channels = out_channels
        self.slim_output = slim_output
        self.kernel = self.add_weight(shape=(*self.kernel_size, in_channels, out_channels),
                                      initializer="glorot_uniform", name="kernel")
        self.built = True

    def active_kernel(self, in_channels: int, width: float):
        out = channels(self.out_channels, width) if self.slim_output else self.out_channels
        return self.kernel[:, :, :in_channels, :out]

    def call(self, x, width: float = 1.0):
        return keras.ops.conv(x, self.active_kernel(x.shape[-1], width), strides=self.strides, padding="same")


class SlimDepthwiseConv2D(keras.layers.Layer):
    """A bias-free 'same' depthwise convolution (multiplier 1), kernel (KH, KW, channels, 1) of the full
    width; it filters as many of the first channels as its input has."""

    def __init__(self, in_channels: int, kernel_size=(3, 3), **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = tuple(kernel_size)
        self.kernel = self.add_weight(shape=(*self.kernel_size, in_channels, 1), initializer="glorot_uniform",
                                      name="kernel")
        self.built = True

    def active_kernel(self, in_channels: int):
        return self.kernel[:, :, :in_channels, :]

    def call(self, x):
        return keras.ops.depthwise_conv(x, self.active_kernel(x.shape[-1]), strides=1, padding="same")


class SlimDense(keras.layers.Layer):
    """A dense layer with kernel (in_units, units) and bias (units,) of the full width: it reads the first
    rows (as many as its input has) and, with `slim_output=True`, writes the first `channels(units, width)`
    outputs. The classifier keeps the default `slim_output=False`: the classes are never sliced."""

    def __init__(self, in_units: int, units: int, slim_output: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.slim_output = slim_output
        self.kernel = self.add_weight(shape=(in_units, units), initializer="glorot_uniform", name="kernel")
        self.bias = self.add_weight(shape=(units,), initializer="zeros", name="bias")
        self.built = True

    def active_weights(self, in_units: int, width: float):
        out = channels(self.units, width) if self.slim_output else self.units
        return self.kernel[:in_units, :out], self.bias[:out]

    def call(self, x, width: float = 1.0):
        kernel, bias = self.active_weights(x.shape[-1], width)
        return keras.ops.matmul(x, kernel) + bias


class SwitchableBatchNorm(keras.layers.Layer):
    """One BatchNormalization per width (its own gamma, beta and moving statistics), over the first
    `channels(full_channels, width)` channels of the last axis of inputs with `rank` axes; `call`
    normalises with the active width's. Gamma is constrained to >= GAMMA_MIN (see there why)."""

    def __init__(self, full_channels: int, widths=DEFAULT_WIDTHS, momentum: float = 0.99, rank: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.widths = check_widths(widths)
        self.norms = []
        for w in self.widths:
            norm = keras.layers.BatchNormalization(momentum=momentum, epsilon=BN_EPSILON,
                                                   gamma_constraint=MinValue(GAMMA_MIN),
                                                   name=f"{self.name}_width_{w:g}")
            norm.build((None,) * (rank - 1) + (channels(full_channels, w),))  # inputs of `rank` axes, NHWC
            self.norms.append(norm)
        self.built = True

    def norm_for(self, width: float) -> keras.layers.BatchNormalization:
        for w, norm in zip(self.widths, self.norms):
            if math.isclose(w, width):
                return norm
        raise InputError(f"{self.name}: width {width:g} is not one of its widths {list(self.widths)}")

    def call(self, x, width: float = 1.0, training: bool = False):
        return self.norm_for(width)(x, training=training)


# ----------------------------------------------------------------------------------------------------------
# the network


class SlimmableNet(keras.Model):
    """The slimmable DS-CNN of `arch` at `widths` and `depths` (blocks run; default all).
    `net(x, width=w, depth=d, training=...)`: x (N, *input_shape) float32 -> logits (N, classes) of the
    sub-network of width w running the first d blocks (default: the largest of each)."""

    def __init__(self, arch: Architecture, widths=DEFAULT_WIDTHS, bn_momentum: float = 0.99, depths=None,
                 **kwargs):
        super().__init__(name=kwargs.pop("name", arch.name), **kwargs)
        self.arch = arch
        self.widths = check_widths(widths)
        self.depths = check_depths(depths, len(arch.block_channels))
        self.stem = SlimConv2D(arch.input_shape[-1], arch.stem_channels, arch.stem_kernel, arch.stem_strides,
                               name="stem")
        self.stem_norm = SwitchableBatchNorm(arch.stem_channels, self.widths, bn_momentum, name="stem_bn")
        self.blocks = []  # (depthwise, its BN, pointwise, its BN) per block
        previous = arch.stem_channels
        for i, out in enumerate(arch.block_channels):
            self.blocks.append((
                SlimDepthwiseConv2D(previous, name=f"block{i}_depthwise"),
                SwitchableBatchNorm(previous, self.widths, bn_momentum, name=f"block{i}_depthwise_bn"),
                SlimConv2D(previous, out, (1, 1), name=f"block{i}_pointwise"),
                SwitchableBatchNorm(out, self.widths, bn_momentum, name=f"block{i}_pointwise_bn"),
            ))
            previous = out
        self.stem_dropout = keras.layers.Dropout(arch.stem_dropout)
        self.head_dropout = keras.layers.Dropout(arch.head_dropout)
        self.classifier = SlimDense(previous, arch.classes, name="classifier")
        self.built = True

    def members(self) -> list[tuple[float, int]]:
        """Every (width, depth) sub-network, smallest first, the largest last."""
        return [(w, d) for w in self.widths for d in self.depths]

    def call(self, x, width: float | None = None, depth: int | None = None, training: bool = False):
        width = self.widths[-1] if width is None else width
        x = keras.ops.relu(self.stem_norm(self.stem(x, width=width), width=width, training=training))
        x = self.stem_dropout(x, training=training)
        for depthwise, depthwise_norm, pointwise, pointwise_norm in self.blocks[:depth]:
            x = keras.ops.relu(depthwise_norm(depthwise(x), width=width, training=training))
            x = keras.ops.relu(pointwise_norm(pointwise(x, width=width), width=width, training=training))
        x = self.head_dropout(x, training=training)
        x = keras.ops.mean(x, axis=(1, 2))  # the whole map's average: AVERAGE_POOL_2D in the export
        return self.classifier(x, width=width)

    def norms(self) -> list[SwitchableBatchNorm]:
        return [self.stem_norm] + [n for block in self.blocks for n in (block[1], block[3])]


def predict(net: SlimmableNet, x: np.ndarray, width: float | None = None, batch_size: int = 256,
            depth: int | None = None) -> np.ndarray:
    """Softmax outputs (N, classes) float32 of the sub-network of `width` and `depth`, in inference mode."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape[1:] != net.arch.input_shape:
        raise InputError(f"{net.name}: inputs must be (N, {', '.join(map(str, net.arch.input_shape))}), "
                         f"got {list(x.shape)}")
    out = [keras.ops.convert_to_numpy(keras.ops.softmax(net(x[i:i + batch_size], width=width, depth=depth,
                                                            training=False)))
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.float32)


def accuracy(net: SlimmableNet, x: np.ndarray, y: np.ndarray, width: float | None = None,
             depth: int | None = None) -> float:
    """Fraction of samples whose most probable class at `width` and `depth` is the label y (N,) int."""
    return float(np.mean(np.argmax(predict(net, x, width, depth=depth), axis=1) == np.asarray(y)))


# ----------------------------------------------------------------------------------------------------------
# training


def sandwich(members: list, rng: np.random.Generator, random_widths: int) -> tuple:
    """The members (smallest first, largest last) one step trains, the teacher first: the largest, the
    smallest, then `random_widths` distinct others drawn from those between (all of them if fewer)."""
    members = list(members)
    if len(members) == 1:
        return tuple(members)
    middle = members[1:-1]
    picked = rng.choice(len(middle), size=min(random_widths, len(middle)), replace=False) if middle else []
    return (members[-1], members[0], *(middle[i] for i in sorted(picked)))


def distillation_loss(teacher_logits, student_logits, temperature: float):
    """Cross-entropy of the student's softened outputs against the teacher's (which get no gradient),
    times temperature^2 so its gradients keep their size as the temperature changes (Hinton et al.)."""
    soft_targets = keras.ops.stop_gradient(keras.ops.softmax(teacher_logits / temperature))
    log_probs = keras.ops.log_softmax(student_logits / temperature)
    return -keras.ops.mean(keras.ops.sum(soft_targets * log_probs, axis=-1)) * temperature ** 2


def train(net: SlimmableNet, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int = 64,
          learning_rate: float = 3e-3, seed: int = 0, random_widths: int = 1, temperature: float = 1.0,
          validation: tuple[np.ndarray, np.ndarray] | None = None,
          log: Callable[[str], None] | None = print) -> list[dict]:
    """Train every member (width, depth) of `net` together on x (N, *input_shape) float32 and labels
    y (N,) int.

    Each step takes one batch through the sandwich of members (see `sandwich`): the largest learns from the
    labels (cross-entropy), the others from its outputs (`distillation_loss` at `temperature`). Their
    gradients are summed and Adam (learning rate with cosine decay to 0 over all steps) takes one step with
    the sum. BN of the widths left out of a step get no gradient and keep their statistics. `seed` draws
    the batches (reshuffled each epoch) and the sandwich's random members; the last incomplete batch is
    dropped, so every step has the same shapes. A net of one member is trained on plain cross-entropy.

    Returns one dict per epoch: the mean total loss, the largest member's label loss, seconds, and with
    `validation` (x, y) the accuracy of every member (keys `member_key`)."""
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    if x.shape[1:] != net.arch.input_shape or y.shape != (len(x),):
        raise InputError(f"{net.name}: training data must be x (N, {', '.join(map(str, net.arch.input_shape))}) and "
                         f"y (N,); got {list(x.shape)} and {list(y.shape)}")
    steps_per_epoch = len(x) // batch_size
    if steps_per_epoch == 0 or epochs < 1:
        raise InputError(f"{net.name}: {len(x)} samples at batch size {batch_size} for {epochs} epochs is no step")
    if temperature <= 0 or random_widths < 0:
        raise InputError(f"temperature must be positive and random_widths at least 0, not {temperature} and "
                         f"{random_widths}")
    if y.size and (y.min() < 0 or y.max() >= net.arch.classes):
        raise InputError(f"{net.name}: labels must be classes 0 to {net.arch.classes - 1}; got {y.min()} to {y.max()}")
    optimizer = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, epochs * steps_per_epoch))
    optimizer.build(net.trainable_variables)
    step = _train_step(net, optimizer, temperature)
    members = net.members()
    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(epochs):
        started = time.monotonic()
        order = rng.permutation(len(x))
        totals, labels = [], []
        for s in range(steps_per_epoch):
            batch = order[s * batch_size:(s + 1) * batch_size]
            total, label_loss = step(x[batch], y[batch], sandwich(members, rng, random_widths))
            totals.append(float(total))
            labels.append(float(label_loss))
        record = {"epoch": epoch + 1, "loss": float(np.mean(totals)), "label_loss": float(np.mean(labels)),
                  "seconds": round(time.monotonic() - started, 1)}
        if validation is not None:
            record["validation_accuracy"] = {member_key(net, w, d): accuracy(net, *validation, width=w, depth=d)
                                             for w, d in members}
        history.append(record)
        if log is not None:
            log(f"{net.name} epoch {epoch + 1}/{epochs}: " + ", ".join(
                f"{k} {v}" for k, v in record.items() if k != "epoch"))
    return history


def member_key(net: SlimmableNet, width: float, depth: int) -> str:
    """How results name a member: "0.25" when the net has one depth, "0.25/2" (width/depth) otherwise."""
    return member_name(width, None if len(net.depths) == 1 else depth)


def _train_step(net: SlimmableNet, optimizer, temperature: float):
    """One step: (x batch, y batch, members with the teacher first) -> (total loss, label loss).

    Each member's gradients come from a function compiled once per member (its channel counts and blocks
    are static), so the sandwiches drawn at random cost no new tracing; the step sums them and applies
    them once, to the variables some member of the sandwich used (the others, e.g. the BN of widths left
    out, stay as they are: a zero gradient would still move them through Adam's momentum)."""
    variables = net.trainable_variables
    used = {}  # (width, depth) -> indices of the variables its loss depends on (found when it is traced)

    def gradients(tape, loss, member):
        found = tape.gradient(loss, variables)
        used[member] = [i for i, g in enumerate(found) if g is not None]
        return [g if g is not None else tf.zeros_like(v) for g, v in zip(found, variables)]

    @tf.function
    def teacher_step(x, y, width, depth):
        with tf.GradientTape() as tape:
            logits = net(x, width=width, depth=depth, training=True)
            loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        return gradients(tape, loss, (width, depth)), loss, logits

    @tf.function
    def student_step(x, teacher_logits, width, depth):
        with tf.GradientTape() as tape:
            loss = distillation_loss(teacher_logits, net(x, width=width, depth=depth, training=True), temperature)
        return gradients(tape, loss, (width, depth)), loss

    def step(x, y, members):
        total_gradients, label_loss, teacher = teacher_step(x, y, *members[0])
        total = label_loss
        for member in members[1:]:
            grads, loss = student_step(x, teacher, *member)
            total_gradients = [a + b for a, b in zip(total_gradients, grads)]
            total = total + loss
        touched = sorted(set().union(*(used[m] for m in members)))
        optimizer.apply([total_gradients[i] for i in touched], [variables[i] for i in touched])  # and the gamma constraint
        return total, label_loss

    return step


def train_alone(arch: Architecture, width: float, x: np.ndarray, y: np.ndarray, depth: int | None = None,
                **train_options) -> SlimmableNet:
    """The baseline of one member: a net of `arch` at `width` with its first `depth` blocks (all by default)
    and nothing else (its own weights, initialised for its own size), trained by `train` with the same
    options, so on plain cross-entropy. Export it at width 1.0 (its only width); its channels are the
    family's at `width`."""
    suffix = "" if depth is None else f"_depth_{depth}"
    net = SlimmableNet(arch.at(width, depth), widths=(1.0,), name=f"{arch.name}_alone_{width:g}{suffix}")
    train(net, x, y, **train_options)
    return net


# ----------------------------------------------------------------------------------------------------------
# export


def folded(kernel: np.ndarray, norm: keras.layers.BatchNormalization, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """A bias-free kernel with the inference-mode BN after it folded in: (kernel * f, beta - mean * f) with
    f = gamma / sqrt(variance + epsilon) per output channel, the channels along `axis` of the kernel.
    Computed in float64, returned as float32."""
    gamma, beta, mean, variance = (np.asarray(keras.ops.convert_to_numpy(v), dtype=np.float64)
                                   for v in (norm.gamma, norm.beta, norm.moving_mean, norm.moving_variance))
    factor = gamma / np.sqrt(variance + norm.epsilon)
    shape = [1] * kernel.ndim
    shape[axis] = factor.size
    return ((np.asarray(kernel, dtype=np.float64) * factor.reshape(shape)).astype(np.float32),
            (beta - mean * factor).astype(np.float32))


def export_width(net: SlimmableNet, width: float, depth: int | None = None) -> keras.Model:
    """A plain Keras model of `net`'s sub-network at `width` running its first `depth` blocks (all by
    default), input (batch, *input_shape), softmax output (batch, classes): Conv2D / DepthwiseConv2D with
    the BN folded in and ReLU fused, AveragePooling2D over the whole map, Flatten, Dense, Softmax. Dropout
    is left out (inference). Same outputs as `net(x, width, depth, training=False)` after a softmax, to
    float32 rounding."""
    if not any(math.isclose(width, w) for w in net.widths):
        raise InputError(f"{net.name}: width {width:g} is not one of its widths {list(net.widths)}")
    if depth is not None and depth not in net.depths:
        raise InputError(f"{net.name}: depth {depth} is not one of its depths {list(net.depths)}")
    layers = keras.layers
    arch = net.arch
    inputs = keras.Input(arch.input_shape)
    in_channels = arch.input_shape[-1]

    def add(layer, x, weights):
        y = layer(x)
        layer.set_weights(weights)
        return y

    kernel = keras.ops.convert_to_numpy(net.stem.active_kernel(in_channels, width))
    x = add(layers.Conv2D(kernel.shape[-1], arch.stem_kernel, arch.stem_strides, padding="same", activation="relu",
                          name="stem"), inputs, folded(kernel, net.stem_norm.norm_for(width), axis=3))
    for i, (depthwise, depthwise_norm, pointwise, pointwise_norm) in enumerate(net.blocks[:depth]):
        kernel = keras.ops.convert_to_numpy(depthwise.active_kernel(x.shape[-1]))
        x = add(layers.DepthwiseConv2D(depthwise.kernel_size, padding="same", activation="relu",
                                       name=f"block{i}_depthwise"),
                x, folded(kernel, depthwise_norm.norm_for(width), axis=2))
        kernel = keras.ops.convert_to_numpy(pointwise.active_kernel(x.shape[-1], width))
        x = add(layers.Conv2D(kernel.shape[-1], (1, 1), activation="relu", name=f"block{i}_pointwise"),
                x, folded(kernel, pointwise_norm.norm_for(width), axis=3))
    # a pool of the map's size, not GlobalAveragePooling2D: that one converts to MEAN
    x = layers.AveragePooling2D(pool_size=tuple(x.shape[1:3]), name="pool")(x)
    x = layers.Flatten(name="flatten")(x)
    kernel, bias = (keras.ops.convert_to_numpy(v) for v in net.classifier.active_weights(x.shape[-1], width))
    x = add(layers.Dense(arch.classes, name="classifier"), x, [kernel, bias])
    outputs = layers.Softmax(name="softmax")(x)
    suffix = "" if depth is None else f"_depth_{depth}"
    return keras.Model(inputs, outputs, name=f"{net.name}_width_{width:g}{suffix}")


def check_export_ops(graph: Graph, where: str) -> None:
    """Raise UnsupportedError if the graph holds an op outside EXPORT_OPS (listing every such op)."""
    extra = [op.where for op in graph.ops if op.type not in EXPORT_OPS]
    if extra:
        raise UnsupportedError(f"{where}: the exported model holds ops outside {', '.join(EXPORT_OPS)}: "
                               + ", ".join(extra))


def export_tflite(net: SlimmableNet, width: float, depth: int | None = None) -> bytes:
    """The float32 .tflite (batch 1) of `export_width(net, width, depth)`, by microforge's Keras frontend,
    checked to hold only EXPORT_OPS."""
    from microforge.frontend.keras import keras_to_float_tflite
    from microforge.frontend.reader import read_tflite

    data = keras_to_float_tflite(export_width(net, width, depth))
    check_export_ops(read_tflite(data), f"{net.name} at width {width:g}" + ("" if depth is None else f" depth {depth}"))
    return data


def check_shared(graphs: Mapping) -> None:
    """Check that a family's float graphs (width -> Graph, or (width, depth) -> Graph, as exported) share
    their weights: each weight op's kernel in a member is the largest member's, sliced to its first channels
    on every axis, times a positive factor per output channel (the folded BN's gamma / sqrt(var + eps), see
    GAMMA_MIN); a shallower member's ops pair with the first blocks'. Biases are each member's own. Raises
    ModelError naming the member, op, tensor and channel that break this (the check the family's quantizer
    makes, microforge.dynamic.family.check_float_shared)."""
    if len(graphs) < 2:
        raise InputError(f"check_shared needs the graphs of two members or more; got {len(graphs)}")
    keys = sorted(graphs)
    labels = [member_label(*k) if isinstance(k, tuple) else member_label(k) for k in keys]
    check_float_shared([graphs[k] for k in keys], labels)
