"""Continual-learning metrics from the accuracy matrix A, A[i][j] = accuracy on experience j's test set
after training on experience i (rows 0..T-1; only j <= i are meaningful in class-incremental learning),
as Avalanche and the GEM paper (Lopez-Paz and Ranzato, 2017) define them."""

from __future__ import annotations

import numpy as np


def average_accuracy(matrix, counts) -> list[float]:
    """After each experience i: the accuracy over the pooled test samples of experiences 0..i
    (`counts[j]`: test samples of experience j), so every test sample seen so far weighs the same."""
    a, n = np.asarray(matrix, np.float64), np.asarray(counts, np.float64)
    return [float((a[i, :i + 1] * n[:i + 1]).sum() / n[:i + 1].sum()) for i in range(len(a))]


def forgetting(matrix) -> float:
    """Mean over experiences j < T-1 of the best accuracy ever reached on j before the end minus the
    final accuracy on j (0 for a single experience)."""
    a = np.asarray(matrix, np.float64)
    last = len(a) - 1
    if last == 0:
        return 0.0
    return float(np.mean([a[j:last, j].max() - a[last, j] for j in range(last)]))


def backward_transfer(matrix) -> float:
    """Mean over j < T-1 of A[T-1][j] - A[j][j]: negative when learning later experiences hurt earlier ones."""
    a = np.asarray(matrix, np.float64)
    last = len(a) - 1
    if last == 0:
        return 0.0
    return float(np.mean([a[last, j] - a[j, j] for j in range(last)]))
