"""OOD metrics against scikit-learn's curves (as OpenOOD builds them) on random scores with and without ties,
and the thresholds and calibration error against their definitions."""

import numpy as np
import pytest
from sklearn import metrics as skm

from microforge.errors import InputError
from microforge.robust.ood import expected_calibration_error, ood_metrics, threshold_at_tpr


def openood(id_scores, ood_scores):
    """OpenOOD's auc_and_fpr_recall on scikit-learn, with confidence = -score and OOD positive."""
    conf = -np.concatenate([id_scores, ood_scores])
    ood = np.r_[np.zeros(len(id_scores)), np.ones(len(ood_scores))]
    fpr, tpr, _ = skm.roc_curve(ood, -conf)
    p_in, r_in, _ = skm.precision_recall_curve(1 - ood, conf)
    p_out, r_out, _ = skm.precision_recall_curve(ood, -conf)
    return skm.auc(fpr, tpr), skm.auc(r_in, p_in), skm.auc(r_out, p_out), fpr[np.argmax(tpr >= 0.95)]


@pytest.mark.parametrize("seed", range(12))
def test_metrics_equal_openoods_on_random_scores(seed):
    rng = np.random.default_rng(seed)
    n_id, n_ood = int(rng.integers(5, 400)), int(rng.integers(5, 400))
    id_s = rng.normal(0.0, 1.0, n_id)
    ood_s = rng.normal(float(rng.uniform(-0.5, 3.0)), float(rng.uniform(0.5, 2.0)), n_ood)
    if seed % 3 == 0:  # coarse scores: many ties within and across the sets
        id_s, ood_s = np.round(id_s * 2) / 2, np.round(ood_s * 2) / 2
    m = ood_metrics(id_s, ood_s)
    auroc, aupr_in, aupr_out, fpr95 = openood(id_s, ood_s)
    assert m.auroc == pytest.approx(auroc, abs=1e-12)
    assert m.auroc == pytest.approx(skm.roc_auc_score(np.r_[np.zeros(n_id), np.ones(n_ood)], np.r_[id_s, ood_s]),
                                    abs=1e-12)
    assert m.aupr_in == pytest.approx(aupr_in, abs=1e-12)
    assert m.aupr_out == pytest.approx(aupr_out, abs=1e-12)
    assert m.fpr_at_tpr95 == pytest.approx(fpr95, abs=1e-12)
    # the deployed threshold keeps at least 95% of ID, and no lower one does
    assert np.mean(id_s <= m.threshold) >= 0.95
    assert np.mean(id_s < m.threshold) < 0.95
    assert m.tnr_at_tpr95 == pytest.approx(np.mean(ood_s > m.threshold))


def test_perfect_and_useless_detectors():
    perfect = ood_metrics([0.0, 0.1, 0.2], [1.0, 2.0])
    assert perfect.auroc == 1.0 and perfect.fpr_at_tpr95 == 0.0 and perfect.tnr_at_tpr95 == 1.0
    assert perfect.aupr_in == 1.0 and perfect.aupr_out == 1.0
    same = ood_metrics([1.0] * 4, [1.0] * 6)
    assert same.auroc == 0.5 and same.fpr_at_tpr95 == 1.0 and same.tnr_at_tpr95 == 0.0


def test_threshold_at_tpr_is_the_order_statistic():
    scores = np.arange(100, dtype=np.float64)[::-1]
    assert threshold_at_tpr(scores, 0.95) == 94.0
    assert threshold_at_tpr(scores, 1.0) == 99.0


def test_expected_calibration_error_by_hand():
    conf = np.array([0.95, 0.95, 0.55, 0.55, 0.0, 1.0])
    correct = np.array([1, 0, 1, 1, 0, 1])
    # bins (0.9, 0.9667]: acc 0.5 conf 0.95; (0.5333, 0.6]: acc 1 conf 0.55; [0, 1/15]: acc 0 conf 0; last: acc 1
    expected = (2 / 6) * 0.45 + (2 / 6) * 0.45 + 0 + 0
    assert expected_calibration_error(conf, correct) == pytest.approx(expected)


def test_bad_scores_are_refused_by_name():
    with pytest.raises(InputError, match="out-of-distribution: no scores"):
        ood_metrics([1.0], [])
    with pytest.raises(InputError, match="in-distribution: 1 scores are not finite"):
        ood_metrics([1.0, np.nan], [2.0])
    with pytest.raises(InputError, match="confidences must lie"):
        expected_calibration_error([1.5], [1])
