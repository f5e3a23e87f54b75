"""Pre-processing and metrics checked against the libraries the MLPerf Tiny reference scripts use:
librosa (AD log-mel), scipy (polyphase resampling), scikit-learn (ROC AUC)."""

import sys

import librosa
import numpy as np
import pytest
import scipy.signal as scipy_signal
import sklearn.metrics as sklearn_metrics
from conftest import FSDD

from microforge.bench import audio, features, metrics


def _reference_log_mel(y, pad_mode):
    """The AD reference's common.py feature code, on librosa."""
    mel = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=1024, hop_length=512, n_mels=128, power=2.0,
                                         pad_mode=pad_mode)
    return (20.0 / 2.0 * np.log10(mel + sys.float_info.epsilon)).T


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_ad_log_mel_equals_librosa(pad_mode):
    rng = np.random.default_rng(0)
    t = np.arange(3 * 16000) / 16000
    y = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    ours = features.ad_log_mel(y, pad_mode=pad_mode)
    theirs = _reference_log_mel(y, pad_mode)
    assert ours.shape == theirs.shape
    # float32 spectra in librosa vs float64 here: agree to a few thousandths of a dB
    np.testing.assert_allclose(ours, theirs, atol=5e-3)


def test_slaney_filterbank_equals_librosa():
    np.testing.assert_allclose(features.slaney_mel_filterbank(), librosa.filters.mel(sr=16000, n_fft=1024, n_mels=128),
                               rtol=1e-5, atol=1e-9)


def test_resample_equals_scipy_resample_poly():
    x, rate = audio.read_wav(sorted(FSDD.glob("3_theo_*.wav"))[0])
    assert rate == 8000
    for up, down in ((2, 1), (1, 2), (441, 320)):
        ours = audio.resample_poly(x.astype(np.float64), up, down)
        theirs = scipy_signal.resample_poly(x.astype(np.float64), up, down)
        np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_roc_auc_equals_scikit_learn():
    rng = np.random.default_rng(3)
    for n in (5, 40, 300):
        labels = rng.integers(0, 2, n)
        labels[:2] = [0, 1]
        scores = np.round(rng.normal(labels * 0.7, 1.0), 1)  # rounded: ties on purpose
        assert metrics.roc_auc(scores, labels) == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores), abs=1e-12)
