"""Out-of-distribution detection (issue 11, in progress): metrics as OpenOOD computes them."""

from microforge.robust.ood.metrics import OODMetrics, expected_calibration_error, ood_metrics, threshold_at_tpr

__all__ = ["OODMetrics", "ood_metrics", "threshold_at_tpr", "expected_calibration_error"]
