"""Reference kernels of microforge's on-chip out-of-distribution scores: integer ops that
robust.ood.onchip appends to a classifier's graph, so the reference interpreter, the generated C and
`validate` treat the score like any other output (the C equals these kernels byte for byte).

Every op reads one int8 activation (the logits or the penultimate features, per tensor quantized,
flattened) and writes an int32 score of shape (1,), higher = more likely OOD; MF_OOD_FLAG turns a score
into an int8 flag. The constants (tables, means, weights, shifts) are op options, made by onchip.py from
the fitted float detector; the ops themselves only do integer arithmetic:

- MF_OOD_MAXLOGIT: zp - max q (the float max-logit score in units of the logits' scale).
- MF_OOD_MSP: with m = max q and S = sum_i E[m - q_i], where E[d] = round(2^15 exp(-scale d)) (0 past
  the table's end), -floor(2^30 / S): minus the maximum softmax probability in Q15.
- MF_OOD_ENERGY: the same S with E[d] = round(2^15 exp(-scale d / T)); -(64 (m - zp) +
  round((log2_q16(S) - 15 * 2^16) * log_weight / 2^16)), log_weight = round(64 T ln 2 / scale): the
  energy -T logsumexp(logits / T) in units of scale / 64.
- MF_OOD_DISTANCE: the diagonal Mahalanobis distance to the nearest class mean: with d = 16 q_j -
  means[c, j] (the means in sixteenths of the features' integer steps), min over c of
  (sum_j weights[j] d^2) >> shift, in uint64 (bounded by onchip.py so the score fits int32).
- MF_OOD_COSINE: minus the largest cosine between the features and a class's weights, in Q15: with
  c = q - zp, dot_k = sum_j c_j weights[k, j] (int8 weights), |c| = isqrt(2^16 sum_j c_j^2) (|c| in
  1/256) and norms[k] the weights' norms in 1/256, -max_k trunc(2^31 dot_k / (|c| norms[k])); 0 for c = 0.
- MF_OOD_SQUARED_ERROR: sum_j (a_j - b_j)^2 of two int8 tensors of one quantization (an autoencoder's
  input and its output requantized to it): the reconstruction error in squared steps of that scale.
- MF_OOD_FLAG: 1 if score > threshold else 0.
"""

from __future__ import annotations

import math

import numpy as np

from microforge.errors import ModelError
from microforge.graph.ir import Op
from microforge.reference.registry import kernel

Q15 = 1 << 15
LOG2_FRACTION_BITS = 16
ENERGY_UNIT_BITS = 6  # energy scores count scale / 64
MEAN_FRACTION_BITS = 4  # the class means in 1/16 of a feature's integer step


def log2_q16(x: np.ndarray) -> np.ndarray:
    """floor(2^16 log2 x) for integers 1 <= x < 2^32, bit by bit: the mantissa y in [1, 2) as Q30 is
    squared 16 times, each square above 2 giving the next fraction bit (and halved). The C does the
    same 32 x 32 -> 64-bit products, so both agree exactly."""
    x = np.asarray(x, dtype=np.uint64)
    exponent, rest = np.zeros(x.shape, dtype=np.int64), x.copy()
    for bit in (16, 8, 4, 2, 1):  # floor(log2 x) by halving the bit range
        high = rest >= np.uint64(1 << bit)
        rest = np.where(high, rest >> np.uint64(bit), rest)
        exponent += high * bit
    up = np.clip(30 - exponent, 0, None).astype(np.uint64)
    down = np.clip(exponent - 30, 0, None).astype(np.uint64)
    y = (x << up) >> down
    fraction = np.zeros(x.shape, dtype=np.int64)
    two = np.uint64(1 << 31)
    for i in range(LOG2_FRACTION_BITS):
        y = (y * y) >> np.uint64(30)
        above = y >= two
        y = np.where(above, y >> np.uint64(1), y)
        fraction |= above.astype(np.int64) << (LOG2_FRACTION_BITS - 1 - i)
    return (exponent << LOG2_FRACTION_BITS) | fraction


def _logits(op: Op, args: list) -> tuple[np.ndarray, int]:
    """The op's int8 input as (N, count) int64 and its zero point."""
    src = op.inputs[0]
    if src.dtype != np.int8 or src.quant is None or src.quant.per_channel:
        raise ModelError(f"{op.where}: the OOD score reads per-tensor int8 values; '{src.name}' is {src.dtype}")
    return args[0].reshape(len(args[0]), -1).astype(np.int64), src.zero_point


def exp_sum(op: Op, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(max q, sum_i E[max q - q_i]) per sample, E the op's Q15 table (0 past its end)."""
    table = np.asarray(op.options["exp_table"], dtype=np.int64)
    top = q.max(axis=1, keepdims=True)
    d = top - q
    terms = np.where(d < len(table), table[np.minimum(d, len(table) - 1)], 0)
    return top[:, 0], terms.sum(axis=1)


def _score(values: np.ndarray) -> np.ndarray:
    return values.astype(np.int32).reshape(-1, 1)


@kernel("MF_OOD_MAXLOGIT", dtypes=("int8",))
def ood_maxlogit(op: Op, args: list) -> np.ndarray:
    q, zp = _logits(op, args)
    return _score(zp - q.max(axis=1))


@kernel("MF_OOD_MSP", dtypes=("int8",))
def ood_msp(op: Op, args: list) -> np.ndarray:
    q, _ = _logits(op, args)
    _, total = exp_sum(op, q)
    return _score(-((1 << 30) // total))


@kernel("MF_OOD_ENERGY", dtypes=("int8",))
def ood_energy(op: Op, args: list) -> np.ndarray:
    q, zp = _logits(op, args)
    top, total = exp_sum(op, q)
    excess = log2_q16(total) - (15 << LOG2_FRACTION_BITS)  # >= 0: the sum holds the max's own 2^15
    log_term = (excess * int(op.options["log_weight"]) + (1 << 15)) >> 16
    return _score(-(((top - zp) << ENERGY_UNIT_BITS) + log_term))


@kernel("MF_OOD_DISTANCE", dtypes=("int8",))
def ood_distance(op: Op, args: list) -> np.ndarray:
    q, _ = _logits(op, args)
    means = np.asarray(op.options["means"], dtype=np.int64)  # (classes, features)
    weights = np.asarray(op.options["weights"], dtype=np.uint64)
    d = (q[:, None, :] << MEAN_FRACTION_BITS) - means[None]
    squares = (d * d).astype(np.uint64)
    distances = (squares * weights).sum(axis=2, dtype=np.uint64) >> np.uint64(int(op.options["shift"]))
    return _score(distances.min(axis=1).astype(np.int64))


COSINE_BITS = 31  # 2^31 dot / (|c| |w|) with both norms in 1/256: the cosine in Q15


def _isqrt(values: np.ndarray) -> np.ndarray:
    """floor(sqrt(v)) of non-negative int64 values, exactly (the C's bit-by-bit square root)."""
    return np.array([math.isqrt(int(v)) for v in values.reshape(-1)], dtype=np.int64).reshape(values.shape)


@kernel("MF_OOD_COSINE", dtypes=("int8",))
def ood_cosine(op: Op, args: list) -> np.ndarray:
    q, zp = _logits(op, args)
    c = q - zp
    weights = np.asarray(op.options["weights"], dtype=np.int64)  # (classes, features)
    norms = np.asarray(op.options["norms"], dtype=np.int64)  # (classes,)
    dot = c @ weights.T  # (N, classes)
    length = _isqrt((c * c).sum(axis=1) << 16)[:, None]  # (N, 1)
    denominator = np.maximum(length * norms[None], 1)
    # truncation towards zero, as C's integer division
    cosine = np.sign(dot) * ((np.abs(dot) << COSINE_BITS) // denominator)
    return _score(np.where(length[:, 0] > 0, -cosine.max(axis=1), 0))


@kernel("MF_OOD_SQUARED_ERROR", dtypes=("int8",))
def ood_squared_error(op: Op, args: list) -> np.ndarray:
    a_t, b_t = op.inputs
    if (a_t.dtype != np.int8 or b_t.dtype != np.int8 or a_t.quant is None or b_t.quant is None
            or a_t.size != b_t.size or float(a_t.scale) != float(b_t.scale) or a_t.zero_point != b_t.zero_point):
        raise ModelError(f"{op.where}: the squared error reads two int8 tensors of one size and quantization; "
                         f"'{a_t.name}' and '{b_t.name}' are not")
    a = args[0].reshape(len(args[0]), -1).astype(np.int64)
    b = args[1].reshape(len(args[1]), -1).astype(np.int64)
    return _score(((a - b) ** 2).sum(axis=1))


@kernel("MF_OOD_FLAG", dtypes=("int32",))
def ood_flag(op: Op, args: list) -> np.ndarray:
    return (args[0].reshape(-1, 1) > int(op.options["threshold"])).astype(np.int8)
