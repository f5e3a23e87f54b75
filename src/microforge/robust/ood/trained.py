"""Trained OOD detectors (issue 11): small models fitted in Keras beside a frozen classifier.

Like the detectors of detectors.py they read the classifier (any model microforge runs) through the
reference interpreter, fit(model, inputs, labels=None) and score(x) of shape (N,), higher = more likely
OOD, with the threshold that keeps 95% of the fitting data. "Features" are the classifier's penultimate
features f (N, F), dequantized (detectors.features_tensor); "inputs" its input values (N, D), D the input's
size, dequantized when the input is integer. Training is seeded (tf.keras.utils.set_random_seed), so a
refit on the same machine and TensorFlow version repeats the weights; what a detector learned is saved in
its state, so a loaded detector scores exactly as the fitted one.

- godin: Generalized ODIN without input perturbation (Hsu, Shen, Jin, Kira, "Generalized ODIN: Detecting
  Out-of-Distribution Image without Learning from Out-of-Distribution Data", CVPR 2020). A decomposed head
  on f: h_i(f) = cos(f, w_i) (their h^C), g(f) = sigmoid(BN(v'f + c)), logits h_i / g, trained with
  softmax cross-entropy on the fitting data's labels, weight decay on the w_i and not on g, by SGD with
  momentum as the paper trains. The classifier stays frozen (the paper trains the whole network with the
  head), so h can only use the directions its features already have. Score: -max_i h_i(f), in [-1, 1].
- ae: the reconstruction error of a small dense autoencoder trained on the fitting data's inputs
  (on="input") or features (on="features"), written as a float Graph of FULLY_CONNECTED ops, quantized
  to int8 (int8 input and output) by microforge's quantizer calibrated on the same data, and run by the
  reference interpreter, as it would run beside the classifier on a chip.
  Score: mean over the D values of (AE output - AE input)^2, both dequantized, in the squared units of
  the inputs or features.
- explicit: outlier exposure (Hendrycks, Mazeika, Dietterich, "Deep Anomaly Detection with Outlier
  Exposure", ICLR 2019) in its binary form: a logistic regression or one-hidden-layer classifier on f,
  in-distribution (0) against the OOD training data the user gives (1), fit(model, inputs, labels=None,
  outliers=...). Score: its OOD logit.

TensorFlow is imported only when a detector is fitted; scoring needs numpy and the reference interpreter.
"""

from __future__ import annotations

import base64
import binascii

import numpy as np

from microforge.errors import InputError, MicroforgeError, ModelError
from microforge.frontend.reader import read_tflite
from microforge.frontend.writer import write_tflite
from microforge.graph.builder import GraphBuilder
from microforge.graph.ir import Graph, Tensor
from microforge.reference.interpreter import check_supported, run
from microforge.robust.ood.detectors import (DETECTORS, Detector, _real, activations, features_tensor,
                                            logits_tensor)

BATCH = 32  # examples per training step
NORM_EPSILON = 1e-12  # as tf.math.l2_normalize: |v| is at least sqrt(1e-12), so a zero vector has cosine 0


# ---------------------------------------------------------------------------------------------------------
# shared


def _keras(seed: int):
    """TensorFlow, with every random generator seeded (the initial weights, dropout and the shuffling)."""
    import tensorflow as tf  # here, not at import: scoring needs no TensorFlow (microforge is loaded first)

    tf.keras.utils.set_random_seed(seed)
    return tf


def _train(tf, model, loss, optimizer, x: np.ndarray, y: np.ndarray, epochs: int, seed: int,
           weights: np.ndarray | None = None) -> None:
    """`epochs` passes over (x, y), each shuffled, in batches of BATCH, as one Keras epoch of the repeated
    data: Keras' cost per epoch is far above a tiny model's steps, so this is what keeps fitting fast."""
    columns = (x, y) if weights is None else (x, y, weights.astype(np.float32))
    data = (tf.data.Dataset.from_tensor_slices(columns).shuffle(len(x), seed=seed).repeat(epochs).batch(BATCH))
    model.compile(optimizer=optimizer, loss=loss, steps_per_execution=64)
    model.fit(data, epochs=1, shuffle=False, verbose=0)


def _count(value, what: str, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise InputError(f"{what} must be an integer >= {least}, not {value!r}")
    return int(value)


def _nonnegative(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
        raise InputError(f"{what} must be a number >= 0, not {value!r}")
    return float(value)


def _check_batch(detector: Detector, x, what: str = "inputs") -> np.ndarray:
    """x as an array, refused unless it is a batch of the model's input: (N, *shape), or (N, *shape[1:])
    when the shape starts with TFLite's batch 1."""
    x = np.asarray(x)
    t = detector.graph.inputs[0]
    shape = tuple(t.shape)
    fits = x.shape[1:] == shape or (len(shape) > 0 and shape[0] == 1 and x.ndim == len(shape)
                                    and x.shape[1:] == shape[1:])
    if x.ndim == 0 or not fits:
        raise InputError(f"{detector.name}: {what} of shape {list(x.shape)} do not fit the model's input "
                         f"'{t.name}' of shape {list(shape)} (give (N, {', '.join(map(str, shape))}))")
    return x


def _features(detector: Detector, x, what: str = "inputs") -> np.ndarray:
    """The classifier's dequantized penultimate features (N, F) of x, float64."""
    return activations(detector.graph, _check_batch(detector, x, what), [features_tensor(detector.graph)])[0]


def _array(state: dict, key: str, ndim: int, what: str) -> np.ndarray:
    """state[key] as a float64 array of `ndim` dimensions, refused by name if it is not one."""
    try:
        a = np.asarray(state.get(key), dtype=np.float64)
        fits = a.ndim == ndim and bool(np.all(np.isfinite(a)))
    except (TypeError, ValueError):  # ragged lists, strings, None in a list
        fits = False
    if not fits:
        raise InputError(f"{what}: the file's '{key}' is not a {ndim}-D array of finite numbers")
    return a


def _l2_normalize(v: np.ndarray, axis: int) -> np.ndarray:
    return v / np.sqrt(np.maximum((v * v).sum(axis=axis, keepdims=True), NORM_EPSILON))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow for large |z|


# ---------------------------------------------------------------------------------------------------------
# Generalized ODIN


def godin_head(tf, classes: int, weight_decay: float):
    """The decomposed head as a Keras layer: features (N, F) -> (logits (N, classes), h (N, classes), g (N, 1)).

    h = cosine of f with each class weight column w_i (kernel (F, classes), L2-penalised: the paper's weight
    decay), g = sigmoid(batch norm(v'f + c)) (kernel (F, 1), bias, no penalty), logits = h / g."""
    layers = tf.keras.layers

    class DecomposedHead(layers.Layer):
        def build(self, shape):
            # SGD's weight decay d is the gradient of (d / 2) |w|^2
            self.w = self.add_weight(name="class_weights", shape=(int(shape[-1]), classes),
                                     initializer="glorot_uniform",
                                     regularizer=tf.keras.regularizers.L2(weight_decay / 2))
            self.g_linear = layers.Dense(1, name="g_linear")
            self.g_norm = layers.BatchNormalization(name="g_norm")

        def call(self, f, training=None):
            h = tf.matmul(tf.math.l2_normalize(f, axis=1, epsilon=NORM_EPSILON),
                          tf.math.l2_normalize(self.w, axis=0, epsilon=NORM_EPSILON))
            g = tf.sigmoid(self.g_norm(self.g_linear(f), training=training))
            return h / g, h, g

    return DecomposedHead(name="godin_head")


class GeneralizedOdin(Detector):
    """Generalized ODIN's decomposed confidence (Hsu et al., CVPR 2020), h^C cosine head, no input
    perturbation: score(x) = -max_i cos(f(x), w_i), (N,), in [-1, 1]. fit needs the labels (N,) of the
    fitting data, class indices 0 .. classes - 1 of the classifier's logits."""

    name = "godin"

    def __init__(self, epochs: int = 30, weight_decay: float = 5e-4, learning_rate: float = 0.1, seed: int = 0):
        super().__init__()
        self.epochs = _count(epochs, "godin: epochs")
        self.weight_decay = _nonnegative(weight_decay, "godin: weight_decay")
        self.learning_rate = _nonnegative(learning_rate, "godin: learning_rate")
        if self.learning_rate == 0:
            raise InputError("godin: learning_rate must be positive")
        self.seed = _count(seed, "godin: seed", 0)
        self.head = None  # the trained Keras model (features -> logits, h, g) after fit, None after a load

    def options(self) -> dict:
        return {"epochs": self.epochs, "weight_decay": self.weight_decay, "learning_rate": self.learning_rate,
                "seed": self.seed}

    def _fit(self, inputs, labels):
        if labels is None:
            raise InputError("godin: the decomposed head is trained on the classes: give the fitting data's "
                             "labels (labels=...)")
        features = _features(self, inputs)
        classes = logits_tensor(self.graph).size
        y = np.asarray(labels).reshape(-1)
        if len(y) != len(features):
            raise InputError(f"godin: {len(y)} labels for {len(features)} inputs")
        if y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= classes:
            raise InputError(f"godin: labels must be class indices 0..{classes - 1} of the model's {classes} "
                             f"logits, got {y.dtype} values in [{y.min()}, {y.max()}]")
        tf = _keras(self.seed)
        f_in = tf.keras.Input((features.shape[1],))
        layer = godin_head(tf, classes, self.weight_decay)
        logits, h, g = layer(f_in)
        _train(tf, tf.keras.Model(f_in, logits), tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
               tf.keras.optimizers.SGD(self.learning_rate, momentum=0.9), features.astype(np.float32),
               y.astype(np.int64), self.epochs, self.seed)
        self.head = tf.keras.Model(f_in, [logits, h, g])
        norm = layer.g_norm
        self._set(np.asarray(layer.w.numpy()), layer.g_linear.kernel.numpy()[:, 0], layer.g_linear.bias.numpy()[0],
                  [norm.gamma.numpy()[0], norm.beta.numpy()[0], norm.moving_mean.numpy()[0],
                   norm.moving_variance.numpy()[0]], norm.epsilon)

    def _set(self, class_weights, g_kernel, g_bias, g_norm, g_epsilon):
        self.class_weights = np.asarray(class_weights, dtype=np.float64)  # (F, classes)
        self.g_kernel = np.asarray(g_kernel, dtype=np.float64)  # (F,)
        self.g_bias = float(g_bias)
        self.g_norm = [float(v) for v in g_norm]  # gamma, beta, moving mean, moving variance
        self.g_epsilon = float(g_epsilon)

    def state(self) -> dict:
        return {"class_weights": self.class_weights.tolist(), "g_kernel": self.g_kernel.tolist(),
                "g_bias": self.g_bias, "g_norm": self.g_norm, "g_epsilon": self.g_epsilon}

    def load_state(self, state: dict) -> None:
        w = _array(state, "class_weights", 2, "godin")
        v = _array(state, "g_kernel", 1, "godin")
        norm = _array(state, "g_norm", 1, "godin")
        rest = _array(state, "g_bias", 0, "godin"), _array(state, "g_epsilon", 0, "godin")
        features, classes = features_tensor(self.graph).size, logits_tensor(self.graph).size
        if w.shape != (features, classes) or v.shape != (features,) or norm.shape != (4,):
            raise InputError(f"godin: the file's head (class weights {list(w.shape)}, g kernel {list(v.shape)}, "
                             f"g norm {list(norm.shape)}) does not fit the model's {features} features and "
                             f"{classes} classes")
        self._set(w, v, rest[0], norm, rest[1])
        self.head = None

    def decomposition(self, x) -> tuple[np.ndarray, np.ndarray]:
        """h (N, classes), the cosines of the features of x with the class weights, and g (N,) in (0, 1),
        by numpy from the learned weights (the model's logits would be h / g[:, None])."""
        if self.graph is None:
            raise InputError(f"{self.name}: fit the detector before scoring")
        f = _features(self, x)
        h = _l2_normalize(f, 1) @ _l2_normalize(self.class_weights, 0)
        gamma, beta, mean, variance = self.g_norm
        z = (f @ self.g_kernel + self.g_bias - mean) / np.sqrt(variance + self.g_epsilon) * gamma + beta
        return h, _sigmoid(z)

    def _score(self, x):
        return -self.decomposition(x)[0].max(axis=1)


# ---------------------------------------------------------------------------------------------------------
# autoencoder reconstruction error


def autoencoder(tf, size: int, bottleneck: int, hidden: int):
    """Dense autoencoder (N, size) -> (N, size): [hidden ReLU] -> bottleneck (linear) -> [hidden ReLU] ->
    size (linear); no hidden layers when hidden is 0. (size + 1) * bottleneck + (bottleneck + 1) * size
    parameters without hidden layers, 2 (size + bottleneck) hidden + 2 hidden + bottleneck + size with."""
    layers = tf.keras.layers
    x = f_in = tf.keras.Input((size,))
    if hidden:
        x = layers.Dense(hidden, activation="relu", name="encode")(x)
    x = layers.Dense(bottleneck, name="bottleneck")(x)
    if hidden:
        x = layers.Dense(hidden, activation="relu", name="decode")(x)
    return tf.keras.Model(f_in, layers.Dense(size, name="reconstruction")(x))


def dense_graph(model) -> Graph:
    """A Keras model of Dense layers (linear or ReLU) as a float32 Graph, FULLY_CONNECTED ops at batch 1:
    what TFLite's converter makes of it, without its seconds of SavedModel export."""
    b = GraphBuilder()
    dense = [layer for layer in model.layers if hasattr(layer, "kernel")]
    x = b.input("x", (1, dense[0].kernel.shape[0]), np.float32)
    for layer in dense:
        activation = layer.get_config()["activation"]
        if activation not in ("linear", "relu"):
            raise ModelError(f"dense layer '{layer.name}' has activation '{activation}', not linear or relu")
        kernel, bias = (np.asarray(w, np.float32) for w in layer.get_weights())
        y = b.activation(layer.name, (1, kernel.shape[1]), np.float32)
        b.op("FULLY_CONNECTED", [x, b.constant(f"{layer.name}/weights", kernel.T.copy()),
                                 b.constant(f"{layer.name}/bias", bias)], [y],
             fused_activation_function="RELU" if activation == "relu" else "NONE")
        x = y
    b.output(x)
    return b.build()


class AutoencoderError(Detector):
    """Reconstruction error of an int8 autoencoder (the "shadow" model beside the classifier):
    score(x) = mean_j (r_j - q_j)^2, (N,), q the AE's dequantized int8 input (the vector v of x's inputs
    or features, quantized), r its dequantized int8 output, in the squared units of v."""

    name = "ae"
    SOURCES = ("input", "features")

    def __init__(self, on: str = "input", bottleneck: int = 4, hidden: int = 16, epochs: int = 100, seed: int = 0):
        super().__init__()
        if on not in self.SOURCES:
            raise InputError(f"ae: on='{on}' is not one of {', '.join(self.SOURCES)}")
        self.on = on
        self.bottleneck = _count(bottleneck, "ae: bottleneck")
        self.hidden = _count(hidden, "ae: hidden", 0)
        self.epochs = _count(epochs, "ae: epochs")
        self.seed = _count(seed, "ae: seed", 0)
        self.ae: Graph | None = None  # the int8 autoencoder, input and output int8 (1, size)

    def options(self) -> dict:
        return {"on": self.on, "bottleneck": self.bottleneck, "hidden": self.hidden, "epochs": self.epochs,
                "seed": self.seed}

    def _source(self) -> Tensor:
        return self.graph.inputs[0] if self.on == "input" else features_tensor(self.graph)

    def vectors(self, x) -> np.ndarray:
        """What the autoencoder reconstructs for x: (N, size) real values, float64."""
        if self.on == "features":
            return _features(self, x)
        return _real(self.graph.inputs[0], _check_batch(self, x))

    def _fit(self, inputs, labels):
        v = self.vectors(inputs).astype(np.float32)
        tf = _keras(self.seed)
        model = autoencoder(tf, v.shape[1], self.bottleneck, self.hidden)
        _train(tf, model, "mse", tf.keras.optimizers.Adam(0.01), v, v, self.epochs, self.seed)
        from microforge.robust.api import quantize

        # calibrated on the data it was trained on: the ranges the deployed AE will see in distribution
        self.ae = quantize(dense_graph(model), v, scheme="int8", io="int8").graph
        self._check_ae(self.ae)

    def _check_ae(self, ae: Graph) -> None:
        source = self._source()
        size = source.size
        if len(ae.inputs) != 1 or len(ae.outputs) != 1:
            raise InputError(f"ae: the saved autoencoder has {len(ae.inputs)} inputs and {len(ae.outputs)} "
                             "outputs, not one of each")
        a_in, a_out = ae.inputs[0], ae.outputs[0]
        for t, what in ((a_in, "input"), (a_out, "output")):
            if t.dtype != np.int8 or t.quant is None or t.quant.per_channel:
                raise InputError(f"ae: the saved autoencoder's {what} '{t.name}' is {t.dtype}, not per-tensor "
                                 "quantized int8")
        if a_in.size != size or a_out.size != size:
            what = "input" if self.on == "input" else "penultimate features"
            raise InputError(f"ae: the saved autoencoder maps {a_in.size} values to {a_out.size}, but the model's "
                             f"{what} '{source.name}' has {size}")

    def reconstruction(self, x) -> tuple[np.ndarray, np.ndarray]:
        """(q, r): the AE's dequantized int8 input and its dequantized int8 output, both (N, size)."""
        if self.graph is None or self.ae is None:
            raise InputError(f"{self.name}: fit the detector before scoring")
        v = self.vectors(x)
        a_in = self.ae.inputs[0]
        q = np.clip(np.round(v / float(a_in.scale)) + a_in.zero_point, -128, 127).astype(np.int8)
        q = q.reshape((len(q),) + tuple(a_in.shape[1:]))
        r = np.asarray(run(self.ae, q))
        return _real(a_in, q), _real(self.ae.outputs[0], r)

    def _score(self, x):
        q, r = self.reconstruction(x)
        return ((r - q) ** 2).mean(axis=1)

    def state(self) -> dict:
        return {"tflite": base64.b64encode(write_tflite(self.ae)).decode("ascii")}

    def load_state(self, state: dict) -> None:
        text = state.get("tflite")
        if not isinstance(text, str):
            raise InputError("ae: the file has no autoencoder (its state needs 'tflite', base64 .tflite bytes)")
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InputError(f"ae: the saved autoencoder is not base64 ({exc})") from None
        try:
            ae = read_tflite(data)
            check_supported(ae)
        except MicroforgeError as exc:
            raise InputError(f"ae: the saved autoencoder is not a model microforge runs: {exc}") from None
        self._check_ae(ae)
        self.ae = ae


# ---------------------------------------------------------------------------------------------------------
# outlier exposure


class OutlierExposure(Detector):
    """Outlier exposure, binary (Hendrycks et al., ICLR 2019): a classifier of the standardised features,
    in-distribution against the given outliers, both weighted equally; score(x) = its OOD logit (N,).

    hidden = 0: logistic regression; else one hidden ReLU layer of that many units."""

    name = "explicit"

    def __init__(self, hidden: int = 16, epochs: int = 50, seed: int = 0):
        super().__init__()
        self.hidden = _count(hidden, "explicit: hidden", 0)
        self.epochs = _count(epochs, "explicit: epochs")
        self.seed = _count(seed, "explicit: seed", 0)
        self._outliers = None

    def options(self) -> dict:
        return {"hidden": self.hidden, "epochs": self.epochs, "seed": self.seed}

    def fit(self, model, inputs, labels=None, outliers=None) -> "OutlierExposure":
        """inputs: in-distribution model inputs; outliers: OOD training inputs (M, *input shape), M >= 1;
        labels are not used."""
        found = None if outliers is None else np.asarray(outliers)
        if found is None or found.ndim == 0 or len(found) == 0:
            raise InputError("explicit: outlier exposure needs OOD training data (outliers=...)")
        self._outliers = found
        try:
            return super().fit(model, inputs, labels)
        finally:
            self._outliers = None  # not kept: the detector holds only what it learned

    def _fit(self, inputs, labels):
        f_id = _features(self, inputs)
        f_out = _features(self, self._outliers, "outliers")
        f = np.concatenate([f_id, f_out])
        self.mean = f.mean(axis=0)
        spread = f.std(axis=0)
        self.std = np.where(spread > 0, spread, 1.0)  # a dead feature stays 0, not 0 / 0
        y = np.r_[np.zeros(len(f_id)), np.ones(len(f_out))].astype(np.float32)
        # each side weighs half, however many samples it has
        weight = np.r_[np.full(len(f_id), len(f) / (2 * len(f_id))),
                       np.full(len(f_out), len(f) / (2 * len(f_out)))]
        tf = _keras(self.seed)
        layers = tf.keras.layers
        x = f_in = tf.keras.Input((f.shape[1],))
        if self.hidden:
            x = layers.Dense(self.hidden, activation="relu")(x)
        model = tf.keras.Model(f_in, layers.Dense(1)(x))
        _train(tf, model, tf.keras.losses.BinaryCrossentropy(from_logits=True), tf.keras.optimizers.Adam(0.01),
               ((f - self.mean) / self.std).astype(np.float32), y[:, None], self.epochs, self.seed, weight)
        self.layers = [(np.asarray(d.kernel.numpy(), np.float64), np.asarray(d.bias.numpy(), np.float64))
                       for d in model.layers if isinstance(d, layers.Dense)]
        self.ranges = self._ranges((f - self.mean) / self.std)

    def _outputs(self, z: np.ndarray) -> list[np.ndarray]:
        """Each layer's output for standardised features z."""
        found = []
        for i, (kernel, bias) in enumerate(self.layers):
            z = z @ kernel + bias
            z = np.maximum(z, 0.0) if i < len(self.layers) - 1 else z
            found.append(z)
        return found

    def _ranges(self, z: np.ndarray) -> list[list[float]]:
        """[lo, hi] of each layer's output on the fitting data, a quarter of the span wider on each side:
        the ranges its int8 form (onchip.py) is quantized over."""
        found = []
        for out in self._outputs(z):
            lo, hi = float(out.min()), float(out.max())
            margin = 0.25 * (hi - lo)
            found.append([lo - margin, hi + margin])
        return found

    def state(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "ranges": self.ranges,
                "layers": [{"kernel": k.tolist(), "bias": b.tolist()} for k, b in self.layers]}

    def load_state(self, state: dict) -> None:
        features = features_tensor(self.graph).size
        mean, std = _array(state, "mean", 1, "explicit"), _array(state, "std", 1, "explicit")
        saved = state.get("layers")
        if not isinstance(saved, list) or not saved or not all(isinstance(d, dict) for d in saved):
            raise InputError("explicit: the file's 'layers' is not a list of {kernel, bias} tables")
        found = [(_array(d, "kernel", 2, "explicit"), _array(d, "bias", 1, "explicit")) for d in saved]
        width, fits = features, mean.shape == std.shape == (features,) and np.all(std > 0)
        for kernel, bias in found:
            fits = fits and kernel.shape[0] == width and bias.shape == (kernel.shape[1],)
            width = kernel.shape[1]
        if not fits or width != 1:
            raise InputError(f"explicit: the file's classifier (mean {list(mean.shape)}, layers "
                             f"{[list(k.shape) for k, _ in found]}) does not map the model's {features} "
                             "features to one logit")
        ranges = _array(state, "ranges", 2, "explicit")
        if ranges.shape != (len(found), 2) or np.any(ranges[:, 0] > ranges[:, 1]):
            raise InputError(f"explicit: the file's 'ranges' {list(ranges.shape)} are not one [lo, hi] per layer "
                             f"of its {len(found)}")
        self.mean, self.std, self.layers, self.ranges = mean, std, found, ranges.tolist()

    def _score(self, x):
        return self._outputs((_features(self, x) - self.mean) / self.std)[-1][:, 0]


DETECTORS.update({GeneralizedOdin.name: GeneralizedOdin, AutoencoderError.name: AutoencoderError,
                  OutlierExposure.name: OutlierExposure})
