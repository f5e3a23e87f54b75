"""Quality metrics of MLPerf Tiny: top-1 accuracy (KWS, VWW, IC), ROC AUC (AD) and the AD clip score."""

from __future__ import annotations

import numpy as np

from microforge.errors import InputError


def top1_accuracy(outputs, labels) -> float:
    """Fraction of rows of `outputs` (N, classes) whose argmax equals the label (N,). Ties: first index."""
    out = np.asarray(outputs)
    y = np.asarray(labels)
    if out.ndim != 2:
        raise InputError(f"outputs must be (samples, classes), got shape {out.shape}")
    if y.shape != (out.shape[0],):
        raise InputError(f"{y.size} labels for {out.shape[0]} outputs")
    if out.shape[0] == 0:
        raise InputError("no samples to score")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= out.shape[1]:
        raise InputError(f"labels must be integers in 0..{out.shape[1] - 1}")
    return float(np.mean(np.argmax(out, axis=1) == y))


def average_ranks(values) -> np.ndarray:
    """1-based ranks with ties given the mean of their ranks (scipy.stats.rankdata 'average')."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="mergesort")
    sorted_v = v[order]
    starts = np.r_[True, sorted_v[1:] != sorted_v[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    counts = np.diff(np.r_[first, v.size])
    mean_rank = first + (counts + 1) / 2.0  # ranks first+1 .. first+count averaged
    ranks = np.empty(v.size)
    ranks[order] = mean_rank[group]
    return ranks


def roc_auc(scores, labels) -> float:
    """ROC AUC of `scores` (higher = more positive) for binary `labels` (1 = positive, e.g. anomalous).

    Mann-Whitney form with average ranks, so a tied positive/negative pair counts 1/2: the same value as
    sklearn.metrics.roc_auc_score.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.size != y.size:
        raise InputError(f"{s.size} scores for {y.size} labels")
    if not np.all(np.isfinite(s)):
        raise InputError("scores contain NaN or infinity")
    if not np.all((y == 0) | (y == 1)):
        raise InputError("labels must be 0 (normal) or 1 (anomalous)")
    pos = int(np.sum(y == 1))
    neg = y.size - pos
    if pos == 0 or neg == 0:
        raise InputError(f"ROC AUC needs both classes; got {pos} positive and {neg} negative")
    ranks = average_ranks(s)
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def ad_score(reconstructions, inputs) -> np.ndarray:
    """Anomaly score per clip: mean squared error over all its windows and features.

    Either arrays (clips, windows, features), or sequences of per-clip (windows, features) arrays (clips
    may have different window counts). Returns (clips,) float64.
    """
    if isinstance(reconstructions, np.ndarray) and isinstance(inputs, np.ndarray):
        if reconstructions.shape != inputs.shape:
            raise InputError(f"reconstructions {reconstructions.shape} and inputs {inputs.shape} differ in shape")
        if reconstructions.ndim < 2:
            raise InputError(f"expected (clips, windows, features), got shape {inputs.shape}")
        diff = reconstructions.astype(np.float64) - inputs.astype(np.float64)
        return np.mean(diff.reshape(diff.shape[0], -1) ** 2, axis=1)
    recs, ins = list(reconstructions), list(inputs)
    if len(recs) != len(ins):
        raise InputError(f"{len(recs)} reconstructions for {len(ins)} clips")
    out = []
    for i, (r, x) in enumerate(zip(recs, ins)):
        r, x = np.asarray(r, dtype=np.float64), np.asarray(x, dtype=np.float64)
        if r.shape != x.shape or r.size == 0:
            raise InputError(f"clip {i}: reconstruction {r.shape} and input {x.shape} differ or are empty")
        out.append(np.mean((r - x) ** 2))
    return np.asarray(out)
