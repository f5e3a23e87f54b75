"""Out-of-distribution metrics, as OpenOOD defines them, from detector scores (higher = more likely OOD).

OpenOOD treats OOD as the positive class:
- auroc: the area under the ROC curve of OOD against ID (the chance that a random OOD sample scores
  above a random ID sample, ties counting one half).
- aupr_out: the area under the precision-recall curve with OOD positive; aupr_in: with ID positive and
  the scores negated. Both by the trapezoidal rule over the curve's points (as OpenOOD integrates
  scikit-learn's curve), not average precision.
- fpr_at_tpr95: at the first threshold (from the highest score down) that flags at least 95% of the OOD
  samples, the share of ID samples flagged too.
And, with ID as the positive class (the seed's TNR@TPR95 and how the deployed threshold is chosen):
- threshold_at_tpr95: the lowest threshold that keeps at least 95% of the ID samples below or at it
  (flag = score > threshold);
- tnr_at_tpr95: the share of OOD samples flagged at that threshold.
expected_calibration_error: a classifier's confidence against its accuracy in 15 equal-width bins
(lower edge open), weighted by the bins' counts.

Written over sorted scores and cumulative counts, with ties grouped as one threshold;
tests/test_ood_metrics.py checks every number against scikit-learn's curves on random data with ties.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from microforge.errors import InputError

TPR = 0.95


@dataclass
class OODMetrics:
    auroc: float
    aupr_in: float
    aupr_out: float
    fpr_at_tpr95: float
    tnr_at_tpr95: float
    threshold: float  # threshold_at_tpr95: flag a sample as OOD when its score is above it

    def to_json(self) -> dict:
        return asdict(self)


def _scores(values, what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise InputError(f"{what}: no scores")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{what}: {int(np.sum(~np.isfinite(x)))} scores are not finite numbers")
    return x


def _roc_points(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thresholds (distinct scores, highest first) and the positive / negative shares at or above each,
    with the origin first (nothing flagged)."""
    scores = np.concatenate([positive, negative])
    is_positive = np.concatenate([np.ones(len(positive)), np.zeros(len(negative))])
    order = np.argsort(-scores, kind="stable")
    scores, is_positive = scores[order], is_positive[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores) != 0), len(scores) - 1]
    tp = np.cumsum(is_positive)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    return (np.r_[np.inf, scores[last_of_tie]], np.r_[0.0, tp / len(positive)], np.r_[0.0, fp / len(negative)])


def _aupr(positive: np.ndarray, negative: np.ndarray) -> float:
    """Trapezoidal area under precision (y) over recall (x), the curve closed at recall 0, precision 1."""
    _, tpr, fpr = _roc_points(positive, negative)
    tp, fp = tpr[1:] * len(positive), fpr[1:] * len(negative)
    precision = np.r_[1.0, tp / (tp + fp)]
    recall = np.r_[0.0, tpr[1:]]
    return float(np.sum(np.diff(recall) * (precision[1:] + precision[:-1]) / 2))


def ood_metrics(id_scores, ood_scores) -> OODMetrics:
    """All of the module's metrics for one ID set and one OOD set (scores: higher = more likely OOD)."""
    id_s, ood_s = _scores(id_scores, "in-distribution"), _scores(ood_scores, "out-of-distribution")
    _, tpr, fpr = _roc_points(ood_s, id_s)
    auroc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    fpr95 = float(fpr[np.argmax(tpr >= TPR)])
    threshold = threshold_at_tpr(id_s, TPR)
    return OODMetrics(auroc=auroc, aupr_in=_aupr(-id_s, -ood_s), aupr_out=_aupr(ood_s, id_s), fpr_at_tpr95=fpr95,
                      tnr_at_tpr95=float(np.mean(ood_s > threshold)), threshold=threshold)


def threshold_at_tpr(id_scores, tpr: float = TPR) -> float:
    """The lowest score t with at least `tpr` of the ID samples at or below it (flag: score > t)."""
    s = np.sort(_scores(id_scores, "in-distribution"))
    return float(s[int(np.ceil(tpr * len(s))) - 1])


def expected_calibration_error(confidence, correct, bins: int = 15) -> float:
    """sum over bins (lo, hi] of |accuracy - mean confidence| weighted by the bin's share of samples."""
    c = _scores(confidence, "confidence")
    ok = np.asarray(correct, dtype=np.float64).reshape(-1)
    if ok.shape != c.shape:
        raise InputError(f"{c.size} confidences but {ok.size} correctness flags")
    if np.any((c < 0) | (c > 1)):
        raise InputError("confidences must lie in [0, 1]")
    which = np.clip(np.ceil(c * bins).astype(np.int64) - 1, 0, bins - 1)  # (lo, hi]; 0 joins the first bin
    total = 0.0
    for b in range(bins):
        pick = which == b
        if pick.any():
            total += pick.mean() * abs(ok[pick].mean() - c[pick].mean())
    return float(total)
