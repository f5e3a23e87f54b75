"""Float32 training layers of the back of a split network (numpy reference of the C learner's kernels).

Activations are NHWC float32 with a leading batch N; weights keep TFLite's layouts (CONV_2D (O, KH, KW, I),
DEPTHWISE_CONV_2D (1, KH, KW, I * M), FULLY_CONNECTED (O, I)), so a back layer is the model's own op with its
int8 weights dequantized. Each layer's forward caches what its backward needs; backward takes the loss's
gradient with respect to the layer's output and sets `grads` (same keys as `params`), returning the
gradient with respect to its input unless told it is not needed (the first layer of the back).

Convolutions gather their input windows into patches (N, OH, OW, KH, KW, C), one (kh, kw) slice at a
time, and scatter gradients back the same way: the loop a C kernel runs, with numpy doing the inner
products. All arithmetic stays in float32, as the C does.
"""

from __future__ import annotations

import math

import numpy as np

from microforge.errors import InputError, UnsupportedError

ACTIVATIONS = ("NONE", "RELU", "RELU6")
PADDINGS = ("SAME", "VALID")


def _float32(a, what: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{what} holds NaN or infinity")
    return a


def _pair(v, what: str) -> tuple[int, int]:
    pair = (v, v) if isinstance(v, (int, np.integer)) else tuple(v)
    if len(pair) != 2 or any(isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 1 for p in pair):
        raise InputError(f"{what} must be one or two integers >= 1, not {v!r}")
    return int(pair[0]), int(pair[1])


def output_size(size: int, kernel: int, stride: int, padding: str) -> tuple[int, int]:
    """(output size, padding before) along one axis, as TensorFlow and TFLite compute them."""
    if padding == "VALID":
        return (size - kernel) // stride + 1, 0
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2


class Layer:
    """A back layer: params (trainable float32 arrays by name), grads after backward."""

    name = "layer"

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def output_shape(self, input_shape: tuple) -> tuple:
        raise NotImplementedError

    def _check(self, x: np.ndarray, shape: tuple | None = None) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if x.ndim < 2 or (shape is not None and tuple(x.shape[1:]) != tuple(shape)):
            raise InputError(f"{self.name}: input of shape {list(x.shape)} does not fit "
                             f"{'(N, ...)' if shape is None else [None, *shape]}")
        return x

    def macs(self, input_shape) -> dict:
        return {"forward": 0, "weight_grad": 0, "input_grad": 0}


class _Activated(Layer):
    """A layer with a fused activation: forward keeps the pre-activation for the derivative."""

    def __init__(self, activation: str):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise InputError(f"{self.name}: activation '{activation}' is not one of {', '.join(ACTIVATIONS)}")
        self.activation = activation

    def _activate(self, z: np.ndarray) -> np.ndarray:
        self._z = z
        if self.activation == "RELU":
            return np.maximum(z, np.float32(0))
        if self.activation == "RELU6":
            return np.minimum(np.maximum(z, np.float32(0)), np.float32(6))
        return z

    def _derivative(self, dy: np.ndarray) -> np.ndarray:
        """dy through the activation: TensorFlow's gradients are 1 on 0 < z (RELU) and 0 < z < 6 (RELU6)."""
        z = self._z
        if self.activation == "RELU":
            return np.where(z > 0, dy, np.float32(0)).astype(np.float32)
        if self.activation == "RELU6":
            return np.where((z > 0) & (z < 6), dy, np.float32(0)).astype(np.float32)
        return dy


class _Windowed:
    """Window geometry shared by the convolutions and pooling: patches of an NHWC input and back."""

    def _geometry(self, input_shape, kernel):
        h, w = input_shape[0], input_shape[1]
        (oh, top), (ow, left) = (output_size(h, kernel[0], self.stride[0], self.padding),
                                 output_size(w, kernel[1], self.stride[1], self.padding))
        if oh < 1 or ow < 1:
            raise InputError(f"{self.name}: a {kernel[0]}x{kernel[1]} window does not fit a {h}x{w} input")
        return oh, ow, top, left

    def _patches(self, x: np.ndarray, kernel) -> np.ndarray:
        """(N, OH, OW, KH, KW, C): the input window of every output position (zeros where padded)."""
        n, h, w, c = x.shape
        oh, ow, top, left = self._geometry(x.shape[1:], kernel)
        sh, sw = self.stride
        padded = np.zeros((n, max(h + top, (oh - 1) * sh + kernel[0]), max(w + left, (ow - 1) * sw + kernel[1]), c),
                          np.float32)
        padded[:, top:top + h, left:left + w] = x
        patches = np.empty((n, oh, ow, kernel[0], kernel[1], c), np.float32)
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                patches[:, :, :, i, j] = padded[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
        return patches

    def _scatter(self, d_patches: np.ndarray, input_shape) -> np.ndarray:
        """The input gradient (N, H, W, C) from the patches' gradient: each window's share added back."""
        n, oh, ow, kh, kw, c = d_patches.shape
        h, w = input_shape[0], input_shape[1]
        _, _, top, left = self._geometry(input_shape, (kh, kw))
        sh, sw = self.stride
        padded = np.zeros((n, max(h + top, (oh - 1) * sh + kh), max(w + left, (ow - 1) * sw + kw), c), np.float32)
        for i in range(kh):
            for j in range(kw):
                padded[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw] += d_patches[:, :, :, i, j]
        return padded[:, top:top + h, left:left + w]


def _conv_options(layer, stride, padding) -> None:
    layer.stride = _pair(stride, f"{layer.name}: stride")
    if padding not in PADDINGS:
        raise InputError(f"{layer.name}: padding '{padding}' is not one of {', '.join(PADDINGS)}")
    layer.padding = padding


def _check_dilation(layer, dilation) -> None:
    if _pair(dilation, f"{layer.name}: dilation") != (1, 1):
        raise UnsupportedError(f"{layer.name}: dilated convolutions are not trainable yet (dilation {dilation})")


class Conv2D(_Activated, _Windowed):
    """CONV_2D: weights (O, KH, KW, I), bias (O,)."""

    name = "Conv2D"

    def __init__(self, weights, bias, stride=(1, 1), padding="SAME", activation="NONE", dilation=(1, 1)):
        super().__init__(activation)
        _check_dilation(self, dilation)
        w, b = _float32(weights, f"{self.name}: weights"), _float32(bias, f"{self.name}: bias")
        if w.ndim != 4 or b.shape != (w.shape[0],):
            raise InputError(f"{self.name}: weights {list(w.shape)} and bias {list(b.shape)} are not (O, KH, KW, I) "
                             "and (O,)")
        _conv_options(self, stride, padding)
        self.params = {"weights": w.copy(), "bias": b.copy()}

    def output_shape(self, input_shape):
        oh, ow, _, _ = self._geometry(input_shape, self.params["weights"].shape[1:3])
        return (oh, ow, self.params["weights"].shape[0])

    def forward(self, x):
        w = self.params["weights"]
        x = self._check(x)
        if x.ndim != 4 or x.shape[3] != w.shape[3]:
            raise InputError(f"{self.name}: input of shape {list(x.shape)} does not fit weights {list(w.shape)} "
                             "(give (N, H, W, I))")
        self._input_shape = x.shape[1:]
        self._cols = self._patches(x, w.shape[1:3])
        z = self._cols.reshape(-1, w[0].size) @ w.reshape(len(w), -1).T + self.params["bias"]
        return self._activate(z.reshape(self._cols.shape[:3] + (len(w),)))

    def backward(self, dy, input_grad=True):
        w = self.params["weights"]
        dz = self._derivative(np.asarray(dy, np.float32)).reshape(-1, len(w))
        cols = self._cols.reshape(-1, w[0].size)
        self.grads = {"weights": (dz.T @ cols).reshape(w.shape), "bias": dz.sum(axis=0)}
        if not input_grad:
            return None
        d_cols = (dz @ w.reshape(len(w), -1)).reshape(self._cols.shape)
        return self._scatter(d_cols, self._input_shape)

    def macs(self, input_shape):
        oh, ow, o = self.output_shape(input_shape)
        n = oh * ow * o * self.params["weights"][0].size
        return {"forward": n, "weight_grad": n, "input_grad": n}


class DepthwiseConv2D(_Activated, _Windowed):
    """DEPTHWISE_CONV_2D: weights (1, KH, KW, I * M), bias (I * M,); output channel c * M + m reads input
    channel c."""

    name = "DepthwiseConv2D"

    def __init__(self, weights, bias, depth_multiplier=1, stride=(1, 1), padding="SAME", activation="NONE",
                 dilation=(1, 1)):
        super().__init__(activation)
        _check_dilation(self, dilation)
        w, b = _float32(weights, f"{self.name}: weights"), _float32(bias, f"{self.name}: bias")
        m = depth_multiplier
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
            raise InputError(f"{self.name}: depth multiplier must be an integer >= 1, not {m!r}")
        if w.ndim != 4 or w.shape[0] != 1 or w.shape[3] % m or b.shape != (w.shape[3],):
            raise InputError(f"{self.name}: weights {list(w.shape)} and bias {list(b.shape)} are not (1, KH, KW, I * "
                             f"{m}) and (I * {m},)")
        _conv_options(self, stride, padding)
        self.multiplier = int(m)
        self.params = {"weights": w.copy(), "bias": b.copy()}

    def _kernel(self):
        w = self.params["weights"]
        return w.reshape(w.shape[1], w.shape[2], w.shape[3] // self.multiplier, self.multiplier)  # (KH, KW, I, M)

    def output_shape(self, input_shape):
        oh, ow, _, _ = self._geometry(input_shape, self.params["weights"].shape[1:3])
        return (oh, ow, self.params["weights"].shape[3])

    def forward(self, x):
        k = self._kernel()
        x = self._check(x)
        if x.ndim != 4 or x.shape[3] != k.shape[2]:
            raise InputError(f"{self.name}: input of shape {list(x.shape)} does not fit {k.shape[2]} input channels "
                             "(give (N, H, W, I))")
        self._input_shape = x.shape[1:]
        self._cols = self._patches(x, k.shape[:2])
        z = np.einsum("nhwijc,ijcm->nhwcm", self._cols, k, optimize=True)
        z = z.reshape(z.shape[:3] + (-1,)) + self.params["bias"]
        return self._activate(z.astype(np.float32))

    def backward(self, dy, input_grad=True):
        k = self._kernel()
        dz = self._derivative(np.asarray(dy, np.float32))
        dz5 = dz.reshape(dz.shape[:3] + (k.shape[2], k.shape[3]))
        d_kernel = np.einsum("nhwijc,nhwcm->ijcm", self._cols, dz5, optimize=True).astype(np.float32)
        self.grads = {"weights": d_kernel.reshape(self.params["weights"].shape),
                      "bias": dz.reshape(-1, dz.shape[-1]).sum(axis=0)}
        if not input_grad:
            return None
        d_cols = np.einsum("nhwcm,ijcm->nhwijc", dz5, k, optimize=True).astype(np.float32)
        return self._scatter(d_cols, self._input_shape)

    def macs(self, input_shape):
        oh, ow, channels = self.output_shape(input_shape)
        w = self.params["weights"]
        n = oh * ow * channels * w.shape[1] * w.shape[2]
        return {"forward": n, "weight_grad": n, "input_grad": n}


class Dense(_Activated):
    """FULLY_CONNECTED: weights (O, I), bias (O,); the input's per-sample values flattened to I."""

    name = "Dense"

    def __init__(self, weights, bias, activation="NONE"):
        super().__init__(activation)
        w, b = _float32(weights, f"{self.name}: weights"), _float32(bias, f"{self.name}: bias")
        if w.ndim != 2 or b.shape != (w.shape[0],):
            raise InputError(f"{self.name}: weights {list(w.shape)} and bias {list(b.shape)} are not (O, I) and (O,)")
        self.params = {"weights": w.copy(), "bias": b.copy()}

    def output_shape(self, input_shape):
        return (self.params["weights"].shape[0],)

    def forward(self, x):
        w = self.params["weights"]
        x = self._check(x)
        if x[0].size != w.shape[1]:
            raise InputError(f"{self.name}: input of shape {list(x.shape)} has {x[0].size} values per sample; the "
                             f"weights {list(w.shape)} take {w.shape[1]}")
        self._input_shape = x.shape[1:]
        self._x = x.reshape(len(x), -1)
        return self._activate(self._x @ w.T + self.params["bias"])

    def backward(self, dy, input_grad=True):
        dz = self._derivative(np.asarray(dy, np.float32))
        self.grads = {"weights": dz.T @ self._x, "bias": dz.sum(axis=0)}
        if not input_grad:
            return None
        return (dz @ self.params["weights"]).reshape((len(dz),) + tuple(self._input_shape))

    def macs(self, input_shape):
        n = self.params["weights"].size
        return {"forward": n, "weight_grad": n, "input_grad": n}


class AveragePool2D(Layer, _Windowed):
    """AVERAGE_POOL_2D as TFLite computes it: SAME padding averages only the window's valid elements."""

    name = "AveragePool2D"

    def __init__(self, filter=(2, 2), stride=(2, 2), padding="VALID"):  # noqa: A002 (TFLite's own name)
        super().__init__()
        self.filter = _pair(filter, f"{self.name}: filter")
        _conv_options(self, stride, padding)

    def output_shape(self, input_shape):
        oh, ow, _, _ = self._geometry(input_shape, self.filter)
        return (oh, ow, input_shape[2])

    def _counts(self, input_shape) -> np.ndarray:
        """(OH, OW, 1): valid input elements under each window."""
        ones = np.ones((1,) + tuple(input_shape[:2]) + (1,), np.float32)
        return self._patches(ones, self.filter).sum(axis=(3, 4))[0]

    def forward(self, x):
        x = self._check(x)
        if x.ndim != 4:
            raise InputError(f"{self.name}: input of shape {list(x.shape)} is not (N, H, W, C)")
        self._input_shape = x.shape[1:]
        self._count = self._counts(x.shape[1:])
        return (self._patches(x, self.filter).sum(axis=(3, 4)) / self._count).astype(np.float32)

    def backward(self, dy, input_grad=True):
        self.grads = {}
        if not input_grad:
            return None
        share = (np.asarray(dy, np.float32) / self._count)[:, :, :, None, None, :]
        d_cols = np.broadcast_to(share, share.shape[:3] + self.filter + share.shape[-1:])
        return self._scatter(np.ascontiguousarray(d_cols, np.float32), self._input_shape)

    def macs(self, input_shape):
        oh, ow, c = self.output_shape(input_shape)
        n = oh * ow * c * self.filter[0] * self.filter[1]  # additions
        return {"forward": n, "weight_grad": 0, "input_grad": n}


class Reshape(Layer):
    """RESHAPE to a per-sample shape."""

    name = "Reshape"

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(int(v) for v in shape)

    def output_shape(self, input_shape):
        if int(np.prod(input_shape)) != int(np.prod(self.shape)):
            raise InputError(f"{self.name}: {list(input_shape)} cannot become {list(self.shape)}")
        return self.shape

    def forward(self, x):
        x = self._check(x)
        self.output_shape(x.shape[1:])
        self._input_shape = x.shape[1:]
        return x.reshape((len(x),) + self.shape)

    def backward(self, dy, input_grad=True):
        self.grads = {}
        return None if not input_grad else np.asarray(dy, np.float32).reshape((len(dy),) + tuple(self._input_shape))


class Sequential:
    """Layers run in order; backward in reverse, the first layer's input gradient skipped by default."""

    def __init__(self, layers: list[Layer]):
        self.layers = list(layers)

    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy: np.ndarray, input_grad: bool = False) -> np.ndarray | None:
        for i in range(len(self.layers) - 1, -1, -1):
            dy = self.layers[i].backward(dy, input_grad=input_grad or i > 0)
        return dy

    def params(self) -> list[tuple[Layer, str, np.ndarray]]:
        return [(layer, name, a) for layer in self.layers for name, a in layer.params.items()]


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean over the batch of -log softmax(logits)[label], and its gradient with respect to the logits."""
    z = np.asarray(logits, np.float32)
    y = np.asarray(labels).reshape(-1)
    if z.ndim != 2 or len(y) != len(z):
        raise InputError(f"softmax cross-entropy: logits {list(z.shape)} and {len(y)} labels are not (N, classes) "
                         "and N")
    if len(y) and (y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= z.shape[1]):
        raise InputError(f"softmax cross-entropy: labels must be class indices 0..{z.shape[1] - 1}")
    shifted = z - z.max(axis=1, keepdims=True)  # exp never overflows
    log_sum = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_p = shifted - log_sum
    rows = np.arange(len(y))
    loss = float(-log_p[rows, y].mean()) if len(y) else 0.0
    grad = np.exp(log_p)
    grad[rows, y] -= 1
    return loss, (grad / np.float32(max(len(y), 1))).astype(np.float32)


class SGD:
    """Stochastic gradient descent as tf.keras.optimizers.SGD: v = momentum v - lr g, w = w + v (w - lr g
    without momentum); one velocity per parameter, float32."""

    def __init__(self, learning_rate: float, momentum: float = 0.0):
        if not np.isfinite(learning_rate) or learning_rate <= 0 or not 0 <= momentum < 1:
            raise InputError(f"SGD: need learning_rate > 0 and 0 <= momentum < 1, got {learning_rate}, {momentum}")
        self.learning_rate, self.momentum = np.float32(learning_rate), np.float32(momentum)
        self.velocity: dict[tuple[int, str], np.ndarray] = {}

    def step(self, model: Sequential) -> None:
        for layer, name, w in model.params():
            g = layer.grads[name]
            if self.momentum == 0:
                w -= self.learning_rate * g
                continue
            key = (id(layer), name)
            v = self.velocity.setdefault(key, np.zeros_like(w))
            v *= self.momentum
            v -= self.learning_rate * g
            w += v

    def state(self) -> dict:
        return self.velocity
