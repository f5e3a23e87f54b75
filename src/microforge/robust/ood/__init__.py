"""Out-of-distribution detection: detectors on a classifier's logits and features (and the trained ones:
godin, ae, explicit), their on-chip integer forms (onchip.py), and the metrics as OpenOOD computes them.

    from microforge.robust import ood
    energy = ood.detector("energy").fit("model.tflite", in_distribution_inputs)
    metrics = ood.ood_metrics(energy.score(id_test), energy.score(ood_inputs))   # auroc, fpr_at_tpr95, ...
"""

from microforge.robust.ood.detectors import (DETECTORS, Detector, detector, features_tensor, load_detector,
                                            logits_tensor)
from microforge.robust.ood.metrics import OODMetrics, expected_calibration_error, ood_metrics, threshold_at_tpr
from microforge.robust.ood.trained import AutoencoderError, GeneralizedOdin, OutlierExposure  # godin, ae, explicit

__all__ = ["DETECTORS", "Detector", "detector", "load_detector", "features_tensor", "logits_tensor", "OODMetrics", "ood_metrics",
           "threshold_at_tpr", "expected_calibration_error",
           "GeneralizedOdin", "AutoencoderError", "OutlierExposure"]
