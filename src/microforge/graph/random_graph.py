"""Random int8 graphs shaped like real tinyML models: conv stacks with branches, residual adds, concats.

Differential tests run them through microforge and TFLite Micro; the planner's benchmark plans them.
Quantization is chosen so values spread over the int8 range instead of saturating, which is what makes a
byte-for-byte comparison meaningful.
"""

from __future__ import annotations

import math

import numpy as np

from microforge.graph.builder import GraphBuilder
from microforge.graph.ir import Graph, Tensor

ACTIVATIONS = ("NONE", "RELU", "RELU6")


def conv_output_size(size: int, kernel: int, stride: int, dilation: int, padding: str) -> int:
    effective = (kernel - 1) * dilation + 1
    if padding == "SAME":
        return (size + stride - 1) // stride
    return (size - effective + stride) // stride


class _RandomGraph:
    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.b = GraphBuilder()
        self.count = 0
        self.spread: dict[int, float] = {}  # tensor index -> estimated standard deviation of its real values

    def name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}_{self.count}"

    def activation(self, shape, spread: float) -> Tensor:
        """A new int8 tensor whose real values spread about `spread`: +-1.5 sigma fill the int8 range
        (the estimate runs high: activations clip half the values and spread less than it assumes)."""
        spread = min(max(spread, 1e-2), 1e2)  # deep graphs must not drift toward zero or infinite scales
        scale = spread * 1.5 / 128 * float(self.rng.uniform(0.7, 1.4))
        zero_point = int(self.rng.integers(-20, 21))
        t = self.b.activation(self.name("t"), shape, np.int8, scale=scale, zero_point=zero_point)
        self.spread[t.index] = spread
        return t

    def same_quantization(self, x: Tensor, shape) -> Tensor:
        t = self.b.activation(self.name("t"), shape, np.int8, scale=x.scale, zero_point=x.zero_point)
        self.spread[t.index] = self.spread[x.index]
        return t

    def conv(self, x: Tensor, out_channels: int | None = None, depthwise: bool = False, same: bool = False) -> Tensor:
        rng = self.rng
        _, h, w, cin = x.shape
        k = int(rng.choice([1, 3, 5])) if not same else int(rng.choice([1, 3]))
        stride = 1 if same else int(rng.choice([1, 1, 2]))
        dilation = 1 if same or stride > 1 or k == 1 else int(rng.choice([1, 1, 2]))
        padding = "SAME" if same else str(rng.choice(["SAME", "VALID"]))
        oh, ow = (conv_output_size(s, k, stride, dilation, padding) for s in (h, w))
        if oh < 1 or ow < 1:
            padding, (oh, ow) = "SAME", (conv_output_size(s, k, stride, dilation, "SAME") for s in (h, w))
        multiplier = 1
        if depthwise:
            multiplier = 1 if same or out_channels else int(rng.choice([1, 1, 2]))
            cout = cin * multiplier
            weights = rng.integers(-127, 128, size=(1, k, k, cout), dtype=np.int8)
            taps = k * k
        else:
            cout = out_channels or int(rng.integers(1, 17))
            weights = rng.integers(-127, 128, size=(cout, k, k, cin), dtype=np.int8)
            taps = k * k * cin
        w_scale = rng.uniform(0.002, 0.02, size=cout).astype(np.float32)
        w = self.b.constant(self.name("w"), weights, scale=w_scale, zero_point=np.zeros(cout, np.int64),
                            axis=3 if depthwise else 0)
        bias_scale = (x.scale * w_scale.astype(np.float64)).astype(np.float32)
        bias = self.b.constant(self.name("b"), rng.integers(-3000, 3000, size=cout, dtype=np.int32),
                               scale=bias_scale, zero_point=np.zeros(cout, np.int64))
        # Uniform int8 weights have a standard deviation of about 73 steps.
        y = self.activation((1, oh, ow, cout), math.sqrt(taps) * self.spread[x.index] * float(w_scale.mean()) * 73)
        options = dict(padding=padding, stride_w=stride, stride_h=stride, dilation_w_factor=dilation,
                       dilation_h_factor=dilation, fused_activation_function=self.fused_activation(y))
        if depthwise:
            self.b.op("DEPTHWISE_CONV_2D", [x, w, bias], [y], depth_multiplier=multiplier, **options)
        else:
            self.b.op("CONV_2D", [x, w, bias], [y], **options)
        return y

    def fused_activation(self, y: Tensor) -> str:
        """RELU6 only where 6.0 spans several int8 steps; otherwise it would flatten the tensor."""
        allowed = ACTIVATIONS if y.scale < 6.0 / 32 else ACTIVATIONS[:2]
        return str(self.rng.choice(allowed))

    def pool(self, x: Tensor) -> Tensor:
        _, h, w, c = x.shape
        k = int(self.rng.choice([2, 3]))
        stride = int(self.rng.choice([1, 2]))
        padding = str(self.rng.choice(["SAME", "VALID"])) if min(h, w) >= k else "SAME"
        oh, ow = (conv_output_size(s, k, stride, 1, padding) for s in (h, w))
        y = self.same_quantization(x, (1, oh, ow, c))
        kind = str(self.rng.choice(["AVERAGE_POOL_2D", "MAX_POOL_2D"]))
        self.b.op(kind, [x], [y], padding=padding, stride_w=stride, stride_h=stride, filter_width=k,
                  filter_height=k)
        return y

    def residual(self, x: Tensor) -> Tensor:
        """Two shape-preserving branches joined by ADD, as in ResNet blocks."""
        left = self.conv(x, out_channels=x.shape[3], same=True)
        right = x if self.rng.random() < 0.5 else self.conv(x, depthwise=True, same=True)
        y = self.activation(left.shape, math.hypot(self.spread[left.index], self.spread[right.index]))
        self.b.op("ADD", [left, right], [y], fused_activation_function=self.fused_activation(y))
        return y

    def inception(self, x: Tensor) -> Tensor:
        """Parallel branches concatenated along channels, as in Inception blocks."""
        branches = [self.conv(x, same=True) for _ in range(int(self.rng.integers(2, 4)))]
        first = branches[0]
        aligned = []
        for t in branches:  # TFLM concatenates int8 tensors that share the output's quantization
            if t.scale != first.scale or t.zero_point != first.zero_point:
                q = self.same_quantization(first, t.shape)
                self.b.op("QUANTIZE", [t], [q])
                t = q
            aligned.append(t)
        channels = sum(t.shape[3] for t in aligned)
        y = self.same_quantization(first, x.shape[:3] + (channels,))
        self.b.op("CONCATENATION", aligned, [y], axis=3)
        return y

    def head(self, x: Tensor, classes: int) -> Tensor:
        """Global average, fully connected, softmax: the usual classifier head."""
        _, h, w, c = x.shape
        pooled = self.same_quantization(x, (1, 1, 1, c))
        self.b.op("AVERAGE_POOL_2D", [x], [pooled], filter_width=w, filter_height=h, padding="VALID")
        flat = self.same_quantization(x, (1, c))
        shape = self.b.constant(self.name("shape"), np.array([1, c], np.int32))
        self.b.op("RESHAPE", [pooled, shape], [flat], new_shape=[1, c])
        w_scale = float(self.rng.uniform(0.002, 0.02))
        weights = self.b.constant(self.name("fc_w"), self.rng.integers(-127, 128, (classes, c), dtype=np.int8),
                                  scale=w_scale, zero_point=0)
        bias = self.b.constant(self.name("fc_b"), self.rng.integers(-3000, 3000, classes, dtype=np.int32),
                               scale=np.float32(x.scale * w_scale), zero_point=0)
        logits = self.activation((1, classes), math.sqrt(c) * self.spread[x.index] * w_scale * 73)
        self.b.op("FULLY_CONNECTED", [flat, weights, bias], [logits])
        probs = self.b.activation(self.name("probs"), (1, classes), np.int8, scale=1 / 256, zero_point=-128)
        # beta scales the logits to a spread of about 2, so probabilities are not all one-hot
        self.b.op("SOFTMAX", [logits], [probs], beta=2.0 / self.spread[logits.index])
        return probs


def random_graph(seed: int, blocks: int | None = None, size: int | None = None, with_head: bool | None = None) -> Graph:
    """A random int8 NHWC graph: a stem conv, `blocks` random blocks, optionally a classifier head."""
    rng = np.random.default_rng(seed)
    g = _RandomGraph(rng)
    blocks = int(rng.integers(1, 6)) if blocks is None else blocks
    side = int(rng.integers(4, 17)) if size is None else size
    x = g.b.input("input", (1, side, side, int(rng.integers(1, 5))), np.int8,
                  scale=float(rng.uniform(0.005, 0.05)), zero_point=int(rng.integers(-20, 21)))
    g.spread[x.index] = x.scale * 74  # uniform int8 inputs
    y = g.conv(x)
    for _ in range(blocks):
        kind = rng.choice(["conv", "depthwise", "pool", "residual", "inception"])
        if kind == "pool" and min(y.shape[1:3]) < 2:
            kind = "conv"
        y = {"conv": lambda t: g.conv(t), "depthwise": lambda t: g.conv(t, depthwise=True), "pool": g.pool,
             "residual": g.residual, "inception": g.inception}[str(kind)](y)
    if with_head if with_head is not None else rng.random() < 0.5:
        y = g.head(y, int(rng.integers(2, 11)))
    g.b.output(y)
    return g.b.build()
