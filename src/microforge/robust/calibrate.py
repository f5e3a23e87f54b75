"""Calibration: the range of real values each activation takes on a set of inputs, and how to clip it.

The float model runs on the reference interpreter over the calibration batch; a `RangeObserver` sees every
tensor as it is computed and keeps its extremes plus a bounded random sample of its values. A range method
then picks the interval the quantized tensor will represent:

- `minmax`: the observed extremes (TFLite's converter does this for activations).
- `percentile`: the 0.01% and 99.99% quantiles of the sample, never wider than the extremes; outliers
  saturate instead of coarsening every other value.
- `mse`: the extremes shrunk by the factor (of 64, geometrically from 0.01 to 1) that minimises the squared
  error of quantizing the sample to the scheme's integer grid.
Every interval contains 0, because the TFLite spec needs an exactly representable zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from microforge.errors import InputError
from microforge.graph.ir import Tensor

METHODS = ("minmax", "percentile", "mse")
SAMPLE_SIZE = 1 << 17  # values kept per tensor for percentile / mse: enough for 4 significant quantiles
PERCENTILE = 99.99
MSE_FACTORS = np.geomspace(0.01, 1.0, 64)


@dataclass
class TensorStats:
    low: float
    high: float
    samples: list[np.ndarray]

    def sample(self) -> np.ndarray:
        values = np.concatenate(self.samples)
        return values[:SAMPLE_SIZE]


class RangeObserver:
    """An interpreter observer: extremes and a random sample of every float tensor it sees, by index."""

    def __init__(self, seed: int = 0):
        self.stats: dict[int, TensorStats] = {}
        self.rng = np.random.default_rng(seed)

    def __call__(self, tensor: Tensor, value: np.ndarray) -> None:
        if value.dtype != np.float32:
            return
        flat = value.reshape(-1)
        finite = flat[np.isfinite(flat)]
        if finite.size != flat.size:
            raise InputError(f"tensor '{tensor.name}' takes non-finite values on the calibration data")
        low, high = float(finite.min()), float(finite.max())
        pick = finite if finite.size <= SAMPLE_SIZE else self.rng.choice(finite, SAMPLE_SIZE, replace=False)
        entry = self.stats.get(tensor.index)
        if entry is None:
            self.stats[tensor.index] = TensorStats(low, high, [pick])
        else:
            entry.low, entry.high = min(entry.low, low), max(entry.high, high)
            entry.samples.append(pick)

    def range(self, tensor: Tensor, method: str, bits: int, symmetric: bool) -> tuple[float, float]:
        """The real interval [low, high] `tensor` is quantized to, with 0 inside it."""
        stats = self.stats[tensor.index]
        low, high = min(stats.low, 0.0), max(stats.high, 0.0)
        if method == "minmax":
            return low, high
        values = stats.sample()
        if method == "percentile":
            lo_q, hi_q = np.percentile(values, [100.0 - PERCENTILE, PERCENTILE])
            return min(max(float(lo_q), low), 0.0), max(min(float(hi_q), high), 0.0)
        if method == "mse":
            return best_mse_range(values, low, high, bits, symmetric)
        raise InputError(f"range method '{method}' is not one of {', '.join(METHODS)}")


def affine_parameters(low: float, high: float, bits: int, symmetric: bool) -> tuple[float, int]:
    """(scale, zero_point) mapping [low, high] onto the signed `bits`-bit grid, as TFLite's converter does.

    Asymmetric: scale = (high - low) / (2^bits - 1) and the zero point nudged to the integer that makes
    real 0 exact. Symmetric (int16 activations, weights): scale = max|.| / (2^(bits-1) - 1), zero point 0.
    A tensor that is always 0 gets scale 1 / qmax so its multipliers stay in range.
    """
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if symmetric:
        bound = max(abs(low), abs(high))
        return (bound / qmax if bound > 0 else 1.0 / qmax), 0
    if high - low <= 0:
        return 1.0 / qmax, 0
    scale = (high - low) / (qmax - qmin)
    zero_point = int(np.clip(np.round(qmin - low / scale), qmin, qmax))
    return scale, zero_point


def fake_quantize(values: np.ndarray, scale: float, zero_point: int, bits: int) -> np.ndarray:
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    q = np.clip(np.round(values / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def best_mse_range(values: np.ndarray, low: float, high: float, bits: int, symmetric: bool) -> tuple[float, float]:
    """The extremes shrunk by the factor in MSE_FACTORS with the least quantization MSE on `values`."""
    values = values.astype(np.float64)
    best, best_error = (low, high), np.inf
    for factor in MSE_FACTORS:
        lo, hi = low * factor, high * factor
        scale, zero_point = affine_parameters(lo, hi, bits, symmetric)
        error = float(np.mean((fake_quantize(values, scale, zero_point, bits) - values) ** 2))
        if error < best_error:
            best, best_error = (lo, hi), error
    return best
