"""The on-chip form of a fitted OOD detector: integer score ops appended to the classifier's graph.

`chip_graph(detector)` is the detector's model with two more outputs after its own: `ood_score` (int32,
shape (1,), higher = more likely OOD) and `ood_flag` (int8, 1 when the score is above the detector's
integer threshold). The score ops (reference/ood.py defines them; codegen/ops/ood.py lowers them) read
the model's int8 logits or penultimate features, so the reference interpreter, the generated C and
`validate` run and compare the score like any other output: what the chip computes is proven equal to the
reference byte for byte, and its cost is the difference to the model without it.

Each integer score follows its float detector (detectors.py) to within the quantization of its constants:
real score ~= unit * integer score, with `unit` from `chip_score`:
- maxlogit: exact (the logits are int8): zp - max q in units of the logits' scale;
- msp: -max softmax in Q15, from a table of exp over the 256 possible differences to the max logit;
- energy: in units of scale / 64, from the same kind of table (at the temperature) and an integer log2;
- mahalanobis, diagonal form: class means in 1/16 of the features' integer steps, the precision as
  16-bit weights, a 64-bit sum per class shifted down so the nearest fits int32;
- mahalanobis, full and low-rank forms: the features whitened first by an int8 FULLY_CONNECTED with the
  transposed Cholesky factor of the precision (per-channel weights; the whitened features quantized over
  the class means' range plus 6 standard deviations, which whitening makes 1), then the same distance
  with equal weights: (f - mu)' P (f - mu) = |L'f - L'mu|^2 for P = L L'.
- godin: -max_k cos(f, w_k) in Q15, each class's unit weight vector as int8 and an integer square root
  for |f| (MF_OOD_COSINE);
- explicit: its head as int8 FULLY_CONNECTED ops (the standardisation folded into the first, quantized
  over the fitting data's ranges), the last negated so MF_OOD_MAXLOGIT counts the OOD logit;
- ae: the int8 autoencoder's ops spliced in after a requantization of the model's int8 input or features
  to the autoencoder's input, its output requantized to that too; MF_OOD_SQUARED_ERROR sums the squared
  differences (in squared steps of that scale).
The integer threshold is fitted on the integer scores of the fitting data (95% of it kept), so the flag
on the chip keeps what the float threshold keeps in the reference, up to those roundings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from microforge.errors import InputError, UnsupportedError
from microforge.graph.builder import DEFAULT_OPTIONS
from microforge.graph.ir import Graph, Op, Quantization, Tensor
from microforge.reference.interpreter import run
from microforge.reference.ood import ENERGY_UNIT_BITS, MEAN_FRACTION_BITS, Q15
from microforge.robust.ood import detectors as det
from microforge.robust.ood.metrics import threshold_at_tpr

SCORE_NAME, FLAG_NAME = "ood_score", "ood_flag"
MAX_SOFTMAX_COUNT = (1 << 32) // Q15 - 1  # the exp sum of the C kernels stays below 2^32


@dataclass
class ChipScore:
    op_type: str
    source: Tensor  # the int8 tensor the score reads
    options: dict
    unit: float  # real score ~= unit * integer score
    prelude: list[Op] = field(default_factory=list)  # ops that make `source` (whitening), run first
    other: Tensor | None = None  # the second input of a two-input score (the reconstruction)


def _int8_source(detector, t: Tensor, what: str) -> Tensor:
    producer = det._producer(detector.graph, t)
    if (t.dtype != np.int8 or t.quant is None or t.quant.per_channel
            or (producer is not None and producer.options.get("dynamic_fixed_point"))):
        raise UnsupportedError(f"{detector.name}: the on-chip score reads int8 {what} (per-tensor, static); the "
                               f"model's '{t.name}' is {t.dtype}: quantize the model to int8 first")
    return t


def exp_table(scale: float, temperature: float = 1.0) -> np.ndarray:
    """E[d] = round(2^15 exp(-scale d / T)) for d = 0..255, without its trailing zeros (uint16)."""
    table = np.round(Q15 * np.exp(-float(scale) * np.arange(256) / temperature)).astype(np.int64)
    return table[:max(1, int(np.count_nonzero(table)))].astype(np.uint16)


def _softmax_source(detector) -> Tensor:
    src = _int8_source(detector, det.logits_tensor(detector.graph), "logits")
    if src.size > MAX_SOFTMAX_COUNT:
        raise UnsupportedError(f"{detector.name}: {src.size} logits are more than the on-chip score sums "
                               f"({MAX_SOFTMAX_COUNT})")
    return src


def chip_score(detector) -> ChipScore:
    """The integer score op of a fitted detector. Raises UnsupportedError for a detector (or form)
    without an on-chip score, or a model whose logits/features are not int8."""
    if detector.graph is None:
        raise InputError(f"{detector.name}: fit the detector before putting it on the chip")
    if isinstance(detector, det.MaxLogit):
        src = _int8_source(detector, det.logits_tensor(detector.graph), "logits")
        return ChipScore("MF_OOD_MAXLOGIT", src, {}, float(src.scale))
    if isinstance(detector, det.MaxSoftmax):
        src = _softmax_source(detector)
        return ChipScore("MF_OOD_MSP", src, {"exp_table": exp_table(src.scale)}, 1.0 / Q15)
    if isinstance(detector, det.Energy):
        src, t = _softmax_source(detector), detector.temperature
        log_weight = int(round((1 << ENERGY_UNIT_BITS) * t * math.log(2) / float(src.scale)))
        if not 0 < log_weight < 1 << 30:
            raise UnsupportedError(f"energy: temperature {t} and logit scale {float(src.scale):g} give an "
                                   f"on-chip log weight {log_weight} outside (0, 2^30)")
        return ChipScore("MF_OOD_ENERGY", src, {"exp_table": exp_table(src.scale, t), "log_weight": log_weight},
                         float(src.scale) / (1 << ENERGY_UNIT_BITS))
    if isinstance(detector, det.Mahalanobis):
        features = _int8_source(detector, det.features_tensor(detector.graph), "features")
        if detector.form == "diagonal":
            return _distance_score(features, detector.means, np.diag(detector.precision))
        return _whitened_distance_score(detector, features)
    from microforge.robust.ood import trained  # here: trained imports detectors, which imports this lazily

    if isinstance(detector, trained.GeneralizedOdin):
        return _cosine_score(detector, _int8_source(detector, det.features_tensor(detector.graph), "features"))
    if isinstance(detector, trained.OutlierExposure):
        return _explicit_score(detector, _int8_source(detector, det.features_tensor(detector.graph), "features"))
    if isinstance(detector, trained.AutoencoderError):
        return _autoencoder_score(detector)
    raise UnsupportedError(f"{detector.name}: this detector has no on-chip score yet")


def _distance_score(src: Tensor, class_means: np.ndarray, precision_diagonal: np.ndarray) -> ChipScore:
    """sum_j p_j (f_j - mu_cj)^2 to the nearest class mean, on the int8 tensor `src`."""
    scale, zp, steps = float(src.scale), src.zero_point, 1 << MEAN_FRACTION_BITS
    means = np.clip(np.round((class_means / scale + zp) * steps), -32768, 32767).astype(np.int64)
    real_weights = precision_diagonal * (scale / steps) ** 2  # per squared 1/16 step
    weight_unit = float(real_weights.max()) / 65535
    weights = np.round(real_weights / weight_unit).astype(np.int64)
    # the largest distance any int8 input can reach, so the shift keeps the nearest within int32
    lo, hi = np.abs(-128 * steps - means), np.abs(127 * steps - means)
    bound = int((np.maximum(lo, hi) ** 2 * weights).sum(axis=1).max())
    shift = max(0, bound.bit_length() - 31)
    return ChipScore("MF_OOD_DISTANCE", src,
                     {"means": means.astype(np.int16), "weights": weights.astype(np.uint16), "shift": shift},
                     weight_unit * 2.0 ** shift)


WHITENED_MARGIN = 6.0  # standard deviations beyond the class means that the whitened features can hold


def int8_dense(name: str, src: Tensor, kernel: np.ndarray, bias: np.ndarray, lo: float, hi: float,
               relu: bool = False) -> tuple[Op, Tensor]:
    """An int8 FULLY_CONNECTED computing src' kernel + bias (kernel (inputs, outputs), real values) on
    the int8 tensor src: per-channel symmetric weights, the bias at their scale, the output quantized
    over [lo, hi] (widened to hold 0, as TFLite's ranges do)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    hi = hi if hi > lo else lo + 1.0
    out_scale = np.float32((hi - lo) / 255)
    out_zp = int(np.clip(np.round(-128 - lo / float(out_scale)), -128, 127))
    rows = np.asarray(kernel, np.float64).T  # (outputs, inputs), TFLite's layout
    weight_scales = np.maximum(np.abs(rows).max(axis=1), 1e-12) / 127
    weights = np.clip(np.round(rows / weight_scales[:, None]), -127, 127).astype(np.int8)
    n = len(rows)
    w_t = Tensor(f"{name}/weights", weights.shape, np.int8, Quantization(weight_scales, np.zeros(n), axis=0), weights)
    bias_scales = np.float32(src.scale) * weight_scales.astype(np.float32)
    bias_q = np.clip(np.round(np.asarray(bias, np.float64) / bias_scales), -2**31, 2**31 - 1).astype(np.int32)
    b_t = Tensor(f"{name}/bias", (n,), np.int32, Quantization(bias_scales, np.zeros(n)), bias_q)
    out = Tensor(name, (1, n), np.int8, Quantization([out_scale], [out_zp]))
    options = dict(DEFAULT_OPTIONS["FULLY_CONNECTED"], fused_activation_function="RELU" if relu else "NONE")
    return Op("FULLY_CONNECTED", [src, w_t, b_t], [out], options), out


def _whitened_distance_score(detector, src: Tensor) -> ChipScore:
    factor = np.linalg.cholesky(detector.precision)  # precision = L L'
    whitened_means = detector.means @ factor  # g = L' f
    whiten, g_t = int8_dense("ood_whitened", src, factor, np.zeros(len(factor)),
                             whitened_means.min() - WHITENED_MARGIN, whitened_means.max() + WHITENED_MARGIN)
    score = _distance_score(g_t, whitened_means, np.ones(len(factor)))
    score.prelude = [whiten]
    return score


COUNT_LIMIT = (1 << 31) // (255 * 255)  # values whose squared int8 differences an int32 sum holds


def _limit_count(detector, t: Tensor, what: str) -> None:
    if t.size > COUNT_LIMIT:
        raise UnsupportedError(f"{detector.name}: {t.size} {what} are more than the on-chip score sums "
                               f"({COUNT_LIMIT})")


def _cosine_score(detector, src: Tensor) -> ChipScore:
    """Generalized ODIN's -max_k cos(f, w_k): each class's unit weight vector as int8 and its norm."""
    _limit_count(detector, src, "features")
    unit_rows = (detector.class_weights / np.maximum(np.linalg.norm(detector.class_weights, axis=0), 1e-12)).T
    weights = np.clip(np.round(unit_rows * 127 / np.maximum(np.abs(unit_rows).max(axis=1, keepdims=True),
                                                            1e-12)), -127, 127).astype(np.int8)
    norms = np.maximum(np.round(256 * np.linalg.norm(weights.astype(np.float64), axis=1)), 1).astype(np.uint32)
    return ChipScore("MF_OOD_COSINE", src, {"weights": weights, "norms": norms}, 1.0 / Q15)


def _explicit_score(detector, src: Tensor) -> ChipScore:
    """Outlier exposure's OOD logit by int8 FULLY_CONNECTED layers (the standardisation folded into the
    first), the last one negated so that MF_OOD_MAXLOGIT (zp - q) counts the logit in its scale."""
    layers = [(k.copy(), b.copy()) for k, b in detector.layers]
    first_kernel, first_bias = layers[0]
    layers[0] = (first_kernel / detector.std[:, None], first_bias - (detector.mean / detector.std) @ first_kernel)
    layers[-1] = (-layers[-1][0], -layers[-1][1])
    prelude, x = [], src
    for i, ((kernel, bias), (lo, hi)) in enumerate(zip(layers, detector.ranges)):
        last = i == len(layers) - 1
        op, x = int8_dense(f"ood_explicit{i}", x, kernel, bias, -hi if last else lo, -lo if last else hi,
                           relu=not last)
        prelude.append(op)
    return ChipScore("MF_OOD_MAXLOGIT", x, {}, float(x.scale), prelude)


def _requantize(name: str, src: Tensor, like: Tensor) -> tuple[list[Op], Tensor]:
    """src in the quantization of `like` (no op when it has it already)."""
    if float(src.scale) == float(like.scale) and src.zero_point == like.zero_point:
        return [], src
    out = Tensor(name, src.shape, np.int8, Quantization([float(like.scale)], [like.zero_point]))
    return [Op("QUANTIZE", [src], [out], {})], out


def _autoencoder_score(detector) -> ChipScore:
    """The shadow autoencoder's squared reconstruction error: its FULLY_CONNECTED ops on the model's int8
    input or features (requantized to the autoencoder's input), its output requantized to its input's
    quantization, then sum_j (q_j - r_j)^2 in squared steps of that scale."""
    what = "input" if detector.on == "input" else "features"
    src = _int8_source(detector, detector._source(), what)
    _limit_count(detector, src, what)
    ae = detector.ae
    copies = {t.index: Tensor(f"ood_ae/{t.name}", t.shape, t.dtype, t.quant, t.data) for t in ae.tensors}
    prelude, q = _requantize("ood_ae/input", src, ae.inputs[0])
    copies[ae.inputs[0].index] = q
    prelude += [Op(op.type, [None if t is None else copies[t.index] for t in op.inputs],
                   [copies[t.index] for t in op.outputs], dict(op.options), version=op.version) for op in ae.ops]
    more, r = _requantize("ood_ae/reconstruction", copies[ae.outputs[0].index], q)
    if q.shape != r.shape:  # the model's own input keeps its shape; the reconstruction is (1, size)
        shaped = Tensor("ood_ae/shaped_input", r.shape, np.int8, q.quant)
        more.insert(0, Op("RESHAPE", [q], [shaped], {"new_shape": list(r.shape)}))
        q = shaped
    return ChipScore("MF_OOD_SQUARED_ERROR", q, {}, float(q.scale) ** 2 / src.size, prelude + more, r)


def chip_graph(detector, threshold: int | None = None) -> Graph:
    """The detector's model with `ood_score` and `ood_flag` as its last two outputs (threshold: the
    detector's fitted integer threshold unless given)."""
    threshold = detector.chip_threshold if threshold is None else threshold
    if threshold is None:
        raise InputError(f"{detector.name}: the detector has no on-chip threshold (fit it on an int8 model)")
    graph, score = detector.graph, chip_score(detector)
    score_t = Tensor(SCORE_NAME, (1,), np.int32)
    flag_t = Tensor(FLAG_NAME, (1,), np.int8)
    sources = [score.source] + ([score.other] if score.other is not None else [])
    ops = score.prelude + [
        Op(score.op_type, sources, [score_t], dict(score.options, detector=detector.name, unit=score.unit)),
        Op("MF_OOD_FLAG", [score_t], [flag_t], {"threshold": int(threshold), "detector": detector.name,
                                               "unit": score.unit})]
    known = {id(t) for t in graph.tensors}
    made = []  # the prelude's own tensors, once each
    for t in (t for op in score.prelude for t in op.inputs + op.outputs if t is not None):
        if id(t) not in known:
            known.add(id(t))
            made.append(t)
    return Graph(graph.tensors + made + [score_t, flag_t], graph.ops + ops, graph.inputs,
                 list(graph.outputs) + [score_t, flag_t], graph.description, graph.metadata)


def chip_scores(detector, x: np.ndarray, threshold: int = 0) -> np.ndarray:
    """The integer scores (N,) of inputs x as the chip computes them (by the reference interpreter)."""
    outputs = run(chip_graph(detector, threshold), np.asarray(x))
    return np.asarray(outputs[-2]).reshape(-1)


def fit_chip_threshold(detector, inputs: np.ndarray) -> int:
    """The integer threshold that keeps 95% of `inputs` (the fitting data) below or at it."""
    return int(threshold_at_tpr(chip_scores(detector, inputs)))
